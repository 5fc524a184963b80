//! A `tidemark.toml` from a SQLMesh project's configuration (`config.yaml` and its external
//! models), and the files of a new project (`tidemark init`). Pure: text in, text out.
//!
//! Invariants:
//! - Everything the SQLMesh configuration says that is not mapped is listed, by key, in
//!   `unmapped`; nothing is dropped silently.
//! - The TOML written is valid (values go through the `toml` serializer) and, once the user
//!   sets the sources' `path` and `format`, loads.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

/// What the import produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The `tidemark.toml` text.
    pub toml: String,
    /// Keys of the SQLMesh configuration that were not mapped, with why.
    pub unmapped: Vec<String>,
    /// External models written as sources whose `path` and `format` the user must set.
    pub sources: Vec<String>,
}

/// Map `config.yaml` (and the external models files' texts) to a `tidemark.toml` for project
/// `name`.
pub fn from_sqlmesh(
    name: &str,
    config_yaml: &str,
    external_models: &[(&str, &str)],
) -> Result<Imported, String> {
    use serde_norway::Value;
    let cfg: Value =
        serde_norway::from_str(config_yaml).map_err(|e| format!("config.yaml: {e}"))?;
    let mut unmapped = Vec::new();
    let mut defaults = toml::Table::new();
    let mut variables = toml::Table::new();
    if let Value::Mapping(top) = &cfg {
        for (k, v) in top {
            let key = k.as_str().unwrap_or_default();
            match key {
                "model_defaults" => {
                    if let Value::Mapping(m) = v {
                        for (dk, dv) in m {
                            let dk = dk.as_str().unwrap_or_default();
                            match (dk, scalar(dv)) {
                                ("dialect" | "start" | "cron" | "owner", Some(t)) => {
                                    defaults.insert(dk.into(), toml::Value::String(t));
                                }
                                _ => unmapped.push(format!(
                                    "model_defaults.{dk}: tidemark's model defaults are dialect, start, cron and owner"
                                )),
                            }
                        }
                    }
                }
                "variables" => variables_of("variables", v, &mut variables, &mut unmapped),
                "gateways" | "default_gateway" | "default_connection" | "state_connection" => {
                    unmapped.push(format!(
                        "{key}: connections are not mapped; set `[project] warehouse` (a directory or an object-store URL) and `[engine]`"
                    ))
                }
                "project" => {}
                other => unmapped.push(format!("{other}: no tidemark equivalent")),
            }
        }
    }
    // The default gateway's variables override the global ones, as in SQLMesh (tidemark has one
    // engine, so one gateway's values).
    if let Some(Value::Mapping(gateways)) = cfg.get("gateways") {
        let chosen = cfg
            .get("default_gateway")
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| {
                gateways
                    .keys()
                    .next()
                    .and_then(Value::as_str)
                    .map(str::to_string)
            });
        if let Some(name) = chosen
            && let Some(vars) = gateways.get(name.as_str()).and_then(|g| g.get("variables"))
        {
            let mut gateway = toml::Table::new();
            variables_of(
                &format!("gateways.{name}.variables"),
                vars,
                &mut gateway,
                &mut unmapped,
            );
            variables.extend(gateway);
        }
        for (g, conf) in gateways {
            let g = g.as_str().unwrap_or_default();
            if conf.get("variables").is_some()
                && cfg
                    .get("default_gateway")
                    .and_then(Value::as_str)
                    .is_some_and(|d| d != g)
            {
                unmapped.push(format!("gateways.{g}.variables: only the default gateway's variables are used (tidemark has one engine)"));
            }
        }
    }
    let mut sources = toml::Table::new();
    let mut names = Vec::new();
    for (file, text) in external_models {
        let v: Value = serde_norway::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let Value::Sequence(models) = v else {
            unmapped.push(format!("{file}: expected a list of external models"));
            continue;
        };
        for m in models {
            let Some(n) = m.get("name").and_then(Value::as_str) else {
                unmapped.push(format!("{file}: an external model without a name"));
                continue;
            };
            let n = n.replace(['"', '`'], "");
            let mut source = toml::Table::new();
            source.insert("path".into(), toml::Value::String(String::new()));
            source.insert("format".into(), toml::Value::String("parquet".into()));
            if let Some(Value::Mapping(cols)) = m.get("columns") {
                let mut c = toml::Table::new();
                for (ck, cv) in cols {
                    if let (Some(ck), Some(cv)) = (ck.as_str(), scalar(cv)) {
                        c.insert(ck.to_string(), toml::Value::String(cv));
                    }
                }
                source.insert("columns".into(), toml::Value::Table(c));
            }
            names.push(n.clone());
            sources.insert(n, toml::Value::Table(source));
        }
    }
    let mut doc = toml::Table::new();
    let mut project = toml::Table::new();
    project.insert("name".into(), toml::Value::String(name.to_string()));
    project.insert("models".into(), toml::Value::String("models".into()));
    project.insert("warehouse".into(), toml::Value::String("warehouse".into()));
    doc.insert("project".into(), toml::Value::Table(project));
    if !defaults.is_empty() {
        doc.insert("model_defaults".into(), toml::Value::Table(defaults));
    }
    if !variables.is_empty() {
        doc.insert("variables".into(), toml::Value::Table(variables));
    }
    if !sources.is_empty() {
        doc.insert("sources".into(), toml::Value::Table(sources));
    }
    let body = toml::to_string(&doc).map_err(|e| format!("writing tidemark.toml: {e}"))?;
    let mut text = String::from(
        "# Written by `tidemark init --from-sqlmesh` from config.yaml (see docs/sqlmesh.md).\n",
    );
    if !names.is_empty() {
        text.push_str("# Set each source's `path` (where its data lives) and `format` (delta, parquet, csv).\n");
    }
    text.push('\n');
    text.push_str(&body);
    Ok(Imported {
        toml: text,
        unmapped,
        sources: names,
    })
}

