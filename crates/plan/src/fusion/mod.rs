//! Fusion passes. Each is a separate rewrite over the graph's consumer structure that claims
//! nodes into a fused step; each can be switched off in [`crate::FusionOptions`].

pub mod act_binary;
pub mod batch;
pub mod epilogue;
pub mod matmul_norm;
pub mod norm_prologue;
pub mod packed_attention;
pub mod qkv;
pub mod residual;
pub mod siblings;

use crate::step::StepKind;
use kiln_ir::Graph;

/// A fused step found by a pass: what it writes and which nodes it absorbs (no slot).
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub kind: StepKind,
    pub writes: Vec<usize>,
    pub internal: Vec<usize>,
}

/// What the passes share: who reads each node, which nodes are claimed, the groups so far.
#[derive(Debug)]
pub struct FusionState<'g> {
    pub graph: &'g Graph,
    /// Readers of each node, in node order.
    pub consumers: Vec<Vec<usize>>,
    /// Whether each node is a graph output (an output is never absorbed).
    pub is_output: Vec<bool>,
    /// The group index of each claimed node.
    pub claimed: Vec<Option<usize>>,
    pub groups: Vec<Group>,
}

impl<'g> FusionState<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        let n = graph.len();
        let mut consumers = vec![Vec::new(); n];
        for (i, node) in graph.nodes().iter().enumerate() {
            for inp in &node.inputs {
                if !consumers[inp.0].contains(&i) {
                    consumers[inp.0].push(i);
                }
            }
        }
        let mut is_output = vec![false; n];
        for o in graph.outputs() {
            is_output[o.0] = true;
        }
        FusionState {
            graph,
            consumers,
            is_output,
            claimed: vec![None; n],
            groups: Vec::new(),
        }
    }

    pub fn node(&self, i: usize) -> &kiln_ir::Node {
        &self.graph.nodes()[i]
    }

    /// The single reader of `i`, if it has exactly one and is not an output.
    pub fn sole_consumer(&self, i: usize) -> Option<usize> {
        match self.consumers[i].as_slice() {
            [c] if !self.is_output[i] => Some(*c),
            _ => None,
        }
    }

    pub fn is_free(&self, i: usize) -> bool {
        self.claimed[i].is_none()
    }

    /// Records a group, claiming its nodes.
    pub fn claim(&mut self, group: Group) {
        let idx = self.groups.len();
        for &n in group.writes.iter().chain(&group.internal) {
            self.claimed[n] = Some(idx);
        }
        self.groups.push(group);
    }

    /// Removes a group so a later pass can absorb it into a larger one. Its slot in `groups`
    /// stays as an empty tombstone so other groups keep their indices.
    pub fn take(&mut self, idx: usize) -> Group {
        let g = self.groups[idx].clone();
        for &n in g.writes.iter().chain(&g.internal) {
            self.claimed[n] = None;
        }
        self.groups[idx].writes.clear();
        self.groups[idx].internal.clear();
        g
    }

    /// The node id of input `k` of node `i`.
    pub fn input(&self, i: usize, k: usize) -> usize {
        self.node(i).inputs[k].0
    }
}

/// The live groups (no tombstones) that `passes` form on `g`, run in order: what each pass's
/// tests inspect.
#[cfg(test)]
pub(crate) fn groups_after(g: &Graph, passes: &[fn(&mut FusionState<'_>)]) -> Vec<Group> {
    let mut st = FusionState::new(g);
    for pass in passes {
        pass(&mut st);
    }
    st.groups
        .into_iter()
        .filter(|gr| !gr.writes.is_empty())
        .collect()
}
