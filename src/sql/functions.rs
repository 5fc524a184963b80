//! Functions of other dialects (DuckDB first, then Trino and BigQuery) that DataFusion lacks or
//! names differently, rewritten on the AST of a model's query when it loads; and the calls a
//! query makes, for checking at load that each function exists.
//!
//! Invariants:
//! - A rewrite only renames a function or rebuilds the call from its own argument expressions
//!   (re-parsed from their SQL form, in which literals stay quoted literals): a value can never
//!   change a statement's structure.
//! - A function DataFusion has under the same name is never rewritten.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, CastKind, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Query, Visit, VisitMut, Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::parser::Parser;

use super::DIALECT;

/// Functions renamed: (other dialects' name, DataFusion's), for the documentation table too.
pub const RENAMED: [(&str, &str); 5] = [
    ("strptime", "to_timestamp"),
    ("strftime", "to_char"),
    ("list_value", "make_array"),
    ("regexp_matches", "regexp_like"),
    ("epoch_ms", "to_timestamp_millis"),
];

/// Calls rebuilt: (name, what it becomes), for the documentation table.
pub const REBUILT: [(&str, &str); 11] = [
    ("arg_max(x, y)", "first_value(x ORDER BY y DESC NULLS LAST)"),
    ("arg_min(x, y)", "first_value(x ORDER BY y ASC NULLS LAST)"),
    ("if(c, a, b)", "CASE WHEN c THEN a ELSE b END"),
    (
        "date_diff('unit', a, b)",
        "whole `unit`s (second … week, month, quarter, year) from a to b",
    ),
    ("SAFE_CAST(x AS t)", "TRY_CAST(x AS t)"),
    (
        "CAST(x AS INT64), CAST(x AS FLOAT64)",
        "BIGINT, DOUBLE (BigQuery)",
    ),
    (
        "date_add(d, INTERVAL …)",
        "d + INTERVAL … (DuckDB, BigQuery)",
    ),
    (
        "date_sub(d, INTERVAL …)",
        "d - INTERVAL … (DuckDB, BigQuery)",
    ),
    (
        "date_add('unit', n, d), DATEADD(unit, n, d)",
        "d + INTERVAL 'n unit' (Trino, T-SQL)",
    ),
    ("ISNULL(a, b)", "coalesce(a, b) (T-SQL)"),
    (
        "j ->> path, j -> path",
        "json_extract_string(j, path), json_extract(j, path) (DuckDB; `$.a[0]`, `/a/0` or a key)",
    ),
];

