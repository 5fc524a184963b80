//! `tidemark rollback ENV [--to REVISION]`: point an environment back at an earlier revision
//! ([`crate::env::rollback`]) and say what it points at now.

use super::{emit, warehouse};
use crate::env::rollback::rollback;
use crate::error::{ExitStatus, Result};
use crate::names::EnvName;
use crate::settings::Settings;

/// Run `rollback`.
pub fn run(
    ctx: &Settings,
    env: &EnvName,
    to: Option<u64>,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let (_, store) = warehouse(ctx)?;
    let state = store.read()?;
    let done = rollback(&store, &state, env, to)?;
    emit(
        out,
        &format!(
            "`{env}` now points at what revision {} pointed at ({}); it is revision {}\n",
            done.target,
            crate::printer::plural(done.models as u64, "model", "models"),
            done.revision
        ),
    )?;
    Ok(ExitStatus::Success)
}
