//! A model: one `.sql` file turned into validated properties and a parsed query.
//!
//! Invariants:
//! - A [`Model`] only exists when its file produced no error; every error carries the file's
//!   `line:col`, and all errors of a file are reported together where they are independent.
//! - Header values are typed once here; later stages never look at header text again.
//! - Project-wide checks (duplicate names, unknown references, cycles) live in
//!   [`crate::project`] and [`crate::dag`], not here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use datafusion::sql::sqlparser::ast::Query;
use serde::{Deserialize, Serialize};

use super::config::ModelDefaults;
use super::header::{self, Property, Src, Token};
use crate::error::{Diagnostic, Location, did_you_mean};
use crate::interval::{Schedule, parse_instant};
use crate::names::ModelName;
use crate::sql::{self, MacroUse, TableRef};

/// How a model is materialized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Kind {
    /// The whole table is recomputed each time.
    Full,
    /// No data; the query is resolved when read.
    View,
    /// Inlined into consumers as a CTE; never materialized.
    Embedded,
    /// Partitioned by time; computed interval by interval.
    IncrementalByTimeRange {
        /// The column holding each row's time.
        time_column: String,
        /// Format of a string time column (strftime), if it is a string.
        format: Option<String>,
        /// Most intervals per batch (default 1 interval... per batch is decided by the planner).
        batch_size: Option<u32>,
        /// Most batches of this model run at once.
        batch_concurrency: Option<u32>,
        /// Intervals before each missing one that are recomputed too.
        lookback: u32,
    },
    /// Merged on a key, batch by batch, in order.
    IncrementalByUniqueKey {
        /// The key columns.
        unique_key: Vec<String>,
        /// Most intervals per batch.
        batch_size: Option<u32>,
    },
    /// Loaded from a CSV file.
    Seed {
        /// The CSV, relative to the project root.
        path: PathBuf,
    },
}

impl Kind {
    /// The kind's name as written in headers.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::Full => "FULL",
            Kind::View => "VIEW",
            Kind::Embedded => "EMBEDDED",
            Kind::IncrementalByTimeRange { .. } => "INCREMENTAL_BY_TIME_RANGE",
            Kind::IncrementalByUniqueKey { .. } => "INCREMENTAL_BY_UNIQUE_KEY",
            Kind::Seed { .. } => "SEED",
        }
    }

    /// Is the model computed interval by interval?
    pub fn is_incremental(&self) -> bool {
        matches!(
            self,
            Kind::IncrementalByTimeRange { .. } | Kind::IncrementalByUniqueKey { .. }
        )
    }

    /// Does the model have rows of its own (a physical table)?
    pub fn is_materialized(&self) -> bool {
        !matches!(self, Kind::View | Kind::Embedded)
    }
}

/// The kinds tidemark knows, for hints.
const KINDS: [&str; 6] = [
    "FULL",
    "VIEW",
    "EMBEDDED",
    "INCREMENTAL_BY_TIME_RANGE",
    "INCREMENTAL_BY_UNIQUE_KEY",
    "SEED",
];

/// Header properties tidemark understands.
pub const PROPERTIES: [&str; 19] = [
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
    "partitioned_by",
    "forward_only",
    "allow_partials",
    "depends_on",
    "enabled",
    "dialect",
    "columns",
];

/// SQLMesh properties that tidemark recognises but does not support.
const SQLMESH_ONLY: [&str; 21] = [
    "stamp",
    "interval_unit",
    "physical_properties",
    "virtual_properties",
    "session_properties",
    "table_properties",
    "table_format",
    "storage_format",
    "clustered_by",
    "references",
    "signals",
    "gateway",
    "project",
    "cron_tz",
    "optimize_query",
    "formatting",
    "ignored_rules",
    "grants",
    "retention",
    "physical_version",
    "blueprints",
];

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

