//! The command line: clap's argument types and nothing else.
//!
//! Invariant: this module imports nothing from the rest of the crate. What the arguments mean
//! (defaults from `tidemark.toml`, validated names, counts) is resolved in
//! `settings.rs`; dispatch and exit statuses are in `lib.rs`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Declarative plan/apply for SQL data pipelines with safe backfills.
#[derive(Debug, Parser)]
#[command(name = "tidemark", version, about, max_term_width = 100)]
pub struct Cli {
    /// The project directory (the one holding tidemark.toml); default: search upwards from the
    /// current directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub project: Option<PathBuf>,

    /// Fix "now" (UTC) for this command, e.g. 2024-01-08 or 2024-01-08T06:00:00Z, so that
    /// results are reproducible.
    #[arg(long, global = true, value_name = "TIMESTAMP")]
    pub execution_time: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of `info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InfoFormat {
    /// A table for people.
    Text,
    /// Versioned JSON (`tidemark.info/v1`).
    Json,
}

/// Output formats of `dag`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DagFormat {
    /// Models in topological order with their parents.
    Text,
    /// Graphviz.
    Dot,
    /// Mermaid flowchart (renders in GitHub markdown).
    Mermaid,
    /// Versioned JSON (`tidemark.dag/v1`).
    Json,
}

/// Output formats of `plan` and `diff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    /// A tree for the terminal.
    Text,
    /// A pull-request comment.
    Markdown,
    /// Versioned JSON (`tidemark.plan/v1`, see docs/plan-format.md).
    Json,
}

/// Arguments of `plan`.
#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The environment to plan for.
    #[arg(default_value = "prod")]
    pub environment: String,
    /// The environment a new environment starts from.
    #[arg(long, default_value = "prod", value_name = "ENV")]
    pub create_from: String,
    /// Window start (date or timestamp, UTC): dev previews and restatements.
    #[arg(long, value_name = "DATE")]
    pub start: Option<String>,
    /// Window end: a date is inclusive (through that day), a timestamp exclusive.
    #[arg(long, value_name = "DATE")]
    pub end: Option<String>,
    /// Recompute the selected models in the window, and everything downstream.
    #[arg(long, value_name = "SEL")]
    pub restate_model: Vec<String>,
    /// Take only these models' local changes; others keep the environment's version.
    #[arg(long, value_name = "SEL")]
    pub select_model: Vec<String>,
    /// Every change is forward-only: keep the tables, new logic from now on.
    #[arg(long)]
    pub forward_only: bool,
    /// Compute nothing (the environment will point at tables with missing intervals).
    #[arg(long)]
    pub skip_backfill: bool,
    /// Categorize these directly modified models as breaking.
    #[arg(long, value_name = "SEL")]
    pub breaking: Vec<String>,
    /// Categorize these directly modified models as non-breaking (a kind change stays breaking).
    #[arg(long, value_name = "SEL")]
    pub non_breaking: Vec<String>,
    /// With --restate-model: include local changes instead of ignoring them.
    #[arg(long)]
    pub with_local_changes: bool,
    /// Restate exactly the windows that late or corrected data of Delta sources changed since
    /// the environment read them (see the plan's "Late or corrected source data").
    #[arg(long)]
    pub restate_late: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
    /// Also save the plan (JSON) to FILE, to apply it later exactly as reviewed.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Exit 1 if the plan changes or computes anything, 0 if there is nothing to do.
    #[arg(long, conflicts_with = "apply")]
    pub check: bool,
    /// Run the unit tests (`tests/*.yaml`) of the models the plan adds or changes; a failing
    /// test exits 1 before anything is applied.
    #[arg(long)]
    pub run_tests: bool,
    /// Apply the plan right after showing it: compute every batch, then move the environment
    /// in one atomic commit.
    #[arg(long)]
    pub apply: bool,
    /// How batches run (with --apply).
    #[command(flatten)]
    pub exec: ExecArgs,
}

