//! The Spark engine: model SQL runs on a Spark Connect server (Apache Spark, Databricks, Sail);
//! tidemark keeps every Delta commit ("remote compute, tidemark commits").
//!
//! A batch: the job's inputs become temporary views of a session of the batch's own, each
//! over the explicit Parquet file list of its pinned Delta version (no time travel and no Delta
//! reader on the engine); the model SQL, its table names renamed to those views, runs there and
//! writes Parquet into a fresh staging directory inside the target table ([`super::staged`]);
//! tidemark lists, checks and reads back the staged files, runs the audits on the engine over
//! them, and makes the batch's single commit with its own log writer ([`super::commit`]).
//!
//! Invariants:
//! - The engine never writes `_delta_log`; a batch is at most one commit, by tidemark, carrying
//!   the batch's application transaction, checked before computing (a landed batch is
//!   reported, not recomputed) and again by the commit's conflict rules (a duplicate fails).
//! - A time-range batch's rows carry their partition value computed on the engine from the
//!   window's own unit boundaries (the same [`partition_key`]s as the local engine); rows
//!   outside the window get [`staged::OUTSIDE`], are counted and deleted; a file in any other
//!   partition refuses the batch.
//! - FULL and UNIQUE_KEY batches replace the whole (unpartitioned) table in one commit, under
//!   the table's writer lock. A UNIQUE_KEY batch computes the merged table on the engine (the
//!   target's rows whose key the batch does not carry, plus the batch's rows: MERGE's update
//!   and insert) while holding the lock, so no concurrent writer's rows are lost.
//! - SEED batches read a file of the project, on this machine: they run on the local engine,
//!   as do every operation on the Delta log (table facts, clones, vacuum, drops) and
//!   reconciliation reads, so checksums are computed by one implementation whatever the engine.
//! - Staging directories of failed attempts are deleted when possible; any left (a killed
//!   process) are orphans the janitor deletes ([`super::staged::orphans`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::spark::Session;
use super::staged::{self, OUTSIDE};
use super::tables::Open;
use super::views::{ddl, empty_select, files_view, register, rename};
use super::{
    AUDITED, Analyzed, AuditResult, BatchJob, BatchReport, Checksum, Engine, Input, LocalEngine,
    Location, PARTITION_COLUMN, SourceLog, TableInfo, WriteMode, commit, delta, failed, lock,
    partition_key,
};
use crate::error::{Diagnostic, Error, Result};
use crate::names::TableId;

/// The engine running model SQL on a Spark Connect server.
pub struct SparkEngine {
    /// The warehouse and everything tidemark does itself (see the module invariants).
    local: LocalEngine,
    /// The server's URL (may hold a token: never shown).
    url: String,
    /// The connection, opened at the first use.
    session: Mutex<Option<Arc<Session>>>,
}

impl SparkEngine {
    /// The Spark engine at `url` over the warehouse of `local`.
    pub fn new(local: LocalEngine, url: String) -> SparkEngine {
        SparkEngine {
            local,
            url,
            session: Mutex::new(None),
        }
    }

    /// Where `table` lives.
    pub(super) fn table_location(&self, table: &TableId) -> Location {
        self.local.table_location(table)
    }

    async fn session(&self) -> Result<Arc<Session>> {
        let poisoned = || Error::Bug("the Spark session lock is poisoned".into());
        if let Some(s) = self.session.lock().map_err(|_| poisoned())?.as_ref() {
            return Ok(s.clone());
        }
        let s = Arc::new(Session::connect(&self.url).await?);
        *self.session.lock().map_err(|_| poisoned())? = Some(s.clone());
        Ok(s)
    }

    /// Run `work` in a server-side session of its own, given back afterwards.
    /// While it runs, [`interrupt_running`] can stop what it runs on the server.
    async fn in_session<T>(&self, work: impl AsyncFnOnce(&Session) -> Result<T>) -> Result<T> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let s = Arc::new(self.session().await?.fork().await?);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut running) = RUNNING.lock() {
            running.insert(id, s.clone());
        }
        let out = work(&s).await;
        if let Ok(mut running) = RUNNING.lock() {
            running.remove(&id);
        }
        s.release().await;
        out
    }
}

