//! Arguments and `tidemark.toml` resolved into what each command runs with, in one place.
//!
//! Invariants:
//! - Every environment name a command receives is an [`EnvName`]: normalised (lowercased) and
//!   validated here, once; no command lowercases or checks one again.
//! - `--workers` becomes a non-zero count here ([`ExecOptions::workers`]), and so do
//!   `--max-failures` and `--max-source-reads`; nothing downstream clamps them.
//! - `--execution-time` is parsed here; every command sees one fixed "now".

use std::num::NonZeroUsize;
use std::path::PathBuf;

use chrono::{DateTime, Utc};

use crate::backfill::{ExecOptions, ProgressMode};
use crate::cli::{Cli, Command, EnvCommand, ExecArgs, PlanArgs, ProgressArg, StateCommand};
pub use crate::cli::{
    DagFormat, DiffArgs, EnvFormat, InfoFormat, PlanFormat, QueryEngine, QueryFormat,
};
use crate::error::{Diagnostic, Error, Result};
use crate::names::{ApplyId, EnvName};
use crate::printer::Printer;

/// What every command gets: the project to load, "now", the printer and how batches run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `--project`, if given.
    pub project: Option<PathBuf>,
    /// "Now" (`--execution-time`, or the clock).
    pub execution_time: DateTime<Utc>,
    /// The one writer of stderr.
    pub printer: Printer,
    /// How batches run (commands that execute batches; defaults elsewhere).
    pub exec: ExecOptions,
}

/// The options `--workers`, `--retries`, ... ask for.
fn exec_options(args: &ExecArgs) -> ExecOptions {
    let d = ExecOptions::default();
    let nz = |n: usize| NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
    ExecOptions {
        workers: args.workers.map_or(d.workers, |w| nz(usize::from(w))),
        retries: args.retries,
        canary: args.canary,
        canary_gate: args.canary_gate,
        accept: args.accept.clone(),
        reason: args.reason.clone(),
        max_failures: nz(args.max_failures as usize),
        newest_first: args.newest_first,
        max_duration: args.max_duration,
        max_source_reads: args.max_source_reads.map(|n| nz(n as usize)),
        progress: match args.progress {
            ProgressArg::Auto => ProgressMode::Auto,
            ProgressArg::Bars => ProgressMode::Bars,
            ProgressArg::Lines => ProgressMode::Lines,
            ProgressArg::Json => ProgressMode::Json,
        },
        lineage_file: args.lineage.clone(),
    }
}

/// `plan`, resolved.
#[derive(Debug)]
pub struct Plan {
    /// The target environment.
    pub environment: EnvName,
    /// The environment a new environment starts from.
    pub create_from: EnvName,
    /// The arguments as given (window, selectors, output).
    pub args: PlanArgs,
}

/// `recall SOURCE`.
#[derive(Debug)]
pub struct Recall {
    /// The source's name as written.
    pub source: String,
    /// `--version V` or `A..B`.
    pub version: Option<String>,
    /// `--since TIME`.
    pub since: Option<String>,
    /// `--plan ENV`.
    pub plan: Option<EnvName>,
    /// `--out FILE`.
    pub out: Option<std::path::PathBuf>,
    /// Output format.
    pub format: PlanFormat,
}

/// `promote`, resolved.
#[derive(Debug)]
pub struct Promote {
    /// The environment to promote.
    pub env: EnvName,
    /// The environment that will point at its snapshots.
    pub to: EnvName,
    /// Only show the plan.
    pub check: bool,
    /// Promote even if the target would lose intervals it has.
    pub allow_gaps: bool,
    /// `--accept MODEL:GATE`.
    pub accept: Vec<String>,
    /// `--reason`.
    pub reason: Option<String>,
    /// Output format of the plan.
    pub format: PlanFormat,
}

/// `reconcile`, resolved.
#[derive(Debug)]
pub struct Reconcile {
    /// The model.
    pub model: String,
    /// The environment to check.
    pub env: EnvName,
    /// The environment to compare with (`None`: the recorded values).
    pub against: Option<EnvName>,
    /// First partition.
    pub start: Option<String>,
    /// End (exclusive).
    pub end: Option<String>,
    /// Output format.
    pub format: EnvFormat,
}

/// A command with its arguments resolved.
#[derive(Debug)]
pub enum Task {
    /// `info`.
    Info(InfoFormat),
    /// `dag`.
    Dag(DagFormat),
    /// `render MODEL`.
    Render {
        /// The model as typed.
        model: String,
        /// `--start`.
        start: Option<String>,
        /// `--end`.
        end: Option<String>,
    },
    /// `plan`.
    Plan(Box<Plan>),
    /// `diff`.
    Diff(DiffArgs),
    /// `state export`.
    StateExport,
    /// `state import FILE`.
    StateImport(PathBuf),
    /// `apply FILE` or `apply --resume ID`.
    Apply {
        /// The plan file.
        plan: Option<PathBuf>,
        /// The apply to resume.
        resume: Option<ApplyId>,
    },
    /// `query SQL`.
    Query {
        /// The SQL.
        sql: String,
        /// The environment read.
        env: EnvName,
        /// Output format.
        format: QueryFormat,
        /// Where it runs.
        engine: QueryEngine,
    },
    /// `run [ENV]`.
    Run {
        /// The environment.
        env: EnvName,
        /// `--restate-late`.
        restate_late: bool,
    },
    /// `promote ENV`.
    Promote(Promote),
    /// `rollback [ENV]`.
    Rollback {
        /// The environment.
        env: EnvName,
        /// The revision to restore.
        to: Option<u64>,
    },
    /// `progress`.
    Progress {
        /// The apply.
        apply_id: Option<ApplyId>,
        /// Or the newest apply of this environment.
        env: Option<EnvName>,
        /// Output format.
        format: EnvFormat,
    },
    /// `reconcile MODEL`.
    Reconcile(Reconcile),
    /// `recall SOURCE`.
    Recall(Recall),
    /// `log`.
    /// `init [DIR] [--from-sqlmesh]`.
    Init {
        /// The project directory.
        dir: PathBuf,
        /// Map a SQLMesh project's configuration.
        from_sqlmesh: bool,
    },
    /// `test [SELECT]`.
    Test {
        /// A model or test name.
        select: Option<String>,
        /// Output format.
        format: EnvFormat,
    },
    Log {
        /// Only this environment's.
        env: Option<EnvName>,
        /// Output format.
        format: EnvFormat,
    },
    /// `janitor`.
    Janitor {
        /// Only report.
        dry_run: bool,
    },
    /// `env list`.
    EnvList(EnvFormat),
    /// `env show ENV`.
    EnvShow(EnvName, EnvFormat),
    /// `env history ENV`.
    EnvHistory(EnvName),
}

