//! `tidemark diff --base REV [--head REV]`: the plan between two revisions of the project, read
//! from git, with no warehouse and no state — what a CI job posts on a pull request.
//!
//! The base revision stands in for a deployed environment that is complete up to the execution
//! time: models that keep their version need nothing, and every model that needs a new version
//! shows its whole range (or the `--start`/`--end` window) as the backfill.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::emit;
use crate::dag::Dag;
use crate::error::{Diagnostic, Error, ExitStatus, Result, io_error};
use crate::fingerprint::{Fingerprint, fingerprint_all};
use crate::plan::{self, Options};
use crate::project::{ModelName, Project};
use crate::settings::{DiffArgs, Settings};
use crate::state::{EnvModel, Environment, ModelRecord, PhysicalTable, Snapshot, State};
use std::collections::BTreeMap;

/// Removes a temporary directory when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Run `diff`.
pub fn run(ctx: &Settings, args: &DiffArgs, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let config_path = super::config_path(ctx)?;
    let root = config_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let top = PathBuf::from(git(&root, &["rev-parse", "--show-toplevel"])?.trim());
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let prefix = canon(&root)
        .strip_prefix(canon(&top))
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp =
        TempDir(std::env::temp_dir().join(format!("tidemark-diff-{}-{nanos}", std::process::id())));

    let (base, base_fps) = load_rev(&top, &prefix, &args.base, &tmp.0.join("base"))?;
    let (head, head_fps, head_label) = match &args.head {
        Some(rev) => {
            let (p, f) = load_rev(&top, &prefix, rev, &tmp.0.join("head"))?;
            (p, f, rev.clone())
        }
        None => {
            let p = Project::load(&config_path)?;
            ctx.printer.diagnostics(&p.warnings);
            let dag = Dag::build(&p)?;
            let f = fingerprint_all(&p, &dag);
            (p, f, "working tree".to_string())
        }
    };
    // The base revision stands in as an environment named `base`.
    let base_env = crate::names::EnvName::from_user("base")?;
    let state = state_of(&base, &base_fps, &base_env, ctx.execution_time);
    let opts = Options {
        create_from: base_env.clone(),
        start: args
            .start
            .as_deref()
            .map(super::parse_instant_arg("--start"))
            .transpose()?,
        end: args
            .end
            .as_deref()
            .map(super::parse_instant_arg("--end"))
            .transpose()?,
        mode: plan::Mode::Offline,
        ..Options::new(&base_env, ctx.execution_time)
    };
    let mut plan = plan::build(&head, &head_fps, &state, &opts)?;
    plan.environment = head_label;
    plan.base_environment = Some(args.base.clone());
    plan.environment_revision = None;
    plan.state_seq = 0;
    plan.ttl_seconds = None;
    plan.plan_id = plan::plan_id(&plan)?;
    super::show_plan(&plan, args.format, out)?;
    emit(out, "")?;
    Ok(ExitStatus::Success)
}

/// The base revision as an environment whose tables are complete up to `now`.
fn state_of(
    project: &Project,
    fps: &BTreeMap<ModelName, Fingerprint>,
    name: &crate::names::EnvName,
    now: chrono::DateTime<chrono::Utc>,
) -> State {
    let mut state = State::empty();
    let mut env = Environment {
        name: name.clone(),
        revision: 1,
        plan_id: String::new(),
        models: BTreeMap::new(),
        created_at: now,
        updated_at: now,
        expires_at: None,
        source_versions: BTreeMap::new(),
        late_since: BTreeMap::new(),
        accepted_gates: Vec::new(),
    };
    for (name, m) in &project.models {
        let fp = &fps[name];
        let snapshot = Snapshot {
            name: name.clone(),
            id: Snapshot::make_id(name, &fp.data, &fp.metadata),
            definition_hash: fp.definition.clone(),
            data_hash: fp.data.clone(),
            metadata_hash: fp.metadata.clone(),
            version: fp.version.clone(),
            category: None,
            parents: project
                .parents
                .get(name)
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        p.clone(),
                        fps.get(p).map(|f| f.data.clone()).unwrap_or_default(),
                    )
                })
                .collect(),
            model: ModelRecord::of(m, project.self_referencing.contains(name)),
            created_at: now,
        };
        let table = snapshot.table_id();
        if let Some(id) = &table {
            let empty = State::empty();
            let ctx = crate::plan::intervals::Scope {
                state: &empty,
                execution_time: now,
                window: None,
                catch_up: false,
            };
            state.tables.insert(
                id.clone(),
                PhysicalTable {
                    id: id.clone(),
                    name: name.clone(),
                    version: snapshot.version.clone(),
                    generation: 0,
                    interval_unit: snapshot.model.interval_unit,
                    intervals: crate::plan::intervals::expected(&ctx, &snapshot.model),
                    created_at: now,
                },
            );
        }
        env.models.insert(
            name.clone(),
            EnvModel {
                snapshot: snapshot.id.clone(),
                table,
                table_version: None,
            },
        );
        state.snapshots.insert(snapshot.id.clone(), snapshot);
    }
    state.environments.insert(env.name.clone(), env);
    state
}

