//! `plan` scenarios on fixtures/projects/plan: a project deployed to prod (the state written
//! through the library exactly as a completed apply would), then edited, then planned.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tidemark::interval::parse_instant;
use tidemark::plan::{Options, build, completed_actions};
use tidemark::state::StateStore;

use crate::common::{copy_project, fail_with, fixture, succeed, tidemark};

const T0: &str = "2024-01-08";

/// Plan `env` at `exec` and record it in the state as fully applied.
pub fn deploy(dir: &Path, env: &str, exec: &str) {
    let project = tidemark::project::Project::load(&dir.join("tidemark.toml")).unwrap();
    let dag = tidemark::dag::Dag::build(&project).unwrap();
    let fps = tidemark::fingerprint::fingerprint_all(&project, &dag);
    let store = StateStore::open(&project.config.warehouse).unwrap();
    let state = store.read().unwrap();
    let at = parse_instant(exec).unwrap().at;
    let plan = build(
        &project,
        &fps,
        &state,
        &Options::new(&tidemark::names::EnvName::parse(env).unwrap(), at),
    )
    .unwrap();
    store
        .transact("test deploy", |s| {
            completed_actions(&plan, s, at, &Default::default(), &Default::default())
        })
        .unwrap();
}

fn deployed() -> (tempfile::TempDir, std::path::PathBuf) {
    let (tmp, dir) = copy_project(&fixture("projects/plan"));
    deploy(&dir, "prod", T0);
    (tmp, dir)
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

fn plan_json(dir: &Path, extra: &[&str]) -> Value {
    let mut args = vec!["--execution-time", T0, "plan", "--format", "json"];
    args.extend_from_slice(extra);
    let run = succeed(dir, &args);
    serde_json::from_str(&run.stdout).unwrap()
}

/// name → "change/category: windows (partitions)" for every affected model.
fn outline(plan: &Value) -> BTreeMap<String, String> {
    plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let cat = m["category"].as_str().unwrap_or("-");
            let backfill = match &m["backfill"] {
                Value::Null => "none".to_string(),
                b => {
                    let ws: Vec<String> = b["intervals"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| {
                            format!(
                                "[{}, {})",
                                i["start"].as_str().unwrap(),
                                i["end"].as_str().unwrap()
                            )
                        })
                        .collect();
                    format!(
                        "{} {} ({} partitions)",
                        b["action"].as_str().unwrap(),
                        ws.join(" "),
                        b["partitions"]
                    )
                }
            };
            let restated = if m["restated"] == Value::Bool(true) {
                " restated"
            } else {
                ""
            };
            (
                m["name"].as_str().unwrap().to_string(),
                format!(
                    "{}/{cat}{restated}: {backfill}",
                    m["change"].as_str().unwrap()
                ),
            )
        })
        .collect()
}

fn line(plan: &Value, name: &str) -> String {
    outline(plan)
        .get(name)
        .cloned()
        .unwrap_or_else(|| "unaffected".into())
}

#[test]
fn first_plan_adds_everything_with_exact_intervals() {
    let (_t, dir) = copy_project(&fixture("projects/plan"));
    let plan = plan_json(&dir, &[]);
    assert_eq!(plan["format"], "tidemark.plan/v1");
    assert_eq!(plan["new_environment"], true);
    assert_eq!(
        line(&plan, "raw.events"),
        "added/-: compute [2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z) (168 partitions)"
    );
    assert_eq!(
        line(&plan, "core.users"),
        "added/-: full_refresh [2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z) (1 partitions)"
    );
    assert_eq!(
        line(&plan, "mart.user_names"),
        "added/-: recreate_view  (0 partitions)"
    );
    assert_eq!(plan["summary"]["added"], 8);
    assert_eq!(plan["summary"]["partitions"], 168 * 2 + 7 * 3 + 2);
    // Nothing was written: planning twice gives the identical plan.
    assert_eq!(plan, plan_json(&dir, &[]));
    assert!(!dir.join("warehouse").exists());
}