/// How batches run: accepted by every command that executes batches.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecArgs {
    /// Batches running at once across the whole apply [default: the number of cores].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
    /// Extra attempts for a batch failing transiently (commit conflict, I/O), with exponential
    /// backoff.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub retries: u32,
    /// First batches of each added, directly modified or restated model that run (with their
    /// audits) before anything fans out; 0 disables.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub canary: usize,
    /// Evaluate each canary model's promotion gates on its canary batches (against the same
    /// partitions of its previous version); a violation stops the apply before the fan-out.
    #[arg(long)]
    pub canary_gate: bool,
    /// Accept the violations of this gate of this model (`MODEL:GATE`, repeatable): the
    /// promotion gates of `promote`, the canary gates of `--canary-gate`; needs `--reason`.
    #[arg(long, value_name = "MODEL:GATE")]
    pub accept: Vec<String>,
    /// Why the accepted violations are right (recorded with the acceptance in the environment
    /// history or the apply log).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    /// Failed batches after which no new batch starts (the circuit breaker).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,
    /// Compute the newest windows first (default: oldest first).
    #[arg(long)]
    pub newest_first: bool,
    /// Stop starting batches after this long (e.g. `2h`, `90m`); the next run continues.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_duration: Option<std::time::Duration>,
    /// Batches reading one external source at once.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_source_reads: Option<u32>,
    /// How progress is shown on stderr: bars on a terminal and lines otherwise (auto), lines,
    /// or JSON-lines events (`tidemark.events/v1`).
    #[arg(long, value_enum, default_value_t = ProgressArg::Auto)]
    pub progress: ProgressArg,
    /// Append OpenLineage events of the apply and its batches to FILE (JSON lines), besides
    /// `[lineage]` in tidemark.toml.
    #[arg(long, value_name = "FILE")]
    pub lineage: Option<PathBuf>,
}

/// Values of `--progress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressArg {
    /// Bars on a terminal, one line per batch otherwise.
    Auto,
    /// Bars (lines when stderr is not a terminal).
    Bars,
    /// One line per batch.
    Lines,
    /// One JSON object per event and line.
    Json,
}

/// Arguments of `diff`.
#[derive(Debug, clap::Args)]
pub struct DiffArgs {
    /// The git revision to compare with (e.g. origin/main).
    #[arg(long, value_name = "GIT_REV")]
    pub base: String,
    /// The git revision to compare (default: the working tree).
    #[arg(long, value_name = "GIT_REV")]
    pub head: Option<String>,
    /// Window start for the backfill estimate.
    #[arg(long, value_name = "DATE")]
    pub start: Option<String>,
    /// Window end: a date is inclusive, a timestamp exclusive.
    #[arg(long, value_name = "DATE")]
    pub end: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
    pub format: PlanFormat,
}

/// `state` subcommands.
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Print the whole state (environments, snapshots, tables, intervals, history) as JSON.
    Export {
        /// Output format (only JSON).
        #[arg(long, value_enum, default_value_t = ExportFormat::Json)]
        format: ExportFormat,
    },
    /// Load an exported state into a warehouse whose state is empty.
    Import {
        /// The export (`-` for stdin).
        file: PathBuf,
    },
}

