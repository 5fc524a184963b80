//! `tidemark init [DIR] [--from-sqlmesh]`: start a project that runs as it is, or write the
//! `tidemark.toml` of a SQLMesh project from its configuration. Never overwrites a file.

use std::path::Path;

use super::emit;
use crate::error::{Diagnostic, Error, ExitStatus, Result, io_error};
use crate::project::import;
use crate::settings::Settings;

/// Run `init`.
pub fn run(
    ctx: &Settings,
    dir: &Path,
    from_sqlmesh: bool,
    out: &mut dyn std::io::Write,
) -> Result<ExitStatus> {
    let config = dir.join("tidemark.toml");
    if config.exists() {
        return Err(
            Diagnostic::error(format!("`{}` already exists", config.display()))
                .hint(
                    "`tidemark init` starts a new project; edit the existing tidemark.toml instead",
                )
                .into(),
        );
    }
    let name = project_name(dir);
    let files = if from_sqlmesh {
        sqlmesh(ctx, dir, &name)?
    } else {
        import::scaffold(&name, ctx.execution_time)
            .into_iter()
            .map(|(p, t)| (p.to_string(), t))
            .collect()
    };
    for (rel, _) in &files {
        if dir.join(rel).exists() {
            return Err(Diagnostic::error(format!(
                "`{}` already exists",
                dir.join(rel).display()
            ))
            .hint("run `tidemark init` in an empty directory, or name a new one: `tidemark init DIR`")
            .into());
        }
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::from(io_error("create", parent, &e)))?;
        }
        std::fs::write(&path, text).map_err(|e| Error::from(io_error("write", &path, &e)))?;
    }
    let mut listing = String::new();
    for (rel, _) in &files {
        listing.push_str(&format!("created {}\n", dir.join(rel).display()));
    }
    emit(out, &listing)?;
    ctx.printer.note(&if from_sqlmesh {
        format!(
            "next: set the sources' `path` and `format` if any, then `tidemark --project {} info`",
            dir.display()
        )
    } else {
        format!(
            "next: `tidemark --project {} plan --apply`, then `tidemark --project {} query \"SELECT * FROM demo.user_totals\"`",
            dir.display(),
            dir.display()
        )
    });
    Ok(ExitStatus::Success)
}

/// The project's name: the directory's, made of letters, digits, `_` and `-`.
fn project_name(dir: &Path) -> String {
    let base = std::fs::canonicalize(dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .or_else(|| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        name
    } else {
        "project".to_string()
    }
}

/// The `tidemark.toml` of the SQLMesh project in `dir`; what is not mapped is a warning.
fn sqlmesh(ctx: &Settings, dir: &Path, name: &str) -> Result<Vec<(String, String)>> {
    let yaml = dir.join("config.yaml");
    let text = match std::fs::read_to_string(&yaml) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let hint = if dir.join("config.py").exists() {
                "a `config.py` cannot be read: write tidemark.toml by hand (docs/sqlmesh.md maps every setting)"
            } else {
                "point it at a SQLMesh project: the directory holding its config.yaml"
            };
            return Err(Diagnostic::error(format!("no `{}`", yaml.display()))
                .hint(hint)
                .into());
        }
        Err(e) => return Err(io_error("read", &yaml, &e).into()),
    };
    let mut external: Vec<(String, String)> = Vec::new();
    for f in ["external_models.yaml", "schema.yaml"] {
        if let Ok(t) = std::fs::read_to_string(dir.join(f)) {
            external.push((f.to_string(), t));
        }
    }
    if let Ok(entries) = std::fs::read_dir(dir.join("external_models")) {
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for p in paths
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        {
            if let Ok(t) = std::fs::read_to_string(&p) {
                external.push((p.display().to_string(), t));
            }
        }
    }
    let refs: Vec<(&str, &str)> = external
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let imported = import::from_sqlmesh(name, &text, &refs).map_err(|m| {
        Error::from(Diagnostic::error(format!(
            "cannot read the SQLMesh configuration: {m}"
        )))
    })?;
    for u in &imported.unmapped {
        ctx.printer
            .diagnostics(&[Diagnostic::warning(format!("not mapped: {u}"))]);
    }
    Ok(vec![("tidemark.toml".to_string(), imported.toml)])
}
