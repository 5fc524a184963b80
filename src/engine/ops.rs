//! Operations on whole tables: version and partitioning, zero-copy clones, per-partition
//! statistics, vacuum.
//!
//! Invariants:
//! - A clone copies the data files of the source version into the new table and commits them
//!   as the new table's first version, so every table owns its files: deleting or vacuuming the
//!   source later never affects the clone. On a local disk the copy is a hard link (no bytes
//!   move); on an object store it is one server-side copy per file (`CopyObject`, Copy Blob),
//!   16 at a time: no bytes pass through tidemark, but the store holds a second copy of the
//!   table until the janitor drops the older generation. An interrupted clone keeps the files
//!   it copied and, if it got as far as its commit, is found and reused.
//! - Vacuum removes only files no kept version needs and that were removed over an hour ago
//!   (an apply may be reading them right now).

use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::SaveMode;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::checksum::Running;
use super::delta::{failed_delta, open, open_at};
use super::location::{store_of, store_path};
use super::session::new_context;
use super::{Checksum, Location, PARTITION_COLUMN, TableInfo, failed};
use crate::error::{Error, Result};

/// How many data files a clone copies at once on an object store (each copy is one server-side
/// request).
const COPIES_IN_FLIGHT: usize = 16;

/// Version and partitioning of the table at `at` (`None`: no table there).
pub async fn table_info(at: &Location) -> Result<Option<TableInfo>> {
    if at.lacks_local_table() {
        return Ok(None);
    }
    let t = open(at).await?;
    let Some(v) = t.version() else {
        return Ok(None);
    };
    let partition_columns = t
        .snapshot()
        .map(|s| s.metadata().partition_columns().to_vec())
        .unwrap_or_default();
    Ok(Some(TableInfo {
        version: v,
        partition_columns,
    }))
}

/// [`table_info`] of a table this process follows ([`super::tables::Tables::latest`]): the
/// kept copy brought up to date (only the commits since are read), or opened and kept for the
/// batches and reads that follow.
pub async fn followed_info(
    at: &Location,
    tables: &super::tables::Tables,
) -> Result<Option<TableInfo>> {
    if at.lacks_local_table() {
        return Ok(None);
    }
    let mut open = tables.latest(at).await?;
    let Some(version) = open.read_to() else {
        return Ok(None);
    };
    let table = open.shaped().await?;
    tables.keep(at, &open)?;
    let partition_columns = table
        .snapshot()
        .map(|s| s.metadata().partition_columns().to_vec())
        .unwrap_or_default();
    Ok(Some(TableInfo {
        version,
        partition_columns,
    }))
}

/// Create `to` as a clone of `from` at `version` (see the module invariants); a copy of `from`
/// at that version kept in `tables` is not loaded again.
pub async fn clone_table(
    from: &Location,
    version: u64,
    to: &Location,
    tables: &super::tables::Tables,
) -> Result<u64> {
    if let Some(info) = table_info(to).await? {
        // An earlier, interrupted attempt got as far as committing the clone.
        return Ok(info.version);
    }
    let source = match tables.at(from, version) {
        Some(t) => t,
        None => open_at(from, version).await?,
    };
    let snapshot = source
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let schema = snapshot.schema();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    // The clone is the same table under another name: it keeps the source's properties (the
    // checkpoint interval tidemark sets, so that opening it replays at most 10 commits).
    let configuration: Vec<(String, Option<String>)> = snapshot
        .metadata()
        .configuration()
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    let files: Vec<_> = source
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    let (store, from_root) = store_of(from)?;
    let to_root = store_path(to)?;
    let mut copies = Vec::with_capacity(files.len());
    let mut actions = Vec::with_capacity(files.len());
    for f in &files {
        let rel = f.path().to_string();
        if rel.contains("://") || rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
            return Err(Error::Bug(format!("unexpected data file path {rel}")));
        }
        copies.push((child(&from_root, &rel)?, child(&to_root, &rel)?));
        #[allow(deprecated)]
        let add = f.add_action();
        actions.push(deltalake::kernel::Action::Add(add));
    }
    if from.local_path().is_some() {
        link_files(&copies)?;
    } else {
        copy_files(store.as_ref(), copies).await?;
    }
    let target = open(to).await?;
    let table = target
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(partition_columns)
        .with_configuration(configuration)
        .with_actions(actions)
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(|e| failed_delta(&format!("cannot create the clone `{to}`"), e))?;
    Ok(table.version().unwrap_or_default())
}

