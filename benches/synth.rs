//! Synthetic projects for benchmarks: N models in a layered DAG with realistic 20–60 line
//! queries (CTEs, joins, aggregations, window functions), deterministic for a given seed.

use std::io::Write;
use std::path::Path;

/// Facts about a generated project.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// Shortest model file, in lines.
    pub min_lines: usize,
    /// Longest model file, in lines.
    pub max_lines: usize,
    /// Total bytes of model files.
    pub bytes: usize,
}

/// A small deterministic generator (SplitMix64), so no dependency is needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Models per layer.
const LAYER: usize = 40;

fn model_name(i: usize) -> (String, String) {
    (format!("layer_{}", i / LAYER), format!("model_{i:04}"))
}

/// Write a project with `n` models into `dir` (which must exist).
/// Project sizes from the benchmark's command line (`-- 500 20000`), default 1,000 and 10,000.
pub fn sizes_from_args() -> Vec<usize> {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    }
}

/// Generate a project of `n` models into `dir`, deterministic for `seed`.
pub fn generate(dir: &Path, n: usize, seed: u64) -> std::io::Result<Stats> {
    let mut rng = Rng(seed);
    std::fs::write(
        dir.join("tidemark.toml"),
        "[project]\nname = \"synthetic\"\n\n[model_defaults]\nstart = \"2021-01-01\"\n\n[sources.\"raw.events\"]\npath = \"data/events\"\nformat = \"delta\"\n",
    )?;
    let mut stats = Stats {
        min_lines: usize::MAX,
        max_lines: 0,
        bytes: 0,
    };
    for i in 0..n {
        let (schema, table) = model_name(i);
        let layer = i / LAYER;
        let parents: Vec<String> = if layer == 0 {
            vec!["raw.events".to_string()]
        } else {
            let k = 1 + rng.below(3);
            let mut ps: Vec<String> = (0..k)
                .map(|_| {
                    // Mostly the previous layer, sometimes further back.
                    let back = 1 + if rng.below(4) == 0 {
                        rng.below(layer)
                    } else {
                        0
                    };
                    let l = layer.saturating_sub(back).min(layer - 1);
                    let j = l * LAYER + rng.below(LAYER);
                    let (s, t) = model_name(j);
                    format!("{s}.{t}")
                })
                .collect();
            ps.sort();
            ps.dedup();
            ps
        };
        let text = model_sql(&schema, &table, i, &parents, &mut rng);
        let lines = text.lines().count();
        stats.min_lines = stats.min_lines.min(lines);
        stats.max_lines = stats.max_lines.max(lines);
        stats.bytes += text.len();
        let d = dir.join("models").join(&schema);
        std::fs::create_dir_all(&d)?;
        std::fs::File::create(d.join(format!("{table}.sql")))?.write_all(text.as_bytes())?;
    }
    Ok(stats)
}

fn model_sql(schema: &str, table: &str, i: usize, parents: &[String], rng: &mut Rng) -> String {
    let kind = match rng.below(10) {
        0 => "FULL".to_string(),
        1 => "VIEW".to_string(),
        _ => format!(
            "INCREMENTAL_BY_TIME_RANGE (time_column event_date, batch_size {})",
            7 + rng.below(30)
        ),
    };
    let incremental = kind.starts_with("INCREMENTAL");
    let window = if incremental {
        "\n    AND a.event_date BETWEEN @start_date AND @end_date"
    } else {
        ""
    };
    let mut s = format!(
        "-- Synthetic model {i}.\nMODEL (\n  name {schema}.{table},\n  kind {kind},\n  cron '@daily',\n  owner 'team_{}',\n  grain (event_date, key_id),\n  tags (synthetic, layer_{}),\n  audits (not_null(columns := (key_id, event_date)))\n);\n\n",
        i % 7,
        i / LAYER
    );
    s.push_str(&format!(
        "WITH base AS (\n  SELECT\n    a.event_date,\n    a.key_id,\n    a.amount * {} AS amount,\n    a.metric\n  FROM {} AS a\n  WHERE a.amount IS NOT NULL{window}\n)",
        1 + rng.below(5),
        parents[0]
    ));
    for (k, p) in parents.iter().enumerate().skip(1) {
        s.push_str(&format!(
            ",\njoined_{k} AS (\n  SELECT\n    b.event_date,\n    b.key_id,\n    b.amount + COALESCE(p.amount, 0) AS amount,\n    GREATEST(b.metric, p.metric) AS metric\n  FROM {} AS b\n  LEFT JOIN {p} AS p\n    ON p.key_id = b.key_id AND p.event_date = b.event_date\n)",
            if k == 1 { "base".to_string() } else { format!("joined_{}", k - 1) }
        ));
    }
    let last = if parents.len() > 1 {
        format!("joined_{}", parents.len() - 1)
    } else {
        "base".to_string()
    };
    let extra = rng.below(4);
    s.push_str(&format!(
        ",\nranked AS (\n  SELECT\n    r.*,\n    ROW_NUMBER() OVER (PARTITION BY r.event_date ORDER BY r.amount DESC, r.key_id) AS rn\n  FROM {last} AS r\n)\nSELECT\n  event_date,\n  key_id % {} AS key_id,\n  SUM(amount) AS amount,\n  MAX(metric) AS metric,\n  COUNT(*) AS n",
        1000 + i
    ));
    for e in 0..extra {
        s.push_str(&format!(
            ",\n  SUM(CASE WHEN rn <= {} THEN amount ELSE 0 END) AS top_{e}",
            10 * (e + 1)
        ));
    }
    s.push_str(&format!(
        "\nFROM ranked\nWHERE rn <= {}\nGROUP BY event_date, key_id % {}\n",
        100 + rng.below(900),
        1000 + i
    ));
    s
}
