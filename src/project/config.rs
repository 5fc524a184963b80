//! `tidemark.toml`: the project configuration.
//!
//! Invariants:
//! - Unknown keys anywhere are errors that name the key and its `file:line:col`.
//! - Only `[project] name` is required; every other setting has a documented default.
//! - Relative paths are resolved against the directory holding `tidemark.toml`, never the
//!   current directory, so a command gives the same answer from anywhere inside the project.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::error::{Diagnostic, Error, Location, Result, io_error, line_col};
use crate::interval::{Schedule, parse_instant};
use crate::names::ModelName;
pub use crate::objects::StorageOptions;

/// The config file name looked for when walking up from the current directory.
pub const CONFIG_FILE: &str = "tidemark.toml";

/// Default time-to-live of non-prod environments.
pub const DEFAULT_ENV_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    project: RawProject,
    #[serde(default)]
    model_defaults: RawModelDefaults,
    #[serde(default)]
    sources: BTreeMap<String, Spanned<RawSource>>,
    #[serde(default)]
    environments: RawEnvironments,
    #[serde(default)]
    storage: BTreeMap<String, String>,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    run: RawRun,
    #[serde(default)]
    lineage: RawLineage,
    #[serde(default)]
    variables: BTreeMap<String, Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLineage {
    file: Option<String>,
    url: Option<Spanned<String>>,
    namespace: Option<String>,
}

/// Where OpenLineage events go (`[lineage]`; `--lineage FILE` adds a file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineageConfig {
    /// A JSON-lines file events are appended to (relative paths: from the project root).
    pub file: Option<PathBuf>,
    /// An OpenLineage HTTP endpoint (`http://host:port/api/v1/lineage`).
    pub url: Option<String>,
    /// The job namespace (default: the project's name).
    pub namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    restate_late: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    kind: Option<Spanned<String>>,
    remote: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    name: Spanned<String>,
    models: Option<Spanned<String>>,
    warehouse: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModelDefaults {
    start: Option<Spanned<String>>,
    dialect: Option<Spanned<String>>,
    cron: Option<Spanned<String>>,
    gates: Option<Spanned<String>>,
    owner: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    path: Spanned<String>,
    format: SourceFormat,
    #[serde(default)]
    columns: BTreeMap<String, Spanned<String>>,
    time_column: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironments {
    ttl: Option<Spanned<String>>,
}

/// Which engine runs the batches (`[engine]`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum EngineConfig {
    /// DataFusion in this process (the default).
    #[default]
    Local,
    /// A Spark Connect server.
    Spark {
        /// Its `sc://HOST:PORT/;param=value` URL, which may carry a `token` (a secret); `None`:
        /// the `SPARK_REMOTE` environment variable, as PySpark reads it.
        remote: Option<String>,
    },
}

impl std::fmt::Debug for EngineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineConfig::Local => f.write_str("Local"),
            EngineConfig::Spark { remote } => f
                .debug_struct("Spark")
                .field("remote", &remote.as_deref().map(shown_remote))
                .finish(),
        }
    }
}

/// A Spark Connect URL as it may be shown: the value of every parameter that may be a secret
/// (`token`, and anything named like a password or key) replaced by `…`.
pub fn shown_remote(url: &str) -> String {
    let mut parts = url.split(';');
    let mut out = parts.next().unwrap_or_default().to_string();
    for p in parts {
        out.push(';');
        match p.split_once('=') {
            Some((k, _)) if is_secret_param(k) => {
                out.push_str(k);
                out.push_str("=…");
            }
            _ => out.push_str(p),
        }
    }
    out
}

/// Whether the Spark Connect URL parameter `key` may hold a secret (`token`, or anything named
/// like a password or key).
pub fn is_secret_param(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["token", "password", "secret", "key"]
        .iter()
        .any(|s| k.contains(s))
}

