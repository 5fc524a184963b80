//! A model: one `.sql` file turned into validated properties and a parsed query.
//!
//! Invariants:
//! - A [`Model`] only exists when its file produced no error; every error carries the file's
//!   `line:col`, and all errors of a file are reported together where they are independent.
//! - Header values are typed once here; later stages never look at header text again.
//! - Project-wide checks (duplicate names, unknown references, cycles) live in
//!   [`crate::project`] and [`crate::dag`], not here.
//!
//! One builder reads a file; its parts live by concern: [`kind`] (kinds and the `kind`
//! property), [`properties`] (every other header property), [`audits`] (built-in audits and
//! the `audits` property) and [`checks`] (the query against the header).

mod audits;
mod checks;
mod gates;
mod kind;
mod properties;

pub use audits::{AuditCall, BUILTIN_AUDITS, is_builtin as is_builtin_audit};
pub use gates::{
    BUILTIN_GATES, GateCall, custom_path as gates_custom_path, parse_list as parse_gates,
};
pub use kind::Kind;
pub use properties::PROPERTIES;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use datafusion::sql::sqlparser::ast::Query;

use super::config::ModelDefaults;
use super::header::{self, Property, Src};
use crate::error::{Diagnostic, Location};
use crate::interval::Schedule;
use crate::names::ModelName;
use crate::sql::{self, MacroUse, TableRef};

/// A loaded, validated model. Serializable for the project's analysis cache
/// ([`crate::project::cache`]), which stores everything but the parsed query.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
    /// A relative start as written (`'1 year ago'`), resolved into `start` against the
    /// execution time; the fingerprint uses the text.
    pub start_text: Option<String>,
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
    /// Where each audit is named in the header.
    pub audit_locations: Vec<Location>,
    /// Promotion gates (the model's, else the project's defaults).
    pub gates: Vec<GateCall>,
    /// Extra physical partition columns.
    pub partitioned_by: Vec<String>,
    /// Changes apply only to intervals computed from now on.
    pub forward_only: bool,
    /// Incomplete intervals may be computed.
    pub allow_partials: bool,
    /// Extra dependencies, with where they were declared.
    pub depends_on: Vec<(ModelName, Location)>,
    /// The parsed, normalized query (`None` for seeds): set when the file was parsed, else
    /// parsed from `canonical_sql` on first use (see [`Model::query`]).
    #[serde(skip)]
    parsed: ParsedQuery,
    /// Canonical SQL of the query (empty for seeds).
    pub canonical_sql: String,
    /// The functions the query calls, lower-cased, with their `line:col` in the file (macros
    /// left out), checked against the engine's functions when a command loads the project.
    pub functions: Vec<(String, u64, u64)>,
    /// The dialect the query is written in (its project's engine's).
    pub dialect: sql::Dialect,
    /// The dialect the model declares (`dialect duckdb`, or `[model_defaults] dialect`), as
    /// SQLMesh records it; the query is still parsed and run in `dialect`.
    pub declared_dialect: Option<String>,
    /// SQLMesh properties kept as written because they only describe (`references`,
    /// `clustered_by`, `physical_properties`, ...): property → value text.
    pub metadata: BTreeMap<String, String>,
    /// `stamp`: a string whose change forces a new version.
    pub stamp: Option<String>,
    /// Tables the query reads (repeats included), with their locations.
    pub refs: Vec<TableRef>,
    /// Macro variables the query uses.
    pub macros: Vec<MacroUse>,
    /// The seed file's blake3 hash (hex), for seeds.
    pub seed_hash: Option<String>,
    /// Where the header (or the query, when there is no header) starts.
    pub location: Location,
    /// The file has inline `AUDIT` blocks after its query (read with the project's audits).
    pub inline_audits: bool,
}

/// A model's parsed query, parsed at most once.
#[derive(Debug, Clone, Default)]
struct ParsedQuery(std::sync::OnceLock<Option<Box<Query>>>);

impl Model {
    /// The parsed, normalized query (`None` for seeds). A model served by the analysis cache
    /// parses its canonical SQL here, once; the cache only keeps models whose canonical SQL
    /// parses back to the very query the file gave (see [`Model::reparses_identically`]).
    pub fn query(&self) -> Option<&Query> {
        self.parsed
            .0
            .get_or_init(|| self.parse_canonical())
            .as_deref()
    }

