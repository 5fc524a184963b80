//! The dependency graph of models and sources.
//!
//! Invariants:
//! - Edges point from parent to child; sources are leaves with no parents.
//! - The topological order is deterministic: among the nodes ready at any point, the smallest
//!   name comes first.
//! - A cycle is an error that prints one cycle as a path of model names with their files.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::error::{Diagnostic, Result};
use crate::project::{ModelName, Project};

/// The dependency graph.
#[derive(Debug, Clone)]
pub struct Dag {
    graph: DiGraph<ModelName, ()>,
    index: BTreeMap<ModelName, NodeIndex>,
    order: Vec<ModelName>,
}

impl Dag {
    /// Build the graph of a project: every model and every declared source.
    pub fn build(project: &Project) -> Result<Dag> {
        let names = project.models.keys().chain(project.config.sources.keys());
        Dag::from_edges(names, &project.parents).map_err(|cycle| cycle_error(project, &cycle))
    }

    /// The graph of `names` with the edges `parents` (child → its parents; parents that are not
    /// among `names` are left out). On a cycle, returns one cycle as a path of names.
    pub fn from_edges<'a>(
        names: impl IntoIterator<Item = &'a ModelName>,
        parents: impl IntoIterator<Item = (&'a ModelName, &'a BTreeSet<ModelName>)>,
    ) -> std::result::Result<Dag, Vec<ModelName>> {
        let mut graph = DiGraph::new();
        let mut index = BTreeMap::new();
        let names: BTreeSet<&ModelName> = names.into_iter().collect();
        for n in names {
            index.insert(n.clone(), graph.add_node(n.clone()));
        }
        for (child, ps) in parents {
            for p in ps {
                if let (Some(&a), Some(&b)) = (index.get(p), index.get(child)) {
                    graph.add_edge(a, b, ());
                }
            }
        }
        let mut dag = Dag {
            graph,
            index,
            order: Vec::new(),
        };
        dag.order = dag.topological()?;
        Ok(dag)
    }

    /// Kahn's algorithm with a min-heap on names; on a cycle, returns one cycle's nodes.
    fn topological(&self) -> std::result::Result<Vec<ModelName>, Vec<ModelName>> {
        // Node indices are 0..n (nodes are never removed).
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, petgraph::Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: BinaryHeap<Reverse<(&ModelName, NodeIndex)>> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(|n| Reverse((&self.graph[n], n)))
            .collect();
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some(Reverse((name, n))) = ready.pop() {
            order.push(name.clone());
            for e in self.graph.edges(n) {
                let t = e.target();
                if let Some(d) = indegree.get_mut(t.index()) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(Reverse((&self.graph[t], t)));
                    }
                }
            }
        }
        if order.len() == self.graph.node_count() {
            return Ok(order);
        }
        Err(self.find_cycle())
    }

    /// One cycle, starting at the smallest name of the smallest strongly connected component.
    fn find_cycle(&self) -> Vec<ModelName> {
        let mut sccs: Vec<Vec<NodeIndex>> = tarjan_scc(&self.graph)
            .into_iter()
            .filter(|c| c.len() > 1)
            .collect();
        for c in &mut sccs {
            c.sort_by(|a, b| self.graph[*a].cmp(&self.graph[*b]));
        }
        sccs.sort_by(|a, b| self.graph[a[0]].cmp(&self.graph[b[0]]));
        let Some(scc) = sccs.first() else {
            return Vec::new();
        };
        let members: BTreeSet<NodeIndex> = scc.iter().copied().collect();
        let start = scc[0];
        // Breadth-first search inside the component for the shortest way back to `start`.
        let mut prev: BTreeMap<NodeIndex, NodeIndex> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            let mut next: Vec<NodeIndex> = self
                .graph
                .neighbors(n)
                .filter(|m| members.contains(m))
                .collect();
            next.sort_by(|a, b| self.graph[*a].cmp(&self.graph[*b]));
            for m in next {
                if m == start {
                    let mut path = vec![self.graph[start].clone()];
                    let mut cur = n;
                    let mut back = vec![self.graph[n].clone()];
                    while cur != start {
                        cur = prev[&cur];
                        back.push(self.graph[cur].clone());
                    }
                    back.pop();
                    back.reverse();
                    path.extend(back);
                    path.push(self.graph[start].clone());
                    return path;
                }
                if m != start && !prev.contains_key(&m) {
                    prev.insert(m, n);
                    queue.push_back(m);
                }
            }
        }
        scc.iter().map(|n| self.graph[*n].clone()).collect()
    }

    /// All nodes in deterministic topological order (parents before children).
    pub fn order(&self) -> &[ModelName] {
        &self.order
    }

    /// Direct parents of `name`, sorted.
    pub fn parents(&self, name: &ModelName) -> BTreeSet<ModelName> {
        self.neighbors(name, petgraph::Direction::Incoming)
    }

    /// Direct children of `name`, sorted.
    pub fn children(&self, name: &ModelName) -> BTreeSet<ModelName> {
        self.neighbors(name, petgraph::Direction::Outgoing)
    }

    fn neighbors(&self, name: &ModelName, dir: petgraph::Direction) -> BTreeSet<ModelName> {
        match self.index.get(name) {
            Some(&n) => self
                .graph
                .neighbors_directed(n, dir)
                .map(|m| self.graph[m].clone())
                .collect(),
            None => BTreeSet::new(),
        }
    }

    /// Every node upstream of `name` (not including it).
    pub fn upstream(&self, name: &ModelName) -> BTreeSet<ModelName> {
        self.reach(name, petgraph::Direction::Incoming)
    }

    /// Every node downstream of `name` (not including it).
    pub fn downstream(&self, name: &ModelName) -> BTreeSet<ModelName> {
        self.reach(name, petgraph::Direction::Outgoing)
    }

    fn reach(&self, name: &ModelName, dir: petgraph::Direction) -> BTreeSet<ModelName> {
        let mut out = BTreeSet::new();
        let Some(&start) = self.index.get(name) else {
            return out;
        };
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            for m in self.graph.neighbors_directed(n, dir) {
                if out.insert(self.graph[m].clone()) {
                    stack.push(m);
                }
            }
        }
        out
    }

    /// Every edge `(parent, child)`, sorted.
    pub fn edges(&self) -> Vec<(ModelName, ModelName)> {
        let mut e: Vec<_> = self
            .graph
            .edge_references()
            .map(|e| {
                (
                    self.graph[e.source()].clone(),
                    self.graph[e.target()].clone(),
                )
            })
            .collect();
        e.sort();
        e
    }
}

