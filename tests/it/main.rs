//! tidemark's integration tests: one binary (every extra test binary re-links DataFusion).
//! They drive the real `tidemark` executable on fixture projects.

// Test helpers fail loudly by design.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod azure;
mod backfill;
mod bad_input;
mod canary;
mod commands;
mod common;
mod crash;
mod dag;
mod diff;
mod engine;
mod errors;
mod fingerprints;
mod gates;
mod info;
mod kinds;
mod lakehouse;
mod late;
mod lineage;
mod plan;
mod races;
mod render;
mod s3;
mod servers;
mod spark;
mod sqlmesh;
mod synth;
