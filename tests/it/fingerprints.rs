//! Fingerprints through the CLI: formatting-only edits change nothing anywhere; a change of
//! meaning changes the model and every descendant and nothing else; metadata stays local.

use std::path::Path;

use crate::common::{copy_project, data_hashes, fixture, info_json};

fn edit(project: &Path, rel: &str, f: impl FnOnce(String) -> String) {
    let p = project.join(rel);
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, f(text)).unwrap();
}

fn all_hashes(project: &Path) -> Vec<(String, String, String)> {
    let json = info_json(project);
    json["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["fingerprint"]["data"].as_str().unwrap().to_string(),
                m["fingerprint"]["metadata"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn formatting_only_edits_change_no_fingerprint() {
    let (_tmp, p) = copy_project(&fixture("projects/all_kinds"));
    let before = all_hashes(&p);
    // Whitespace, comments, keyword and identifier case, a trailing semicolon.
    edit(&p, "models/shop/orders.sql", |t| {
        t.replace(
            "SELECT\n  o.order_id,",
            "select   /* the key */ O.ORDER_ID,\n\n",
        )
        .replace(
            "FROM raw.orders_delta AS o",
            "from RAW.Orders_Delta as O -- source\n",
        )
        .replace("WHERE o.order_ts", "where\to.order_ts")
            + ";\n"
    });
    // Header: reordered properties, other spacing, keyword case.
    edit(&p, "models/shop/order_items.sql", |t| {
        t.replace(
            "MODEL (\n  name shop.order_items,\n  kind INCREMENTAL_BY_UNIQUE_KEY (unique_key (order_id, product_id), batch_size 7),\n  cron '0 6 * * *',\n  grains (order_id, product_id)\n);",
            "model(grains(order_id,product_id),cron '0   6 * * *' , KIND incremental_by_unique_key(BATCH_SIZE 7, unique_key(ORDER_ID,product_id)),name SHOP.ORDER_ITEMS)  ;",
        )
    });
    edit(&p, "models/shop/customers.sql", |t| {
        format!(
            "-- leading comment\n\n{}\n\n-- trailing comment\n",
            t.replace("UNION ALL", "union   all")
        )
    });
    let after = all_hashes(&p);
    assert_eq!(before, after);
}

#[test]
fn a_change_of_meaning_cascades_downstream_only() {
    let (_tmp, p) = copy_project(&fixture("projects/all_kinds"));
    let before = data_hashes(&p);
    edit(&p, "models/shop/orders.sql", |t| {
        t.replace("WHERE o.order_ts", "WHERE o.amount > 0 AND o.order_ts")
    });
    let after = data_hashes(&p);
    let changed: Vec<&String> = before.keys().filter(|k| before[*k] != after[*k]).collect();
    // shop.orders and everything downstream of it (through the EMBEDDED paid_orders too).
    assert_eq!(
        changed,
        [
            "shop.customers",
            "shop.daily_revenue",
            "shop.orders",
            "shop.paid_orders",
            "shop.revenue_report",
            "shop.running_totals",
            "staging.order_counts"
        ]
    );
}

#[test]
fn metadata_changes_stay_local() {
    let (_tmp, p) = copy_project(&fixture("projects/all_kinds"));
    let before = all_hashes(&p);
    edit(&p, "models/shop/orders.sql", |t| {
        t.replace("owner 'sales-eng'", "owner 'someone-else'")
            .replace("batch_size 24", "batch_size 12")
    });
    let after = all_hashes(&p);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b.1, a.1, "data hash of {} changed", b.0);
        assert_eq!(b.2 != a.2, b.0 == "shop.orders", "metadata hash of {}", b.0);
    }
}

#[test]
fn kind_properties_that_change_rows_change_the_data_hash() {
    let (_tmp, p) = copy_project(&fixture("projects/all_kinds"));
    let base = data_hashes(&p)["shop.orders"].clone();
    for (from, to) in [
        ("lookback 2", "lookback 3"),
        ("cron '@hourly'", "cron '@daily'"),
        ("partitioned_by (status)", "partitioned_by (order_id)"),
    ] {
        let (_t, q) = copy_project(&p);
        edit(&q, "models/shop/orders.sql", |t| t.replace(from, to));
        assert_ne!(data_hashes(&q)["shop.orders"], base, "{from} -> {to}");
    }
    // A seed's contents are part of its data.
    let (_t, q) = copy_project(&p);
    std::fs::write(
        q.join("seeds/products.csv"),
        "id,name,price\n1,apple,0.55\n2,pear,0.75\n",
    )
    .unwrap();
    let h = data_hashes(&q);
    assert_ne!(h["shop.products"], data_hashes(&p)["shop.products"]);
    assert_ne!(h["shop.order_items"], data_hashes(&p)["shop.order_items"]);
}

#[test]
fn fingerprints_do_not_depend_on_where_the_project_is_checked_out() {
    let original = fixture("projects/all_kinds");
    let (_tmp, copy) = copy_project(&original);
    assert_eq!(all_hashes(&original), all_hashes(&copy));
    let sources = |p: &Path| info_json(p)["sources"].clone();
    assert_eq!(sources(&original), sources(&copy));
}
