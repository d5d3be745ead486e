//! One module per kernel family (one WGSL file each).

pub mod elementwise;
pub mod matmul;
pub mod movement;
pub mod norm;