    fn parse_canonical(&self) -> Option<Box<Query>> {
        if self.canonical_sql.is_empty() {
            return None;
        }
        sql::parse_query(&self.file, &self.canonical_sql, self.dialect).ok()
    }

    /// Does the canonical SQL parse back to the query the file gave? (Always expected; a
    /// model for which it does not is never cached, so [`Model::query`] cannot differ.)
    pub(crate) fn reparses_identically(&self) -> bool {
        match self.parsed.0.get() {
            Some(parsed) => *parsed == self.parse_canonical(),
            None => true,
        }
    }
}

/// What reading one file produced.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Loaded {
    /// A valid model, plus warnings.
    Model(Box<Model>, Vec<Diagnostic>),
    /// A file with `enabled false`: skipped, but its name is remembered for better messages.
    Disabled(Option<ModelName>),
    /// Errors (and warnings).
    Failed(Vec<Diagnostic>),
}

/// Where the query of the model file `file` (relative to `root`) starts as the file is now; the
/// file alone when it cannot be read or has no query (messages about a stored model whose file
/// changed or went away still name the file).
pub fn query_location(root: &Path, file: &Path) -> Location {
    let Ok(text) = std::fs::read_to_string(root.join(file)) else {
        return Location::file(file);
    };
    let src = Src { file, text: &text };
    match header::split(src) {
        Ok(split) => split
            .body_start
            .map_or(Location::file(file), |o| src.loc(o)),
        Err(_) => Location::file(file),
    }
}

/// Build a model from a file's text. `file` is relative to `root`.
pub fn build(
    root: &Path,
    file: &Path,
    text: &str,
    defaults: &ModelDefaults,
    dialect: sql::Dialect,
) -> Loaded {
    let src = Src { file, text };
    let split = match header::split(src) {
        Ok(s) => s,
        Err(d) => return Loaded::Failed(vec![d]),
    };
    let mut b = Builder::new(src, root, defaults);
    b.dialect = dialect;
    if let Some(props) = &split.properties {
        b.location = src.loc(split.header_start);
        b.properties(props);
        // A blueprint template (`name @name`, `@field` everywhere) says nothing else worth
        // reading once `blueprints` is refused.
        if props.iter().any(|p| p.key == "blueprints") {
            b.errors.retain(|d| d.message.starts_with("`blueprints`"));
            return Loaded::Failed(b.errors);
        }
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
    // Inline audits are read with the project's audits (`audit_files::load_all`).
    b.inline_audits = sql::inline_audits_at(&split.body).is_some();
    let body = without_inline_audits(&split.body);
    let body_start = sql::first_code_offset(&body);
    b.finish(&body, body_start)
}

struct Builder<'a> {
    src: Src<'a>,
    root: &'a Path,
    dialect: sql::Dialect,
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
    audit_locations: Vec<Location>,
    audits_at: usize,
    gates: Option<Vec<GateCall>>,
    partitioned_by: Vec<String>,
    forward_only: bool,
    allow_partials: bool,
    enabled: bool,
    depends_on: Vec<(ModelName, Location)>,
    seed_hash: Option<String>,
    start_text: Option<String>,
    declared_dialect: Option<String>,
    metadata: BTreeMap<String, String>,
    stamp: Option<String>,
    /// The `kind` property was given but invalid: kind-dependent checks would only mislead.
    kind_failed: bool,
    inline_audits: bool,
    defaults: &'a ModelDefaults,
}

