//! The SQLMesh macros that build SQL: `@GENERATE_SURROGATE_KEY`, `@SAFE_ADD`/`@SAFE_SUB`/
//! `@SAFE_DIV`, `@STAR` and `@UNION`.
//!
//! Invariant: SQL is built from templates with `$n` placeholders that the arguments' ASTs
//! replace, or from names that parsed as identifiers; no argument text is pasted.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, ObjectName, Query, SelectItem,
    SelectItemQualifiedWildcardKind, Value, VisitMut, VisitorMut, WildcardAdditionalOptions,
};

use super::{Dialect, Expander, constant, ident_for, name_text, named, positional, unnest};

/// Parse `template` (generic SQL with `$1`, `$2`, … placeholders) and put `args` in place of
/// the placeholders: SQL built by a macro from AST pieces, no text of them pasted.
fn template(template: &str, args: &[Expr]) -> Result<Expr, String> {
    struct Fill<'a>(&'a [Expr]);
    impl VisitorMut for Fill<'_> {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Value(v) = expr
                && let Value::Placeholder(p) = &v.value
                && let Some(i) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
                && let Some(a) = i.checked_sub(1).and_then(|i| self.0.get(i))
            {
                *expr = Expr::Nested(Box::new(a.clone()));
            }
            ControlFlow::Continue(())
        }
    }
    let mut e = crate::sql::parse_expr(template, Dialect::DataFusion).map_err(|e| {
        format!("internal: a macro template does not parse ({e}); this is a bug in tidemark")
    })?;
    let _ = e.visit(&mut Fill(args));
    Ok(e)
}

