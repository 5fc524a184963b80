//! Audit files: `audits/*.sql`, each holding one or more SQLMesh-style audits —
//! `AUDIT (name x, defaults (k = v), blocking false);` followed by the query returning the
//! offending rows — or, tidemark's original form, a bare query named after its file.
//!
//! Invariants:
//! - Every audit is parsed when the project loads: a header or query that does not parse is an
//!   error at its `file:line:col`, never discovered after a batch was computed.
//! - An audit's parameters are the `@name`s its query uses (other than `@this_model` and the
//!   time macros); each must have a default or be given by every model that calls it, which
//!   the project load checks.
//! - Audit names are unique across files; output is sorted by name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Diagnostic, Location};
use crate::project::header::{self, Src, Tok};
use crate::sql;

/// One audit defined in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditDef {
    /// Lower-cased name.
    pub name: String,
    /// The file, relative to the project root.
    pub file: PathBuf,
    /// Where its header (or query) starts.
    pub location: Location,
    /// The query, as written (without its `;`).
    pub sql: String,
    /// Default argument values, canonical SQL.
    pub defaults: BTreeMap<String, String>,
    /// `blocking false` in the header: failures warn.
    pub blocking: bool,
    /// `@name`s the query uses.
    pub params: BTreeSet<String>,
    /// The query parsed (an audit whose query did not is reported once, where it is defined,
    /// and not again by every model naming it).
    pub parsed: bool,
}

/// Macros an audit may use that are not arguments.
const NOT_PARAMS: [&str; 10] = [
    "this_model",
    "start_ds",
    "end_ds",
    "start_ts",
    "end_ts",
    "start_date",
    "end_date",
    "start_dt",
    "end_dt",
    "execution_ds",
];

/// Every audit under `root/audits` (none when the directory is absent) and the inline audits of
/// `model_files` (`AUDIT (...)` blocks after a model's query, SQLMesh's inline audits; they share
/// one namespace with the audit files), and the problems found.
pub fn load_all(
    root: &Path,
    dialect: sql::Dialect,
    model_files: &[(PathBuf, String)],
) -> (BTreeMap<String, AuditDef>, Vec<Diagnostic>) {
    let mut out: BTreeMap<String, AuditDef> = BTreeMap::new();
    let mut errors = Vec::new();
    let mut files = super::read_files(root, "audits", &["sql"], &mut errors);
    for (rel, text) in model_files {
        // The header and query blanked, so that locations stay file locations.
        if !text.to_ascii_lowercase().contains("audit") {
            continue;
        }
        if let Ok(split) = header::split(Src { file: rel, text })
            && let Some(at) = sql::inline_audits_at(&split.body)
        {
            files.push((
                rel.clone(),
                sql::blanked(text, std::slice::from_ref(&(0..at))),
            ));
        }
    }
    for (rel, text) in files {
        match parse_file(&rel, &text, dialect) {
            Ok((defs, problems)) => {
                errors.extend(problems);
                for d in defs {
                    if let Some(first) = out.get(&d.name) {
                        errors.push(
                            Diagnostic::error(format!("audit `{}` is defined twice", d.name))
                                .at(d.location.clone())
                                .note(format!("first defined at {}", first.location)),
                        );
                    } else {
                        out.insert(d.name.clone(), d);
                    }
                }
            }
            Err(d) => errors.push(d),
        }
    }
    (out, errors)
}

/// The audits of one file, and the queries among them that do not parse (a header that does
/// not is an error for the whole file).
pub fn parse_file(
    file: &Path,
    text: &str,
    dialect: sql::Dialect,
) -> Result<(Vec<AuditDef>, Vec<Diagnostic>), Diagnostic> {
    let src = Src { file, text };
    let mut defs = Vec::new();
    let mut problems = Vec::new();
    let mut pos = 0;
    while let Some(at) =
        sql::first_code_offset(text.get(pos..).unwrap_or_default()).map(|i| i + pos)
    {
        let is_header = text[at..]
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case("audit"))
            && text[at + 5..].trim_start().starts_with('(');
        if !is_header {
            if defs.is_empty() {
                // A bare query: the file is one audit named after it.
                let name = file
                    .file_stem()
                    .map(|s| s.to_string_lossy().to_ascii_lowercase())
                    .unwrap_or_default();
                let end = sql::statement_end(text, at);
                defs.push(def(
                    src,
                    name,
                    at,
                    at,
                    end,
                    BTreeMap::new(),
                    true,
                    dialect,
                    &mut problems,
                ));
                pos = end;
                if sql::first_code_offset(text.get(pos + 1..).unwrap_or_default()).is_some() {
                    return Err(src
                        .err(pos, "an audit file holds one bare query, or `AUDIT (...)` blocks each followed by its query")
                        .hint("start each audit with `AUDIT (name ...);`"));
                }
                break;
            }
            return Err(src
                .err(at, "expected `AUDIT (...)` here: each audit of a file starts with its header")
                .hint("end the previous audit's query with `;` and start the next with `AUDIT (name ...);`"));
        }
        let tokens = header::lex_block(src, at)?;
        let close = header::matching_close(&tokens, 1).ok_or_else(|| {
            src.err(
                tokens.get(1).map_or(at, |t| t.start),
                "the AUDIT header's `(` is never closed",
            )
        })?;
        let mut header_end = tokens[close].end;
        if let Some(t) = tokens.get(close + 1).filter(|t| t.tok == Tok::Semi) {
            header_end = t.end;
        }
        let mut name = None;
        let mut defaults = BTreeMap::new();
        let mut blocking = true;
        for p in header::properties_of(src, &tokens[2..close])? {
            let v = p.value.as_slice();
            match p.key.as_str() {
                "name" => name = Some(header::ident_path(src, "name", v)?.to_ascii_lowercase()),
                "defaults" => {
                    for item in header::list(v) {
                        let (k, _, value) = header::key_value(src, item)?;
                        let canonical = sql::canonical_expr(src.text_of(value)).map_err(|r| {
                            src.err(value[0].start, format!("invalid default of `{k}`: {r}"))
                        })?;
                        defaults.insert(k, canonical);
                    }
                }
                "blocking" => blocking = header::boolean(src, "blocking", v)?,
                "standalone" if header::boolean(src, "standalone", v)? => {
                    return Err(src
                        .err(p.key_start, "standalone audits are not supported: an audit runs on the batches of the models that name it")
                        .hint("attach it to a model with `audits (NAME)`"));
                }
                "dialect" | "description" | "owner" | "tags" | "standalone" | "cron" => {}
                other => {
                    return Err(src
                        .err(p.key_start, format!("unknown property `{other}` in the AUDIT header"))
                        .hint("AUDIT takes: name, defaults, blocking, dialect, description, owner, tags"));
                }
            }
        }
        let name = name.ok_or_else(|| {
            src.err(at, "the AUDIT header has no `name`")
                .hint("write `AUDIT (name my_audit);`")
        })?;
        let start =
            sql::first_code_offset(&text[header_end..]).map_or(text.len(), |i| i + header_end);
        if start >= text.len() {
            return Err(src
                .err(at, format!("audit `{name}` has no query"))
                .hint("after the AUDIT header, write the query returning the offending rows"));
        }
        let end = sql::statement_end(text, start);
        defs.push(def(
            src,
            name,
            at,
            start,
            end,
            defaults,
            blocking,
            dialect,
            &mut problems,
        ));
        pos = (end + 1).min(text.len());
    }
    Ok((defs, problems))
}

