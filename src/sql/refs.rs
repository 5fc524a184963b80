//! What a query reads and uses: table references (CTE-aware), macro variables, output columns.
//!
//! CTE scoping follows SQL: a CTE name is visible in the CTEs after it and in the query body,
//! and in its own body only under `WITH RECURSIVE`; so `WITH t AS (SELECT * FROM t)` reads the
//! table `t`. Table-valued functions (`generate_series(...)`) are not table references.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, TableFactor, Visit, Visitor,
};

/// A table named in a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TableRef {
    /// Dotted name: unquoted parts lowercased (already by parsing), quoted parts as written.
    pub name: String,
    /// Line of the first part (1-based; 0 when unknown).
    pub line: u64,
    /// Column of the first part.
    pub column: u64,
}

/// A `@variable` (or `@function(...)`) used in a query.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MacroUse {
    /// The name without `@`, lowercased.
    pub name: String,
    /// Used as a function call (`@each(...)`), which tidemark does not support.
    pub is_call: bool,
    /// Line.
    pub line: u64,
    /// Column.
    pub column: u64,
}

/// The result of analysing a query.
#[derive(Debug, Clone, Default)]
pub struct Analysis {
    /// Tables read, in order of appearance, repeats included.
    pub tables: Vec<TableRef>,
    /// Macro variables used, in order of appearance.
    pub macros: Vec<MacroUse>,
    /// Output column names of the outermost query, when they can all be named
    /// (`None` when a `*` or an unnamed expression hides them).
    pub projection: Option<Vec<String>>,
}

/// Analyse a parsed query.
pub fn analyze(query: &Query) -> Analysis {
    let mut v = RefVisitor {
        scopes: Vec::new(),
        out: Analysis::default(),
    };
    let _ = query.visit(&mut v);
    v.out.projection = projection_names(query);
    v.out
}

struct Scope {
    /// CTE names of this WITH, in order.
    names: Vec<String>,
    /// Addresses of the CTE bodies, to know which one is being visited.
    bodies: Vec<*const Query>,
    /// How many of `names` are visible right now.
    visible: usize,
    recursive: bool,
    /// The query owning this WITH.
    owner: *const Query,
}

struct RefVisitor {
    scopes: Vec<Scope>,
    out: Analysis,
}

impl RefVisitor {
    fn is_cte(&self, name: &str) -> bool {
        self.scopes
            .iter()
            .any(|s| s.names[..s.visible].iter().any(|n| n == name))
    }

    /// Record a call of a macro function (`@name(...)`), in an expression or where a table
    /// belongs (`FROM @macro(...)`, which must be refused at load, not discovered at apply).
    fn macro_call(&mut self, name: &ObjectName) {
        if let Some((text, line, column)) = object_name(name)
            && let Some(var) = text.strip_prefix('@')
        {
            self.out.macros.push(MacroUse {
                name: var.to_lowercase(),
                is_call: true,
                line,
                column,
            });
        }
    }
}

fn ident_text(part: &ObjectNamePart) -> Option<(String, u64, u64)> {
    match part {
        ObjectNamePart::Identifier(i) => {
            Some((i.value.clone(), i.span.start.line, i.span.start.column))
        }
        ObjectNamePart::Function(_) => None,
    }
}

fn object_name(name: &ObjectName) -> Option<(String, u64, u64)> {
    let mut parts = Vec::new();
    let mut loc = (0, 0);
    for (i, p) in name.0.iter().enumerate() {
        let (text, l, c) = ident_text(p)?;
        if i == 0 {
            loc = (l, c);
        }
        parts.push(text);
    }
    Some((parts.join("."), loc.0, loc.1))
}

