//! The Delta tables this process has open, followed commit by commit, with the application
//! transactions and the active data files of each.
//!
//! Opening a table replays its log since the last checkpoint (up to 100 commits), and bringing
//! a delta-rs 1.1 table up to date re-reads its whole file list: done for every batch, that
//! was most of a small batch's cost and grew with the table. Instead, the first open of a
//! table is kept, and later batches read only the commits made since (by this process or any
//! other), taking in their transactions and file adds and removes.
//!
//! Invariants:
//! - An entry's `txns` hold every application transaction of the commits in `(base, read_to]`,
//!   read from those commits themselves; transactions at or before `base` are looked up in the
//!   log as of `base` (a fixed cost per lookup, however long the table's log grows). So
//!   [`Open::landed`] is exact for every version up to `read_to`, whoever wrote it.
//! - An entry's [`Files`] are exactly the active files as of `read_to`: the file list of
//!   `base` plus every commit read since, in order.
//! - The kept delta-rs table may be older than `read_to`; [`Open::current`] brings a copy up
//!   to date for the writes that need one, [`Open::shaped`] only when the metadata changed.
//! - Entries only move forward: of two copies brought up to date concurrently, the one that has
//!   read further is kept.
//! - Nothing here decides what to write; a stale copy is only a slower path (the commit's
//!   conflict check, not this cache, is what keeps concurrent writers apart).
//! - Tables loaded at a fixed version ([`Tables::pinned`]) are read-only copies of that version;
//!   one version of each of the last few tables is kept and shared by every read of that
//!   version, and dropped with the table ([`Tables::forget`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use deltalake::DeltaTable;
use deltalake::kernel::Action;

use super::{Location, PARTITION_COLUMN, failed};
use crate::error::{Error, Result};

/// One open table (see the module invariants).
#[derive(Clone)]
pub struct Open {
    /// The table as of some version up to `read_to` (see [`Open::current`]).
    table: DeltaTable,
    /// The table as first opened (`None`: it did not exist then).
    base: Option<DeltaTable>,
    /// Application transactions of the commits after `base`, up to `read_to`: id → version.
    txns: HashMap<String, i64>,
    /// The last version whose commit was read (`None`: none).
    read_to: Option<u64>,
    /// The active data files as of `read_to`.
    files: Files,
    /// A commit after `table`'s version changed the table's metadata or protocol.
    reshaped: bool,
}

impl Open {
    /// The version of the last commit of `app_id`, if any, as of `read_to`.
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

    /// The last version read (`None`: the table does not exist yet).
    pub fn read_to(&self) -> Option<u64> {
        self.read_to
    }

    /// The active data files as of [`Open::read_to`].
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The table as of [`Open::read_to`]. Bringing a delta-rs table up to date re-reads its
    /// whole file list, so the kept table is only brought forward when a caller needs it.
    pub async fn current(&self) -> Result<DeltaTable> {
        let mut t = self.table.clone();
        if t.version() != self.read_to {
            t.update_incremental(self.read_to)
                .await
                .map_err(|e| failed("cannot read the table", e))?;
        }
        Ok(t)
    }

    /// A table whose metadata and protocol are those as of [`Open::read_to`] (its file list may
    /// be older): the kept one unless a later commit changed them.
    pub async fn shaped(&mut self) -> Result<DeltaTable> {
        if self.reshaped {
            self.table = self.current().await?;
            self.reshaped = false;
        }
        Ok(self.table.clone())
    }

    /// Adopt `table` (a newer state of the same table), reading the commits up to its version.
    pub async fn advance(&mut self, table: DeltaTable) -> Result<()> {
        let Some(to) = table.version() else {
            return Ok(());
        };
        let from = self.read_to.map_or(0, |v| v + 1);
        for v in from..=to {
            let actions = commit_actions(&table, v).await?;
            self.read(v, &actions);
        }
        self.table = table;
        self.reshaped = false;
        Ok(())
    }

