//! Checks of a model's query against its header: macro variables, time filters, projected
//! key columns.
//!
//! Invariant: every finding is located at the query's own `line:col`; warnings never stop a
//! model from loading.

use datafusion::sql::sqlparser::ast::Query;

use super::{Builder, Kind};
use crate::error::{Diagnostic, Location};
use crate::sql;

impl Builder<'_> {
    pub(super) fn check_query(&mut self, kind: &Kind, q: &Query, a: &sql::Analysis) {
        let file = self.src.file;
        let at = |line: u64, column: u64| Location::at(file, line, column);
        for m in &a.macros {
            if m.is_call {
                let d = match self.defaults.python_macros.get(&m.name) {
                    Some(py) => Diagnostic::error(format!(
                        "`@{}` is a Python macro (`{}`); tidemark cannot run Python",
                        m.name,
                        py.display()
                    ))
                    .hint(format!("write it in SQL as `@DEF({}, (a, b) -> …);` in a file of `macros/` (see docs/sqlmesh.md), or inline its SQL", m.name)),
                    None => Diagnostic::error(format!("unknown macro `@{}(...)`", m.name)).hint(
                        "tidemark expands @DEF, @EACH, @IF, @AND, @OR, @SQL, @STAR, @UNION, @GENERATE_SURROGATE_KEY, @SAFE_ADD/SUB/DIV and SQL macros of `macros/*.sql`; see docs/sqlmesh.md",
                    ),
                };
                self.errors.push(d.at(at(m.line, m.column)));
            } else if !sql::is_known_macro(&m.name) {
                let known = sql::MACRO_VARIABLES.iter().map(|(n, _)| *n);
                let close: Vec<String> = crate::error::closest(&m.name, known)
                    .iter()
                    .map(|n| format!("`@{n}`"))
                    .collect();
                let hint = if close.is_empty() {
                    let all: Vec<String> = sql::MACRO_VARIABLES
                        .iter()
                        .map(|(n, _)| format!("`@{n}`"))
                        .collect();
                    format!("the macro variables are {}", all.join(", "))
                } else {
                    format!("did you mean {}?", close.join(", "))
                };
                self.errors.push(
                    Diagnostic::error(format!("unknown macro variable `@{}`", m.name))
                        .at(at(m.line, m.column))
                        .hint(hint),
                );
            } else if sql::is_window_variable(&m.name) && matches!(kind, Kind::Full | Kind::View) {
                self.errors.push(
                    Diagnostic::error(format!("`@{}` has no value in a {} model: it is computed as a whole, not by interval", m.name, kind.name()))
                        .at(at(m.line, m.column))
                        .hint("use @execution_ds / @execution_ts, or make the model INCREMENTAL_BY_TIME_RANGE"),
                );
            }
        }
        // Computing a query's span walks its whole AST: only do it when a message needs it.
        let location = self.location.clone();
        let query_loc = || first_loc(q).map_or_else(|| location.clone(), |(l, c)| at(l, c));
        let projected = |col: &str| {
            a.projection
                .as_ref()
                .is_none_or(|p| p.iter().any(|c| c == col))
        };
        match kind {
            Kind::IncrementalByTimeRange { time_column, .. } => {
                if !projected(time_column) {
                    self.errors.push(
                        Diagnostic::error(format!("the query does not output the time column `{time_column}`"))
                            .at(query_loc())
                            .hint(format!("add `{time_column}` to the outermost SELECT list; tidemark partitions the table by it")),
                    );
                }
                if !a.macros.iter().any(|m| sql::is_window_variable(&m.name)) {
                    self.warnings.push(
                        Diagnostic::warning("this incremental model never uses @start_* or @end_*: every batch would read all of its inputs")
                            .at(query_loc())
                            .hint("filter the inputs, e.g. WHERE ts BETWEEN @start_ts AND @end_ts"),
                    );
                }
            }
            Kind::IncrementalByUniqueKey { unique_key, .. } => {
                for k in unique_key {
                    if !projected(k) {
                        self.errors.push(
                            Diagnostic::error(format!(
                                "the query does not output the unique key column `{k}`"
                            ))
                            .at(query_loc())
                            .hint(format!("add `{k}` to the outermost SELECT list")),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The location of the first token of the query (its first table or expression).
fn first_loc(q: &Query) -> Option<(u64, u64)> {
    use datafusion::sql::sqlparser::ast::Spanned;
    let span = q.span();
    (span.start.line > 0).then_some((span.start.line, span.start.column))
}