#[test]
fn no_changes_nothing_to_do_and_check_exits_zero() {
    let (_t, dir) = deployed();
    let plan = plan_json(&dir, &[]);
    assert!(outline(&plan).is_empty(), "{:?}", outline(&plan));
    let run = tidemark(&dir, &["--execution-time", T0, "plan", "--check"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    assert!(run.stdout.contains("No changes"), "{}", run.stdout);
}

#[test]
fn formatting_only_edit_is_no_change() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/daily_events.sql",
        "SELECT\n  user_id,",
        "-- reformatted\nselect   user_id ,",
    );
    edit(
        &dir,
        "models/core/daily_events.sql",
        "GROUP BY user_id, CAST(event_ts AS DATE)",
        "group by user_id,\n  cast(event_ts as date);",
    );
    assert!(outline(&plan_json(&dir, &[])).is_empty());
}

#[test]
fn breaking_change_rebuilds_all_descendants() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/daily_events.sql",
        "WHERE event_ts",
        "WHERE amount > 0 AND event_ts",
    );
    let plan = plan_json(&dir, &[]);
    let o = outline(&plan);
    let full = "[2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z)";
    assert_eq!(
        o["core.daily_events"],
        format!("directly_modified/breaking: compute {full} (7 partitions)")
    );
    assert_eq!(
        o["mart.hourly_stats"],
        format!("indirectly_modified/indirect_breaking: compute {full} (168 partitions)")
    );
    assert_eq!(
        o["mart.daily_stats"],
        format!("indirectly_modified/indirect_breaking: compute {full} (7 partitions)")
    );
    assert_eq!(
        o["mart.user_events"],
        format!("indirectly_modified/indirect_breaking: compute {full} (7 partitions)")
    );
    assert_eq!(
        o["mart.stats_total"],
        format!("indirectly_modified/indirect_breaking: full_refresh {full} (1 partitions)")
    );
    assert_eq!(o.len(), 5, "{o:?}");
    let m = &plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "core.daily_events")
        .unwrap();
    assert!(
        m["diff"].as_str().unwrap().contains("amount > 0 AND"),
        "{}",
        m["diff"]
    );
    assert_ne!(m["version"], m["previous_version"]);
    let run = tidemark(&dir, &["--execution-time", T0, "plan", "--check"]);
    assert_eq!(run.code, 1);
}

#[test]
fn non_breaking_change_leaves_children_alone() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/users.sql",
        "v.name\n",
        "v.name, UPPER(v.name) AS shout\n",
    );
    let plan = plan_json(&dir, &[]);
    let o = outline(&plan);
    assert_eq!(
        o["core.users"],
        "directly_modified/non_breaking: full_refresh [2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z) (1 partitions)"
    );
    assert_eq!(
        o["mart.user_events"],
        "indirectly_modified/indirect_non_breaking: none"
    );
    // A view over the changed table is re-created, its data untouched.
    assert_eq!(
        o["mart.user_names"],
        "indirectly_modified/indirect_non_breaking: recreate_view  (0 partitions)"
    );
    let ue = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mart.user_events")
        .unwrap();
    assert_eq!(ue["version"], ue["previous_version"]);
    assert_eq!(ue["changed_parents"], serde_json::json!(["core.users"]));
}

#[test]
fn metadata_only_change_computes_nothing() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/mart/user_events.sql",
        "kind INCREMENTAL",
        "owner 'finance',\n  kind INCREMENTAL",
    );
    let plan = plan_json(&dir, &[]);
    assert_eq!(line(&plan, "mart.user_events"), "metadata/metadata: none");
    assert_eq!(plan["summary"]["partitions"], 0);
    assert!(
        plan["models"][0]["diff"]
            .as_str()
            .unwrap()
            .contains("+-- owner: finance")
    );
}

#[test]
fn forward_only_keeps_tables() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/daily_events.sql",
        "WHERE event_ts",
        "WHERE amount > 0 AND event_ts",
    );
    let plan = plan_json(&dir, &["--forward-only"]);
    let o = outline(&plan);
    assert_eq!(
        o["core.daily_events"],
        "directly_modified/forward_only: none"
    );
    assert_eq!(
        o["mart.hourly_stats"],
        "indirectly_modified/forward_only: none"
    );
    assert_eq!(plan["summary"]["partitions"], 0);
    let m = plan["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "core.daily_events")
        .unwrap();
    assert_eq!(m["version"], m["previous_version"]);
}

