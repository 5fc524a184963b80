//! Header properties: which ones tidemark reads, which SQLMesh ones it refuses, and each one's
//! typed value.
//!
//! Invariant: every property is read once, into a typed field of the builder; an unknown or
//! unsupported one is an error at its `line:col` with a hint naming what is accepted.

use super::Builder;
use crate::error::{Diagnostic, did_you_mean};
use crate::interval::{Schedule, parse_instant};
use crate::names::ModelName;
use crate::project::header::{self, Property, Src, Token};

/// Header properties tidemark understands.
pub const PROPERTIES: [&str; 20] = [
    "name",
    "kind",
    "cron",
    "start",
    "end",
    "owner",
    "description",
    "column_descriptions",
    "tags",
    "grain",
    "grains",
    "audits",
    "gates",
    "partitioned_by",
    "forward_only",
    "allow_partials",
    "depends_on",
    "enabled",
    "dialect",
    "columns",
];

/// SQLMesh properties that only describe (documentation, physical layout on other engines,
/// linting, grants): accepted and kept as the model's metadata, as written.
pub const DESCRIPTIVE: [&str; 16] = [
    "references",
    "gateway",
    "clustered_by",
    "ignored_rules",
    "physical_properties",
    "virtual_properties",
    "session_properties",
    "table_properties",
    "table_format",
    "storage_format",
    "project",
    "grants",
    "grants_target_layer",
    "optimize_query",
    "formatting",
    "validate_query",
];

/// SQLMesh properties whose behaviour tidemark does not have: a warning naming the property
/// and what tidemark does instead; the model loads.
const WITHOUT_BEHAVIOUR: [(&str, &str); 6] = [
    (
        "signals",
        "tidemark computes an interval once it is complete by the cron, without readiness checks",
    ),
    ("cron_tz", "schedules run in UTC"),
    ("interval_unit", "the interval unit follows the cron"),
    ("retention", "nothing is expired by model"),
    (
        "physical_version",
        "versions follow the model's fingerprint",
    ),
    ("on_virtual_update", "nothing runs after a promotion"),
];

/// SQLMesh properties that change what a model is and that tidemark cannot honour: an error.
const REFUSED: [(&str, &str); 1] = [(
    "blueprints",
    "write one model file per blueprint (tidemark does not expand templates)",
)];

/// One `name TYPE` item of `columns (...)`: the name as an identifier, the type validated by
/// the SQL parser and kept in its canonical spelling.
fn column(src: Src<'_>, item: &[Token]) -> Result<(String, String), Diagnostic> {
    use datafusion::sql::sqlparser::ast::DataType;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let expects = |at: usize| src.err(at, "`columns` expects `name TYPE` items, e.g. `id BIGINT`");
    let Some(first) = item.first() else {
        return Err(expects(0));
    };
    let name = match &first.tok {
        header::Tok::Word(w) => w.to_ascii_lowercase(),
        header::Tok::Quoted(q) => q.clone(),
        _ => return Err(expects(first.start)),
    };
    if item.len() < 2 {
        return Err(expects(first.start));
    }
    let text = src.text_of(&item[1..]);
    let ty = Parser::new(&GenericDialect {})
        .try_with_sql(text)
        .and_then(|mut p| {
            let t = p.parse_data_type()?;
            p.expect_token(&datafusion::sql::sqlparser::tokenizer::Token::EOF)?;
            Ok(t)
        })
        .map_err(|e| {
            src.err(
                item[1].start,
                format!("`{text}` is not a SQL type for column `{name}`: {e}"),
            )
        })?;
    if matches!(ty, DataType::Custom(..)) {
        return Err(src
            .err(
                item[1].start,
                format!("`{text}` is not a SQL type (column `{name}`)"),
            )
            .hint("use a SQL type such as BIGINT, INT, DOUBLE, DECIMAL(p, s), VARCHAR, BOOLEAN, DATE or TIMESTAMP"));
    }
    Ok((name, ty.to_string()))
}