/// The sessions running batches or queries now.
static RUNNING: Mutex<BTreeMap<u64, Arc<Session>>> = Mutex::new(BTreeMap::new());

/// Interrupt every operation this process runs on a Spark Connect server (the second Ctrl-C
/// of an apply, before it exits); waits at most a few seconds. Their staging directories are
/// left for the janitor; nothing was committed for them.
pub fn interrupt_running() {
    let sessions: Vec<Arc<Session>> = match RUNNING.lock() {
        Ok(r) => r.values().cloned().collect(),
        Err(_) => return,
    };
    if sessions.is_empty() {
        return;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    rt.block_on(async {
        let all = futures::future::join_all(sessions.iter().map(|s| s.interrupt()));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), all).await;
    });
}

impl Engine for SparkEngine {
    fn preflight(&self) -> Result<()> {
        self.local.rt.block_on(self.session()).map(drop)
    }

    fn analyze(&self, inputs: &[Input], sql: &str) -> Result<Option<Analyzed>> {
        self.local.rt.block_on(self.in_session(async |s| {
            let names = register(self, s, inputs).await?;
            s.schema(&rename(sql, &names)?).await.map(Some)
        }))
    }

    fn run_batch(&self, job: &BatchJob) -> Result<BatchReport> {
        let at = self.local.table_location(&job.table);
        if matches!(job.write, WriteMode::Seed { .. }) {
            return self.local.run_batch(job);
        }
        self.local.rt.block_on(run(self, &at, job))
    }

    fn table_info(&self, table: &TableId) -> Result<Option<TableInfo>> {
        self.local.table_info(table)
    }

    fn clone_table(&self, from: &TableId, version: u64, to: &TableId) -> Result<u64> {
        self.local.clone_table(from, version, to)
    }

    fn query(&self, inputs: &[Input], sql: &str) -> Result<Vec<RecordBatch>> {
        self.local.rt.block_on(self.in_session(async |s| {
            let names = register(self, s, inputs).await?;
            s.sql(&rename(sql, &names)?).await
        }))
    }

    fn source_version(&self, path: &str) -> Result<u64> {
        self.local.source_version(path)
    }

    fn source_log(&self, path: &str, since: u64, time_column: Option<&str>) -> Result<SourceLog> {
        self.local.source_log(path, since, time_column)
    }

