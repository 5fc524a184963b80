//! Macro variables (`@start_ds`, `@this_model`, ...) and rendering a query for an interval.
//!
//! Intervals are half-open `[start, end)`. Following SQLMesh, every `@end_*` variable is the
//! *inclusive* end: the exclusive end minus one microsecond (the smallest unit of a timestamp).
//! So for the day `[2024-01-07, 2024-01-08)`, `@end_ds` is `'2024-01-07'` and
//! `WHERE ds BETWEEN @start_ds AND @end_ds` selects exactly that day.
//!
//! Every value becomes an AST literal (`Value::SingleQuotedString`, a `DATE`/`TIMESTAMP` typed
//! string, or a number); no user text is ever spliced into SQL.

use std::ops::ControlFlow;

use chrono::{DateTime, Duration, Timelike, Utc};
use datafusion::sql::sqlparser::ast::{
    DataType, Expr, Ident, ObjectName, Query, TableFactor, TimezoneInfo, TypedString, Value,
    VisitMut, VisitorMut,
};

/// Every macro variable tidemark knows, with what it renders to.
pub const MACRO_VARIABLES: [(&str, &str); 19] = [
    ("start_ds", "interval start as 'YYYY-MM-DD'"),
    ("end_ds", "inclusive interval end as 'YYYY-MM-DD'"),
    ("start_ts", "interval start as TIMESTAMP"),
    ("end_ts", "inclusive interval end (end - 1 µs) as TIMESTAMP"),
    ("start_dt", "same as @start_ts"),
    ("end_dt", "same as @end_ts"),
    ("start_date", "interval start as DATE"),
    ("end_date", "inclusive interval end as DATE"),
    ("start_epoch", "interval start in seconds since 1970"),
    ("end_epoch", "inclusive interval end in seconds since 1970"),
    ("start_millis", "interval start in milliseconds since 1970"),
    (
        "end_millis",
        "inclusive interval end in milliseconds since 1970",
    ),
    ("execution_ds", "execution time as 'YYYY-MM-DD'"),
    ("execution_ts", "execution time as TIMESTAMP"),
    ("execution_dt", "same as @execution_ts"),
    ("execution_date", "execution time as DATE"),
    ("execution_epoch", "execution time in seconds since 1970"),
    (
        "execution_millis",
        "execution time in milliseconds since 1970",
    ),
    ("this_model", "the physical table the model writes"),
];

/// Is `name` (without `@`) a time-window variable (`@start_*` / `@end_*`)?
pub fn is_window_variable(name: &str) -> bool {
    name.starts_with("start_") || name.starts_with("end_")
}

/// Is `name` (without `@`) a known macro variable?
pub fn is_known(name: &str) -> bool {
    MACRO_VARIABLES.iter().any(|(n, _)| *n == name)
}

/// What the variables stand for in one rendering.
#[derive(Debug, Clone)]
pub struct MacroContext {
    /// Interval start (inclusive).
    pub start: DateTime<Utc>,
    /// Interval end (exclusive).
    pub end: DateTime<Utc>,
    /// The execution time ("now").
    pub execution_time: DateTime<Utc>,
    /// The name `@this_model` stands for, as parts.
    pub this_model: Vec<String>,
}

/// Substitute every macro variable of `query` (a copy); unknown variables are an error naming
/// the first one (loading already rejects them, so this is a safety net).
pub fn render_query(query: &Query, ctx: &MacroContext) -> Result<Query, String> {
    let mut q = query.clone();
    let mut r = Renderer { ctx, error: None };
    let _ = q.visit(&mut r);
    match r.error {
        Some(e) => Err(e),
        None => Ok(q),
    }
}

struct Renderer<'a> {
    ctx: &'a MacroContext,
    error: Option<String>,
}

impl Renderer<'_> {
    fn value(&self, name: &str) -> Option<Expr> {
        let inclusive_end = self.ctx.end - Duration::microseconds(1);
        let (prefix, suffix) = name.split_once('_')?;
        let t = match prefix {
            "start" => self.ctx.start,
            "end" => inclusive_end,
            "execution" => self.ctx.execution_time,
            _ => return None,
        };
        Some(match suffix {
            "ds" => Expr::value(Value::SingleQuotedString(t.format("%Y-%m-%d").to_string())),
            "ts" | "dt" => typed(DataType::Timestamp(None, TimezoneInfo::None), ts_text(t)),
            "date" => typed(DataType::Date, t.format("%Y-%m-%d").to_string()),
            "epoch" => Expr::value(Value::Number(epoch_text(t), false)),
            "millis" => Expr::value(Value::Number(t.timestamp_millis().to_string(), false)),
            _ => return None,
        })
    }
}