/// One audit attached to a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCall {
    /// Audit name (built-in or a file in `audits/`), lowercased.
    pub name: String,
    /// Arguments: name → canonical SQL text of the value.
    pub args: BTreeMap<String, String>,
    /// A failing blocking audit fails the batch; a non-blocking one warns.
    pub blocking: bool,
}

/// Built-in audits and their (required, optional) arguments.
pub const BUILTIN_AUDITS: [(&str, &[&str], &[&str]); 6] = [
    ("not_null", &["columns"], &[]),
    ("unique_values", &["columns"], &[]),
    ("accepted_values", &["column", "is_in"], &[]),
    (
        "accepted_range",
        &["column"],
        &["min_v", "max_v", "inclusive"],
    ),
    ("number_of_rows", &["threshold"], &[]),
    ("forall", &["criteria"], &[]),
];

/// A loaded, validated model.
#[derive(Debug, Clone)]
pub struct Model {
    /// Normalized name.
    pub name: ModelName,
    /// The file, relative to the project root.
    pub file: PathBuf,
    /// Materialization.
    pub kind: Kind,
    /// Schedule (and so the interval unit).
    pub schedule: Schedule,
    /// First instant to compute, if set (here or in the config defaults).
    pub start: Option<DateTime<Utc>>,
    /// Instant after which nothing is computed, if set.
    pub end: Option<DateTime<Utc>>,
    /// Owner.
    pub owner: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Column → description.
    pub column_descriptions: BTreeMap<String, String>,
    /// Declared output columns and their SQL types, in order (`columns (id BIGINT, ...)`).
    pub columns: Vec<(String, String)>,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Columns that identify a row.
    pub grain: Vec<String>,
    /// Audits, in header order.
    pub audits: Vec<AuditCall>,
    /// Extra physical partition columns.
    pub partitioned_by: Vec<String>,
    /// Changes apply only to intervals computed from now on.
    pub forward_only: bool,
    /// Incomplete intervals may be computed.
    pub allow_partials: bool,
    /// Extra dependencies, with where they were declared.
    pub depends_on: Vec<(ModelName, Location)>,
    /// The parsed, normalized query (`None` for seeds).
    pub query: Option<Box<Query>>,
    /// Canonical SQL of the query (empty for seeds).
    pub canonical_sql: String,
    /// Tables the query reads (repeats included), with their locations.
    pub refs: Vec<TableRef>,
    /// Macro variables the query uses.
    pub macros: Vec<MacroUse>,
    /// The seed file's blake3 hash (hex), for seeds.
    pub seed_hash: Option<String>,
    /// Where the header (or the query, when there is no header) starts.
    pub location: Location,
}

/// What reading one file produced.
pub enum Loaded {
    /// A valid model, plus warnings.
    Model(Box<Model>, Vec<Diagnostic>),
    /// A file with `enabled false`: skipped, but its name is remembered for better messages.
    Disabled(Option<ModelName>),
    /// Errors (and warnings).
    Failed(Vec<Diagnostic>),
}

/// Build a model from a file's text. `file` is relative to `root`.
pub fn build(root: &Path, file: &Path, text: &str, defaults: &ModelDefaults) -> Loaded {
    let src = Src { file, text };
    let split = match header::split(src) {
        Ok(s) => s,
        Err(d) => return Loaded::Failed(vec![d]),
    };
    let mut b = Builder::new(src, root, defaults);
    if let Some(props) = &split.properties {
        b.location = src.loc(split.header_start);
        b.properties(props);
    } else if let Some(o) = split.body_start {
        b.location = src.loc(o);
    }
    if !b.enabled {
        return Loaded::Disabled(b.name.clone());
    }
    if split.properties.is_none() && split.body_start.is_none() {
        return Loaded::Failed(vec![
            Diagnostic::error("the model file is empty")
                .at(Location::file(file))
                .hint("write a MODEL (...) header and a SELECT query, or delete the file"),
        ]);
    }
    b.finish(&split.body, split.body_start)
}

