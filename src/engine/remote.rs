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
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;

use super::spark::Session;
use super::staged::{self, OUTSIDE};
use super::tables::Open;
use super::{
    AUDITED, AuditResult, BatchJob, BatchReport, Checksum, Engine, Input, LocalEngine, Location,
    PARTITION_COLUMN, TableInfo, WriteMode, commit, delta, failed, lock, partition_key,
};
use crate::error::{Diagnostic, Error, Result};
use crate::names::TableId;
use crate::project::SourceFormat;
use crate::sql::Dialect;

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

    fn vacuum(&self, table: &TableId, keep_versions: &[u64], dry_run: bool) -> Result<u64> {
        self.local.vacuum(table, keep_versions, dry_run)
    }

    fn drop_table(&self, table: &TableId, dry_run: bool) -> Result<()> {
        self.local.drop_table(table, dry_run)
    }

    fn table_uri(&self, table: &TableId) -> Result<String> {
        self.local.table_uri(table)
    }

    fn partition_stats(&self, table: &TableId, version: u64) -> Result<BTreeMap<String, Checksum>> {
        self.local.partition_stats(table, version)
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
                    files_view(s, "__tidemark_target", at, Some(v)).await?;
                    merged(&query, key, &table_columns(&open).await?)
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
    let staged = staged::read(at, dir, allowed.as_ref()).await?;
    let schema = match &staged.schema {
        Some(s) => s.clone(),
        None => schema_of(s, &query).await?,
    };
    let audits = audit(s, job, &staged, &schema, &names, &query).await?;
    let read_version = open.read_to().unwrap_or_default();
    if audits.iter().any(|a| a.blocking && a.failures > 0) {
        let report = BatchReport {
            rows: staged.sum.rows,
            dropped: staged.dropped,
            bytes: 0,
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
        check_schema(at, &open, &schema).await?;
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
    e.local.tables.keep(at, &open)?;
    let report = BatchReport {
        rows: staged.sum.rows,
        dropped: staged.dropped,
        bytes: staged.bytes,
        checksum: staged.sum.hex(),
        table_version: version,
        already_committed: false,
        audits,
    };
    Ok((report, true))
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
async fn table_columns(open: &Open) -> Result<Vec<String>> {
    let table = open.current().await?;
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
async fn check_schema(at: &Location, open: &Open, schema: &SchemaRef) -> Result<()> {
    let table = open.current().await?;
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

/// `sql` with the job's input names renamed to their views.
fn rename(sql: &str, names: &BTreeMap<String, String>) -> Result<String> {
    crate::sql::rename_tables(sql, Dialect::Spark, &|n| names.get(n).cloned()).map_err(Error::from)
}

/// Register every input as a view of the session; returns logical name → view name.
async fn register(
    e: &SparkEngine,
    s: &Session,
    inputs: &[Input],
) -> Result<BTreeMap<String, String>> {
    let mut names = BTreeMap::new();
    for (i, input) in inputs.iter().enumerate() {
        let name = input.name();
        let view = format!("__tm_{i}_{}", name.as_str().replace('.', "_"));
        match input {
            Input::Table { table, version, .. } => {
                let at = e.local.table_location(table);
                files_view(s, &view, &at, *version).await?;
            }
            Input::View { sql, .. } => s.view_of_sql(&view, &rename(sql, &names)?).await?,
            Input::Empty { columns, .. } => {
                let cols: Vec<String> = columns
                    .iter()
                    .map(|(c, t)| {
                        format!(
                            "CAST(NULL AS {}) AS `{}`",
                            spark_type_name(t),
                            c.replace('`', "``")
                        )
                    })
                    .collect();
                s.view_of_sql(&view, &format!("SELECT {} WHERE FALSE", cols.join(", ")))
                    .await?
            }
            Input::Source {
                path,
                format,
                columns,
                version,
                ..
            } => {
                let raw = format!("{view}_raw");
                match format {
                    SourceFormat::Delta => {
                        files_view(s, &raw, &Location::parse(path)?, *version).await?
                    }
                    SourceFormat::Parquet => {
                        s.view_of_files(&raw, "parquet", vec![path.clone()], None, &[])
                            .await?
                    }
                    SourceFormat::Csv => {
                        s.view_of_files(
                            &raw,
                            "csv",
                            vec![path.clone()],
                            None,
                            &[("header", "true")],
                        )
                        .await?
                    }
                }
                let projection = if columns.is_empty() {
                    "*".to_string()
                } else {
                    columns
                        .iter()
                        .map(|(c, t)| {
                            let c = c.replace('`', "``");
                            format!("CAST(`{c}` AS {}) AS `{c}`", spark_type_name(t))
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                s.view_of_sql(&view, &format!("SELECT {projection} FROM {raw}"))
                    .await?;
            }
        }
        names.insert(name.as_str().to_string(), view);
    }
    Ok(names)
}

/// A declared source column type (DataFusion SQL) as Spark names it.
fn spark_type_name(t: &str) -> String {
    let upper = t.to_ascii_uppercase();
    match upper.as_str() {
        "VARCHAR" | "TEXT" | "CHAR" => "STRING".to_string(),
        "REAL" => "FLOAT".to_string(),
        _ => upper,
    }
}

/// Register `view` as the Delta table at `at` at `version` (`None`: latest): its active files
/// read as Parquet, partition columns other than [`PARTITION_COLUMN`] added as literals.
async fn files_view(s: &Session, view: &str, at: &Location, version: Option<u64>) -> Result<()> {
    let table = match version {
        Some(v) => delta::open_at(at, v).await?,
        None => delta::open(at).await?,
    };
    if table.version().is_none() {
        return Err(Diagnostic::error(format!("`{at}` is not a Delta table"))
            .hint("check the source's `path` and `format` in tidemark.toml")
            .into());
    }
    let snap = table
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let schema = snap.snapshot().arrow_schema();
    let partition_columns: Vec<String> = snap.metadata().partition_columns().to_vec();
    let data = Schema::new(
        schema
            .fields()
            .iter()
            .filter(|f| !partition_columns.contains(f.name()))
            .map(|f| f.as_ref().clone())
            .collect::<Vec<_>>(),
    );
    let files: Vec<_> = table
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    let shown: Vec<&Field> = schema
        .fields()
        .iter()
        .filter(|f| f.name() != PARTITION_COLUMN)
        .map(|f| f.as_ref())
        .collect();
    if files.is_empty() {
        let visible = Schema::new(shown.into_iter().cloned().collect::<Vec<_>>());
        return s
            .view_of_sql(view, &empty_select(&Arc::new(visible))?)
            .await;
    }
    let literal_columns: Vec<&String> = partition_columns
        .iter()
        .filter(|c| c.as_str() != PARTITION_COLUMN)
        .collect();
    let mut groups: BTreeMap<Vec<Option<String>>, Vec<String>> = BTreeMap::new();
    for f in &files {
        let values = f.partition_values_map();
        let key = literal_columns
            .iter()
            .map(|c| values.get(c.as_str()).cloned().flatten())
            .collect();
        groups
            .entry(key)
            .or_default()
            .push(format!("{}{}", at.url(), f.path()));
    }
    let data = Arc::new(data);
    if literal_columns.is_empty() {
        let urls = groups.into_values().flatten().collect();
        return s
            .view_of_files(view, "parquet", urls, ddl(&data), &[])
            .await;
    }
    let mut parts = Vec::new();
    for (j, (values, urls)) in groups.into_iter().enumerate() {
        let raw = format!("{view}_g{j}");
        s.view_of_files(&raw, "parquet", urls, ddl(&data), &[])
            .await?;
        let lits = literal_columns
            .iter()
            .zip(&values)
            .map(|(c, v)| {
                let t = schema
                    .field_with_name(c)
                    .ok()
                    .and_then(|f| spark_type(f.data_type()))
                    .unwrap_or_else(|| "STRING".into());
                let v = match v {
                    Some(v) => format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'")),
                    None => "NULL".into(),
                };
                format!("CAST({v} AS {t}) AS `{}`", c.replace('`', "``"))
            })
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("SELECT *, {lits} FROM {raw}"));
    }
    s.view_of_sql(view, &parts.join(" UNION ALL ")).await
}

/// The Spark SQL name of an Arrow type, for the types Delta tables hold.
fn spark_type(t: &DataType) -> Option<String> {
    Some(match t {
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => "STRING".into(),
        DataType::Binary | DataType::BinaryView | DataType::LargeBinary => "BINARY".into(),
        DataType::Date32 => "DATE".into(),
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, Some(_)) => {
            "TIMESTAMP".into()
        }
        DataType::Timestamp(TimeUnit::Microsecond | TimeUnit::Nanosecond, None) => {
            "TIMESTAMP_NTZ".into()
        }
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        _ => return None,
    })
}

/// The DDL schema Spark reads files with (`None`: a type without a plain Spark name; the
/// engine then infers it from the files).
fn ddl(schema: &SchemaRef) -> Option<String> {
    schema
        .fields()
        .iter()
        .map(|f| {
            spark_type(f.data_type()).map(|t| format!("`{}` {t}", f.name().replace('`', "``")))
        })
        .collect::<Option<Vec<_>>>()
        .map(|cols| cols.join(", "))
}

/// A query of no rows with `schema`'s columns.
fn empty_select(schema: &SchemaRef) -> Result<String> {
    let cols = schema
        .fields()
        .iter()
        .map(|f| {
            let t = spark_type(f.data_type()).ok_or_else(|| {
                Error::from(Diagnostic::error(format!(
                    "the column `{}` has a type ({}) the Spark engine cannot declare",
                    f.name(),
                    f.data_type()
                )))
            })?;
            Ok(format!(
                "CAST(NULL AS {t}) AS `{}`",
                f.name().replace('`', "``")
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(format!("SELECT {} WHERE FALSE", cols.join(", ")))
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