/// One audit: its query checked by the SQL parser (locations are file locations).
#[allow(clippy::too_many_arguments)]
fn def(
    src: Src<'_>,
    name: String,
    at: usize,
    start: usize,
    end: usize,
    defaults: BTreeMap<String, String>,
    blocking: bool,
    dialect: sql::Dialect,
    problems: &mut Vec<Diagnostic>,
) -> AuditDef {
    let text = src.text;
    let body = sql::blanked(text, &[0..start, end..text.len()]);
    let parsed = match sql::parse_query(src.file, &body, dialect) {
        Ok(_) => true,
        Err(d) => {
            problems.push(Diagnostic {
                message: format!("audit `{name}`: {}", d.message),
                ..d
            });
            false
        }
    };
    let sql = text[start..end].trim().to_string();
    let params = params_of(&sql);
    AuditDef {
        name,
        file: src.file.to_path_buf(),
        location: src.loc(at),
        sql,
        defaults,
        blocking,
        params,
        parsed,
    }
}

/// The `@name`s of `sql` that are arguments, outside quotes and comments.
fn params_of(sql: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\'' | b'"' | b'`' => i = sql::skip_quoted(b, i),
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'@' => {
                let s = i + 1;
                let mut e = s;
                while e < b.len() && (b[e].is_ascii_alphanumeric() || b[e] == b'_') {
                    e += 1;
                }
                let word = sql[s..e].to_ascii_lowercase();
                if !word.is_empty() && !NOT_PARAMS.contains(&word.as_str()) {
                    out.insert(word);
                }
                i = e;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<AuditDef>, Diagnostic> {
        let (defs, mut problems) =
            parse_file(Path::new("audits/a.sql"), text, sql::Dialect::DataFusion)?;
        match problems.pop() {
            Some(p) => Err(p),
            None => Ok(defs),
        }
    }

    #[test]
    fn several_audits_a_file_with_defaults_and_blocking() {
        let defs = parse(
            "-- checks\nAUDIT (name positive, defaults (col = amount),);\nSELECT * FROM @this_model WHERE @col < 0;\n\n\
             AUDIT (\n  name recent, blocking false\n);\nSELECT * FROM @this_model WHERE ds > @max_ds -- not ';'\n",
        )
        .unwrap();
        assert_eq!(defs.len(), 2);
        assert_eq!(defs[0].name, "positive");
        assert_eq!(
            defs[0].defaults.get("col").map(String::as_str),
            Some("amount")
        );
        assert_eq!(defs[0].params, BTreeSet::from(["col".to_string()]));
        assert!(defs[0].blocking);
        assert_eq!(defs[1].name, "recent");
        assert!(!defs[1].blocking);
        assert_eq!(defs[1].params, BTreeSet::from(["max_ds".to_string()]));
        assert_eq!(defs[1].location.to_string(), "audits/a.sql:5:1");
    }

    #[test]
    fn a_bare_query_is_one_audit_named_after_its_file() {
        let defs = parse("SELECT * FROM @this_model WHERE x IS NULL;\n").unwrap();
        assert_eq!(defs[0].name, "a");
        assert!(defs[0].params.is_empty());
    }

    #[test]
    fn a_query_that_does_not_parse_is_an_error_at_its_line() {
        let e = parse("AUDIT (name bad);\n\nSELECT * FROM t WHERE (a;\n").unwrap_err();
        assert!(e.message.starts_with("audit `bad`"), "{}", e.message);
        assert!(
            e.location
                .as_ref()
                .is_some_and(|l| l.to_string().starts_with("audits/a.sql:3")),
            "{e:?}"
        );
        assert!(parse("AUDIT (name x, oops 1); SELECT 1").is_err());
        assert!(parse("AUDIT (blocking false); SELECT 1").is_err());
    }
}
