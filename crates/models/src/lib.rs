//! Real model loaders and graph builders for kiln (all-MiniLM-L6-v2 from safetensors,
//! SmolLM2-135M from a Q4_1 GGUF). They arrive with the model issues; until then this crate only
//! re-exports the IR the builders produce.

pub use kiln_ir as ir;
