//! tidemark: declarative plan/apply for SQL data pipelines, built around safe backfills.
//!
//! The pipeline, one module per stage, dependencies pointing one way:
//!
//! ```text
//! project (tidemark.toml, model files, MODEL header)
//!   → sql (parse once, canonical form, table references, macro variables, rendering)
//!   → dag (petgraph; deterministic topological order; cycles as paths)
//!   → fingerprint (blake3 data / metadata hashes, versions)
//!   → state (snapshots, physical tables, environments; append-only log in the warehouse)
//!   → plan (diff, categories, restatement, missing intervals, rendering)
//!   → commands (info, dag, render, plan, diff, state) → cli
//! ```
//!
//! `interval` (units, cron, time parsing) and `error` (diagnostics) serve every stage. The pure
//! stages are synchronous and do no I/O beyond reading the project's files.

pub mod backfill;
pub mod cli;
pub mod commands;
pub mod dag;
pub mod engine;
pub mod error;
pub mod fingerprint;
pub mod interval;
pub mod plan;
pub mod project;
pub mod sql;
pub mod state;

pub use error::{Diagnostic, Error, Result};
