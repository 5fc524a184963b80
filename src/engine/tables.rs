//! The Delta tables this process has open, kept up to date incrementally, with the application
//! transactions committed to them.
//!
//! Opening a table replays its log since the last checkpoint (up to 100 commits): done for every
//! batch, that was most of a small batch's cost. Instead, the first open of a table is kept and
//! later batches bring a copy up to date with the commits made since (by this process or any
//! other), reading only those.
//!
//! Invariants:
//! - An entry's `txns` hold every application transaction of the commits in `(base, read_to]`,
//!   read from those commits themselves; transactions at or before `base` are looked up in the
//!   log as of `base` (a fixed cost per lookup, however long the table's log grows). So
//!   [`Tables::landed`] is exact for every version up to `read_to`, whoever wrote it.
//! - Entries only move forward: of two copies brought up to date concurrently, the one that has
//!   read further is kept.
//! - Nothing here decides what to write; a stale copy is only a slower path (the commit's
//!   conflict check, not this cache, is what keeps concurrent writers apart).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use deltalake::DeltaTable;
use deltalake::kernel::Action;

use super::failed;
use crate::error::{Error, Result};

/// One open table (see the module invariants).
#[derive(Clone)]
pub struct Open {
    /// The table as of `read_to`.
    pub table: DeltaTable,
    /// The table as first opened (`None`: it did not exist then).
    base: Option<DeltaTable>,
    /// Application transactions of the commits after `base`, up to `read_to`: id → version.
    txns: HashMap<String, i64>,
    /// The last version whose commit was read (`None`: none).
    read_to: Option<u64>,
}

impl Open {
    /// The version of the last commit of `app_id`, if any, as of `self.table`.
    pub async fn landed(&self, app_id: &str) -> Result<Option<i64>> {
        if let Some(v) = self.txns.get(app_id) {
            return Ok(Some(*v));
        }
        let Some(base) = &self.base else {
            return Ok(None);
        };
        let snapshot = base
            .snapshot()
            .map_err(|e| failed("cannot read the table state", e))?;
        snapshot
            .transaction_version(base.log_store().as_ref(), app_id)
            .await
            .map_err(|e| failed("cannot read the table's transactions", e))
    }

    /// Adopt `table` (a newer state of the same table), reading the commits up to its version.
    pub async fn advance(&mut self, table: DeltaTable) -> Result<()> {
        let Some(to) = table.version() else {
            return Ok(());
        };
        let from = self.read_to.map_or(0, |v| v + 1);
        for v in from..=to {
            for a in commit_actions(&table, v).await? {
                if let Action::Txn(t) = a {
                    let e = self.txns.entry(t.app_id).or_insert(t.version);
                    *e = (*e).max(t.version);
                }
            }
        }
        self.read_to = Some(to);
        self.table = table;
        Ok(())
    }
}

/// The actions of commit `version` of `table`.
pub async fn commit_actions(table: &DeltaTable, version: u64) -> Result<Vec<Action>> {
    let Some(commit) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(|e| failed("reading a commit", e))?
    else {
        return Err(Error::Bug(format!(
            "commit {version} is missing from the table's log"
        )));
    };
    deltalake::logstore::get_actions(version, &commit).map_err(|e| failed("reading a commit", e))
}

/// The open tables, by path.
#[derive(Default)]
pub struct Tables {
    open: Mutex<HashMap<PathBuf, Open>>,
}

impl Tables {
    /// The table at `path` as of now: the kept copy brought up to date, or opened.
    pub async fn latest(&self, path: &Path) -> Result<Open> {
        let kept = self.lock()?.get(path).cloned();
        let open = match kept {
            Some(mut o) => {
                let mut newer = o.table.clone();
                if newer.version().is_some() {
                    newer
                        .update_incremental(None)
                        .await
                        .map_err(|e| failed(&format!("cannot read {}", path.display()), e))?;
                } else {
                    newer = super::delta::open(path).await?;
                }
                o.advance(newer).await?;
                o
            }
            None => {
                let table = super::delta::open(path).await?;
                let read_to = table.version();
                Open {
                    base: read_to.map(|_| table.clone()),
                    table,
                    txns: HashMap::new(),
                    read_to,
                }
            }
        };
        self.keep(path, &open)?;
        Ok(open)
    }

    /// Keep `open` unless a copy that has read further is kept already.
    pub fn keep(&self, path: &Path, open: &Open) -> Result<()> {
        if open.read_to.is_none() {
            return Ok(());
        }
        let mut map = self.lock()?;
        let further = map
            .get(path)
            .is_some_and(|kept| kept.read_to >= open.read_to);
        if !further {
            map.insert(path.to_path_buf(), open.clone());
        }
        Ok(())
    }

    /// The kept table at exactly `version`, if that is the version kept.
    pub fn at(&self, path: &Path, version: u64) -> Option<DeltaTable> {
        let map = self.open.lock().ok()?;
        map.get(path)
            .filter(|o| o.table.version() == Some(version))
            .map(|o| o.table.clone())
    }

    /// Forget `path` (its table was dropped).
    pub fn forget(&self, path: &Path) {
        if let Ok(mut map) = self.open.lock() {
            map.remove(path);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<PathBuf, Open>>> {
        self.open
            .lock()
            .map_err(|_| Error::Bug("the open-tables lock is poisoned".into()))
    }
}
