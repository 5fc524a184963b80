//! The engine: the only module that touches DataFusion, delta-rs and Spark Connect.
//!
//! Everything above it speaks in [`BatchJob`]s (compute one window of one model and write it)
//! and [`BatchReport`]s (what was written), behind the [`Engine`] trait: [`LocalEngine`]
//! (DataFusion in this process) or [`SparkEngine`] (the SQL runs on a Spark Connect server;
//! tidemark keeps every commit). [`open`] picks the one the project's `[engine]` names.
//!
//! Invariants:
//! - A physical table lives at `<warehouse>/<table id>`; table ids are built from validated
//!   model names and hex versions ([`crate::names::table_id`]), never from other user text.
//! - Every write is exactly one Delta commit: an incremental batch is an overwrite whose
//!   predicate is the batch's half-open window (never an append), a FULL or SEED model replaces
//!   the whole table, a unique-key batch is one MERGE (on Spark: the merged table replaces
//!   it). Each commit carries an application
//!   transaction id derived from table and window, so a re-run recognises a commit that landed
//!   before a crash and skips it.
//! - Rows an incremental query returns outside its window are not written; they are counted.
//! - Inputs are read at the Delta version the caller pins; nothing reads "latest" implicitly.
//! - The partition column [`PARTITION_COLUMN`] is physical only: readers never see it.
//!
//! Files, dependencies pointing one way (no cycle among them): [`batch`] (the batch pipeline,
//! one function per write mode; its unique-key rows staged by [`merge`]) and [`ops`] (clone,
//! statistics, vacuum) use [`commit`] (the
//! direct window commit), [`tables`] (open tables followed commit by commit), [`session`]
//! (DataFusion sessions over pinned inputs, read through [`listed`] from the followed file
//! lists where it can), [`seed`], [`rows`], [`lock`] and [`checksum`];
//! [`delta`] holds the delta-rs helpers they all share and uses none of them. The Spark engine
//! ([`remote`]) runs batches through [`spark`] (the Spark Connect session), registers inputs
//! with [`views`], checks and measures what the server staged with [`staged`], and commits with
//! [`commit`]; for everything on the Delta log itself it uses the local engine.

mod batch;
mod changes;
mod checksum;
mod commit;
mod delta;
mod json;
mod listed;
mod location;
mod lock;
mod merge;
mod ops;
pub mod phases;
mod remote;
mod rows;
mod seed;
mod session;
mod spark;
mod staged;
mod tables;
mod views;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::interval::{Interval, IntervalUnit};
use crate::names::TableId;
use crate::project::{ModelName, SourceFormat};

pub use changes::{FileChange, SourceLog};
pub use checksum::Checksum;
pub use location::Location;
pub use seed::columns as seed_columns;
pub use session::function_names;

/// The physical partition column of INCREMENTAL_BY_TIME_RANGE tables: the start of each row's
/// interval (`YYYY-MM-DD`, or `YYYY-MM-DDTHH:MM` for units shorter than a day).
pub const PARTITION_COLUMN: &str = "_tidemark_partition";

/// The name audit SQL reads a batch's rows under.
pub const AUDITED: &str = "__tidemark_audited";

/// How a table is read by a batch or a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A physical table at a pinned Delta version (`None`: the latest).
    Table {
        /// The name SQL uses.
        name: ModelName,
        /// Physical table id.
        table: TableId,
        /// Delta version.
        version: Option<u64>,
    },
    /// Some partitions of a physical table (by partition key; all of an unpartitioned one) at
    /// a pinned version: only their files are read.
    Partitions {
        /// The name SQL uses.
        name: ModelName,
        /// Physical table id.
        table: TableId,
        /// Delta version.
        version: u64,
        /// Partition keys read.
        keys: BTreeSet<String>,
    },
    /// A view: SQL over inputs registered before it.
    View {
        /// The name SQL uses.
        name: ModelName,
        /// Rendered SQL.
        sql: String,
    },
    /// No rows, with declared columns (name, SQL type): a self-referencing model's own table
    /// before its first batch.
    Empty {
        /// The name SQL uses.
        name: ModelName,
        /// Columns and their types as declared.
        columns: Vec<(String, String)>,
    },
    /// An external source read in place.
    Source {
        /// The name SQL uses.
        name: ModelName,
        /// Path or URL.
        path: String,
        format: SourceFormat,
        /// Declared column types.
        columns: BTreeMap<String, String>,
        /// For Delta sources: the version pinned for the apply.
        version: Option<u64>,
    },
}

impl Input {
    /// The name SQL uses.
    pub fn name(&self) -> &ModelName {
        match self {
            Input::Table { name, .. }
            | Input::Partitions { name, .. }
            | Input::View { name, .. }
            | Input::Empty { name, .. }
            | Input::Source { name, .. } => name,
        }
    }
}

