//! The `MODEL ( ... );` header: lexing, splitting into properties, and typed value accessors.
//!
//! The syntax follows SQLMesh's: `MODEL (key value, key value, ...);` where a value is a string,
//! number, boolean, (dotted) identifier, a parenthesized or bracketed list, a call such as
//! `INCREMENTAL_BY_TIME_RANGE (time_column ds, lookback 2)` or `not_null(columns := (id))`, or a
//! `key = value` / `key := value` pair inside a list.
//!
//! Invariants:
//! - Every token carries its byte span in the *file*, so every message points at `file:line:col`.
//! - The header is removed from the text handed to the SQL parser by blanking its characters
//!   (newlines kept), so SQL locations are file locations too.
//! - Lexing, splitting and building a model never panic on any input (property-tested below).

use std::path::Path;

use crate::error::{Diagnostic, Location, line_col};
use crate::sql::{first_code_offset, skip_trivia};

/// A header token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: identifier, keyword, `true`/`false`, `@macro`.
    Word(String),
    /// `"quoted"` or `` `quoted` `` identifier.
    Quoted(String),
    /// `'string'` literal (quotes removed, `''` unescaped).
    Str(String),
    /// A number literal as written.
    Number(String),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `;`
    Semi,
    /// `=`
    Eq,
    /// `:=`
    Assign,
    /// `.`
    Dot,
    /// Any other operator character(s), kept for raw SQL expressions in audit arguments.
    Op(String),
}

/// A token with its byte span in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token.
    pub tok: Tok,
    /// Byte offset of the first character.
    pub start: usize,
    /// Byte offset one past the last character.
    pub end: usize,
}

/// The context needed to turn spans into locations.
#[derive(Clone, Copy)]
pub struct Src<'a> {
    /// File path as shown to the user.
    pub file: &'a Path,
    /// Whole file text.
    pub text: &'a str,
}

impl<'a> Src<'a> {
    /// The location of byte offset `offset`.
    pub fn loc(&self, offset: usize) -> Location {
        let (l, c) = line_col(self.text, offset);
        Location::at(self.file, l, c)
    }

    /// An error at `offset`.
    pub fn err(&self, offset: usize, message: impl Into<String>) -> Diagnostic {
        Diagnostic::error(message).at(self.loc(offset))
    }

    /// The source text of a run of tokens.
    pub fn text_of(&self, run: &[Token]) -> &'a str {
        match (run.first(), run.last()) {
            (Some(a), Some(b)) => &self.text[a.start..b.end],
            _ => "",
        }
    }
}

/// One `key value` property of the header.
#[derive(Debug, Clone)]
pub struct Property {
    /// The key, lowercased.
    pub key: String,
    /// Byte offset of the key.
    pub key_start: usize,
    /// The value tokens (never empty).
    pub value: Vec<Token>,
}

/// A file split into its header properties and the rest.
#[derive(Debug)]
pub struct Split {
    /// The header's properties in file order, or `None` when the file has no header.
    pub properties: Option<Vec<Property>>,
    /// Byte offset of the `MODEL` keyword, when there is a header.
    pub header_start: usize,
    /// The file text with the header blanked out (same length, newlines kept).
    pub body: String,
    /// Byte offset where the body's first non-blank character is, if any.
    pub body_start: Option<usize>,
}

/// Lex `text[from..]` until the end; comments and whitespace are skipped.
pub fn lex(src: Src<'_>, from: usize) -> Result<Vec<Token>, Diagnostic> {
    lex_impl(src, from, false)
}

