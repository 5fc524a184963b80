//! One module per subcommand. Each takes the [`Settings`], its own resolved arguments and the
//! stdout writer, and returns the [`ExitStatus`]: settings → domain call → output.
//!
//! Invariants:
//! - No command module imports another; what several share lives here (loading, output).
//! - Data goes to `out` through [`emit`]; everything else through the settings' printer.
//! - A failed write to `out` fails the command, except a closed pipe (`| head`): then nobody
//!   is left to read the rest.

pub mod apply;
pub mod dag;
pub mod diff;
pub mod env;
pub mod info;
pub mod init;
pub mod janitor;
pub mod log;
pub mod plan;
pub mod progress;
pub mod promote;
pub mod query;
pub mod recall;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod run;
pub mod state;
pub mod test;

use std::collections::BTreeMap;

use crate::dag::Dag;
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::fingerprint::{Fingerprint, fingerprint_all};
use crate::plan::Plan;
use crate::project::{ModelName, Project, config};
use crate::settings::{PlanFormat, QueryFormat, Settings};

/// A project with its graph and fingerprints: what most commands start from.
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// Its graph.
    pub dag: Dag,
    /// Fingerprints of every node.
    pub fingerprints: BTreeMap<ModelName, Fingerprint>,
}

/// The project's `tidemark.toml`: `--project`, or found by walking up from the current directory.
pub fn config_path(ctx: &Settings) -> Result<std::path::PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| {
        crate::error::Error::from(crate::error::io_error(
            "read",
            std::path::Path::new("."),
            &e,
        ))
    })?;
    config::find_config(ctx.project.as_deref(), &cwd)
}

/// The configuration and state store, for commands that work on the warehouse only (no model
/// files needed).
pub fn warehouse(ctx: &Settings) -> Result<(config::Config, crate::state::StateStore)> {
    let config = config::load_config(&config_path(ctx)?)?;
    let store = crate::state::StateStore::open_with(&config.warehouse, &config.storage)?;
    Ok((config, store))
}

/// Find, load and validate the project, print its warnings, build the graph, fingerprint it.
pub fn load(ctx: &Settings) -> Result<Loaded> {
    let path = config_path(ctx)?;
    checked(ctx, Project::load_at(&path, Some(ctx.execution_time))?)
}

/// [`load`], reading the warehouse's latest state on another thread meanwhile (on a large
/// project both take a few hundred milliseconds and neither needs the other): the project,
/// the state store and the state. A problem with the project is reported before one with the
/// state, as when one is done after the other.
pub fn load_with_state(
    ctx: &Settings,
) -> Result<(Loaded, crate::state::StateStore, crate::state::State)> {
    let config = config::load_config(&config_path(ctx)?)?;
    let (loaded, read) = std::thread::scope(|s| {
        let reading = s.spawn(|| {
            let store = crate::state::StateStore::open_with(&config.warehouse, &config.storage)?;
            let state = store.read()?;
            Ok::<_, Error>((store, state))
        });
        let loaded = Project::load_configured(config.clone(), Some(ctx.execution_time))
            .and_then(|project| checked(ctx, project));
        let read = reading
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (loaded, read)
    });
    let loaded = loaded?;
    let (store, state) = read?;
    Ok((loaded, store, state))
}

/// Print a loaded project's warnings, check its function calls, build its graph and
/// fingerprints.
fn checked(ctx: &Settings, project: Project) -> Result<Loaded> {
    ctx.printer.diagnostics(&project.warnings);
    check_functions(&project)?;
    let dag = Dag::build(&project)?;
    let fingerprints = fingerprint_all(&project, &dag);
    Ok(Loaded {
        project,
        dag,
        fingerprints,
    })
}

/// Let go of a command's large, plain-data values (a loaded project, the state, a plan) without
/// freeing them allocation by allocation: the command returns to `main`, which exits, and the
/// exit returns all of it at once. On a 10,000-model project dropping them one by one takes
/// tens of milliseconds. Never for values whose drop does something (files, leases, servers).
pub fn release<T>(values: T) {
    std::mem::forget(values);
}

/// Width of a name column: the longest name, at least 5 (`model`).
pub fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(5).max(5)
}

/// `value` as pretty JSON and a newline: the one JSON form of command output.
pub fn json_text(value: &impl serde::Serialize) -> Result<String> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Bug(format!("serializing JSON output: {e}")))?;
    Ok(format!("{text}\n"))
}

/// Write `value` as pretty JSON, then a newline, to `out`.
pub fn emit_json(out: &mut dyn std::io::Write, value: &impl serde::Serialize) -> Result<()> {
    emit(out, &json_text(value)?)
}