/// Rewrite the calls of other dialects' functions in `query` (see the module invariants).
pub fn translate(query: &mut Query) {
    struct T;
    impl VisitorMut for T {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Cast {
                kind, data_type, ..
            } = expr
            {
                if *kind == CastKind::SafeCast {
                    *kind = CastKind::TryCast;
                }
                // BigQuery's type names DataFusion lacks.
                use datafusion::sql::sqlparser::ast::{DataType, ExactNumberInfo};
                match data_type {
                    DataType::Int64 => *data_type = DataType::BigInt(None),
                    DataType::Float64 => *data_type = DataType::Double(ExactNumberInfo::None),
                    _ => {}
                }
            }
            // DuckDB's JSON operators: `j ->> path` (text) and `j -> path` (JSON), an index as
            // the path `$[n]` (see the engine's `json` functions).
            if let Expr::BinaryOp { left, op, right } = expr
                && matches!(op, BinaryOperator::LongArrow | BinaryOperator::Arrow)
            {
                let name = if *op == BinaryOperator::LongArrow {
                    "json_extract_string"
                } else {
                    "json_extract"
                };
                let path = match &**right {
                    Expr::Value(v) => match &v.value {
                        datafusion::sql::sqlparser::ast::Value::Number(n, _) => {
                            format!("'$[{n}]'")
                        }
                        _ => right.to_string(),
                    },
                    _ => right.to_string(),
                };
                if let Some(e) = parse_expr(&format!("{name}({left}, {path})")) {
                    *expr = e;
                }
                return ControlFlow::Continue(());
            }
            let Expr::Function(f) = expr else {
                return ControlFlow::Continue(());
            };
            let name = f.name.to_string().to_lowercase();
            if let Some((_, to)) = RENAMED.iter().find(|(from, _)| *from == name) {
                f.name = ObjectName(vec![ObjectNamePart::Identifier(Ident::new(*to))]);
                return ControlFlow::Continue(());
            }
            let args: Vec<String> = match &f.args {
                FunctionArguments::List(l) if l.clauses.is_empty() => l
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => return ControlFlow::Continue(()),
            };
            let text = match (name.as_str(), args.as_slice()) {
                ("arg_max" | "max_by", [x, y]) => {
                    format!("first_value({x} ORDER BY {y} DESC NULLS LAST)")
                }
                ("arg_min" | "min_by", [x, y]) => {
                    format!("first_value({x} ORDER BY {y} ASC NULLS LAST)")
                }
                ("if" | "iif", [c, a, b]) => format!("CASE WHEN {c} THEN {a} ELSE {b} END"),
                ("isnull", [a, b]) => format!("coalesce({a}, {b})"),
                ("date_add" | "date_sub", [d, i]) if i.to_uppercase().starts_with("INTERVAL") => {
                    let op = if name == "date_add" { '+' } else { '-' };
                    format!("({d} {op} {i})")
                }
                ("date_add" | "dateadd", [unit, n, d]) => {
                    let unit = unit.trim_matches('\'').to_lowercase();
                    let known = ["second", "minute", "hour", "day", "week", "month", "year"];
                    let unit = unit.strip_suffix('s').unwrap_or(&unit);
                    if !known.contains(&unit) {
                        return ControlFlow::Continue(());
                    }
                    // DataFusion multiplies no interval by a number: a literal count goes into
                    // the interval, any other is cast from text.
                    match n.parse::<i64>() {
                        Ok(k) => format!("({d} + INTERVAL '{k} {unit}')"),
                        Err(_) => {
                            format!("({d} + CAST(CAST({n} AS VARCHAR) || ' {unit}' AS INTERVAL))")
                        }
                    }
                }
                ("date_diff" | "datediff", [unit, a, b]) => match date_diff(unit, a, b) {
                    Some(t) => t,
                    None => return ControlFlow::Continue(()),
                },
                _ => return ControlFlow::Continue(()),
            };
            if let Some(e) = parse_expr(&text) {
                *expr = e;
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut T);
}

/// DuckDB's `date_diff('unit', a, b)`: the unit boundaries crossed from `a` to `b`.
fn date_diff(unit: &str, a: &str, b: &str) -> Option<String> {
    let unit = unit.trim_matches('\'').to_lowercase();
    let seconds = |u: &str| match u {
        "second" | "seconds" => Some(("second", 1)),
        "minute" | "minutes" => Some(("minute", 60)),
        "hour" | "hours" => Some(("hour", 3600)),
        "day" | "days" => Some(("day", 86400)),
        "week" | "weeks" => Some(("week", 604_800)),
        _ => None,
    };
    if let Some((u, s)) = seconds(&unit) {
        return Some(format!(
            "CAST((date_part('epoch', date_trunc('{u}', CAST({b} AS TIMESTAMP))) - date_part('epoch', date_trunc('{u}', CAST({a} AS TIMESTAMP)))) / {s} AS BIGINT)"
        ));
    }
    let months = |x: &str| {
        format!(
            "(date_part('year', CAST({x} AS TIMESTAMP)) * 12 + date_part('month', CAST({x} AS TIMESTAMP)))"
        )
    };
    match unit.as_str() {
        "month" | "months" => Some(format!("CAST({} - {} AS BIGINT)", months(b), months(a))),
        "quarter" | "quarters" => Some(format!(
            "CAST(floor(({} - 1) / 3) - floor(({} - 1) / 3) AS BIGINT)",
            months(b),
            months(a)
        )),
        "year" | "years" => Some(format!(
            "CAST(date_part('year', CAST({b} AS TIMESTAMP)) - date_part('year', CAST({a} AS TIMESTAMP)) AS BIGINT)"
        )),
        _ => None,
    }
}

fn parse_expr(text: &str) -> Option<Expr> {
    Parser::new(&DIALECT)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_expr())
        .ok()
}

