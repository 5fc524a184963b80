//! `tidemark query`: read-only SQL over an environment's virtual layer, and the catalog of an
//! environment shared with `env show`.

use std::collections::BTreeMap;

use datafusion::arrow::record_batch::RecordBatch;

use super::apply::engine;
use super::emit;
use crate::backfill::catalog::{Catalog, Entry};
use crate::cli::{Context, QueryFormat};
use crate::engine::Engine;
use crate::error::{Diagnostic, Error, Result};
use crate::project::{Config, ModelName};
use crate::state::State;

/// Run `query`.
pub fn run(
    ctx: &Context,
    env: &str,
    sql: &str,
    format: QueryFormat,
    out: &mut dyn std::io::Write,
) -> Result<u8> {
    let (config, store) = super::warehouse(ctx)?;
    let state = store.read()?;
    let engine = engine(&config)?;
    let batches = query(&engine, &config, &state, env, sql, ctx.execution_time)?;
    emit(out, &format_batches(&batches, format)?)?;
    Ok(0)
}

/// The catalog of environment `env` at its pinned versions.
pub fn env_catalog<'a>(
    config: &'a Config,
    state: &State,
    env: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Catalog<'a>> {
    let e = state
        .environment(env)
        .ok_or_else(|| unknown_env(state, env))?;
    let mut entries = BTreeMap::new();
    for (name, m) in &e.models {
        let snapshot = state
            .snapshots
            .get(&m.snapshot)
            .ok_or_else(|| Error::Bug(format!("environment {env} refers to a missing snapshot")))?;
        entries.insert(
            name.clone(),
            Entry {
                snapshot: snapshot.clone(),
                table: m.table.clone(),
                version: m.table_version,
            },
        );
    }
    Ok(Catalog::new(
        entries,
        &config.sources,
        e.source_versions.clone(),
        now,
    ))
}

/// "No environment named ..." with the known ones.
pub fn unknown_env(state: &State, env: &str) -> Error {
    let known = state.environments.keys().map(String::as_str);
    let hint = crate::error::did_you_mean(env, known.clone()).unwrap_or_else(|| {
        let names: Vec<&str> = known.collect();
        if names.is_empty() {
            "nothing has been applied yet: run `tidemark plan --apply`".to_string()
        } else {
            format!("environments: {}", names.join(", "))
        }
    });
    Error::from(Diagnostic::error(format!("no environment named `{env}`")).hint(hint))
}

/// Run `sql` against environment `env`.
pub fn query(
    engine: &dyn Engine,
    config: &Config,
    state: &State,
    env: &str,
    sql: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RecordBatch>> {
    let catalog = env_catalog(config, state, env, now)?;
    // Register what the SQL reads: the tables it references (CTEs excluded) that name a model
    // or a source. Parsing first also keeps `query` to one read-only SELECT.
    let parsed = crate::sql::parse_query(std::path::Path::new("<query>"), sql).map_err(|d| {
        Error::from(d.hint("`query` runs one SELECT (or WITH ... SELECT) statement"))
    })?;
    let mut roots: Vec<ModelName> = crate::sql::analyze(&parsed)
        .tables
        .iter()
        .filter_map(|t| ModelName::parse(&t.name).ok())
        .filter(|n| catalog.entries.contains_key(n) || config.sources.contains_key(n))
        .collect();
    roots.sort();
    roots.dedup();
    let inputs = catalog.inputs(&roots)?;
    engine.query(&inputs, sql)
}

/// Render query results.
pub fn format_batches(batches: &[RecordBatch], format: QueryFormat) -> Result<String> {
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
                    w.write(b).map_err(bug)?;
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