fn typed(data_type: DataType, text: String) -> Expr {
    Expr::TypedString(TypedString {
        data_type,
        value: Value::SingleQuotedString(text).with_empty_span(),
        uses_odbc_syntax: false,
    })
}

fn ts_text(t: DateTime<Utc>) -> String {
    if t.nanosecond() == 0 {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

fn epoch_text(t: DateTime<Utc>) -> String {
    let micros = t.timestamp_micros();
    let (secs, frac) = (micros.div_euclid(1_000_000), micros.rem_euclid(1_000_000));
    if frac == 0 {
        secs.to_string()
    } else {
        format!("{secs}.{frac:06}")
    }
}

impl VisitorMut for Renderer<'_> {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Identifier(id) = expr
            && id.quote_style.is_none()
            && let Some(name) = id.value.strip_prefix('@')
        {
            let name = name.to_lowercase();
            if name == "this_model" {
                *expr = Expr::CompoundIdentifier(
                    self.ctx
                        .this_model
                        .iter()
                        .map(|p| Ident::with_quote('"', p))
                        .collect(),
                );
            } else {
                match self.value(&name) {
                    Some(v) => *expr = v,
                    None => self.error = Some(format!("unknown macro variable `@{name}`")),
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name, args: None, ..
        } = tf
        {
            let is_this = name.0.len() == 1 && name.to_string().eq_ignore_ascii_case("@this_model");
            if is_this {
                *name = ObjectName::from(
                    self.ctx
                        .this_model
                        .iter()
                        .map(|p| Ident::with_quote('"', p))
                        .collect::<Vec<_>>(),
                );
            }
        }
        ControlFlow::Continue(())
    }
}

/// A project variable's value (`[variables]` in tidemark.toml).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Variable {
    /// A string: a `'quoted'` literal.
    Text(String),
    /// An integer.
    Integer(i64),
    /// A number, as its literal (`10.5`).
    Float(String),
    /// `true` / `false`.
    Boolean(bool),
}

impl Variable {
    /// The value as an AST literal (never spliced text).
    pub fn literal(&self) -> Expr {
        match self {
            Variable::Text(s) => text_literal(s),
            Variable::Integer(n) => Expr::value(Value::Number(n.to_string(), false)),
            Variable::Float(f) => Expr::value(Value::Number(f.clone(), false)),
            Variable::Boolean(b) => Expr::value(Value::Boolean(*b)),
        }
    }
}

/// A string as an expression that reads back as exactly `s` however the SQL is printed and
/// re-parsed: the tokenizer treats `\` in a quoted string as an escape, and sqlparser prints a
/// doubled quote as it is (so `''` would come back as `'`); such characters are spliced in as
/// `chr(92)` and `chr(39)` between quoted parts (`'a' || chr(92) || 'b'`).
pub fn text_literal(s: &str) -> Expr {
    use datafusion::sql::sqlparser::ast::BinaryOperator;
    if !s.contains('\\') && !s.contains("''") {
        return Expr::value(Value::SingleQuotedString(s.to_string()));
    }
    let chr = |code: &str| {
        super::sql_macros::ast::call("chr", vec![Expr::value(Value::Number(code.into(), false))])
    };
    let concat = |l: Expr, r: Expr| Expr::BinaryOp {
        left: Box::new(l),
        op: BinaryOperator::StringConcat,
        right: Box::new(r),
    };
    let mut out = Expr::value(Value::SingleQuotedString(String::new()));
    let mut run = String::new();
    for c in s.chars() {
        let special = match c {
            '\\' => Some("92"),
            '\'' => Some("39"),
            _ => None,
        };
        match special {
            Some(code) => {
                out = concat(
                    out,
                    Expr::value(Value::SingleQuotedString(std::mem::take(&mut run))),
                );
                out = concat(out, chr(code));
            }
            None => run.push(c),
        }
    }
    out = concat(out, Expr::value(Value::SingleQuotedString(run)));
    Expr::Nested(Box::new(out))
}

/// Substitute project variables in `query`: `@name` (a variable that is not a built-in macro
/// variable) and `@VAR('name')` / `@VAR('name', default)` become literals. Returns the names
/// used; an `@VAR` of an unknown variable without a default is an error naming it.
pub fn substitute_variables(
    query: &mut Query,
    variables: &std::collections::BTreeMap<String, Variable>,
) -> Result<std::collections::BTreeSet<String>, String> {
    use datafusion::sql::sqlparser::ast::{FunctionArg, FunctionArgExpr, FunctionArguments};
    struct S<'a> {
        variables: &'a std::collections::BTreeMap<String, Variable>,
        used: std::collections::BTreeSet<String>,
        error: Option<String>,
    }
    impl VisitorMut for S<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            match expr {
                Expr::Identifier(id) if id.quote_style.is_none() => {
                    if let Some(name) = id.value.strip_prefix('@').map(str::to_lowercase)
                        && !is_known(&name)
                        && let Some(v) = self.variables.get(&name)
                    {
                        self.used.insert(name);
                        *expr = v.literal();
                    }
                }
                Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("@var") => {
                    let args: Vec<&Expr> = match &f.args {
                        FunctionArguments::List(l) => l
                            .args
                            .iter()
                            .filter_map(|a| match a {
                                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                                _ => None,
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let name = match args.first() {
                        Some(Expr::Value(v)) => match &v.value {
                            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                                Some(s.to_lowercase())
                            }
                            _ => None,
                        },
                        _ => None,
                    };
                    let Some(name) = name.filter(|_| args.len() <= 2) else {
                        self.error = Some(
                            "`@VAR` takes a variable name in quotes and an optional default: @VAR('name', default)".into(),
                        );
                        return ControlFlow::Continue(());
                    };
                    match (self.variables.get(&name), args.get(1)) {
                        (Some(v), _) => {
                            self.used.insert(name);
                            *expr = v.literal();
                        }
                        (None, Some(default)) => *expr = (*default).clone(),
                        (None, None) => {
                            self.error = Some(format!(
                                "`@VAR('{name}')`: no variable `{name}` in [variables] of tidemark.toml, and no default"
                            ));
                        }
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let mut s = S {
        variables,
        used: Default::default(),
        error: None,
    };
    let _ = query.visit(&mut s);
    match s.error {
        Some(e) => Err(e),
        None => Ok(s.used),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::parse_instant;

    #[test]
    fn variables_become_literals_and_var_takes_a_default() {
        let vars = std::collections::BTreeMap::from([
            ("min_total".to_string(), Variable::Float("10.5".into())),
            (
                "region".to_string(),
                Variable::Text("eu'; DROP TABLE x; --".into()),
            ),
            ("on".to_string(), Variable::Boolean(true)),
        ]);
        let mut q = crate::sql::parse_query(
            std::path::Path::new("m.sql"),
            "SELECT a FROM t WHERE total > @min_total AND region = @VAR('region') AND @on AND n < @VAR('limit', 5) AND ds = @start_ds",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        let used = substitute_variables(&mut q, &vars).unwrap();
        assert_eq!(
            q.to_string(),
            "SELECT a FROM t WHERE total > 10.5 AND region = 'eu''; DROP TABLE x; --' AND true AND n < 5 AND ds = @start_ds"
        );
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            ["min_total", "on", "region"]
        );
        let mut q = crate::sql::parse_query(
            std::path::Path::new("m.sql"),
            "SELECT @VAR('nope') AS x",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        assert!(
            substitute_variables(&mut q, &vars)
                .unwrap_err()
                .contains("no variable `nope`")
        );
    }
    use crate::sql::parse_query;
    use std::path::Path;

    fn ctx(start: &str, end: &str) -> MacroContext {
        MacroContext {
            start: parse_instant(start).unwrap().at,
            end: parse_instant(end).unwrap().at,
            execution_time: parse_instant("2024-02-01 06:30:00").unwrap().at,
            this_model: vec!["sushi".into(), "orders__0123abcd".into()],
        }
    }

    fn render(sql: &str, c: &MacroContext) -> String {
        let q = parse_query(Path::new("m.sql"), sql, crate::sql::Dialect::DataFusion).unwrap();
        render_query(&q, c).unwrap().to_string()
    }

    #[test]
    fn end_variables_are_inclusive() {
        let c = ctx("2024-01-01", "2024-01-08");
        assert_eq!(
            render(
                "SELECT @start_ds, @end_ds, @start_date, @end_date, @start_ts, @end_ts",
                &c
            ),
            "SELECT '2024-01-01', '2024-01-07', DATE '2024-01-01', DATE '2024-01-07', TIMESTAMP '2024-01-01 00:00:00', TIMESTAMP '2024-01-07 23:59:59.999999'"
        );
        assert_eq!(
            render(
                "SELECT @start_epoch, @end_epoch, @start_millis, @end_millis",
                &c
            ),
            "SELECT 1704067200, 1704671999.999999, 1704067200000, 1704671999999"
        );
        assert_eq!(
            render("SELECT @execution_ds, @execution_ts FROM @this_model", &c),
            "SELECT '2024-02-01', TIMESTAMP '2024-02-01 06:30:00' FROM \"sushi\".\"orders__0123abcd\""
        );
    }

    #[test]
    fn every_listed_variable_renders() {
        let c = ctx("2024-01-01 10:00", "2024-01-01 11:00");
        for (name, _) in MACRO_VARIABLES {
            let out = render(&format!("SELECT @{name}"), &c);
            assert!(!out.contains('@'), "{name}: {out}");
        }
    }

    #[test]
    fn hostile_values_stay_literals() {
        // A value containing quotes is escaped by the printer, never able to end the literal.
        let mut c = ctx("2024-01-01", "2024-01-02");
        c.this_model = vec!["x\"; DROP TABLE y; --".into()];
        let out = render("SELECT * FROM @this_model", &c);
        assert_eq!(out, "SELECT * FROM \"x\"\"; DROP TABLE y; --\"");
        let reparsed =
            parse_query(Path::new("m.sql"), &out, crate::sql::Dialect::DataFusion).unwrap();
        assert_eq!(reparsed.to_string(), out);
    }

    /// The statement's structure: projection width, the FROM table's name parts, and the
    /// WHERE clause's shape with every literal blanked out.
    fn shape(q: &Query) -> (usize, Vec<String>, String) {
        use datafusion::sql::sqlparser::ast::{ObjectNamePart, SetExpr};
        let SetExpr::Select(select) = q.body.as_ref() else {
            panic!("not a SELECT: {q}");
        };
        assert_eq!(select.from.len(), 1, "{q}");
        let TableFactor::Table { name, .. } = &select.from[0].relation else {
            panic!("not a table: {q}");
        };
        let parts = name
            .0
            .iter()
            .map(|p| match p {
                ObjectNamePart::Identifier(i) => i.value.clone(),
                other => panic!("unexpected name part {other:?}"),
            })
            .collect();
        let mut filter = select.selection.clone().expect("a WHERE clause");
        let _ = datafusion::sql::sqlparser::ast::visit_expressions_mut(&mut filter, |e| {
            if matches!(e, Expr::Value(_) | Expr::TypedString(_)) {
                *e = Expr::value(Value::Null);
            }
            ControlFlow::<()>::Continue(())
        });
        (select.projection.len(), parts, filter.to_string())
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]
        /// Window bounds and the execution time are typed instants, printed as digits and
        /// separators only; physical names are checked ids of `[A-Za-z0-9_]` parts, always
        /// quoted. Fed hostile names (quotes, backslashes, comment markers, semicolons, control
        /// characters, any Unicode), the checks refuse them before any SQL is made; fed any
        /// instants and any valid names (SQL keywords included), the rendered statement
        /// re-parses to itself with the same structure: literals stay literals.
        #[test]
        fn substituted_values_never_change_the_statement(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    "[\"'`;\\\\ .-]{1,8}",
                    "(--|/\\*|\\*/|'; DROP TABLE x; --|\\n|\\u{0}|\\u{2028}){1,3}",
                    "\\PC{1,10}",
                    "[A-Za-z0-9_]{1,12}",
                    "(select|from|drop|where|or|union|null|table|[0-9]{1,3})",
                ],
                1..4,
            ),
            start in -30_000_000_000i64..250_000_000_000i64,
            micros in 0i64..1_000_000,
            length in 1i64..400_000_000,
            now in -30_000_000_000i64..250_000_000_000i64,
        ) {
            let plain = |p: &String| p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            let checked = crate::names::TableId::parse(&parts.join("/"));
            if !parts.iter().all(plain) {
                // A part holding the separator is several parts (`A/a` is a valid id).
                if !parts.iter().any(|p| p.contains('/')) {
                    proptest::prop_assert!(checked.is_err());
                }
                // A part holding a dot is several parts of a model name (`A.a` is valid).
                if !parts.iter().any(|p| p.contains('.')) {
                    proptest::prop_assert!(
                        crate::names::ModelName::parse(&parts.join(".")).is_err()
                    );
                }
                return Ok(());
            }
            proptest::prop_assert!(checked.is_ok());
            let at = |secs: i64, us: i64| {
                DateTime::from_timestamp(secs, 0).unwrap() + Duration::microseconds(us)
            };
            let c = MacroContext {
                start: at(start, micros),
                end: at(start + length, 0),
                execution_time: at(now, micros),
                this_model: parts.clone(),
            };
            let vars: Vec<String> = MACRO_VARIABLES
                .iter()
                .filter(|(n, _)| *n != "this_model")
                .map(|(n, _)| format!("@{n}"))
                .collect();
            let sql = format!(
                "SELECT {} FROM @this_model WHERE x BETWEEN @start_ts AND @end_ts AND d = @execution_ds",
                vars.join(", ")
            );
            let q = parse_query(Path::new("m.sql"), &sql, crate::sql::Dialect::DataFusion).unwrap();
            let text = render_query(&q, &c).unwrap().to_string();
            let reparsed = parse_query(Path::new("m.sql"), &text, crate::sql::Dialect::DataFusion).unwrap();
            proptest::prop_assert_eq!(reparsed.to_string(), text.clone());
            let (width, names, filter) = shape(&reparsed);
            proptest::prop_assert_eq!(width, vars.len());
            proptest::prop_assert_eq!(names, parts);
            proptest::prop_assert_eq!(filter, "x BETWEEN NULL AND NULL AND d = NULL");
        }

        /// Project variables and `@DEF` string values of any text (quotes, comment markers,
        /// semicolons, `@` macros, any Unicode) become one quoted literal each: the query keeps
        /// its shape, re-parses to itself, and each value reads back exactly.
        #[test]
        fn hostile_variable_and_def_values_stay_literals(
            value in proptest::prop_oneof![
                "[\"'`;\\ .@-]{0,12}",
                "(--|/\\*|\\*/|'; DROP TABLE x; --|\\n|@start_ds|@VAR\\('x'\\)){1,3}",
                "\\PC{0,12}",
            ],
        ) {
            let vars = std::collections::BTreeMap::from([("v".to_string(), Variable::Text(value.clone()))]);
            // A @DEF is SQL text: a backslash in it follows the dialect's escapes.
            // A `"` cannot be put into a name (see `ident_for`); the @EACH alias uses it.
            let def_value = value.replace(['\\', '\'', '"'], "");
            let def = format!("@DEF(d, '{}');\n", def_value.replace('\'', "''"));
            let body = format!("{def}SELECT @v AS a, @VAR('v') AS b, @d AS c, @IF(@v = @d, 1, 2) AS e, @EACH([@d], x -> x AS @{{x}}_n) FROM t WHERE @AND(x = @v, y = @d)");
            let (blanked, defs) = crate::sql::extract_defs(&body).unwrap();
            let mut q = parse_query(Path::new("m.sql"), &blanked, crate::sql::Dialect::DataFusion).unwrap();
            let mut values: std::collections::BTreeMap<String, Expr> =
                vars.iter().map(|(n, v)| (n.clone(), v.literal())).collect();
            values.extend(defs);
            crate::sql::expand_sql_macros(&mut q, &values, crate::sql::Dialect::DataFusion).unwrap();
            substitute_variables(&mut q, &vars).unwrap();
            let text = q.to_string();
            let reparsed = parse_query(Path::new("m.sql"), &text, crate::sql::Dialect::DataFusion).unwrap();
            proptest::prop_assert_eq!(reparsed.to_string(), text.clone());
            let datafusion::sql::sqlparser::ast::SetExpr::Select(select) = &*reparsed.body else {
                return Err(proptest::test_runner::TestCaseError::fail("not a SELECT"));
            };
            proptest::prop_assert_eq!(select.projection.len(), 5);
            // A value interpolated into a name stays one name.
            let named = format!("{def_value}_n");
            let plain = named.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && named.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            let datafusion::sql::sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } = &select.projection[4] else {
                return Err(proptest::test_runner::TestCaseError::fail("the @EACH item has no alias"));
            };
            proptest::prop_assert_eq!(&alias.value, &if plain { named.to_lowercase() } else { named });
            let literal = text_literal(&value).to_string();
            let def_literal = Expr::value(Value::SingleQuotedString(def_value.clone())).to_string();
            // Outer parentheses aside (a substituted expression is parenthesized).
            let bare = |t: &str| -> String {
                let mut t = t.to_string();
                while t.starts_with('(') && t.ends_with(')') && parse_query(Path::new("m.sql"), &format!("SELECT {}", &t[1..t.len() - 1]), crate::sql::Dialect::DataFusion).is_ok() {
                    t = t[1..t.len() - 1].to_string();
                }
                t
            };
            for (item, expected) in select.projection[..3].iter().zip([&literal, &literal, &def_literal]) {
                let shown = item.to_string();
                let value = shown.rsplit_once(" AS ").map(|(v, _)| bare(v));
                proptest::prop_assert_eq!(value, Some(bare(expected)));
            }
        }
    }
}
