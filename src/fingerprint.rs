//! Fingerprints: what identifies a model's data and its metadata.
//!
//! Every node gets three blake3 hashes (hex):
//! - **definition**: what in the model's *own* definition changes its rows — the canonical query,
//!   the kind and its data properties, the interval unit of incremental models, `partitioned_by`,
//!   a seed's file contents; for a source, its path, format and declared columns;
//! - **data**: the definition plus the names and data hashes of all parents, so a change cascades
//!   to every descendant;
//! - **metadata**: everything else that describes the model without changing its rows.
//!
//! The model's **version**, which names its physical table, is the first 16 hex digits of the
//! data hash. The exact assignment of each property is documented in `docs/fingerprints.md`.
//!
//! Invariants:
//! - Hash inputs are an explicit, versioned byte layout (tagged, length-prefixed fields in a fixed
//!   order), never a `Hash`/`Debug` derive, so fingerprints are stable across builds.
//! - Nothing machine-specific is hashed (no absolute paths, no timestamps of files), so every
//!   clone of a project computes the same fingerprints.
//! - Formatting-only edits (whitespace, comments, keyword case, a trailing semicolon, header
//!   property order) change no hash of the model or of any descendant, because only parsed,
//!   canonical values are hashed.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::dag::Dag;
use crate::project::{Kind, Model, ModelName, Project, Source};

/// Bumped whenever the layout below changes (which changes every fingerprint).
const LAYOUT: &str = "tidemark.fingerprint.v1";

/// Length of a version string.
pub const VERSION_LEN: usize = 16;

/// The fingerprints of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fingerprint {
    /// Hash of the node's own data-relevant definition.
    pub definition: String,
    /// Hash of the definition and every parent's data hash.
    pub data: String,
    /// Hash of the metadata.
    pub metadata: String,
    /// Physical version: a prefix of `data`.
    pub version: String,
}

/// Tagged, length-prefixed fields into blake3.
struct H(blake3::Hasher);

impl H {
    fn new(domain: &str) -> H {
        let mut h = H(blake3::Hasher::new());
        h.field("layout", LAYOUT);
        h.field("domain", domain);
        h
    }

    fn field(&mut self, tag: &str, value: &str) {
        self.0.update(&(tag.len() as u64).to_le_bytes());
        self.0.update(tag.as_bytes());
        self.0.update(&(value.len() as u64).to_le_bytes());
        self.0.update(value.as_bytes());
    }

    fn opt(&mut self, tag: &str, value: Option<&str>) {
        match value {
            Some(v) => self.field(tag, v),
            None => self.field(&format!("{tag}:none"), ""),
        }
    }

