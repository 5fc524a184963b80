//! A project: `tidemark.toml`, the model files under the models directory, and the sources.
//!
//! Invariants:
//! - Model files are discovered in sorted path order and parsed in parallel, each exactly once;
//!   the result is independent of thread scheduling.
//! - A [`Project`] only exists when every file loaded and every reference resolved; otherwise
//!   loading returns *all* the errors found, sorted by file and position.
//! - Every model's `parents` are names of models or sources of this project; self-references
//!   are recorded separately and are not edges.
//! - Files are analysed through the analysis cache ([`cache`]); a cached analysis is exactly
//!   what parsing the file gives (the cache's own invariants), so a project never depends on
//!   whether the cache was warm, cold or off.

pub mod audit_files;
pub mod cache;
pub mod config;
#[cfg(test)]
mod fuzz;
pub mod header;
pub mod import;
pub mod macro_files;
pub mod model;
pub mod seed;
pub mod unit_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub use crate::names::ModelName;
pub use config::{
    Config, EngineConfig, Source, SourceFormat, StorageOptions, Warehouse, is_secret_param,
    shown_remote,
};
pub use model::{AuditCall, Kind, Model};

use crate::error::{Diagnostic, Error, Location, Result, did_you_mean, io_error};
use model::Loaded;

/// A loaded and validated project.
#[derive(Debug, Clone)]
pub struct Project {
    /// The configuration.
    pub config: Config,
    /// Models by name.
    pub models: BTreeMap<ModelName, Model>,
    /// Resolved parents of each model (models and sources), self excluded.
    pub parents: BTreeMap<ModelName, BTreeSet<ModelName>>,
    /// Models that read their own previous output.
    pub self_referencing: BTreeSet<ModelName>,
    /// Warnings found while loading (printed by commands; they do not fail them).
    pub warnings: Vec<Diagnostic>,
}

impl Project {
    /// Load the project whose config is at `config_path`.
    pub fn load(config_path: &Path) -> Result<Project> {
        Project::load_at(config_path, None)
    }