/// Output formats of `state export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// `tidemark.state/v1` JSON.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the models: kind, schedule, start, fingerprints and parents.
    Info {
        /// Output format.
        #[arg(long, value_enum, default_value_t = InfoFormat::Text)]
        format: InfoFormat,
    },
    /// Show the dependency graph.
    Dag {
        /// Output format.
        #[arg(long, value_enum, default_value_t = DagFormat::Text)]
        format: DagFormat,
    },
    /// Print the SQL a model would run for an interval, with macro variables substituted.
    Render {
        /// The model's name, e.g. sushi.fact_sales.
        model: String,
        /// Interval start (date or timestamp, UTC). Default: the last complete interval.
        #[arg(long)]
        start: Option<String>,
        /// Interval end: a date is inclusive (through that day), a timestamp exclusive.
        #[arg(long)]
        end: Option<String>,
    },
    /// Show what changed against an environment and which intervals must be computed.
    Plan(PlanArgs),
    /// Compare two git revisions of the project offline (no warehouse, no state).
    Diff(DiffArgs),
    /// Export or import the state.
    State {
        /// What to do.
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Apply a saved plan (refused if the environment changed since it was made).
    Apply {
        /// The plan file written by `plan --out`.
        #[arg(required_unless_present = "resume")]
        plan: Option<PathBuf>,
        /// Continue an interrupted or failed apply (its id is in its messages and `tidemark
        /// log`): complete batches are skipped.
        #[arg(long, value_name = "APPLY_ID", conflicts_with = "plan")]
        resume: Option<String>,
        /// How batches run.
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Run read-only SQL against an environment (model names resolve to its pinned tables).
    Query {
        /// The SQL.
        sql: String,
        /// The environment to read.
        #[arg(long, default_value = "prod")]
        env: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
        format: QueryFormat,
        /// Where the SQL runs: the project's `[engine]`, or the built-in DataFusion engine over
        /// the same pinned files (the SQL is then DataFusion SQL).
        #[arg(long, value_enum, default_value_t = QueryEngine::Project)]
        engine: QueryEngine,
    },
    /// Compute the intervals that became complete since the last run and advance the pins.
    Run {
        /// The environment.
        #[arg(default_value = "prod")]
        env: String,
        /// Also restate the windows that late or corrected source data changed (default:
        /// `[run] restate_late` in tidemark.toml).
        #[arg(long)]
        restate_late: bool,
        /// How batches run.
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Point another environment (default prod) at ENV's snapshots in one atomic commit.
    Promote {
        /// The environment to promote.
        env: String,
        /// The environment that will point at ENV's snapshots.
        #[arg(long, default_value = "prod", value_name = "ENV")]
        to: String,
        /// Only show what the promotion would compute and change (exit 1 if anything).
        #[arg(long)]
        check: bool,
        /// Promote even if the target would lose intervals it has now.
        #[arg(long)]
        allow_gaps: bool,
        /// Output format of the plan.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// How batches run.
        #[command(flatten)]
        exec: ExecArgs,
    },
    /// Point an environment back at an earlier revision, in one atomic commit.
    Rollback {
        /// The environment.
        #[arg(default_value = "prod")]
        env: String,
        /// The revision to restore (default: the one before the last change).
        #[arg(long, value_name = "REVISION")]
        to: Option<u64>,
    },
    /// The progress table of an apply: batches per status and per model, failures, ETA.
    Progress {
        /// The apply (default: the newest, or the newest of --env).
        apply_id: Option<String>,
        /// The newest apply of this environment.
        #[arg(long, conflicts_with = "apply_id")]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// Compare a model's data partition by partition (rows, checksums) between two
    /// environments, or against what its batches recorded; exit 1 if anything differs.
    Reconcile {
        /// The model.
        model: String,
        /// The environment to check.
        #[arg(long, default_value = "prod")]
        env: String,
        /// The environment to compare with (default: the values recorded when it was written).
        #[arg(long, value_name = "ENV")]
        against: Option<String>,
        /// First partition to compare (date or timestamp).
        #[arg(long, value_name = "DATE")]
        start: Option<String>,
        /// End (exclusive) of the partitions to compare.
        #[arg(long, value_name = "DATE")]
        end: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// Trace versions of a Delta source (a bad load) to every environment, model and window
    /// computed from them; optionally plan their restatement.
    Recall {
        /// The source, as models name it (e.g. `raw.events`).
        source: String,
        /// The version recalled, or an inclusive range `A..B`.
        #[arg(
            long,
            value_name = "V|A..B",
            required_unless_present = "since",
            conflicts_with = "since"
        )]
        version: Option<String>,
        /// The versions committed at or after this time (date or timestamp, UTC).
        #[arg(long, value_name = "TIME")]
        since: Option<String>,
        /// Also make the restatement plan that recomputes those windows of ENV (and what reads
        /// them) from the source's current version.
        #[arg(long, value_name = "ENV")]
        plan: Option<String>,
        /// Save that plan (JSON) to FILE, to apply it with `tidemark apply FILE`.
        #[arg(long, value_name = "FILE", requires = "plan")]
        out: Option<PathBuf>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
    },
    /// Every apply and run, newest first: who, when, git commit, plan, windows, rows, outcome.
    Log {
        /// Only this environment's.
        #[arg(long)]
        env: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// Run the project's unit tests (SQLMesh's YAML format, `tests/*.yaml`) on the engine, in
    /// memory: each model's query over the test's input rows against its expected rows; exit
    /// 1 if one fails.
    Test {
        /// Only the tests of this model, or the test of this name.
        select: Option<String>,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// Start a project: a `tidemark.toml`, a seed, an incremental and a FULL model that run as
    /// they are, and a `.gitignore` for the warehouse and the analysis cache. With `--from-sqlmesh`, write the
    /// `tidemark.toml` of the SQLMesh project in DIR from its `config.yaml` instead.
    Init {
        /// The project directory (created if needed; default: the current one).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// DIR is a SQLMesh project: map its config.yaml and external models.
        #[arg(long)]
        from_sqlmesh: bool,
    },
    /// Delete expired environments and unreachable tables; vacuum the rest.
    Janitor {
        /// Only report what would be deleted.
        #[arg(long)]
        dry_run: bool,
    },
    /// List or show environments.
    Env {
        /// What to do.
        #[command(subcommand)]
        command: EnvCommand,
    },
}

/// Where `query` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryEngine {
    /// The engine of the project's `[engine]` table.
    Project,
    /// The built-in DataFusion engine, in this process.
    Local,
}

/// Output formats of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum QueryFormat {
    /// An aligned table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
}

/// Output formats of `env`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EnvFormat {
    /// For people.
    Text,
    /// Versioned JSON (`tidemark.env/v1`).
    Json,
}

/// `env` subcommands.
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// Every environment with its revision and expiry.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// One environment: per model its snapshot, table URI and pinned Delta version.
    Show {
        /// The environment.
        env: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = EnvFormat::Text)]
        format: EnvFormat,
    },
    /// The revisions of an environment (what `rollback --to` accepts).
    History {
        /// The environment.
        env: String,
    },
}
