//! Typed errors of graph construction, validation and binding.

use crate::dtype::DType;
use thiserror::Error;

/// Why an op cannot be applied to its inputs. Wrapped in [`IrError::Node`], which names the node.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum InferError {
    #[error("expects {expected} inputs, got {got}")]
    Arity { expected: String, got: usize },
    #[error("input {input} must have rank {expected}, got rank {got}")]
    Rank {
        input: usize,
        expected: String,
        got: usize,
    },
    #[error("input {input} has dtype {got}, expected {expected}")]
    DType {
        input: usize,
        expected: String,
        got: DType,
    },
    #[error("axis {axis} is out of range for rank {rank}")]
    Axis { axis: usize, rank: usize },
    #[error("shape mismatch: {0}")]
    Shape(String),
    #[error("invalid attribute: {0}")]
    Attr(String),
}

/// Errors from building, validating, loading or binding a graph.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum IrError {
    /// An op rejected its inputs or attributes.
    #[error("node {node} ({op}): {source}")]
    Node {
        /// `%id` plus the node's name when it has one, e.g. `%12 "layer0.qkv"`.
        node: String,
        op: &'static str,
        #[source]
        source: InferError,
    },
    #[error("node %{node} refers to node %{input}, which does not come before it")]
    NotTopological { node: usize, input: usize },
    #[error("node id %{id} does not exist (the graph has {len} nodes)")]
    UnknownNode { id: usize, len: usize },
    #[error("the name `{name}` is used by more than one input or param")]
    DuplicateName { name: String },
    #[error("node %{node} records shape {recorded} / {recorded_dtype}, but its op gives {inferred} / {inferred_dtype}")]
    StaleShape {
        node: usize,
        recorded: String,
        recorded_dtype: DType,
        inferred: String,
        inferred_dtype: DType,
    },
    #[error("the graph has no outputs")]
    NoOutputs,
    #[error("symbol `{symbol}` has no value in the binding")]
    Unbound { symbol: String },
    #[error("symbol `{symbol}` = {value} exceeds its bound {max}")]
    AboveBound {
        symbol: String,
        value: usize,
        max: usize,
    },
    #[error("symbol `{symbol}` is bound to both {first} and {second} by the given shapes")]
    ConflictingBinding {
        symbol: String,
        first: usize,
        second: usize,
    },
    #[error("input `{name}`: {detail}")]
    InputShape { name: String, detail: String },
    #[error("no input named `{name}`")]
    UnknownInput { name: String },
    #[error("invalid graph JSON: {0}")]
    Json(String),
}