/// Check a Spark Connect URL's form (`sc://HOST[:PORT][/;param=value…]`).
fn check_remote(url: &str) -> std::result::Result<(), String> {
    let Some(rest) = url.strip_prefix("sc://") else {
        return Err(format!(
            "`{}` is not a Spark Connect URL",
            shown_remote(url)
        ));
    };
    let authority = rest.split(['/', ';']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (authority, None),
    };
    if host.is_empty() {
        return Err(format!("`{}` names no host", shown_remote(url)));
    }
    if let Some(p) = port
        && p.parse::<u16>().is_err()
    {
        return Err(format!("`{}` has an invalid port `{p}`", shown_remote(url)));
    }
    for param in rest.split(';').skip(1) {
        if !param.contains('=') {
            return Err(format!(
                "`{}` has a parameter without a value",
                shown_remote(url)
            ));
        }
    }
    Ok(())
}

/// Where tables and state live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "location", rename_all = "snake_case")]
pub enum Warehouse {
    /// A local directory (absolute).
    Local(PathBuf),
    /// An object-store URL such as `s3://bucket/prefix` (carried through; engines decide support).
    ObjectStore(String),
}

/// The storage format of an external source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// A Delta Lake table.
    Delta,
    /// A Parquet file or directory of files.
    Parquet,
    /// A CSV file or directory of files, with a header row.
    Csv,
}

impl SourceFormat {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceFormat::Delta => "delta",
            SourceFormat::Parquet => "parquet",
            SourceFormat::Csv => "csv",
        }
    }
}

/// An external table read in place; a leaf of the DAG.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The name models use to refer to it.
    pub name: ModelName,
    /// Absolute local path or URL (for reading).
    pub path: String,
    /// The path as written in `tidemark.toml` (for fingerprints, which must not depend on where
    /// the project is checked out).
    pub declared_path: String,
    /// Storage format.
    pub format: SourceFormat,
    /// Declared column types (name → SQL type), if any.
    pub columns: BTreeMap<String, String>,
    /// The column that places its rows in time (late-data detection), if declared.
    pub time_column: Option<String>,
}

impl Source {
    /// The path as shown to people: relative to the project root when it lies inside it.
    pub fn display_path(&self, root: &Path) -> String {
        shown_path(&self.path, root)
    }
}

impl Config {
    /// The SQL dialect of the project's model queries: its engine's.
    pub fn dialect(&self) -> crate::sql::Dialect {
        match self.engine {
            EngineConfig::Local => crate::sql::Dialect::DataFusion,
            EngineConfig::Spark { .. } => crate::sql::Dialect::Spark,
        }
    }
}

impl Warehouse {
    /// The location as shown to people: relative to the project root when it lies inside it.
    pub fn display(&self, root: &Path) -> String {
        match self {
            Warehouse::Local(p) => shown_path(&p.to_string_lossy(), root),
            Warehouse::ObjectStore(u) => u.clone(),
        }
    }
}

fn shown_path(path: &str, root: &Path) -> String {
    match Path::new(path).strip_prefix(root) {
        Ok(rel) if !path.contains("://") => rel.to_string_lossy().replace('\\', "/"),
        _ => path.to_string(),
    }
}

/// Defaults applied to models that do not set the property themselves.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelDefaults {
    /// Default `start`.
    pub start: Option<chrono::DateTime<chrono::Utc>>,
    /// Default `cron` (else `@daily`).
    pub cron: Option<Schedule>,
    /// Default `owner`.
    pub owner: Option<String>,
    /// Default promotion gates (`gates = "row_count_change(max_pct := 20), …"`).
    pub gates: Vec<super::model::GateCall>,
    /// Default declared dialect (recorded; see `Model::declared_dialect`).
    pub dialect: Option<String>,
    /// "Now" for relative starts (`'1 year ago'`): the command's execution time.
    pub now: Option<chrono::DateTime<chrono::Utc>>,
    /// Project variables (`[variables]`), substituted into queries when they load (so a
    /// value is part of the fingerprint of every model using it).
    pub variables: BTreeMap<String, crate::sql::Variable>,
    /// SQL macros shared by every model: the `@DEF(name, value);` statements of `macros/*.sql`.
    pub macros: crate::sql::MacroDefs,
    /// Python macros found in `macros/*.py` (name → file), named precisely when a model calls
    /// one: tidemark cannot run Python.
    pub python_macros: BTreeMap<String, PathBuf>,
}

