//! Rollback: point an environment back at what it pointed at in an earlier revision (default:
//! the one before the last change), in one atomic state commit.
//!
//! Invariant: the earlier contents are read from the state log (the commit that wrote that
//! revision), so rollback copies and computes nothing; the janitor keeps the physical tables
//! of recent revisions for exactly this ([`super::janitor`]).

use crate::error::{Diagnostic, Error, Result};
use crate::state::{Action, Environment, HistoryAction, State, StateStore};

/// What a rollback did.
#[derive(Debug)]
pub struct RolledBack {
    /// The revision whose contents were restored.
    pub target: u64,
    /// The environment's new revision.
    pub revision: u64,
    /// Models in the restored environment.
    pub models: usize,
}

/// Point `env` back at what revision `to` (default: the previous one) pointed at.
pub fn rollback(
    store: &StateStore,
    state: &State,
    env: &str,
    to: Option<u64>,
) -> Result<RolledBack> {
    let current = state.environment_or_error(env)?;
    let target = match to {
        Some(r) => r,
        None if current.revision > 1 => current.revision - 1,
        None => {
            return Err(Diagnostic::error(format!(
                "`{env}` has only one revision; there is nothing to roll back to"
            ))
            .into());
        }
    };
    if target >= current.revision || target == 0 {
        return Err(Diagnostic::error(format!(
            "`{env}` is at revision {}; `--to` must name an earlier revision",
            current.revision
        ))
        .hint(format!("`tidemark env history {env}` lists the revisions"))
        .into());
    }
    let old = contents_at(store, state, env, target)?;
    let mut restored = old.clone();
    restored.plan_id = format!("rollback to revision {target}");
    restored.updated_at = chrono::Utc::now();
    restored.expires_at = current.expires_at;
    let expected = current.revision;
    let after = store.transact(&format!("rollback {env} to revision {target}"), |_| {
        Ok(vec![Action::PutEnvironment {
            environment: Box::new(restored.clone()),
            expected_revision: Some(expected),
        }])
    })?;
    let revision = after
        .environment(env)
        .map(|e| e.revision)
        .unwrap_or_default();
    Ok(RolledBack {
        target,
        revision,
        models: restored.models.len(),
    })
}

/// The environment as it was at `revision`, from the commit that wrote it.
pub fn contents_at(
    store: &StateStore,
    state: &State,
    env: &str,
    revision: u64,
) -> Result<Environment> {
    let entry = state
        .history
        .iter()
        .find(|h| h.environment == env && h.revision == revision && h.action == HistoryAction::Put)
        .ok_or_else(|| {
            Error::from(Diagnostic::error(format!(
                "`{env}` has no revision {revision} in its history"
            )))
        })?;
    let commits = store.commits(entry.seq, entry.seq)?;
    commits
        .into_iter()
        .flat_map(|c| c.actions)
        .find_map(|a| match a {
            Action::PutEnvironment { environment, .. } if environment.name == env => {
                Some(*environment)
            }
            _ => None,
        })
        .ok_or_else(|| {
            Error::from(
                Diagnostic::error(format!(
                    "the state log no longer holds revision {revision} of `{env}`"
                ))
                .hint("the state was imported after it; only later revisions can be restored"),
            )
        })
}
