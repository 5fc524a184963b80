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
//!   read further is kept. At most [`KEPT`] tables are followed; past that, keeping one drops
//!   another (opened again when next needed).
//! - Nothing here decides what to write; a stale copy is only a slower path (the commit's
//!   conflict check, not this cache, is what keeps concurrent writers apart).
//! - An entry remembers how to undo its last [`RECENT`] commits ([`Undo`]), so the file list
//!   of any of those versions is known without reading anything ([`Tables::files_at`]); a
//!   version outside that window, or one before a change of the table's metadata, is not
//!   answered (the caller reads it through delta-rs).
//! - Tables loaded at a fixed version ([`Tables::pinned`]) are read-only copies of that version;
//!   one version of each of the last few tables is kept and shared by every read of that
//!   version, and dropped with the table ([`Tables::forget`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use deltalake::DeltaTable;
use deltalake::kernel::Action;

use super::checksum::{CHECKSUM_TAG, Checksum, ROWS_TAG};
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
    /// How to undo the last commits read, oldest first (at most [`RECENT`], consecutive, the
    /// last one `read_to`'s).
    recent: VecDeque<Arc<Undo>>,
}

/// How many commits an entry can undo ([`Open::files_at`]). A batch reads its upstream at the
/// version pinned when the batch was planned; with batches running side by side, a few more
/// commits may have landed since.
pub const RECENT: usize = 32;

/// What undoes one commit's changes to the file list.
#[derive(Default)]
pub struct Undo {
    version: u64,
    /// The inverse of each change, in the commit's order (undone last to first).
    steps: Vec<Step>,
    /// The commit changed the table's metadata or protocol.
    reshaped: bool,
}

/// The inverse of one change to a file list.
enum Step {
    /// Drop (partition value, path): the commit added it.
    Drop(Option<String>, String),
    /// Put back (partition value, path, file): the commit removed or replaced it.
    Restore(Option<String>, String, FileMeta),
}

/// One active data file, as its `add` action described it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    /// Bytes.
    pub size: i64,
    /// The `add` action's statistics (JSON), if it had any.
    pub stats: Option<Arc<str>>,
    /// The rows and checksum tidemark recorded in the `add` action's tags when it wrote the
    /// file ([`CHECKSUM_TAG`]), if it did.
    pub measured: Option<Checksum>,
}

/// The checksum recorded in a file's `add` tags.
fn measured(tags: Option<&HashMap<String, Option<String>>>) -> Option<Checksum> {
    let tags = tags?;
    let rows = tags.get(ROWS_TAG)?.as_deref()?.parse().ok()?;
    Checksum::from_hex(rows, tags.get(CHECKSUM_TAG)?.as_deref()?)
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
        let mut undo = self.files.apply(actions);
        undo.version = version;
        for a in actions {
            match a {
                Action::Txn(t) => {
                    let e = self.txns.entry(t.app_id.clone()).or_insert(t.version);
                    *e = (*e).max(t.version);
                }
                Action::Metadata(_) | Action::Protocol(_) => {
                    self.reshaped = true;
                    undo.reshaped = true;
                }
                _ => {}
            }
        }
        remember(&mut self.recent, self.read_to, undo);
        self.read_to = Some(version);
    }

    /// The active files as of `version` whose partition value `keep` accepts, sorted by
    /// partition value and path: the files as of `read_to` with the later commits undone.
    /// `None` when `version` is after `read_to`, when a commit to undo is no longer remembered,
    /// or when one changed the table's metadata (its columns as of `version` may differ).
    pub fn files_at(
        &self,
        version: u64,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> Option<Vec<(Option<String>, String, FileMeta)>> {
        undone(&self.files, &self.recent, self.read_to?, version, keep)
    }
}

/// Remember `undo` (of the commit after `read_to`), keeping the last [`RECENT`].
fn remember(recent: &mut VecDeque<Arc<Undo>>, read_to: Option<u64>, undo: Undo) {
    if read_to.is_some_and(|r| r + 1 != undo.version) {
        recent.clear();
    }
    if recent.len() >= RECENT {
        recent.pop_front();
    }
    recent.push_back(Arc::new(undo));
}

