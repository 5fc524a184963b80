//! `tidemark info` on the fixture covering every kind and property, and on the bundled example.

use crate::common::{fixture, info_json, succeed, sushi, tidemark_in};

#[test]
fn info_text_all_kinds() {
    let run = succeed(&fixture("projects/all_kinds"), &["info"]);
    insta::assert_snapshot!("info_text_all_kinds", run.transcript());
}

#[test]
fn info_json_all_kinds() {
    let run = succeed(
        &fixture("projects/all_kinds"),
        &["info", "--format", "json"],
    );
    insta::assert_snapshot!("info_json_all_kinds", run.stdout);
}

#[test]
fn info_reports_every_property() {
    let json = info_json(&fixture("projects/all_kinds"));
    assert_eq!(json["format"], "tidemark.info/v1");
    let models = json["models"].as_array().unwrap();
    let get = |name: &str| {
        models
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    let orders = get("shop.orders");
    assert_eq!(orders["kind"]["name"], "INCREMENTAL_BY_TIME_RANGE");
    assert_eq!(orders["kind"]["time_column"], "order_ts");
    assert_eq!(orders["kind"]["batch_size"], 24);
    assert_eq!(orders["kind"]["batch_concurrency"], 4);
    assert_eq!(orders["kind"]["lookback"], 2);
    assert_eq!(orders["cron"], "@hourly");
    assert_eq!(orders["interval_unit"], "hour");
    assert_eq!(orders["start"], "2024-01-01T00:00:00Z");
    assert_eq!(orders["end"], "2024-12-31T00:00:00Z");
    assert_eq!(orders["owner"], "sales-eng");
    assert_eq!(orders["tags"], serde_json::json!(["hourly", "sales"]));
    assert_eq!(orders["column_descriptions"]["Amount"], "gross amount");
    assert_eq!(orders["audits"].as_array().unwrap().len(), 7);
    assert_eq!(orders["audits"][3]["blocking"], false);
    assert_eq!(orders["partitioned_by"], serde_json::json!(["status"]));
    assert_eq!(orders["allow_partials"], true);
    assert_eq!(
        orders["parents"],
        serde_json::json!(["raw.orders_delta", "shop.products"])
    );
    // Defaults from tidemark.toml.
    let items = get("shop.order_items");
    assert_eq!(items["owner"], "data-platform");
    assert_eq!(
        items["kind"]["unique_key"],
        serde_json::json!(["order_id", "product_id"])
    );
    assert_eq!(items["interval_unit"], "day");
    // Self-reference is not an edge; the header-less file is a VIEW named after its path.
    let running = get("shop.running_totals");
    assert_eq!(running["self_referencing"], true);
    assert_eq!(
        running["parents"],
        serde_json::json!(["shop.daily_revenue"])
    );
    assert_eq!(running["forward_only"], true);
    assert_eq!(get("staging.order_counts")["kind"]["name"], "VIEW");
    // Disabled models are not loaded.
    assert!(models.iter().all(|m| m["name"] != "shop.legacy"));
    // Sources are leaves with their declared columns.
    let sources = json["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 3);
    assert_eq!(sources[0]["name"], "events");
    assert_eq!(sources[0]["columns"]["event_ts"], "TIMESTAMP");
    assert_eq!(sources[0]["path"], "data/events.csv");
    assert_eq!(json["warehouse"], "s3://example-bucket/all_kinds");
}

#[test]
fn info_text_example_project() {
    let run = succeed(&sushi(), &["info"]);
    insta::assert_snapshot!("info_text_example", run.transcript());
}

#[test]
fn config_is_found_from_a_subdirectory() {
    let run = tidemark_in(&sushi().join("models/sushi"), &["info", "--format", "json"]);
    assert_eq!(run.code, 0, "{}", run.transcript());
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(json["project"], "sushi");
}