/// Every function a query calls, lower-cased, with its name's line and column (1-based;
/// positions of the text it was parsed from). Macros (`@name(...)`) are left out.
pub fn calls(query: &Query) -> Vec<(String, u64, u64)> {
    struct C(Vec<(String, u64, u64)>);
    impl Visitor for C {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr
                && f.name.0.len() == 1
                && let Some(ObjectNamePart::Identifier(id)) = f.name.0.last()
                && !id.value.starts_with('@')
            {
                self.0.push((
                    id.value.to_lowercase(),
                    id.span.start.line,
                    id.span.start.column,
                ));
            }
            ControlFlow::Continue(())
        }
    }
    let mut c = C(Vec::new());
    let _ = query.visit(&mut c);
    c.0
}

/// Names that parse as function calls but are SQL syntax DataFusion plans itself.
pub const SQL_SPECIAL: [&str; 10] = [
    "current_timestamp",
    "current_date",
    "current_time",
    "localtimestamp",
    "localtime",
    "current_user",
    "session_user",
    "unnest",
    "grouping",
    "exists",
];

#[cfg(test)]
mod tests {
    use super::*;

    fn translated(sql: &str) -> String {
        let mut q = crate::sql::parse_query(
            std::path::Path::new("m.sql"),
            sql,
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        translate(&mut q);
        q.to_string()
    }

    #[test]
    fn duckdb_and_trino_functions_become_datafusion_ones() {
        assert_eq!(
            translated(
                "SELECT strptime(s, '%Y'), list_value(1, 2), arg_max(x, y), IF(a > 1, 'x', 'y''z') FROM t"
            ),
            "SELECT to_timestamp(s, '%Y'), make_array(1, 2), first_value(x ORDER BY y DESC NULLS LAST), CASE WHEN a > 1 THEN 'x' ELSE 'y''z' END FROM t"
        );
        assert_eq!(
            translated(
                "SELECT SAFE_CAST(x AS INT), CAST(y AS INT64), SAFE_CAST(z AS FLOAT64) FROM t"
            ),
            "SELECT TRY_CAST(x AS INT), CAST(y AS BIGINT), TRY_CAST(z AS DOUBLE) FROM t"
        );
        assert!(translated("SELECT date_diff('day', a, b) FROM t").contains("/ 86400 AS BIGINT"));
        assert_eq!(
            translated(
                "SELECT date_add(d, INTERVAL 1 DAY), DATEADD(month, 2, d), date_add('day', n, d), date_sub(d, INTERVAL '3' HOUR), ISNULL(a, 0) FROM t"
            ),
            "SELECT (d + INTERVAL 1 DAY), (d + INTERVAL '2 month'), (d + CAST(CAST(n AS VARCHAR) || ' day' AS INTERVAL)), (d - INTERVAL '3' HOUR), coalesce(a, 0) FROM t"
        );
        assert_eq!(
            translated("SELECT j ->> 'a' AS a, j -> '$.b' ->> 0 AS b FROM t"),
            "SELECT json_extract_string(j, 'a') AS a, json_extract_string(json_extract(j, '$.b'), '$[0]') AS b FROM t"
        );
        // DataFusion's own names stay.
        assert_eq!(
            translated("SELECT to_char(d, '%Y') FROM t"),
            "SELECT to_char(d, '%Y') FROM t"
        );
    }

    #[test]
    fn calls_are_located() {
        let q = crate::sql::parse_query(
            std::path::Path::new("m.sql"),
            "SELECT\n  upper(a), @each(x)\nFROM t",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        assert_eq!(calls(&q), [("upper".to_string(), 2, 3)]);
    }
}