fn env_name(raw: &str) -> Result<EnvName> {
    EnvName::from_user(raw)
}

fn env_opt(raw: Option<&String>) -> Result<Option<EnvName>> {
    raw.map(|e| EnvName::from_user(e)).transpose()
}

/// Resolve the parsed command line into settings and a task.
pub fn resolve(cli: Cli, printer: Printer) -> Result<(Settings, Task)> {
    let execution_time = match &cli.execution_time {
        None => Utc::now(),
        Some(s) => {
            crate::interval::parse_instant(s)
                .map_err(|r| {
                    Error::from(Diagnostic::error(format!(
                        "invalid `--execution-time`: {r}"
                    )))
                })?
                .at
        }
    };
    let exec = match &cli.command {
        Command::Plan(a) => Some(&a.exec),
        Command::Apply { exec, .. } | Command::Run { exec, .. } | Command::Promote { exec, .. } => {
            Some(exec)
        }
        _ => None,
    };
    if let Some(e) = exec
        && !e.accept.is_empty()
        && !e.canary_gate
        && !matches!(cli.command, Command::Promote { .. })
    {
        return Err(Diagnostic::error(
            "`--accept` accepts violations of canary gates here, and `--canary-gate` is not on",
        )
        .hint("add `--canary-gate`; promotion gates are accepted on `tidemark promote`")
        .into());
    }
    let settings = Settings {
        project: cli.project,
        execution_time,
        printer,
        exec: exec.map(exec_options).unwrap_or_default(),
    };
    let task = match cli.command {
        Command::Info { format } => Task::Info(format),
        Command::Dag { format } => Task::Dag(format),
        Command::Render { model, start, end } => Task::Render { model, start, end },
        Command::Plan(args) => Task::Plan(Box::new(Plan {
            environment: env_name(&args.environment)?,
            create_from: env_name(&args.create_from)?,
            args,
        })),
        Command::Diff(args) => Task::Diff(args),
        Command::State {
            command: StateCommand::Export { format: _ },
        } => Task::StateExport,
        Command::State {
            command: StateCommand::Import { file },
        } => Task::StateImport(file),
        Command::Apply { plan, resume, .. } => Task::Apply {
            plan,
            resume: resume.as_deref().map(ApplyId::from_user).transpose()?,
        },
        Command::Query {
            sql,
            env,
            format,
            engine,
        } => Task::Query {
            sql,
            env: env_name(&env)?,
            format,
            engine,
        },
        Command::Run {
            env, restate_late, ..
        } => Task::Run {
            env: env_name(&env)?,
            restate_late,
        },
        Command::Promote {
            env,
            to,
            check,
            allow_gaps,
            format,
            exec,
        } => Task::Promote(Promote {
            env: env_name(&env)?,
            to: env_name(&to)?,
            check,
            allow_gaps,
            accept: exec.accept,
            reason: exec.reason,
            format,
        }),
        Command::Rollback { env, to } => Task::Rollback {
            env: env_name(&env)?,
            to,
        },
        Command::Progress {
            apply_id,
            env,
            format,
        } => Task::Progress {
            apply_id: apply_id.as_deref().map(ApplyId::from_user).transpose()?,
            env: env_opt(env.as_ref())?,
            format,
        },
        Command::Reconcile {
            model,
            env,
            against,
            start,
            end,
            format,
        } => Task::Reconcile(Reconcile {
            model,
            env: env_name(&env)?,
            against: env_opt(against.as_ref())?,
            start,
            end,
            format,
        }),
        Command::Recall {
            source,
            version,
            since,
            plan,
            out,
            format,
        } => Task::Recall(Recall {
            source,
            version,
            since,
            plan: env_opt(plan.as_ref())?,
            out,
            format,
        }),
        Command::Log { env, format } => Task::Log {
            env: env_opt(env.as_ref())?,
            format,
        },
        Command::Janitor { dry_run } => Task::Janitor { dry_run },
        Command::Test { select, format } => Task::Test { select, format },
        Command::Init { dir, from_sqlmesh } => Task::Init { dir, from_sqlmesh },
        Command::Env { command } => match command {
            EnvCommand::List { format } => Task::EnvList(format),
            EnvCommand::Show { env, format } => Task::EnvShow(env_name(&env)?, format),
            EnvCommand::History { env } => Task::EnvHistory(env_name(&env)?),
        },
    };
    Ok((settings, task))
}
