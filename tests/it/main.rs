//! tidemark's integration tests: one binary (every extra test binary re-links DataFusion).
//! They drive the real `tidemark` executable on fixture projects.

mod common;
mod dag;
mod errors;
mod fingerprints;
mod info;
mod render;
mod synth;