    /// [`Project::load`], relative starts resolved against `now` (default: the clock).
    pub fn load_at(
        config_path: &Path,
        now: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Project> {
        Project::configured_through(config::load_config(config_path)?, now, cache::Cache::open)
    }

    /// [`Project::load`] parsing every file, without the analysis cache (benchmarks, and the
    /// property test that compares plans with and without it).
    pub fn load_without_cache(config_path: &Path) -> Result<Project> {
        Project::configured_through(config::load_config(config_path)?, None, |_| {
            cache::Cache::off()
        })
    }

    /// [`Project::load_at`] for a configuration already read (`tidemark.toml` parsed with
    /// [`config::load_config`]): commands that start other work from the configuration while
    /// the model files load.
    pub fn load_configured(
        config: Config,
        now: Option<chrono::DateTime<chrono::Utc>>,
    ) -> Result<Project> {
        Project::configured_through(config, now, cache::Cache::open)
    }

    fn configured_through(
        mut config: Config,
        now: Option<chrono::DateTime<chrono::Utc>>,
        cache: impl FnOnce(&Config) -> cache::Cache,
    ) -> Result<Project> {
        config.model_defaults.now = now;
        let inputs = read_model_files(&config)?;
        Project::from_files_with(config, inputs, cache)
    }

    /// Build a project from file contents (paths relative to the root). Used by `load` and by
    /// commands that read files from elsewhere (e.g. a git revision).
    pub fn from_files(config: Config, files: Vec<(PathBuf, Vec<u8>)>) -> Result<Project> {
        Project::from_files_with(config, files, cache::Cache::open)
    }

    /// [`Project::from_files`] through the analysis cache `cache` makes for the config.
    pub(crate) fn from_files_with(
        mut config: Config,
        files: Vec<(PathBuf, Vec<u8>)>,
        cache: impl FnOnce(&Config) -> cache::Cache,
    ) -> Result<Project> {
        let (py, files): (Vec<_>, Vec<_>) = files
            .into_iter()
            .partition(|(p, _)| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("py")));
        let mut errors = Vec::new();
        let (macros, python_macros, problems) = macro_files::load_all(&config.root);
        errors.extend(problems);
        config.model_defaults.macros = macros;
        config.model_defaults.python_macros = python_macros;
        let mut warnings = Vec::new();
        let python = python_models(&config, &py, &mut warnings);
        let cache = cache(&config);
        let loaded = load_parallel(&config, &files, &cache);
        cache.finish();
        let mut models: BTreeMap<ModelName, Model> = BTreeMap::new();
        let mut disabled = BTreeSet::new();
        // Models whose file failed to load, so that readers are told so, not "unknown table".
        let mut failed: BTreeMap<ModelName, PathBuf> = BTreeMap::new();
        // Model files that may hold inline audits (the others are not copied): the models
        // that have them, and files that did not load and mention them.
        let mut with_audits: Vec<(PathBuf, String)> = Vec::new();
        for (result, (rel, bytes)) in loaded.into_iter().zip(&files) {
            let audits = match &result {
                Loaded::Model(m, _) => m.inline_audits,
                _ => bytes.windows(5).any(|w| w.eq_ignore_ascii_case(b"audit")),
            };
            if audits {
                with_audits.push((rel.clone(), String::from_utf8_lossy(bytes).into_owned()));
            }
            if let Loaded::Failed(d) = &result
                && d.iter().any(Diagnostic::is_error)
                && let Some(name) = declared_name(rel, bytes)
            {
                failed.insert(name, rel.clone());
            }
            match result {
                Loaded::Model(m, w) => {
                    warnings.extend(w);
                    if let Some(first) = models.get(&m.name) {
                        errors.push(
                            Diagnostic::error(format!("model `{}` is defined twice", m.name))
                                .at(m.location.clone())
                                .note(format!("first defined at {}", first.location))
                                .hint("model names must be unique; rename one of them (names are case-insensitive)"),
                        );
                    } else {
                        models.insert(m.name.clone(), *m);
                    }
                }
                Loaded::Disabled(name) => disabled.extend(name),
                Loaded::Failed(d) => {
                    for x in d {
                        if x.is_error() {
                            errors.push(x)
                        } else {
                            warnings.push(x)
                        }
                    }
                }
            }
        }
        for (name, source) in &config.sources {
            if let Some(m) = models.get(name) {
                errors.push(
                    Diagnostic::error(format!(
                        "model `{name}` has the name of a source declared in tidemark.toml"
                    ))
                    .at(m.location.clone())
                    .note(format!("source `{name}` reads `{}`", source.path))
                    .hint("rename the model or the source"),
                );
            }
        }

        // Resolve references and depends_on.
        let mut parents = BTreeMap::new();
        let mut self_referencing = BTreeSet::new();
        let known: Vec<&str> = models
            .keys()
            .chain(config.sources.keys())
            .map(ModelName::as_str)
            .collect();
        for m in models.values() {
            let mut ps = BTreeSet::new();
            let mut reported = BTreeSet::new();
            // Where each reference is written; a location is made only for an error (10,000
            // models have tens of thousands of references).
            enum At<'a> {
                Query(u64, u64),
                Header(&'a Location),
            }
            let refs = m
                .refs
                .iter()
                .map(|r| (r.name.as_str(), At::Query(r.line, r.column)));
            let deps = m
                .depends_on
                .iter()
                .map(|(n, loc)| (n.as_str(), At::Header(loc)));
            for (text, at) in refs.chain(deps) {
                let loc = || match at {
                    At::Query(line, column) => Location::at(&m.file, line, column),
                    At::Header(loc) => loc.clone(),
                };
                let resolved = ModelName::parse(text)
                    .ok()
                    .filter(|n| models.contains_key(n) || config.sources.contains_key(n));
                match resolved {
                    Some(n) if n == m.name => {
                        if m.columns.is_empty() && self_referencing.insert(n.clone()) {
                            errors.push(
                                Diagnostic::error(format!(
                                    "{} reads its own previous output but does not declare its columns",
                                    m.name
                                ))
                                .at(loc())
                                .note("before its first batch the table does not exist yet, so its schema cannot come from it")
                                .hint("declare the output columns in the MODEL header, e.g. `columns (ds VARCHAR, total DOUBLE)`"),
                            );
                        }
                        self_referencing.insert(n);
                    }
                    Some(n) => {
                        ps.insert(n);
                    }
                    None if reported.insert(text) => errors.push(unknown_table(
                        text,
                        loc(),
                        &known,
                        &Unloaded {
                            disabled: &disabled,
                            failed: &failed,
                            python: &python,
                        },
                        &m.name,
                    )),
                    None => {}
                }
            }
            parents.insert(m.name.clone(), ps);
        }

        check_audits(&config, &models, &with_audits, &mut errors);

        if !errors.is_empty() {
            errors.sort_by(|a, b| a.location.cmp(&b.location));
            return Err(Error::User(errors));
        }
        warnings.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(Project {
            config,
            models,
            parents,
            self_referencing,
            warnings,
        })
    }