/// The object at `rel` (a data file's path as delta-rs gives it: relative, decoded once from
/// the log's URL encoding, so it is the object's key as stored, e.g. `…T01%3A00/…` for an hourly
/// partition) below `root`.
fn child(root: &object_store::path::Path, rel: &str) -> Result<object_store::path::Path> {
    object_store::path::Path::parse(format!("{root}/{rel}"))
        .map_err(|e| Error::Bug(format!("unexpected data file path {rel}: {e}")))
}

/// Copy each `(from, to)` within one store: a hard link on a local disk, a server-side copy on
/// an object store. A target already there (from an interrupted clone) is a copy of the same
/// immutable file, so copying over it is harmless (S3 has no copy-if-absent).
async fn copy_files(
    store: &dyn ObjectStore,
    copies: Vec<(object_store::path::Path, object_store::path::Path)>,
) -> Result<()> {
    futures::stream::iter(copies)
        .map(|(from, to)| async move {
            match store.copy(&from, &to).await {
                Ok(()) => Ok(()),
                Err(e) => Err(Error::transient(
                    crate::error::Diagnostic::error(format!("cannot copy `{from}` to `{to}`"))
                        .caused_by(e),
                )),
            }
        })
        .buffer_unordered(COPIES_IN_FLIGHT)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// [`copy_files`] on a local disk: one hard link per file and each directory made once (the
/// store's `copy` makes the directory and links to a temporary name then renames, per file).
/// A target already there is the same immutable file, linked by an interrupted clone.
fn link_files(copies: &[(object_store::path::Path, object_store::path::Path)]) -> Result<()> {
    let fs = object_store::local::LocalFileSystem::new();
    let on_disk = |p: &object_store::path::Path| {
        fs.path_to_filesystem(p)
            .map_err(|e| Error::Bug(format!("not a local file path {p}: {e}")))
    };
    let mut made = std::collections::BTreeSet::new();
    for (from, to) in copies {
        let (src, dst) = (on_disk(from)?, on_disk(to)?);
        let io = |what: &str, at: &std::path::Path, e: &std::io::Error| {
            Error::transient(crate::error::io_error(what, at, e))
        };
        if let Some(dir) = dst.parent()
            && made.insert(dir.to_path_buf())
        {
            std::fs::create_dir_all(dir).map_err(|e| io("create", dir, &e))?;
        }
        if let Err(e) = std::fs::hard_link(&src, &dst) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(io("link", &dst, &e));
            }
            std::fs::remove_file(&dst).map_err(|e| io("replace", &dst, &e))?;
            std::fs::hard_link(&src, &dst).map_err(|e| io("link", &dst, &e))?;
        }
    }
    Ok(())
}

/// Delete every object of the table at `at` (its directory, on a local disk).
pub async fn drop_table(at: &Location) -> Result<()> {
    if let Some(dir) = at.local_path() {
        if !dir.exists() {
            return Ok(());
        }
        return std::fs::remove_dir_all(&dir)
            .map_err(|e| Error::from(crate::error::io_error("delete", &dir, &e)));
    }
    let (store, root) = store_of(at)?;
    let listed = store.list(Some(&root)).map_ok(|m| m.location).boxed();
    store
        .delete_stream(listed)
        .try_collect::<Vec<_>>()
        .await
        .map_err(|e| {
            Error::transient(
                crate::error::Diagnostic::error(format!("cannot delete the table `{at}`"))
                    .caused_by(e),
            )
        })?;
    Ok(())
}

/// Rows and checksum per partition at `version` (see [`super::Engine::partition_stats`]):
/// with `recorded`, from the checksums recorded in the files' tags when every file read has
/// one ([`recorded_stats`]); otherwise read through `tables` (streamed, not collected).
pub async fn partition_stats(
    at: &Location,
    version: u64,
    only: Option<&std::collections::BTreeSet<String>>,
    tables: &super::tables::Tables,
    recorded: bool,
) -> Result<std::collections::BTreeMap<String, Checksum>> {
    if recorded && let Some(stats) = recorded_stats(at, version, only, tables).await? {
        return Ok(stats);
    }
    read_stats(at, version, only, tables).await
}