    fn source_version_at(
        &self,
        path: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<u64>> {
        self.local.source_version_at(path, at)
    }

    fn vacuum(&self, table: &TableId, keep_versions: &[u64], dry_run: bool) -> Result<u64> {
        self.local.vacuum(table, keep_versions, dry_run)
    }

    fn drop_table(&self, table: &TableId, dry_run: bool) -> Result<()> {
        self.local.drop_table(table, dry_run)
    }

    fn table_uri(&self, table: &TableId) -> Result<String> {
        self.local.table_uri(table)
    }

    fn partition_stats(
        &self,
        table: &TableId,
        version: u64,
        only: Option<&BTreeSet<String>>,
        recorded: bool,
    ) -> Result<BTreeMap<String, Checksum>> {
        self.local.partition_stats(table, version, only, recorded)
    }
}

/// One batch on the engine (see the module invariants).
async fn run(e: &SparkEngine, at: &Location, job: &BatchJob) -> Result<BatchReport> {
    let open = e.local.tables.latest(at).await?;
    if let Some(landed) = open.landed(&job.txn.0).await?
        && landed >= job.txn.1
    {
        return super::batch::report_existing(at, job).await;
    }
    let dir = staged::staging_name(&job.txn.0);
    let out = e
        .in_session(async |s| attempt(e, s, at, job, open, &dir).await)
        .await;
    match out {
        Ok((report, true)) => {
            staged::tidy(at, &dir).await;
            Ok(report)
        }
        Ok((report, false)) => {
            staged::remove(at, &dir).await;
            Ok(report)
        }
        Err(err) => {
            staged::remove(at, &dir).await;
            Err(err)
        }
    }
}

/// Compute, stage, check, audit and commit one batch; the report, and whether it committed.
async fn attempt(
    e: &SparkEngine,
    s: &Session,
    at: &Location,
    job: &BatchJob,
    mut open: Open,
    dir: &str,
) -> Result<(BatchReport, bool)> {
    let mut clock = Phases::start();
    let names = register(e, s, &job.inputs).await?;
    let query = rename(&job.sql, &names)?;
    let stage_at = match at.local_path() {
        Some(p) => p.join(dir).display().to_string(),
        None => format!("{}{dir}/", at.url()),
    };
    // A unique-key batch reads the target, so it holds the table's lock from the read on.
    let mut held = None;
    let (written, allowed, scope_keys) = match &job.write {
        WriteMode::TimeRange {
            time_column,
            format,
            unit,
            window,
        } => {
            let (case, keys) = partition_case(time_column, format.as_deref(), *unit, *window)?;
            let sql =
                format!("SELECT *, {case} AS `{PARTITION_COLUMN}` FROM ({query}) AS __tidemark_q");
            (sql, Some(keys), super::delta::window_keys(&job.write))
        }
        WriteMode::Full => (query.clone(), None, None),
        WriteMode::UniqueKey { key } => {
            held = Some(lock::exclusive(at).await?);
            open = e.local.tables.latest(at).await?;
            let sql = match open.read_to() {
                None => query.clone(),
                Some(v) => {
                    files_view(s, "__tidemark_target", at, Some(v), None).await?;
                    merged(&query, key, &table_columns(&mut open).await?)
                }
            };
            (sql, None, None)
        }
        WriteMode::Seed { .. } => {
            return Err(Error::Bug("a seed batch reached the Spark engine".into()));
        }
    };
    let partitioned = allowed.is_some();
    s.write_parquet(
        &written,
        &stage_at,
        if partitioned {
            &[PARTITION_COLUMN]
        } else {
            &[]
        },
    )
    .await?;
    clock.lap(&PHASES.engine_us);
    let staged = staged::read(at, dir, allowed.as_ref()).await?;
    clock.lap(&PHASES.read_back_us);
    let schema = match &staged.schema {
        Some(s) => s.clone(),
        None => schema_of(s, &query).await?,
    };
    let audits = audit(s, job, &staged, &schema, &names, &query).await?;
    clock.lap(&PHASES.engine_us);
    let read_version = open.read_to().unwrap_or_default();
    if audits.iter().any(|a| a.blocking && a.failures > 0) {
        let report = BatchReport {
            rows: staged.sum.rows,
            dropped: staged.dropped,
            bytes: 0,
            partitions: None,
            checksum: staged.sum.hex(),
            table_version: read_version,
            already_committed: false,
            audits,
        };
        return Ok((report, false));
    }
    if open.read_to().is_none() {
        create(e, at, &mut open, &schema, partitioned, held.is_some()).await?;
    } else {
        check_schema(at, &mut open, &schema).await?;
    }
    if !partitioned && held.is_none() {
        held = Some(lock::exclusive(at).await?);
        open = e.local.tables.latest(at).await?;
    }
    let window = commit::Window {
        scope: match &scope_keys {
            Some(keys) => commit::Scope::Window(keys),
            None => commit::Scope::Table,
        },
        app_id: &job.txn.0,
        txn_version: job.txn.1,
        info: std::collections::HashMap::from([(
            "tidemark".to_string(),
            serde_json::json!({"model": job.model.as_str(), "txn": job.txn.0, "engine": "spark"}),
        )]),
    };
    let adds: Vec<_> = staged.files.iter().map(|f| f.add.clone()).collect();
    let version = commit::commit_files(&mut open, at, &adds, &window).await?;
    drop(held);
    clock.lap(&PHASES.commit_us);
    PHASES.batches.fetch_add(1, Ordering::Relaxed);
    e.local.tables.keep(at, &open)?;
    let report = BatchReport {
        rows: staged.sum.rows,
        dropped: staged.dropped,
        bytes: staged.bytes,
        checksum: staged.sum.hex(),
        table_version: version,
        already_committed: false,
        audits,
        partitions: None,
    };
    Ok((report, true))
}

/// Where remote batches of this process spent their time, summed (microseconds): on the
/// engine (inputs, query, write, audits), reading the staged files back, and committing
/// (table creation, lock waits and the commit itself). For benchmarks.
#[derive(Default)]
pub struct PhaseTotals {
    /// Committed remote batches.
    pub batches: AtomicU64,
    /// On the engine.
    pub engine_us: AtomicU64,
    /// Listing and reading back the staged files.
    pub read_back_us: AtomicU64,
    /// Creating the table, waiting for its lock, committing.
    pub commit_us: AtomicU64,
}

/// The totals of this process.
pub static PHASES: PhaseTotals = PhaseTotals {
    batches: AtomicU64::new(0),
    engine_us: AtomicU64::new(0),
    read_back_us: AtomicU64::new(0),
    commit_us: AtomicU64::new(0),
};

struct Phases(std::time::Instant);

impl Phases {
    fn start() -> Phases {
        Phases(std::time::Instant::now())
    }
    /// Add the time since the last lap to `total`.
    fn lap(&mut self, total: &AtomicU64) {
        let now = std::time::Instant::now();
        let us = u64::try_from((now - self.0).as_micros()).unwrap_or(u64::MAX);
        total.fetch_add(us, Ordering::Relaxed);
        self.0 = now;
    }
}

/// The `CASE` expression giving each row of a time-range batch its partition value, and the
/// window's partition values.
fn partition_case(
    column: &str,
    format: Option<&str>,
    unit: crate::interval::IntervalUnit,
    window: crate::interval::Interval,
) -> Result<(String, BTreeSet<String>)> {
    let col = format!("`{}`", column.replace('`', "``"));
    let ts = match format {
        Some(f) => format!("to_timestamp({col}, '{}')", java_pattern(f)?),
        None => format!("CAST({col} AS TIMESTAMP)"),
    };
    let lit = |t: chrono::DateTime<chrono::Utc>| {
        format!("TIMESTAMP '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f"))
    };
    let mut case = format!(
        "CASE WHEN {ts} IS NULL OR {ts} < {} THEN '{OUTSIDE}'",
        lit(window.start)
    );
    let mut keys = BTreeSet::new();
    let mut t = window.start;
    while t < window.end {
        let next = unit.next(t);
        let key = partition_key(unit, t);
        case.push_str(&format!(" WHEN {ts} < {} THEN '{key}'", lit(next)));
        keys.insert(key);
        t = next;
    }
    case.push_str(&format!(" ELSE '{OUTSIDE}' END"));
    Ok((case, keys))
}

