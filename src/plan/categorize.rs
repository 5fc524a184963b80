//! Automatic categorization of a query edit: does it only add columns?
//!
//! A change is **non-breaking** if and only if every edit inserts new projections into SELECT
//! lists — the outermost one, a CTE, a derived table in FROM, an EXISTS subquery, or every branch
//! of a `UNION ALL` at the same position — and nothing else changes. It is **breaking** when:
//! - a projection is removed, renamed, reordered or altered, or anything outside the SELECT lists
//!   changes (WHERE, JOIN, GROUP BY, ORDER BY, DISTINCT, LIMIT, literals, ...);
//! - a projection is added to a scalar or `IN` subquery (it is compared as an expression);
//! - the added projection calls a row-multiplying function (`unnest`, `explode`, ...) outside a
//!   subquery;
//! - the SELECT is `DISTINCT`, groups `BY ALL`, or is a branch of a `UNION` without `ALL`: a new
//!   column there changes which rows exist;
//! - `GROUP BY`/`ORDER BY` refer to columns by position and the insertion shifts them;
//! - a projection is added to only some branches of a `UNION ALL`, or at different positions.
//!
//! Method: walk the old and new trees in parallel over the places where insertions are allowed,
//! remove the inserted projections from a copy of the new tree, and require the result to print
//! exactly like the old tree. Anything the walk does not explain therefore stays a difference,
//! which makes the check conservative by construction: it can call a non-breaking edit breaking,
//! never the reverse.

use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Expr, GroupByExpr, OrderByKind, Query, Select, SelectItem, SetExpr, SetQuantifier, TableFactor,
    TableWithJoins, Value, Visit, Visitor,
};

/// The verdict on a query edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The canonical queries are identical.
    Unchanged,
    /// Only new columns were added.
    NonBreaking,
    /// Anything else, with the reason shown to reviewers.
    Breaking(String),
}

/// Functions that return several rows per input row.
const ROW_MULTIPLYING: [&str; 12] = [
    "unnest",
    "explode",
    "explode_outer",
    "posexplode",
    "posexplode_outer",
    "inline",
    "inline_outer",
    "flatten",
    "generate_series",
    "json_each",
    "json_array_elements",
    "jsonb_array_elements",
];

/// Compare two queries (both parsed by [`crate::sql::parse_query`]).
pub fn categorize(old: &Query, new: &Query) -> Verdict {
    if old.to_string() == new.to_string() {
        return Verdict::Unchanged;
    }
    let mut stripped = new.clone();
    let mut w = Walk::default();
    w.query(old, &mut stripped);
    if let Some(reason) = w.reason {
        return Verdict::Breaking(reason);
    }
    if w.inserted > 0 && old.to_string() == stripped.to_string() {
        Verdict::NonBreaking
    } else {
        Verdict::Breaking(describe(old, &stripped))
    }
}

/// Name what differs between the old query and the new one with insertions removed.
fn describe(old: &Query, new: &Query) -> String {
    let differs = |a: String, b: String| a != b;
    let clause = |what: &str| format!("the {what} changed");
    if differs(fmt_opt(&old.with), fmt_opt(&new.with)) {
        return clause("WITH clause (a CTE)");
    }
    if let (SetExpr::Select(o), SetExpr::Select(n)) = (old.body.as_ref(), new.body.as_ref()) {
        let checks: [(&str, String, String); 6] = [
            ("FROM/JOIN clause", join(&o.from), join(&n.from)),
            ("WHERE clause", fmt_opt(&o.selection), fmt_opt(&n.selection)),
            (
                "GROUP BY clause",
                o.group_by.to_string(),
                n.group_by.to_string(),
            ),
            ("HAVING clause", fmt_opt(&o.having), fmt_opt(&n.having)),
            ("DISTINCT", fmt_opt(&o.distinct), fmt_opt(&n.distinct)),
            ("QUALIFY clause", fmt_opt(&o.qualify), fmt_opt(&n.qualify)),
        ];
        for (what, a, b) in checks {
            if a != b {
                return clause(what);
            }
        }
        if o.projection.len() <= n.projection.len() || o.projection != n.projection {
            return "a column was removed, renamed, reordered or altered".into();
        }
    }
    if differs(fmt_opt(&old.order_by), fmt_opt(&new.order_by)) {
        return clause("ORDER BY clause");
    }
    if differs(fmt_opt(&old.limit_clause), fmt_opt(&new.limit_clause)) {
        return clause("LIMIT clause");
    }
    "the query changed beyond added columns".into()
}