/// `files` (as of `read_to`) that `keep` accepts, with the commits after `version` undone
/// (see [`Open::files_at`]).
fn undone(
    files: &Files,
    recent: &VecDeque<Arc<Undo>>,
    read_to: u64,
    version: u64,
    keep: impl Fn(Option<&str>) -> bool,
) -> Option<Vec<(Option<String>, String, FileMeta)>> {
    if version > read_to {
        return None;
    }
    let mut out: BTreeMap<(Option<String>, String), FileMeta> = files
        .by_key
        .iter()
        .filter(|(k, _)| keep(k.as_deref()))
        .flat_map(|(k, m)| {
            m.iter()
                .map(move |(p, f)| ((k.clone(), p.clone()), f.clone()))
        })
        .collect();
    let mut at = read_to;
    for undo in recent.iter().rev() {
        if at == version {
            break;
        }
        if undo.version != at || undo.reshaped {
            return None;
        }
        for step in undo.steps.iter().rev() {
            match step {
                Step::Drop(k, p) => {
                    out.remove(&(k.clone(), p.clone()));
                }
                Step::Restore(k, p, f) => {
                    if keep(k.as_deref()) {
                        out.insert((k.clone(), p.clone()), f.clone());
                    }
                }
            }
        }
        at -= 1;
    }
    (at == version).then(|| out.into_iter().map(|((k, p), f)| (k, p, f)).collect())
}

/// The active data files of a table, by the value of its partition column
/// [`PARTITION_COLUMN`] (`None`: files without one).
#[derive(Clone, Default)]
pub struct Files {
    by_key: BTreeMap<Option<String>, BTreeMap<String, FileMeta>>,
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
            // `add_action` is the only public reader of a file's tags (deprecated in favour of
            // Arrow access, which has no public accessor of tags).
            #[allow(deprecated)]
            let tags = f.add_action().tags;
            files.by_key.entry(key).or_default().insert(
                f.path().to_string(),
                FileMeta {
                    size: f.size(),
                    stats: f.stats().map(Arc::from),
                    measured: measured(tags.as_ref()),
                },
            );
        }
        Ok(files)
    }

    /// Apply a commit's adds and removes; what undoes them.
    pub fn apply(&mut self, actions: &[Action]) -> Undo {
        let mut undo = Undo::default();
        for a in actions {
            match a {
                Action::Add(add) => {
                    let key = partition_of(&add.partition_values);
                    let meta = FileMeta {
                        size: add.size,
                        stats: add.stats.as_deref().map(Arc::from),
                        measured: measured(add.tags.as_ref()),
                    };
                    let old = self
                        .by_key
                        .entry(key.clone())
                        .or_default()
                        .insert(add.path.clone(), meta);
                    if let Some(old) = old {
                        undo.steps
                            .push(Step::Restore(key.clone(), add.path.clone(), old));
                    }
                    undo.steps.push(Step::Drop(key, add.path.clone()));
                }
                Action::Remove(r) => match &r.partition_values {
                    Some(values) => {
                        let key = partition_of(values);
                        if let Some(old) = self.by_key.get_mut(&key).and_then(|m| m.remove(&r.path))
                        {
                            undo.steps.push(Step::Restore(key, r.path.clone(), old));
                        }
                    }
                    None => {
                        for (key, m) in self.by_key.iter_mut() {
                            if let Some(old) = m.remove(&r.path) {
                                undo.steps
                                    .push(Step::Restore(key.clone(), r.path.clone(), old));
                            }
                        }
                    }
                },
                _ => {}
            }
        }
        self.by_key.retain(|_, m| !m.is_empty());
        undo
    }

    /// Whether some active file has no partition value.
    pub fn has_unpartitioned(&self) -> bool {
        self.by_key.contains_key(&None)
    }

    /// Every active file: (partition value, path, size).
    pub fn all(&self) -> impl Iterator<Item = (Option<&str>, &str, i64)> + '_ {
        self.by_key.iter().flat_map(|(k, m)| {
            m.iter()
                .map(move |(p, f)| (k.as_deref(), p.as_str(), f.size))
        })
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
                m.iter().map(move |(p, f)| (k, p.as_str(), f.size))
            })
    }
}

