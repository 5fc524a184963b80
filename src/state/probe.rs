//! The conditional-write probe: before the first write to a warehouse on an object store,
//! check that the store honours put-if-absent. A store that silently ignores the condition
//! would let two writers both "win" a commit, and one of them would be lost.
//!
//! Invariants:
//! - [`Probed`] wraps a [`Storage`]; the first write through it (of any kind) runs the probe,
//!   and nothing else is written until the probe has passed. A failed probe refuses every
//!   write of the process, with the same error.
//! - The probe writes one new key twice with put-if-absent under `_tidemark/probes/`; the
//!   first write must succeed and the second must be refused. A store that passed leaves
//!   `_tidemark/conditional-writes-ok`, so later runs on the same warehouse read one small
//!   document instead of writing two.
//! - Reads are never probed: `query`, `env` and `progress` work on any store.
//! - The tables live in the same warehouse, so an apply or a janitor run asks for the probe
//!   ([`Storage::check_writable`]) before its first table write as well.

use std::sync::OnceLock;

use super::Storage;
use crate::error::{Diagnostic, Error, Result};

/// The marker a passed probe leaves.
pub const MARKER: &str = "_tidemark/conditional-writes-ok";

/// Where probe keys are written.
const PROBES: &str = "_tidemark/probes";

/// A storage whose first write is preceded by the probe (see the module invariants).
pub struct Probed<S: Storage> {
    inner: S,
    /// The probe's outcome, once it ran: `Err` holds the message of a failed probe.
    outcome: OnceLock<std::result::Result<(), String>>,
}

impl<S: Storage> Probed<S> {
    /// `inner`, probed before its first write.
    pub fn new(inner: S) -> Probed<S> {
        Probed {
            inner,
            outcome: OnceLock::new(),
        }
    }

    fn before_write(&self) -> Result<()> {
        if let Some(verdict) = self.outcome.get() {
            return verdict.clone().map_err(|why| refused(&self.inner, &why));
        }
        // An error reaching the store (credentials, network) is returned and not kept: the
        // next write probes again. Only a verdict is kept.
        let verdict = probe(&self.inner)?;
        let _ = self.outcome.set(verdict.clone());
        verdict.map_err(|why| refused(&self.inner, &why))
    }
}

/// Run the probe unless the marker of an earlier pass is there: `Ok(Err(why))` when the store
/// does not honour put-if-absent.
fn probe(storage: &dyn Storage) -> Result<std::result::Result<(), String>> {
    if storage.get(MARKER)?.is_some() {
        return Ok(Ok(()));
    }
    let key = format!("{PROBES}/{}", uuid::Uuid::new_v4());
    if !storage.put_if_absent(&key, b"tidemark conditional-write probe\n")? {
        return Ok(Err("a put-if-absent of a new key was refused".into()));
    }
    if storage.put_if_absent(&key, b"tidemark conditional-write probe, again\n")? {
        return Ok(Err(
            "a second put-if-absent of the same key was accepted".into()
        ));
    }
    storage.put(MARKER, b"{\"probe\":\"put-if-absent honoured\"}\n")?;
    Ok(Ok(()))
}

fn refused(storage: &dyn Storage, why: &str) -> Error {
    Error::from(
        Diagnostic::error(format!(
            "the warehouse {} does not honour conditional writes, so tidemark will not write to it",
            storage.describe()
        ))
        .note(format!("probe: {why}"))
        .hint("tidemark commits with put-if-absent; without it two writers can both win a commit and one is lost. Use a store that honours `If-None-Match: *` (AWS S3, MinIO, Azure Blob, GCS) or enable it on yours"),
    )
}

impl<S: Storage> Storage for Probed<S> {
    fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
        self.inner.get(path)
    }

    fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
        self.before_write()?;
        self.inner.put_if_absent(path, bytes)
    }

    fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
        self.before_write()?;
        self.inner.put(path, bytes)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn check_writable(&self) -> Result<()> {
        self.before_write()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::state::storage::ObjectStorage;

    /// A store that ignores the condition of put-if-absent: every write lands.
    #[derive(Default)]
    struct Ignoring(Mutex<BTreeMap<String, Vec<u8>>>);

    impl Storage for Ignoring {
        fn get(&self, path: &str) -> Result<Option<Vec<u8>>> {
            Ok(self.0.lock().unwrap().get(path).cloned())
        }
        fn put_if_absent(&self, path: &str, bytes: &[u8]) -> Result<bool> {
            self.0.lock().unwrap().insert(path.into(), bytes.to_vec());
            Ok(true)
        }
        fn put(&self, path: &str, bytes: &[u8]) -> Result<()> {
            self.0.lock().unwrap().insert(path.into(), bytes.to_vec());
            Ok(())
        }
        fn list(&self, _dir: &str) -> Result<Vec<String>> {
            Ok(self.0.lock().unwrap().keys().cloned().collect())
        }
        fn describe(&self) -> String {
            "`mem://ignoring`".into()
        }
    }

    #[test]
    fn a_store_that_ignores_conditional_writes_is_refused_before_anything_else_is_written() {
        let p = Probed::new(Ignoring::default());
        let err = p
            .put_if_absent("_tidemark/state/log/1.json", b"{}")
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("does not honour conditional writes"),
            "{text}"
        );
        assert!(text.contains("second put-if-absent"), "{text}");
        // Refused again without probing again, and only the probe key was ever written.
        assert!(p.put("x", b"y").is_err());
        let keys = p
            .inner
            .0
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect::<Vec<_>>();
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys[0].starts_with("_tidemark/probes/"), "{keys:?}");
    }

    #[test]
    fn a_store_that_honours_them_is_probed_once_and_remembered() {
        let mem = Arc::new(object_store::memory::InMemory::new());
        let p = Probed::new(ObjectStorage::new(mem.clone(), "wh").unwrap());
        assert!(p.put_if_absent("a", b"1").unwrap());
        assert!(!p.put_if_absent("a", b"2").unwrap());
        assert!(p.get(MARKER).unwrap().is_some());
        assert_eq!(p.list(PROBES).unwrap().len(), 1);
        // A later process on the same warehouse finds the marker and writes no probe key.
        let again = Probed::new(ObjectStorage::new(mem, "wh").unwrap());
        assert!(again.put_if_absent("b", b"1").unwrap());
        assert_eq!(again.list(PROBES).unwrap().len(), 1);
    }
}
