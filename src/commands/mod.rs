//! One module per subcommand. Each takes the [`Context`], its own arguments and the stdout
//! writer, and returns the exit code (0, or 1 when a check found something).

pub mod apply;
pub mod dag;
pub mod diff;
pub mod env;
pub mod info;
pub mod janitor;
pub mod log;
pub mod plan;
pub mod progress;
pub mod promote;
pub mod query;
pub mod reconcile;
pub mod render;
pub mod rollback;
pub mod run;
pub mod state;

use std::collections::BTreeMap;

use crate::cli::{Context, warn};
use crate::dag::Dag;
use crate::error::Result;
use crate::fingerprint::{Fingerprint, fingerprint_all};
use crate::project::{ModelName, Project, config};

/// A project with its graph and fingerprints: what most commands start from.
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// Its graph.
    pub dag: Dag,
    /// Fingerprints of every node.
    pub fingerprints: BTreeMap<ModelName, Fingerprint>,
}

/// The project's `tidemark.toml`: `--project`, or found by walking up from the current directory.
pub fn config_path(ctx: &Context) -> Result<std::path::PathBuf> {
    let cwd = std::env::current_dir().map_err(|e| {
        crate::error::Error::from(crate::error::io_error(
            "read",
            std::path::Path::new("."),
            &e,
        ))
    })?;
    config::find_config(ctx.project.as_deref(), &cwd)
}

/// The configuration and state store, for commands that work on the warehouse only (no model
/// files needed).
pub fn warehouse(ctx: &Context) -> Result<(config::Config, crate::state::StateStore)> {
    let config = config::load_config(&config_path(ctx)?)?;
    let store = crate::state::StateStore::open(&config.warehouse)?;
    Ok((config, store))
}

/// Find, load and validate the project, print its warnings, build the graph, fingerprint it.
pub fn load(ctx: &Context) -> Result<Loaded> {
    let path = config_path(ctx)?;
    let project = Project::load(&path)?;
    warn(ctx, &project.warnings);
    let dag = Dag::build(&project)?;
    let fingerprints = fingerprint_all(&project, &dag);
    Ok(Loaded {
        project,
        dag,
        fingerprints,
    })
}

/// Width of a name column: the longest name, at least 5 (`model`).
pub fn name_width<'a>(names: impl Iterator<Item = &'a str>) -> usize {
    names.map(str::len).max().unwrap_or(5).max(5)
}

/// Write `value` as pretty JSON, then a newline, to `out`.
pub fn emit_json(out: &mut dyn std::io::Write, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::Error::Bug(format!("serializing JSON output: {e}")))?;
    emit(out, &format!("{text}\n"))
}

/// Write all of `text` to `out`, mapping a failed write (e.g. a closed pipe) to success: there
/// is nobody left to read the rest.
pub fn emit(out: &mut dyn std::io::Write, text: &str) -> Result<()> {
    let _ = out.write_all(text.as_bytes());
    Ok(())
}
