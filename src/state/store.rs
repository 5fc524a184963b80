//! The state store: an append-only log of commits with periodic checkpoints, under
//! `_tidemark/state/` in the warehouse.
//!
//! ```text
//! _tidemark/state/log/00000000000000000001.json         commit 1: {format, seq, at, message, actions}
//! _tidemark/state/checkpoints/00000000000000000050.json the whole state after commit 50
//! _tidemark/state/_last_checkpoint                      {"seq": 50} (a hint; verified)
//! ```
//!
//! Invariants:
//! - Commit `n` is written with put-if-absent, only after it was validated against the state at
//!   `n - 1`. Two writers racing for `n`: one wins, the other re-reads and re-validates (its
//!   preconditions — e.g. the environment revision its plan was made from — are checked again on
//!   the new state), so a lost race never overwrites anything.
//! - Commits are never changed or deleted: the log is the full history. Checkpoints only make
//!   reading fast; the state after commit `n` is the same whether read from the log alone or from
//!   a checkpoint plus the commits after it.
//! - Reading probes commits after the newest checkpoint one by one until one is missing, so it
//!   costs one checkpoint read plus at most [`CHECKPOINT_EVERY`] small reads, however long the
//!   history is.
//! - Documents with a newer format tag are refused, never half-read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::storage::{LocalStorage, ObjectStorage, Storage};
use super::{Action, Conflict, STATE_FORMAT, State};
use crate::error::{Diagnostic, Error, Result};
use crate::project::{StorageOptions, Warehouse};

/// A checkpoint is written after every this many commits.
pub const CHECKPOINT_EVERY: u64 = 50;

/// How often a writer that keeps losing races retries before giving up.
const MAX_ATTEMPTS: usize = 32;

const LOG: &str = "_tidemark/state/log";
const CHECKPOINTS: &str = "_tidemark/state/checkpoints";
const HINT: &str = "_tidemark/state/_last_checkpoint";

/// One commit as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commit {
    /// [`STATE_FORMAT`].
    pub format: String,
    /// Sequence number, from 1.
    pub seq: u64,
    /// Wall-clock time of the commit.
    pub at: DateTime<Utc>,
    /// The tidemark version that wrote it.
    pub tidemark: String,
    /// What it was for (e.g. `apply plan 3f2a… to dev`).
    pub message: String,
    /// The changes.
    pub actions: Vec<Action>,
}

#[derive(Serialize, Deserialize)]
struct Hint {
    seq: u64,
}

/// The result of one commit attempt.
#[derive(Debug)]
pub enum Outcome {
    /// Written; the state after it.
    Committed(Box<State>),
    /// Someone else wrote the same sequence number first: re-read and retry.
    Raced,
    /// The actions contradict the state they were made for.
    Conflict(Conflict),
}

/// Reads and writes the state of one warehouse.
pub struct StateStore {
    storage: Box<dyn Storage>,
}

impl StateStore {
    /// The store of a local warehouse, or of an object store with no `[storage]` options.
    pub fn open(warehouse: &Warehouse) -> Result<StateStore> {
        StateStore::open_with(warehouse, &StorageOptions::default())
    }

    /// The store of a warehouse with its `[storage]` options. An object store is probed for
    /// conditional writes before the first write ([`super::probe`]).
    pub fn open_with(warehouse: &Warehouse, options: &StorageOptions) -> Result<StateStore> {
        match warehouse {
            Warehouse::Local(root) => Ok(StateStore::new(Box::new(LocalStorage::new(root)))),
            Warehouse::ObjectStore(url) => {
                let (store, prefix) = crate::objects::open(url, options)?;
                Ok(StateStore::on_object_store(ObjectStorage::new(
                    store, &prefix,
                )?))
            }
        }
    }

    /// A store on any storage.
    pub fn new(storage: Box<dyn Storage>) -> StateStore {
        StateStore { storage }
    }

    /// A store on an object store: its first write is preceded by the conditional-write probe
    /// ([`super::probe`]), so a store that ignores put-if-absent is refused before anything is
    /// written to it.
    pub fn on_object_store(storage: super::storage::ObjectStorage) -> StateStore {
        StateStore::new(Box::new(super::probe::Probed::new(storage)))
    }

    /// The storage the state lives on (progress records live beside it).
    pub fn storage(&self) -> &dyn Storage {
        self.storage.as_ref()
    }

    /// Where the state lives, for messages.
    pub fn describe(&self) -> String {
        self.storage.describe()
    }