/// The filter of [`Tables::files_at`] for the partitions `keys` (all of them without `keys`). A
/// file without a partition value is kept: it is an unpartitioned table's, read whole.
pub fn in_keys(
    keys: Option<&std::collections::BTreeSet<String>>,
) -> impl Fn(Option<&str>) -> bool + '_ {
    move |k| match (keys, k) {
        (Some(keys), Some(k)) => keys.contains(k),
        _ => true,
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

/// How many tables are followed at most (each holds its file list): a command that looks at
/// every table of a large warehouse (`janitor`) must not hold them all.
const KEPT: usize = 1024;

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
                    recent: VecDeque::new(),
                }
            }
        };
        self.keep(at, &open)?;
        Ok(open)
    }

    /// The files of the table at `at` as of `version` that `keep` accepts ([`Open::files_at`]),
    /// with a copy of the table whose metadata is that of `version`: from the kept entry,
    /// brought forward first if it has not read `version` yet. `None`: the file list cannot
    /// answer for that version (the caller reads it through delta-rs).
    pub async fn files_at(
        &self,
        at: &Location,
        version: u64,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> Result<Option<(DeltaTable, Vec<(Option<String>, String, FileMeta)>)>> {
        let kept = {
            let map = self.lock()?;
            match map.get(at) {
                Some(o) if o.read_to >= Some(version) && !o.reshaped => {
                    return Ok(o.files_at(version, keep).map(|f| (o.table.clone(), f)));
                }
                Some(o) if o.read_to >= Some(version) => Some(o.clone()),
                _ => None,
            }
        };
        let mut open = match kept {
            Some(o) => o,
            None if at.lacks_local_table() => return Ok(None),
            None => self.latest(at).await?,
        };
        let Some(files) = open.files_at(version, keep) else {
            return Ok(None);
        };
        let table = open.shaped().await?;
        self.keep(at, &open)?;
        Ok(Some((table, files)))
    }

    /// Keep `open` unless a copy that has read further is kept already.
    pub fn keep(&self, at: &Location, open: &Open) -> Result<()> {
        if open.read_to.is_none() {
            return Ok(());
        }
        let mut map = self.lock()?;
        let further = map.get(at).is_some_and(|kept| kept.read_to >= open.read_to);
        if !further {
            if !map.contains_key(at)
                && map.len() >= KEPT
                && let Some(other) = map.keys().next().cloned()
            {
                // Any other: an entry dropped is only opened again when next needed.
                map.remove(&other);
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::kernel::{Add, Remove};
    use proptest::prelude::*;

    fn add(key: u8, path: u8, size: i64) -> Action {
        Action::Add(Add {
            path: format!("k={key}/f{path}.parquet"),
            size,
            partition_values: HashMap::from([(
                PARTITION_COLUMN.to_string(),
                Some(format!("2024-01-0{key}")),
            )]),
            stats: Some(format!("{{\"numRecords\":{size}}}")),
            data_change: true,
            ..Default::default()
        })
    }

    fn remove(key: u8, path: u8, with_values: bool) -> Action {
        Action::Remove(Remove {
            path: format!("k={key}/f{path}.parquet"),
            data_change: true,
            partition_values: with_values.then(|| {
                HashMap::from([(
                    PARTITION_COLUMN.to_string(),
                    Some(format!("2024-01-0{key}")),
                )])
            }),
            ..Default::default()
        })
    }

    fn listing(
        files: &Files,
        keep: impl Fn(Option<&str>) -> bool,
    ) -> Vec<(Option<String>, String, FileMeta)> {
        undone(files, &VecDeque::new(), 0, 0, keep).unwrap_or_default()
    }

    /// One commit: adds and removes over 3 partitions and 4 paths each, maybe a metadata change.
    fn commit() -> impl Strategy<Value = (Vec<Action>, bool)> {
        let action = prop_oneof![
            (1u8..4, 0u8..4, 1i64..100).prop_map(|(k, p, s)| add(k, p, s)),
            (1u8..4, 0u8..4, any::<bool>()).prop_map(|(k, p, v)| remove(k, p, v)),
        ];
        (
            proptest::collection::vec(action, 0..5),
            proptest::bool::weighted(0.05),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Undoing the last commits gives exactly the file list each version had, for every
        /// version still remembered and no metadata change after it; older ones are refused.
        #[test]
        fn undoing_commits_gives_each_remembered_versions_files(
            commits in proptest::collection::vec(commit(), 1..45),
            only in proptest::option::of(1u8..4),
        ) {
            let keep = |k: Option<&str>| match only {
                None => true,
                Some(o) => k == Some(format!("2024-01-0{o}").as_str()),
            };
            let mut files = Files::default();
            let mut recent = VecDeque::new();
            let mut seen = Vec::new();
            let mut reshaped_at = Vec::new();
            for (v, (actions, reshaped)) in commits.iter().enumerate() {
                let v = v as u64;
                let mut undo = files.apply(actions);
                undo.version = v;
                undo.reshaped = *reshaped;
                if *reshaped {
                    reshaped_at.push(v);
                }
                remember(&mut recent, v.checked_sub(1), undo);
                seen.push(listing(&files, keep));
            }
            let read_to = commits.len() as u64 - 1;
            for v in 0..=read_to {
                let got = undone(&files, &recent, read_to, v, keep);
                let remembered = read_to - v <= RECENT as u64;
                let reshaped_after = reshaped_at.iter().any(|r| *r > v);
                if remembered && !reshaped_after {
                    prop_assert_eq!(got.as_ref(), Some(&seen[v as usize]), "version {}", v);
                } else {
                    prop_assert_eq!(got, None, "version {}", v);
                }
            }
            prop_assert_eq!(undone(&files, &recent, read_to, read_to + 1, keep), None);
        }
    }
}
