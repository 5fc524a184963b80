//! DataFusion sessions in which logical model names resolve to pinned physical tables.
//!
//! Invariant: every name a query can read is registered explicitly from the job's inputs, at
//! the version the caller chose; the physical partition column is projected away, so SQL sees
//! exactly the columns the model's query produced. A table at a pinned version is read from
//! the followed file list ([`super::listed`]) when that list can answer for the version, and
//! through delta-rs otherwise; both read the same files with the same columns.

use std::sync::Arc;

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemorySchemaProvider, TableProvider};
use datafusion::common::TableReference;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionContext};

use super::{Input, LocalEngine, Location, PARTITION_COLUMN, delta, failed};
use crate::error::{Diagnostic, Error, Result};
use crate::project::{ModelName, SourceFormat};

/// A Delta-aware session (delta-rs needs its planner for writes). All sessions share one
/// runtime environment (memory pool, object stores, caches) instead of building one per batch.
pub fn new_context() -> SessionContext {
    static RUNTIME: std::sync::OnceLock<Arc<datafusion::execution::runtime_env::RuntimeEnv>> =
        std::sync::OnceLock::new();
    let env = RUNTIME
        .get_or_init(|| Arc::new(datafusion::execution::runtime_env::RuntimeEnv::default()))
        .clone();
    let ctx = deltalake::delta_datafusion::DeltaSessionContext::with_runtime_env(env).into_inner();
    for f in super::json::functions() {
        ctx.register_udf(f);
    }
    ctx
}

/// A session with every input registered under its logical name.
pub async fn context(engine: &LocalEngine, inputs: &[Input]) -> Result<SessionContext> {
    let ctx = new_context();
    for input in inputs {
        register(engine, &ctx, input).await?;
    }
    Ok(ctx)
}

/// The reference DataFusion resolves `name` to, creating its schema (and catalog) on demand.
fn reference(ctx: &SessionContext, name: &ModelName) -> Result<TableReference> {
    let parts: Vec<&str> = name.parts().collect();
    let (catalog, schema, table) = match parts.as_slice() {
        [t] => return Ok(TableReference::bare(t.to_string())),
        [s, t] => ("datafusion", *s, *t),
        [c, s, t] => (*c, *s, *t),
        _ => return Err(Error::Bug(format!("model name with {} parts", parts.len()))),
    };
    let cat = match ctx.catalog(catalog) {
        Some(c) => c,
        None => {
            let c: Arc<dyn datafusion::catalog::CatalogProvider> =
                Arc::new(datafusion::catalog::MemoryCatalogProvider::new());
            ctx.register_catalog(catalog, c.clone());
            c
        }
    };
    if cat.schema(schema).is_none() {
        cat.register_schema(schema, Arc::new(MemorySchemaProvider::new()))
            .map_err(|e| Error::Bug(format!("registering schema {schema}: {e}")))?;
    }
    Ok(TableReference::full(
        catalog.to_string(),
        schema.to_string(),
        table.to_string(),
    ))
}

/// The table at `at` loaded at `version` ([`super::tables::Tables::pinned`]), timed.
async fn pinned(
    engine: &LocalEngine,
    at: &Location,
    version: u64,
) -> std::result::Result<deltalake::DeltaTable, String> {
    let started = std::time::Instant::now();
    let table = engine.tables.pinned(at, version).await;
    super::phases::Phase::PinnedLoads.add(started);
    table
}

/// A model's physical `table` at `version` (`None`: the latest), only the partitions `keys` if
/// given, without the partition column: from the followed file list
/// ([`super::listed::provider`]) when it can answer for a pinned version, else through delta-rs.
async fn read_table(
    engine: &LocalEngine,
    ctx: &SessionContext,
    name: &ModelName,
    table: &crate::names::TableId,
    version: Option<u64>,
    keys: Option<&std::collections::BTreeSet<String>>,
) -> Result<Arc<dyn TableProvider>> {
    let at = engine.table_location(table);
    if let Some(v) = version {
        let started = std::time::Instant::now();
        let listed = super::listed::provider(&engine.tables, ctx, &at, v, keys).await;
        super::phases::Phase::Listed.add(started);
        if let Some(p) = listed? {
            return Ok(p);
        }
    }
    let provider = match version {
        Some(v) => match pinned(engine, &at, v).await {
            Ok(t) => delta::provider_of(ctx, t).await,
            Err(e) => Err(e),
        },
        None => delta::provider(ctx, &at, None).await,
    }
    .map_err(|e| failed(&format!("cannot read `{name}` (table {table})"), e))?;
    hide_partition_column(ctx, provider, keys)
}

