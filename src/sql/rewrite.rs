//! AST rewrites used when rendering: replacing table references and inlining CTEs.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
use datafusion::sql::sqlparser::ast::{
    Cte, CteAsMaterialized, Ident, ObjectName, Query, TableAlias, TableFactor, VisitMut,
    VisitorMut, With,
};

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
                let text = name.to_string().replace('"', "");
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
