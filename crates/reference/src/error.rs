//! Errors of the reference interpreter.

use kiln_ir::{DType, IrError};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Error)]
pub enum RefError {
    #[error(transparent)]
    Graph(#[from] IrError),
    #[error("no input or param named `{name}`")]
    UnknownName { name: String },
    #[error("input `{name}` was not given")]
    MissingInput { name: String },
    #[error("param `{name}` was not set")]
    MissingParam { name: String },
    #[error("`{name}`: expected {expected_dtype}{expected_shape:?}, got {got_dtype}{got_shape:?}")]
    Mismatch {
        name: String,
        expected_dtype: DType,
        expected_shape: Vec<usize>,
        got_dtype: DType,
        got_shape: Vec<usize>,
    },
    #[error("`{name}`: {detail}")]
    BadData { name: String, detail: String },
    #[error("node %{node} ({op}): index {index} is out of range for an axis of size {size}")]
    IndexOutOfRange {
        node: usize,
        op: &'static str,
        index: i64,
        size: usize,
    },
    #[error(
        "node %{node} (attention): past length {past} + {seq_q} queries exceed the {seq_k} keys"
    )]
    PastTooLong {
        node: usize,
        past: i64,
        seq_q: usize,
        seq_k: usize,
    },
    #[error("node %{node} ({op}): {detail}")]
    Unsupported {
        node: usize,
        op: &'static str,
        detail: String,
    },
}
