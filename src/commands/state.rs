//! `tidemark state export|import`: the whole state as one JSON document, for backup and
//! migration between warehouses.

use std::path::Path;

use crate::error::{Diagnostic, Error, ExitStatus, Result, io_error};
use crate::project::config;
use crate::settings::Settings;
use crate::state::{State, StateStore};

fn store(ctx: &Settings) -> Result<StateStore> {
    let path = super::config_path(ctx)?;
    let config = config::load_config(&path)?;
    StateStore::open_with(&config.warehouse, &config.storage)
}

/// `state export`: print the state.
pub fn export(ctx: &Settings, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let state = store(ctx)?.read()?;
    super::emit_json(out, &state)?;
    Ok(ExitStatus::Success)
}

/// `state import FILE`: load an exported state into an empty warehouse.
pub fn import(ctx: &Settings, file: &Path) -> Result<ExitStatus> {
    let bytes = if file == Path::new("-") {
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)
            .map_err(|e| Error::from(io_error("read", Path::new("<stdin>"), &e)))?;
        b
    } else {
        std::fs::read(file).map_err(|e| Error::from(io_error("read", file, &e)))?
    };
    #[derive(serde::Deserialize)]
    struct Head {
        format: String,
    }
    let head: Head = serde_json::from_slice(&bytes).map_err(|e| invalid(file, &e))?;
    State::check_format(&head.format, &format!("`{}`", file.display()))?;
    let state: State = serde_json::from_slice(&bytes).map_err(|e| invalid(file, &e))?;
    let store = store(ctx)?;
    let imported = store.import(state)?;
    ctx.printer.note(&format!(
        "imported {} environments, {} snapshots and {} tables into {}",
        imported.environments.len(),
        imported.snapshots.len(),
        imported.tables.len(),
        store.describe()
    ));
    Ok(ExitStatus::Success)
}

fn invalid(file: &Path, e: &serde_json::Error) -> Error {
    Error::from(
        Diagnostic::error(format!(
            "`{}` is not a tidemark state export",
            file.display()
        ))
        .caused_by(e)
        .hint("create one with `tidemark state export > state.json`"),
    )
}