#[test]
fn restating_an_hour_restates_the_day_downstream() {
    let (_t, dir) = deployed();
    let plan = plan_json(
        &dir,
        &[
            "--restate-model",
            "raw.events",
            "--start",
            "2024-01-03 05:00",
            "--end",
            "2024-01-03 07:00",
        ],
    );
    let o = outline(&plan);
    assert_eq!(
        o["raw.events"],
        "unchanged/- restated: compute [2024-01-03T05:00:00Z, 2024-01-03T07:00:00Z) (2 partitions)"
    );
    let day = "[2024-01-03T00:00:00Z, 2024-01-04T00:00:00Z)";
    assert_eq!(
        o["core.daily_events"],
        format!("unchanged/- restated: compute {day} (1 partitions)")
    );
    assert_eq!(
        o["mart.hourly_stats"],
        format!("unchanged/- restated: compute {day} (24 partitions)")
    );
    assert_eq!(
        o["mart.daily_stats"],
        format!("unchanged/- restated: compute {day} (1 partitions)")
    );
    assert_eq!(
        o["mart.user_events"],
        format!("unchanged/- restated: compute {day} (1 partitions)")
    );
    assert!(o["mart.stats_total"].starts_with("unchanged/- restated: full_refresh"));
    assert!(!o.contains_key("core.users"));
}

#[test]
fn restating_a_daily_model_for_seven_days_cascades_through_hourly_daily_full() {
    let (_t, dir) = deployed();
    let run = succeed(
        &dir,
        &[
            "--execution-time",
            "2024-01-10",
            "plan",
            "--format",
            "json",
            "--restate-model",
            "core.daily_events",
            "--start",
            "2024-01-01",
            "--end",
            "2024-01-07",
        ],
    );
    let plan: Value = serde_json::from_str(&run.stdout).unwrap();
    let o = outline(&plan);
    let week = "[2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z)";
    assert_eq!(plan["start"], "2024-01-01T00:00:00Z");
    assert_eq!(plan["end"], "2024-01-08T00:00:00Z");
    assert_eq!(
        o["core.daily_events"],
        format!("unchanged/- restated: compute {week} (7 partitions)")
    );
    assert_eq!(
        o["mart.hourly_stats"],
        format!("unchanged/- restated: compute {week} (168 partitions)")
    );
    assert_eq!(
        o["mart.daily_stats"],
        format!("unchanged/- restated: compute {week} (7 partitions)")
    );
    assert!(o["mart.stats_total"].starts_with("unchanged/- restated: full_refresh"));
    assert!(!o.contains_key("raw.events"), "upstream is not restated");
}

#[test]
fn restatement_ignores_local_edits_unless_asked() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/users.sql",
        "v.name\n",
        "v.name, 1 AS x\n",
    );
    let args = ["--restate-model", "core.users"];
    let plan = plan_json(&dir, &args);
    assert_eq!(
        line(&plan, "core.users"),
        "unchanged/- restated: full_refresh [2024-01-01T00:00:00Z, 2024-01-08T00:00:00Z) (1 partitions)"
    );
    assert!(
        plan["notes"][0]
            .as_str()
            .unwrap()
            .contains("1 local change ignored")
    );
    let with = plan_json(
        &dir,
        &["--restate-model", "core.users", "--with-local-changes"],
    );
    assert!(line(&with, "core.users").starts_with("directly_modified/non_breaking restated"));
    fail_with(
        &dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "--restate-model",
            "core.user",
        ],
        "--restate-model `core.user` matches no model",
    );
}

#[test]
fn select_model_takes_only_selected_changes() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/users.sql",
        "v.name\n",
        "v.name, 1 AS x\n",
    );
    edit(
        &dir,
        "models/core/daily_events.sql",
        "WHERE event_ts",
        "WHERE amount > 0 AND event_ts",
    );
    let plan = plan_json(&dir, &["--select-model", "core.users"]);
    let o = outline(&plan);
    assert!(o["core.users"].starts_with("directly_modified/non_breaking"));
    assert!(!o.contains_key("core.daily_events"), "{o:?}");
    assert!(!o.contains_key("mart.hourly_stats"), "{o:?}");
    assert!(plan["notes"][0].as_str().unwrap().contains("not selected"));
}

