//! A restatement's new table generations, cloned while the apply runs instead of before it.
//!
//! Each restated model's new generation starts as a zero-copy clone of its current table. The
//! clones are made in a fixed order (models with no batch to run first, then by their first
//! batch, which is dependency order), by workers with no batch to start while the first
//! batches compute ([`Clones::next`]), or by a batch that needs one before they got to it.
//!
//! Invariants:
//! - A batch starts computing only when every clone up to its model's place in the order is
//!   made ([`Clones::before`]): its own table and every table it can read (an upstream model's
//!   first batch comes earlier, and a model with no batch to run comes first) exist at the
//!   version the catalog reads them at.
//! - Each clone is made by exactly one thread at a time; another that needs it waits for it.
//!   A failed clone is not made: a batch that needs it tries again (so the scheduler's retry of
//!   a transient failure retries the clone), and its error fails that batch; idle workers do
//!   not retry it. A panic while cloning is that clone's error, labelled as a bug.
//! - The catalog reads a clone at its version from the moment it is made; each clone is
//!   reported once, when it is made.
//! - [`Clones::all`] makes whatever is left: an apply completes only with every clone made.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};

use super::ApplyRun;
use super::batches::Batch;
use super::catalog::Catalog;
use super::display::EventLine;
use crate::error::{Error, Result};
use crate::plan::Plan;
use crate::project::ModelName;
use crate::state::TableId;

/// One clone to make.
struct Wanted {
    model: ModelName,
    table: TableId,
    from: TableId,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Made {
    No,
    Making,
    Yes,
    /// The last attempt failed: idle workers leave it; a batch that needs it tries again.
    Failed,
}

/// The clones of one apply, in order.
pub(super) struct Clones<'a, 'r, 'c> {
    cx: &'a ApplyRun<'r>,
    /// The catalog, which reads each clone at its version once made.
    catalog: &'a Mutex<Catalog<'c>>,
    /// Reports a clone made (a line, or an event).
    tell: &'a (dyn Fn(&str, EventLine) + Sync),
    wanted: Vec<Wanted>,
    /// Per model: how many clones precede its batches (its own included).
    place: BTreeMap<ModelName, usize>,
    made: Mutex<Vec<Made>>,
    changed: Condvar,
}

impl<'a, 'r, 'c> Clones<'a, 'r, 'c> {
    /// The clones `plan` wants, ordered for `batches` (`done`: completed earlier).
    pub(super) fn new(
        cx: &'a ApplyRun<'r>,
        catalog: &'a Mutex<Catalog<'c>>,
        tell: &'a (dyn Fn(&str, EventLine) + Sync),
        plan: &Plan,
        batches: &[Batch],
        done: &[bool],
    ) -> Clones<'a, 'r, 'c> {
        let mut first: BTreeMap<&ModelName, usize> = BTreeMap::new();
        for b in batches.iter().filter(|b| !done[b.id]) {
            first.entry(&b.model).or_insert(b.id);
        }
        let wanted: Vec<(Option<usize>, Wanted)> = plan
            .target
            .iter()
            .filter_map(|(name, t)| {
                Some((
                    first.get(name).copied(),
                    Wanted {
                        model: name.clone(),
                        table: t.table.clone()?,
                        from: t.clone_from.clone()?,
                    },
                ))
            })
            .collect();
        let (wanted, place) = order(wanted, &first);
        let n = wanted.len();
        Clones {
            cx,
            catalog,
            tell,
            wanted,
            place,
            made: Mutex::new(vec![Made::No; n]),
            changed: Condvar::new(),
        }
    }

    /// Make every clone that must precede the batches of `model`.
    pub(super) fn before(&self, model: &ModelName) -> Result<()> {
        let upto = self.place.get(model).copied().unwrap_or(self.wanted.len());
        (0..upto).try_for_each(|i| self.make(i))
    }

    /// Make every clone (after the run, or for a run with no batch left).
    pub(super) fn all(&self) -> Result<()> {
        (0..self.wanted.len()).try_for_each(|i| self.make(i))
    }

    /// Side work for an idle worker: make the next clone nobody made or tried (in order);
    /// `false`: none left. A failure is left to the batch that needs the clone.
    pub(super) fn next(&self) -> bool {
        let Ok(mut made) = self.lock() else {
            return false;
        };
        let Some(i) = made.iter().position(|m| *m == Made::No) else {
            return false;
        };
        made[i] = Made::Making;
        drop(made);
        // Done or failed, it was work: there may be more.
        let _ = self.finish(i, self.guarded(i));
        true
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Vec<Made>>> {
        self.made
            .lock()
            .map_err(|_| Error::Bug("the clones' lock is poisoned".into()))
    }

    /// Make clone `i` unless it is made; wait if another thread is making it.
    fn make(&self, i: usize) -> Result<()> {
        let mut made = self.lock()?;
        loop {
            match made[i] {
                Made::Yes => return Ok(()),
                Made::Making => {
                    made = self
                        .changed
                        .wait(made)
                        .map_err(|_| Error::Bug("the clones' lock is poisoned".into()))?;
                }
                Made::No | Made::Failed => break,
            }
        }
        made[i] = Made::Making;
        drop(made);
        self.finish(i, self.guarded(i))
    }

    /// Record how making clone `i` went, and wake whoever waits for it.
    fn finish(&self, i: usize, result: Result<()>) -> Result<()> {
        let mut made = self.lock()?;
        made[i] = if result.is_ok() {
            Made::Yes
        } else {
            Made::Failed
        };
        self.changed.notify_all();
        result
    }

    /// Clone `i`; a panic (a bug in a library beneath) becomes an error of that clone instead of
    /// ending the worker thread.
    fn guarded(&self, i: usize) -> Result<()> {
        let w = &self.wanted[i];
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.clone_one(w))).unwrap_or_else(
            |_| {
                Err(Error::Bug(format!(
                    "cloning the new generation of {} panicked",
                    w.model
                )))
            },
        )
    }

    fn clone_one(&self, w: &Wanted) -> Result<()> {
        let cx = self.cx;
        let Some(latest) = cx.engine.table_info(&w.from)?.map(|i| i.version) else {
            return Ok(());
        };
        let v = cx.engine.clone_table(&w.from, latest, &w.table)?;
        if let Some(e) = self
            .catalog
            .lock()
            .map_err(|_| Error::Bug("the catalog lock is poisoned".into()))?
            .entries
            .get_mut(&w.model)
        {
            e.version = Some(e.version.map_or(v, |x| x.max(v)));
        }
        (self.tell)(
            &format!(
                "{}: new generation {} cloned from {} at version {latest} (no data copied)",
                w.model, w.table, w.from
            ),
            EventLine {
                model: Some(w.model.to_string()),
                table: Some(w.table.to_string()),
                cloned_from: Some(w.from.to_string()),
                table_version: Some(latest),
                ..EventLine::new("generation", &cx.apply.id)
            },
        );
        Ok(())
    }
}

