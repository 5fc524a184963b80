//! An exclusive writer's lock on one table, for writes that read or replace the whole table
//! (a unique-key MERGE, a FULL or SEED refresh).
//!
//! Two such writes to one table always conflict in Delta (each reads or removes what the other
//! changes), so without a lock the slower writer loses every commit while the other keeps
//! committing: a history backfill in `dev` merging batch after batch into a table it shares
//! with `prod` would starve prod's daily run of its one batch (found by the backfill-beside-run
//! test). With the lock, writers of one table take turns, one batch each.
//!
//! Invariants:
//! - The lock is advisory (`flock` on `<table>/_tidemark.lock`) and local to the machine; it
//!   is taken *after* the batch's rows are computed and held only for the refresh-merge-commit
//!   step. Correctness never depends on it: Delta's conflict check still refuses any
//!   overlapping commit. The lock only turns a livelock into a short wait.
//! - The file starts with `_`, so vacuum keeps it; it goes when the table's directory goes.
//! - Between one batch's release and the same writer's next acquisition lies the next
//!   batch's computation, so a waiting writer is woken and takes the lock first.
//! - Time-range batches never take it: their windows are disjoint, and parallel batches of
//!   one table must not serialise.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result, io_error};

/// The lock file's name inside a table's directory.
pub const LOCK_FILE: &str = "_tidemark.lock";

/// Held while a whole-table write commits; dropping it releases the lock.
#[derive(Debug)]
pub struct TableLock {
    _file: File,
}

/// Take the exclusive lock on the table at `table_dir`, waiting for other writers.
pub async fn exclusive(table_dir: &Path) -> Result<TableLock> {
    let path: PathBuf = table_dir.join(LOCK_FILE);
    std::fs::create_dir_all(table_dir)
        .map_err(|e| Error::from(io_error("create", table_dir, &e)))?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::from(io_error("create", &path, &e)))?;
    // Blocking wait off the async workers: the kernel wakes a waiter when the holder releases.
    let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
        .await
        .map_err(|e| Error::Bug(format!("the table-lock task failed: {e}")))?;
    match locked {
        Ok(file) => Ok(TableLock { _file: file }),
        Err(e) => Err(Error::from(io_error("lock", &path, &e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn a_second_writer_waits_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let first = exclusive(dir.path()).await.unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let (d, r) = (dir.path().to_path_buf(), released.clone());
        let second = tokio::spawn(async move {
            let _l = exclusive(&d).await.unwrap();
            r.load(Ordering::SeqCst)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!second.is_finished(), "the second writer must wait");
        released.store(true, Ordering::SeqCst);
        drop(first);
        assert!(
            second.await.unwrap(),
            "it took the lock only after the release"
        );
        assert!(dir.path().join(LOCK_FILE).exists());
    }
}