/// Write all of `text` to `out`. A closed pipe is success (nobody is left to read the rest);
/// any other failure (a full disk behind `> plan.txt`) fails the command.
pub fn emit(out: &mut dyn std::io::Write, text: &str) -> Result<()> {
    stdout_result(out.write_all(text.as_bytes()))
}

/// Flush `out`, with the same rule as [`emit`].
pub fn flushed(out: &mut dyn std::io::Write) -> Result<()> {
    stdout_result(out.flush())
}

fn stdout_result(r: std::io::Result<()>) -> Result<()> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Diagnostic::error("cannot write the output")
            .caused_by(e)
            .hint("check that the disk or the file that standard output goes to can be written")
            .into()),
    }
}

/// Print a plan in the chosen format.
pub fn show_plan(plan: &Plan, format: PlanFormat, out: &mut dyn std::io::Write) -> Result<()> {
    let text = match format {
        PlanFormat::Text => crate::plan::render::text(plan),
        PlanFormat::Markdown => crate::plan::render::markdown(plan),
        PlanFormat::Json => crate::plan::file::to_json(plan)?,
    };
    emit(out, &text)
}

/// Apply `plan` to its environment ([`crate::env::apply`]) and print what it did.
// The four commands that apply share this one call; a struct for its arguments would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub fn apply_and_show(
    ctx: &Settings,
    config: &config::Config,
    store: &crate::state::StateStore,
    state: &crate::state::State,
    plan: &Plan,
    trigger: crate::env::apply::Trigger,
    resume: Option<&crate::names::ApplyId>,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let applied = crate::env::apply::apply(&crate::env::apply::Request {
        config,
        store,
        state,
        plan,
        exec: &ctx.exec,
        printer: ctx.printer,
        trigger,
        resume,
    })?;
    show_applied(ctx, &applied, &plan.environment, out)
}

/// Print what an apply did: the per-model table on `out`; rows dropped outside their windows
/// and non-blocking audit findings as warnings on stderr.
pub fn show_applied(
    ctx: &Settings,
    applied: &crate::env::apply::Applied,
    env: &str,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    use crate::printer::{human_bytes, plural};
    let report = &applied.report;
    let mut s = String::new();
    if !report.models.is_empty() {
        let w = name_width(report.models.iter().map(|m| m.name.as_str()));
        s.push_str(&format!(
            "{:<w$}  {:>7}  {:>10}  {:>10}  {:>7}\n",
            "model", "batches", "rows", "bytes", "seconds"
        ));
        for m in &report.models {
            s.push_str(&format!(
                "{:<w$}  {:>7}  {:>10}  {:>10}  {:>7.2}\n",
                m.name,
                m.batches,
                m.rows,
                human_bytes(m.bytes),
                m.seconds
            ));
        }
        let rows: u64 = report.models.iter().map(|m| m.rows).sum();
        let batches: u64 = report.models.iter().map(|m| m.batches).sum();
        s.push_str(&format!(
            "{}, {} in {:.2} s\n",
            plural(batches, "batch", "batches"),
            plural(rows, "row", "rows"),
            applied.seconds
        ));
        for m in &report.models {
            if m.dropped > 0 {
                ctx.printer.warning(&format!(
                    "`{}` returned {} outside its windows; they were not written",
                    m.name,
                    plural(m.dropped, "row", "rows")
                ));
            }
            for (a, n) in &m.warnings {
                ctx.printer.warning(&format!(
                    "non-blocking audit `{a}` of `{}` found {}",
                    m.name,
                    plural(*n, "row", "rows")
                ));
            }
        }
    }
    s.push_str(&format!(
        "`{env}` is now at revision {}\n",
        applied.revision
    ));
    emit(out, &s)?;
    Ok(ExitStatus::Success)
}

/// Render query results.
pub fn format_batches(
    batches: &[datafusion::arrow::record_batch::RecordBatch],
    format: QueryFormat,
) -> Result<String> {
    let bug =
        |e: datafusion::arrow::error::ArrowError| Error::Bug(format!("formatting results: {e}"));
    match format {
        QueryFormat::Table => Ok(format!(
            "{}\n",
            datafusion::arrow::util::pretty::pretty_format_batches(batches).map_err(bug)?
        )),
        QueryFormat::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(&nested_as_text(b).map_err(bug)?).map_err(bug)?;
                }
            }
            String::from_utf8(buf).map_err(|e| Error::Bug(e.to_string()))
        }
        QueryFormat::Json => {
            let mut buf = Vec::new();
            {
                let mut w = datafusion::arrow::json::ArrayWriter::new(&mut buf);
                for b in batches {
                    w.write(b).map_err(bug)?;
                }
                w.finish().map_err(bug)?;
            }
            let mut s = String::from_utf8(buf).map_err(|e| Error::Bug(e.to_string()))?;
            if s.is_empty() {
                s.push_str("[]");
            }
            s.push('\n');
            Ok(s)
        }
    }
}

