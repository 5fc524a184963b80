//! `tidemark dag` in every format.

use crate::common::{fixture, succeed, tidemark};

#[test]
fn dag_formats() {
    let p = fixture("projects/all_kinds");
    for format in ["text", "dot", "mermaid", "json"] {
        let run = succeed(&p, &["dag", "--format", format]);
        insta::assert_snapshot!(format!("dag_{format}"), run.stdout);
    }
}

#[test]
fn topological_order_respects_every_edge() {
    let run = tidemark(&fixture("projects/all_kinds"), &["dag", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let order: Vec<&str> = json["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| order.iter().position(|x| *x == n).unwrap();
    let edges = json["edges"].as_array().unwrap();
    assert!(!edges.is_empty());
    for e in edges {
        assert!(
            pos(e["from"].as_str().unwrap()) < pos(e["to"].as_str().unwrap()),
            "{e}"
        );
    }
}