async fn register(engine: &LocalEngine, ctx: &SessionContext, input: &Input) -> Result<()> {
    let name = input.name();
    let r = reference(ctx, name)?;
    let provider: Arc<dyn TableProvider> = match input {
        Input::Table { table, version, .. } => {
            read_table(engine, ctx, name, table, *version, None).await?
        }
        Input::Partitions {
            table,
            version,
            keys,
            ..
        } => read_table(engine, ctx, name, table, Some(*version), Some(keys)).await?,
        Input::Empty { columns, .. } => {
            let cols: Vec<String> = columns
                .iter()
                .map(|(c, t)| format!("CAST(NULL AS {t}) AS \"{}\"", c.replace('"', "\"\"")))
                .collect();
            let sql = format!("SELECT {} WHERE false", cols.join(", "));
            let df = ctx
                .sql_with_options(&sql, read_only())
                .await
                .map_err(|e| failed(&format!("cannot build the view `{name}`"), e))?;
            df.into_view()
        }
        Input::View { sql, .. } => {
            let df = ctx
                .sql_with_options(sql, read_only())
                .await
                .map_err(|e| failed(&format!("cannot build the view `{name}`"), e))?;
            df.into_view()
        }
        Input::Source {
            path,
            format,
            columns,
            version,
            ..
        } => {
            let raw_name = format!("__tidemark_source_{}", name.as_str());
            let raw = TableReference::bare(raw_name.clone());
            let what = || format!("cannot read the source `{name}` at `{path}`");
            let at = Location::parse(path)?;
            if at.local_path().is_none() {
                // DataFusion reads Parquet and CSV through the store registered for the URL.
                let (store, _) = super::location::store_of(&at)?;
                ctx.register_object_store(&at.store_url(), store);
            }
            match format {
                SourceFormat::Delta => {
                    let provider = delta::provider(ctx, &at, *version)
                        .await
                        .map_err(|e| failed(&what(), e))?;
                    ctx.register_table(raw.clone(), provider)
                        .map_err(|e| failed(&what(), e))?;
                }
                SourceFormat::Parquet => ctx
                    .register_parquet(raw.clone(), path, ParquetReadOptions::default())
                    .await
                    .map_err(|e| failed(&what(), e))?,
                SourceFormat::Csv => ctx
                    .register_csv(raw.clone(), path, CsvReadOptions::new().has_header(true))
                    .await
                    .map_err(|e| failed(&what(), e))?,
            }
            // Column names are exposed lower-cased, so that unquoted names resolve whatever
            // their case in the files (`customerId` reads a `customerId` column), as DuckDB,
            // BigQuery and Spark resolve them.
            let projection = if columns.is_empty() {
                let schema = ctx
                    .table_provider(raw.clone())
                    .await
                    .map_err(|e| failed(&what(), e))?
                    .schema();
                let names = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        let c = f.name().replace('"', "\"\"");
                        format!("\"{c}\" AS \"{}\"", c.to_lowercase())
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if schema.fields().is_empty() {
                    "*".to_string()
                } else {
                    names
                }
            } else {
                columns
                    .iter()
                    .map(|(c, t)| {
                        let c = c.replace('"', "\"\"");
                        format!("CAST(\"{c}\" AS {t}) AS \"{}\"", c.to_lowercase())
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let df = ctx
                .sql(&format!(
                    "SELECT {projection} FROM \"{}\"",
                    raw_name.replace('"', "\"\"")
                ))
                .await
                .map_err(|e| failed(&what(), e))?;
            df.into_view()
        }
    };
    ctx.register_table(r, provider)
        .map_err(|e| Error::Bug(format!("registering {name}: {e}")))?;
    Ok(())
}

/// The provider without the physical partition column; `only`: just those partitions.
fn hide_partition_column(
    ctx: &SessionContext,
    provider: Arc<dyn TableProvider>,
    only: Option<&std::collections::BTreeSet<String>>,
) -> Result<Arc<dyn TableProvider>> {
    let has = provider
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == PARTITION_COLUMN);
    if !has {
        return Ok(provider);
    }
    let df = ctx
        .read_table(provider)
        .and_then(|df| match only {
            Some(keys) => df.filter(super::ops::partition_filter(keys)),
            None => Ok(df),
        })
        .and_then(|df| df.drop_columns(&[PARTITION_COLUMN]))
        .map_err(|e| Error::Bug(format!("hiding the partition column: {e}")))?;
    Ok(df.into_view())
}

/// Options for user SQL: queries only.
pub fn read_only() -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
}

/// Run read-only SQL and collect the result.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql_with_options(sql, read_only()).await.map_err(|e| {
        Error::from(
            Diagnostic::error("the query failed")
                .caused_by(e)
                .hint("tables are the project's models and sources, by `schema.table` name (`tidemark info` lists them), read as the environment pins them"),
        )
    })?;
    df.collect()
        .await
        .map_err(|e| Error::from(Diagnostic::error("the query failed").caused_by(e)))
}

/// The columns `sql` would produce (planned, not run).
pub async fn schema_of(
    ctx: &SessionContext,
    sql: &str,
) -> Result<datafusion::arrow::datatypes::SchemaRef> {
    let df = ctx
        .sql_with_options(sql, read_only())
        .await
        .map_err(|e| Error::from(Diagnostic::error("the query failed").caused_by(e)))?;
    Ok(Arc::new(df.schema().as_arrow().clone()))
}

/// Every function name (aliases included) the built-in engine plans: scalar, aggregate and
/// window functions.
pub fn function_names() -> std::collections::BTreeSet<String> {
    let ctx = new_context();
    let state = ctx.state();
    state
        .scalar_functions()
        .keys()
        .chain(state.aggregate_functions().keys())
        .chain(state.window_functions().keys())
        .map(|k| k.to_lowercase())
        .collect()
}