/// Extract the project at `rev` into `dest` and load it.
fn load_rev(
    top: &Path,
    prefix: &Path,
    rev: &str,
    dest: &Path,
) -> Result<(Project, BTreeMap<ModelName, Fingerprint>)> {
    if rev.starts_with('-') {
        return Err(Error::from(Diagnostic::error(format!(
            "invalid revision `{rev}`"
        ))));
    }
    git(top, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]).map_err(|_| {
        Error::from(
            Diagnostic::error(format!("unknown git revision `{rev}`"))
                .hint("pass a commit, branch or tag that exists locally (in CI, fetch the base branch first, e.g. `git fetch origin main`)"),
        )
    })?;
    std::fs::create_dir_all(dest).map_err(|e| Error::from(io_error("create", dest, &e)))?;
    let path_arg = if prefix.as_os_str().is_empty() {
        ".".to_string()
    } else {
        prefix.to_string_lossy().replace('\\', "/")
    };
    let archive = Command::new("git")
        .current_dir(top)
        .args(["archive", "--format=tar", rev, "--", &path_arg])
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::from(io_error("run", Path::new("git"), &e)))?;
    if !archive.status.success() {
        return Err(Error::from(
            Diagnostic::error(format!(
                "cannot read the project at revision `{rev}`: {}",
                String::from_utf8_lossy(&archive.stderr).trim()
            ))
            .hint("is the project directory part of the repository at that revision?"),
        ));
    }
    let mut tar = Command::new("tar")
        .current_dir(dest)
        .args(["-x", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::from(io_error("run", Path::new("tar"), &e)))?;
    if let Some(mut stdin) = tar.stdin.take() {
        std::io::Write::write_all(&mut stdin, &archive.stdout)
            .map_err(|e| Error::from(io_error("write", Path::new("tar"), &e)))?;
    }
    let status = tar
        .wait()
        .map_err(|e| Error::from(io_error("run", Path::new("tar"), &e)))?;
    if !status.success() {
        return Err(Error::Bug(format!("tar could not extract revision {rev}")));
    }
    let config_path = dest.join(prefix).join("tidemark.toml");
    if !config_path.exists() {
        return Err(Error::from(
            Diagnostic::error(format!(
                "revision `{rev}` has no tidemark.toml in `{}`",
                if path_arg == "." {
                    "the repository root"
                } else {
                    &path_arg
                }
            ))
            .hint("pick a revision in which the project exists"),
        ));
    }
    let project = Project::load(&config_path)
        .map_err(|e| e.map_diagnostics(|d| d.note(format!("in revision `{rev}`"))))?;
    let dag = Dag::build(&project)?;
    let fps = fingerprint_all(&project, &dag);
    Ok((project, fps))
}

/// Run git in `dir`; its stdout, or an error with its stderr.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| {
            Error::from(io_error("run", Path::new("git"), &e).hint("`diff` needs git on the PATH"))
        })?;
    if !out.status.success() {
        return Err(Error::from(
            Diagnostic::error(format!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
            .hint("`diff` must run inside a git checkout of the project"),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
