//! `tidemark query`: read-only SQL over an environment's virtual layer.

use datafusion::arrow::record_batch::RecordBatch;

use super::{emit, format_batches, warehouse};
use crate::backfill::catalog::Catalog;
use crate::engine::Engine;
use crate::error::{Error, ExitStatus, Result};
use crate::names::EnvName;
use crate::project::{Config, EngineConfig, ModelName};
use crate::settings::{QueryEngine, QueryFormat, Settings};
use crate::state::State;

/// Run `query`.
pub fn run(
    ctx: &Settings,
    env: &EnvName,
    sql: &str,
    format: QueryFormat,
    on: QueryEngine,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (mut config, store) = warehouse(ctx)?;
    let state = store.read()?;
    let engine: Box<dyn Engine + Sync> = match on {
        QueryEngine::Project => crate::engine::open(&config)?,
        QueryEngine::Local => {
            // The SQL is DataFusion SQL, read as such.
            config.engine = EngineConfig::Local;
            Box::new(crate::engine::LocalEngine::for_warehouse(
                &config.warehouse,
                &config.storage,
            )?)
        }
    };
    // On Spark, SQL that reads no project table (e.g. to check the server) runs before the
    // first apply too.
    let batches = match (
        &config.engine,
        state.environments.contains_key(env.as_str()),
    ) {
        (EngineConfig::Spark { .. }, false) => engine.query(&[], sql)?,
        _ => query(
            engine.as_ref(),
            &config,
            &state,
            env,
            sql,
            ctx.execution_time,
        )?,
    };
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
    let roots = roots(config, &catalog, sql)?;
    let inputs = catalog.inputs(&roots)?;
    engine.query(&inputs, sql)
}

/// The models and sources `sql` reads (CTEs excluded), in name order. Parsing first also keeps
/// `query` to one read-only SELECT.
fn roots(config: &Config, catalog: &Catalog<'_>, sql: &str) -> Result<Vec<ModelName>> {
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
    Ok(roots)
}
