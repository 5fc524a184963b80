//! SQLMesh's SQL macro functions, expanded on the parsed AST when a model loads.
//!
//! `@DEF(name, value);` statements, project variables (`@name`), the logical macros (`@AND`,
//! `@OR`, `@IF`), list macros (`@EACH`), `@SQL`, `@STAR`, `@UNION`, SQLMesh's
//! `@GENERATE_SURROGATE_KEY` and `@SAFE_ADD`/`@SAFE_SUB`/`@SAFE_DIV`, user macros written in SQL
//! (`@DEF(name, (a, b) -> expr)`, in the model or in `macros/*.sql`) and `@{name}` interpolated
//! into identifiers.
//!
//! Invariants:
//! - Every expansion works on the AST: a value (a variable, a `@DEF`, an `@EACH` item) is put in
//!   as the expression it parsed to, parenthesized where precedence would change; nothing is
//!   pasted into SQL text. Text becomes SQL in exactly one place, `@SQL('…')`, which parses its
//!   argument as one expression (never a statement or a list).
//! - A name interpolated with `@{x}` is a plain identifier when it is one, else a quoted
//!   identifier: a value can never add a column, a clause or a statement.
//! - Lambda bodies are expanded only once their parameters are bound, so macros inside them see
//!   the items (`@EACH(…, x -> @IF(x = 'a', …))` folds per item).
//! - Expansion ends or fails: a macro whose value uses itself stops at a fixed depth with an
//!   error naming it.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr,
    Ident, ObjectName, Query, SelectItem, SetExpr, TableFactor, Value, VisitMut, VisitorMut,
};

use super::Dialect;

pub(super) mod ast;
mod build;
mod tokens;

use ast::*;

pub(super) use tokens::prepare_tokens;

/// Values of `@name` in a model: project variables, shared SQL macros, the model's `@DEF`s.
pub type Defs = BTreeMap<String, Expr>;

/// A macro that cannot expand, with where it is (1-based line and column when known).
#[derive(Debug, Clone, PartialEq)]
pub struct MacroError {
    /// `(line, column)` of the macro, if known.
    pub at: Option<(u64, u64)>,
    /// What is wrong, in tidemark's words.
    pub message: String,
}

impl MacroError {
    fn new(at: Option<(u64, u64)>, message: impl Into<String>) -> MacroError {
        MacroError {
            at,
            message: message.into(),
        }
    }
}

/// How deep macros may expand into macros.
const MAX_DEPTH: usize = 32;
/// The name of the marker an `@EACH` leaves for its enclosing list to splice in.
const LIST: &str = "@__list";
/// The placeholder prefix of a lambda taken out of an `@EACH` until it is applied.
const HELD: &str = "$__tidemark_held_";

/// SQLMesh's `@DEF(name, value);` statements leading a model body: the body with them blanked
/// out (positions kept, so locations stay file locations), and the definitions, parsed as
/// expressions. `Err`: (byte offset, message) of a malformed one.
pub fn extract_defs(
    body: &str,
) -> Result<(String, std::collections::BTreeMap<String, Expr>), (usize, String)> {
    use datafusion::sql::sqlparser::parser::Parser;
    let mut defs = std::collections::BTreeMap::new();
    let mut blank = Vec::new();
    let mut pos = 0;
    while let Some(at) = super::first_code_offset(&body[pos..]).map(|i| i + pos) {
        let rest = &body[at..];
        let is_def = rest
            .get(..4)
            .is_some_and(|w| w.eq_ignore_ascii_case("@def"))
            && rest[4..].trim_start().starts_with('(');
        if !is_def {
            break;
        }
        let end = super::statement_end(body, at);
        let stmt = &body[at..end];
        let open = stmt.find('(').unwrap_or(0);
        let close = stmt.rfind(')').unwrap_or(stmt.len());
        let inner = stmt.get(open + 1..close).unwrap_or_default();
        let args = Parser::new(&super::DIALECT)
            .try_with_sql(inner)
            .and_then(|mut p| p.parse_comma_separated(Parser::parse_expr))
            .map_err(|e| (at, format!("`@DEF` does not parse: {e}")))?;
        let [Expr::Identifier(name), value] = args.as_slice() else {
            return Err((
                at,
                "`@DEF` takes a name and a value: @DEF(name, value);".into(),
            ));
        };
        defs.insert(name.value.to_lowercase(), value.clone());
        blank.push(at..(end + 1).min(body.len()));
        pos = (end + 1).min(body.len());
    }
    Ok((super::blanked(body, &blank), defs))
}

