//! Errors of fetching, loading and running real models: one line each, naming the file.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ModelError {
    #[error("cannot fetch {package}: {detail}")]
    Fetch { package: String, detail: String },
    #[error("cannot read {path}: {detail}")]
    Read { path: String, detail: String },
    #[error("{path}: {detail}")]
    Format { path: String, detail: String },
    #[error("weight `{name}`: {detail}")]
    Weight { name: String, detail: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("text {index} has {tokens} tokens, more than the model's limit of {limit}")]
    TooLong {
        index: usize,
        tokens: usize,
        limit: usize,
    },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    #[error(transparent)]
    Compile(#[from] kiln_runtime::CompileError),
    #[error(transparent)]
    Run(#[from] kiln_runtime::RunError),
    #[error(transparent)]
    Graph(#[from] kiln_ir::IrError),
}