/// A strftime format (as the local engine reads it) as a Spark datetime pattern.
fn java_pattern(f: &str) -> Result<String> {
    let mut out = String::new();
    let mut chars = f.chars();
    let mut literal = String::new();
    let flush = |out: &mut String, literal: &mut String| {
        if !literal.is_empty() {
            out.push('\'');
            out.push_str(&literal.replace('\'', "''"));
            out.push('\'');
            literal.clear();
        }
    };
    while let Some(c) = chars.next() {
        if c != '%' {
            if c.is_ascii_alphabetic() || c == '\'' {
                literal.push(c);
            } else {
                flush(&mut out, &mut literal);
                out.push(c);
            }
            continue;
        }
        flush(&mut out, &mut literal);
        let spec = match chars.next() {
            Some('Y') => "yyyy",
            Some('m') => "MM",
            Some('d') => "dd",
            Some('H') => "HH",
            Some('M') => "mm",
            Some('S') => "ss",
            Some('f') => "SSSSSS",
            Some('%') => "%",
            other => {
                return Err(Diagnostic::error(format!(
                    "the time format `{f}` has `%{}`, which the Spark engine does not translate",
                    other.map(String::from).unwrap_or_default()
                ))
                .hint("use %Y, %m, %d, %H, %M, %S and %f, or a TIMESTAMP or DATE time column")
                .into());
            }
        };
        out.push_str(spec);
    }
    flush(&mut out, &mut literal);
    Ok(out.replace('\'', "\\'"))
}

