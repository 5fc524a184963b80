//! `tidemark query`: read-only SQL over an environment's virtual layer.

use datafusion::arrow::record_batch::RecordBatch;

use super::{emit, format_batches, warehouse};
use crate::engine::Engine;
use crate::error::{Error, ExitStatus, Result};
use crate::names::EnvName;
use crate::project::{Config, ModelName};
use crate::settings::{QueryFormat, Settings};
use crate::state::State;

/// Run `query`.
pub fn run(
    ctx: &Settings,
    env: &EnvName,
    sql: &str,
    format: QueryFormat,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (config, store) = warehouse(ctx)?;
    let state = store.read()?;
    let engine = crate::engine::open(&config)?;
    let batches = query(&engine, &config, &state, env, sql, ctx.execution_time)?;
    emit(out, &format_batches(&batches, format)?)?;
    Ok(ExitStatus::Success)
}

/// Run `sql` against environment `env`.
fn query(
    engine: &dyn Engine,
    config: &Config,
    state: &State,
    env: &str,
    sql: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Vec<RecordBatch>> {
    let catalog = crate::env::catalog(config, state, env, now)?;
    // Register what the SQL reads: the tables it references (CTEs excluded) that name a model
    // or a source. Parsing first also keeps `query` to one read-only SELECT.
    let parsed = crate::sql::parse_query(std::path::Path::new("<query>"), sql, config.dialect())
        .map_err(|d| {
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
