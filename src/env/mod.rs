//! Environments: the named, consistent sets of model versions that readers see.
//!
//! The data and the revision-checked swap live in [`crate::state`]; this module holds what is
//! done with environments:
//! - the catalog an environment reads ([`catalog`]; the one "no environment named …"
//!   diagnostic is the state's, [`State::environment_or_error`]);
//! - [`apply`]: execute a plan's batches, then move the environment in one atomic commit;
//! - [`promote`]: the gap check of a promotion; [`gates`]: its promotion gates;
//! - [`rollback`]: what an earlier revision pointed at, and pointing back at it;
//! - [`janitor`]: the retention rules (what expires, what is still reachable);
//! - [`recall`]: which environments hold data computed from given versions of a source.
//!
//! Invariant: an environment changes only through one state commit that names the revision it
//! expected; nothing here writes a table an environment reads.

pub mod apply;
pub mod janitor;
pub mod promote;
pub mod recall;
pub mod rollback;

use std::collections::BTreeMap;

use crate::backfill::catalog::{Catalog, Entry};
use crate::error::{Error, Result};
use crate::project::Config;
use crate::state::State;

/// The catalog of environment `env` at its pinned versions.
pub fn catalog<'a>(
    config: &'a Config,
    state: &State,
    env: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Catalog<'a>> {
    let e = state.environment_or_error(env)?;
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
