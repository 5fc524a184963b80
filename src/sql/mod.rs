//! Everything that touches sqlparser: parsing a model's query, its canonical form, the tables it
//! reads, the macro variables it uses, and rendering it for an interval.
//!
//! Invariants:
//! - A model query is parsed in its project's [`Dialect`]: DataFusion's default
//!   (`GenericDialect`) for the built-in engine, sqlparser's Databricks dialect (Spark SQL:
//!   backtick identifiers, `explode(sequence(…))`, `INTERVAL 1 DAY`) for a Spark engine. Types
//!   and audit arguments are read in the generic dialect, which both engines accept.
//! - A query is tokenized once; unquoted words are lowercased before parsing, exactly as
//!   DataFusion normalizes unquoted identifiers, so keyword or identifier case never changes the
//!   canonical form. Quoted identifiers and string literals are untouched.
//! - The canonical form is the parsed AST printed back: whitespace, comments, keyword case and a
//!   trailing semicolon never change it; anything that changes the AST does.
//! - Values substituted into SQL are AST literals, never spliced text.

mod macros;
mod refs;
mod rewrite;
mod sql_macros;

mod functions;
/// An expression of a parsed query.
pub use datafusion::sql::sqlparser::ast::Expr;
pub use functions::{
    REBUILT as REBUILT_FUNCTIONS, RENAMED as RENAMED_FUNCTIONS, SQL_SPECIAL,
    calls as function_calls, translate as translate_functions,
};
pub use macros::{
    MACRO_VARIABLES, MacroContext, Variable, is_known as is_known_macro, is_window_variable,
    render_query, substitute_variables, text_literal,
};
pub use refs::{Analysis, MacroUse, TableRef, analyze};
pub use rewrite::{inline_embedded, name_unaliased, prepend_ctes, render_model, replace_tables};
pub use sql_macros::{Defs as MacroDefs, MacroError, expand_sql_macros, extract_defs};

use datafusion::sql::sqlparser::ast::{Query, Statement};
use datafusion::sql::sqlparser::dialect::{
    DatabricksDialect, Dialect as SqlparserDialect, GenericDialect,
};
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use crate::error::{Diagnostic, Location};
use std::path::Path;

/// The dialect of the built-in engine, also used for types and audit arguments.
pub const DIALECT: GenericDialect = GenericDialect {};

/// The parser dialect of Spark SQL: sqlparser's Databricks dialect, where an identifier may
/// also start with `@`, so macro variables (`@start_ds`) are read as they are in the generic
/// dialect.
static SPARK: SparkSql = SparkSql;

#[derive(Debug)]
struct SparkSql;

macro_rules! databricks {
    ($($f:ident),* $(,)?) => {
        $(fn $f(&self) -> bool {
            DatabricksDialect {}.$f()
        })*
    };
}

impl SqlparserDialect for SparkSql {
    fn dialect(&self) -> std::any::TypeId {
        std::any::TypeId::of::<DatabricksDialect>()
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        DatabricksDialect {}.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        ch == '@' || DatabricksDialect {}.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        DatabricksDialect {}.is_identifier_part(ch)
    }
    databricks!(
        supports_numeric_prefix,
        supports_filter_during_aggregation,
        supports_group_by_expr,
        supports_table_versioning,
        supports_lambda_functions,
        supports_select_wildcard_except,
        require_interval_qualifier,
        supports_struct_literal,
        supports_nested_comments,
        supports_group_by_with_modifier,
        supports_values_as_table_factor,
        supports_optimize_table,
        supports_bang_not_operator,
        supports_cte_without_as,
        supports_select_item_multi_column_alias,
    );
}

/// The SQL dialect a project's model queries are written in, set by its engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// DataFusion SQL (the built-in engine).
    #[default]
    DataFusion,
    /// Spark SQL (a Spark Connect engine).
    Spark,
}

impl Dialect {
    fn parser(self) -> &'static dyn SqlparserDialect {
        match self {
            Dialect::DataFusion => &DIALECT,
            Dialect::Spark => &SPARK,
        }
    }
}

