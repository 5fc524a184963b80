//! AST rewrites used when rendering: replacing table references and inlining CTEs.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    Cte, CteAsMaterialized, Ident, ObjectName, Query, TableAlias, TableFactor, VisitMut,
    VisitorMut, With,
};

use crate::error::{Error, Result};
use crate::names::ModelName;

/// Replace every table reference `name` for which `map` returns a new name. A replaced
/// reference without an alias gets its old table part as alias, so `t.col` keeps working.
pub fn replace_tables(query: &mut Query, map: &dyn Fn(&str) -> Option<ObjectName>) {
    struct R<'a> {
        map: &'a dyn Fn(&str) -> Option<ObjectName>,
    }
    impl VisitorMut for R<'_> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table {
                name,
                alias,
                args: None,
                ..
            } = tf
            {
                let text = name.to_string().replace(['"', '`'], "");
                if let Some(new) = (self.map)(&text) {
                    if alias.is_none()
                        && let Some(last) = name.0.last().and_then(|p| p.as_ident()).cloned()
                    {
                        *alias = Some(TableAlias {
                            explicit: true,
                            name: last,
                            columns: vec![],
                            at: None,
                        });
                    }
                    *name = new;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut R { map });
}

/// Name unaliased casts of a column after the column, as SQLMesh, DuckDB and Postgres do:
/// `SELECT id::BIGINT` yields a column `id` (DataFusion would call it `t.id` or
/// `CAST(id AS Int64)`), in every SELECT of the query — CTEs and subqueries too. A cast whose
/// name another item of the same SELECT already has keeps the engine's name.
pub fn name_unaliased(query: &mut Query) {
    use datafusion::sql::sqlparser::ast::{Expr, SelectItem, SetExpr};
    fn column_of(e: &Expr) -> Option<&Ident> {
        match e {
            Expr::Identifier(i) => Some(i),
            Expr::CompoundIdentifier(parts) => parts.last(),
            Expr::Nested(inner) => column_of(inner),
            Expr::Cast { expr, .. } => column_of(expr),
            _ => None,
        }
    }
    fn body(b: &mut SetExpr) {
        match b {
            SetExpr::Select(select) => {
                let taken: BTreeSet<String> = select
                    .projection
                    .iter()
                    .filter_map(|item| match item {
                        SelectItem::UnnamedExpr(Expr::Identifier(i)) => {
                            Some(i.value.to_lowercase())
                        }
                        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                            p.last().map(|i| i.value.to_lowercase())
                        }
                        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
                        _ => None,
                    })
                    .collect();
                let mut named = BTreeSet::new();
                for item in &mut select.projection {
                    let SelectItem::UnnamedExpr(e @ (Expr::Cast { .. } | Expr::Nested(_))) = item
                    else {
                        continue;
                    };
                    let Some(col) = column_of(e).cloned() else {
                        continue;
                    };
                    let key = col.value.to_lowercase();
                    if taken.contains(&key) || !named.insert(key) {
                        continue;
                    }
                    let expr = e.clone();
                    *item = SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident {
                            value: col.value.clone(),
                            quote_style: col.quote_style,
                            span: col.span,
                        },
                    };
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                body(left);
                body(right);
            }
            SetExpr::Query(q) => body(&mut q.body),
            _ => {}
        }
    }
    struct V;
    impl VisitorMut for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            body(&mut q.body);
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut V);
}