    /// The latest state.
    pub fn read(&self) -> Result<State> {
        let mut state = self.latest_checkpoint()?.unwrap_or_else(State::empty);
        loop {
            let Some(commit) = self.read_commit(state.seq + 1)? else {
                return Ok(state);
            };
            let seq = commit.seq;
            state
                .replay(seq, commit.at, &commit.actions)
                .map_err(|c| corrupt(&log_path(seq), &c.to_string()))?;
        }
    }

    /// The commits with sequence numbers in `from..=to` that exist, oldest first.
    pub fn commits(&self, from: u64, to: u64) -> Result<Vec<Commit>> {
        let mut out = Vec::new();
        for seq in from.max(1)..=to {
            match self.read_commit(seq)? {
                Some(c) => out.push(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// Try to write `actions` as the commit after `base`.
    pub fn commit(&self, base: &State, actions: Vec<Action>, message: &str) -> Result<Outcome> {
        let seq = base.seq + 1;
        let at = Utc::now();
        let mut next = base.clone();
        if let Err(c) = next.apply(seq, at, &actions) {
            return Ok(Outcome::Conflict(c));
        }
        let commit = Commit {
            format: STATE_FORMAT.to_string(),
            seq,
            at,
            tidemark: env!("CARGO_PKG_VERSION").to_string(),
            message: message.to_string(),
            actions,
        };
        let bytes = serde_json::to_vec(&commit)
            .map_err(|e| Error::Bug(format!("cannot serialize a state commit: {e}")))?;
        if !self.storage.put_if_absent(&log_path(seq), &bytes)? {
            return Ok(Outcome::Raced);
        }
        if seq.is_multiple_of(CHECKPOINT_EVERY) {
            // Best effort: a missing checkpoint only makes reading slower.
            let _ = self.write_checkpoint(&next);
        }
        Ok(Outcome::Committed(Box::new(next)))
    }

    /// Read the state, let `f` decide the actions, and commit them; when another writer got
    /// there first, read again and ask `f` again. `f` returning no actions commits nothing. A
    /// commit that contradicts the state (e.g. an environment that moved) is a user error.
    pub fn transact(
        &self,
        message: &str,
        f: impl FnMut(&State) -> Result<Vec<Action>>,
    ) -> Result<State> {
        self.try_transact(message, f)?
            .map_err(|c| conflict_error(&c))
    }

    /// [`StateStore::transact`], returning a contradiction to the caller to explain.
    pub fn try_transact(
        &self,
        message: &str,
        mut f: impl FnMut(&State) -> Result<Vec<Action>>,
    ) -> Result<std::result::Result<State, Conflict>> {
        for _ in 0..MAX_ATTEMPTS {
            let state = self.read()?;
            let actions = f(&state)?;
            if actions.is_empty() {
                return Ok(Ok(state));
            }
            match self.commit(&state, actions, message)? {
                Outcome::Committed(s) => return Ok(Ok(*s)),
                Outcome::Raced => continue,
                Outcome::Conflict(c) => return Ok(Err(c)),
            }
        }
        Err(Error::from(
            Diagnostic::error(format!(
                "gave up writing the state after {MAX_ATTEMPTS} attempts: other writers kept committing first"
            ))
            .hint("try again; if it persists, look for a runaway process writing to this warehouse"),
        ))
    }

    /// [`StateStore::transact`] when `write`; otherwise only let `f` decide on the current state
    /// (a dry run) and commit nothing.
    pub fn transact_if(
        &self,
        write: bool,
        message: &str,
        mut f: impl FnMut(&State) -> Result<Vec<Action>>,
    ) -> Result<State> {
        if write {
            return self.transact(message, f);
        }
        let state = self.read()?;
        f(&state)?;
        Ok(state)
    }

    /// Write a checkpoint of `state` and point the hint at it.
    pub fn write_checkpoint(&self, state: &State) -> Result<()> {
        let bytes = serde_json::to_vec(state)
            .map_err(|e| Error::Bug(format!("cannot serialize the state: {e}")))?;
        self.storage
            .put_if_absent(&checkpoint_path(state.seq), &bytes)?;
        let hint = serde_json::to_vec(&Hint { seq: state.seq })
            .map_err(|e| Error::Bug(format!("cannot serialize a hint: {e}")))?;
        self.storage.put(HINT, &hint)
    }

    /// Load an exported state into an empty store.
    pub fn import(&self, state: State) -> Result<State> {
        State::check_format(&state.format, "the imported state")?;
        let state = Box::new(state);
        self.transact("state import", |current| {
            if current.seq != 0 {
                return Err(Error::from(
                    Diagnostic::error(format!(
                        "the state in {} is not empty (it has {} commits)",
                        self.describe(),
                        current.seq
                    ))
                    .hint("import only into a new warehouse; export the current state first if you mean to replace it"),
                ));
            }
            Ok(vec![Action::Import {
                state: state.clone(),
            }])
        })
    }

    fn latest_checkpoint(&self) -> Result<Option<State>> {
        let hinted = match self.storage.get(HINT)? {
            Some(b) => serde_json::from_slice::<Hint>(&b).ok().map(|h| h.seq),
            None => None,
        };
        let seq = match hinted {
            Some(s) => Some(s),
            None => self
                .storage
                .list(CHECKPOINTS)?
                .iter()
                .filter_map(|n| n.strip_suffix(".json")?.parse::<u64>().ok())
                .max(),
        };
        let Some(seq) = seq else { return Ok(None) };
        let path = checkpoint_path(seq);
        let Some(bytes) = self.storage.get(&path)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Head {
            format: String,
        }
        // One pass over the checkpoint (the largest file read); the format is looked at alone
        // only when the whole does not read, so that another format is named as such.
        match serde_json::from_slice::<State>(&bytes) {
            Ok(state) => {
                State::check_format(&state.format, &format!("state checkpoint {path}"))?;
                Ok(Some(state))
            }
            Err(e) => {
                let head: Head =
                    serde_json::from_slice(&bytes).map_err(|_| corrupt(&path, &e.to_string()))?;
                State::check_format(&head.format, &format!("state checkpoint {path}"))?;
                Err(corrupt(&path, &e.to_string()))
            }
        }
    }

    fn read_commit(&self, seq: u64) -> Result<Option<Commit>> {
        let path = log_path(seq);
        let Some(bytes) = self.storage.get(&path)? else {
            return Ok(None);
        };
        #[derive(Deserialize)]
        struct Head {
            format: String,
            seq: u64,
        }
        // One pass, as for checkpoints (a run's commit can hold an action for every table); the
        // head alone is looked at only when the whole does not read.
        let (head, whole) = match serde_json::from_slice::<Commit>(&bytes) {
            Ok(commit) => (
                Head {
                    format: commit.format.clone(),
                    seq: commit.seq,
                },
                Ok(commit),
            ),
            Err(e) => (
                serde_json::from_slice(&bytes).map_err(|_| corrupt(&path, &e.to_string()))?,
                Err(e),
            ),
        };
        State::check_format(&head.format, &format!("state commit {path}"))?;
        if head.seq != seq {
            return Err(corrupt(
                &path,
                &format!("it says it is commit {}", head.seq),
            ));
        }
        whole.map(Some).map_err(|e| corrupt(&path, &e.to_string()))
    }
}

fn log_path(seq: u64) -> String {
    format!("{LOG}/{seq:020}.json")
}

fn checkpoint_path(seq: u64) -> String {
    format!("{CHECKPOINTS}/{seq:020}.json")
}

fn corrupt(path: &str, why: &str) -> Error {
    Error::from(
        Diagnostic::error(format!("the state document `{path}` is unreadable: {why}"))
            .hint("the state was changed outside tidemark; restore it from a backup (`tidemark state export` / `state import`)"),
    )
}

/// The user-facing error for a commit that contradicts the current state.
pub fn conflict_error(c: &Conflict) -> Error {
    let hint = match c {
        Conflict::Environment { .. } => {
            "another plan or run changed it meanwhile; make the plan again and review the new one"
        }
        Conflict::Invalid(_) => "this is a bug in tidemark or a state changed by hand",
    };
    Error::from(Diagnostic::error(c.to_string()).hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::interval::{Interval, IntervalSet, IntervalUnit, parse_instant};
    use crate::project::ModelName;
    use crate::state::EnvName;
    use crate::state::TableId;
    use crate::state::storage::ObjectStorage;
    use crate::state::{Environment, PhysicalTable};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn t(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap().at
    }

    fn table(id: &str) -> Action {
        Action::PutTable {
            table: PhysicalTable {
                id: TableId::parse(id).unwrap(),
                name: ModelName::parse("s.m").unwrap(),
                version: "v".into(),
                generation: 0,
                interval_unit: IntervalUnit::Day,
                intervals: IntervalSet::new(),
                created_at: t("2024-01-01"),
            },
        }
    }

    fn env(name: &str, expected: Option<u64>) -> Action {
        Action::PutEnvironment {
            environment: Box::new(Environment {
                name: EnvName::parse(name).unwrap(),
                revision: 0,
                plan_id: "p".into(),
                models: BTreeMap::new(),
                created_at: t("2024-01-01"),
                updated_at: t("2024-01-01"),
                expires_at: None,
                source_versions: BTreeMap::new(),
                late_since: BTreeMap::new(),
                accepted_gates: Vec::new(),
            }),
            expected_revision: expected,
        }
    }

    fn days(a: u32, b: u32) -> IntervalSet {
        IntervalSet::of(Interval::new(
            t(&format!("2024-01-{a:02}")),
            t(&format!("2024-01-{b:02}")),
        ))
    }

    /// The same scenario on a local directory and on an object store.
    fn exercise(store: &StateStore) {
        assert_eq!(store.read().unwrap().seq, 0);
        let s = store
            .transact("t", |_| Ok(vec![table("s/m__v"), env("prod", None)]))
            .unwrap();
        assert_eq!(s.seq, 1);
        assert_eq!(s.environments["prod"].revision, 1);
        // Many commits, crossing checkpoints; intervals stay merged.
        for d in 1..=28u32 {
            for _ in 0..3 {
                store
                    .transact("i", |_| {
                        Ok(vec![Action::AddIntervals {
                            table: TableId::parse("s/m__v").unwrap(),
                            intervals: days(d, d + 1),
                        }])
                    })
                    .unwrap();
            }
        }
        let s = store.read().unwrap();
        assert_eq!(s.seq, 1 + 28 * 3);
        assert_eq!(s.intervals("s/m__v"), days(1, 29));
        // A writer working from an old state loses the race and is told to re-read.
        let old = store.commits(1, 1).unwrap();
        assert_eq!(old.len(), 1);
        let mut stale = State::empty();
        stale.apply(1, old[0].at, &old[0].actions).unwrap();
        assert!(matches!(
            store.commit(&stale, vec![env("dev", None)], "x").unwrap(),
            Outcome::Raced
        ));
        // Re-validation on the fresh state catches the environment change.
        let err = store
            .transact("y", |_| Ok(vec![env("prod", Some(0))]))
            .unwrap_err();
        assert!(err.to_string().contains("changed since"), "{err}");
        let s2 = store.transact("z", |s| {
            Ok(vec![env(
                "prod",
                s.environments.get("prod").map(|e| e.revision),
            )])
        });
        assert_eq!(s2.unwrap().environments["prod"].revision, 2);
        let s = store.read().unwrap();
        assert_eq!(s.history.len(), 2);
        // Reading from the log alone gives the same state as checkpoint + tail.
        let mut replay = State::empty();
        for c in store.commits(1, s.seq).unwrap() {
            replay.apply(c.seq, c.at, &c.actions).unwrap();
        }
        assert_eq!(replay, s);
    }

    #[test]
    fn local_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(Box::new(LocalStorage::new(dir.path())));
        exercise(&store);
        assert!(
            dir.path()
                .join(checkpoint_path(50).replace('/', std::path::MAIN_SEPARATOR_STR))
                .exists()
        );
    }

    #[test]
    fn object_store() {
        let mem = Arc::new(object_store::memory::InMemory::new());
        let store = StateStore::on_object_store(ObjectStorage::new(mem, "wh").unwrap());
        exercise(&store);
        assert!(
            store
                .storage()
                .get(super::super::probe::MARKER)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn both_storages_list_documents_and_directories_alike() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(object_store::memory::InMemory::new());
        let storages: [Box<dyn Storage>; 2] = [
            Box::new(LocalStorage::new(dir.path())),
            Box::new(ObjectStorage::new(mem, "wh").unwrap()),
        ];
        for s in storages {
            s.put("a/x.json", b"{}").unwrap();
            s.put("a/sub/y.json", b"{}").unwrap();
            s.put("a/sub/z.json", b"{}").unwrap();
            assert_eq!(
                s.list("a").unwrap(),
                vec!["sub", "x.json"],
                "{}",
                s.describe()
            );
            assert_eq!(s.list("a/sub").unwrap(), vec!["y.json", "z.json"]);
            assert!(s.list("none").unwrap().is_empty());
        }
    }

    #[test]
    fn racing_writers_never_lose_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        StateStore::new(Box::new(LocalStorage::new(&root)))
            .transact("t", |_| Ok(vec![table("s/m__v")]))
            .unwrap();
        std::thread::scope(|scope| {
            for w in 0..4u32 {
                let root = root.clone();
                scope.spawn(move || {
                    let store = StateStore::new(Box::new(LocalStorage::new(&root)));
                    for i in 0..10u32 {
                        let d = 1 + (w * 10 + i) % 27;
                        store
                            .transact("w", |_| {
                                Ok(vec![Action::AddIntervals {
                                    table: TableId::parse("s/m__v").unwrap(),
                                    intervals: days(d, d + 1),
                                }])
                            })
                            .unwrap();
                    }
                });
            }
        });
        let s = StateStore::new(Box::new(LocalStorage::new(&root)))
            .read()
            .unwrap();
        assert_eq!(s.seq, 41);
        assert_eq!(s.intervals("s/m__v"), days(1, 28));
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let storage = LocalStorage::new(dir.path());
        storage
            .put_if_absent(
                &log_path(1),
                br#"{"format":"tidemark.state/v9","seq":1,"at":"2024-01-01T00:00:00Z","tidemark":"9.0.0","message":"","actions":[]}"#,
            )
            .unwrap();
        let err = StateStore::new(Box::new(storage)).read().unwrap_err();
        assert!(err.to_string().contains("tidemark.state/v9"), "{err}");
    }

    #[test]
    fn a_commit_is_read_in_one_pass_and_its_problems_are_named() {
        let read = |body: &str| {
            let dir = tempfile::tempdir().unwrap();
            let storage = LocalStorage::new(dir.path());
            storage
                .put_if_absent(&log_path(1), body.as_bytes())
                .unwrap();
            StateStore::new(Box::new(storage)).read().map(|s| s.seq)
        };
        let ok = r#"{"format":"tidemark.state/v1","seq":1,"at":"2024-01-01T00:00:00Z","tidemark":"0.1.0","message":"","actions":[]}"#;
        assert_eq!(read(ok).unwrap(), 1);
        // A newer format whose actions this build does not know: named as a newer format.
        let newer = r#"{"format":"tidemark.state/v9","seq":1,"at":"2024-01-01T00:00:00Z","tidemark":"9.0.0","message":"","actions":[{"teleport":{}}]}"#;
        let err = read(newer).unwrap_err().to_string();
        assert!(err.contains("tidemark.state/v9"), "{err}");
        // The wrong sequence number, whether or not the rest reads.
        for actions in ["[]", r#"[{"teleport":{}}]"#] {
            let body = ok
                .replace(r#""seq":1"#, r#""seq":7"#)
                .replace(r#""actions":[]"#, &format!(r#""actions":{actions}"#));
            let err = read(&body).unwrap_err().to_string();
            assert!(err.contains("it says it is commit 7"), "{err}");
        }
        // This format, but not a commit of it.
        let err = read(&ok.replace(r#""actions":[]"#, r#""actions":[{"teleport":{}}]"#))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&log_path(1)), "{err}");
        assert!(!err.contains("it says"), "{err}");
    }

    #[test]
    fn a_lease_keeps_a_table_from_janitor_until_released_or_lapsed() {
        use crate::state::Lease;
        let lease = |until: &str| Action::Lease {
            apply: "a1".into(),
            lease: Lease {
                environment: "dev".into(),
                tables: [TableId::parse("s/m__v").unwrap()].into(),
                snapshots: Default::default(),
                expires_at: t(until),
            },
        };
        let mut s = State::empty();
        // Only existing tables can be leased: a table deleted first stops the apply.
        assert!(s.apply(1, t("2024-01-01"), &[lease("2024-01-09")]).is_err());
        s.apply(1, t("2024-01-01"), &[table("s/m__v")]).unwrap();
        s.apply(2, t("2024-01-01"), &[lease("2024-01-09")]).unwrap();
        let delete = [Action::DeleteTable {
            id: TableId::parse("s/m__v").unwrap(),
        }];
        let err = s.clone().apply(3, t("2024-01-02"), &delete).unwrap_err();
        assert!(err.to_string().contains("leased by apply a1"), "{err}");
        assert_eq!(s.leased(t("2024-01-02")).get("s/m__v"), Some(&"a1"));
        // A lapsed lease no longer protects the table.
        assert!(s.leased(t("2024-01-09")).is_empty());
        s.clone().apply(3, t("2024-01-09"), &delete).unwrap();
        // Released: deletable at once; releasing twice is harmless.
        let release = Action::Release { apply: "a1".into() };
        s.apply(3, t("2024-01-02"), &[release.clone(), release])
            .unwrap();
        s.apply(4, t("2024-01-02"), &delete).unwrap();
        assert!(s.tables.is_empty() && s.leases.is_empty());
    }
}
