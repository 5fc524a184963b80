//! Audits attached to a model: the built-in ones and their arguments, and the `audits`
//! property.
//!
//! Invariant: an [`AuditCall`] names a built-in audit with its required arguments, or an audit
//! file; arguments are checked when the model loads, not when the audit runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Builder;
use crate::error::Diagnostic;
use crate::project::header::{self, Token};
use crate::sql;

/// One audit attached to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCall {
    /// Audit name (built-in or a file in `audits/`), lowercased.
    pub name: String,
    /// Arguments: name → canonical SQL text of the value.
    pub args: BTreeMap<String, String>,
    /// A failing blocking audit fails the batch; a non-blocking one warns.
    pub blocking: bool,
}

/// Built-in audits and their (required, optional) arguments. Each also exists as
/// `NAME_non_blocking`, which warns instead of failing the batch (as in SQLMesh).
pub const BUILTIN_AUDITS: [(&str, &[&str], &[&str]); 15] = [
    ("not_null", &["columns"], &[]),
    ("unique_values", &["columns"], &[]),
    ("unique_combination_of_columns", &["columns"], &[]),
    ("accepted_values", &["column", "is_in"], &[]),
    ("not_accepted_values", &["column", "is_in"], &[]),
    (
        "accepted_range",
        &["column"],
        &["min_v", "max_v", "inclusive"],
    ),
    ("number_of_rows", &["threshold"], &[]),
    ("forall", &["criteria"], &[]),
    ("at_least_one", &["column"], &[]),
    ("not_constant", &["column"], &[]),
    (
        "mutually_exclusive_ranges",
        &["lower_bound_column", "upper_bound_column"],
        &["partition_clause"],
    ),
    ("valid_uuid", &["column"], &[]),
    ("valid_email", &["column"], &[]),
    ("valid_url", &["column"], &[]),
    ("match_regex_pattern_list", &["column", "patterns"], &[]),
];

/// The built-in audit `name` names, without a `_non_blocking` suffix, and whether it had one.
pub fn builtin_name(name: &str) -> (&str, bool) {
    match name.strip_suffix("_non_blocking") {
        Some(base) if BUILTIN_AUDITS.iter().any(|(n, _, _)| *n == base) => (base, true),
        _ => (name, false),
    }
}

/// Is `name` a built-in audit (either variant)?
pub fn is_builtin(name: &str) -> bool {
    let (base, _) = builtin_name(name);
    BUILTIN_AUDITS.iter().any(|(n, _, _)| *n == base)
}

impl Builder<'_> {
    pub(super) fn audit(&self, item: &[Token]) -> Result<AuditCall, Diagnostic> {
        let src = self.src;
        let c = header::call(src, "audits", item)?;
        let (base, non_blocking) = builtin_name(&c.name);
        let name = base.to_string();
        let mut args = BTreeMap::new();
        let mut blocking = !non_blocking;
        for arg in &c.args {
            let (key, at, value) = header::key_value(src, arg)?;
            if key == "blocking" {
                blocking = header::boolean(src, "blocking", value)?;
                continue;
            }
            // SQLMesh writes lists in brackets too (`[a, b,]`): the same as `(a, b)`.
            let written = if value
                .first()
                .is_some_and(|t| t.tok == header::Tok::LBracket)
                && header::is_wrapped(value)
            {
                let items: Vec<&str> = header::list(value)
                    .into_iter()
                    .map(|i| src.text_of(i))
                    .collect();
                format!("({})", items.join(", "))
            } else {
                src.text_of(value).to_string()
            };
            let text = sql::canonical_expr(&written).map_err(|r| {
                src.err(
                    value[0].start,
                    format!("invalid audit argument `{key}`: {r}"),
                )
            })?;
            if args.insert(key.clone(), text).is_some() {
                return Err(src.err(at, format!("audit argument `{key}` is given twice")));
            }
        }
        if let Some((_, required, optional)) = BUILTIN_AUDITS.iter().find(|(n, _, _)| *n == name) {
            for r in *required {
                if !args.contains_key(*r) {
                    return Err(src
                        .err(c.start, format!("audit `{name}` needs the argument `{r}`"))
                        .hint(format!("write {name}({r} := ...)")));
                }
            }
            if let Some(extra) = args
                .keys()
                .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
            {
                let all: Vec<&str> = required.iter().chain(optional.iter()).copied().collect();
                return Err(src
                    .err(c.start, format!("audit `{name}` has no argument `{extra}`"))
                    .hint(format!("its arguments: {}", all.join(", "))));
            }
            if name == "accepted_range"
                && !args.contains_key("min_v")
                && !args.contains_key("max_v")
            {
                return Err(src.err(
                    c.start,
                    "audit `accepted_range` needs `min_v`, `max_v` or both",
                ));
            }
        }
        // A custom audit is looked up in the project's audit files once they are all loaded.
        Ok(AuditCall {
            name,
            args,
            blocking,
        })
    }
}
