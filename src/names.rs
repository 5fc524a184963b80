//! Identifiers, valid by construction: model and source names, environment names, and the ids
//! of physical tables.
//!
//! Invariants:
//! - A [`ModelName`] is one to three dot-separated parts, each `[a-z_][a-z0-9_]*` (unquoted
//!   SQL identifiers are case-insensitive, so names are stored lowercased).
//! - An [`EnvName`] is `[a-z][a-z0-9_]*`, at most 64 characters, stored lowercased: the user's
//!   `Dev` and `dev` are one environment.
//! - A [`TableId`] is `/`-separated, non-empty parts of ASCII letters, digits and `_`, and it
//!   is also the table's path below the warehouse root.
//!
//! Nothing that could escape a directory when a name becomes a path (`..`, `/`, quotes, control
//! characters, empty parts) can be represented by any of them.

use std::fmt;

use serde::Serialize;

/// The longest part accepted, so physical table names stay within object-store limits.
const MAX_PART_LEN: usize = 128;

/// A validated, normalized model or source name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ModelName {
    text: String,
}

impl ModelName {
    /// Parse `schema.table`, `catalog.schema.table` or (sources only) `table`.
    pub fn parse(s: &str) -> Result<ModelName, String> {
        if s.is_empty() {
            return Err("the name is empty".into());
        }
        // The common case, a name already in normal form (every name read back from the state
        // or the analysis cache): one check, one copy.
        if s.split('.').count() <= 3 && s.split('.').all(is_plain) {
            return Ok(ModelName {
                text: s.to_string(),
            });
        }
        let parts: Vec<&str> = s.split('.').collect();
        if parts.len() > 3 {
            return Err(format!(
                "`{}` has {} parts; at most three (catalog.schema.table)",
                printable(s),
                parts.len()
            ));
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            out.push(check_part(part, s)?);
        }
        Ok(ModelName {
            text: out.join("."),
        })
    }

    /// Build a name from separately given parts (e.g. quoted identifiers); `model` requires a
    /// schema. A part containing `.` is rejected like any other non-identifier character.
    pub fn from_parts(parts: &[String], model: bool) -> Result<ModelName, String> {
        let whole = parts.join(".");
        if parts.is_empty() || parts.len() > 3 {
            return Err(format!(
                "`{}` must have one to three parts",
                printable(&whole)
            ));
        }
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            if part.contains('.') {
                return Err(format!(
                    "`{}` is not a plain identifier: a part contains `.`",
                    printable(part)
                ));
            }
            out.push(check_part(part, &whole)?);
        }
        if model && out.len() < 2 {
            return Err(format!(
                "`{}` has no schema; model names are `schema.table`",
                printable(&whole)
            ));
        }
        Ok(ModelName {
            text: out.join("."),
        })
    }

    /// Parse a model name, which needs a schema: `schema.table` or `catalog.schema.table`.
    pub fn parse_model(s: &str) -> Result<ModelName, String> {
        let name = ModelName::parse(s)?;
        if name.parts().count() < 2 {
            return Err(format!(
                "`{}` has no schema; model names are `schema.table`",
                printable(s)
            ));
        }
        Ok(name)
    }

    /// The dotted text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The parts, outermost first.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.text.split('.')
    }

    /// The last part (the table).
    pub fn table(&self) -> &str {
        self.text.rsplit('.').next().unwrap_or(&self.text)
    }

    /// The parts of the physical table of version `version`: `schema`, `table__version`.
    pub fn physical_parts(&self, version: &str) -> Vec<String> {
        let mut parts: Vec<String> = self.parts().map(str::to_string).collect();
        if let Some(last) = parts.last_mut() {
            *last = format!("{last}__{version}");
        }
        parts
    }

    /// Everything before the table (`schema` or `catalog.schema`), if any.
    pub fn schema(&self) -> Option<&str> {
        self.text.rsplit_once('.').map(|(s, _)| s)
    }
}

/// A part in normal form: 1 to [`MAX_PART_LEN`] bytes, a lowercase letter or `_`, then
/// lowercase letters, digits and `_`.
fn is_plain(part: &str) -> bool {
    part.len() <= MAX_PART_LEN
        && part
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == b'_')
        && part
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

fn check_part(part: &str, whole: &str) -> Result<String, String> {
    let shown = || printable(whole);
    if part.is_empty() {
        return Err(format!("`{}` has an empty part", shown()));
    }
    if part.len() > MAX_PART_LEN {
        return Err(format!(
            "`{}` has a part longer than {MAX_PART_LEN} characters",
            shown()
        ));
    }
    let lower = part.to_ascii_lowercase();
    if !is_plain(&lower) {
        return Err(format!(
            "`{}` is not a plain identifier: each part must start with a letter or `_` and contain only letters, digits and `_`",
            shown()
        ));
    }
    Ok(lower)
}