/// The lexer. With `header`, stops after the bracket that closes the first opened one (plus a
/// `;` right after it).
fn lex_impl(src: Src<'_>, from: usize, header: bool) -> Result<Vec<Token>, Diagnostic> {
    let text = src.text;
    let mut depth = 0i64;
    let mut closed = false;
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = from;
    loop {
        i = skip_trivia(text, i).map_err(|at| src.err(at, "unterminated `/*` comment"))?;
        let Some(&c) = bytes.get(i) else { break };
        let start = i;
        if closed {
            // The header's closing bracket was the last token; only a `;` right after belongs to it.
            if c == b';' {
                out.push(Token {
                    tok: Tok::Semi,
                    start,
                    end: i + 1,
                });
            }
            break;
        }
        match c {
            b'\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match text[i..].find('\'') {
                        None => return Err(src.err(start, "unterminated string literal")),
                        Some(k) => {
                            s.push_str(&text[i..i + k]);
                            i += k + 1;
                            if bytes.get(i) == Some(&b'\'') {
                                s.push('\'');
                                i += 1;
                            } else {
                                break;
                            }
                        }
                    }
                }
                out.push(Token {
                    tok: Tok::Str(s),
                    start,
                    end: i,
                });
            }
            b'"' | b'`' => {
                let close = c as char;
                match text[i + 1..].find(close) {
                    None => return Err(src.err(start, "unterminated quoted identifier")),
                    Some(k) => {
                        out.push(Token {
                            tok: Tok::Quoted(text[i + 1..i + 1 + k].to_string()),
                            start,
                            end: i + k + 2,
                        });
                        i += k + 2;
                    }
                }
            }
            b'0'..=b'9' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'_')
                {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Number(text[start..i].to_string()),
                    start,
                    end: i,
                });
            }
            b'(' | b')' | b'[' | b']' | b',' | b';' | b'=' | b'.' => {
                i += 1;
                let tok = match c {
                    b'(' => Tok::LParen,
                    b')' => Tok::RParen,
                    b'[' => Tok::LBracket,
                    b']' => Tok::RBracket,
                    b',' => Tok::Comma,
                    b';' => Tok::Semi,
                    b'=' => Tok::Eq,
                    _ => Tok::Dot,
                };
                if header {
                    match tok {
                        Tok::LParen | Tok::LBracket => depth += 1,
                        Tok::RParen | Tok::RBracket => {
                            depth -= 1;
                            closed = depth <= 0;
                        }
                        _ => {}
                    }
                }
                out.push(Token { tok, start, end: i });
            }
            b':' if bytes.get(i + 1) == Some(&b'=') => {
                i += 2;
                out.push(Token {
                    tok: Tok::Assign,
                    start,
                    end: i,
                });
            }
            _ => {
                let ch = text[i..].chars().next().unwrap_or(' ');
                if ch.is_alphabetic() || ch == '_' || ch == '@' || ch == '$' {
                    i = scan_while(text, i, |c, _| {
                        c.is_alphanumeric() || c == '_' || c == '@' || c == '$'
                    });
                    out.push(Token {
                        tok: Tok::Word(text[start..i].to_string()),
                        start,
                        end: i,
                    });
                } else if ch.is_control() {
                    return Err(src.err(start, format!("unexpected control character {:?}", ch)));
                } else {
                    // Operators for raw SQL expressions: `>`, `>=`, `<>`, `+`, `::`, ...
                    i = scan_while(text, i + ch.len_utf8(), |c, rest| {
                        "<>!=|&+-*/%:~^".contains(c) && !rest.starts_with("--")
                    });
                    out.push(Token {
                        tok: Tok::Op(text[start..i].to_string()),
                        start,
                        end: i,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The offset after the characters from `i` on that satisfy `pred(char, rest_of_text)`.
fn scan_while(text: &str, mut i: usize, pred: impl Fn(char, &str) -> bool) -> usize {
    while let Some(c) = text[i..].chars().next() {
        if !pred(c, &text[i..]) {
            break;
        }
        i += c.len_utf8();
    }
    i
}

/// Split a model file into header and body.
pub fn split(src: Src<'_>) -> Result<Split, Diagnostic> {
    let text = src.text;
    let first = first_code_offset(text);
    let starts_with_model = first.is_some_and(|i| {
        let rest = &text[i..];
        // `get` and not indexing: byte 5 may fall inside a multi-byte character.
        rest.get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case("model"))
            && rest.get(5..).is_some_and(|r| {
                r.trim_start_matches(|c: char| c.is_whitespace())
                    .starts_with('(')
            })
    });
    let Some(header_start) = first.filter(|_| starts_with_model) else {
        return Ok(Split {
            properties: None,
            header_start: 0,
            body: text.to_string(),
            body_start: first,
        });
    };
    // Lex only what the header needs: up to its closing parenthesis and optional `;`.
    let tokens = lex_header(src, header_start)?;
    // tokens[0] = MODEL, tokens[1] = '('
    let open = &tokens[1];
    let close_idx = matching_close(&tokens, 1).ok_or_else(|| {
        src.err(
            open.start,
            "unbalanced parentheses: the MODEL header's `(` is never closed",
        )
        .hint("every `(` in the header needs a matching `)`, and the header ends with `);`")
    })?;
    let mut header_end = tokens[close_idx].end;
    if let Some(t) = tokens.get(close_idx + 1).filter(|t| t.tok == Tok::Semi) {
        header_end = t.end;
    }
    let inner = &tokens[2..close_idx];
    let properties = properties_of(src, inner)?;
    let mut body: String = String::with_capacity(text.len());
    for (i, ch) in text.char_indices() {
        if i < header_end && ch != '\n' && ch != '\r' {
            for _ in 0..ch.len_utf8() {
                body.push(' ');
            }
        } else {
            body.push(ch);
        }
    }
    let body_start = first_code_offset(&body);
    Ok(Split {
        properties: Some(properties),
        header_start,
        body,
        body_start,
    })
}

/// The `key value` properties of a header's inner tokens (between its parentheses).
pub fn properties_of(src: Src<'_>, inner: &[Token]) -> Result<Vec<Property>, Diagnostic> {
    let mut properties = Vec::new();
    for item in split_top(inner) {
        let Some((key_tok, value)) = item.split_first() else {
            continue;
        };
        let key = match &key_tok.tok {
            Tok::Word(w) => w.to_ascii_lowercase(),
            _ => {
                return Err(src
                    .err(
                        key_tok.start,
                        format!("expected a property name, found `{}`", src.text_of(item)),
                    )
                    .hint("the header is a list of `property value` pairs separated by commas"));
            }
        };
        if value.is_empty() {
            return Err(src.err(key_tok.start, format!("property `{key}` has no value")));
        }
        properties.push(Property {
            key,
            key_start: key_tok.start,
            value: value.to_vec(),
        });
    }
    Ok(properties)
}

/// Lex a `KEYWORD ( ... )` block starting at `start` through its closing bracket and a `;`
/// right after it (as the MODEL header is lexed).
pub fn lex_block(src: Src<'_>, start: usize) -> Result<Vec<Token>, Diagnostic> {
    lex_header(src, start)
}

/// Lex from the `MODEL` keyword through the header's closing `)` and a directly following `;`,
/// so that nothing in the SQL body can be mistaken for a header problem.
fn lex_header(src: Src<'_>, header_start: usize) -> Result<Vec<Token>, Diagnostic> {
    let hint = "check the MODEL header for an unterminated string, quoted name or comment";
    lex_impl(src, header_start, true).map_err(|d| d.hint(hint))
}

/// Index of the token closing the bracket opened at `open`.
pub fn matching_close(tokens: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0i64;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.tok {
            Tok::LParen | Tok::LBracket => depth += 1,
            Tok::RParen | Tok::RBracket => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Split a run at top-level commas; a trailing comma yields no empty item.
pub fn split_top(run: &[Token]) -> Vec<&[Token]> {
    let mut items = Vec::new();
    let mut depth = 0i64;
    let mut begin = 0;
    for (i, t) in run.iter().enumerate() {
        match t.tok {
            Tok::LParen | Tok::LBracket => depth += 1,
            Tok::RParen | Tok::RBracket => depth -= 1,
            Tok::Comma if depth == 0 => {
                items.push(&run[begin..i]);
                begin = i + 1;
            }
            _ => {}
        }
    }
    if begin < run.len() {
        items.push(&run[begin..]);
    }
    items
}

// ---------------------------------------------------------------------------------------------
// Typed accessors over a value run. Each returns a located diagnostic on mismatch.

fn describe(src: Src<'_>, run: &[Token]) -> String {
    let t = src.text_of(run);
    if t.chars().count() > 40 {
        format!("{}…", t.chars().take(40).collect::<String>())
    } else {
        t.to_string()
    }
}

/// A single string: a `'literal'`, or as SQLMesh also accepts, a `"double-quoted"` value or
/// one bare word (`owner jen`, `cron @daily`).
pub fn string(src: Src<'_>, key: &str, run: &[Token]) -> Result<String, Diagnostic> {
    match run {
        [
            Token {
                tok: Tok::Str(s) | Tok::Quoted(s) | Tok::Word(s),
                ..
            },
        ] => Ok(s.clone()),
        _ => Err(src
            .err(
                run[0].start,
                format!(
                    "`{key}` expects a string literal, found `{}`",
                    describe(src, run)
                ),
            )
            .hint(format!("quote the value: {key} '...'"))),
    }
}

/// `true` or `false`.
pub fn boolean(src: Src<'_>, key: &str, run: &[Token]) -> Result<bool, Diagnostic> {
    if let [
        Token {
            tok: Tok::Word(w), ..
        },
    ] = run
    {
        if w.eq_ignore_ascii_case("true") {
            return Ok(true);
        }
        if w.eq_ignore_ascii_case("false") {
            return Ok(false);
        }
    }
    Err(src.err(
        run[0].start,
        format!(
            "`{key}` expects true or false, found `{}`",
            describe(src, run)
        ),
    ))
}

/// A non-negative integer that fits `u32`.
pub fn uint(src: Src<'_>, key: &str, run: &[Token]) -> Result<u32, Diagnostic> {
    if let [
        Token {
            tok: Tok::Number(n),
            ..
        },
    ] = run
        && let Ok(v) = n.parse::<u32>()
    {
        return Ok(v);
    }
    Err(src.err(
        run[0].start,
        format!(
            "`{key}` expects a non-negative whole number, found `{}`",
            describe(src, run)
        ),
    ))
}

/// A (dotted) identifier; quoted parts keep their text, unquoted parts are lowercased.
pub fn ident_path(src: Src<'_>, key: &str, run: &[Token]) -> Result<String, Diagnostic> {
    ident_parts(src, key, run).map(|p| p.join("."))
}

/// The parts of a (dotted) identifier.
pub fn ident_parts(src: Src<'_>, key: &str, run: &[Token]) -> Result<Vec<String>, Diagnostic> {
    let mut parts = Vec::new();
    let mut expect_part = true;
    for t in run {
        match (&t.tok, expect_part) {
            (Tok::Word(w), true) => parts.push(w.to_ascii_lowercase()),
            (Tok::Quoted(q), true) => parts.push(q.clone()),
            (Tok::Dot, false) => {}
            _ => {
                return Err(src.err(
                    t.start,
                    format!("`{key}` expects a name, found `{}`", describe(src, run)),
                ));
            }
        }
        expect_part = !expect_part;
    }
    if expect_part {
        // An empty run has no position of its own: point at the start of the file.
        let at = run.last().map_or(0, |t| t.start);
        return Err(src.err(
            at,
            format!("`{key}` expects a name, found `{}`", describe(src, run)),
        ));
    }
    Ok(parts)
}

/// The items of `( ... )` or `[ ... ]` covering the whole run, or the run itself as one item.
pub fn list(run: &[Token]) -> Vec<&[Token]> {
    if is_wrapped(run) {
        // Empty items (`(a,,b)`, a trailing comma) are skipped: no consumer sees an empty run.
        split_top(&run[1..run.len() - 1])
            .into_iter()
            .filter(|item| !item.is_empty())
            .collect()
    } else {
        vec![run]
    }
}

/// Is the run exactly one bracketed group?
pub fn is_wrapped(run: &[Token]) -> bool {
    matches!(
        run.first().map(|t| &t.tok),
        Some(Tok::LParen | Tok::LBracket)
    ) && matching_close(run, 0) == Some(run.len() - 1)
}

/// A `name` or `name(args)` call: the name token and its argument runs.
pub struct Call<'t> {
    /// Lowercased name.
    pub name: String,
    /// Byte offset of the name.
    pub start: usize,
    /// Arguments inside the parentheses, split at top-level commas.
    pub args: Vec<&'t [Token]>,
    /// Whether parentheses followed the name.
    pub has_parens: bool,
}

/// Parse `NAME` or `NAME ( ... )`.
pub fn call<'t>(src: Src<'_>, key: &str, run: &'t [Token]) -> Result<Call<'t>, Diagnostic> {
    let (head, rest) = run
        .split_first()
        .ok_or_else(|| src.err(0, format!("`{key}` has no value")))?;
    let name = match &head.tok {
        Tok::Word(w) => w.to_ascii_lowercase(),
        _ => {
            return Err(src.err(
                head.start,
                format!("`{key}` expects a name, found `{}`", describe(src, run)),
            ));
        }
    };
    if rest.is_empty() {
        return Ok(Call {
            name,
            start: head.start,
            args: Vec::new(),
            has_parens: false,
        });
    }
    if is_wrapped(rest) && rest[0].tok == Tok::LParen {
        return Ok(Call {
            name,
            start: head.start,
            args: split_top(&rest[1..rest.len() - 1]),
            has_parens: true,
        });
    }
    Err(src
        .err(
            rest[0].start,
            format!("unexpected `{}` after `{name}`", describe(src, rest)),
        )
        .hint(format!(
            "write `{name}` or `{name}(...)`; separate properties with commas"
        )))
}

/// Split a `key value`, `key = value` or `key := value` item into its key and value run.
pub fn key_value<'t>(
    src: Src<'_>,
    item: &'t [Token],
) -> Result<(String, usize, &'t [Token]), Diagnostic> {
    let (head, rest) = item.split_first().ok_or_else(|| src.err(0, "empty item"))?;
    let key = match &head.tok {
        Tok::Word(w) => w.to_ascii_lowercase(),
        Tok::Quoted(q) => q.clone(),
        Tok::Str(s) => s.clone(),
        _ => {
            return Err(src.err(
                head.start,
                format!("expected a name, found `{}`", describe(src, item)),
            ));
        }
    };
    let value = match rest.first().map(|t| &t.tok) {
        Some(Tok::Eq | Tok::Assign) => &rest[1..],
        _ => rest,
    };
    if value.is_empty() {
        return Err(src.err(head.start, format!("`{key}` has no value")));
    }
    Ok((key, head.start, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> Src<'_> {
        Src {
            file: Path::new("m.sql"),
            text,
        }
    }

    #[test]
    fn splits_header_and_blanks_it() {
        let text = "-- lead\nMODEL (\n  name a.b,\n  kind FULL,\n);\nSELECT 1";
        let s = split(src(text)).unwrap();
        let props = s.properties.unwrap();
        assert_eq!(
            props.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(),
            ["name", "kind"]
        );
        assert_eq!(s.body.len(), text.len());
        assert_eq!(&s.body[s.body_start.unwrap()..], "SELECT 1");
        assert_eq!(s.body.matches('\n').count(), text.matches('\n').count());
    }

    #[test]
    fn no_header() {
        let s = split(src("  SELECT 1")).unwrap();
        assert!(s.properties.is_none());
        assert_eq!(s.body_start, Some(2));
        let s = split(src("SELECT model FROM t")).unwrap();
        assert!(s.properties.is_none());
    }

    #[test]
    fn nested_values_and_strings() {
        let text = "MODEL (name a.b, audits (not_null(columns := (id, x)), forall(criteria := (len(x) > 0))), description 'it''s; (x');\nSELECT 1";
        let s = split(src(text)).unwrap();
        let props = s.properties.unwrap();
        assert_eq!(props.len(), 3);
        let d = string(src(text), "description", &props[2].value).unwrap();
        assert_eq!(d, "it's; (x");
        let audits = list(&props[1].value);
        assert_eq!(audits.len(), 2);
        let c = call(src(text), "audits", audits[1]).unwrap();
        assert_eq!(c.name, "forall");
        let (k, _, v) = key_value(src(text), c.args[0]).unwrap();
        assert_eq!(k, "criteria");
        assert_eq!(src(text).text_of(v), "(len(x) > 0)");
    }

    #[test]
    fn unbalanced_header_points_at_open_paren() {
        let text = "MODEL (\n  name a.b,\n  kind FULL (\n;\nSELECT 1";
        let e = split(src(text)).unwrap_err();
        assert_eq!(e.location.unwrap().to_string(), "m.sql:1:7");
        let e = split(src("MODEL (name 'abc")).unwrap_err();
        assert!(e.message.contains("unterminated string"), "{}", e.message);
    }

    #[test]
    fn accessors() {
        let t = "x 'a' true 12 sushi.\"Orders\"";
        let toks = lex(src(t), 0).unwrap();
        assert_eq!(string(src(t), "k", &toks[1..2]).unwrap(), "a");
        assert!(boolean(src(t), "k", &toks[2..3]).unwrap());
        assert_eq!(uint(src(t), "k", &toks[3..4]).unwrap(), 12);
        assert_eq!(ident_path(src(t), "k", &toks[4..]).unwrap(), "sushi.Orders");
        assert!(uint(src(t), "k", &toks[1..2]).is_err());
        assert!(ident_path(src(t), "k", &toks[4..6]).is_err());
    }

    mod never_panics {
        use super::*;
        use crate::project::config::ModelDefaults;
        use crate::project::model::build;
        use proptest::prelude::*;

        /// Fragments that steer random text towards headers and queries.
        fn fragment() -> impl Strategy<Value = String> {
            prop_oneof![
                Just("MODEL (".to_string()),
                Just(")".to_string()),
                Just("(".to_string()),
                Just(";".to_string()),
                Just(",".to_string()),
                Just("name a.b".to_string()),
                Just("kind INCREMENTAL_BY_TIME_RANGE (time_column ds".to_string()),
                Just("kind SEED (path 'x.csv')".to_string()),
                Just("audits (not_null(columns := (x)))".to_string()),
                Just("'str".to_string()),
                Just("\"q".to_string()),
                Just("/*".to_string()),
                Just("--".to_string()),
                Just("\n".to_string()),
                Just("SELECT @start_ds AS ds FROM t".to_string()),
                Just("é\u{0}\u{1b}".to_string()),
                any::<String>(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            #[test]
            fn random_model_files_never_panic(parts in prop::collection::vec(fragment(), 0..24)) {
                let text = parts.join(" ");
                let src = Src { file: Path::new("m.sql"), text: &text };
                let _ = lex(src, 0);
                let _ = split(src);
                let _ = build(Path::new("/nonexistent"), Path::new("models/s/m.sql"), &text, &ModelDefaults::default(), crate::sql::Dialect::DataFusion);
            }
        }
    }
}
