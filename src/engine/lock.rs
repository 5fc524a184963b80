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
//! - A table on an object store has no directory to hold a lock file and no lock reaches
//!   across machines: its lock file is in the machine's temporary directory
//!   (`tidemark-locks/<blake3 of the table URL>.lock`), so writers on one machine still take
//!   turns, and writers on different machines rely on the conflict check and the scheduler's
//!   retries (with backoff) for progress.
//! - Between one batch's release and the same writer's next acquisition lies the next
//!   batch's computation, so a waiting writer is woken and takes the lock first.
//! - Time-range batches never take it: their windows are disjoint, and parallel batches of
//!   one table must not serialise.

use std::fs::File;
use std::path::PathBuf;

use super::Location;
use crate::error::{Error, Result, io_error};

/// The lock file's name inside a table's directory.
pub const LOCK_FILE: &str = "_tidemark.lock";

/// Held while a whole-table write commits; dropping it releases the lock.
#[derive(Debug)]
pub struct TableLock {
    _file: File,
}

/// Take the exclusive lock on the table at `at`, waiting for other writers.
pub async fn exclusive(at: &Location) -> Result<TableLock> {
    let (dir, path): (PathBuf, PathBuf) = match at.local_path() {
        Some(dir) => (dir.clone(), dir.join(LOCK_FILE)),
        None => {
            let dir = std::env::temp_dir().join("tidemark-locks");
            let name = blake3::hash(at.url().as_str().as_bytes()).to_hex();
            (dir.clone(), dir.join(format!("{}.lock", &name[..32])))
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::from(io_error("create", &dir, &e)))?;
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
        let at = Location::local(dir.path()).unwrap();
        let first = exclusive(&at).await.unwrap();
        let released = Arc::new(AtomicBool::new(false));
        let (d, r) = (at.clone(), released.clone());
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