    /// Read the commits made since `read_to`, by this process or any other, without
    /// re-reading the file list.
    pub async fn follow(&mut self, at: &Location) -> Result<()> {
        if self.table.version().is_none() {
            let table = super::delta::open(at).await?;
            return self.advance(table).await;
        }
        let mut v = self.read_to.map_or(0, |v| v + 1);
        while let Some(actions) = read_commit(&self.table, v).await? {
            self.read(v, &actions);
            v += 1;
        }
        Ok(())
    }

    /// Take in commit `version`'s actions (the next one after `read_to`).
    pub fn read(&mut self, version: u64, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Txn(t) => {
                    let e = self.txns.entry(t.app_id.clone()).or_insert(t.version);
                    *e = (*e).max(t.version);
                }
                Action::Metadata(_) | Action::Protocol(_) => self.reshaped = true,
                _ => {}
            }
        }
        self.files.apply(actions);
        self.read_to = Some(version);
    }
}

/// The active data files of a table, by the value of its partition column
/// [`PARTITION_COLUMN`] (`None`: files without one).
#[derive(Clone, Default)]
pub struct Files {
    by_key: BTreeMap<Option<String>, BTreeMap<String, i64>>,
}

impl Files {
    /// The file list of `table` as loaded.
    fn of(table: &DeltaTable) -> Result<Files> {
        let mut files = Files::default();
        if table.version().is_none() {
            return Ok(files);
        }
        let state = table
            .snapshot()
            .map_err(|e| failed("cannot read the table state", e))?;
        let files_of = state
            .snapshot()
            .try_log_data()
            .map_err(|e| failed("cannot read the table's file list", e))?;
        for f in files_of.iter() {
            let key = f
                .partition_values_map()
                .get(PARTITION_COLUMN)
                .cloned()
                .flatten();
            files
                .by_key
                .entry(key)
                .or_default()
                .insert(f.path().to_string(), f.size());
        }
        Ok(files)
    }

    /// Apply a commit's adds and removes.
    pub fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Add(add) => {
                    self.by_key
                        .entry(partition_of(&add.partition_values))
                        .or_default()
                        .insert(add.path.clone(), add.size);
                }
                Action::Remove(r) => match &r.partition_values {
                    Some(values) => {
                        if let Some(m) = self.by_key.get_mut(&partition_of(values)) {
                            m.remove(&r.path);
                        }
                    }
                    None => {
                        for m in self.by_key.values_mut() {
                            m.remove(&r.path);
                        }
                    }
                },
                _ => {}
            }
        }
        self.by_key.retain(|_, m| !m.is_empty());
    }

    /// Whether some active file has no partition value.
    pub fn has_unpartitioned(&self) -> bool {
        self.by_key.contains_key(&None)
    }

    /// Every active file: (partition value, path, size).
    pub fn all(&self) -> impl Iterator<Item = (Option<&str>, &str, i64)> + '_ {
        self.by_key
            .iter()
            .flat_map(|(k, m)| m.iter().map(move |(p, s)| (k.as_deref(), p.as_str(), *s)))
    }

    /// The files whose partition value is in `[lo, hi)`: (value, path, size).
    pub fn in_range<'a>(
        &'a self,
        lo: &'a str,
        hi: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, i64)> + 'a {
        self.by_key
            .range(Some(lo.to_string())..Some(hi.to_string()))
            .flat_map(|(k, m)| {
                let k = k.as_deref().unwrap_or_default();
                m.iter().map(move |(p, s)| (k, p.as_str(), *s))
            })
    }
}

/// The value of [`PARTITION_COLUMN`] in a file's partition values.
pub fn partition_of(values: &HashMap<String, Option<String>>) -> Option<String> {
    values.get(PARTITION_COLUMN).cloned().flatten()
}

/// The actions of commit `version` of `table`, if it exists.
pub async fn read_commit(table: &DeltaTable, version: u64) -> Result<Option<Vec<Action>>> {
    let Some(commit) = table
        .log_store()
        .read_commit_entry(version)
        .await
        .map_err(|e| failed("reading a commit", e))?
    else {
        return Ok(None);
    };
    deltalake::logstore::get_actions(version, &commit)
        .map(Some)
        .map_err(|e| failed("reading a commit", e))
}