#[test]
fn removing_a_model_that_others_still_read_is_an_error() {
    let (_t, dir) = deployed();
    std::fs::remove_file(dir.join("models/core/users.sql")).unwrap();
    // While local files still read it, loading the project names each reference.
    let run = fail_with(
        &dir,
        &["--execution-time", T0, "plan"],
        "unknown table `core.users`",
    );
    assert!(
        run.stderr.contains("models/mart/user_events.sql:8:6"),
        "{}",
        run.stderr
    );
    // Local readers rewritten, but only the removal selected: the deployed readers remain.
    edit(
        &dir,
        "models/mart/user_events.sql",
        "JOIN core.users AS u ON u.user_id = d.user_id",
        "JOIN (SELECT 10 AS user_id, 'x' AS name) AS u ON u.user_id = d.user_id",
    );
    edit(
        &dir,
        "models/mart/user_names.sql",
        "FROM core.users",
        "FROM (SELECT 10 AS user_id, 'x' AS name) AS u",
    );
    let run = fail_with(
        &dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "--select-model",
            "core.users",
        ],
        "model `core.users` would be removed, but `mart.user_events` still reads it",
    );
    assert!(run.stderr.contains("mart.user_names"), "{}", run.stderr);
    // Selecting the readers too makes it consistent.
    let plan = plan_json(
        &dir,
        &[
            "--select-model",
            "core.users",
            "--select-model",
            "mart.user_*",
        ],
    );
    assert_eq!(line(&plan, "core.users"), "removed/-: none");
    // Removing a leaf is fine.
    let (_t2, dir2) = deployed();
    std::fs::remove_file(dir2.join("models/mart/stats_total.sql")).unwrap();
    let plan = plan_json(&dir2, &[]);
    assert_eq!(line(&plan, "mart.stats_total"), "removed/-: none");
}

#[test]
fn new_environment_reuses_prod_and_computes_only_changes() {
    let (_t, dir) = deployed();
    let plan = plan_json(&dir, &["dev"]);
    assert_eq!(plan["new_environment"], true);
    assert_eq!(plan["base_environment"], "prod");
    assert!(outline(&plan).is_empty());
    edit(
        &dir,
        "models/mart/daily_stats.sql",
        "SUM(events) AS events",
        "SUM(events) AS events, COUNT(*) AS hours",
    );
    let plan = plan_json(&dir, &["dev", "--start", "2024-01-05"]);
    let o = outline(&plan);
    assert_eq!(
        o["mart.daily_stats"],
        "directly_modified/non_breaking: compute [2024-01-05T00:00:00Z, 2024-01-08T00:00:00Z) (3 partitions)"
    );
    assert_eq!(
        o["mart.stats_total"],
        "indirectly_modified/indirect_non_breaking: none"
    );
    // Promotion after dev was built: the same snapshot, nothing to compute.
    deploy(&dir, "dev", T0);
    let prod = plan_json(&dir, &[]);
    assert_eq!(
        line(&prod, "mart.daily_stats"),
        "directly_modified/non_breaking: none"
    );
    assert_eq!(prod["summary"]["partitions"], 0);
}

#[test]
fn window_rules() {
    let (_t, dir) = deployed();
    fail_with(
        &dir,
        &["--execution-time", T0, "plan", "--start", "2024-01-02"],
        "cannot limit a plan for `prod`",
    );
    fail_with(
        &dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "dev",
            "--start",
            "2024-01-05",
            "--end",
            "2024-01-03",
        ],
        "is not before the end",
    );
    fail_with(
        &dir,
        &["--execution-time", T0, "plan", "dev", "--end", "2024-02-01"],
        "is in the future",
    );
    fail_with(
        &dir,
        &["--execution-time", T0, "plan", "Dev-1"],
        "invalid environment name",
    );
}

#[test]
fn stale_saved_plan_is_detectable_and_concurrent_apply_loses() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/users.sql",
        "v.name\n",
        "v.name, 1 AS x\n",
    );
    let out = dir.join("plan.json");
    succeed(
        &dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let saved: tidemark::plan::Plan =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(saved.environment_revision, Some(1));
    let at = parse_instant(T0).unwrap().at;
    let store =
        StateStore::open(&tidemark::project::Warehouse::Local(dir.join("warehouse"))).unwrap();
    // Someone else changes prod first (here: the same plan applied once).
    store
        .transact("first", |s| {
            completed_actions(&saved, s, at, &Default::default(), &Default::default())
        })
        .unwrap();
    let err = store
        .transact("second", |s| {
            completed_actions(&saved, s, at, &Default::default(), &Default::default())
        })
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("environment `prod` changed since it was read"),
        "{err}"
    );
}