/// [`partition_stats`] from the checksums tidemark recorded when it wrote the files (see
/// [`super::checksum::CHECKSUM_TAG`]): the same figures as reading the rows, since a checksum is
/// a sum over rows and each file's was taken of the rows written to it. `None` when a file to
/// read has none (written by delta-rs, another engine or an older tidemark) or the file list
/// cannot answer for `version`.
pub async fn recorded_stats(
    at: &Location,
    version: u64,
    only: Option<&std::collections::BTreeSet<String>>,
    tables: &super::tables::Tables,
) -> Result<Option<std::collections::BTreeMap<String, Checksum>>> {
    let Some((table, files)) = tables
        .files_at(at, version, super::tables::in_keys(only))
        .await?
    else {
        return Ok(None);
    };
    let partitioned = table.snapshot().is_ok_and(|s| {
        s.metadata()
            .partition_columns()
            .iter()
            .any(|c| c == PARTITION_COLUMN)
    });
    let mut out = std::collections::BTreeMap::new();
    let mut all = Checksum::default();
    for (key, _, meta) in &files {
        let Some(measured) = meta.measured else {
            return Ok(None);
        };
        match (partitioned, key) {
            (true, Some(k)) => out
                .entry(k.clone())
                .or_insert_with(Checksum::default)
                .merge(&measured),
            (true, None) => return Ok(None),
            (false, _) => all.merge(&measured),
        }
    }
    if !partitioned {
        return Ok(Some(std::collections::BTreeMap::from([(
            "all".to_string(),
            all,
        )])));
    }
    // Reading finds no rows, hence no entry, for a partition of empty files.
    out.retain(|_, c: &mut Checksum| c.rows > 0);
    Ok(Some(out))
}

/// [`partition_stats`] by reading the rows.
pub async fn read_stats(
    at: &Location,
    version: u64,
    only: Option<&std::collections::BTreeSet<String>>,
    tables: &super::tables::Tables,
) -> Result<std::collections::BTreeMap<String, Checksum>> {
    let ctx = new_context();
    let provider = match tables.pinned(at, version).await {
        Ok(t) => super::delta::provider_of(&ctx, t).await,
        Err(e) => Err(e),
    }
    .map_err(|e| failed(&format!("cannot read `{at}`"), e))?;
    let partitioned = provider
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == PARTITION_COLUMN);
    let mut df = ctx
        .read_table(provider)
        .map_err(|e| failed("reading the table", e))?;
    if let (true, Some(keys)) = (partitioned, only) {
        df = df
            .filter(partition_filter(keys))
            .map_err(|e| failed("reading the table", e))?;
    }
    let mut sum = Running::new(&[], partitioned.then_some(PARTITION_COLUMN));
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| failed("reading the table", e))?;
    while let Some(b) = stream.next().await {
        sum.add(&b.map_err(|e| failed("reading the table", e))?)?;
    }
    if partitioned {
        return Ok(sum.groups);
    }
    Ok(std::collections::BTreeMap::from([(
        "all".to_string(),
        sum.total,
    )]))
}

/// `PARTITION_COLUMN IN (keys)`: read only those partitions (pruned to their files).
pub fn partition_filter(keys: &std::collections::BTreeSet<String>) -> datafusion::prelude::Expr {
    use datafusion::prelude::{col, lit};
    col(PARTITION_COLUMN).in_list(keys.iter().map(|k| lit(k.clone())).collect(), false)
}

/// Vacuum files that no version in `keep` needs and that were removed over an hour ago (an apply
/// may be reading them right now); returns how many files are (or would be)
/// deleted.
pub async fn vacuum(at: &Location, keep: &[u64], dry_run: bool) -> Result<u64> {
    if table_info(at).await?.is_none() {
        return Ok(0);
    }
    let table = open(at).await?;
    let latest = table.version();
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(chrono::Duration::hours(1))
        .with_enforce_retention_duration(false)
        .with_keep_versions(keep)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| failed_delta(&format!("cannot vacuum `{at}`"), e))?;
    let orphans = match staging_in_use(at, keep, latest).await {
        Some(live) => super::staged::clean_orphans(at, &live, dry_run).await?,
        // A kept version could not be read: keep every staging directory.
        None => 0,
    };
    Ok(metrics.files_deleted.len() as u64 + orphans)
}

/// The staging directories (of a remote engine's batches) holding a file of the latest version
/// `latest` or of a version in `keep`; `None` when one of them cannot be read.
async fn staging_in_use(
    at: &Location,
    keep: &[u64],
    latest: Option<u64>,
) -> Option<std::collections::BTreeSet<String>> {
    let mut live = std::collections::BTreeSet::new();
    for v in keep.iter().copied().chain(latest) {
        let table = open_at(at, v).await.ok()?;
        let files: Vec<_> = table
            .get_active_add_actions_by_partitions(&[])
            .try_collect()
            .await
            .ok()?;
        live.extend(files.iter().filter_map(|f| {
            let path = f.path().to_string();
            let first = path.split('/').next()?;
            first
                .starts_with(super::staged::STAGING_PREFIX)
                .then(|| first.to_string())
        }));
    }
    Some(live)
}