fn cycle_error(project: &Project, cycle: &[ModelName]) -> crate::error::Error {
    let describe = |n: &ModelName| match project.models.get(n) {
        Some(m) => format!("{n} ({})", m.file.to_string_lossy().replace('\\', "/")),
        None => n.to_string(),
    };
    let path: Vec<String> = cycle.iter().map(describe).collect();
    let mut d = Diagnostic::error("the models depend on each other in a cycle")
        .note(format!("cycle: {}", path.join(" -> ")))
        .hint("break the cycle: a model cannot read, directly or through others, from itself (a model may read its own previous output by its own name)");
    if let Some(m) = cycle.first().and_then(|n| project.models.get(n)) {
        d = d.at(m.location.clone());
    }
    d.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> ModelName {
        ModelName::parse(s).unwrap()
    }

    #[test]
    fn from_edges_orders_by_name_among_ready_nodes_and_refuses_cycles() {
        let names = [n("s.c"), n("s.a"), n("s.b")];
        let parents = BTreeMap::from([(n("s.a"), BTreeSet::from([n("s.c")]))]);
        let dag = Dag::from_edges(&names, &parents).unwrap();
        assert_eq!(dag.order(), &[n("s.b"), n("s.c"), n("s.a")]);
        let cyclic = BTreeMap::from([
            (n("s.a"), BTreeSet::from([n("s.b")])),
            (n("s.b"), BTreeSet::from([n("s.a")])),
        ]);
        let cycle = Dag::from_edges(&names, &cyclic).unwrap_err();
        assert_eq!(cycle, vec![n("s.a"), n("s.b"), n("s.a")]);
    }
}