impl Visitor for RefVisitor {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let me: *const Query = query;
        // Entering the body of a CTE of an enclosing WITH: only earlier CTEs are visible
        // (and this one too when recursive).
        for scope in &mut self.scopes {
            if let Some(i) = scope.bodies.iter().position(|b| *b == me) {
                scope.visible = if scope.recursive { i + 1 } else { i };
            }
        }
        if let Some(with) = &query.with {
            self.scopes.push(Scope {
                names: with
                    .cte_tables
                    .iter()
                    .map(|c| c.alias.name.value.clone())
                    .collect(),
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                visible: 0,
                recursive: with.recursive,
                owner: me,
            });
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        let me: *const Query = query;
        if self.scopes.last().is_some_and(|s| s.owner == me) {
            self.scopes.pop();
        }
        for scope in &mut self.scopes {
            if let Some(i) = scope.bodies.iter().position(|b| *b == me) {
                // After a CTE body, that CTE and the earlier ones are visible; after the last,
                // the query body sees all of them.
                scope.visible = i + 1;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args, .. } = tf {
            if args.is_some() {
                // A table-valued function.
                self.macro_call(name);
                return ControlFlow::Continue(());
            }
            if let Some((text, line, column)) = object_name(name) {
                if let Some(var) = text.strip_prefix('@') {
                    self.out.macros.push(MacroUse {
                        name: var.to_lowercase(),
                        is_call: false,
                        line,
                        column,
                    });
                } else if !(name.0.len() == 1 && self.is_cte(&text)) {
                    self.out.tables.push(TableRef {
                        name: text,
                        line,
                        column,
                    });
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) if id.quote_style.is_none() && id.value.starts_with('@') => {
                self.out.macros.push(MacroUse {
                    name: id.value[1..].to_lowercase(),
                    is_call: false,
                    line: id.span.start.line,
                    column: id.span.start.column,
                });
            }
            Expr::Function(f) => self.macro_call(&f.name),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Output column names of the outermost SELECT (the left-most branch of a set operation).
fn projection_names(query: &Query) -> Option<Vec<String>> {
    let mut body = &*query.body;
    loop {
        match body {
            SetExpr::Select(select) => {
                let mut names = Vec::new();
                for item in &select.projection {
                    match item {
                        SelectItem::UnnamedExpr(Expr::Identifier(i)) => names.push(i.value.clone()),
                        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                            names.push(parts.last()?.value.clone());
                        }
                        SelectItem::ExprWithAlias { alias, .. } => names.push(alias.value.clone()),
                        _ => return None,
                    }
                }
                return Some(names);
            }
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = &q.body,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::parse_query;
    use std::path::Path;

    fn tables(sql: &str) -> Vec<String> {
        let q = parse_query(Path::new("m.sql"), sql, crate::sql::Dialect::DataFusion).unwrap();
        let mut t: Vec<String> = analyze(&q).tables.into_iter().map(|t| t.name).collect();
        t.sort();
        t.dedup();
        t
    }

    #[test]
    fn references_ignore_ctes_and_aliases() {
        assert_eq!(
            tables("SELECT * FROM a.x AS y JOIN b.z ON y.id = z.id"),
            ["a.x", "b.z"]
        );
        assert_eq!(
            tables("WITH c AS (SELECT * FROM a.x) SELECT * FROM c, c AS d"),
            ["a.x"]
        );
        assert_eq!(
            tables("WITH c AS (SELECT 1), d AS (SELECT * FROM c) SELECT * FROM d"),
            Vec::<String>::new()
        );
        // A CTE does not shadow itself unless recursive.
        assert_eq!(tables("WITH t AS (SELECT * FROM t) SELECT * FROM t"), ["t"]);
        assert_eq!(
            tables(
                "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT * FROM t"
            ),
            Vec::<String>::new()
        );
        // A later CTE is not visible in an earlier one.
        assert_eq!(
            tables("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a"),
            ["b"]
        );
        // An inner WITH shadows only inside its query.
        assert_eq!(
            tables("SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) q, t"),
            ["t"]
        );
        assert_eq!(
            tables("SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) q"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn references_in_subqueries_and_set_operations() {
        assert_eq!(
            tables(
                "SELECT * FROM a.x WHERE id IN (SELECT id FROM b.y) AND EXISTS (SELECT 1 FROM c.z) UNION SELECT * FROM d.w"
            ),
            ["a.x", "b.y", "c.z", "d.w"]
        );
        assert_eq!(
            tables("SELECT (SELECT max(v) FROM a.m) AS v FROM generate_series(1, 3)"),
            ["a.m"]
        );
        assert_eq!(tables("SELECT * FROM \"Sushi\".orders"), ["Sushi.orders"]);
    }

    #[test]
    fn macros_and_projection() {
        let q = parse_query(
            Path::new("m.sql"),
            "SELECT id, t.ds AS day, x FROM t WHERE ds BETWEEN @start_ds AND @END_DS AND @each(1)",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        let a = analyze(&q);
        let names: Vec<_> = a
            .macros
            .iter()
            .map(|m| (m.name.as_str(), m.is_call))
            .collect();
        assert_eq!(
            names,
            [("start_ds", false), ("end_ds", false), ("each", true)]
        );
        assert_eq!(a.projection.unwrap(), ["id", "day", "x"]);
        let q = parse_query(
            Path::new("m.sql"),
            "SELECT *, 1 FROM t",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        assert!(analyze(&q).projection.is_none());
        let q = parse_query(
            Path::new("m.sql"),
            "SELECT a FROM t UNION ALL SELECT b FROM u",
            crate::sql::Dialect::DataFusion,
        )
        .unwrap();
        assert_eq!(analyze(&q).projection.unwrap(), ["a"]);
    }
}
