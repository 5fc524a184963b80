//! Token-level preparation of a model query for the SQL macros (see [`prepare_tokens`]).
//!
//! Invariant: token positions are kept (merged words span their parts), so errors stay at file
//! locations; only words, commas and the `SELECT * FROM` before a lone `@UNION` change.

use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Whitespace};

/// Token-level preparation of a model query for the macros, called by `parse_query` after the
/// words are lower-cased (positions unchanged):
/// - `@{name}` inside a word (`@{x}_total`, `sales_@{region}`) becomes the single word
///   `@$name$…` that [`super::expand_sql_macros`] interpolates;
/// - `AS alias` after the lambda of an `@EACH` (`@EACH(l, x -> f(x) AS @{x}_n)`) becomes a
///   third argument, since SQL has no `AS` inside a call;
/// - a body that is only `@UNION(…)` is read as `SELECT * FROM @UNION(…)`.
pub(in crate::sql) fn prepare_tokens(tokens: &mut Vec<TokenWithSpan>) {
    merge_interpolations(tokens);
    each_aliases(tokens);
    let first = tokens
        .iter()
        .position(|t| !matches!(t.token, Token::Whitespace(_)));
    if let Some(i) = first
        && word(&tokens[i].token).is_some_and(|w| w == "@union")
        && next_code(tokens, i + 1).is_some_and(|j| tokens[j].token == Token::LParen)
    {
        let span = tokens[i].span;
        let space = || Token::Whitespace(Whitespace::Space);
        let pre = [
            Token::make_keyword("SELECT"),
            space(),
            Token::Mul,
            space(),
            Token::make_keyword("FROM"),
            space(),
        ];
        tokens.splice(i..i, pre.into_iter().map(|t| TokenWithSpan::new(t, span)));
    }
}

fn word(t: &Token) -> Option<&str> {
    match t {
        Token::Word(w) if w.quote_style.is_none() => Some(&w.value),
        _ => None,
    }
}

fn next_code(tokens: &[TokenWithSpan], from: usize) -> Option<usize> {
    (from..tokens.len()).find(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
}

fn touching(a: &TokenWithSpan, b: &TokenWithSpan) -> bool {
    a.span.end == b.span.start
}

fn merge_interpolations(tokens: &mut Vec<TokenWithSpan>) {
    let mut i = 0;
    while i < tokens.len() {
        let touch = |k: usize| k + 1 < tokens.len() && touching(&tokens[k], &tokens[k + 1]);
        let w = word(&tokens[i].token).unwrap_or_default();
        // The tokenizer reads `@{x}` as the word `@{x` and `}` (after a space), or as `…@`,
        // `{`, `x`, `}` (inside a word).
        let (merged, end) = match w.rfind("@{") {
            Some(at)
                if touch(i) && tokens[i + 1].token == Token::RBrace && !w[at + 2..].is_empty() =>
            {
                (format!("{}@${}$", &w[..at], &w[at + 2..]), i + 2)
            }
            _ if w.ends_with('@')
                && i + 3 < tokens.len()
                && tokens[i + 1].token == Token::LBrace
                && tokens[i + 3].token == Token::RBrace
                && (i..i + 3).all(touch) =>
            {
                let Some(name) = word(&tokens[i + 2].token) else {
                    i += 1;
                    continue;
                };
                (format!("{w}${name}$"), i + 4)
            }
            _ => {
                i += 1;
                continue;
            }
        };
        let mut merged = merged;
        let mut end = end;
        // A word right after the braces continues the identifier (`@{x}_total`).
        if end < tokens.len()
            && touching(&tokens[end - 1], &tokens[end])
            && let Some(w) = word(&tokens[end].token)
        {
            merged.push_str(w);
            end += 1;
        }
        let span = datafusion::sql::sqlparser::tokenizer::Span::new(
            tokens[i].span.start,
            tokens[end - 1].span.end,
        );
        tokens.splice(
            i..end,
            [TokenWithSpan::new(
                Token::Word(datafusion::sql::sqlparser::tokenizer::Word {
                    value: merged,
                    quote_style: None,
                    keyword: datafusion::sql::sqlparser::keywords::Keyword::NoKeyword,
                }),
                span,
            )],
        );
        // The merged word may hold another `@{` (`@{a}_@{b}`): look at it once more.
    }
}

fn each_aliases(tokens: &mut [TokenWithSpan]) {
    let mut i = 0;
    while i < tokens.len() {
        let is_each = word(&tokens[i].token).is_some_and(|w| w == "@each")
            && next_code(tokens, i + 1).is_some_and(|j| tokens[j].token == Token::LParen);
        if !is_each {
            i += 1;
            continue;
        }
        let mut depth = 0usize;
        let mut arrow = false;
        let mut j = i + 1;
        while j < tokens.len() {
            match &tokens[j].token {
                Token::LParen | Token::LBracket => depth += 1,
                Token::RParen | Token::RBracket => {
                    depth = depth.saturating_sub(1);
                    if depth == 0 {
                        break;
                    }
                }
                Token::Arrow if depth == 1 => arrow = true,
                Token::Word(w)
                    if depth == 1
                        && arrow
                        && w.quote_style.is_none()
                        && w.keyword == datafusion::sql::sqlparser::keywords::Keyword::AS =>
                {
                    tokens[j].token = Token::Comma;
                }
                _ => {}
            }
            j += 1;
        }
        i += 1;
    }
}