fn scalar(v: &serde_norway::Value) -> Option<String> {
    use serde_norway::Value;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The files of a new project named `name` (relative path → content): a seed of events over
/// the week before `now`, an incremental daily model over it, a FULL model over that.
pub fn scaffold(name: &str, now: DateTime<Utc>) -> BTreeMap<&'static str, String> {
    let day = |d: i64| (now - Duration::days(d)).format("%Y-%m-%d").to_string();
    let mut events = String::from("event_id,user_id,event_date,amount\n");
    for i in 0..14i64 {
        events.push_str(&format!(
            "{},{},{},{}\n",
            i + 1,
            i % 3 + 1,
            day(7 - i / 2),
            (i * 7) % 20 + 5
        ));
    }
    BTreeMap::from([
        (
            "tidemark.toml",
            format!(
                "[project]\nname = \"{name}\"\nmodels = \"models\"\nwarehouse = \"warehouse\"\n\n[model_defaults]\nstart = \"{}\"\ncron = \"@daily\"\n",
                day(7)
            ),
        ),
        (".gitignore", "warehouse/\n.tidemark/\n".to_string()),
        ("seeds/events.csv", events),
        (
            "models/demo/events.sql",
            "MODEL (\n  name demo.events,\n  kind SEED (path '../../seeds/events.csv'),\n  columns (event_id BIGINT, user_id BIGINT, event_date DATE, amount DOUBLE),\n  grain event_id\n);\n".to_string(),
        ),
        (
            "models/demo/daily_amounts.sql",
            "MODEL (\n  name demo.daily_amounts,\n  kind INCREMENTAL_BY_TIME_RANGE (time_column event_date),\n  grain (event_date, user_id),\n  audits (not_null(columns := (event_date, user_id)))\n);\nSELECT\n  event_date,\n  user_id,\n  COUNT(*) AS events,\n  SUM(amount) AS amount\nFROM demo.events\nWHERE event_date BETWEEN @start_date AND @end_date\nGROUP BY event_date, user_id\n".to_string(),
        ),
        (
            "models/demo/user_totals.sql",
            "MODEL (\n  name demo.user_totals,\n  kind FULL,\n  grain user_id\n);\nSELECT user_id, SUM(events) AS events, SUM(amount) AS amount\nFROM demo.daily_amounts\nGROUP BY user_id\n".to_string(),
        ),
    ])
}

/// SQLMesh `variables` (at `key`) into `out`: strings, numbers and booleans; anything else is
/// listed in `unmapped`.
fn variables_of(
    key: &str,
    v: &serde_norway::Value,
    out: &mut toml::Table,
    unmapped: &mut Vec<String>,
) {
    use serde_norway::Value;
    let Value::Mapping(m) = v else {
        unmapped.push(format!("{key}: expected a mapping of names to values"));
        return;
    };
    for (vk, vv) in m {
        let vk = vk.as_str().unwrap_or_default().to_string();
        let value = match vv {
            Value::Bool(b) => Some(toml::Value::Boolean(*b)),
            Value::Number(n) if n.is_i64() => n.as_i64().map(toml::Value::Integer),
            Value::Number(n) => n.as_f64().map(toml::Value::Float),
            Value::String(s) => Some(toml::Value::String(s.clone())),
            _ => None,
        };
        match value {
            Some(v) => {
                out.insert(vk, v);
            }
            None => unmapped.push(format!(
                "{key}.{vk}: only strings, numbers and booleans are variables here"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlmesh_configuration_is_mapped_and_the_rest_listed() {
        let i = from_sqlmesh(
            "shop",
            "gateways:\n  duckdb:\n    connection:\n      type: duckdb\n    variables:\n      region: us\n  other:\n    variables:\n      region: ap\ndefault_gateway: duckdb\nmodel_defaults:\n  dialect: duckdb\n  start: 2024-01-01\n  kind: FULL\nvariables:\n  region: eu\n  limit: 5\n  nested: {a: 1}\n",
            &[("external_models.yaml", "- name: raw.orders\n  columns:\n    id: int\n    ds: date\n")],
        )
        .unwrap();
        let t: toml::Table = i.toml.parse().unwrap();
        assert_eq!(t["model_defaults"]["dialect"].as_str(), Some("duckdb"));
        assert_eq!(t["model_defaults"]["start"].as_str(), Some("2024-01-01"));
        assert_eq!(t["variables"]["limit"].as_integer(), Some(5));
        // The default gateway's variables win over the global ones; another gateway's are listed.
        assert_eq!(t["variables"]["region"].as_str(), Some("us"));
        assert!(
            i.unmapped
                .iter()
                .any(|u| u.starts_with("gateways.other.variables"))
        );
        assert_eq!(
            t["sources"]["raw.orders"]["columns"]["ds"].as_str(),
            Some("date")
        );
        assert_eq!(i.sources, ["raw.orders"]);
        assert!(i.unmapped.iter().any(|u| u.starts_with("gateways")));
        assert!(
            i.unmapped
                .iter()
                .any(|u| u.starts_with("model_defaults.kind"))
        );
        assert!(i.unmapped.iter().any(|u| u.starts_with("variables.nested")));
    }
}