/// The actions of commit `version` of `table`, which must exist.
pub async fn commit_actions(table: &DeltaTable, version: u64) -> Result<Vec<Action>> {
    read_commit(table, version)
        .await?
        .ok_or_else(|| Error::Bug(format!("commit {version} is missing from the table's log")))
}

/// The open tables, by location.
#[derive(Default)]
pub struct Tables {
    open: Mutex<HashMap<Location, Open>>,
    /// Tables loaded at a fixed version, most recently used last (see [`Tables::pinned`]).
    pinned: Mutex<std::collections::VecDeque<(Location, u64, DeltaTable)>>,
}

/// How many tables loaded at a fixed version are kept (one version each).
const PINNED: usize = 64;

impl Tables {
    /// The table at `at` as of now: the kept copy brought up to date, or opened.
    pub async fn latest(&self, at: &Location) -> Result<Open> {
        let kept = self.lock()?.get(at).cloned();
        let open = match kept {
            Some(mut o) => {
                o.follow(at).await?;
                o
            }
            None => {
                let table = super::delta::open(at).await?;
                let read_to = table.version();
                Open {
                    base: read_to.map(|_| table.clone()),
                    files: Files::of(&table)?,
                    table,
                    txns: HashMap::new(),
                    read_to,
                    reshaped: false,
                }
            }
        };
        self.keep(at, &open)?;
        Ok(open)
    }

    /// Keep `open` unless a copy that has read further is kept already.
    pub fn keep(&self, at: &Location, open: &Open) -> Result<()> {
        if open.read_to.is_none() {
            return Ok(());
        }
        let mut map = self.lock()?;
        let further = map.get(at).is_some_and(|kept| kept.read_to >= open.read_to);
        if !further {
            map.insert(at.clone(), open.clone());
        }
        Ok(())
    }

    /// The kept table at exactly `version`, if that is the version kept.
    pub fn at(&self, at: &Location, version: u64) -> Option<DeltaTable> {
        let map = self.open.lock().ok()?;
        map.get(at)
            .filter(|o| o.table.version() == Some(version))
            .map(|o| o.table.clone())
    }

    /// The table at `at` loaded at `version`: the followed copy when it is at that version, a
    /// copy loaded at that version before, or loaded now (and kept, in place of another version
    /// of the same table). A version's content never changes, so a copy is as good as a fresh
    /// load; keeping the last [`PINNED`] tables spares repeated reads of one version (a canary's
    /// diff, a gate's queries, batches reading an upstream at the version they pinned) a replay
    /// of the table's log each. The error is delta-rs's, as text.
    pub async fn pinned(
        &self,
        at: &Location,
        version: u64,
    ) -> std::result::Result<DeltaTable, String> {
        if let Some(t) = self.at(at, version) {
            return Ok(t);
        }
        if let Ok(mut kept) = self.pinned.lock()
            && let Some(i) = kept.iter().position(|(l, v, _)| *v == version && l == at)
            && let Some(entry) = kept.remove(i)
        {
            let table = entry.2.clone();
            kept.push_back(entry);
            return Ok(table);
        }
        let table = deltalake::open_table_with_version(at.url().clone(), version)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut kept) = self.pinned.lock() {
            // One version per table: a backfill reading an upstream as it grows pins a new
            // version per batch, and each copy holds the table's whole file list.
            kept.retain(|(l, _, _)| l != at);
            if kept.len() >= PINNED {
                kept.pop_front();
            }
            kept.push_back((at.clone(), version, table.clone()));
        }
        Ok(table)
    }

    /// Forget `at` (its table was dropped).
    pub fn forget(&self, at: &Location) {
        if let Ok(mut map) = self.open.lock() {
            map.remove(at);
        }
        if let Ok(mut kept) = self.pinned.lock() {
            kept.retain(|(l, _, _)| l != at);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, HashMap<Location, Open>>> {
        self.open
            .lock()
            .map_err(|_| Error::Bug("the open-tables lock is poisoned".into()))
    }
}