/// The merged table of a unique-key batch: the target's rows whose key the batch does not
/// carry, then the batch's rows, in the table's column order.
fn merged(query: &str, key: &[String], columns: &[String]) -> String {
    let q = |c: &str| format!("`{}`", c.replace('`', "``"));
    let on = key
        .iter()
        .map(|k| format!("__t.{} = __s.{}", q(k), q(k)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let cols = columns.iter().map(|c| q(c)).collect::<Vec<_>>().join(", ");
    format!(
        "SELECT {cols} FROM (SELECT __t.* FROM __tidemark_target AS __t LEFT ANTI JOIN ({query}) AS __s ON {on}) \
         UNION ALL SELECT {cols} FROM ({query}) AS __tidemark_new"
    )
}

/// The data columns of the open table, in order.
async fn table_columns(open: &mut Open) -> Result<Vec<String>> {
    let table = open.shaped().await?;
    let snap = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    Ok(snap
        .snapshot()
        .arrow_schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|n| n != PARTITION_COLUMN)
        .collect())
}

/// The schema of `query`'s rows, asked of the engine (when it staged no file to read it from).
async fn schema_of(s: &Session, query: &str) -> Result<SchemaRef> {
    let rows = s
        .sql(&format!("SELECT * FROM ({query}) AS __tidemark_q LIMIT 0"))
        .await?;
    rows.first()
        .map(|b| staged::plain_schema(&b.schema()))
        .ok_or_else(|| {
            Error::from(Diagnostic::error(
                "the engine returned no schema for an empty result",
            ))
        })
}

/// Create the table with `schema` (plus the partition column), in a commit of its own, under
/// the table's lock (taken here unless the caller `holds` it).
async fn create(
    e: &SparkEngine,
    at: &Location,
    open: &mut Open,
    schema: &SchemaRef,
    partitioned: bool,
    holds: bool,
) -> Result<()> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut partition_columns: Vec<&str> = Vec::new();
    if partitioned {
        fields.push(Field::new(PARTITION_COLUMN, DataType::Utf8, true));
        partition_columns.push(PARTITION_COLUMN);
    }
    let empty = RecordBatch::new_empty(Arc::new(Schema::new(fields)));
    let _held = match holds {
        true => None,
        false => Some(lock::exclusive(at).await?),
    };
    let table = e.local.tables.latest(at).await?.current().await?;
    let ctx = super::session::new_context();
    let created = delta::ensure_created(table, at, &[empty], &partition_columns, &ctx).await?;
    open.advance(created).await
}

/// Refuse staged rows whose columns are not the table's.
async fn check_schema(at: &Location, open: &mut Open, schema: &SchemaRef) -> Result<()> {
    // The table's metadata as of the open version, without re-reading its file list.
    let table = open.shaped().await?;
    let snap = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let want: Vec<(String, DataType)> = snap
        .snapshot()
        .arrow_schema()
        .fields()
        .iter()
        .filter(|f| f.name() != PARTITION_COLUMN)
        .map(|f| (f.name().clone(), super::rows::plain_type(f.data_type())))
        .collect();
    let have: Vec<(String, DataType)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().clone()))
        .collect();
    let same = |a: &DataType, b: &DataType| match (a, b) {
        (DataType::Timestamp(_, _), DataType::Timestamp(_, _)) => true,
        _ => a == b,
    };
    if want.len() == have.len()
        && want
            .iter()
            .zip(&have)
            .all(|(w, h)| w.0 == h.0 && same(&w.1, &h.1))
    {
        return Ok(());
    }
    let show = |cols: &[(String, DataType)]| {
        cols.iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Err(Diagnostic::error(format!(
        "the rows the engine computed do not have the columns of `{at}`"
    ))
    .caused_by(format!("table: {}; rows: {}", show(&want), show(&have)))
    .hint("a change of a model's columns makes a new table version: run `tidemark plan` again")
    .into())
}