struct Builder<'a> {
    src: Src<'a>,
    root: &'a Path,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    location: Location,
    name: Option<ModelName>,
    kind: Option<Kind>,
    kind_at: usize,
    schedule: Option<Schedule>,
    start: Option<(DateTime<Utc>, usize)>,
    end: Option<(DateTime<Utc>, usize)>,
    owner: Option<String>,
    description: Option<String>,
    column_descriptions: BTreeMap<String, String>,
    columns: Vec<(String, String)>,
    tags: BTreeSet<String>,
    grain: Vec<String>,
    audits: Vec<AuditCall>,
    audits_at: usize,
    partitioned_by: Vec<String>,
    forward_only: bool,
    allow_partials: bool,
    enabled: bool,
    depends_on: Vec<(ModelName, Location)>,
    seed_hash: Option<String>,
    /// The `kind` property was given but invalid: kind-dependent checks would only mislead.
    kind_failed: bool,
    defaults: &'a ModelDefaults,
}

impl<'a> Builder<'a> {
    fn new(src: Src<'a>, root: &'a Path, defaults: &'a ModelDefaults) -> Self {
        Builder {
            src,
            root,
            errors: Vec::new(),
            warnings: Vec::new(),
            location: Location::file(src.file),
            name: None,
            kind: None,
            kind_at: 0,
            schedule: None,
            start: None,
            end: None,
            owner: None,
            description: None,
            column_descriptions: BTreeMap::new(),
            columns: Vec::new(),
            tags: BTreeSet::new(),
            grain: Vec::new(),
            audits: Vec::new(),
            audits_at: 0,
            partitioned_by: Vec::new(),
            forward_only: false,
            allow_partials: false,
            enabled: true,
            depends_on: Vec::new(),
            seed_hash: None,
            kind_failed: false,
            defaults,
        }
    }

    fn properties(&mut self, props: &[Property]) {
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for p in props {
            let canonical_key = if p.key == "grains" {
                "grain"
            } else {
                p.key.as_str()
            };
            if let Some(first) = seen.insert(canonical_key, p.key_start) {
                let (l, c) = crate::error::line_col(self.src.text, first);
                self.errors.push(
                    self.src
                        .err(p.key_start, format!("property `{}` is set twice", p.key))
                        .note(format!("first set at line {l}, column {c}")),
                );
                continue;
            }
            if let Err(d) = self.property(p) {
                self.errors.push(d);
            }
        }
    }