/// Escape control characters so a hostile name cannot corrupt the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for ModelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> serde::Deserialize<'de> for ModelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        ModelName::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The name of an environment (see the module invariants).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EnvName(String);

/// The production environment.
pub const PROD: &str = "prod";

/// The longest environment name accepted.
const MAX_ENV_LEN: usize = 64;

impl EnvName {
    /// Normalise (lowercase) and validate a user's environment name.
    pub fn parse(s: &str) -> Result<EnvName, String> {
        let lower = s.to_ascii_lowercase();
        let ok = lower.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && lower
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && lower.len() <= MAX_ENV_LEN;
        if ok {
            Ok(EnvName(lower))
        } else {
            Err(format!(
                "invalid environment name `{}`",
                printable(s).escape_default()
            ))
        }
    }

    /// [`EnvName::parse`] for a name the user typed: an invalid one is a diagnostic with the
    /// rule as its hint.
    pub fn from_user(s: &str) -> crate::error::Result<EnvName> {
        EnvName::parse(s).map_err(|what| {
            crate::error::Error::from(crate::error::Diagnostic::error(what).hint(ENV_NAME_HINT))
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `prod`.
    pub fn prod() -> EnvName {
        EnvName(PROD.to_string())
    }
}

impl PartialEq<str> for EnvName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for EnvName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The hint that goes with an invalid environment name.
const ENV_NAME_HINT: &str =
    "environment names are lowercase letters, digits and `_`, starting with a letter (at most 64)";

/// The id of a physical table, which is also its path below the warehouse root: generation
/// `generation` of version `version` of a model, `schema/table__version[__gN]`.
///
/// Valid by construction (see the module invariants): made by [`TableId::new`] from a model
/// name and a hex version, or read from the state or a plan file through
/// [`TableId::parse`], which refuses anything that could name a path outside the warehouse
/// (either file can be edited outside tidemark).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId(String);

impl TableId {
    /// The table of generation `generation` of version `version` of `name`.
    pub fn new(name: &ModelName, version: &str, generation: u32) -> TableId {
        let path = name.physical_parts(version).join("/");
        if generation == 0 {
            TableId(path)
        } else {
            TableId(format!("{path}__g{generation}"))
        }
    }

    /// An id read from outside: `/`-separated, non-empty parts of ASCII letters, digits and
    /// `_`.
    pub fn parse(id: &str) -> crate::error::Result<TableId> {
        TableId::check(id).map_err(|what| {
            crate::error::Error::from(crate::error::Diagnostic::error(what).hint("the state or the plan file was changed outside tidemark; restore the state (`tidemark state export` / `state import`) or make the plan again"))
        })
    }

    fn check(id: &str) -> Result<TableId, String> {
        let ok = |part: &str| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if id.split('/').all(ok) {
            return Ok(TableId(id.to_string()));
        }
        Err(format!(
            "`{}` is not a tidemark table id: it could name a path outside the warehouse",
            id.escape_default()
        ))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its parts: the directories from the warehouse root to the table.
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// The id of a snapshot: `<model name>@<16 hex digits>` (the hash of its data and metadata
/// fingerprints). Read from the state or a plan file through [`SnapshotId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId(String);

impl SnapshotId {
    /// The snapshot of `name` whose fingerprints hash to `hash`.
    pub fn new(name: &ModelName, hash: &str) -> SnapshotId {
        SnapshotId(format!("{name}@{hash}"))
    }

    /// An id read from outside: a valid model name, `@`, lowercase hex digits.
    pub fn parse(s: &str) -> Result<SnapshotId, String> {
        let ok = s.split_once('@').is_some_and(|(name, hash)| {
            ModelName::parse(name).is_ok_and(|n| n.as_str() == name)
                && !hash.is_empty()
                && hash
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        });
        if ok {
            Ok(SnapshotId(s.to_string()))
        } else {
            Err(format!(
                "`{}` is not a snapshot id",
                printable(s).escape_default()
            ))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id of an apply: `YYYYMMDDTHHMMSSZ-<plan id prefix>-<salt>`. It names the apply's
/// directory in the progress store, so one read from the command line or a file is checked:
/// letters, digits, `-` and `_` only, at most 128 of them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApplyId(String);

impl ApplyId {
    /// A new id: UTC start time, the plan id's prefix, and 4 hex digits from the process id
    /// and the clock (two processes applying one plan in the same second get different ids).
    pub fn new(now: chrono::DateTime<chrono::Utc>, plan_id: &str) -> ApplyId {
        let short: String = plan_id
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(8)
            .collect();
        let salt = blake3::hash(
            format!(
                "{}:{}",
                std::process::id(),
                now.timestamp_nanos_opt().unwrap_or(0)
            )
            .as_bytes(),
        );
        ApplyId(format!(
            "{}-{short}-{}",
            now.format("%Y%m%dT%H%M%SZ"),
            &salt.to_hex()[..4]
        ))
    }

    /// An id read from outside (a flag, a directory name, a file).
    pub fn parse(s: &str) -> Result<ApplyId, String> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(ApplyId(s.to_string()))
        } else {
            Err(format!(
                "`{}` is not an apply id",
                printable(s).escape_default()
            ))
        }
    }

    /// [`ApplyId::parse`] for an id the user typed.
    pub fn from_user(s: &str) -> crate::error::Result<ApplyId> {
        ApplyId::parse(s).map_err(|what| {
            crate::error::Error::from(
                crate::error::Diagnostic::error(what)
                    .hint("`tidemark log` lists the applies with their ids"),
            )
        })
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `Display`, `Deref<Target = str>`, `Borrow<str>` and serde (as a plain string, checked by
/// `$parse` when read) for an identifier that wraps a `String`.
macro_rules! string_id {
    ($t:ident, $parse:path) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $t {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <String as serde::Deserialize>::deserialize(d)?;
                $parse(&text).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(EnvName, EnvName::parse);
string_id!(TableId, TableId::check);
string_id!(SnapshotId, SnapshotId::parse);
string_id!(ApplyId, ApplyId::parse);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_names_are_normalised_and_checked() {
        assert_eq!(EnvName::parse("Dev_2").unwrap().as_str(), "dev_2");
        for bad in ["", "2dev", "../../outside", "a b", "dev;", &"x".repeat(65)] {
            assert!(EnvName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn snapshot_ids_are_a_model_name_and_a_hash() {
        let n = ModelName::parse_model("s.orders").unwrap();
        let id = SnapshotId::new(&n, "0a1b2c3d4e5f6789");
        assert_eq!(id.as_str(), "s.orders@0a1b2c3d4e5f6789");
        assert_eq!(SnapshotId::parse(id.as_str()).unwrap(), id);
        for bad in [
            "",
            "s.orders",
            "s.orders@",
            "S.Orders@0a",
            "s.orders@xyz",
            "../x@0a",
        ] {
            assert!(SnapshotId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn apply_ids_cannot_leave_the_progress_store() {
        let t = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = ApplyId::new(t, "0a1b2c3d4e5f");
        assert!(
            id.as_str().starts_with("20231114T221320Z-0a1b2c3d-"),
            "{id}"
        );
        assert_eq!(ApplyId::parse(id.as_str()).unwrap(), id);
        for bad in ["", "../x", "a/b", "a b", ".", &"x".repeat(129)] {
            assert!(ApplyId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn table_ids_are_paths_inside_the_warehouse() {
        let n = ModelName::parse_model("ledger.daily").unwrap();
        assert_eq!(TableId::new(&n, "0a1b", 0).as_str(), "ledger/daily__0a1b");
        let g2 = TableId::new(&n, "0a1b", 2);
        assert_eq!(g2.as_str(), "ledger/daily__0a1b__g2");
        assert_eq!(TableId::parse(g2.as_str()).unwrap(), g2);
        for bad in ["../x", "a//b", "a/./b", "a/b c", ""] {
            assert!(TableId::parse(bad).is_err(), "{bad:?} accepted");
            let json = serde_json::to_string(bad).unwrap();
            assert!(
                serde_json::from_str::<TableId>(&json).is_err(),
                "{bad:?} read"
            );
        }
    }

    #[test]
    fn valid_names_are_normalized() {
        assert_eq!(
            ModelName::parse_model("Sushi.Orders").unwrap().as_str(),
            "sushi.orders"
        );
        let n = ModelName::parse_model("cat.sushi.orders_2").unwrap();
        assert_eq!(n.table(), "orders_2");
        assert_eq!(n.schema(), Some("cat.sushi"));
        assert_eq!(ModelName::parse("events").unwrap().schema(), None);
    }

    #[test]
    fn hostile_names_are_rejected() {
        for bad in [
            "",
            "a",
            "a..b",
            "../etc.passwd",
            "a/b.c",
            "a.b/c",
            "\"a\".b",
            "a.'b'",
            "a.b\u{0}",
            "a.b\n",
            "a.b.c.d",
            "1a.b",
            "a.b-c",
            "a. b",
            "a.b;drop",
            "é.b",
        ] {
            assert!(ModelName::parse_model(bad).is_err(), "{bad:?} accepted");
        }
        let msg = ModelName::parse_model("a.b\u{1b}[2J").unwrap_err();
        assert!(!msg.contains('\u{1b}'), "{msg}");
    }
}
