//! Operations on whole tables: version and partitioning, zero-copy clones, per-partition
//! statistics, vacuum.
//!
//! Invariants:
//! - A clone hard-links the data files of the source version into the new table's directory and
//!   commits them as the new table's first version: no bytes are copied, and deleting the source
//!   table later never affects the clone (a hard link keeps the file alive). An interrupted
//!   clone that got as far as its commit is found and reused.
//! - Vacuum removes only files no kept version needs and that were removed over an hour ago
//!   (an apply may be reading them right now).

use std::path::Path;

use deltalake::operations::vacuum::VacuumMode;
use deltalake::protocol::SaveMode;
use futures::TryStreamExt;

use super::delta::{open, provider, url_of};
use super::session::new_context;
use super::{Checksum, PARTITION_COLUMN, TableInfo, failed};
use crate::error::{Error, Result};

/// Version and partitioning of the table at `path` (`None`: no table there).
pub async fn table_info(path: &Path) -> Result<Option<TableInfo>> {
    if !path.join("_delta_log").exists() {
        return Ok(None);
    }
    let t = open(path).await?;
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

/// Create `to` as a zero-copy clone of `from` at `version` (see the module invariants).
pub async fn clone_table(from: &Path, version: u64, to: &Path) -> Result<u64> {
    if to.join("_delta_log").exists() {
        // An earlier, interrupted attempt got as far as committing the clone.
        return table_info(to)
            .await
            .map(|i| i.map(|i| i.version).unwrap_or_default());
    }
    let source = deltalake::open_table_with_version(url_of(from)?, version)
        .await
        .map_err(|e| {
            failed(
                &format!("cannot read {} at version {version}", from.display()),
                e,
            )
        })?;
    let snapshot = source
        .snapshot()
        .map_err(|e| failed("cannot read the table state", e))?;
    let schema = snapshot.schema();
    let partition_columns = snapshot.metadata().partition_columns().to_vec();
    let files: Vec<_> = source
        .get_active_add_actions_by_partitions(&[])
        .try_collect()
        .await
        .map_err(|e| failed("reading the table's files", e))?;
    let mut actions = Vec::with_capacity(files.len());
    for f in &files {
        let rel = f.path().to_string();
        if rel.contains("://") || rel.starts_with('/') || rel.split('/').any(|p| p == "..") {
            return Err(Error::Bug(format!("unexpected data file path {rel}")));
        }
        let (src, dst) = (from.join(&rel), to.join(&rel));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::from(crate::error::io_error("create", parent, &e)))?;
        }
        match std::fs::hard_link(&src, &dst) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(crate::error::io_error("link", &dst, &e).into()),
        }
        #[allow(deprecated)]
        let add = f.add_action();
        actions.push(deltalake::kernel::Action::Add(add));
    }
    let target = open(to).await?;
    let table = target
        .create()
        .with_columns(schema.fields().cloned())
        .with_partition_columns(partition_columns)
        .with_actions(actions)
        .with_save_mode(SaveMode::ErrorIfExists)
        .await
        .map_err(|e| failed(&format!("cannot create the clone {}", to.display()), e))?;
    Ok(table.version().unwrap_or_default())
}

/// Rows and checksum per partition at `version` (see [`super::Engine::partition_stats`]).
pub async fn partition_stats(
    path: &Path,
    version: u64,
) -> Result<std::collections::BTreeMap<String, Checksum>> {
    let ctx = new_context();
    let provider = provider(&ctx, path, Some(version))
        .await
        .map_err(|e| failed(&format!("cannot read {}", path.display()), e))?;
    let partitioned = provider
        .schema()
        .fields()
        .iter()
        .any(|f| f.name() == PARTITION_COLUMN);
    let df = ctx
        .read_table(provider)
        .map_err(|e| failed("reading the table", e))?;
    let batches = df
        .collect()
        .await
        .map_err(|e| failed("reading the table", e))?;
    if partitioned {
        return Checksum::grouped(&batches, PARTITION_COLUMN);
    }
    let mut c = Checksum::default();
    c.add(&batches, &[])?;
    Ok(std::collections::BTreeMap::from([("all".to_string(), c)]))
}

/// Vacuum files that no version in `keep` needs and that were removed over an hour ago (an apply
/// may be reading them right now); returns how many files are (or would be)
/// deleted.
pub async fn vacuum(path: &Path, keep: &[u64], dry_run: bool) -> Result<u64> {
    if table_info(path).await?.is_none() {
        return Ok(0);
    }
    let table = open(path).await?;
    let (_, metrics) = table
        .vacuum()
        .with_mode(VacuumMode::Lite)
        .with_retention_period(chrono::Duration::hours(1))
        .with_enforce_retention_duration(false)
        .with_keep_versions(keep)
        .with_dry_run(dry_run)
        .await
        .map_err(|e| failed(&format!("cannot vacuum {}", path.display()), e))?;
    Ok(metrics.files_deleted.len() as u64)
}