/// The clones in the order they are made — models with no batch to run first (anything may
/// read them), then by their first batch (dependency order) — and, per model with batches, how
/// many of them precede its batches: every clone up to its own, or without one of its own,
/// every clone placed before its first batch.
fn order(
    mut wanted: Vec<(Option<usize>, Wanted)>,
    first: &BTreeMap<&ModelName, usize>,
) -> (Vec<Wanted>, BTreeMap<ModelName, usize>) {
    // `None` (nothing to run) sorts first.
    wanted.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.model.cmp(&b.1.model)));
    let mut place = BTreeMap::new();
    for (model, id) in first {
        let upto = wanted
            .iter()
            .take_while(|(f, w)| *f < Some(*id) || &&w.model == model)
            .count();
        place.insert((*model).clone(), upto);
    }
    (wanted.into_iter().map(|(_, w)| w).collect(), place)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    fn wanted(model: &str) -> Wanted {
        Wanted {
            model: name(model),
            table: TableId::new(&name(model), "ab", 2),
            from: TableId::new(&name(model), "ab", 1),
        }
    }

    #[test]
    fn clones_come_in_dependency_order_and_each_batch_waits_for_its_prefix() {
        // s.raw (first batch 0) ← s.mid (no clone, first batch 1) ← s.top (first batch 4);
        // s.done has a clone but no batch left to run (a resume): it comes first.
        let names = [name("s.raw"), name("s.mid"), name("s.top")];
        let first: BTreeMap<&ModelName, usize> =
            [(&names[0], 0), (&names[1], 1), (&names[2], 4)].into();
        let (order, place) = order(
            vec![
                (Some(4), wanted("s.top")),
                (None, wanted("s.done")),
                (Some(0), wanted("s.raw")),
            ],
            &first,
        );
        let made: Vec<&str> = order.iter().map(|w| w.model.as_str()).collect();
        assert_eq!(made, ["s.done", "s.raw", "s.top"]);
        // s.raw's batches wait for s.done's clone (it may read it) and its own, not s.top's.
        assert_eq!(place[&names[0]], 2);
        // A model without a clone waits for every clone placed before its first batch.
        assert_eq!(place[&names[1]], 2);
        assert_eq!(place[&names[2]], 3);
    }
}