/// The validated project configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Absolute path of `tidemark.toml`.
    pub path: PathBuf,
    /// The directory holding it: the project root.
    pub root: PathBuf,
    /// Project name.
    pub name: String,
    /// Absolute models directory (default `models`).
    pub models_dir: PathBuf,
    /// Warehouse location (default `warehouse/` beside the config).
    pub warehouse: Warehouse,
    /// Model defaults.
    pub model_defaults: ModelDefaults,
    /// External sources by name.
    pub sources: BTreeMap<ModelName, Source>,
    /// Time-to-live of non-prod environments.
    pub env_ttl: Duration,
    /// Options of the warehouse's object store (`[storage]`).
    pub storage: StorageOptions,
    /// The engine that runs batches (`[engine]`).
    pub engine: EngineConfig,
    /// `[run] restate_late`: every `run` restates the windows late source data touched.
    pub run_restate_late: bool,
    /// `[lineage]`: where OpenLineage events go.
    pub lineage: LineageConfig,
}

/// Find `tidemark.toml`: in `project` when given, else walking up from `cwd`.
pub fn find_config(project: Option<&Path>, cwd: &Path) -> Result<PathBuf> {
    if let Some(dir) = project {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            cwd.join(dir)
        };
        let path = dir.join(CONFIG_FILE);
        if path.is_file() {
            return Ok(path);
        }
        return Err(
            Diagnostic::error(format!("no {CONFIG_FILE} in `{}`", dir.display()))
                .hint(format!(
                    "--project must name the directory that holds {CONFIG_FILE}"
                ))
                .into(),
        );
    }
    for dir in cwd.ancestors() {
        let path = dir.join(CONFIG_FILE);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(Diagnostic::error(format!("no {CONFIG_FILE} found in `{}` or any parent directory", cwd.display()))
        .hint(format!(
            "run tidemark inside a project, pass --project DIR, or create a {CONFIG_FILE} with:\n    [project]\n    name = \"my_project\""
        ))
        .into())
}

/// Read and validate the config at `path`.
pub fn load_config(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::from(io_error("read", path, &e)))?;
    let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
    parse_config(&text, path, &root)
}