impl Builder<'_> {
    /// A string value, or a project variable standing for one (`@name` or `@VAR('name')`, as
    /// SQLMesh allows in header values).
    fn text_value(&self, key: &str, v: &[Token]) -> Result<String, Diagnostic> {
        let src = self.src;
        let name = match v {
            [
                Token {
                    tok: header::Tok::Word(w),
                    ..
                },
            ] if w.starts_with('@') => Some(w[1..].to_lowercase()),
            [
                Token {
                    tok: header::Tok::Word(w),
                    ..
                },
                Token {
                    tok: header::Tok::LParen,
                    ..
                },
                Token {
                    tok: header::Tok::Str(n),
                    ..
                },
                Token {
                    tok: header::Tok::RParen,
                    ..
                },
            ] if w.eq_ignore_ascii_case("@var") => Some(n.to_lowercase()),
            _ => None,
        };
        // `DATE('2024-01-01')`, `TIMESTAMP('…')` and typed literals (`DATE '2024-01-01'`), as
        // SQLMesh accepts them for `start` and `end`: their string.
        let typed =
            |w: &str| ["date", "timestamp", "datetime"].contains(&w.to_lowercase().as_str());
        match v {
            [
                Token {
                    tok: header::Tok::Word(w),
                    ..
                },
                Token {
                    tok: header::Tok::LParen,
                    ..
                },
                Token {
                    tok: header::Tok::Str(s),
                    ..
                },
                Token {
                    tok: header::Tok::RParen,
                    ..
                },
            ]
            | [
                Token {
                    tok: header::Tok::Word(w),
                    ..
                },
                Token {
                    tok: header::Tok::Str(s),
                    ..
                },
            ] if typed(w) && (key == "start" || key == "end") => return Ok(s.clone()),
            _ => {}
        }
        let Some(name) = name else {
            return header::string(src, key, v);
        };
        use crate::sql::Variable;
        match self.defaults.variables.get(&name) {
            Some(Variable::Text(t)) => Ok(t.clone()),
            Some(Variable::Integer(n)) => Ok(n.to_string()),
            Some(Variable::Float(f)) => Ok(f.clone()),
            Some(Variable::Boolean(b)) => Ok(b.to_string()),
            None => Err(src
                .err(v[0].start, format!("`{key}` names the variable `{name}`, which [variables] in tidemark.toml does not define"))
                .hint("define it under [variables], or write the value")),
        }
    }

    pub(super) fn property(&mut self, p: &Property) -> Result<(), Diagnostic> {
        let src = self.src;
        let v = p.value.as_slice();
        let key = p.key.as_str();
        match key {
            "name" => {
                let parts = header::ident_parts(src, key, v)?;
                let name = ModelName::from_parts(&parts, true).map_err(|r| {
                    src.err(v[0].start, format!("invalid model name: {r}"))
                        .hint("model names are `schema.table` made of letters, digits and `_`")
                })?;
                self.name = Some(name);
            }
            "kind" => {
                self.kind_at = v[0].start;
                self.kind_failed = true;
                self.kind = Some(self.kind(v)?);
                self.kind_failed = false;
            }
            "cron" => {
                let text = self.text_value(key, v)?;
                self.schedule = Some(
                    Schedule::parse(&text)
                        .map_err(|r| src.err(v[0].start, format!("invalid cron: {r}")))?,
                );
            }
            "start" | "end" => {
                let text = match v {
                    [
                        Token {
                            tok: header::Tok::Number(n),
                            ..
                        },
                    ] => n.clone(),
                    _ => self.text_value(key, v)?,
                };
                let at = match parse_instant(&text) {
                    Ok(i) => i.at,
                    Err(r) => {
                        let now = self.defaults.now.unwrap_or_else(chrono::Utc::now);
                        match crate::interval::parse_relative(&text, now) {
                            // Kept as written for the fingerprint: the instant moves daily.
                            Some(t) if key == "start" => {
                                self.start_text = Some(text.clone());
                                t
                            }
                            _ => {
                                return Err(src
                                    .err(v[0].start, format!("invalid {key}: {r}"))
                                    .hint("a date (`'2024-01-01'`), a timestamp, epoch milliseconds, or for `start` a relative time such as `'1 year ago'`"));
                            }
                        }
                    }
                };
                if key == "start" {
                    self.start = Some((at, v[0].start));
                } else {
                    // A date end means through the end of that day; kept as written here and
                    // interpreted as inclusive by the planner.
                    self.end = Some((at, v[0].start));
                }
            }
            "owner" => self.owner = Some(self.text_value(key, v)?),
            "description" => self.description = Some(self.text_value(key, v)?),
            "column_descriptions" => {
                if !header::is_wrapped(v) {
                    return Err(src.err(
                        v[0].start,
                        "`column_descriptions` expects a list: (column = 'text', ...)",
                    ));
                }
                for item in header::list(v) {
                    let (col, _, value) = header::key_value(src, item)?;
                    let text = header::string(src, &col, value)?;
                    self.column_descriptions.insert(col, text);
                }
            }
            "columns" => {
                if !header::is_wrapped(v) {
                    return Err(src.err(v[0].start, "`columns` expects a list: (name TYPE, ...)"));
                }
                for item in header::list(v) {
                    let col = column(src, item)?;
                    if self.columns.iter().any(|(c, _)| *c == col.0) {
                        return Err(src.err(
                            item[0].start,
                            format!("column `{}` is declared twice", col.0),
                        ));
                    }
                    self.columns.push(col);
                }
            }
            "tags" => {
                for item in header::list(v) {
                    let tag = match item {
                        [
                            Token {
                                tok: header::Tok::Str(s),
                                ..
                            },
                        ] => s.clone(),
                        _ => header::ident_path(src, key, item)?,
                    };
                    self.tags.insert(tag);
                }
            }
            "grain" | "grains" => {
                for item in header::list(v) {
                    self.grain.push(header::ident_path(src, key, item)?);
                }
            }
            "partitioned_by" => {
                // Decision: tables are partitioned by column values (Delta partition columns);
                // a partition expression (`DAY(ts)`, `DATE_TRUNC('day', ts)`) is kept as
                // metadata with a warning, and the table is not partitioned by it.
                let mut expressions = Vec::new();
                for item in header::list(v) {
                    if item.len() > 1 && item.iter().any(|t| matches!(t.tok, header::Tok::LParen)) {
                        expressions.push((item[0].start, src.text_of(item).to_string()));
                        continue;
                    }
                    self.partitioned_by
                        .push(header::ident_path(src, key, item)?);
                }
                for (at, text) in &expressions {
                    self.warnings.push(
                        src.err(*at, format!("partition expression `{text}` is ignored: tidemark partitions tables by column values"))
                            .hint("select the value as a column (`CAST(ts AS DATE) AS ds`) and write `partitioned_by ds`")
                            .into_warning(),
                    );
                }
                if !expressions.is_empty() {
                    let all: Vec<String> = expressions.into_iter().map(|(_, t)| t).collect();
                    self.metadata
                        .insert("partitioned_by_expression".to_string(), all.join(", "));
                }
            }
            "audits" => {
                self.audits_at = v[0].start;
                for item in header::list(v) {
                    let audit = self.audit(item)?;
                    self.audits.push(audit);
                    self.audit_locations.push(src.loc(item[0].start));
                }
            }
            "gates" => self.gates = Some(super::gates::parse_list(src, self.root, v)?),
            "forward_only" => self.forward_only = header::boolean(src, key, v)?,
            "allow_partials" => self.allow_partials = header::boolean(src, key, v)?,
            "enabled" => self.enabled = header::boolean(src, key, v)?,
            "depends_on" => {
                for item in header::list(v) {
                    let text = header::ident_path(src, key, item)?;
                    let name = ModelName::parse(&text).map_err(|r| {
                        src.err(item[0].start, format!("invalid name in depends_on: {r}"))
                    })?;
                    self.depends_on.push((name, src.loc(item[0].start)));
                }
            }
            "dialect" => {
                let text = header::string(src, key, v)?;
                self.declared_dialect =
                    Some(crate::sql::declared_dialect(&text).map_err(|hint| {
                        src.err(v[0].start, format!("unknown dialect `{text}`"))
                            .hint(hint)
                    })?);
            }
            "stamp" => self.stamp = Some(header::string(src, key, v)?),
            k if DESCRIPTIVE.contains(&k) => {
                self.metadata
                    .insert(k.to_string(), src.text_of(v).to_string());
            }
            k if WITHOUT_BEHAVIOUR.iter().any(|(w, _)| *w == k) => {
                let instead = WITHOUT_BEHAVIOUR
                    .iter()
                    .find(|(w, _)| *w == k)
                    .map_or("", |(_, i)| i);
                self.warnings.push(
                    src.err(
                        p.key_start,
                        format!("`{k}` is not supported and is ignored: {instead}"),
                    )
                    .into_warning(),
                );
                self.metadata
                    .insert(k.to_string(), src.text_of(v).to_string());
            }
            k if REFUSED.iter().any(|(r, _)| *r == k) => {
                let hint = REFUSED.iter().find(|(r, _)| *r == k).map_or("", |(_, h)| h);
                return Err(src
                    .err(p.key_start, format!("`{k}` is not supported"))
                    .hint(hint));
            }
            other => {
                let hint = did_you_mean(other, PROPERTIES.iter().copied())
                    .unwrap_or_else(|| format!("known properties: {}", PROPERTIES.join(", ")));
                return Err(src
                    .err(
                        p.key_start,
                        format!("unknown property `{other}` in the MODEL header"),
                    )
                    .hint(hint));
            }
        }
        Ok(())
    }
}
