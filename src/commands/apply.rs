//! `tidemark apply PLAN.json` and `tidemark apply --resume APPLY_ID`: run a saved plan's
//! batches, then move the environment in one atomic state commit ([`crate::env::apply`]).

use std::path::Path;

use super::{apply_and_show, load};
use crate::env::apply::Trigger;
use crate::error::{Diagnostic, Error, ExitStatus, Result};
use crate::names::ApplyId;
use crate::plan::file::{parse_plan, read_plan};
use crate::settings::Settings;
use crate::state::StateStore;
use crate::state::progress::ProgressStore;

/// Run `apply FILE` or `apply --resume ID`.
pub fn run(
    ctx: &Settings,
    file: Option<&Path>,
    resume: Option<&ApplyId>,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let loaded = load(ctx)?;
    let store = StateStore::open_with(
        &loaded.project.config.warehouse,
        &loaded.project.config.storage,
    )?;
    let plan = match (file, resume) {
        (_, Some(id)) => {
            let progress = ProgressStore::new(store.storage());
            let bytes = progress.plan(id)?.ok_or_else(|| {
                let known = progress.list().unwrap_or_default();
                Error::from(
                    Diagnostic::error(format!("no apply with id `{id}`")).hint(
                        crate::error::did_you_mean(id, known.iter().map(ApplyId::as_str))
                            .unwrap_or_else(|| "`tidemark log` lists the applies".to_string()),
                    ),
                )
            })?;
            parse_plan(&bytes, &format!("the plan of apply `{id}`"))?
        }
        (Some(file), None) => read_plan(file)?,
        (None, None) => {
            return Err(Diagnostic::error("nothing to apply")
                .hint("give a plan file (`tidemark plan ENV --out FILE`) or `--resume APPLY_ID`")
                .into());
        }
    };
    let state = store.read()?;
    let trigger = if resume.is_some() {
        Trigger::Resume
    } else {
        Trigger::Apply
    };
    let config = &loaded.project.config;
    apply_and_show(ctx, config, &store, &state, &plan, trigger, resume, out)
}
