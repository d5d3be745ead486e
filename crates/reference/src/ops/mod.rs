//! One module per op family. Every function returns the output values in f32; the interpreter
//! then rounds them to the node's dtype.

pub mod attention;
pub mod elementwise;
pub mod matmul;
pub mod movement;
pub mod reduce;
pub mod select;