    fn property(&mut self, p: &Property) -> Result<(), Diagnostic> {
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
                let text = header::string(src, key, v)?;
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
                    _ => header::string(src, key, v)?,
                };
                let at = parse_instant(&text)
                    .map_err(|r| src.err(v[0].start, format!("invalid {key}: {r}")))?
                    .at;
                if key == "start" {
                    self.start = Some((at, v[0].start));
                } else {
                    // A date end means through the end of that day; kept as written here and
                    // interpreted as inclusive by the planner.
                    self.end = Some((at, v[0].start));
                }
            }
            "owner" => self.owner = Some(header::string(src, key, v)?),
            "description" => self.description = Some(header::string(src, key, v)?),
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
                for item in header::list(v) {
                    self.partitioned_by
                        .push(header::ident_path(src, key, item)?);
                }
            }
            "audits" => {
                self.audits_at = v[0].start;
                for item in header::list(v) {
                    let audit = self.audit(item)?;
                    self.audits.push(audit);
                }
            }
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
                return Err(src
                    .err(p.key_start, "`dialect` is not supported: tidemark models are written in DataFusion's SQL")
                    .hint("remove the `dialect` property: every model is parsed as DataFusion SQL"));
            }
            k if SQLMESH_ONLY.contains(&k) => {
                return Err(src
                    .err(
                        p.key_start,
                        format!("`{k}` is a SQLMesh property that tidemark does not support"),
                    )
                    .hint(format!(
                        "remove `{k}`; tidemark supports: {}",
                        PROPERTIES.join(", ")
                    )));
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

    fn kind(&mut self, v: &[Token]) -> Result<Kind, Diagnostic> {
        let src = self.src;
        let c = header::call(src, "kind", v)?;
        let upper = c.name.to_ascii_uppercase();
        let no_args = |kind: Kind| -> Result<Kind, Diagnostic> {
            if c.args.is_empty() {
                Ok(kind)
            } else {
                Err(src.err(
                    c.args[0][0].start,
                    format!("kind {upper} takes no properties"),
                ))
            }
        };
        let mut props: BTreeMap<String, (usize, &[Token])> = BTreeMap::new();
        let allowed: &[&str] = match upper.as_str() {
            "FULL" => return no_args(Kind::Full),
            "VIEW" => return no_args(Kind::View),
            "EMBEDDED" => return no_args(Kind::Embedded),
            "INCREMENTAL_BY_TIME_RANGE" => &[
                "time_column",
                "format",
                "batch_size",
                "batch_concurrency",
                "lookback",
            ],
            "INCREMENTAL_BY_UNIQUE_KEY" => &["unique_key", "batch_size"],
            "SEED" => &["path"],
            _ => {
                let hint = did_you_mean(&upper, KINDS.iter().copied())
                    .unwrap_or_else(|| format!("kinds: {}", KINDS.join(", ")));
                return Err(src
                    .err(c.start, format!("unknown model kind `{upper}`"))
                    .hint(hint));
            }
        };
        for arg in &c.args {
            let (key, at, value) = header::key_value(src, arg)?;
            if !allowed.contains(&key.as_str()) {
                let hint = format!("{upper} takes: {}", allowed.join(", "));
                return Err(src
                    .err(at, format!("`{key}` is not a property of kind {upper}"))
                    .hint(hint));
            }
            if props.insert(key.clone(), (at, value)).is_some() {
                return Err(src.err(at, format!("kind property `{key}` is set twice")));
            }
        }
        let required = |key: &str| {
            src.err(c.start, format!("kind {upper} needs `{key}`"))
                .hint(format!("write {upper} ({key} ...)"))
        };
        let positive = |key: &str,
                        props: &BTreeMap<String, (usize, &[Token])>|
         -> Result<Option<u32>, Diagnostic> {
            match props.get(key) {
                None => Ok(None),
                Some((at, v)) => match header::uint(src, key, v)? {
                    0 => Err(src.err(*at, format!("`{key}` must be at least 1"))),
                    n => Ok(Some(n)),
                },
            }
        };
        match upper.as_str() {
            "INCREMENTAL_BY_TIME_RANGE" => {
                let (_, tc) = props
                    .get("time_column")
                    .ok_or_else(|| required("time_column"))?;
                // `time_column col` or SQLMesh's `time_column (col, 'format')`.
                let (time_column, mut format) = if header::is_wrapped(tc) {
                    let items = header::list(tc);
                    match items.as_slice() {
                        [col, fmt] => (
                            header::ident_path(src, "time_column", col)?,
                            Some(header::string(src, "format", fmt)?),
                        ),
                        _ => {
                            return Err(src.err(
                                tc[0].start,
                                "`time_column` expects a column or (column, 'format')",
                            ));
                        }
                    }
                } else {
                    (header::ident_path(src, "time_column", tc)?, None)
                };
                if let Some((at, f)) = props.get("format") {
                    if format.is_some() {
                        return Err(src.err(*at, "the time column format is given twice"));
                    }
                    format = Some(header::string(src, "format", f)?);
                }
                let lookback = match props.get("lookback") {
                    Some((_, v)) => header::uint(src, "lookback", v)?,
                    None => 0,
                };
                Ok(Kind::IncrementalByTimeRange {
                    time_column,
                    format,
                    batch_size: positive("batch_size", &props)?,
                    batch_concurrency: positive("batch_concurrency", &props)?,
                    lookback,
                })
            }
            "INCREMENTAL_BY_UNIQUE_KEY" => {
                let (_, uk) = props
                    .get("unique_key")
                    .ok_or_else(|| required("unique_key"))?;
                let mut unique_key = Vec::new();
                for item in header::list(uk) {
                    unique_key.push(header::ident_path(src, "unique_key", item)?);
                }
                Ok(Kind::IncrementalByUniqueKey {
                    unique_key,
                    batch_size: positive("batch_size", &props)?,
                })
            }
            _ => {
                // SEED
                let (at, pv) = props.get("path").ok_or_else(|| required("path"))?;
                let rel = header::string(src, "path", pv)?;
                let model_dir = self.src.file.parent().unwrap_or(Path::new(""));
                let path = normalize(&model_dir.join(&rel));
                let bytes = std::fs::read(self.root.join(&path)).map_err(|e| {
                    src.err(
                        *at,
                        format!(
                            "cannot read seed file `{}`: {}",
                            path.display(),
                            e.kind().to_string().to_lowercase()
                        ),
                    )
                    .hint("the seed path is relative to the model file")
                })?;
                self.seed_hash = Some(blake3::hash(&bytes).to_hex().to_string());
                Ok(Kind::Seed { path })
            }
        }
    }

    fn audit(&self, item: &[Token]) -> Result<AuditCall, Diagnostic> {
        let src = self.src;
        let c = header::call(src, "audits", item)?;
        let mut args = BTreeMap::new();
        let mut blocking = true;
        for arg in &c.args {
            let (key, at, value) = header::key_value(src, arg)?;
            if key == "blocking" {
                blocking = header::boolean(src, "blocking", value)?;
                continue;
            }
            let text = sql::canonical_expr(src.text_of(value)).map_err(|r| {
                src.err(
                    value[0].start,
                    format!("invalid audit argument `{key}`: {r}"),
                )
            })?;
            if args.insert(key.clone(), text).is_some() {
                return Err(src.err(at, format!("audit argument `{key}` is given twice")));
            }
        }
        if let Some((_, required, optional)) = BUILTIN_AUDITS.iter().find(|(n, _, _)| *n == c.name)
        {
            for r in *required {
                if !args.contains_key(*r) {
                    return Err(src
                        .err(
                            c.start,
                            format!("audit `{}` needs the argument `{r}`", c.name),
                        )
                        .hint(format!("write {}({r} := ...)", c.name)));
                }
            }
            if let Some(extra) = args
                .keys()
                .find(|k| !required.contains(&k.as_str()) && !optional.contains(&k.as_str()))
            {
                let all: Vec<&str> = required.iter().chain(optional.iter()).copied().collect();
                return Err(src
                    .err(
                        c.start,
                        format!("audit `{}` has no argument `{extra}`", c.name),
                    )
                    .hint(format!("its arguments: {}", all.join(", "))));
            }
            if c.name == "accepted_range"
                && !args.contains_key("min_v")
                && !args.contains_key("max_v")
            {
                return Err(src.err(
                    c.start,
                    "audit `accepted_range` needs `min_v`, `max_v` or both",
                ));
            }
        } else {
            let custom = self.root.join("audits").join(format!("{}.sql", c.name));
            if !custom.is_file() {
                let names = BUILTIN_AUDITS.iter().map(|(n, _, _)| *n);
                let hint = did_you_mean(&c.name, names).unwrap_or_else(|| {
                    "built-in audits: not_null, unique_values, accepted_values, accepted_range, number_of_rows, forall; custom audits are files audits/NAME.sql".to_string()
                });
                return Err(src
                    .err(c.start, format!("unknown audit `{}`", c.name))
                    .hint(hint));
            }
        }
        Ok(AuditCall {
            name: c.name,
            args,
            blocking,
        })
    }

    fn finish(mut self, body: &str, body_start: Option<usize>) -> Loaded {
        let src = self.src;
        let file = src.file;
        let name = match self.name.clone() {
            Some(n) => Some(n),
            None => default_name(file).map_err(|d| self.errors.push(d)).ok(),
        };
        let kind = self.kind.clone().unwrap_or(Kind::View);
        let schedule = self.schedule.clone().or_else(|| self.defaults.cron.clone());
        let schedule = match schedule {
            Some(s) => s,
            None => match Schedule::parse("@daily") {
                Ok(s) => s,
                Err(e) => return Loaded::Failed(vec![Diagnostic::error(format!("internal: {e}"))]),
            },
        };
        let start = self.start.map(|(t, _)| t).or(self.defaults.start);
        if let Some((end, at)) = self.end {
            match start {
                None => self.errors.push(src.err(at, "`end` needs a `start`").hint(
                    "add `start '...'` to the header or model_defaults.start to tidemark.toml",
                )),
                Some(s) if end < s => self.errors.push(src.err(at, "`end` is before `start`")),
                _ => {}
            }
        }

        // The query.
        let mut query = None;
        let mut analysis = sql::Analysis::default();
        match (&kind, body_start) {
            _ if self.kind_failed => {
                if body_start.is_some() {
                    // Still report syntax errors; kind-dependent checks are skipped.
                    if let Err(d) = sql::parse_query(file, body) {
                        self.errors.push(d);
                    }
                }
            }
            (Kind::Seed { .. }, Some(o)) => {
                self.errors.push(
                    src.err(o, "a SEED model has no query")
                        .hint("its rows come from the CSV file; remove the query"),
                );
            }
            (Kind::Seed { path }, None) => {
                // Read again here, where the declared columns are known.
                if let Ok(bytes) = std::fs::read(self.root.join(path))
                    && let Err(d) = super::seed::check(&bytes, path, &self.columns)
                {
                    self.errors.push(d);
                }
            }
            (_, None) => self.errors.push(
                Diagnostic::error("the model has no query")
                    .at(self.location.clone())
                    .hint("after the MODEL header, write one SELECT query"),
            ),
            (_, Some(_)) => match sql::parse_query(file, body) {
                Ok(q) => {
                    analysis = sql::analyze(&q);
                    query = Some(q);
                }
                Err(d) => self.errors.push(d),
            },
        }
        if let Some(q) = &query {
            self.check_query(&kind, q, &analysis);
        }
        if matches!(kind, Kind::View | Kind::Embedded) && !self.partitioned_by.is_empty() {
            self.errors.push(src.err(
                self.kind_at,
                format!(
                    "`partitioned_by` needs a materialized kind; {} has no table",
                    kind.name()
                ),
            ));
        }
        if kind == Kind::Embedded && !self.audits.is_empty() {
            self.errors.push(src.err(
                self.audits_at,
                "an EMBEDDED model cannot have audits: it has no data of its own",
            ));
        }

        if !self.errors.is_empty() {
            let mut all = self.errors;
            all.extend(self.warnings);
            return Loaded::Failed(all);
        }
        let Some(name) = name else {
            return Loaded::Failed(vec![
                Diagnostic::error("internal: model without a name").at(Location::file(file)),
            ]);
        };
        let canonical_sql = query.as_deref().map(sql::canonical).unwrap_or_default();
        let model = Model {
            name,
            file: file.to_path_buf(),
            kind,
            schedule,
            start,
            end: self.end.map(|(t, _)| t),
            owner: self.owner.or_else(|| self.defaults.owner.clone()),
            description: self.description,
            column_descriptions: self.column_descriptions,
            columns: self.columns,
            tags: self.tags,
            grain: self.grain,
            audits: self.audits,
            partitioned_by: self.partitioned_by,
            forward_only: self.forward_only,
            allow_partials: self.allow_partials,
            depends_on: self.depends_on,
            query,
            canonical_sql,
            refs: analysis.tables,
            macros: analysis.macros,
            seed_hash: self.seed_hash,
            location: self.location,
        };
        Loaded::Model(Box::new(model), self.warnings)
    }

    fn check_query(&mut self, kind: &Kind, q: &Query, a: &sql::Analysis) {
        let file = self.src.file;
        let at = |line: u64, column: u64| Location::at(file, line, column);
        for m in &a.macros {
            if m.is_call {
                self.errors.push(
                    Diagnostic::error(format!("macro functions such as `@{}(...)` are not supported", m.name))
                        .at(at(m.line, m.column))
                        .hint("tidemark supports macro variables only (@start_ds, @end_ds, @this_model, ...)"),
                );
            } else if !sql::is_known_macro(&m.name) {
                let known = sql::MACRO_VARIABLES.iter().map(|(n, _)| *n);
                let close: Vec<String> = crate::error::closest(&m.name, known)
                    .iter()
                    .map(|n| format!("`@{n}`"))
                    .collect();
                let hint = if close.is_empty() {
                    let all: Vec<String> = sql::MACRO_VARIABLES
                        .iter()
                        .map(|(n, _)| format!("`@{n}`"))
                        .collect();
                    format!("the macro variables are {}", all.join(", "))
                } else {
                    format!("did you mean {}?", close.join(", "))
                };
                self.errors.push(
                    Diagnostic::error(format!("unknown macro variable `@{}`", m.name))
                        .at(at(m.line, m.column))
                        .hint(hint),
                );
            } else if sql::is_window_variable(&m.name) && matches!(kind, Kind::Full | Kind::View) {
                self.errors.push(
                    Diagnostic::error(format!("`@{}` has no value in a {} model: it is computed as a whole, not by interval", m.name, kind.name()))
                        .at(at(m.line, m.column))
                        .hint("use @execution_ds / @execution_ts, or make the model INCREMENTAL_BY_TIME_RANGE"),
                );
            }
        }
        // Computing a query's span walks its whole AST: only do it when a message needs it.
        let location = self.location.clone();
        let query_loc = || first_loc(q).map_or_else(|| location.clone(), |(l, c)| at(l, c));
        let projected = |col: &str| {
            a.projection
                .as_ref()
                .is_none_or(|p| p.iter().any(|c| c == col))
        };
        match kind {
            Kind::IncrementalByTimeRange { time_column, .. } => {
                if !projected(time_column) {
                    self.errors.push(
                        Diagnostic::error(format!("the query does not output the time column `{time_column}`"))
                            .at(query_loc())
                            .hint(format!("add `{time_column}` to the outermost SELECT list; tidemark partitions the table by it")),
                    );
                }
                if !a.macros.iter().any(|m| sql::is_window_variable(&m.name)) {
                    self.warnings.push(
                        Diagnostic::warning("this incremental model never uses @start_* or @end_*: every batch would read all of its inputs")
                            .at(query_loc())
                            .hint("filter the inputs, e.g. WHERE ts BETWEEN @start_ts AND @end_ts"),
                    );
                }
            }
            Kind::IncrementalByUniqueKey { unique_key, .. } => {
                for k in unique_key {
                    if !projected(k) {
                        self.errors.push(
                            Diagnostic::error(format!(
                                "the query does not output the unique key column `{k}`"
                            ))
                            .at(query_loc())
                            .hint(format!("add `{k}` to the outermost SELECT list")),
                        );
                    }
                }
            }
            _ => {}
        }
    }
}

/// The location of the first token of the query (its first table or expression).
fn first_loc(q: &Query) -> Option<(u64, u64)> {
    use datafusion::sql::sqlparser::ast::Spanned;
    let span = q.span();
    (span.start.line > 0).then_some((span.start.line, span.start.column))
}

/// `<directory>.<file stem>` for a file that does not name its model.
fn default_name(file: &Path) -> Result<ModelName, Diagnostic> {
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = file
        .parent()
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    ModelName::parse_model(&format!("{dir}.{stem}")).map_err(|r| {
        Diagnostic::error(format!("the model has no `name` and none can be derived from its path: {r}"))
            .at(Location::file(file))
            .hint("add `name schema.table` to the MODEL header, or rename the file and directory to plain identifiers")
    })
}

/// Resolve `.` and `..` lexically.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            std::path::Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}