/// Dialects a model may declare (`dialect duckdb`), as SQLMesh names them.
pub const DECLARED_DIALECTS: [&str; 18] = [
    "athena",
    "bigquery",
    "clickhouse",
    "databricks",
    "datafusion",
    "doris",
    "duckdb",
    "hive",
    "mssql",
    "mysql",
    "postgres",
    "presto",
    "redshift",
    "risingwave",
    "snowflake",
    "spark",
    "trino",
    "tsql",
];

/// A declared dialect, lower-cased, if tidemark knows it (SQLMesh allows `duckdb,normalization_strategy=…`:
/// the settings after the name are kept); else a hint.
pub fn declared_dialect(text: &str) -> Result<String, String> {
    let lower = text.trim().to_ascii_lowercase();
    let name = lower.split(',').next().unwrap_or_default().trim();
    if DECLARED_DIALECTS.contains(&name) {
        Ok(lower)
    } else {
        Err(
            crate::error::did_you_mean(name, DECLARED_DIALECTS.iter().copied())
                .unwrap_or_else(|| format!("dialects: {}", DECLARED_DIALECTS.join(", "))),
        )
    }
}

/// Parse the one query of a model body.
///
/// `body` has the same length and line structure as the file (the header blanked out), so the
/// locations in errors are file locations.
pub fn parse_query(file: &Path, body: &str, dialect: Dialect) -> Result<Box<Query>, Diagnostic> {
    let mut tokens = Tokenizer::new(dialect.parser(), body)
        .tokenize_with_location()
        .map_err(|e| {
            Diagnostic::error(format!("SQL syntax error: {}", e.message)).at(Location::at(
                file,
                e.location.line,
                e.location.column,
            ))
        })?;
    normalize_tokens(&mut tokens);
    sql_macros::prepare_tokens(&mut tokens);
    let second = second_statement(&tokens);
    let mut parser = Parser::new(dialect.parser()).with_tokens_with_locations(tokens);
    let around = |where_: &str, loc: Location| {
        Diagnostic::error(format!(
            "a statement {where_} the query: SQLMesh's pre- and post-statements are not supported"
        ))
        .at(loc)
        .hint("tidemark runs only a model's query: make what the statement creates a model or a source of its own, or remove it")
    };
    let at_second =
        || second.map_or_else(|| Location::file(file), |s| Location::at(file, s.0, s.1));
    let statements = parser.parse_statements().map_err(|e| {
        let d = parser_error(file, body, e);
        // A syntax error in a statement after the first (a post-statement such as
        // `@assert_has_columns(…)`) is said as such.
        match (&d.location, second) {
            (Some(l), Some(s)) if (l.line, l.column) >= s => around("after", at_second()),
            _ => d,
        }
    })?;
    let mut statements = statements.into_iter();
    let Some(first) = statements.next() else {
        return Err(Diagnostic::error("the model has no query")
            .at(Location::file(file))
            .hint("after the MODEL header, write one SELECT query"));
    };
    if let Some(next) = statements.next() {
        let first_loc = || {
            first_token_location(body)
                .map_or_else(|| Location::file(file), |(l, c)| Location::at(file, l, c))
        };
        return Err(match (&first, &next) {
            (Statement::Query(_), Statement::Query(_)) => {
                Diagnostic::error("a model holds exactly one query; found a second statement")
                    .at(at_second())
                    .hint("move the other statement into its own model, or remove it")
            }
            (Statement::Query(_), _) => around("after", at_second()),
            _ => around("before", first_loc()),
        });
    }
    match first {
        Statement::Query(q) => Ok(q),
        other => {
            let kind = other
                .to_string()
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            let loc = first_token_location(body)
                .map_or_else(|| Location::file(file), |(l, c)| Location::at(file, l, c));
            Err(Diagnostic::error(format!(
                "the query must be a SELECT, WITH, VALUES or set operation, found `{kind} ...`"
            ))
            .at(loc)
            .hint(
                "tidemark creates and writes the table itself; the model only says what to select",
            ))
        }
    }
}

/// Lowercase unquoted words (identifiers and keywords alike), as DataFusion normalizes them.
fn normalize_tokens(tokens: &mut [TokenWithSpan]) {
    for t in tokens {
        if let Token::Word(w) = &mut t.token
            && w.quote_style.is_none()
            && w.value.chars().any(char::is_uppercase)
        {
            w.value = w.value.to_lowercase();
        }
    }
}