/// Quote every identifier quoted with `"` with backticks instead (Spark SQL).
pub fn backtick_quotes(query: &mut Query) {
    use datafusion::sql::sqlparser::ast::{Expr, ObjectNamePart};
    fn fix(i: &mut Ident) {
        if i.quote_style == Some('"') {
            i.quote_style = Some('`');
        }
    }
    fn fix_name(n: &mut ObjectName) {
        for p in &mut n.0 {
            if let ObjectNamePart::Identifier(i) = p {
                fix(i);
            }
        }
    }
    struct B;
    impl VisitorMut for B {
        type Break = ();
        fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
            if let Some(with) = &mut q.with {
                for cte in &mut with.cte_tables {
                    fix(&mut cte.alias.name);
                }
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_relation(&mut self, n: &mut ObjectName) -> ControlFlow<()> {
            fix_name(n);
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
            if let TableFactor::Table { alias: Some(a), .. }
            | TableFactor::Derived { alias: Some(a), .. } = tf
            {
                fix(&mut a.name);
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            match e {
                Expr::Identifier(i) => fix(i),
                Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(fix),
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let _ = query.visit(&mut B);
}

/// Put `ctes` (name, body) before the query's own CTEs.
pub fn prepend_ctes(query: &mut Query, ctes: Vec<(String, Query)>) {
    if ctes.is_empty() {
        return;
    }
    let new: Vec<Cte> = ctes
        .into_iter()
        .map(|(name, body)| Cte {
            alias: TableAlias {
                explicit: false,
                name: Ident::with_quote('"', name),
                columns: vec![],
                at: None,
            },
            query: Box::new(body),
            from: None,
            materialized: None::<CteAsMaterialized>,
            closing_paren_token: AttachedToken::empty(),
        })
        .collect();
    match &mut query.with {
        Some(with) => {
            let mut all = new;
            all.append(&mut with.cte_tables);
            with.cte_tables = all;
        }
        None => {
            query.with = Some(With {
                with_token: AttachedToken::empty(),
                recursive: false,
                cte_tables: new,
            });
        }
    }
}

/// Inline EMBEDDED models into `query` as CTEs: `embedded` holds (name, rendered body) with
/// dependencies first; references to those names in the query and in the bodies become
/// references to the CTEs.
pub fn inline_embedded(query: &mut Query, mut embedded: Vec<(String, Query)>) {
    if embedded.is_empty() {
        return;
    }
    let names: std::collections::BTreeSet<String> =
        embedded.iter().map(|(n, _)| n.clone()).collect();
    let map = |n: &str| -> Option<ObjectName> {
        crate::names::ModelName::parse(n)
            .ok()
            .filter(|n| names.contains(n.as_str()))
            .map(|n| ObjectName::from(vec![Ident::with_quote('"', n.as_str())]))
    };
    for (_, body) in &mut embedded {
        replace_tables(body, &map);
    }
    replace_tables(query, &map);
    prepend_ctes(query, embedded);
}

/// The one rendering of a model for an interval: `query` with its macro variables substituted
/// for `ctx`, and its EMBEDDED ancestors (reached through EMBEDDED models only) rendered the
/// same way and inlined as CTEs, dependencies first. `parents` gives a model's direct parents
/// in name order; `embedded` gives a parent's query when it is EMBEDDED (`None` otherwise).
/// `render` prints exactly this, and batches run exactly this.
pub fn render_model(
    name: &ModelName,
    query: &Query,
    ctx: &super::MacroContext,
    parents: &dyn Fn(&ModelName) -> Result<Vec<ModelName>>,
    embedded: &dyn Fn(&ModelName) -> Result<Option<Query>>,
) -> Result<Query> {
    let bug = |e: String| Error::Bug(format!("rendering {name}: {e}"));
    let mut found = Vec::new();
    embedded_ancestors(name, parents, embedded, &mut BTreeSet::new(), &mut found)?;
    let mut rendered = super::render_query(query, ctx).map_err(bug)?;
    let mut ctes = Vec::with_capacity(found.len());
    for (n, q) in found {
        ctes.push((n.to_string(), super::render_query(&q, ctx).map_err(bug)?));
    }
    inline_embedded(&mut rendered, ctes);
    Ok(rendered)
}

/// EMBEDDED ancestors of `name` reached through EMBEDDED models, dependencies first.
fn embedded_ancestors(
    name: &ModelName,
    parents: &dyn Fn(&ModelName) -> Result<Vec<ModelName>>,
    embedded: &dyn Fn(&ModelName) -> Result<Option<Query>>,
    seen: &mut BTreeSet<ModelName>,
    out: &mut Vec<(ModelName, Query)>,
) -> Result<()> {
    for p in parents(name)? {
        if seen.contains(&p) {
            continue;
        }
        if let Some(q) = embedded(&p)? {
            seen.insert(p.clone());
            embedded_ancestors(&p, parents, embedded, seen, out)?;
            out.push((p, q));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_renders_with_its_embedded_ancestors_dependencies_first() {
        let n = |s: &str| ModelName::parse(s).unwrap();
        let q = |sql: &str| {
            *crate::sql::parse_query(
                std::path::Path::new("m.sql"),
                sql,
                crate::sql::Dialect::DataFusion,
            )
            .unwrap()
        };
        // s.out reads s.e2 (embedded) and s.t (a table); s.e2 reads s.e1 (embedded).
        let parents = |m: &ModelName| -> Result<Vec<ModelName>> {
            Ok(match m.as_str() {
                "s.out" => vec![n("s.e2"), n("s.t")],
                "s.e2" => vec![n("s.e1")],
                _ => vec![],
            })
        };
        let embedded = |m: &ModelName| -> Result<Option<Query>> {
            Ok(match m.as_str() {
                "s.e1" => Some(q("SELECT 1 AS x")),
                "s.e2" => Some(q("SELECT x FROM s.e1")),
                _ => None,
            })
        };
        let ctx = crate::sql::MacroContext {
            start: chrono::DateTime::UNIX_EPOCH,
            end: chrono::DateTime::UNIX_EPOCH,
            execution_time: chrono::DateTime::UNIX_EPOCH,
            this_model: vec!["s".into(), "out".into()],
        };
        let out = render_model(
            &n("s.out"),
            &q("SELECT x FROM s.e2 JOIN s.t USING (x)"),
            &ctx,
            &parents,
            &embedded,
        )
        .unwrap()
        .to_string();
        let (e1, e2) = (
            out.find("\"s.e1\" AS").unwrap(),
            out.find("\"s.e2\" AS").unwrap(),
        );
        assert!(e1 < e2, "{out}");
        assert!(out.contains("s.t"), "{out}");
    }
}

#[cfg(test)]
mod naming_tests {
    use super::*;

    fn named(sql: &str) -> String {
        let mut q = crate::sql::parse_query(
            std::path::Path::new("m.sql"),
            sql,
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        name_unaliased(&mut q);
        q.to_string()
    }

    #[test]
    fn unaliased_casts_are_named_after_their_column_everywhere() {
        assert_eq!(
            named("SELECT id::BIGINT, CAST(t.ds AS DATE), (x)::INT, y + 1 FROM t"),
            "SELECT id::BIGINT AS id, CAST(t.ds AS DATE) AS ds, (x)::INT AS x, y + 1 FROM t"
        );
        // Taken names stay the engine's; CTEs, subqueries and set operations too.
        assert_eq!(
            named(
                "WITH c AS (SELECT a::INT FROM t) SELECT a, a::BIGINT FROM c UNION ALL SELECT b::INT FROM (SELECT b::TEXT FROM u) AS s"
            ),
            "WITH c AS (SELECT a::INT AS a FROM t) SELECT a, a::BIGINT FROM c UNION ALL SELECT b::INT AS b FROM (SELECT b::TEXT AS b FROM u) AS s"
        );
        assert_eq!(
            named("SELECT \"Id\"::INT FROM t"),
            "SELECT \"Id\"::INT AS \"Id\" FROM t"
        );
    }
}