#[test]
fn state_export_import_round_trip() {
    let (_t, dir) = deployed();
    let exported = succeed(&dir, &["state", "export"]).stdout;
    let state: Value = serde_json::from_str(&exported).unwrap();
    assert_eq!(state["format"], "tidemark.state/v1");
    assert_eq!(state["environments"]["prod"]["revision"], 1);
    let tables = state["tables"].as_object().unwrap();
    assert!(tables.values().any(|t| t["intervals"]
        == serde_json::json!([{"start": "2024-01-01T00:00:00Z", "end": "2024-01-08T00:00:00Z"}])));
    let file = dir.join("export.json");
    std::fs::write(&file, &exported).unwrap();
    fail_with(
        &dir,
        &["state", "import", file.to_str().unwrap()],
        "is not empty",
    );
    std::fs::remove_dir_all(dir.join("warehouse")).unwrap();
    succeed(&dir, &["state", "import", file.to_str().unwrap()]);
    let again: Value = serde_json::from_str(&succeed(&dir, &["state", "export"]).stdout).unwrap();
    assert_eq!(again["environments"], state["environments"]);
    assert_eq!(again["tables"], state["tables"]);
    assert_eq!(again["snapshots"], state["snapshots"]);
    assert!(outline(&plan_json(&dir, &[])).is_empty());
    std::fs::write(
        &file,
        exported.replace("tidemark.state/v1", "tidemark.state/v7"),
    )
    .unwrap();
    std::fs::remove_dir_all(dir.join("warehouse")).unwrap();
    fail_with(
        &dir,
        &["state", "import", file.to_str().unwrap()],
        "tidemark.state/v7",
    );
}

#[test]
fn output_formats() {
    let (_t, dir) = deployed();
    edit(
        &dir,
        "models/core/daily_events.sql",
        "WHERE event_ts",
        "WHERE amount > 0 AND event_ts",
    );
    edit(
        &dir,
        "models/core/users.sql",
        "v.name\n",
        "v.name, UPPER(v.name) AS shout\n",
    );
    edit(
        &dir,
        "models/raw/events.sql",
        "kind INCREMENTAL",
        "owner 'platform',\n  kind INCREMENTAL",
    );
    std::fs::remove_file(dir.join("models/mart/stats_total.sql")).unwrap();
    for format in ["text", "markdown", "json"] {
        let run = succeed(
            &dir,
            &["--execution-time", T0, "plan", "dev", "--format", format],
        );
        insta::assert_snapshot!(format!("plan_{format}"), run.stdout);
    }
    let run = succeed(
        &dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "--format",
            "markdown",
            "--restate-model",
            "raw.events",
            "--start",
            "2024-01-03",
            "--end",
            "2024-01-03",
        ],
    );
    insta::assert_snapshot!("plan_restatement_markdown", run.stdout);
}

/// Definitions mixed from the files and prod that read each other in a cycle are refused (the
/// plan orders models by the graph's own order, which has no order for a cycle).
#[test]
fn selected_and_deployed_definitions_in_a_cycle_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write(
        "tidemark.toml",
        "[project]\nname = \"loop\"\n[model_defaults]\nstart = \"2024-01-01\"\n",
    );
    write(
        "models/s/a.sql",
        "MODEL (name s.a, kind FULL);\nSELECT 1 AS x\n",
    );
    write(
        "models/s/b.sql",
        "MODEL (name s.b, kind FULL);\nSELECT x FROM s.a\n",
    );
    deploy(dir, "prod", T0);
    // Locally the edge turns around: a reads b, b reads nothing. Taking only a's local change
    // keeps prod's b, which still reads a.
    write(
        "models/s/a.sql",
        "MODEL (name s.a, kind FULL);\nSELECT x FROM s.b\n",
    );
    write(
        "models/s/b.sql",
        "MODEL (name s.b, kind FULL);\nSELECT 1 AS x\n",
    );
    let run = fail_with(
        dir,
        &["--execution-time", T0, "plan", "--select-model", "s.a"],
        "read each other in a cycle",
    );
    assert!(
        run.stderr.contains("cycle: `s.a` -> `s.b` -> `s.a`"),
        "{}",
        run.stderr
    );
    // Taking both local changes is a consistent set.
    succeed(
        dir,
        &[
            "--execution-time",
            T0,
            "plan",
            "--select-model",
            "s.a",
            "--select-model",
            "s.b",
        ],
    );
}