/// `sql` with its unquoted words lower-cased, as model queries are (user SQL that is run as
/// written — custom audits and gates — resolves names the same way). Unchanged if it does not
/// tokenize (the engine then reports it).
pub fn lower_unquoted(sql: &str) -> String {
    let Ok(mut tokens) = Tokenizer::new(&DIALECT, sql).tokenize_with_location() else {
        return sql.to_string();
    };
    normalize_tokens(&mut tokens);
    tokens.iter().map(|t| t.token.to_string()).collect()
}

/// The location of the first token after a top-level `;` that is followed by more SQL.
fn second_statement(tokens: &[TokenWithSpan]) -> Option<(u64, u64)> {
    let mut seen_semi = false;
    let mut seen_code = false;
    for t in tokens {
        match &t.token {
            Token::Whitespace(_) | Token::EOF => {}
            Token::SemiColon => seen_semi = seen_code,
            _ if seen_semi => return Some((t.span.start.line, t.span.start.column)),
            _ => seen_code = true,
        }
    }
    None
}

fn first_token_location(body: &str) -> Option<(u64, u64)> {
    first_code_offset(body).map(|o| crate::error::line_col(body, o))
}

/// Turn a sqlparser error into a located diagnostic. sqlparser appends
/// ` at Line: L, Column: C` to its messages; that suffix becomes the location.
fn parser_error(file: &Path, body: &str, e: ParserError) -> Diagnostic {
    // Errors at the end of the input carry no location: point just after the last code.
    let end = || {
        let trimmed = body.trim_end_matches(|c: char| c.is_whitespace() || c == ';');
        let (l, c) = crate::error::line_col(body, trimmed.len());
        Location::at(file, l, c)
    };
    let msg = match e {
        ParserError::TokenizerError(m) | ParserError::ParserError(m) => m,
        ParserError::RecursionLimitExceeded => {
            return Diagnostic::error("SQL syntax error: the query is nested too deeply")
                .at(Location::file(file))
                .hint("split the query into several models");
        }
    };
    let (text, loc) = match msg.rfind(" at Line: ") {
        Some(i) => {
            let tail = &msg[i + " at Line: ".len()..];
            let mut nums = tail
                .split(", Column: ")
                .map(|s| s.trim().parse::<u64>().ok());
            match (nums.next().flatten(), nums.next().flatten()) {
                (Some(l), Some(c)) => (msg[..i].to_string(), Location::at(file, l, c)),
                _ => (msg.clone(), end()),
            }
        }
        None => (msg.clone(), end()),
    };
    let mut text = text.replace("sql parser error: ", "");
    // The tokens were lower-cased for DataFusion: show the word as written.
    if let Some(written) = word_at(body, loc.line, loc.column) {
        let lower = written.to_lowercase();
        if lower != written {
            text = text.replace(&format!("found: {lower}"), &format!("found: {written}"));
        }
    }
    let d = Diagnostic::error("SQL syntax error")
        .at(loc)
        .caused_by(lower_first(&text));
    if text.contains("an SQL statement") {
        d.hint("after the MODEL header a model file holds one query (SELECT, WITH or VALUES)")
    } else {
        d
    }
}