/// The columns a query returns, as an engine's analyzer reports them: name, and type in the
/// engine's SQL (`None`: a type tidemark cannot declare).
pub type Analyzed = Vec<(String, Option<String>)>;

/// How a batch's rows reach its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Overwrite exactly the window's partitions (INCREMENTAL_BY_TIME_RANGE).
    TimeRange {
        /// The column holding each row's time.
        time_column: String,
        /// strftime format of a string time column.
        format: Option<String>,
        /// The model's interval unit (partition granularity).
        unit: IntervalUnit,
        /// The batch's half-open window, aligned to `unit`.
        window: Interval,
    },
    /// Replace the whole table (FULL).
    Full,
    /// MERGE on the key (INCREMENTAL_BY_UNIQUE_KEY).
    UniqueKey {
        /// Key columns.
        key: Vec<String>,
    },
    /// Replace the whole table with a CSV file's rows (SEED).
    Seed {
        /// The CSV file.
        path: PathBuf,
        /// Declared columns (name, SQL type), read with these types; empty: inferred from
        /// every row.
        columns: Vec<(String, String)>,
    },
}

/// One audit query over the batch's rows (before they are committed): it returns the offending
/// rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditJob {
    /// Audit name.
    pub name: String,
    /// SQL with `__tidemark_audited` standing for the batch's data.
    pub sql: String,
    /// Does a failure fail the batch?
    pub blocking: bool,
}

/// One unit of work: compute a window of a model and write it in one commit.
#[derive(Debug, Clone)]
pub struct BatchJob {
    /// The model.
    pub model: ModelName,
    /// Its physical table.
    pub table: TableId,
    /// Rendered SQL (upstream names are logical; `inputs` resolve them). Empty for seeds.
    pub sql: String,
    /// What the SQL reads, in dependency order.
    pub inputs: Vec<Input>,
    /// How rows are written.
    pub write: WriteMode,
    /// Application transaction: (id, version). A commit of this id at a version at least as
    /// high already in the table means the batch landed before; it is not written again.
    pub txn: (String, i64),
    /// Audits run on the batch's rows before the commit.
    pub audits: Vec<AuditJob>,
}

/// The result of one audit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditResult {
    /// Audit name.
    pub name: String,
    /// Offending rows.
    pub failures: u64,
    /// Blocking?
    pub blocking: bool,
}

/// What a batch wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    /// Rows written.
    pub rows: u64,
    /// Rows the query returned outside the window (not written).
    pub dropped: u64,
    /// Bytes of the data files that hold the batch's rows.
    pub bytes: u64,
    /// Order-independent checksum of the written rows.
    pub checksum: String,
    /// The table's Delta version after the batch.
    pub table_version: u64,
    /// The commit had landed before (an earlier, interrupted attempt): nothing was written.
    pub already_committed: bool,
    /// Audit outcomes.
    pub audits: Vec<AuditResult>,
    /// Rows and checksum per partition of a windowed write, every partition of the window
    /// that holds rows (`None`: not measured per partition — not a windowed write, a remote
    /// engine, a batch completed in an earlier run).
    #[serde(skip)]
    pub partitions: Option<BTreeMap<String, Checksum>>,
}

/// Facts about a physical table, for `env show` and the janitor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableInfo {
    /// Latest Delta version.
    pub version: u64,
    /// Partition columns.
    pub partition_columns: Vec<String>,
}