impl<'a> Builder<'a> {
    fn new(src: Src<'a>, root: &'a Path, defaults: &'a ModelDefaults) -> Self {
        Builder {
            src,
            root,
            dialect: sql::Dialect::default(),
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
            audit_locations: Vec::new(),
            audits_at: 0,
            gates: None,
            partitioned_by: Vec::new(),
            forward_only: false,
            allow_partials: false,
            enabled: true,
            depends_on: Vec::new(),
            seed_hash: None,
            start_text: None,
            declared_dialect: None,
            metadata: BTreeMap::new(),
            stamp: None,
            kind_failed: false,
            inline_audits: false,
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
                // `@daily` always parses; this is a bug if it does not.
                Err(e) => {
                    return Loaded::Failed(vec![Diagnostic::error(format!(
                        "internal error: the default schedule `@daily` does not parse ({e}); this is a bug in tidemark"
                    ))]);
                }
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
                    if let Err(d) = sql::parse_query(file, body, self.dialect) {
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
                if let Ok(file) = std::fs::File::open(self.root.join(path))
                    && let Err(d) = super::seed::check(file, path, &self.columns)
                {
                    self.errors.push(d);
                }
            }
            (_, None) => self.errors.push(
                Diagnostic::error("the model has no query")
                    .at(self.location.clone())
                    .hint("after the MODEL header, write one SELECT query"),
            ),
            (_, Some(body_at)) => match sql::extract_defs(body)
                .map_err(|(at, m)| src.err(at, m))
                .and_then(|(body, defs)| {
                    let q = sql::unwrap_jinja(file, &body)
                        .and_then(|body| sql::parse_query(file, &body, self.dialect))?;
                    Ok((q, defs))
                }) {
                Ok((mut q, defs)) => {
                    // `@name`: a `@DEF` of the file, else one of `macros/*.sql`, else a
                    // project variable; then the macro functions (see `sql::expand_sql_macros`).
                    let mut values: sql::MacroDefs = self
                        .defaults
                        .variables
                        .iter()
                        .filter(|(n, _)| !sql::is_known_macro(n))
                        .map(|(n, v)| (n.clone(), v.literal()))
                        .collect();
                    values.extend(self.defaults.macros.clone());
                    values.extend(defs);
                    let expanded = sql::expand_sql_macros(&mut q, &values, self.dialect);
                    if let Err(e) = &expanded {
                        let at = e
                            .at
                            .map_or_else(|| src.loc(body_at), |(l, c)| Location::at(file, l, c));
                        self.errors.push(
                            Diagnostic::error(e.message.clone())
                                .at(at)
                                .hint("see the SQL macros tidemark expands in docs/sqlmesh.md"),
                        );
                    }
                    // `SELECT id::BIGINT` yields `id`, as in SQLMesh (see the function).
                    sql::name_unaliased(&mut q);
                    // Other dialects' functions DataFusion names differently (see the module).
                    if self.dialect == sql::Dialect::DataFusion {
                        sql::translate_functions(&mut q);
                    }
                    match sql::substitute_variables(&mut q, &self.defaults.variables) {
                        // A query whose macros did not expand is not checked further.
                        Ok(_) if expanded.is_err() => {}
                        Ok(_) => {
                            analysis = sql::analyze(&q);
                            query = Some(q);
                        }
                        Err(reason) => self
                            .errors
                            .push(Diagnostic::error(reason).at(src.loc(body_at)).hint(
                            "define it under [variables] in tidemark.toml, or give @VAR a default",
                        )),
                    }
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
        let functions = query
            .as_deref()
            .map(sql::function_calls)
            .unwrap_or_default();
        let model = Model {
            name,
            file: file.to_path_buf(),
            kind,
            schedule,
            start,
            start_text: self.start_text,
            end: self.end.map(|(t, _)| t),
            owner: self.owner.or_else(|| self.defaults.owner.clone()),
            description: self.description,
            column_descriptions: self.column_descriptions,
            columns: self.columns,
            tags: self.tags,
            grain: self.grain,
            audits: self.audits,
            audit_locations: self.audit_locations,
            gates: self.gates.unwrap_or_else(|| self.defaults.gates.clone()),
            partitioned_by: self.partitioned_by,
            forward_only: self.forward_only,
            allow_partials: self.allow_partials,
            depends_on: self.depends_on,
            parsed: ParsedQuery(query.into()),
            canonical_sql,
            functions,
            dialect: self.dialect,
            declared_dialect: self
                .declared_dialect
                .or_else(|| self.defaults.dialect.clone()),
            metadata: self.metadata,
            stamp: self.stamp,
            refs: analysis.tables,
            macros: analysis.macros,
            seed_hash: self.seed_hash,
            location: self.location,
            inline_audits: self.inline_audits,
        };
        Loaded::Model(Box::new(model), self.warnings)
    }
}

/// `body` with its inline `AUDIT` blocks blanked (positions kept; they are read with the
/// project's audits, see `audit_files::load_all`).
fn without_inline_audits(body: &str) -> std::borrow::Cow<'_, str> {
    match sql::inline_audits_at(body) {
        Some(at) => sql::blanked(body, std::slice::from_ref(&(at..body.len()))).into(),
        None => body.into(),
    }
}

/// `<directory>.<file stem>` for a file that does not name its model.
pub(crate) fn default_name(file: &Path) -> Result<ModelName, Diagnostic> {
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
pub(super) fn normalize(p: &Path) -> PathBuf {
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
