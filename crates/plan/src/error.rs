//! Planning errors, each naming the tensor or op.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum PlanError {
    #[error(transparent)]
    Graph(#[from] kiln_ir::IrError),
    #[error("node {node} ({op}): no kernel implements this op")]
    UnsupportedOp { node: String, op: &'static str },
    #[error(
        "node {node}: its shape {shape} has an unbounded symbol; give it an upper bound to plan"
    )]
    Unbounded { node: String, shape: String },
    #[error(
        "tensor {node} takes {bytes} bytes, more than one storage binding ({limit}); split it"
    )]
    TensorTooLarge {
        node: String,
        bytes: u64,
        limit: u64,
    },
    #[error("step {step} ({what}) needs {bytes} bytes of operands at once, more than one storage binding ({limit})")]
    StepTooLarge {
        step: usize,
        what: String,
        bytes: u64,
        limit: u64,
    },
    #[error(
        "the steps cannot be ordered: a {what} step waits on a cycle of steps (a planner bug)"
    )]
    Cycle { what: String },
    #[error("tensor {node} takes {bytes} bytes, more than the largest buffer ({limit})")]
    TensorOverBuffer {
        node: String,
        bytes: u64,
        limit: u64,
    },
    #[error(
        "the arena needs {bytes} bytes, more than the largest buffer ({limit}); at its peak, \
         around {peak_tensor}, {peak} bytes are live at once"
    )]
    ArenaTooLarge {
        bytes: u64,
        limit: u64,
        /// The most bytes live at once (the arena's lower bound) and a tensor live then.
        peak: u64,
        peak_tensor: String,
    },
    #[error("node {node}: size overflows")]
    Overflow { node: String },
}

/// `%id` plus the node's name or label, for messages.
pub fn node_name(g: &kiln_ir::Graph, id: kiln_ir::NodeId) -> String {
    match g.node(id) {
        Ok(n) => match (n.source_name(), &n.label) {
            (Some(s), _) => format!("%{} \"{s}\"", id.0),
            (None, Some(l)) => format!("%{} \"{l}\"", id.0),
            _ => format!("%{}", id.0),
        },
        Err(_) => format!("%{}", id.0),
    }
}