/// The engine interface: what the scheduler and the commands need from an executor.
pub trait Engine {
    /// Check, before the first batch of an apply, that the engine can run batches (a remote
    /// engine: that its server answers).
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
    /// Check, without running it, that the engine accepts `sql` over `inputs`; returns the
    /// columns it would produce (name, type in the engine's SQL; `None`: a type that cannot be
    /// declared). `Ok(None)`: this engine checks a model only when its first batch runs (the
    /// local engine, whose batches plan the SQL in this process before writing anything).
    fn analyze(&self, _inputs: &[Input], _sql: &str) -> Result<Option<Analyzed>> {
        Ok(None)
    }
    /// Compute and write one batch.
    fn run_batch(&self, job: &BatchJob) -> Result<BatchReport>;
    /// Latest version of a physical table (`None`: it does not exist).
    fn table_info(&self, table: &TableId) -> Result<Option<TableInfo>>;
    /// Create `to` as a zero-copy clone of `from` at `version`; returns the clone's version.
    fn clone_table(&self, from: &TableId, version: u64, to: &TableId) -> Result<u64>;
    /// Run a read-only query over `inputs`.
    fn query(&self, inputs: &[Input], sql: &str) -> Result<Vec<RecordBatch>>;
    /// The columns of each of `names` (inputs of `inputs`), in their order; `None`: not known
    /// (this default reads a row of each, so a name with no rows has none).
    fn schemas(
        &self,
        inputs: &[Input],
        names: &[&str],
    ) -> Result<Vec<Option<datafusion::arrow::datatypes::SchemaRef>>> {
        names
            .iter()
            .map(|n| {
                let b = self.query(inputs, &format!("SELECT * FROM {n} LIMIT 1"))?;
                Ok(b.first().map(RecordBatch::schema))
            })
            .collect()
    }
    /// Latest version of an external Delta source.
    fn source_version(&self, path: &str) -> Result<u64>;
    /// The data files the commits of the Delta source at `path` added and removed after
    /// version `since`, placed in time by `time_column` when given.
    fn source_log(&self, path: &str, since: u64, time_column: Option<&str>) -> Result<SourceLog>;
    /// The first version of the Delta source at `path` committed at or after `at` (`None`:
    /// none yet).
    fn source_version_at(&self, path: &str, at: DateTime<Utc>) -> Result<Option<u64>>;
    /// Remove files that no version in `keep_versions` needs and that were removed over an hour
    /// ago; returns how many files are (or would be) deleted.
    fn vacuum(&self, table: &TableId, keep_versions: &[u64], dry_run: bool) -> Result<u64>;
    /// Delete a physical table's directory.
    fn drop_table(&self, table: &TableId, dry_run: bool) -> Result<()>;
    /// Where a table lives (for external readers).
    fn table_uri(&self, table: &TableId) -> Result<String>;
    /// Rows and order-independent checksum per partition of a table at `version` (one entry,
    /// partition `all`, for an unpartitioned table), by partition key; `only`: just those
    /// partitions (their files alone are read). `recorded`: taken from the checksums tidemark
    /// recorded in the files' `add` tags when it wrote them, when every file has one, instead
    /// of reading the rows — the same figures, for comparing versions; a proof of what a table
    /// holds (`reconcile`) reads the rows.
    fn partition_stats(
        &self,
        table: &TableId,
        version: u64,
        only: Option<&BTreeSet<String>>,
        recorded: bool,
    ) -> Result<BTreeMap<String, Checksum>>;
}

/// The engine running DataFusion and delta-rs in this process, on a warehouse in a local
/// directory or on an object store.
pub struct LocalEngine {
    root: Location,
    rt: tokio::runtime::Runtime,
    tables: tables::Tables,
    /// The largest unique-key batch (bytes of Arrow rows) merged by a hash join
    /// ([`merge::HASHED_SOURCE`], or [`merge::HASHED_SOURCE_ENV`]).
    hashed_source: usize,
}

pub use remote::{PHASES, SparkEngine, interrupt_running};

/// The engine a project's `[engine]` table names, on its warehouse.
pub fn open(config: &crate::project::Config) -> Result<Box<dyn Engine + Sync>> {
    let local = LocalEngine::for_warehouse(&config.warehouse, &config.storage)?;
    match &config.engine {
        crate::project::EngineConfig::Local => Ok(Box::new(local)),
        crate::project::EngineConfig::Spark { remote } => {
            let url = spark::remote_url(remote.as_deref())?;
            Ok(Box::new(SparkEngine::new(local, url)))
        }
    }
}

impl LocalEngine {
    /// The engine of a project's warehouse; `options` configure its object store.
    pub fn for_warehouse(
        warehouse: &crate::project::Warehouse,
        options: &crate::objects::StorageOptions,
    ) -> Result<LocalEngine> {
        // Sources may live on an object store whatever the warehouse is.
        location::register(options)?;
        match warehouse {
            crate::project::Warehouse::Local(root) => LocalEngine::new(Location::local(root)?),
            crate::project::Warehouse::ObjectStore(url) => {
                let root = Location::parse(url)?;
                // Check the URL and the options now, not at the first table.
                location::store_of(&root)?;
                LocalEngine::new(root)
            }
        }
    }

    /// An engine on the warehouse at `root`.
    pub fn new(root: Location) -> Result<LocalEngine> {
        let hashed_source = merge::hashed_source_from_env()?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Bug(format!("cannot start the async runtime: {e}")))?;
        Ok(LocalEngine {
            root,
            rt,
            tables: tables::Tables::default(),
            hashed_source,
        })
    }

    /// The location of `table` under the warehouse root. A [`TableId`] cannot name a location
    /// outside it (ids read from a hand-edited state or a crafted plan file are refused when
    /// they are read, and each part is one path segment), so no write or delete can leave the
    /// warehouse.
    pub(crate) fn table_location(&self, table: &TableId) -> Location {
        self.root.join(table.parts())
    }
}

