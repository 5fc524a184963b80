//! Audits attached to a model: the built-in ones and their arguments, and the `audits`
//! property.
//!
//! Invariant: an [`AuditCall`] names a built-in audit with its required arguments, or an audit
//! file; arguments are checked when the model loads, not when the audit runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Builder;
use crate::error::{Diagnostic, did_you_mean};
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

/// Built-in audits and their (required, optional) arguments.
pub const BUILTIN_AUDITS: [(&str, &[&str], &[&str]); 6] = [
    ("not_null", &["columns"], &[]),
    ("unique_values", &["columns"], &[]),
    ("accepted_values", &["column", "is_in"], &[]),
    (
        "accepted_range",
        &["column"],
        &["min_v", "max_v", "inclusive"],
    ),
    ("number_of_rows", &["threshold"], &[]),
    ("forall", &["criteria"], &[]),
];

impl Builder<'_> {
    pub(super) fn audit(&self, item: &[Token]) -> Result<AuditCall, Diagnostic> {
        let src = self.src;
        let c = header::call(src, "audits", item)?;
        let mut args = BTreeMap::new();
        let mut blocking = true;
        for arg in &c.args {
            let (key, at, value) = header::key_value(src, arg)?;
            if key == "blocking" {
                blocking = header::boolean(src, "blocking", value)?;
                continue;
            }
            let text = sql::canonical_expr(src.text_of(value)).map_err(|r| {
                src.err(
                    value[0].start,
                    format!("invalid audit argument `{key}`: {r}"),
                )
            })?;
            if args.insert(key.clone(), text).is_some() {
                return Err(src.err(at, format!("audit argument `{key}` is given twice")));
            }
        }
        if let Some((_, required, optional)) = BUILTIN_AUDITS.iter().find(|(n, _, _)| *n == c.name)
        {
            for r in *required {
                if !args.contains_key(*r) {
                    return Err(src
                        .err(
                            c.start,
                            format!("audit `{}` needs the argument `{r}`", c.name),
                        )
                        .hint(format!("write {}({r} := ...)", c.name)));
                }
            }
            if let Some(extra) = args
                .keys()
                .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
            {
                let all: Vec<&str> = required.iter().chain(optional.iter()).copied().collect();
                return Err(src
                    .err(
                        c.start,
                        format!("audit `{}` has no argument `{extra}`", c.name),
                    )
                    .hint(format!("its arguments: {}", all.join(", "))));
            }
            if c.name == "accepted_range"
                && !args.contains_key("min_v")
                && !args.contains_key("max_v")
            {
                return Err(src.err(
                    c.start,
                    "audit `accepted_range` needs `min_v`, `max_v` or both",
                ));
            }
        } else {
            let custom = self.root.join("audits").join(format!("{}.sql", c.name));
            if !custom.is_file() {
                let names = BUILTIN_AUDITS.iter().map(|(n, _, _)| *n);
                let hint = did_you_mean(&c.name, names).unwrap_or_else(|| {
                    "built-in audits: not_null, unique_values, accepted_values, accepted_range, number_of_rows, forall; custom audits are files audits/NAME.sql".to_string()
                });
                return Err(src
                    .err(c.start, format!("unknown audit `{}`", c.name))
                    .hint(hint));
            }
        }
        Ok(AuditCall {
            name: c.name,
            args,
            blocking,
        })
    }
}
