//! Promotion gates: rules a model's new data must meet against the data it replaces before
//! `promote` publishes it (the `gates` property, and `[model_defaults] gates`).
//!
//! Invariant: a [`GateCall`] names a built-in gate with exactly its arguments, each checked
//! when the model (or the config) loads, never when the gate runs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Diagnostic, did_you_mean};
use crate::project::header::{self, Src, Token};

/// One gate attached to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateCall {
    /// Gate name, lowercased.
    pub name: String,
    /// Arguments: name → value (a number, or a column name).
    pub args: BTreeMap<String, String>,
}

/// A gate's arguments: name, and whether it is a column (else a number).
pub type GateArgs = &'static [(&'static str, bool)];

/// Built-in gates: name, required arguments, and what it checks.
pub const BUILTIN_GATES: [(&str, GateArgs, &str); 5] = [
    (
        "row_count_change",
        &[("max_pct", false)],
        "rows per partition and in total change by at most `max_pct` %",
    ),
    (
        "column_sum_change",
        &[("column", true), ("max_pct", false)],
        "the sum of `column` changes by at most `max_pct` %",
    ),
    (
        "null_fraction_change",
        &[("column", true), ("max_points", false)],
        "the fraction of NULLs in `column` moves by at most `max_points` percentage points",
    ),
    (
        "no_missing_partitions",
        &[],
        "every partition the target has is still there",
    ),
    (
        "unchanged",
        &[],
        "the target's columns hold exactly the same rows (checksums equal)",
    ),
];

/// `(a, b)` as in a MODEL header, or `a, b` as in `[model_defaults] gates`.
pub fn parse_list(src: Src<'_>, root: &Path, value: &[Token]) -> Result<Vec<GateCall>, Diagnostic> {
    let items = if header::is_wrapped(value) {
        header::list(value)
    } else {
        header::split_top(value)
    };
    items
        .into_iter()
        .filter(|item| !item.is_empty())
        .map(|item| parse(src, root, item))
        .collect()
}

/// Parse one gate call (`row_count_change(max_pct := 20)`, `no_missing_partitions`, or a
/// custom gate: the file `gates/NAME.sql` under `root`, without arguments).
pub fn parse(src: Src<'_>, root: &Path, item: &[Token]) -> Result<GateCall, Diagnostic> {
    let c = header::call(src, "gates", item)?;
    let Some((_, required, _)) = BUILTIN_GATES.iter().find(|(n, _, _)| *n == c.name) else {
        if root.join(custom_path(&c.name)).is_file() {
            if !c.args.is_empty() {
                return Err(src.err(
                    c.start,
                    format!("custom gate `{}` takes no arguments", c.name),
                ));
            }
            return Ok(GateCall {
                name: c.name,
                args: BTreeMap::new(),
            });
        }
        let names = BUILTIN_GATES.iter().map(|(n, _, _)| *n);
        let hint = did_you_mean(&c.name, names).unwrap_or_else(|| {
            "built-in gates: row_count_change, column_sum_change, null_fraction_change, no_missing_partitions, unchanged; custom gates are files gates/NAME.sql".to_string()
        });
        return Err(src
            .err(c.start, format!("unknown gate `{}`", c.name))
            .hint(hint));
    };
    let mut args = BTreeMap::new();
    for arg in &c.args {
        let (key, at, value) = header::key_value(src, arg)?;
        let Some((_, is_column)) = required.iter().find(|(k, _)| *k == key) else {
            let all: Vec<&str> = required.iter().map(|(k, _)| *k).collect();
            return Err(src
                .err(at, format!("gate `{}` has no argument `{key}`", c.name))
                .hint(if all.is_empty() {
                    format!("`{}` takes no arguments", c.name)
                } else {
                    format!("its arguments: {}", all.join(", "))
                }));
        };
        let text = src.text_of(value).trim().to_string();
        let valid = if *is_column {
            text.chars()
                .next()
                .is_some_and(|c| c.is_alphabetic() || c == '_')
                && text.chars().all(|c| c.is_alphanumeric() || c == '_')
        } else {
            text.parse::<f64>().is_ok_and(|n| n.is_finite() && n >= 0.0)
        };
        if !valid {
            let what = if *is_column {
                "a column name"
            } else {
                "a number of 0 or more"
            };
            return Err(src.err(
                value[0].start,
                format!("gate argument `{key}` must be {what}, not `{text}`"),
            ));
        }
        if args
            .insert(key.clone(), text.to_ascii_lowercase())
            .is_some()
        {
            return Err(src.err(at, format!("gate argument `{key}` is given twice")));
        }
    }
    if let Some((r, _)) = required.iter().find(|(k, _)| !args.contains_key(*k)) {
        return Err(src
            .err(
                c.start,
                format!("gate `{}` needs the argument `{r}`", c.name),
            )
            .hint(format!("write {}({r} := ...)", c.name)));
    }
    Ok(GateCall { name: c.name, args })
}

/// Where the custom gate `name` lives, relative to the project root.
pub fn custom_path(name: &str) -> std::path::PathBuf {
    Path::new("gates").join(format!("{name}.sql"))
}

impl GateCall {
    /// Is it a custom gate (a file of the project)?
    pub fn is_custom(&self) -> bool {
        !BUILTIN_GATES.iter().any(|(n, _, _)| *n == self.name)
    }

    /// A numeric argument (checked at load).
    pub fn number(&self, key: &str) -> f64 {
        self.args
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The call as written back: `name(key := value, …)`.
    pub fn text(&self) -> String {
        if self.args.is_empty() {
            return self.name.clone();
        }
        let args: Vec<String> = self
            .args
            .iter()
            .map(|(k, v)| format!("{k} := {v}"))
            .collect();
        format!("{}({})", self.name, args.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gates(text: &str) -> Result<Vec<GateCall>, Diagnostic> {
        let src = Src {
            file: Path::new("m.sql"),
            text,
        };
        let tokens = header::lex(src, 0)?;
        parse_list(src, Path::new("/nonexistent"), &tokens)
    }

    #[test]
    fn gates_are_checked_when_they_load() {
        let g = gates("row_count_change(max_pct := 20), no_missing_partitions, column_sum_change(column := Amount, max_pct := 5)").unwrap();
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].number("max_pct"), 20.0);
        assert_eq!(g[2].args["column"], "amount");
        assert_eq!(
            g[2].text(),
            "column_sum_change(column := amount, max_pct := 5)"
        );
        for (bad, says) in [
            ("row_count_chnage(max_pct := 1)", "unknown gate"),
            ("row_count_change", "needs the argument `max_pct`"),
            ("row_count_change(max_pct := -3)", "a number of 0 or more"),
            (
                "row_count_change(max_pct := 1, max_pct := 2)",
                "given twice",
            ),
            ("unchanged(column := x)", "takes no arguments"),
            (
                "null_fraction_change(column := 'x y', max_points := 1)",
                "a column name",
            ),
        ] {
            let e = gates(bad).unwrap_err();
            let text = format!("{}{}", e.message, e.hint.as_deref().unwrap_or(""));
            assert!(text.contains(says), "{bad}: {text}");
        }
    }
}
