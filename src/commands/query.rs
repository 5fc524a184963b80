//! `tidemark query`: read-only SQL over an environment's virtual layer.

use datafusion::arrow::record_batch::RecordBatch;

use super::{emit, format_batches, warehouse};
use crate::backfill::catalog::Catalog;
use crate::engine::Engine;
use crate::error::{Error, ExitStatus, Result};
use crate::names::EnvName;
use crate::project::{Config, EngineConfig, ModelName};
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
    let batches = match &config.engine {
        EngineConfig::Spark { remote } => {
            // Before the first apply there is no environment, and no model table to read.
            let roots = match state.environments.contains_key(env.as_str()) {
                true => {
                    let catalog = crate::env::catalog(&config, &state, env, ctx.execution_time)?;
                    roots(&config, &catalog, sql)?
                }
                false => Vec::new(),
            };
            if let Some(first) = roots.first() {
                return Err(crate::error::Diagnostic::error(format!(
                    "this tidemark cannot read the project's tables on Spark yet (the query reads `{first}`)"
                ))
                .note("on a Spark engine, `query` runs SQL that reads no model or source (e.g. to check the server)")
                .hint("remove the `[engine]` table to query the pinned tables on the built-in engine")
                .into());
            }
            crate::engine::spark_query(remote.as_deref(), sql)?
        }
        EngineConfig::Local => {
            let engine = crate::engine::open(&config)?;
            query(&engine, &config, &state, env, sql, ctx.execution_time)?
        }
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