/// Parse config text; `shown` is the path used in messages, `root` the project root.
pub fn parse_config(text: &str, shown: &Path, root: &Path) -> Result<Config> {
    let at = |span: std::ops::Range<usize>| {
        let (l, c) = line_col(text, span.start);
        Location::at(
            shown
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_else(|| shown.to_path_buf()),
            l,
            c,
        )
    };
    let whole_file = || Location::file(shown.file_name().map(PathBuf::from).unwrap_or_default());
    let located = |d: Diagnostic, e: &toml::de::Error| match e.span() {
        Some(span) => d.at(at(span)),
        None => d.at(whole_file()),
    };
    // Three steps, so that each failure gets its own message without reading toml's wording:
    // the syntax, then the one table every config has, then the keys and values.
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        Error::from(
            located(
                Diagnostic::error(format!("`{CONFIG_FILE}` is not valid TOML")),
                &e,
            )
            .caused_by(e.message()),
        )
    })?;
    if !table.contains_key("project") {
        return Err(
            Diagnostic::error(format!("`{CONFIG_FILE}` has no `[project]` table"))
                .at(whole_file())
                .hint(format!(
                    "a `{CONFIG_FILE}` starts with:\n    [project]\n    name = \"my_project\""
                ))
                .into(),
        );
    }
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        Error::from(
            located(
                Diagnostic::error(format!("invalid key or value in `{CONFIG_FILE}`")),
                &e,
            )
            .caused_by(e.message())
            .hint("fix the key or value at that line: the cause above says what is accepted there"),
        )
    })?;

    let mut errors = Vec::new();

    let name = raw.project.name.get_ref().trim().to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        errors.push(
            Diagnostic::error(format!("invalid project name `{name}`"))
                .at(at(raw.project.name.span()))
                .hint("use letters, digits, `_` and `-`"),
        );
    }

    let models_dir = match &raw.project.models {
        Some(m) => match local_path(root, m.get_ref()) {
            Some(p) => p,
            None => {
                errors.push(
                    Diagnostic::error(format!(
                        "`models` must be a local directory, not `{}`",
                        m.get_ref()
                    ))
                    .at(at(m.span())),
                );
                root.join("models")
            }
        },
        None => root.join("models"),
    };

    let warehouse = match &raw.project.warehouse {
        None => Warehouse::Local(root.join("warehouse")),
        Some(w) => match parse_location(root, w.get_ref()) {
            Ok(wh) => wh,
            Err(reason) => {
                errors.push(
                    Diagnostic::error(format!("invalid warehouse: {reason}"))
                        .at(at(w.span()))
                        .hint(LOCATION_HINT),
                );
                Warehouse::Local(root.join("warehouse"))
            }
        },
    };

    let mut model_defaults = ModelDefaults {
        owner: raw.model_defaults.owner.clone(),
        ..Default::default()
    };
    if let Some(s) = &raw.model_defaults.start {
        match parse_instant(s.get_ref()) {
            Ok(i) => model_defaults.start = Some(i.at),
            Err(reason) => errors.push(
                Diagnostic::error(format!("invalid model_defaults.start: {reason}"))
                    .at(at(s.span())),
            ),
        }
    }
    if let Some(g) = &raw.model_defaults.gates {
        let src = super::header::Src {
            file: shown,
            text: g.get_ref(),
        };
        match super::header::lex(src, 0).and_then(|t| super::model::parse_gates(src, root, &t)) {
            Ok(gates) => model_defaults.gates = gates,
            Err(d) => errors.push(
                Diagnostic::error(format!("invalid model_defaults.gates: {}", d.message))
                    .at(at(g.span()))
                    .hint(d.hint.as_deref().unwrap_or(
                        "write them as in a MODEL header: `gates = \"row_count_change(max_pct := 20), no_missing_partitions\"`",
                    )),
            ),
        }
    }
    for (name, value) in &raw.variables {
        use crate::sql::Variable;
        let v = match value.get_ref() {
            toml::Value::String(s) => Some(Variable::Text(s.clone())),
            toml::Value::Integer(n) => Some(Variable::Integer(*n)),
            toml::Value::Float(f) if f.is_finite() => Some(Variable::Float(format!("{f:?}"))),
            toml::Value::Boolean(b) => Some(Variable::Boolean(*b)),
            _ => None,
        };
        let valid_name = !name.is_empty()
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match v {
            Some(v) if valid_name => {
                model_defaults.variables.insert(name.to_lowercase(), v);
            }
            _ => errors.push(
                Diagnostic::error(format!(
                    "invalid variable `{name}`: variables are names of letters, digits and `_` with a string, integer, number or boolean value"
                ))
                .at(at(value.span())),
            ),
        }
    }
    if let Some(d) = &raw.model_defaults.dialect {
        match crate::sql::declared_dialect(d.get_ref()) {
            Ok(d) => model_defaults.dialect = Some(d),
            Err(hint) => errors.push(
                Diagnostic::error(format!("unknown model_defaults.dialect `{}`", d.get_ref()))
                    .at(at(d.span()))
                    .hint(hint),
            ),
        }
    }
    if let Some(c) = &raw.model_defaults.cron {
        match Schedule::parse(c.get_ref()) {
            Ok(s) => model_defaults.cron = Some(s),
            Err(reason) => errors.push(
                Diagnostic::error(format!("invalid model_defaults.cron: {reason}"))
                    .at(at(c.span())),
            ),
        }
    }

    let lineage = LineageConfig {
        file: raw.lineage.file.as_ref().map(|f| root.join(f)),
        url: raw.lineage.url.as_ref().and_then(|u| {
            if u.get_ref().starts_with("http://") {
                Some(u.get_ref().clone())
            } else {
                errors.push(
                    Diagnostic::error(format!(
                        "invalid lineage.url `{}`: only `http://` endpoints are supported",
                        u.get_ref()
                    ))
                    .at(at(u.span()))
                    .hint("point it at an OpenLineage endpoint such as `http://marquez:5000/api/v1/lineage` (an `https://` one through a local forwarder)"),
                );
                None
            }
        }),
        namespace: raw.lineage.namespace.clone(),
    };

    let mut sources = BTreeMap::new();
    for (key, spanned) in &raw.sources {
        let src = spanned.get_ref();
        let name = match ModelName::parse(key) {
            Ok(n) => n,
            Err(reason) => {
                errors.push(
                    Diagnostic::error(format!("invalid source name `{key}`: {reason}"))
                        .at(at(spanned.span())),
                );
                continue;
            }
        };
        let path = match parse_location(root, src.path.get_ref()) {
            Ok(Warehouse::Local(p)) => p.to_string_lossy().into_owned(),
            Ok(Warehouse::ObjectStore(u)) => u,
            Err(reason) => {
                errors.push(
                    Diagnostic::error(format!("invalid path of source `{key}`: {reason}"))
                        .at(at(src.path.span()))
                        .hint(LOCATION_HINT),
                );
                continue;
            }
        };
        let mut columns = BTreeMap::new();
        for (col, ty) in &src.columns {
            match crate::sql::parse_data_type(ty.get_ref()) {
                Ok(t) => {
                    // As written in the files; models read it lower-cased (see the engine).
                    columns.insert(col.clone(), t);
                }
                Err(reason) => errors.push(
                    Diagnostic::error(format!(
                        "invalid type of column `{col}` of source `{key}`: {reason}"
                    ))
                    .at(at(ty.span())),
                ),
            }
        }
        let time_column = match &src.time_column {
            None => None,
            Some(c) if is_column_name(c.get_ref()) => Some(c.get_ref().to_string()),
            Some(c) => {
                errors.push(
                    Diagnostic::error(format!(
                        "invalid `time_column` of source `{key}`: `{}` is not a column name",
                        c.get_ref()
                    ))
                    .at(at(c.span()))
                    .hint("name the column that places the source's rows in time, e.g. `time_column = \"event_date\"`"),
                );
                None
            }
        };
        if sources.contains_key(&name) {
            errors.push(
                Diagnostic::error(format!(
                    "source `{name}` is declared twice (names are case-insensitive)"
                ))
                .at(at(spanned.span())),
            );
            continue;
        }
        sources.insert(
            name.clone(),
            Source {
                name,
                path,
                declared_path: src.path.get_ref().trim().to_string(),
                format: src.format,
                columns,
                time_column,
            },
        );
    }

    let env_ttl = match &raw.environments.ttl {
        None => DEFAULT_ENV_TTL,
        Some(t) => match humantime::parse_duration(t.get_ref()) {
            Ok(d) => d,
            Err(e) => {
                errors.push(
                    Diagnostic::error(format!("invalid `environments.ttl` `{}`", t.get_ref()))
                        .at(at(t.span()))
                        .caused_by(e)
                        .hint("write a duration such as \"7d\", \"36h\" or \"2weeks\""),
                );
                DEFAULT_ENV_TTL
            }
        },
    };

    let engine = match raw.engine.kind.as_ref().map(|k| (k, k.get_ref().trim())) {
        None | Some((_, "local")) => {
            if let Some(r) = &raw.engine.remote {
                errors.push(
                    Diagnostic::error("`[engine] remote` is set, but the engine is local")
                        .at(at(r.span()))
                        .hint("add `kind = \"spark\"` to `[engine]` to run on that server, or remove `remote`"),
                );
            }
            EngineConfig::Local
        }
        Some((_, "spark")) => {
            let remote = raw.engine.remote.as_ref().map(|r| (r, r.get_ref().trim()));
            if let Some((r, url)) = remote
                && let Err(why) = check_remote(url)
            {
                errors.push(
                    Diagnostic::error(format!("invalid `[engine] remote`: {why}"))
                        .at(at(r.span()))
                        .hint("write it as `sc://HOST:15002` (Spark Connect's URL form; `;token=…` and other parameters follow the port)"),
                );
            }
            EngineConfig::Spark {
                remote: remote.map(|(_, url)| url.to_string()),
            }
        }
        Some((k, other)) => {
            errors.push(
                Diagnostic::error(format!("unknown engine `{other}`"))
                    .at(at(k.span()))
                    .hint("`[engine] kind` is `local` (DataFusion in this process, the default) or `spark` (a Spark Connect server)"),
            );
            EngineConfig::Local
        }
    };

    if !errors.is_empty() {
        return Err(Error::User(errors));
    }
    Ok(Config {
        path: shown.to_path_buf(),
        root: root.to_path_buf(),
        name,
        models_dir,
        warehouse,
        model_defaults,
        sources,
        env_ttl,
        storage: StorageOptions::new(raw.storage.clone()),
        engine,
        run_restate_late: raw.run.restate_late.unwrap_or(false),
        lineage,
    })
}