/// Expand the SQL macros of `query` (see the module): `defs` are the values of `@name` (project
/// variables, shared SQL macros and the model's `@DEF`s, in that order of precedence, the last
/// winning), `dialect` the one `@SQL` text is parsed in.
pub fn expand_sql_macros(
    query: &mut Query,
    defs: &Defs,
    dialect: Dialect,
) -> Result<(), MacroError> {
    let mut x = Expander {
        defs,
        dialect,
        error: None,
        held: Vec::new(),
        depth: 0,
    };
    let _ = query.visit(&mut x);
    if let Some(e) = x.error {
        return Err(e);
    }
    leftover(query)
}

struct Expander<'a> {
    defs: &'a Defs,
    dialect: Dialect,
    error: Option<MacroError>,
    /// The lambda (and alias) of each `@EACH` seen, taken out until the `@EACH` is expanded.
    held: Vec<Vec<Expr>>,
    depth: usize,
}

impl Expander<'_> {
    fn fail(&mut self, at: Option<(u64, u64)>, message: impl Into<String>) {
        if self.error.is_none() {
            self.error = Some(MacroError::new(at, message));
        }
    }

    /// Expand the macros inside a value just put in place (a `@DEF`, a bound lambda body).
    fn revisit(&mut self, e: &mut Expr, what: &str, at: Option<(u64, u64)>) {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            self.fail(
                at,
                format!("`@{what}` expands into itself (more than {MAX_DEPTH} levels of macros)"),
            );
        } else {
            let _ = e.visit(self);
        }
        self.depth -= 1;
    }

    /// `@{name}` in a word, from the `@DEF`s and variables; unknown names are an error.
    fn rename(&mut self, ident: &mut Ident) {
        // `@{name}` is only ever an unquoted word: a quoted name was written quoted or made by
        // a macro (whose values may hold `@$` without being placeholders).
        if ident.quote_style.is_some() {
            return;
        }
        let defs = self.defs;
        let lookup = |n: &str| defs.get(n).and_then(name_text);
        let at = ident_at(ident);
        match interpolate(&ident.value, &lookup, false) {
            Ok(Some(text)) => match ident_for(&text) {
                Ok(i) => *ident = i,
                Err(reason) => self.fail(at, reason),
            },
            Ok(None) => {}
            Err(name) => {
                self.fail(
                    at,
                    format!("`@{{{name}}}` names no `@DEF`, variable or `@EACH` item"),
                );
            }
        }
    }

    /// Apply a lambda to `args`, then expand what the body became.
    fn apply(
        &mut self,
        lambda: &Expr,
        args: Vec<Expr>,
        what: &str,
        at: Option<(u64, u64)>,
    ) -> Option<Expr> {
        let Some((params, body)) = lambda_parts(lambda) else {
            self.fail(
                at,
                format!("`@{what}` needs a lambda (`x -> …` or `(a, b) -> …`)"),
            );
            return None;
        };
        if params.len() != args.len() {
            self.fail(
                at,
                format!(
                    "`@{what}` takes {} argument(s) ({}), got {}",
                    params.len(),
                    params.join(", "),
                    args.len()
                ),
            );
            return None;
        }
        let map: BTreeMap<String, Expr> = params.into_iter().zip(args).collect();
        let mut out = body;
        let _ = out.visit(&mut Bind { params: &map });
        self.revisit(&mut out, what, at);
        Some(out)
    }

    fn each(&mut self, f: &Function, at: Option<(u64, u64)>) -> Option<Expr> {
        let args = positional(f);
        let held = match args.get(1).map(unnest) {
            Some(Expr::Value(v)) => match &v.value {
                Value::Placeholder(p) => p
                    .strip_prefix(HELD)
                    .and_then(|i| i.parse::<usize>().ok())
                    .and_then(|i| self.held.get_mut(i))
                    .map(std::mem::take),
                _ => None,
            },
            _ => None,
        };
        let Some(held) = held.filter(|h| !h.is_empty() && h.len() <= 2) else {
            self.fail(
                at,
                "`@EACH` takes a list and a lambda: @EACH([a, b], x -> …)",
            );
            return None;
        };
        let items = match args.first().map(unnest) {
            Some(Expr::Array(a)) => a.elem.clone(),
            Some(Expr::Tuple(items)) => items.clone(),
            Some(other) => vec![other.clone()],
            None => Vec::new(),
        };
        let params = lambda_parts(&held[0]).map(|(p, _)| p).unwrap_or_default();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let e = self.apply(&held[0], vec![item.clone()], "EACH", at)?;
            out.push(match held.get(1) {
                None => e,
                Some(alias) => {
                    let map: BTreeMap<String, Expr> =
                        params.iter().map(|p| (p.clone(), item.clone())).collect();
                    let mut a = alias.clone();
                    let _ = a.visit(&mut Bind { params: &map });
                    self.revisit(&mut a, "EACH", at);
                    let Some(name) = name_text(&a) else {
                        self.fail(
                            at,
                            format!("the alias of an `@EACH` item must be a name; `{a}` is not"),
                        );
                        return None;
                    };
                    match ident_for(&name) {
                        Ok(name) => Expr::Named {
                            expr: Box::new(e),
                            name,
                        },
                        Err(reason) => {
                            self.fail(at, reason);
                            return None;
                        }
                    }
                }
            });
        }
        let mut marker = f.clone();
        // The marker keeps the `@EACH`'s position, for a misplaced list's error.
        let mut id = Ident::new(LIST);
        if let Some(datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(i)) =
            f.name.0.first()
        {
            id.span = i.span;
        }
        marker.name = ObjectName::from(vec![id]);
        if let Expr::Function(g) = call(LIST, out) {
            marker.args = g.args;
        }
        Some(Expr::Function(marker))
    }

    /// `@SQL('text')`: the one place text becomes SQL — one expression, expanded in turn.
    fn sql(&mut self, f: &Function, at: Option<(u64, u64)>) -> Option<Expr> {
        let args = positional(f);
        let text = match args.as_slice() {
            [e] => match unnest(e) {
                Expr::Value(v) => match &v.value {
                    Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        };
        let Some(text) = text else {
            self.fail(at, "`@SQL` takes one string: @SQL('a + b')");
            return None;
        };
        match super::parse_expr(&text, self.dialect) {
            Ok(mut e) => {
                self.revisit(&mut e, "SQL", at);
                Some(parenthesized(&e))
            }
            Err(reason) => {
                self.fail(at, format!("`@SQL('{text}')`: {reason}"));
                None
            }
        }
    }

    /// SQLMesh's built-in SQL-building macros.
    fn logical(&mut self, name: &str, f: &Function, at: Option<(u64, u64)>) -> Option<Expr> {
        let args = positional(f);
        if name == "@and" || name == "@or" {
            let op = if name == "@and" {
                BinaryOperator::And
            } else {
                BinaryOperator::Or
            };
            let mut kept = args.into_iter().filter(|a| !is_null(a));
            let Some(first) = kept.next() else {
                return Some(Expr::value(Value::Null));
            };
            let folded = kept.fold(first, |l, r| Expr::BinaryOp {
                left: Box::new(Expr::Nested(Box::new(l))),
                op: op.clone(),
                right: Box::new(Expr::Nested(Box::new(r))),
            });
            return Some(Expr::Nested(Box::new(folded)));
        }
        let (cond, then, otherwise) = match args.as_slice() {
            [c, a] => (c.clone(), a.clone(), Expr::value(Value::Null)),
            [c, a, b] => (c.clone(), a.clone(), b.clone()),
            _ => {
                self.fail(
                    at,
                    "`@IF` takes a condition, a value and an optional other value",
                );
                return None;
            }
        };
        use datafusion::sql::sqlparser::ast::helpers::attached_token::AttachedToken;
        Some(match constant(&cond) {
            Some(true) => Expr::Nested(Box::new(then)),
            Some(false) => Expr::Nested(Box::new(otherwise)),
            None => Expr::Case {
                case_token: AttachedToken::empty(),
                end_token: AttachedToken::empty(),
                operand: None,
                conditions: vec![datafusion::sql::sqlparser::ast::CaseWhen {
                    condition: cond,
                    result: then,
                }],
                else_result: Some(Box::new(otherwise)),
            },
        })
    }
}

impl VisitorMut for Expander<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        // Hold an `@EACH`'s lambda until the `@EACH` is expanded (see the module).
        if let Expr::Function(f) = expr
            && f.name.to_string().eq_ignore_ascii_case("@each")
            && let FunctionArguments::List(l) = &mut f.args
            && l.args.len() >= 2
        {
            let rest: Vec<Expr> = l
                .args
                .drain(1..)
                .filter_map(|a| match a {
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                    _ => None,
                })
                .collect();
            let i = self.held.len();
            self.held.push(rest);
            l.args
                .push(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(
                    Value::Placeholder(format!("{HELD}{i}")),
                ))));
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        match expr {
            Expr::Identifier(id) if id.value.contains("@$") => self.rename(id),
            Expr::Identifier(id) if id.quote_style.is_none() && id.value.starts_with('@') => {
                let name = id.value[1..].to_lowercase();
                if let Some(v) = self.defs.get(&name) {
                    let at = ident_at(id);
                    let mut v = parenthesized(v);
                    self.revisit(&mut v, &name, at);
                    *expr = v;
                }
            }
            Expr::CompoundIdentifier(parts) => {
                for p in parts.iter_mut() {
                    self.rename(p);
                }
            }
            Expr::InList { list, .. } => flatten(list),
            Expr::Tuple(items) => flatten(items),
            Expr::Array(a) => flatten(&mut a.elem),
            Expr::Function(f) => {
                flatten_args(f);
                let (name, at) = call_name(f);
                let out = match name.as_str() {
                    "@and" | "@or" | "@if" => self.logical(&name, f, at),
                    "@each" => self.each(f, at),
                    "@sql" => self.sql(f, at),
                    "@generate_surrogate_key" | "@safe_add" | "@safe_sub" | "@safe_div" => {
                        self.builtin(&name, f, at)
                    }
                    _ => match name.strip_prefix('@').and_then(|n| self.defs.get(n)) {
                        Some(lambda) => {
                            let lambda = lambda.clone();
                            let what = name[1..].to_string();
                            self.apply(&lambda, positional(f), &what, at)
                                .map(|e| parenthesized(&e))
                        }
                        None => None,
                    },
                };
                if let Some(out) = out {
                    *expr = out;
                }
            }
            _ => {}
        }
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, tf: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name, args, alias, ..
        } = tf
        else {
            return ControlFlow::Continue(());
        };
        let text = name.to_string().to_lowercase();
        let at = name_at(name);
        if text == "@union" {
            let Some(targs) = args else {
                return ControlFlow::Continue(());
            };
            let Some(subquery) = self.union(&targs.args.clone(), at) else {
                return ControlFlow::Break(());
            };
            *tf = TableFactor::Derived {
                lateral: false,
                subquery,
                alias: alias.take(),
                sample: None,
            };
            return ControlFlow::Continue(());
        }
        if args.is_none() {
            // `FROM @name`: a `@DEF` or variable naming a table.
            if let Some(v) = text.strip_prefix('@').and_then(|n| self.defs.get(n))
                && !text.contains("@$")
            {
                match name_text(v)
                    .map(|t| t.split('.').map(ident_for).collect::<Result<Vec<_>, _>>())
                {
                    Some(Ok(parts)) => *name = ObjectName::from(parts),
                    Some(Err(reason)) => self.fail(at, reason),
                    None => self.fail(
                        at,
                        format!("`{text}` stands for `{v}`, which is not a table name"),
                    ),
                }
            }
            for part in name.0.iter_mut() {
                if let datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(i) = part {
                    self.rename(i);
                }
            }
        }
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        let mut stack: Vec<&mut SetExpr> = vec![&mut query.body];
        while let Some(body) = stack.pop() {
            match body {
                SetExpr::Select(select) => {
                    let mut items = Vec::with_capacity(select.projection.len());
                    for item in select.projection.drain(..) {
                        match item {
                            SelectItem::UnnamedExpr(Expr::Function(f))
                                if f.name.to_string() == LIST =>
                            {
                                for e in positional(&f) {
                                    items.push(match e {
                                        Expr::Named { expr, name } => SelectItem::ExprWithAlias {
                                            expr: *expr,
                                            alias: name,
                                        },
                                        other => SelectItem::UnnamedExpr(other),
                                    });
                                }
                            }
                            SelectItem::UnnamedExpr(Expr::Function(f))
                                if f.name.to_string().eq_ignore_ascii_case("@star") =>
                            {
                                let (_, at) = call_name(&f);
                                match self.star(&f, at) {
                                    Some(s) => items.push(s),
                                    None => return ControlFlow::Break(()),
                                }
                            }
                            SelectItem::ExprWithAlias { expr, mut alias } => {
                                self.rename(&mut alias);
                                items.push(SelectItem::ExprWithAlias { expr, alias });
                            }
                            other => items.push(other),
                        }
                    }
                    select.projection = items;
                    if let GroupByExpr::Expressions(exprs, _) = &mut select.group_by {
                        flatten(exprs);
                    }
                }
                SetExpr::SetOperation { left, right, .. } => {
                    stack.push(left);
                    stack.push(right);
                }
                _ => {}
            }
        }
        if self.error.is_some() {
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}

/// Macros that expanded into something that has no place where it stands.
fn leftover(query: &mut Query) -> Result<(), MacroError> {
    struct L(Option<MacroError>);
    impl VisitorMut for L {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = expr {
                let (name, at) = call_name(f);
                let message = match name.as_str() {
                    LIST => {
                        "`@EACH` yields a list: use it in a SELECT list, GROUP BY, an IN list, an array or a call's arguments"
                    }
                    "@star" => "`@STAR` stands for columns: use it as an item of a SELECT list",
                    _ => return ControlFlow::Continue(()),
                };
                self.0 = Some(MacroError::new(at, message));
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut l = L(None);
    let _ = query.visit(&mut l);
    l.0.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests;