/// The identifier-like word starting at 1-based `line`, `column` of `text`.
fn word_at(text: &str, line: u64, column: u64) -> Option<&str> {
    let l = text
        .lines()
        .nth(usize::try_from(line).ok()?.checked_sub(1)?)?;
    let start = l
        .char_indices()
        .nth(usize::try_from(column).ok()?.checked_sub(1)?)
        .map(|(i, _)| i)?;
    let rest = &l[start..];
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

/// A query wrapped as SQLMesh writes Jinja queries (`JINJA_QUERY_BEGIN; … JINJA_END;`): the
/// wrapper blanked out (positions kept) when the query holds no Jinja; an error at the first
/// Jinja tag otherwise. Other bodies are returned as they are.
pub fn unwrap_jinja(file: &Path, body: &str) -> Result<String, Diagnostic> {
    const BEGIN: &str = "jinja_query_begin";
    const END: &str = "jinja_end";
    let Some(start) = first_code_offset(body) else {
        return Ok(body.to_string());
    };
    let is_begin = body[start..]
        .get(..BEGIN.len())
        .is_some_and(|w| w.eq_ignore_ascii_case(BEGIN))
        && !body[start + BEGIN.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_');
    if !is_begin {
        return Ok(body.to_string());
    }
    let lower = body.to_ascii_lowercase();
    let Some(end) = lower.rfind(END).filter(|e| *e > start) else {
        let (l, c) = crate::error::line_col(body, start);
        return Err(
            Diagnostic::error("`JINJA_QUERY_BEGIN` without its `JINJA_END`")
                .at(Location::at(file, l, c))
                .hint("close the query with `JINJA_END;`"),
        );
    };
    if let Some(tag) = ["{{", "{%", "{#"]
        .iter()
        .filter_map(|t| body[start..end].find(t))
        .min()
    {
        let (l, c) = crate::error::line_col(body, start + tag);
        return Err(Diagnostic::error("Jinja is not supported")
            .at(Location::at(file, l, c))
            .hint("write the query in SQL, with tidemark's macros (`@start_ds`, `@end_ds`, ...) instead of Jinja"));
    }
    // Blank `JINJA_QUERY_BEGIN` (and its `;`) and `JINJA_END` (and its `;`).
    let tag = |from: usize, len: usize| {
        let mut to = from + len;
        let after = body[to..].trim_start();
        if after.starts_with(';') {
            to = body.len() - after.len() + 1;
        }
        from..to
    };
    Ok(blanked(
        body,
        &[tag(start, BEGIN.len()), tag(end, END.len())],
    ))
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// The canonical one-line form of a parsed query (the fingerprint input).
pub fn canonical(query: &Query) -> String {
    query.to_string()
}

/// The canonical form pretty-printed over several lines (for diffs and `render`).
pub fn pretty(query: &Query) -> String {
    format!("{query:#}")
}

/// `sql` (a query in `dialect`) with every table reference that `map` knows renamed to the
/// single identifier it returns (an engine's name for a pinned input); references keep their
/// old table part as alias. In Spark SQL, identifiers tidemark quoted the standard way (the
/// CTEs of inlined EMBEDDED models) are quoted with backticks, as Spark reads `"…"` as a
/// string.
pub fn rename_tables(
    sql: &str,
    dialect: Dialect,
    map: &dyn Fn(&str) -> Option<String>,
) -> Result<String, Diagnostic> {
    let mut query = parse_query(Path::new("<batch>"), sql, dialect)?;
    if dialect == Dialect::Spark {
        rewrite::backtick_quotes(&mut query);
    }
    replace_tables(&mut query, &|name| {
        map(name).map(|n| {
            datafusion::sql::sqlparser::ast::ObjectName::from(vec![
                datafusion::sql::sqlparser::ast::Ident::new(n),
            ])
        })
    });
    Ok(query.to_string())
}

/// Parse a standalone SQL expression (e.g. an audit argument) into its canonical text.
pub fn canonical_expr(text: &str) -> Result<String, String> {
    parse_expr(text, Dialect::DataFusion).map(|e| e.to_string())
}

/// Parse exactly one SQL expression of `dialect` (unquoted words lower-cased, as in queries).
pub fn parse_expr(text: &str, dialect: Dialect) -> Result<Expr, String> {
    let mut tokens = Tokenizer::new(dialect.parser(), text)
        .tokenize_with_location()
        .map_err(|e| e.message)?;
    normalize_tokens(&mut tokens);
    let mut parser = Parser::new(dialect.parser()).with_tokens_with_locations(tokens);
    let expr = parser
        .parse_expr()
        .map_err(|e| format!("`{text}` is not a SQL expression: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err(format!("`{text}` is not a single SQL expression"));
    }
    Ok(expr)
}

/// Validate and normalize a SQL type name (`bigint` → `BIGINT`).
pub fn parse_data_type(s: &str) -> Result<String, String> {
    let mut parser = Parser::new(&DIALECT)
        .try_with_sql(s)
        .map_err(|e| e.to_string())?;
    let ty = parser
        .parse_data_type()
        .map_err(|_| format!("`{s}` is not a SQL type"))?;
    if parser.peek_token().token != Token::EOF {
        return Err(format!("`{s}` is not a SQL type"));
    }
    // Any other word parses as a custom type name; the engines would refuse it at apply.
    if matches!(ty, datafusion::sql::sqlparser::ast::DataType::Custom(..)) {
        return Err(format!(
            "`{s}` is not a SQL type (use BIGINT, INT, DOUBLE, DECIMAL(p, s), VARCHAR, BOOLEAN, DATE, TIMESTAMP, ...)"
        ));
    }
    Ok(ty.to_string())
}

/// The byte offset of the `;` ending the statement that starts at `from` (outside quotes and
/// comments), or the end of the text.
pub fn statement_end(text: &str, from: usize) -> usize {
    let b = text.as_bytes();
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => i = skip_quoted(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i = text[i + 2..].find("*/").map_or(b.len(), |e| i + 2 + e + 2);
            }
            b';' => return i,
            _ => i += 1,
        }
    }
    b.len()
}

/// `text` with the byte ranges `ranges` (on character boundaries) blanked to spaces, line
/// breaks kept: the same length and lines, so offsets and locations stay the file's.
pub fn blanked(text: &str, ranges: &[std::ops::Range<usize>]) -> String {
    let mut out = text.as_bytes().to_vec();
    for r in ranges {
        let r = r.start.min(out.len())..r.end.min(out.len());
        for b in &mut out[r] {
            if *b != b'\n' && *b != b'\r' {
                *b = b' ';
            }
        }
    }
    // Whole characters were blanked, so this is UTF-8; lossy only if a range split one.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The byte offset of the first of a model file's inline audits — a statement that starts with
/// `AUDIT (` (SQLMesh's inline audits, after the query, or the whole body of a SEED) — if any.
pub fn inline_audits_at(body: &str) -> Option<usize> {
    let mut pos = first_code_offset(body)?;
    loop {
        let rest = &body[pos..];
        let is_audit = rest
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case("audit"))
            && rest[5..].trim_start().starts_with('(');
        if is_audit {
            return Some(pos);
        }
        let end = statement_end(body, pos);
        pos = first_code_offset(body.get(end + 1..)?)? + end + 1;
    }
}

/// Past the quoted run starting at byte `i` of `b` (a doubled quote stays inside).
pub fn skip_quoted(b: &[u8], i: usize) -> usize {
    let q = b[i];
    let mut j = i + 1;
    while j < b.len() {
        if b[j] == q {
            if b.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    b.len()
}

/// Byte offset of the first character that is not whitespace or inside a comment.
pub fn first_code_offset(text: &str) -> Option<usize> {
    let i = skip_trivia(text, 0).unwrap_or_else(|unterminated| unterminated);
    (i < text.len()).then_some(i)
}

/// The offset of the first byte from `i` on that is not whitespace or inside a comment; an
/// unterminated `/*` comment is `Err(its offset)`.
pub(crate) fn skip_trivia(text: &str, mut i: usize) -> Result<usize, usize> {
    let bytes = text.as_bytes();
    while i < bytes.len() {
        match bytes[i] {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => i += 1,
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                i = text[i..].find('\n').map_or(bytes.len(), |k| i + k);
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => match text[i + 2..].find("*/") {
                Some(k) => i += 2 + k + 2,
                None => return Err(i),
            },
            _ => break,
        }
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(sql: &str) -> Box<Query> {
        parse_query(Path::new("m.sql"), sql, crate::sql::Dialect::DataFusion).unwrap()
    }

    fn err(sql: &str) -> String {
        parse_query(Path::new("m.sql"), sql, crate::sql::Dialect::DataFusion)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn formatting_does_not_change_canonical_form() {
        let a = canonical(&q(
            "SELECT a, SUM(b) AS total FROM s.t WHERE c > 1 GROUP BY a",
        ));
        let b = canonical(&q(
            "select A,\n  sum( b )   as TOTAL -- comment\nfrom S.T /* x */ where c>1 group by a;",
        ));
        assert_eq!(a, b);
        assert_ne!(
            a,
            canonical(&q(
                "SELECT a, SUM(b) AS total FROM s.t WHERE c > 2 GROUP BY a"
            ))
        );
        // Quoted identifiers and strings keep their case.
        assert_ne!(
            canonical(&q("SELECT \"A\" FROM t")),
            canonical(&q("SELECT \"a\" FROM t"))
        );
        assert_ne!(
            canonical(&q("SELECT 'A' FROM t")),
            canonical(&q("SELECT 'a' FROM t"))
        );
    }

    #[test]
    fn syntax_errors_are_located() {
        // sqlparser (like DataFusion) accepts `FROM where` with `where` as a table name, so the
        // error case is an expression cut short.
        assert!(
            parse_query(
                Path::new("m.sql"),
                "\n\nSELECT a FROM WHERE",
                crate::sql::Dialect::DataFusion
            )
            .is_ok()
        );
        let e = err("\n\nSELECT a FROM t WHERE");
        assert!(e.contains("m.sql:3:"), "{e}");
        assert!(e.starts_with("error: SQL syntax error\n"), "{e}");
        assert!(e.contains("Caused by: expected"), "{e}");
        let e = err("SELECT 'abc");
        assert!(e.contains("m.sql:1:8"), "{e}");
    }

    #[test]
    fn one_select_only() {
        assert!(err("SELECT 1; SELECT 2").contains("m.sql:1:11"));
        assert!(err("DROP TABLE x").contains("must be a SELECT"));
        assert!(err("   -- nothing\n").contains("has no query"));
        assert!(
            parse_query(
                Path::new("m.sql"),
                "SELECT 1;",
                crate::sql::Dialect::DataFusion
            )
            .is_ok()
        );
    }

    #[test]
    fn data_types() {
        assert_eq!(parse_data_type("bigint").unwrap(), "BIGINT");
        assert_eq!(parse_data_type("decimal(10, 2)").unwrap(), "DECIMAL(10,2)");
        assert!(parse_data_type("not a type").is_err());
    }

    #[test]
    fn spark_sql_parses_in_the_spark_dialect_with_its_references_and_canonical_form() {
        let sql = "SELECT d AS ds, `Amount` , transform(xs, x -> x + 1) AS ys\n\
                   FROM (SELECT explode(sequence(@start_ds, @end_ds, INTERVAL 1 DAY)) AS d) AS g\n\
                   JOIN raw.`events` AS e ON e.ds = g.d";
        let q = parse_query(Path::new("m.sql"), sql, Dialect::Spark).unwrap();
        let refs: Vec<String> = crate::sql::analyze(&q)
            .tables
            .iter()
            .map(|r| r.name.clone())
            .collect();
        assert_eq!(refs, ["raw.events"]);
        // Macro variables are read as in DataFusion SQL (the Databricks dialect alone does not
        // let an identifier start with `@`).
        let macros: Vec<String> = crate::sql::analyze(&q)
            .macros
            .iter()
            .map(|m| m.name.clone())
            .collect();
        assert_eq!(macros, ["start_ds", "end_ds"]);
        // Reformatting and keyword case never change the canonical form.
        let again = parse_query(
            Path::new("m.sql"),
            &sql.replace('\n', "  ").replace("SELECT", "select"),
            Dialect::Spark,
        )
        .unwrap();
        assert_eq!(canonical(&q), canonical(&again));
        assert!(canonical(&q).contains("x -> x + 1"), "{}", canonical(&q));
    }

    #[test]
    fn renaming_for_spark_names_inputs_and_quotes_with_backticks() {
        let sql = r#"WITH "ledger.settled" AS (SELECT * FROM raw.payments) SELECT s.x FROM "ledger.settled" AS "s" JOIN ledger.accounts AS a ON a.id = s.id"#;
        let out = rename_tables(sql, Dialect::Spark, &|n| match n {
            "raw.payments" => Some("__tm_0_raw_payments".into()),
            "ledger.accounts" => Some("__tm_1_ledger_accounts".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            out,
            "WITH `ledger.settled` AS (SELECT * FROM __tm_0_raw_payments AS payments) SELECT s.x FROM `ledger.settled` AS `s` JOIN __tm_1_ledger_accounts AS a ON a.id = s.id"
        );
    }
}