    /// Is `name` an external source?
    pub fn is_source(&self, name: &ModelName) -> bool {
        self.config.sources.contains_key(name)
    }
}

/// Every model file of the project with its bytes, in sorted path order.
fn read_model_files(config: &Config) -> Result<Vec<(PathBuf, Vec<u8>)>> {
    let files = discover(config)?;
    // In parallel: with the analysis cache warm, reading is a large part of a load.
    let read = in_parallel(&files, |rel| {
        std::fs::read(config.root.join(rel)).map_err(|e| Error::from(io_error("read", rel, &e)))
    });
    files
        .into_iter()
        .zip(read)
        .map(|(rel, bytes)| {
            let bytes = bytes
                .ok_or_else(|| Error::Bug("a thread reading model files panicked".to_string()))??;
            Ok((rel, bytes))
        })
        .collect()
}

/// Models that exist but did not load: disabled ones, files that failed, Python models.
struct Unloaded<'a> {
    disabled: &'a BTreeSet<ModelName>,
    failed: &'a BTreeMap<ModelName, PathBuf>,
    python: &'a BTreeMap<ModelName, PathBuf>,
}

fn unknown_table(
    text: &str,
    loc: Location,
    known: &[&str],
    unloaded: &Unloaded<'_>,
    reader: &ModelName,
) -> Diagnostic {
    let name = ModelName::parse(text).ok();
    if let Some(n) = name.as_ref().filter(|n| unloaded.disabled.contains(*n)) {
        return Diagnostic::error(format!("`{n}` is a disabled model"))
            .at(loc)
            .hint(format!(
                "enable `{n}` (enabled true) or stop reading from it"
            ));
    }
    if let Some((n, file)) = name.as_ref().and_then(|n| unloaded.failed.get_key_value(n)) {
        return Diagnostic::error(format!(
            "`{n}` is defined in `{}`, which failed to load",
            file.display()
        ))
        .at(loc)
        .hint(format!("fix the errors reported for `{}`", file.display()));
    }
    if let Some((n, file)) = name.as_ref().and_then(|n| unloaded.python.get_key_value(n)) {
        return Diagnostic::error(format!(
            "`{n}` is the Python model `{}`, which tidemark does not run",
            file.display()
        ))
        .at(loc)
        .hint(format!(
            "declare what it produces as a source in tidemark.toml: [sources.\"{n}\"] with its `path`, `format` and `columns`"
        ));
    }
    // Never suggest the reading model to itself.
    let others = known.iter().copied().filter(|k| *k != reader.as_str());
    let hint = did_you_mean(&text.to_lowercase(), others).unwrap_or_else(|| {
        "every table a model reads must be a model of this project or a source in tidemark.toml ([sources.\"schema.table\"])".to_string()
    });
    Diagnostic::error(format!("unknown table `{text}`"))
        .at(loc)
        .hint(hint)
}

/// The name a model file declares (`name x.y` in its header), else the one its path gives.
fn declared_name(rel: &Path, bytes: &[u8]) -> Option<ModelName> {
    let text = std::str::from_utf8(bytes).ok()?;
    let src = header::Src { file: rel, text };
    let declared = header::split(src).ok().and_then(|split| {
        let p = split.properties?.into_iter().find(|p| p.key == "name")?;
        let parts = header::ident_parts(src, "name", &p.value).ok()?;
        ModelName::from_parts(&parts, true).ok()
    });
    declared.or_else(|| model::default_name(rel).ok())
}

/// Python model files: their names (the first string of `@model(...)`, else the path's); a
/// warning for each that no source of tidemark.toml stands in for.
fn python_models(
    config: &Config,
    files: &[(PathBuf, Vec<u8>)],
    warnings: &mut Vec<Diagnostic>,
) -> BTreeMap<ModelName, PathBuf> {
    let mut out = BTreeMap::new();
    for (rel, bytes) in files {
        let text = String::from_utf8_lossy(bytes);
        let Some(at) = text.find("@model") else {
            continue; // a helper module, not a model
        };
        let rest = text[at + "@model".len()..].trim_start();
        let quoted = rest.strip_prefix('(').map(str::trim_start).and_then(|r| {
            let q = r.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let inner = &r[1..];
            inner.find(q).map(|end| inner[..end].to_string())
        });
        let name = quoted
            .and_then(|n| ModelName::parse(&n).ok())
            .or_else(|| model::default_name(rel).ok());
        let Some(name) = name else { continue };
        if !config.sources.contains_key(&name) {
            let (l, c) = crate::error::line_col(&text, at);
            warnings.push(
                Diagnostic::warning(format!(
                    "`{}` is the Python model `{name}`, which tidemark does not run",
                    rel.display()
                ))
                .at(Location::at(rel, l, c))
                .hint(format!(
                    "declare what it produces as a source in tidemark.toml ([sources.\"{name}\"] with `path`, `format` and `columns`), so that the models reading it load"
                )),
            );
        }
        out.insert(name, rel.clone());
    }
    out
}

