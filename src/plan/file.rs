//! Plan files: what `plan --out` writes and `apply` reads.
//!
//! Invariants:
//! - A plan file is the plan's versioned JSON ([`PLAN_FORMAT`]); its `plan_id` is a hash of
//!   its contents, so a file changed after it was made is refused, as is a truncated or
//!   foreign one.
//! - Writing one is atomic ([`crate::state::write_atomic`]): a reader sees the old file or
//!   the new one, and no other file of the user's is touched.

use std::path::Path;

use super::{PLAN_FORMAT, Plan};
use crate::error::{Diagnostic, Error, Result, io_error};

/// The plan as pretty JSON, ending in a newline.
pub fn to_json(plan: &Plan) -> Result<String> {
    let mut s = serde_json::to_string_pretty(plan)
        .map_err(|e| Error::Bug(format!("cannot serialize the plan: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Write the plan's JSON to `path` atomically.
pub fn save(plan: &Plan, path: &Path) -> Result<()> {
    crate::state::write_atomic(path, to_json(plan)?.as_bytes())
}

/// Read a saved plan, refusing truncated or foreign files.
pub fn read_plan(file: &Path) -> Result<Plan> {
    let bytes = std::fs::read(file).map_err(|e| Error::from(io_error("read", file, &e)))?;
    parse_plan(&bytes, &format!("`{}`", file.display()))
}

/// Parse a saved plan (`what` names it in messages).
pub fn parse_plan(bytes: &[u8], what: &str) -> Result<Plan> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        Error::from(
            Diagnostic::error(format!("{what} is not a plan file"))
                .caused_by(e)
                .hint("save a plan with `tidemark plan ENV --out FILE`; the file may be truncated"),
        )
    })?;
    let format = value.get("format").and_then(|f| f.as_str()).unwrap_or("");
    if format != PLAN_FORMAT {
        return Err(Diagnostic::error(format!(
            "{} has format `{format}`, expected `{PLAN_FORMAT}`",
            what
        ))
        .hint("make the plan again with this version of tidemark")
        .into());
    }
    let plan: Plan = serde_json::from_value(value).map_err(|e| {
        Error::from(Diagnostic::error(format!("{what} is not a valid plan")).caused_by(e))
    })?;
    if super::plan_id(&plan)? != plan.plan_id {
        return Err(Diagnostic::error(format!(
            "{} was modified after it was made (its plan_id does not match its contents)",
            what
        ))
        .hint("apply only plans exactly as `tidemark plan --out` wrote them")
        .into());
    }
    Ok(plan)
}