fn fmt_opt<T: std::fmt::Display>(x: &Option<T>) -> String {
    x.as_ref().map(ToString::to_string).unwrap_or_default()
}

fn join(from: &[TableWithJoins]) -> String {
    from.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Does any SELECT of the query project `*` or `t.*`? A child reading a parent that way changes
/// shape when a column is added upstream.
pub fn has_wildcard(q: &Query) -> bool {
    struct V(bool);
    impl Visitor for V {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if body_has_wildcard(&q.body) {
                self.0 = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V(false);
    let _ = q.visit(&mut v);
    v.0
}

fn body_has_wildcard(b: &SetExpr) -> bool {
    match b {
        SetExpr::Select(s) => s.projection.iter().any(|p| {
            matches!(
                p,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..)
            )
        }),
        SetExpr::SetOperation { left, right, .. } => {
            body_has_wildcard(left) || body_has_wildcard(right)
        }
        SetExpr::Query(q) => body_has_wildcard(&q.body),
        _ => false,
    }
}

#[derive(Default)]
struct Walk {
    /// The first reason an insertion is breaking.
    reason: Option<String>,
    /// Projections removed from the new tree.
    inserted: usize,
}

impl Walk {
    fn breaking(&mut self, why: impl Into<String>) {
        if self.reason.is_none() {
            self.reason = Some(why.into());
        }
    }

    fn query(&mut self, old: &Query, new: &mut Query) {
        if let (Some(ow), Some(nw)) = (&old.with, &mut new.with)
            && ow.cte_tables.len() == nw.cte_tables.len()
        {
            for (o, n) in ow.cte_tables.iter().zip(nw.cte_tables.iter_mut()) {
                if o.alias.name == n.alias.name {
                    self.query(&o.query, &mut n.query);
                }
            }
        }
        let positional = old
            .order_by
            .as_ref()
            .map(|o| match &o.kind {
                OrderByKind::Expressions(es) => max_position(es.iter().map(|e| &e.expr)),
                OrderByKind::All(_) => 0,
            })
            .unwrap_or(0);
        self.set_expr(&old.body, &mut new.body, positional);
    }

    /// Returns the positions inserted into the body's output columns.
    fn set_expr(&mut self, old: &SetExpr, new: &mut SetExpr, positional: usize) -> Vec<usize> {
        match (old, new) {
            (SetExpr::Select(o), SetExpr::Select(n)) => self.select(o, n, positional),
            (SetExpr::Query(o), SetExpr::Query(n)) => {
                self.query(o, n);
                Vec::new()
            }
            (
                SetExpr::SetOperation {
                    op: oop,
                    set_quantifier: oq,
                    left: ol,
                    right: or,
                },
                SetExpr::SetOperation {
                    op: nop,
                    set_quantifier: nq,
                    left: nl,
                    right: nr,
                },
            ) if oop == nop && oq == nq => {
                let l = self.set_expr(ol, nl, positional);
                let r = self.set_expr(or, nr, positional);
                if l != r {
                    self.breaking(format!(
                        "columns were added to only some branches of a {oop}, or at different positions"
                    ));
                }
                if !l.is_empty() && !matches!(oq, SetQuantifier::All) {
                    self.breaking(format!(
                        "a column added to a {oop} without ALL changes which rows are distinct"
                    ));
                }
                l
            }
            _ => Vec::new(),
        }
    }

    fn select(&mut self, old: &Select, new: &mut Select, outer_positional: usize) -> Vec<usize> {
        // Nested places where insertions are allowed: derived tables and EXISTS subqueries.
        // The old side is walked on a copy so that one collector serves both sides.
        let mut old_copy = old.clone();
        let od = derived_mut(&mut old_copy.from);
        let nd = derived_mut(&mut new.from);
        if od.len() == nd.len() {
            for (o, n) in od.into_iter().zip(nd) {
                self.query(o, n);
            }
        }
        let mut oe = Vec::new();
        let mut ne = Vec::new();
        for e in [&mut old_copy.selection, &mut old_copy.having]
            .into_iter()
            .flatten()
        {
            exists_mut(e, &mut oe);
        }
        for e in [&mut new.selection, &mut new.having].into_iter().flatten() {
            exists_mut(e, &mut ne);
        }
        if oe.len() == ne.len() {
            for (o, n) in oe.into_iter().zip(ne) {
                self.query(o, n);
            }
        }

        let os: Vec<String> = old.projection.iter().map(ToString::to_string).collect();
        let ns: Vec<String> = new.projection.iter().map(ToString::to_string).collect();
        let mut inserted = Vec::new();
        let mut j = 0;
        for (i, n) in ns.iter().enumerate() {
            if j < os.len() && *n == os[j] {
                j += 1;
            } else {
                inserted.push(i);
            }
        }
        if j < os.len() || inserted.is_empty() {
            // Not a pure insertion here: leave the tree as is; the final comparison decides.
            return Vec::new();
        }
        if old.distinct.is_some() {
            self.breaking("a column added to a SELECT DISTINCT changes which rows are distinct");
        }
        if matches!(old.group_by, GroupByExpr::All(_)) {
            self.breaking("a column added to a SELECT with GROUP BY ALL changes the grouping");
        }
        let group_positional = match &old.group_by {
            GroupByExpr::Expressions(es, _) => max_position(es.iter()),
            GroupByExpr::All(_) => 0,
        };
        let positional = group_positional.max(outer_positional);
        if inserted.iter().any(|&i| i < positional) {
            self.breaking(
                "GROUP BY or ORDER BY refer to columns by position and the added column shifts them",
            );
        }
        for &i in &inserted {
            if let Some(f) = row_multiplying(&new.projection[i]) {
                self.breaking(format!(
                    "the added column calls `{f}`, which multiplies rows"
                ));
            }
        }
        for &i in inserted.iter().rev() {
            new.projection.remove(i);
        }
        self.inserted += inserted.len();
        inserted
    }
}

/// The largest 1-based column position used (`GROUP BY 2` → 2), or 0.
fn max_position<'a>(es: impl Iterator<Item = &'a Expr>) -> usize {
    es.filter_map(|e| match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<usize>().ok(),
            _ => None,
        },
        _ => None,
    })
    .max()
    .unwrap_or(0)
}