/// The text of every `.sql` file under the models directory (unreadable ones left out: the
/// project load reports them), for the inline audits that commands read with the audit files.
pub fn model_sources(config: &Config) -> Vec<(PathBuf, String)> {
    discover(config)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("sql")))
        .filter_map(|rel| {
            std::fs::read_to_string(config.root.join(&rel))
                .ok()
                .map(|t| (rel, t))
        })
        .collect()
}

/// Every `.sql` (and Python model `.py`) file under the models directory, relative to the project root, sorted.
/// Hidden files and directories (starting with `.`) are skipped.
fn discover(config: &Config) -> Result<Vec<PathBuf>> {
    let dir = &config.models_dir;
    if !dir.is_dir() {
        let shown = dir.strip_prefix(&config.root).unwrap_or(dir);
        return Err(Diagnostic::error(format!(
            "the models directory `{}` does not exist",
            shown.display()
        ))
        .at(Location::file(
            config
                .path
                .file_name()
                .map(PathBuf::from)
                .unwrap_or_default(),
        ))
        .hint("create it, or set `models = \"...\"` under [project] in tidemark.toml")
        .into());
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.clone()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| Error::from(io_error("list", &d, &e)))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::from(io_error("list", &d, &e)))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let ft = entry
                .file_type()
                .map_err(|e| Error::from(io_error("inspect", &path, &e)))?;
            if ft.is_dir() || (ft.is_symlink() && path.is_dir()) {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("sql") || e.eq_ignore_ascii_case("py"))
            {
                out.push(
                    path.strip_prefix(&config.root)
                        .map(Path::to_path_buf)
                        .unwrap_or(path),
                );
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Parse every file (through the analysis cache), in parallel, preserving input order.
fn load_parallel(
    config: &Config,
    files: &[(PathBuf, Vec<u8>)],
    cache: &cache::Cache,
) -> Vec<Loaded> {
    in_parallel(files, |(rel, bytes)| {
        cache.load(rel, bytes, || analyse(config, rel, bytes))
    })
    .into_iter()
    .map(|r| {
        r.unwrap_or_else(|| {
            Loaded::Failed(vec![Diagnostic::error(
                "internal error: a model loader thread panicked; this is a bug in tidemark",
            )])
        })
    })
    .collect()
}

/// `f` of every item, one thread per core, in input order; `None` where a thread panicked.
pub(crate) fn in_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<Option<R>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    if threads <= 1 {
        return items.iter().map(|i| Some(f(i))).collect();
    }
    let chunk = items.len().div_ceil(threads).max(1);
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                (
                    c.len(),
                    s.spawn(move || c.iter().map(f).collect::<Vec<_>>()),
                )
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| match h.join() {
                Ok(v) => v.into_iter().map(Some).collect(),
                Err(_) => (0..n).map(|_| None).collect::<Vec<_>>(),
            })
            .collect()
    })
}

/// Parse one model file.
fn analyse(config: &Config, rel: &Path, bytes: &[u8]) -> Loaded {
    match std::str::from_utf8(bytes) {
        Ok(text) => model::build(
            &config.root,
            rel,
            text,
            &config.model_defaults,
            config.dialect(),
        ),
        Err(e) => {
            let valid = &bytes[..e.valid_up_to()];
            let text = String::from_utf8_lossy(valid);
            let (l, c) = crate::error::line_col(&text, text.len());
            Loaded::Failed(vec![
                Diagnostic::error("the file is not valid UTF-8")
                    .at(Location::at(rel, l, c))
                    .hint("save the model file as UTF-8"),
            ])
        }
    }
}

