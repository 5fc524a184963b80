//! `tidemark dag`: the dependency graph as text, Graphviz, Mermaid or JSON.

use serde::Serialize;

use super::{Loaded, emit, load};
use crate::error::{ExitStatus, Result};
use crate::project::ModelName;
use crate::settings::{DagFormat, Settings};

/// `tidemark.dag/v1`.
#[derive(Debug, Serialize)]
pub struct DagJson {
    /// Schema identifier.
    pub format: &'static str,
    /// Nodes in topological order.
    pub nodes: Vec<NodeJson>,
    /// Edges `(parent, child)`, sorted.
    pub edges: Vec<EdgeJson>,
}

/// A node.
#[derive(Debug, Serialize)]
pub struct NodeJson {
    pub name: ModelName,
    /// Model kind, or `SOURCE`.
    pub kind: String,
    /// File of a model, path of a source.
    pub file: String,
}

/// An edge.
#[derive(Debug, Serialize)]
pub struct EdgeJson {
    pub from: ModelName,
    pub to: ModelName,
}

/// Run `dag`.
pub fn run(ctx: &Settings, format: DagFormat, out: &mut dyn std::io::Write) -> Result<ExitStatus> {
    let l = load(ctx)?;
    let text = match format {
        DagFormat::Text => text(&l),
        DagFormat::Dot => dot(&l),
        DagFormat::Mermaid => mermaid(&l),
        DagFormat::Json => super::json_text(&json(&l))?,
    };
    emit(out, &text)?;
    Ok(ExitStatus::Success)
}

fn kind_of(l: &Loaded, n: &ModelName) -> (String, String) {
    match (l.project.models.get(n), l.project.config.sources.get(n)) {
        (Some(m), _) => (
            m.kind.name().to_string(),
            m.file.to_string_lossy().replace('\\', "/"),
        ),
        (None, Some(s)) => ("SOURCE".to_string(), s.display_path(&l.project.config.root)),
        _ => ("?".into(), String::new()),
    }
}

fn json(l: &Loaded) -> DagJson {
    let nodes = l
        .dag
        .order()
        .iter()
        .map(|n| {
            let (kind, file) = kind_of(l, n);
            NodeJson {
                name: n.clone(),
                kind,
                file,
            }
        })
        .collect();
    let edges = l
        .dag
        .edges()
        .into_iter()
        .map(|(from, to)| EdgeJson { from, to })
        .collect();
    DagJson {
        format: "tidemark.dag/v1",
        nodes,
        edges,
    }
}

fn text(l: &Loaded) -> String {
    let mut out = String::new();
    for n in l.dag.order() {
        let (kind, _) = kind_of(l, n);
        let parents: Vec<String> = l.dag.parents(n).iter().map(ToString::to_string).collect();
        if parents.is_empty() {
            out.push_str(&format!("{n} [{}]\n", kind.to_lowercase()));
        } else {
            out.push_str(&format!(
                "{n} [{}] <- {}\n",
                kind.to_lowercase(),
                parents.join(", ")
            ));
        }
    }
    out
}

fn dot(l: &Loaded) -> String {
    let mut out = String::from(
        "digraph tidemark {\n  rankdir=LR;\n  node [shape=box, fontname=\"Helvetica\"];\n",
    );
    for n in l.dag.order() {
        let (kind, _) = kind_of(l, n);
        let shape = match kind.as_str() {
            "SOURCE" => ", shape=cylinder",
            "VIEW" | "EMBEDDED" => ", style=dashed",
            _ => "",
        };
        out.push_str(&format!(
            "  \"{n}\" [label=\"{n}\\n{}\"{shape}];\n",
            kind.to_lowercase()
        ));
    }
    for (a, b) in l.dag.edges() {
        out.push_str(&format!("  \"{a}\" -> \"{b}\";\n"));
    }
    out.push_str("}\n");
    out
}

fn mermaid(l: &Loaded) -> String {
    let ids: std::collections::BTreeMap<&ModelName, usize> = l
        .dag
        .order()
        .iter()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();
    let mut out = String::from("flowchart LR\n");
    for (i, n) in l.dag.order().iter().enumerate() {
        let (kind, _) = kind_of(l, n);
        let (open, close) = if kind == "SOURCE" {
            ("[(", ")]")
        } else {
            ("[", "]")
        };
        out.push_str(&format!(
            "  n{i}{open}\"{n}<br/><small>{}</small>\"{close}\n",
            kind.to_lowercase()
        ));
    }
    for (a, b) in l.dag.edges() {
        if let (Some(x), Some(y)) = (ids.get(&a), ids.get(&b)) {
            out.push_str(&format!("  n{x} --> n{y}\n"));
        }
    }
    out
}
