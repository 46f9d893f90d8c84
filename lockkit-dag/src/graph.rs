//! A pipeline's graph (`petgraph`): cycle detection that names the cycle,
//! the `Start`-to-`End` checks, and the dependency order.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use petgraph::algo::{has_path_connecting, tarjan_scc};
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::spec::{END, START};

/// Collects a pipeline's nodes (in the order they appear) and edges.
#[derive(Debug, Default)]
pub(crate) struct Builder {
    names: Vec<String>,
    index: HashMap<String, usize>,
    edges: Vec<(usize, usize)>,
}

/// A checked pipeline: tasks in dependency order, edges between tasks.
#[derive(Debug)]
pub(crate) struct Built {
    pub(crate) tasks: Vec<String>,
    pub(crate) edges: Vec<(String, String)>,
}

impl Builder {
    /// Adds a node; `false` if it was there already.
    pub(crate) fn node(&mut self, name: &str) -> bool {
        if self.index.contains_key(name) {
            return false;
        }
        self.index.insert(name.to_owned(), self.names.len());
        self.names.push(name.to_owned());
        true
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Adds the edge `from -> to` (both nodes are added if missing).
    pub(crate) fn edge(&mut self, from: &str, to: &str) {
        self.node(from);
        self.node(to);
        let edge = (self.index[from], self.index[to]);
        if !self.edges.contains(&edge) {
            self.edges.push(edge);
        }
    }

    /// Checks the graph. With `explicit_ends`, `Start` and `End` are nodes
    /// of it and every task must lie on a path between them.
    ///
    /// # Errors
    /// The reasons the graph is not a pipeline: a cycle (named), no path
    /// from `Start` to `End`, a task off that path, no tasks.
    pub(crate) fn finish(self, explicit_ends: bool) -> Result<Built, Vec<String>> {
        let mut graph: DiGraph<usize, ()> = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..self.names.len()).map(|i| graph.add_node(i)).collect();
        for &(from, to) in &self.edges {
            graph.add_edge(nodes[from], nodes[to], ());
        }
        if let Some(cycle) = find_cycle(&graph) {
            let mut names: Vec<&str> = cycle.iter().map(|&i| self.names[i].as_str()).collect();
            names.push(names[0]);
            return Err(vec![format!("cycle {}", names.join(" -> "))]);
        }
        let is_end = |i: usize| self.names[i] == START || self.names[i] == END;
        let mut reasons = Vec::new();
        if explicit_ends {
            let start = self.index.get(START).map(|&i| nodes[i]);
            let end = self.index.get(END).map(|&i| nodes[i]);
            match (start, end) {
                (Some(start), Some(end)) if has_path_connecting(&graph, start, end, None) => {
                    if graph
                        .edges_directed(start, petgraph::Incoming)
                        .next()
                        .is_some()
                    {
                        reasons.push("Start cannot come after a task".to_owned());
                    }
                    if graph.edges(end).next().is_some() {
                        reasons.push("End cannot come before a task".to_owned());
                    }
                    for (i, &node) in nodes.iter().enumerate() {
                        if is_end(i) {
                            continue;
                        }
                        if !has_path_connecting(&graph, start, node, None)
                            || !has_path_connecting(&graph, node, end, None)
                        {
                            reasons.push(format!(
                                "task {} is not on a path from Start to End",
                                self.names[i]
                            ));
                        }
                    }
                }
                _ => reasons.push("no path from Start to End".to_owned()),
            }
        }
        let tasks: Vec<usize> = (0..self.names.len()).filter(|&i| !is_end(i)).collect();
        if tasks.is_empty() && reasons.is_empty() {
            reasons.push("the pipeline has no tasks".to_owned());
        }
        if !reasons.is_empty() {
            return Err(reasons);
        }
        let order = dependency_order(&graph, &nodes);
        Ok(Built {
            tasks: order
                .into_iter()
                .filter(|&i| !is_end(i))
                .map(|i| self.names[i].clone())
                .collect(),
            edges: {
                let mut edges: Vec<(String, String)> = self
                    .edges
                    .iter()
                    .filter(|&&(from, to)| !is_end(from) && !is_end(to))
                    .map(|&(from, to)| (self.names[from].clone(), self.names[to].clone()))
                    .collect();
                // One canonical order, so that a spec read back from the
                // catalog compares equal to the one loaded.
                edges.sort();
                edges
            },
        })
    }
}

/// A cycle as node weights, starting at its earliest node, if there is one.
fn find_cycle(graph: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    let mut cycles: Vec<Vec<NodeIndex>> = tarjan_scc(graph)
        .into_iter()
        .filter(|scc| scc.len() > 1 || graph.contains_edge(scc[0], scc[0]))
        .collect();
    cycles.sort_by_key(|scc| scc.iter().map(|&n| graph[n]).min());
    let scc = cycles.into_iter().next()?;
    let start = *scc.iter().min_by_key(|&&n| graph[n])?;
    // A depth-first walk inside the component back to `start`, trying
    // successors in the order they were written.
    let mut path = vec![start];
    let mut tried: Vec<Vec<NodeIndex>> = vec![Vec::new()];
    while let Some(&at) = path.last() {
        let mut next: Vec<NodeIndex> = graph
            .edges(at)
            .map(|e| e.target())
            .filter(|t| scc.contains(t))
            .collect();
        next.sort_by_key(|&n| graph[n]);
        if next.contains(&start) {
            return Some(path.iter().map(|&n| graph[n]).collect());
        }
        let depth = path.len() - 1;
        let candidate = next
            .into_iter()
            .find(|n| !path.contains(n) && !tried[depth].contains(n));
        match candidate {
            Some(n) => {
                tried[depth].push(n);
                path.push(n);
                tried.push(Vec::new());
            }
            None => {
                path.pop();
                tried.pop();
            }
        }
    }
    None
}

/// Kahn's algorithm, taking the earliest-written ready node first, so the
/// order is stable and reads like the spec.
fn dependency_order(graph: &DiGraph<usize, ()>, nodes: &[NodeIndex]) -> Vec<usize> {
    let mut pending: Vec<usize> = nodes
        .iter()
        .map(|&n| graph.edges_directed(n, petgraph::Incoming).count())
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = pending
        .iter()
        .enumerate()
        .filter(|(_, count)| **count == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for edge in graph.edges(nodes[i]) {
            let to = graph[edge.target()];
            pending[to] -= 1;
            if pending[to] == 0 {
                ready.push(Reverse(to));
            }
        }
    }
    order
}