/// Run the job's audits on the engine over the staged rows (a unique-key batch's: over the
/// batch's own rows, as the local engine does).
async fn audit(
    s: &Session,
    job: &BatchJob,
    staged: &staged::Staged,
    schema: &SchemaRef,
    names: &BTreeMap<String, String>,
    query: &str,
) -> Result<Vec<AuditResult>> {
    if job.audits.is_empty() {
        return Ok(Vec::new());
    }
    if matches!(job.write, WriteMode::UniqueKey { .. }) {
        s.view_of_sql(AUDITED, query).await?;
    } else if staged.files.is_empty() {
        s.view_of_sql(AUDITED, &empty_select(schema)?).await?;
    } else {
        let urls = staged.files.iter().map(|f| f.url.clone()).collect();
        s.view_of_files(AUDITED, "parquet", urls, ddl(schema), &[])
            .await?;
    }
    let mut out = Vec::new();
    for a in &job.audits {
        let sql = rename(&a.sql, names)?;
        let rows = s.sql(&sql).await.map_err(|err| {
            Error::from(Diagnostic::error(format!(
                "audit {} of {} could not run: {}",
                a.name,
                job.model,
                err.summary()
            )))
        })?;
        out.push(AuditResult {
            name: a.name.clone(),
            failures: rows.iter().map(|b| b.num_rows() as u64).sum(),
            blocking: a.blocking,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::{Interval, IntervalUnit};
    use chrono::TimeZone;

    #[test]
    fn partition_values_come_from_the_windows_own_boundaries() {
        let t = |d: u32, h: u32| chrono::Utc.with_ymd_and_hms(2024, 1, d, h, 0, 0).unwrap();
        let (case, keys) = partition_case(
            "ts",
            None,
            IntervalUnit::Day,
            Interval::new(t(1, 0), t(3, 0)),
        )
        .unwrap();
        assert_eq!(
            case,
            "CASE WHEN CAST(`ts` AS TIMESTAMP) IS NULL OR CAST(`ts` AS TIMESTAMP) < TIMESTAMP '2024-01-01 00:00:00.000000' THEN '__outside__' \
             WHEN CAST(`ts` AS TIMESTAMP) < TIMESTAMP '2024-01-02 00:00:00.000000' THEN '2024-01-01' \
             WHEN CAST(`ts` AS TIMESTAMP) < TIMESTAMP '2024-01-03 00:00:00.000000' THEN '2024-01-02' ELSE '__outside__' END"
        );
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["2024-01-01", "2024-01-02"]
        );
        let (_, keys) = partition_case(
            "ts",
            None,
            IntervalUnit::Hour,
            Interval::new(t(1, 22), t(2, 1)),
        )
        .unwrap();
        assert_eq!(
            keys.into_iter().collect::<Vec<_>>(),
            ["2024-01-01T22:00", "2024-01-01T23:00", "2024-01-02T00:00"]
        );
    }

    #[test]
    fn strftime_formats_become_spark_patterns() {
        assert_eq!(java_pattern("%Y-%m-%d").unwrap(), "yyyy-MM-dd");
        assert_eq!(
            java_pattern("%Y%m%dT%H:%M:%S").unwrap(),
            "yyyyMMdd\\'T\\'HH:mm:ss"
        );
        assert!(java_pattern("%j").unwrap_err().to_string().contains("%j"));
    }

    #[test]
    fn a_merge_keeps_unmatched_target_rows_and_takes_the_batch() {
        let sql = merged(
            "SELECT 1 AS k, 2 AS v",
            &["k".into()],
            &["k".into(), "v".into()],
        );
        assert_eq!(
            sql,
            "SELECT `k`, `v` FROM (SELECT __t.* FROM __tidemark_target AS __t LEFT ANTI JOIN (SELECT 1 AS k, 2 AS v) AS __s ON __t.`k` = __s.`k`) \
             UNION ALL SELECT `k`, `v` FROM (SELECT 1 AS k, 2 AS v) AS __tidemark_new"
        );
    }
}