fn derived_mut(from: &mut [TableWithJoins]) -> Vec<&mut Query> {
    fn factor<'a>(f: &'a mut TableFactor, out: &mut Vec<&'a mut Query>) {
        match f {
            TableFactor::Derived { subquery, .. } => out.push(subquery),
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => twj(table_with_joins, out),
            _ => {}
        }
    }
    fn twj<'a>(t: &'a mut TableWithJoins, out: &mut Vec<&'a mut Query>) {
        factor(&mut t.relation, out);
        for j in &mut t.joins {
            factor(&mut j.relation, out);
        }
    }
    let mut out = Vec::new();
    for t in from {
        twj(t, &mut out);
    }
    out
}

/// EXISTS subqueries reachable through AND / OR / NOT / parentheses.
fn exists_mut<'a>(e: &'a mut Expr, out: &mut Vec<&'a mut Query>) {
    match e {
        Expr::Exists { subquery, .. } => out.push(subquery),
        Expr::BinaryOp { left, right, .. } => {
            exists_mut(left, out);
            exists_mut(right, out);
        }
        Expr::UnaryOp { expr, .. } | Expr::Nested(expr) => exists_mut(expr, out),
        _ => {}
    }
}

/// The first row-multiplying function called outside any subquery of `item`.
fn row_multiplying(item: &SelectItem) -> Option<String> {
    struct V {
        depth: usize,
        found: Option<String>,
    }
    impl Visitor for V {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0
                && let Expr::Function(f) = e
            {
                let name = f.name.to_string().to_ascii_lowercase();
                let last = name.rsplit('.').next().unwrap_or(&name).to_string();
                if ROW_MULTIPLYING.contains(&last.as_str()) {
                    self.found = Some(last);
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = V {
        depth: 0,
        found: None,
    };
    let _ = item.visit(&mut v);
    v.found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn q(sql: &str) -> Box<Query> {
        crate::sql::parse_query(Path::new("m.sql"), sql, crate::sql::Dialect::DataFusion).unwrap()
    }

    fn verdict(old: &str, new: &str) -> Verdict {
        categorize(&q(old), &q(new))
    }

    fn non_breaking(old: &str, new: &str) {
        assert_eq!(verdict(old, new), Verdict::NonBreaking, "{old}  →  {new}");
    }

    fn breaking(old: &str, new: &str) {
        assert!(
            matches!(verdict(old, new), Verdict::Breaking(_)),
            "{old}  →  {new}: {:?}",
            verdict(old, new)
        );
    }

    #[test]
    fn insertions_are_non_breaking() {
        non_breaking("SELECT a, b FROM t", "SELECT a, b, c FROM t");
        non_breaking("SELECT a, b FROM t", "SELECT x + 1 AS c, a, b FROM t");
        non_breaking("SELECT a, b FROM t", "SELECT a, upper(z) AS c, b, d FROM t");
        non_breaking(
            "WITH c AS (SELECT a FROM t) SELECT a FROM c",
            "WITH c AS (SELECT a, b FROM t) SELECT a FROM c",
        );
        non_breaking(
            "SELECT s.a FROM (SELECT a FROM t) AS s",
            "SELECT s.a, s.b FROM (SELECT a, b FROM t) AS s",
        );
        non_breaking(
            "SELECT a FROM t WHERE EXISTS (SELECT 1 FROM u WHERE u.id = t.id)",
            "SELECT a FROM t WHERE EXISTS (SELECT 1, 2 FROM u WHERE u.id = t.id)",
        );
        non_breaking(
            "SELECT a FROM t UNION ALL SELECT a FROM u",
            "SELECT a, 1 AS src FROM t UNION ALL SELECT a, 2 AS src FROM u",
        );
        non_breaking(
            "SELECT a, SUM(x) AS s FROM t GROUP BY a",
            "SELECT a, SUM(x) AS s, COUNT(*) AS n FROM t GROUP BY a",
        );
        non_breaking(
            "SELECT a FROM t GROUP BY 1",
            "SELECT a, COUNT(*) AS n FROM t GROUP BY 1",
        );
        non_breaking(
            "SELECT a, (SELECT MAX(v) FROM u) AS m FROM t",
            "SELECT a, (SELECT MAX(v) FROM u) AS m, (SELECT MIN(v) FROM u) AS n FROM t",
        );
        assert_eq!(
            verdict("select a  from t -- x", "SELECT a FROM t;"),
            Verdict::Unchanged
        );
    }

    #[test]
    fn everything_else_is_breaking() {
        breaking("SELECT a, b FROM t", "SELECT a FROM t");
        breaking("SELECT a, b FROM t", "SELECT b, a FROM t");
        breaking("SELECT a, b FROM t", "SELECT a, b AS c FROM t");
        breaking("SELECT a, b FROM t", "SELECT a, b + 1 AS b FROM t");
        breaking("SELECT a FROM t", "SELECT a, b FROM t WHERE a > 1");
        breaking("SELECT a FROM t WHERE a > 1", "SELECT a FROM t WHERE a > 2");
        breaking("SELECT a FROM t", "SELECT a FROM t JOIN u ON t.id = u.id");
        breaking("SELECT a FROM t", "SELECT DISTINCT a FROM t");
        breaking("SELECT DISTINCT a FROM t", "SELECT DISTINCT a, b FROM t");
        breaking("SELECT a FROM t", "SELECT a, unnest(xs) AS x FROM t");
        breaking("SELECT a FROM t", "SELECT a, explode(xs) AS x FROM t");
        breaking(
            "SELECT a, b FROM t GROUP BY 1, 2",
            "SELECT c, a, b FROM t GROUP BY 1, 2",
        );
        breaking(
            "SELECT a, b FROM t ORDER BY 2",
            "SELECT a, c, b FROM t ORDER BY 2",
        );
        breaking(
            "SELECT a, (SELECT MAX(v) FROM u) AS m FROM t",
            "SELECT a, (SELECT MAX(v), MIN(v) FROM u) AS m FROM t",
        );
        breaking(
            "SELECT a FROM t WHERE a IN (SELECT a FROM u)",
            "SELECT a FROM t WHERE a IN (SELECT a, b FROM u)",
        );
        breaking(
            "SELECT a FROM t UNION ALL SELECT a FROM u",
            "SELECT a, 1 AS x FROM t UNION ALL SELECT a FROM u",
        );
        breaking(
            "SELECT a FROM t UNION ALL SELECT a FROM u",
            "SELECT a, 1 AS x FROM t UNION ALL SELECT 2 AS x, a FROM u",
        );
        breaking(
            "SELECT a FROM t UNION SELECT a FROM u",
            "SELECT a, 1 AS x FROM t UNION SELECT a, 2 AS x FROM u",
        );
        breaking("SELECT a FROM t LIMIT 10", "SELECT a, b FROM t LIMIT 11");
        breaking("SELECT a, 'x' AS k FROM t", "SELECT a, 'y' AS k FROM t");
    }

    #[test]
    fn wildcards() {
        assert!(has_wildcard(&q("SELECT * FROM t")));
        assert!(has_wildcard(&q("SELECT a FROM (SELECT t.* FROM t) AS s")));
        assert!(!has_wildcard(&q("SELECT COUNT(*) AS n FROM t")));
    }
}
