//! kiln's graph IR: element types, shapes with symbolic dims, ops, graphs and shape inference.
//!
//! This crate has no GPU dependency: a CPU, CUDA or Metal backend can build on it alone.
//!
//! ```
//! use kiln_ir::{Activation, DType, Dim, Graph, Shape};
//! let mut g = Graph::new();
//! let x = g.input("x", DType::F32, Shape(vec![Dim::bounded("seq", 128), Dim::Static(64)])).unwrap();
//! let w = g.param("w", DType::F32, [64, 32]).unwrap();
//! let y = g.matmul(x, w).unwrap();
//! let y = g.activation(Activation::Gelu, y).unwrap();
//! g.output(y).unwrap();
//! assert_eq!(g.node(y).unwrap().shape.to_string(), "[seq<=128, 32]");
//! ```

mod builders;
mod display;
pub mod dtype;
pub mod error;
pub mod graph;
pub mod infer;
pub mod op;
pub mod quant;
pub mod rng;
pub mod shape;
pub mod tensor;

pub use dtype::{DType, StorageLayout, ALL_DTYPES};
pub use error::{InferError, IrError};
pub use graph::{Graph, Node, NodeId};
pub use op::*;
pub use shape::{broadcast_shapes, Dim, DimBinding, Shape};
pub use tensor::{HostTensor, TensorError};
