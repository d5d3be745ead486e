//! Typed errors of running graphs on the device.

use kiln_ir::IrError;
use kiln_kernels::PipelineError;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum RunError {
    #[error(transparent)]
    Graph(#[from] IrError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    #[error("no input named `{name}`")]
    UnknownInput { name: String },
    #[error("no param named `{name}`")]
    UnknownParam { name: String },
    #[error("output index {index} is out of range ({count} outputs)")]
    InvalidOutput { index: usize, count: usize },
    #[error("no bounded symbol named `{symbol}`")]
    UnknownSymbol { symbol: String },
    #[error("`{symbol}` = {value} is outside 1..={max} (its bound)")]
    ExtentOutOfRange {
        symbol: String,
        value: usize,
        max: usize,
    },
    #[error("input `{name}` was not given")]
    MissingInput { name: String },
    #[error("param `{name}` was not set")]
    MissingParam { name: String },
    #[error("`{name}`: expected {expected}, got {got}")]
    Mismatch {
        name: String,
        expected: String,
        got: String,
    },
    #[error("node %{node} ({op}): {detail}")]
    Unsupported {
        node: usize,
        op: &'static str,
        detail: String,
    },
    #[error("the arena needs {bytes} bytes, above the device's storage binding limit of {limit}")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("reading results back failed: {0}")]
    Map(String),
    #[error("the device refused a buffer: {0}")]
    Device(String),
}