/// A plain column name: letters, digits and `_`, not starting with a digit.
fn is_column_name(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// A local path relative to `root`, or `None` when `s` is a URL.
fn local_path(root: &Path, s: &str) -> Option<PathBuf> {
    if s.contains("://") {
        return None;
    }
    let p = Path::new(s);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    })
}

/// Object-store schemes tidemark recognises in locations.
const LOCATION_HINT: &str = "write a local directory, or a URL such as `s3://BUCKET/PREFIX`, `az://CONTAINER/PREFIX`, `abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/PREFIX` or `gs://BUCKET/PREFIX`";

const URL_SCHEMES: [&str; 8] = ["s3", "s3a", "gs", "az", "abfs", "abfss", "azure", "memory"];

fn parse_location(root: &Path, s: &str) -> std::result::Result<Warehouse, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("an empty location".into());
    }
    if !s.contains("://") {
        return local_path(root, s)
            .map(Warehouse::Local)
            .ok_or_else(|| "not a path".into());
    }
    let url = url::Url::parse(s).map_err(|e| format!("`{s}` is not a valid URL: {e}"))?;
    match url.scheme() {
        "file" => url
            .to_file_path()
            .map(Warehouse::Local)
            .map_err(|_| format!("`{s}` is not a local file URL")),
        scheme if URL_SCHEMES.contains(&scheme) => Ok(Warehouse::ObjectStore(url.to_string())),
        scheme => Err(format!(
            "unsupported URL scheme `{scheme}` (supported: file, {})",
            URL_SCHEMES.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_table_is_checked_and_a_token_never_shown() {
        let base = "[project]\nname = \"p\"\n";
        assert_eq!(parse(base).unwrap().engine, EngineConfig::Local);
        let c = parse(&format!(
            "{base}[engine]\nkind = \"spark\"\nremote = \"sc://spark.internal:15002/;token=hush-42;user_id=etl\"\n"
        ))
        .unwrap();
        assert_eq!(
            format!("{:?}", c.engine),
            r#"Spark { remote: Some("sc://spark.internal:15002/;token=…;user_id=etl") }"#
        );
        let c = parse(&format!("{base}[engine]\nkind = \"spark\"\n")).unwrap();
        assert_eq!(c.engine, EngineConfig::Spark { remote: None });
        for (engine, needle) in [
            ("kind = \"flink\"", "unknown engine `flink`"),
            ("remote = \"sc://h:15002\"", "the engine is local"),
            (
                "kind = \"spark\"\nremote = \"http://h:15002/;token=hush-42\"",
                "`http://h:15002/;token=…` is not a Spark Connect URL",
            ),
            (
                "kind = \"spark\"\nremote = \"sc://:15002\"",
                "names no host",
            ),
            (
                "kind = \"spark\"\nremote = \"sc://h:x;token=hush-42\"",
                "invalid port `x`",
            ),
            (
                "kind = \"spark\"\nremote = \"sc://h/;token\"",
                "parameter without a value",
            ),
        ] {
            let err = first_error(&format!("{base}[engine]\n{engine}\n"));
            assert!(err.contains(needle), "{engine}: {err}");
            assert!(!err.contains("hush-42"), "{engine}: {err}");
        }
    }

    fn parse(text: &str) -> Result<Config> {
        parse_config(text, Path::new("/p/tidemark.toml"), Path::new("/p"))
    }

    fn first_error(text: &str) -> String {
        match parse(text) {
            Err(Error::User(d)) => d[0].to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn default_gates_time_columns_and_run_settings_are_checked() {
        let base = "[project]\nname = \"p\"\n";
        let c = parse(&format!(
            "{base}[model_defaults]\ngates = \"row_count_change(max_pct := 10), unchanged\"\n\
             [sources.\"raw.e\"]\npath = \"data/e\"\nformat = \"delta\"\ntime_column = \"event_date\"\n\
             [run]\nrestate_late = true\n"
        ))
        .unwrap();
        let gates: Vec<String> = c.model_defaults.gates.iter().map(|g| g.text()).collect();
        assert_eq!(gates, ["row_count_change(max_pct := 10)", "unchanged"]);
        assert!(c.run_restate_late);
        let raw_e = ModelName::parse("raw.e").unwrap();
        assert_eq!(c.sources[&raw_e].time_column.as_deref(), Some("event_date"));
        let err = first_error(&format!(
            "{base}[model_defaults]\ngates = \"row_count(max_pct := 1)\"\n"
        ));
        assert!(
            err.contains("invalid model_defaults.gates: unknown gate `row_count`"),
            "{err}"
        );
        let err = first_error(&format!(
            "{base}[sources.\"raw.e\"]\npath = \"e\"\nformat = \"delta\"\ntime_column = \"a b\"\n"
        ));
        assert!(
            err.contains("invalid `time_column` of source `raw.e`"),
            "{err}"
        );
    }

    #[test]
    fn minimal_config_has_defaults() {
        let c = parse("[project]\nname = \"shop\"\n").unwrap();
        assert_eq!(c.name, "shop");
        assert_eq!(c.models_dir, PathBuf::from("/p/models"));
        assert_eq!(c.warehouse, Warehouse::Local(PathBuf::from("/p/warehouse")));
        assert_eq!(c.env_ttl, DEFAULT_ENV_TTL);
        assert!(c.sources.is_empty());
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
[project]
name = "shop"
models = "sql"
warehouse = "s3://bucket/prefix"

[model_defaults]
start = "2024-01-01"
cron = "@hourly"
owner = "data"

[sources."raw.pos"]
path = "data/pos"
format = "delta"
columns = { id = "bigint", ts = "timestamp" }

[environments]
ttl = "3d"
"#,
        )
        .unwrap();
        assert_eq!(c.models_dir, PathBuf::from("/p/sql"));
        assert_eq!(
            c.warehouse,
            Warehouse::ObjectStore("s3://bucket/prefix".into())
        );
        assert_eq!(
            c.model_defaults.cron.as_ref().map(|s| s.expr()),
            Some("@hourly")
        );
        let src = &c.sources[&ModelName::parse("raw.pos").unwrap()];
        assert_eq!(src.path, "/p/data/pos");
        assert_eq!(src.columns["id"], "BIGINT");
        assert_eq!(c.env_ttl, Duration::from_secs(3 * 86400));
    }

    #[test]
    fn unknown_key_is_located() {
        let msg = first_error("[project]\nname = \"shop\"\ncolour = 1\n");
        assert!(msg.contains("unknown field `colour`"), "{msg}");
        assert!(msg.contains("tidemark.toml:3:1"), "{msg}");
    }

    #[test]
    fn bad_values_are_located() {
        let msg = first_error("[project]\nname = \"shop\"\n[model_defaults]\ncron = \"@often\"\n");
        assert!(msg.contains("tidemark.toml:4:8"), "{msg}");
        let msg = first_error("[project]\nname = \"shop\"\nwarehouse = \"ftp://x\"\n");
        assert!(msg.contains("unsupported URL scheme `ftp`"), "{msg}");
        let msg = first_error(
            "[project]\nname = \"shop\"\n[sources.\"a/b\"]\npath = \"x\"\nformat = \"csv\"\n",
        );
        assert!(msg.contains("invalid source name"), "{msg}");
        let msg = first_error("[other]\nx = 1\n");
        assert!(msg.contains("has no `[project]` table"), "{msg}");
    }
}
