//! One module per kernel family (one WGSL file each).

pub mod attention;
pub mod elementwise;
pub mod matmul;
pub mod movement;
pub mod norm;
pub mod quant;
pub mod reduce;
pub mod rope;
pub mod select;