impl Engine for LocalEngine {
    fn run_batch(&self, job: &BatchJob) -> Result<BatchReport> {
        let at = self.table_location(&job.table);
        self.rt.block_on(batch::run(self, &at, job))
    }

    fn table_info(&self, table: &TableId) -> Result<Option<TableInfo>> {
        let at = self.table_location(table);
        self.rt.block_on(ops::followed_info(&at, &self.tables))
    }

    fn clone_table(&self, from: &TableId, version: u64, to: &TableId) -> Result<u64> {
        let (from, to) = (self.table_location(from), self.table_location(to));
        self.rt
            .block_on(ops::clone_table(&from, version, &to, &self.tables))
    }

    fn query(&self, inputs: &[Input], sql: &str) -> Result<Vec<RecordBatch>> {
        self.rt.block_on(async {
            let ctx = session::context(self, inputs).await?;
            session::run_sql(&ctx, sql).await
        })
    }

    /// Planned in one session, nothing read.
    fn schemas(
        &self,
        inputs: &[Input],
        names: &[&str],
    ) -> Result<Vec<Option<datafusion::arrow::datatypes::SchemaRef>>> {
        self.rt.block_on(async {
            let ctx = session::context(self, inputs).await?;
            let mut out = Vec::with_capacity(names.len());
            for n in names {
                out.push(Some(
                    session::schema_of(&ctx, &format!("SELECT * FROM {n}")).await?,
                ));
            }
            Ok(out)
        })
    }

    fn source_version(&self, path: &str) -> Result<u64> {
        let at = Location::parse(path)?;
        self.rt
            .block_on(ops::table_info(&at))?
            .map(|i| i.version)
            .ok_or_else(|| {
                Error::from(
                    crate::error::Diagnostic::error(format!(
                        "the Delta source at `{path}` is not a Delta table"
                    ))
                    .hint("check the source's `path` and `format` in tidemark.toml"),
                )
            })
    }

    fn source_log(&self, path: &str, since: u64, time_column: Option<&str>) -> Result<SourceLog> {
        let at = Location::parse(path)?;
        self.rt.block_on(changes::read(&at, since, time_column))
    }

    fn source_version_at(&self, path: &str, at: DateTime<Utc>) -> Result<Option<u64>> {
        let location = Location::parse(path)?;
        self.rt.block_on(changes::first_version_at(&location, at))
    }

    fn vacuum(&self, table: &TableId, keep_versions: &[u64], dry_run: bool) -> Result<u64> {
        let at = self.table_location(table);
        self.rt.block_on(ops::vacuum(&at, keep_versions, dry_run))
    }

    fn drop_table(&self, table: &TableId, dry_run: bool) -> Result<()> {
        let at = self.table_location(table);
        if dry_run {
            return Ok(());
        }
        self.tables.forget(&at);
        self.rt.block_on(ops::drop_table(&at))
    }

    fn table_uri(&self, table: &TableId) -> Result<String> {
        Ok(self.table_location(table).url().to_string())
    }

    fn partition_stats(
        &self,
        table: &TableId,
        version: u64,
        only: Option<&BTreeSet<String>>,
        recorded: bool,
    ) -> Result<BTreeMap<String, Checksum>> {
        let at = self.table_location(table);
        self.rt.block_on(ops::partition_stats(
            &at,
            version,
            only,
            &self.tables,
            recorded,
        ))
    }
}

/// The partition key of the interval starting at `t`.
pub fn partition_key(unit: IntervalUnit, t: DateTime<Utc>) -> String {
    if unit.min_length() >= chrono::Duration::days(1) {
        t.format("%Y-%m-%d").to_string()
    } else {
        t.format("%Y-%m-%dT%H:%M").to_string()
    }
}

/// An engine error (DataFusion or delta-rs) as a user-facing error about `what`.
fn failed(what: &str, e: impl std::fmt::Display) -> Error {
    Error::from(crate::error::Diagnostic::error(what).caused_by(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn table_ids_cannot_leave_the_warehouse() {
        let e = LocalEngine::new(Location::local(Path::new("/wh")).unwrap()).unwrap();
        let id = TableId::parse("ledger/daily_totals__0a1b__g2").unwrap();
        assert_eq!(
            e.table_location(&id).local_path().unwrap(),
            PathBuf::from("/wh/ledger/daily_totals__0a1b__g2/")
        );
        for bad in [
            "../etc",
            "ledger/../../etc",
            "/etc/passwd",
            "ledger//x",
            "",
            "ledger/x y",
            "ledger/x\0",
            "ledger/..",
            "ledger\\..\\x",
        ] {
            let err = TableId::parse(bad).unwrap_err().to_string();
            assert!(err.contains("not a tidemark table id"), "{bad}: {err}");
        }
    }
}