/// The first macro call (`@name(…)`) in an audit argument's SQL, lower-cased.
fn macro_call(value: &str) -> Option<String> {
    // String literals blanked: an `@` inside one is text.
    let mut quoted = false;
    let lower: String = value
        .to_lowercase()
        .chars()
        .map(|c| {
            if c == '\'' {
                quoted = !quoted;
            }
            if quoted { ' ' } else { c }
        })
        .collect();
    let mut rest = lower.as_str();
    while let Some(i) = rest.find('@') {
        let name: String = rest[i + 1..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let after = rest[i + 1 + name.len()..].trim_start();
        if !name.is_empty() && after.starts_with('(') {
            return Some(name);
        }
        rest = &rest[i + 1..];
    }
    None
}

/// Every custom audit a model names exists in the project's audit files and gets every
/// argument its query uses (from the call or the audit's defaults); the files parse.
fn check_audits(
    config: &Config,
    models: &BTreeMap<ModelName, Model>,
    files: &[(PathBuf, String)],
    errors: &mut Vec<Diagnostic>,
) {
    let (defs, problems) = audit_files::load_all(&config.root, config.dialect(), files);
    errors.extend(problems);
    for m in models.values() {
        for (i, a) in m.audits.iter().enumerate() {
            let at = m
                .audit_locations
                .get(i)
                .cloned()
                .unwrap_or_else(|| m.location.clone());
            // A macro call in an argument (`threshold := @python_macro()`) cannot run.
            for (arg, value) in &a.args {
                if let Some(call) = macro_call(value) {
                    let d = match config.model_defaults.python_macros.get(&call) {
                        Some(py) => Diagnostic::error(format!(
                            "argument `{arg}` of audit `{}` calls `@{call}`, a Python macro (`{}`); tidemark cannot run Python",
                            a.name,
                            py.display()
                        )),
                        None => Diagnostic::error(format!(
                            "argument `{arg}` of audit `{}` calls the macro `@{call}`, which audit arguments cannot use",
                            a.name
                        )),
                    };
                    errors.push(d.at(at.clone()).hint("give the argument as a value (`threshold := 10`) or a project variable (`@name`)"));
                }
            }
            if model::is_builtin_audit(&a.name) {
                continue;
            }
            let Some(def) = defs.get(&a.name) else {
                let names = defs
                    .keys()
                    .map(String::as_str)
                    .chain(model::BUILTIN_AUDITS.iter().map(|(n, _, _)| *n));
                let hint = crate::error::did_you_mean(&a.name, names).unwrap_or_else(|| {
                    "custom audits are `AUDIT (name ...)` blocks (or bare queries named by their file) in `audits/*.sql`".to_string()
                });
                errors.push(
                    Diagnostic::error(format!("unknown audit `{}`", a.name))
                        .at(at)
                        .hint(hint),
                );
                continue;
            };
            if !def.parsed {
                continue;
            }
            let missing: Vec<&String> = def
                .params
                .iter()
                .filter(|p| !a.args.contains_key(*p) && !def.defaults.contains_key(*p))
                .collect();
            if let Some(p) = missing.first() {
                errors.push(
                    Diagnostic::error(format!(
                        "{} calls audit `{}` without its argument `{p}`",
                        m.name, a.name
                    ))
                    .at(at)
                    .note(format!("the audit is defined at {} and uses @{p}", def.location))
                    .hint(format!("write `{}({p} := ...)`, or give `{p}` a default in the audit's `defaults (...)`", a.name)),
                );
            }
        }
    }
}

/// The files directly in `root/dir` whose extension is one of `extensions`, sorted, as (path
/// relative to `root`, text); one that cannot be read is an error in `errors` (none when the
/// directory is absent).
fn read_files(
    root: &Path,
    dir: &str,
    extensions: &[&str],
    errors: &mut Vec<Diagnostic>,
) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.contains(&x))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|abs| {
            let rel = abs.strip_prefix(root).unwrap_or(&abs).to_path_buf();
            match std::fs::read_to_string(&abs) {
                Ok(text) => Some((rel, text)),
                Err(e) => {
                    errors.push(io_error("read", &rel, &e));
                    None
                }
            }
        })
        .collect()
}

#[cfg(test)]
mod macro_call_tests {
    #[test]
    fn macro_calls_in_audit_arguments_are_found_outside_strings() {
        assert_eq!(
            super::macro_call("@Threshold_Of(1) + 2").as_deref(),
            Some("threshold_of")
        );
        assert_eq!(super::macro_call("'a@b(c)' || @x"), None);
        assert_eq!(super::macro_call("@start_ds"), None);
    }
}
