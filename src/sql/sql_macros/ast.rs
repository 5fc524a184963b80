//! AST helpers of the SQL macros: reading a call's arguments, values as names, lambdas and
//! binding their parameters, `@EACH` lists spliced into their enclosing list, constant
//! conditions.
//!
//! Invariant: a value becomes a name only through [`ident_for`] (one identifier, quoted when it
//! is not a plain name, `"` refused).

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, Value, VisitorMut,
};

use super::LIST;

/// Where an identifier is (1-based line and column), if it came from the file.
pub(super) fn ident_at(i: &Ident) -> Option<(u64, u64)> {
    (i.span.start.line > 0).then_some((i.span.start.line, i.span.start.column))
}

/// Where a name is: its first part's place.
pub(super) fn name_at(name: &ObjectName) -> Option<(u64, u64)> {
    name.0.first().and_then(|p| match p {
        datafusion::sql::sqlparser::ast::ObjectNamePart::Identifier(i) => ident_at(i),
        _ => None,
    })
}

/// The lower-cased name of a call and where it is.
pub(super) fn call_name(f: &Function) -> (String, Option<(u64, u64)>) {
    (f.name.to_string().to_lowercase(), name_at(&f.name))
}

pub(super) fn positional(f: &Function) -> Vec<Expr> {
    match &f.args {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `name := value` (or `=>`, `=`) arguments by lower-cased name.
pub(super) fn named(f: &Function) -> BTreeMap<String, Expr> {
    let mut out = BTreeMap::new();
    if let FunctionArguments::List(l) = &f.args {
        for a in &l.args {
            match a {
                FunctionArg::Named {
                    name,
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => {
                    out.insert(name.value.to_lowercase(), e.clone());
                }
                FunctionArg::ExprNamed {
                    name: Expr::Identifier(name),
                    arg: FunctionArgExpr::Expr(e),
                    ..
                } => {
                    out.insert(name.value.to_lowercase(), e.clone());
                }
                _ => {}
            }
        }
    }
    out
}

/// A call of `name` on `args` (an AST node, for the macros that build SQL).
pub(in crate::sql) fn call(name: &str, args: Vec<Expr>) -> Expr {
    use datafusion::sql::sqlparser::ast::FunctionArgumentList;
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

pub(super) fn unnest(e: &Expr) -> &Expr {
    match e {
        Expr::Nested(inner) => unnest(inner),
        other => other,
    }
}

/// A value as it is put in place of a name: parenthesized unless it is atomic.
pub(super) fn parenthesized(v: &Expr) -> Expr {
    match v {
        Expr::Value(_)
        | Expr::Identifier(_)
        | Expr::CompoundIdentifier(_)
        | Expr::Nested(_)
        | Expr::Array(_)
        | Expr::Function(_) => v.clone(),
        other => Expr::Nested(Box::new(other.clone())),
    }
}

/// The text a value stands for inside a name (`@{x}`): a string's content, a number, a name.
pub(super) fn name_text(e: &Expr) -> Option<String> {
    match unnest(e) {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Some(s.clone()),
            Value::Number(n, _) => Some(n.clone()),
            Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        },
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => Some(
            parts
                .iter()
                .map(|p| p.value.as_str())
                .collect::<Vec<_>>()
                .join("."),
        ),
        _ => None,
    }
}

/// An identifier for `text`: plain (lower-cased, as unquoted words are) when it is a plain
/// name, else quoted, so that no text can become more than one name. A `"` is refused: sqlparser
/// prints a doubled quote as it is, so it would not read back the same.
pub(super) fn ident_for(text: &str) -> Result<Ident, String> {
    let plain = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain {
        Ok(Ident::new(text.to_lowercase()))
    } else if text.contains('"') {
        Err(format!(
            "a name made by a macro cannot contain `\"`: `{text}`"
        ))
    } else {
        Ok(Ident::with_quote('"', text))
    }
}

/// Replace each `@$name$` of `word` by `lookup(name)`. `Ok(None)`: nothing to do; unknown
/// names are kept when `partial`, else `Err(name)`.
pub(super) fn interpolate(
    word: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    partial: bool,
) -> Result<Option<String>, String> {
    if !word.contains("@$") {
        return Ok(None);
    }
    let mut out = String::new();
    let mut rest = word;
    while let Some(at) = rest.find("@$") {
        out.push_str(&rest[..at]);
        let after = &rest[at + 2..];
        let Some(end) = after.find('$') else {
            out.push_str(&rest[at..]);
            rest = "";
            break;
        };
        let name = &after[..end];
        match lookup(&name.to_lowercase()) {
            Some(text) => out.push_str(&text),
            None if partial => out.push_str(&rest[at..at + 2 + end + 1]),
            None => return Err(name.to_string()),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

/// The parameters and body of a lambda (`x -> …`, `(a, b) -> …`).
pub(super) fn lambda_parts(e: &Expr) -> Option<(Vec<String>, Expr)> {
    match unnest(e) {
        Expr::Lambda(l) => {
            use datafusion::sql::sqlparser::ast::OneOrManyWithParens;
            let params = match &l.params {
                OneOrManyWithParens::One(p) => vec![p.name.value.to_lowercase()],
                OneOrManyWithParens::Many(ps) => {
                    ps.iter().map(|p| p.name.value.to_lowercase()).collect()
                }
            };
            Some((params, (*l.body).clone()))
        }
        Expr::BinaryOp {
            left,
            op: BinaryOperator::Arrow,
            right,
        } => {
            let params = match unnest(left) {
                Expr::Identifier(i) => vec![i.value.to_lowercase()],
                Expr::Tuple(items) => items
                    .iter()
                    .map(|i| match i {
                        Expr::Identifier(i) => Some(i.value.to_lowercase()),
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()?,
                _ => return None,
            };
            Some((params, (**right).clone()))
        }
        _ => None,
    }
}

/// Binds a lambda's parameters in its body: `x` and `@x` become the argument, `@{x}` its text.
pub(super) struct Bind<'a> {
    pub(super) params: &'a BTreeMap<String, Expr>,
}

impl Bind<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.params.get(name).and_then(name_text)
    }
    fn rename(&self, ident: &mut Ident) {
        // `@{x}` is only ever an unquoted word; a quoted name is final (see `Expander::rename`).
        if ident.quote_style.is_some() {
            return;
        }
        let lookup = |n: &str| self.text(n);
        if let Ok(Some(text)) = interpolate(&ident.value, &lookup, true) {
            // A name that cannot be made stays as it is, and the expander reports it. What is
            // left for the expander stays a word; a name made whole is final, even when the
            // values put in it hold `@$` themselves.
            let whole = interpolate(&ident.value, &lookup, false).is_ok();
            *ident = if text.contains("@$") && !whole {
                Ident::new(text)
            } else {
                ident_for(&text).unwrap_or_else(|_| ident.clone())
            };
        }
    }
}

impl VisitorMut for Bind<'_> {
    type Break = ();
    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        match expr {
            Expr::Identifier(id) if id.quote_style.is_none() => {
                let bare = id
                    .value
                    .strip_prefix('@')
                    .unwrap_or(&id.value)
                    .to_lowercase();
                if let Some(v) = self.params.get(&bare) {
                    *expr = parenthesized(v);
                } else {
                    self.rename(id);
                }
            }
            Expr::CompoundIdentifier(parts) => parts.iter_mut().for_each(|p| self.rename(p)),
            Expr::Named { name, .. } => self.rename(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

pub(super) fn is_marker(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Function(f) if f.name.to_string() == name)
}

/// Splice the items of `@EACH` markers into a list.
pub(super) fn flatten(list: &mut Vec<Expr>) {
    if !list.iter().any(|e| is_marker(e, LIST)) {
        return;
    }
    let mut out = Vec::with_capacity(list.len());
    for e in list.drain(..) {
        match &e {
            Expr::Function(f) if f.name.to_string() == LIST => {
                out.extend(positional(f).into_iter().map(|i| match i {
                    Expr::Named { expr, .. } => *expr,
                    other => other,
                }))
            }
            _ => out.push(e),
        }
    }
    *list = out;
}

pub(super) fn flatten_args(f: &mut Function) {
    let FunctionArguments::List(l) = &mut f.args else {
        return;
    };
    if !l
        .args
        .iter()
        .any(|a| matches!(a, FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if is_marker(e, LIST)))
    {
        return;
    }
    let mut out = Vec::with_capacity(l.args.len());
    for a in l.args.drain(..) {
        match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) if is_marker(&e, LIST) => {
                let mut items = vec![e];
                flatten(&mut items);
                out.extend(
                    items
                        .into_iter()
                        .map(|e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e))),
                );
            }
            other => out.push(other),
        }
    }
    l.args = out;
}

/// A literal condition evaluated (as SQLMesh evaluates `@IF` at load): booleans, NOT, AND/OR
/// and comparisons of numbers or strings. `None`: not constant.
pub(super) fn constant(e: &Expr) -> Option<bool> {
    use datafusion::sql::sqlparser::ast::UnaryOperator;
    match e {
        Expr::Nested(inner) => constant(inner),
        Expr::Value(v) => match &v.value {
            Value::Boolean(b) => Some(*b),
            Value::Null => Some(false),
            _ => None,
        },
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => constant(expr).map(|b| !b),
        Expr::BinaryOp { left, op, right } => {
            if matches!(op, BinaryOperator::And | BinaryOperator::Or) {
                let (l, r) = (constant(left)?, constant(right)?);
                return Some(if *op == BinaryOperator::And {
                    l && r
                } else {
                    l || r
                });
            }
            let lit = |e: &Expr| match unnest(e) {
                Expr::Value(v) => match &v.value {
                    Value::Number(n, _) => n.parse::<f64>().ok().map(Ok),
                    Value::SingleQuotedString(s) => Some(Err(s.clone())),
                    _ => None,
                },
                _ => None,
            };
            let (l, r) = (lit(left)?, lit(right)?);
            let ord = match (&l, &r) {
                (Ok(a), Ok(b)) => a.partial_cmp(b)?,
                (Err(a), Err(b)) => a.cmp(b),
                _ => return None,
            };
            use std::cmp::Ordering::*;
            Some(match op {
                BinaryOperator::Eq => ord == Equal,
                BinaryOperator::NotEq => ord != Equal,
                BinaryOperator::Lt => ord == Less,
                BinaryOperator::LtEq => ord != Greater,
                BinaryOperator::Gt => ord == Greater,
                BinaryOperator::GtEq => ord != Less,
                _ => return None,
            })
        }
        _ => None,
    }
}

pub(super) fn is_null(e: &Expr) -> bool {
    matches!(unnest(e), Expr::Value(v) if v.value == Value::Null)
}