/// Parse the instant given to `flag` (`--start`, `--end`).
pub fn parse_instant_arg(flag: &'static str) -> impl Fn(&str) -> Result<crate::interval::Instant> {
    move |s| {
        crate::interval::parse_instant(s)
            .map_err(|r| Error::from(Diagnostic::error(format!("invalid `{flag}`: {r}"))))
    }
}

/// What the Delta sources the environment `env` read changed since (late-data detection): for
/// each source it read at a version, still declared as Delta, the source's commits after that
/// version. Nothing is read for an environment that does not exist or read no Delta source.
pub fn source_logs(
    config: &config::Config,
    state: &crate::state::State,
    env: &str,
) -> Result<BTreeMap<ModelName, crate::engine::SourceLog>> {
    let mut out = BTreeMap::new();
    let Some(e) = state.environment(env) else {
        return Ok(out);
    };
    let read: Vec<(&ModelName, u64, &config::Source)> = e
        .source_versions
        .iter()
        .filter_map(|(n, v)| {
            let s = config.sources.get(n)?;
            let since = e.late_since.get(n).copied().unwrap_or(*v);
            (s.format == config::SourceFormat::Delta).then_some((n, since, s))
        })
        .collect();
    if read.is_empty() {
        return Ok(out);
    }
    let engine = crate::engine::open(config)?;
    for (name, version, source) in read {
        let log = engine
            .source_log(&source.path, version, source.time_column.as_deref())
            .map_err(|e| {
                e.map_diagnostics(|d| {
                    let message = format!(
                        "cannot read what the source `{name}` changed since version {version}: {}",
                        d.message
                    );
                    crate::error::Diagnostic { message, ..d }
                })
            })?;
        out.insert(name.clone(), log);
    }
    Ok(out)
}

/// `b` with its nested columns (structs, lists, maps), which CSV cannot hold, as their text
/// (`{a: 1, b: x}`, `[1, 2]`), as the table format shows them.
fn nested_as_text(
    b: &datafusion::arrow::record_batch::RecordBatch,
) -> std::result::Result<
    datafusion::arrow::record_batch::RecordBatch,
    datafusion::arrow::error::ArrowError,
> {
    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let schema = b.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(b.clone());
    }
    let mut fields = Vec::with_capacity(b.num_columns());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(b.num_columns());
    for (f, c) in schema.fields().iter().zip(b.columns()) {
        if f.data_type().is_nested() {
            let fmt = ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default())?;
            let text: StringArray = (0..c.len())
                .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
                .collect();
            fields.push(Field::new(f.name(), DataType::Utf8, true));
            columns.push(std::sync::Arc::new(text));
        } else {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    datafusion::arrow::record_batch::RecordBatch::try_new(
        std::sync::Arc::new(Schema::new(fields)),
        columns,
    )
}

/// On the built-in engine, every function a model calls exists (after the translation of other
/// dialects' names): a missing one is an error at its `file:line:col` now, not at apply. (A
/// Spark engine checks its models before an apply writes anything.)
fn check_functions(project: &Project) -> Result<()> {
    if project.config.dialect() != crate::sql::Dialect::DataFusion {
        return Ok(());
    }
    let known = crate::engine::function_names();
    let mut errors = Vec::new();
    for m in project.models.values() {
        let mut seen = std::collections::BTreeSet::new();
        for (name, line, column) in &m.functions {
            if known.contains(name) || crate::sql::SQL_SPECIAL.contains(&name.as_str()) {
                continue;
            }
            if !seen.insert(name) {
                continue;
            }
            let (line, column) = (*line, *column);
            let hint = crate::error::did_you_mean(name, known.iter().map(String::as_str))
                .unwrap_or_else(|| "see the functions of DataFusion's SQL, and the translations of DuckDB, Trino and BigQuery functions in docs/sqlmesh.md".to_string());
            errors.push(
                crate::error::Diagnostic::error(format!("unknown function `{name}`"))
                    .at(crate::error::Location::at(&m.file, line, column))
                    .hint(hint),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        errors.sort_by(|a, b| a.location.cmp(&b.location));
        Err(crate::error::Error::User(errors))
    }
}
