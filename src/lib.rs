//! tidemark: declarative plan/apply for SQL data pipelines, built around safe backfills.
//!
//! The pipeline, one module per stage, dependencies pointing one way (down; no cycle):
//!
//! ```text
//! main → lib (parse, resolve, dispatch, exit status)
//!   → commands (one thin file per subcommand; none imports another)
//!     · settings (arguments and tidemark.toml resolved once) → cli (clap types only)
//!   → env (catalog, apply, promote, rollback, janitor retention)
//!   → backfill (batches, scheduler, jobs, audits, leases, progress display)
//!     · plan (definitions, categories, restatement, intervals, tables, rendering, plan files)
//!   → engine (DataFusion + delta-rs, the only module touching them; no state)
//!     · state (snapshots, tables, environments, progress records; append-only log)
//!     · fingerprint · dag
//!   → project (tidemark.toml, model files, MODEL header) · sql (parse once, references,
//!     macros, rendering)
//!   → names (model, environment, table and apply identifiers) · interval
//!     · objects (object-store URLs, `[storage]` options, store clients) · printer (the only
//!     stderr writer; units) · error
//! ```
//!
//! The pure stages (project, sql, dag, fingerprint, plan) are synchronous and do no I/O beyond
//! reading the project's files.

pub(crate) mod backfill;
pub mod cli;
pub(crate) mod commands;
pub mod dag;
pub(crate) mod engine;
pub(crate) mod env;
pub mod error;
pub mod fingerprint;
pub mod interval;
pub mod names;
pub mod objects;
pub mod plan;
pub mod printer;
pub mod project;
pub(crate) mod settings;
pub mod sql;
pub mod state;

use std::io::Write;

use clap::Parser;

pub use error::{Diagnostic, Error, ExitStatus, Result};

/// Where this process's local batches spent their time (for benchmarks): batches run, then
/// seconds per phase, summed over batches ([`engine::phases`]).
pub fn local_batch_phases() -> (u64, Vec<(&'static str, f64)>) {
    engine::phases::totals()
}

/// Where this process's remote-engine batches spent their time (for benchmarks): committed
/// batches, then seconds on the engine, reading staged files back, and committing.
pub fn remote_batch_phases() -> (u64, f64, f64, f64) {
    use std::sync::atomic::Ordering::Relaxed;
    let p = &engine::PHASES;
    let s = |v: &std::sync::atomic::AtomicU64| v.load(Relaxed) as f64 / 1e6;
    (
        p.batches.load(Relaxed),
        s(&p.engine_us),
        s(&p.read_back_us),
        s(&p.commit_us),
    )
}

use crate::commands as c;
use crate::printer::Printer;
use crate::settings::Task;

/// Run the CLI with the process's arguments; returns the exit status.
pub fn main() -> ExitStatus {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let status = if e.use_stderr() {
                ExitStatus::Error
            } else {
                ExitStatus::Success
            };
            let _ = e.print();
            return status;
        }
    };
    let printer = Printer::for_stderr();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let result = run(cli, printer, &mut out).and_then(|status| {
        c::flushed(&mut out)?;
        Ok(status)
    });
    match result {
        Ok(status) => status,
        Err(e) => {
            let _ = out.flush();
            printer.error(&e);
            ExitStatus::Error
        }
    }
}

/// Run a parsed command, writing data to `out` and everything else through `printer`.
pub fn run(cli: cli::Cli, printer: Printer, out: &mut dyn Write) -> Result<ExitStatus> {
    let (s, task) = settings::resolve(cli, printer)?;
    let result = match task {
        Task::Info(format) => c::info::run(&s, format, out),
        Task::Dag(format) => c::dag::run(&s, format, out),
        Task::Render { model, start, end } => {
            c::render::run(&s, &model, start.as_deref(), end.as_deref(), out)
        }
        Task::Plan(args) => c::plan::run(&s, &args, out),
        Task::Diff(args) => c::diff::run(&s, &args, out),
        Task::StateExport => c::state::export(&s, out),
        Task::StateImport(file) => c::state::import(&s, &file),
        Task::Apply { plan, resume } => c::apply::run(&s, plan.as_deref(), resume.as_ref(), out),
        Task::Query {
            sql,
            env,
            format,
            engine,
        } => c::query::run(&s, &env, &sql, format, engine, out),
        Task::Run { env, restate_late } => c::run::run(&s, &env, restate_late, out),
        Task::Promote(p) => c::promote::run(&s, &p, out),
        Task::Rollback { env, to } => c::rollback::run(&s, &env, to, out),
        Task::Progress {
            apply_id,
            env,
            format,
        } => c::progress::run(&s, apply_id.as_ref(), env.as_ref(), format, out),
        Task::Reconcile(r) => c::reconcile::run(&s, &r, out),
        Task::Recall(r) => c::recall::run(&s, &r, out),
        Task::Log { env, format } => c::log::run(&s, env.as_ref(), format, out),
        Task::Janitor { dry_run } => c::janitor::run(&s, dry_run, out),
        Task::Test { select, format } => c::test::run(&s, select.as_deref(), format, out),
        Task::Init { dir, from_sqlmesh } => c::init::run(&s, &dir, from_sqlmesh, out),
        Task::EnvHistory(env) => c::env::history(&s, &env, out),
        Task::EnvList(format) => c::env::list(&s, format, out),
        Task::EnvShow(env, format) => c::env::show(&s, &env, format, out),
    };
    match result {
        Err(Error::User(d)) if d.is_empty() => Err(Error::Bug("an error without a message".into())),
        other => other,
    }
}
