//! Environments: the named, consistent sets of model versions that readers see.
//!
//! The data and the revision-checked swap live in [`crate::state`]; this module holds what is
//! done with environments:
//! - lookup, with the one "no environment named …" diagnostic, and the catalog an
//!   environment reads ([`catalog`]);
//! - [`apply`]: execute a plan's batches, then move the environment in one atomic commit;
//! - [`promote`]: the gap check of a promotion;
//! - [`rollback`]: what an earlier revision pointed at, and pointing back at it;
//! - [`janitor`]: the retention rules (what expires, what is still reachable).
//!
//! Invariant: an environment changes only through one state commit that names the revision it
//! expected; nothing here writes a table an environment reads.

pub mod apply;
pub mod janitor;
pub mod promote;
pub mod rollback;

use std::collections::BTreeMap;

use crate::backfill::catalog::{Catalog, Entry};
use crate::error::{Diagnostic, Error, Result};
use crate::project::Config;
use crate::state::{Environment, State};

/// Environment `env`, or the "no environment named …" error.
pub fn lookup<'s>(state: &'s State, env: &str) -> Result<&'s Environment> {
    state.environment(env).ok_or_else(|| unknown(state, env))
}

/// "No environment named ..." with the known ones.
pub fn unknown(state: &State, env: &str) -> Error {
    let known = state.environments.keys().map(String::as_str);
    let hint = crate::error::did_you_mean(env, known.clone()).unwrap_or_else(|| {
        let names: Vec<&str> = known.collect();
        if names.is_empty() {
            "nothing has been applied yet: run `tidemark plan --apply`".to_string()
        } else {
            format!("environments: {}", names.join(", "))
        }
    });
    Error::from(Diagnostic::error(format!("no environment named `{env}`")).hint(hint))
}

/// The catalog of environment `env` at its pinned versions.
pub fn catalog<'a>(
    config: &'a Config,
    state: &State,
    env: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Catalog<'a>> {
    let e = lookup(state, env)?;
    let mut entries = BTreeMap::new();
    for (name, m) in &e.models {
        let snapshot = state
            .snapshots
            .get(&m.snapshot)
            .ok_or_else(|| Error::Bug(format!("environment {env} refers to a missing snapshot")))?;
        entries.insert(
            name.clone(),
            Entry {
                snapshot: snapshot.clone(),
                table: m.table.clone(),
                version: m.table_version,
            },
        );
    }
    Ok(Catalog::new(
        entries,
        &config.sources,
        e.source_versions.clone(),
        now,
    ))
}