impl Expander<'_> {
    /// SQLMesh's built-in SQL-building macros.
    pub(super) fn builtin(
        &mut self,
        name: &str,
        f: &Function,
        at: Option<(u64, u64)>,
    ) -> Option<Expr> {
        let args = positional(f);
        let n = args.len();
        let numbered = |sep: &str, each: &dyn Fn(usize) -> String| {
            (1..=n).map(each).collect::<Vec<_>>().join(sep)
        };
        let text = match name {
            "@generate_surrogate_key" => {
                let hash = named(f)
                    .get("hash_function")
                    .and_then(name_text)
                    .unwrap_or_else(|| "MD5".into())
                    .to_uppercase();
                let fields = numbered(", '|', ", &|i| {
                    format!("COALESCE(CAST(${i} AS VARCHAR), '_sqlmesh_surrogate_key_null_')")
                });
                match hash.as_str() {
                    "MD5" => format!("MD5(CONCAT({fields}))"),
                    "SHA256" => format!("ENCODE(SHA256(CONCAT({fields})), 'hex')"),
                    other => {
                        self.fail(at, format!("`@GENERATE_SURROGATE_KEY`: hash function `{other}` is not supported (MD5 or SHA256)"));
                        return None;
                    }
                }
            }
            "@safe_add" | "@safe_sub" => {
                let op = if name == "@safe_add" { " + " } else { " - " };
                format!(
                    "CASE WHEN {} THEN NULL ELSE {} END",
                    numbered(" AND ", &|i| format!("${i} IS NULL")),
                    numbered(op, &|i| format!("COALESCE(${i}, 0)"))
                )
            }
            "@safe_div" if n == 2 => "$1 / NULLIF($2, 0)".to_string(),
            "@safe_div" => {
                self.fail(at, "`@SAFE_DIV` takes two arguments");
                return None;
            }
            _ => return None,
        };
        if n == 0 {
            self.fail(
                at,
                format!("`{}` needs at least one argument", name.to_uppercase()),
            );
            return None;
        }
        match template(&text, &args) {
            Ok(e) => Some(Expr::Nested(Box::new(e))),
            Err(reason) => {
                self.fail(at, reason);
                None
            }
        }
    }

    /// `@STAR(relation[, alias][, exclude := [a, b]])` as `alias.* EXCLUDE (a, b)`.
    pub(super) fn star(&mut self, f: &Function, at: Option<(u64, u64)>) -> Option<SelectItem> {
        use datafusion::sql::sqlparser::ast::ExcludeSelectItem;
        let args = positional(f);
        let named = named(f);
        let arg = |i: usize, name: &str| named.get(name).or_else(|| args.get(i)).cloned();
        for (i, name) in [(3, "prefix"), (4, "suffix")] {
            if arg(i, name)
                .and_then(|e| name_text(&e))
                .is_some_and(|t| !t.is_empty())
            {
                self.fail(at, format!("`@STAR` with a `{name}` needs the relation's column list, which tidemark does not know when a model loads; list the columns, or use `@STAR` without `{name}`"));
                return None;
            }
        }
        let qualifier = match arg(1, "alias").or_else(|| args.first().cloned()) {
            Some(e) => match name_text(&e) {
                Some(t) if !t.is_empty() => t,
                _ => {
                    self.fail(
                        at,
                        "`@STAR` takes a table name first: @STAR(orders, exclude := [a])",
                    );
                    return None;
                }
            },
            None => {
                self.fail(
                    at,
                    "`@STAR` takes a table name first: @STAR(orders, exclude := [a])",
                );
                return None;
            }
        };
        let exclude = arg(2, "exclude").or_else(|| named.get("except_").cloned());
        let names: Vec<String> = match exclude.as_ref().map(unnest) {
            None => Vec::new(),
            Some(Expr::Array(a)) => a.elem.iter().filter_map(name_text).collect(),
            Some(other) => name_text(other).into_iter().collect(),
        };
        let idents = |text: &str| {
            text.split('.')
                .map(ident_for)
                .collect::<Result<Vec<_>, _>>()
        };
        let mut columns = Vec::new();
        for c in &names {
            match ident_for(c.rsplit('.').next().unwrap_or(c)) {
                Ok(i) => columns.push(ObjectName::from(vec![i])),
                Err(reason) => {
                    self.fail(at, reason);
                    return None;
                }
            }
        }
        let options = WildcardAdditionalOptions {
            opt_exclude: (!columns.is_empty()).then_some(ExcludeSelectItem::Multiple(columns)),
            ..Default::default()
        };
        let name = match idents(&qualifier) {
            Ok(parts) => ObjectName::from(parts),
            Err(reason) => {
                self.fail(at, reason);
                return None;
            }
        };
        Some(SelectItem::QualifiedWildcard(
            SelectItemQualifiedWildcardKind::ObjectName(name),
            options,
        ))
    }

    /// `@UNION(['all' | 'distinct',] t1, t2, …)` (optionally a condition first) as a derived
    /// table `SELECT * FROM t1 UNION [ALL] BY NAME SELECT * FROM t2 …`.
    pub(super) fn union(
        &mut self,
        args: &[FunctionArg],
        at: Option<(u64, u64)>,
    ) -> Option<Box<Query>> {
        let mut args: Vec<Expr> = args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .map(|e| match &e {
                Expr::Identifier(i) if i.value.starts_with('@') => self
                    .defs
                    .get(&i.value[1..].to_lowercase())
                    .cloned()
                    .unwrap_or(e),
                _ => e,
            })
            .collect();
        let kind = |e: &Expr| match unnest(e) {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("all") => Some(true),
                Value::SingleQuotedString(s) if s.eq_ignore_ascii_case("distinct") => Some(false),
                _ => None,
            },
            _ => None,
        };
        let mut condition = true;
        if args.len() > 1 && kind(&args[0]).is_none() && kind(&args[1]).is_some() {
            match constant(&args.remove(0)) {
                Some(c) => condition = c,
                None => {
                    self.fail(at, "the condition of `@UNION` must be known when the model loads (literals and variables)");
                    return None;
                }
            }
        }
        let Some(all) = args.first().and_then(kind) else {
            self.fail(
                at,
                "`@UNION` takes 'all' or 'distinct' and then tables: @UNION('all', a.t, b.t)",
            );
            return None;
        };
        let mut tables = Vec::new();
        for t in &args[1..] {
            match unnest(t) {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => tables.push(t.to_string()),
                other => {
                    self.fail(
                        at,
                        format!("`@UNION` takes table names; `{other}` is not one"),
                    );
                    return None;
                }
            }
        }
        if tables.is_empty() {
            self.fail(at, "`@UNION` needs at least one table");
            return None;
        }
        if !condition {
            tables.truncate(1);
        }
        let op = if all {
            " UNION ALL BY NAME "
        } else {
            " UNION BY NAME "
        };
        let sql = tables
            .iter()
            .map(|t| format!("SELECT * FROM {t}"))
            .collect::<Vec<_>>()
            .join(op);
        match crate::sql::parse_query(std::path::Path::new("@UNION"), &sql, self.dialect) {
            Ok(q) => Some(q),
            Err(d) => {
                self.fail(
                    at,
                    format!("`@UNION` does not build a query: {}", d.message),
                );
                None
            }
        }
    }
}
