//! Audits as SQL: each audit becomes a query over `__tidemark_audited` (the rows a batch
//! is about to commit) that returns the offending rows; an empty result passes.
//!
//! Invariant: argument values were parsed and canonicalised when the model was loaded, so they
//! are SQL expressions, never raw user text spliced into a statement.

use std::collections::BTreeMap;

use crate::engine::AuditJob;
use crate::error::{Error, Result};
use crate::project::AuditCall;
use crate::project::audit_files::AuditDef;

/// The table name audit SQL reads.
pub use crate::engine::AUDITED;

/// The query of one audit call; custom audits come from the project's audit files (`defs`).
pub fn render(call: &AuditCall, defs: &BTreeMap<String, AuditDef>) -> Result<AuditJob> {
    let arg = |k: &str| call.args.get(k).cloned().unwrap_or_default();
    let mut blocking = call.blocking;
    let sql = match call.name.as_str() {
        "not_null" => {
            let cond = list(&arg("columns"))
                .iter()
                .map(|c| format!("{c} IS NULL"))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!("SELECT * FROM {AUDITED} WHERE {cond}")
        }
        "unique_values" => list(&arg("columns"))
            .iter()
            .map(|c| {
                format!(
                    "SELECT 1 FROM {AUDITED} WHERE {c} IS NOT NULL GROUP BY {c} HAVING COUNT(*) > 1"
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL "),
        "accepted_values" => format!(
            "SELECT * FROM {AUDITED} WHERE {} NOT IN ({})",
            arg("column"),
            list(&arg("is_in")).join(", ")
        ),
        "accepted_range" => {
            let inclusive = call
                .args
                .get("inclusive")
                .is_none_or(|v| !v.eq_ignore_ascii_case("false"));
            let (lo, hi) = if inclusive { ("<", ">") } else { ("<=", ">=") };
            let c = arg("column");
            let mut conds = Vec::new();
            if let Some(min) = call.args.get("min_v") {
                conds.push(format!("{c} {lo} {min}"));
            }
            if let Some(max) = call.args.get("max_v") {
                conds.push(format!("{c} {hi} {max}"));
            }
            if conds.is_empty() {
                conds.push("FALSE".into());
            }
            format!("SELECT * FROM {AUDITED} WHERE {}", conds.join(" OR "))
        }
        "number_of_rows" => format!(
            "SELECT 1 FROM (SELECT COUNT(*) AS n FROM {AUDITED}) AS c WHERE c.n <= {}",
            arg("threshold")
        ),
        "forall" => {
            let conds = list(&arg("criteria"))
                .iter()
                .map(|c| format!("NOT ({c})"))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!("SELECT * FROM {AUDITED} WHERE {conds}")
        }
        "unique_combination_of_columns" => {
            let cols = list(&arg("columns")).join(", ");
            format!("SELECT {cols} FROM {AUDITED} GROUP BY {cols} HAVING COUNT(*) > 1")
        }
        "not_accepted_values" => format!(
            "SELECT * FROM {AUDITED} WHERE {} IN ({})",
            arg("column"),
            list(&arg("is_in")).join(", ")
        ),
        "at_least_one" => format!(
            "SELECT 1 FROM (SELECT COUNT({}) AS n FROM {AUDITED}) AS c WHERE c.n = 0",
            arg("column")
        ),
        "not_constant" => format!(
            "SELECT 1 FROM (SELECT COUNT(DISTINCT {}) AS n FROM {AUDITED}) AS c WHERE c.n <= 1",
            arg("column")
        ),
        "mutually_exclusive_ranges" => {
            let (lo, hi) = (arg("lower_bound_column"), arg("upper_bound_column"));
            let partition = call
                .args
                .get("partition_clause")
                .map(|p| format!("PARTITION BY {} ", list(p).join(", ")))
                .unwrap_or_default();
            format!(
                "SELECT * FROM (SELECT {lo} AS lower_bound, {hi} AS upper_bound, \
                 LEAD({lo}) OVER ({partition}ORDER BY {lo}, {hi}) AS next_lower_bound FROM {AUDITED}) AS r \
                 WHERE r.lower_bound > r.upper_bound OR r.next_lower_bound < r.upper_bound"
            )
        }
        "valid_uuid" => regex_audit(
            &arg("column"),
            "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        ),
        "valid_email" => regex_audit(
            &arg("column"),
            "^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]+$",
        ),
        "valid_url" => regex_audit(&arg("column"), "^(https?|ftp)://[^ /$.?#].[^ ]*$"),
        "match_regex_pattern_list" => {
            let c = arg("column");
            let conds = list(&arg("patterns"))
                .iter()
                .map(|p| format!("regexp_like(CAST({c} AS VARCHAR), {p})"))
                .collect::<Vec<_>>()
                .join(" OR ");
            format!("SELECT * FROM {AUDITED} WHERE {c} IS NOT NULL AND NOT ({conds})")
        }
        name => {
            let def = defs.get(name).ok_or_else(|| {
                Error::Bug(format!(
                    "audit `{name}` passed the load check but has no definition"
                ))
            })?;
            blocking = blocking && def.blocking;
            custom(def, call)?
        }
    };
    Ok(AuditJob {
        name: call.name.clone(),
        sql,
        blocking,
    })
}

/// Rows whose non-NULL `column` does not match `pattern`.
fn regex_audit(column: &str, pattern: &str) -> String {
    format!(
        "SELECT * FROM {AUDITED} WHERE {column} IS NOT NULL AND NOT regexp_like(CAST({column} AS VARCHAR), '{pattern}')"
    )
}

/// A custom audit: `@this_model` becomes the audited rows, `@arg` the argument's value (the
/// call's, else the audit's default); both were checked when the project loaded.
fn custom(def: &AuditDef, call: &AuditCall) -> Result<String> {
    let text = def.sql.as_str();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let var = tail[..len].to_ascii_lowercase();
        if var == "this_model" {
            out.push_str(AUDITED);
        } else if let Some(v) = call.args.get(&var).or_else(|| def.defaults.get(&var)) {
            out.push_str(v);
        } else {
            // A time macro or anything else the query leaves to the engine.
            out.push('@');
            out.push_str(&tail[..len]);
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(crate::sql::lower_unquoted(out.trim().trim_end_matches(';')))
}

/// The items of a canonical argument: `(a, b)` → `[a, b]`, `a` → `[a]`; commas inside
/// parentheses or quotes do not split.
pub fn list(text: &str) -> Vec<String> {
    let t = text.trim();
    let inner = match t.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        Some(i) if balanced(i) => i,
        _ => t,
    };
    let mut items = Vec::new();
    let (mut depth, mut quote, mut cur) = (0i32, None::<char>, String::new());
    for c in inner.chars() {
        match (quote, c) {
            (Some(q), _) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth -= 1,
            (None, ',') if depth == 0 => {
                items.push(cur.trim().to_string());
                cur.clear();
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        items.push(cur.trim().to_string());
    }
    items
}

fn balanced(s: &str) -> bool {
    let mut depth = 0i32;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_at_top_level_only() {
        assert_eq!(list("(a, b)"), vec!["a", "b"]);
        assert_eq!(list("a"), vec!["a"]);
        assert_eq!(list("(f(x, y), 'a,b')"), vec!["f(x, y)", "'a,b'"]);
        assert_eq!(list("(a > 1) AND (b < 2)"), vec!["(a > 1) AND (b < 2)"]);
    }

    #[test]
    fn builtins_render_to_queries_of_offending_rows() {
        let call = |name: &str, args: &[(&str, &str)]| AuditCall {
            name: name.into(),
            args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            blocking: true,
        };
        let defs = BTreeMap::new();
        let sql = |c| render(&c, &defs).unwrap().sql;
        assert_eq!(
            sql(call("not_null", &[("columns", "(a, b)")])),
            "SELECT * FROM __tidemark_audited WHERE a IS NULL OR b IS NULL"
        );
        assert_eq!(
            sql(call(
                "accepted_range",
                &[("column", "q"), ("min_v", "1"), ("max_v", "10")]
            )),
            "SELECT * FROM __tidemark_audited WHERE q < 1 OR q > 10"
        );
        assert!(sql(call("number_of_rows", &[("threshold", "5")])).ends_with("c.n <= 5"));
        assert!(render(&call("missing_custom", &[]), &defs).is_err());
        assert_eq!(
            sql(call(
                "unique_combination_of_columns",
                &[("columns", "(a, b)")]
            )),
            "SELECT a, b FROM __tidemark_audited GROUP BY a, b HAVING COUNT(*) > 1"
        );
    }
}