    fn list<'a>(&mut self, tag: &str, values: impl IntoIterator<Item = &'a str>) {
        let values: Vec<&str> = values.into_iter().collect();
        self.field(tag, &values.len().to_string());
        for v in values {
            self.field(tag, v);
        }
    }

    fn finish(self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

/// The definition hash of a model.
pub fn model_definition(m: &Model) -> String {
    let mut h = H::new("model.definition");
    // The same text means something else on another engine; DataFusion's adds nothing, so the
    // fingerprints of DataFusion projects are unchanged.
    if m.dialect != crate::sql::Dialect::DataFusion {
        h.field("dialect", "spark");
    }
    h.field("kind", m.kind.name());
    match &m.kind {
        Kind::IncrementalByTimeRange {
            time_column,
            format,
            lookback,
            ..
        } => {
            h.field("time_column", time_column);
            h.opt("format", format.as_deref());
            h.field("lookback", &lookback.to_string());
            h.field("interval_unit", m.schedule.unit().as_str());
        }
        Kind::IncrementalByUniqueKey { unique_key, .. } => {
            h.list("unique_key", unique_key.iter().map(String::as_str));
            h.field("interval_unit", m.schedule.unit().as_str());
        }
        Kind::Seed { .. } => h.opt("seed_content", m.seed_hash.as_deref()),
        Kind::Full | Kind::View | Kind::Embedded => {}
    }
    h.list(
        "partitioned_by",
        m.partitioned_by.iter().map(String::as_str),
    );
    // Declared columns fix the table's schema. Absent ones leave the hash as it was before
    // the property existed, so upgrading tidemark changes no fingerprint.
    if !m.columns.is_empty() {
        h.list(
            "columns",
            m.columns.iter().flat_map(|(c, t)| [c.as_str(), t.as_str()]),
        );
    }
    h.field("query", &m.canonical_sql);
    // Only when set (see `columns`).
    if let Some(stamp) = &m.stamp {
        h.field("stamp", stamp);
    }
    h.finish()
}

/// The metadata hash of a model.
pub fn model_metadata(m: &Model) -> String {
    let mut h = H::new("model.metadata");
    h.field("cron", m.schedule.expr());
    match &m.start_text {
        Some(relative) => h.field("start", relative),
        None => h.opt("start", m.start.map(crate::interval::format_ts).as_deref()),
    }
    h.opt("end", m.end.map(crate::interval::format_ts).as_deref());
    h.opt("owner", m.owner.as_deref());
    h.opt("description", m.description.as_deref());
    h.field(
        "column_descriptions",
        &m.column_descriptions.len().to_string(),
    );
    for (k, v) in &m.column_descriptions {
        h.field("column", k);
        h.field("column_description", v);
    }
    h.list("tags", m.tags.iter().map(String::as_str));
    h.list("grain", m.grain.iter().map(String::as_str));
    h.field("audits", &m.audits.len().to_string());
    for a in &m.audits {
        h.field("audit", &a.name);
        h.field("blocking", if a.blocking { "true" } else { "false" });
        for (k, v) in &a.args {
            h.field("arg", k);
            h.field("value", v);
        }
    }
    // Only when declared, so that upgrading tidemark changes no fingerprint.
    if let Some(d) = &m.declared_dialect {
        h.field("dialect", d);
    }
    for (k, v) in &m.metadata {
        h.field("property", k);
        h.field("value", v);
    }
    if !m.gates.is_empty() {
        let gates: Vec<String> = m.gates.iter().map(|g| g.text()).collect();
        h.list("gates", gates.iter().map(String::as_str));
    }
    h.field(
        "forward_only",
        if m.forward_only { "true" } else { "false" },
    );
    h.field(
        "allow_partials",
        if m.allow_partials { "true" } else { "false" },
    );
    let (batch_size, batch_concurrency) = match &m.kind {
        Kind::IncrementalByTimeRange {
            batch_size,
            batch_concurrency,
            ..
        } => (*batch_size, *batch_concurrency),
        Kind::IncrementalByUniqueKey { batch_size, .. } => (*batch_size, None),
        _ => (None, None),
    };
    h.opt("batch_size", batch_size.map(|n| n.to_string()).as_deref());
    h.opt(
        "batch_concurrency",
        batch_concurrency.map(|n| n.to_string()).as_deref(),
    );
    h.list("depends_on", m.depends_on.iter().map(|(n, _)| n.as_str()));
    h.finish()
}

/// The definition hash of a source.
pub fn source_definition(s: &Source) -> String {
    let mut h = H::new("source.definition");
    // As written, not resolved: the same project checked out elsewhere has the same fingerprints.
    h.field("path", &s.declared_path);
    h.field("format", s.format.as_str());
    h.field("columns", &s.columns.len().to_string());
    for (k, v) in &s.columns {
        h.field("column", k);
        h.field("type", v);
    }
    h.finish()
}

/// The data hash of a node: its definition hash plus each parent's name and data hash, parents
/// in name order. Plans use it to recompute the hash of a deployed definition under new parents.
pub fn data_hash(definition: &str, parents: &[(&ModelName, Option<&str>)]) -> String {
    let mut sorted: Vec<&(&ModelName, Option<&str>)> = parents.iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let mut h = H::new("data");
    h.field("definition", definition);
    for (p, d) in sorted {
        h.field("parent", p.as_str());
        h.opt("parent_data", *d);
    }
    h.finish()
}

/// The definition and metadata hashes of each of `names` (`None`: neither model nor source),
/// one thread per core, in order.
fn own_hashes(project: &Project, names: &[ModelName]) -> Vec<Option<(String, String)>> {
    let own = |name: &ModelName| match (project.models.get(name), project.config.sources.get(name))
    {
        (Some(m), _) => Some((model_definition(m), model_metadata(m))),
        (None, Some(s)) => Some((source_definition(s), H::new("source.metadata").finish())),
        (None, None) => None,
    };
    // A node whose thread panicked is hashed again here, so the panic surfaces on this thread.
    crate::project::in_parallel(names, own)
        .into_iter()
        .zip(names)
        .map(|(r, name)| r.unwrap_or_else(|| own(name)))
        .collect()
}

/// Fingerprint every node of the project, parents first.
pub fn fingerprint_all(project: &Project, dag: &Dag) -> BTreeMap<ModelName, Fingerprint> {
    let order = dag.order();
    // A node's own hashes do not depend on other nodes': computed in parallel, then the data
    // hashes in topological order.
    let own = own_hashes(project, order);
    let mut out: BTreeMap<ModelName, Fingerprint> = BTreeMap::new();
    for (name, own) in order.iter().zip(own) {
        let Some((definition, metadata)) = own else {
            continue;
        };
        let names = dag.parents(name);
        let parents: Vec<(&ModelName, Option<&str>)> = names
            .iter()
            .map(|p| (p, out.get(p).map(|f| f.data.as_str())))
            .collect();
        let data = data_hash(&definition, &parents);
        let version = data[..VERSION_LEN].to_string();
        out.insert(
            name.clone(),
            Fingerprint {
                definition,
                data,
                metadata,
                version,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::config::ModelDefaults;
    use crate::project::model::{Loaded, build};
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    use proptest::prelude::*;
    use std::path::Path;

    /// Realistic queries covering CTEs, joins, subqueries, set operations, windows, literals.
    const QUERIES: [&str; 6] = [
        "SELECT o.id, o.ds, SUM(o.amount) AS total FROM s.orders AS o WHERE o.ds BETWEEN @start_ds AND @end_ds AND o.status = 'paid' GROUP BY o.id, o.ds",
        "WITH a AS (SELECT id, ds, amount * 1.5 AS x FROM s.orders WHERE ds >= @start_date), b AS (SELECT id, MAX(x) AS m FROM a GROUP BY id) SELECT a.id, a.ds, b.m FROM a JOIN b ON a.id = b.id WHERE b.m > 10",
        "SELECT id, ds, ROW_NUMBER() OVER (PARTITION BY ds ORDER BY amount DESC, id) AS rn FROM s.orders WHERE ds BETWEEN @start_ds AND @end_ds",
        "SELECT id, ds FROM s.orders WHERE id IN (SELECT id FROM s.refunds WHERE reason <> 'fraud') AND ds < @end_ds UNION ALL SELECT id, ds FROM s.archive WHERE ds >= @start_ds",
        "SELECT ds, CASE WHEN amount > 100 THEN 'big' WHEN amount > 10 THEN 'mid' ELSE 'small' END AS bucket, COALESCE(note, '') AS note FROM s.orders WHERE ds = @start_ds LIMIT 1000",
        "SELECT DISTINCT o.ds, c.region FROM s.orders AS o LEFT JOIN s.customers AS c ON c.id = o.customer_id AND c.active WHERE o.ds BETWEEN @start_ds AND @end_ds ORDER BY 1, 2",
    ];

    const HEADER: &str = "MODEL (name s.m, kind INCREMENTAL_BY_TIME_RANGE (time_column ds));\n";

    fn definition_of(sql: &str) -> String {
        let text = format!("{HEADER}{sql}");
        match build(
            Path::new("/"),
            Path::new("models/s/m.sql"),
            &text,
            &ModelDefaults::default(),
            crate::sql::Dialect::DataFusion,
        ) {
            Loaded::Model(m, _) => model_definition(&m),
            Loaded::Failed(d) => panic!(
                "{sql}\n{}",
                d.iter().map(ToString::to_string).collect::<String>()
            ),
            Loaded::Disabled(_) => panic!("disabled"),
        }
    }

    /// Re-emit the tokens of `sql` with the given separators, comments and letter case.
    fn reformat(sql: &str, seps: &[u8], case: &[bool], semicolon: bool) -> String {
        let tokens = Tokenizer::new(&crate::sql::DIALECT, sql)
            .tokenize()
            .unwrap();
        let mut out = String::new();
        let mut i = 0;
        for t in tokens {
            let text = match &t {
                Token::Whitespace(_) => continue,
                // Unquoted words (keywords and identifiers) are case-insensitive.
                Token::Word(w) if w.quote_style.is_none() => {
                    if case[i % case.len()] {
                        w.value.to_uppercase()
                    } else {
                        w.value.to_lowercase()
                    }
                }
                other => other.to_string(),
            };
            out.push_str(match seps[i % seps.len()] % 6 {
                0 => " ",
                1 => "\n",
                2 => "\t  ",
                3 => " /* reviewed */ ",
                4 => " -- note\n",
                _ => "\n\n   ",
            });
            out.push_str(&text);
            i += 1;
        }
        if semicolon {
            out.push_str(" ;\n");
        }
        out
    }

    /// A change of meaning: a different literal, identifier or operator.
    fn mutate(sql: &str, which: usize) -> Option<String> {
        let tokens = Tokenizer::new(&crate::sql::DIALECT, sql)
            .tokenize()
            .unwrap();
        let candidates: Vec<usize> = tokens
            .iter()
            .enumerate()
            .filter(|(_, t)| match t {
                Token::Number(..)
                | Token::SingleQuotedString(_)
                | Token::Gt
                | Token::Lt
                | Token::GtEq
                | Token::LtEq => true,
                Token::Word(w) => {
                    w.keyword == datafusion::sql::sqlparser::keywords::Keyword::NoKeyword
                        && !w.value.starts_with('@')
                }
                _ => false,
            })
            .map(|(i, _)| i)
            .collect();
        let pick = *candidates.get(which % candidates.len().max(1))?;
        let out: String = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if i != pick {
                    return t.to_string();
                }
                match t {
                    Token::Number(n, _) => format!("{n}7"),
                    Token::SingleQuotedString(s) => format!("'{s}x'"),
                    Token::Gt => "<".into(),
                    Token::Lt => ">".into(),
                    Token::GtEq => "<=".into(),
                    Token::LtEq => ">=".into(),
                    Token::Word(w) => format!("{}_x", w.value),
                    other => other.to_string(),
                }
            })
            .collect();
        Some(out)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        #[test]
        fn formatting_never_changes_the_fingerprint(
            q in 0..QUERIES.len(),
            seps in prop::collection::vec(any::<u8>(), 1..16),
            case in prop::collection::vec(any::<bool>(), 1..16),
            semicolon in any::<bool>(),
        ) {
            let sql = QUERIES[q];
            prop_assert_eq!(definition_of(sql), definition_of(&reformat(sql, &seps, &case, semicolon)));
        }

        #[test]
        fn a_change_of_meaning_always_changes_the_fingerprint(q in 0..QUERIES.len(), which in 0usize..64) {
            let sql = QUERIES[q];
            let mutated = mutate(sql, which).unwrap();
            // Mutations may make a column disappear from the projection; only compare when the
            // mutated model still loads.
            let text = format!("{HEADER}{mutated}");
            if let Loaded::Model(m, _) = build(Path::new("/"), Path::new("models/s/m.sql"), &text, &ModelDefaults::default(), crate::sql::Dialect::DataFusion) {
                prop_assert_ne!(definition_of(sql), model_definition(&m), "{}", mutated);
            }
        }
    }

    #[test]
    fn fingerprints_are_stable_across_builds() {
        // A fixed input must keep its fingerprint forever (unless LAYOUT is bumped): changing it
        // would make every user's tables look modified.
        assert_eq!(
            definition_of("SELECT 1 AS ds"),
            definition_of("select 1 as DS;"),
        );
        insta::assert_snapshot!(definition_of("SELECT @start_ds AS ds"), @"e3cd2cf6ce600818168a3b9c5cfb723ab21c5193b25417413a15c1705af13c9b");
    }

    #[test]
    fn the_same_query_on_another_engine_is_another_definition() {
        const SQL: &str = "SELECT ds FROM raw.e WHERE ds BETWEEN @start_ds AND @end_ds";
        let text = format!("{HEADER}{SQL}");
        let def = |dialect| match build(
            Path::new("/"),
            Path::new("models/s/m.sql"),
            &text,
            &ModelDefaults::default(),
            dialect,
        ) {
            Loaded::Model(m, _) => model_definition(&m),
            _ => panic!("not a model"),
        };
        assert_ne!(
            def(crate::sql::Dialect::DataFusion),
            def(crate::sql::Dialect::Spark)
        );
        assert_eq!(def(crate::sql::Dialect::DataFusion), definition_of(SQL));
    }
}
