//! kiln: an ML graph compiler and runtime for GPUs through wgpu.
//!
//! This facade re-exports the workspace crates: [`ir`] (graphs, ops, shapes), [`plan`]
//! (memory planning and fusion), [`kernels`] (WGSL kernels), [`runtime`] (device execution)
//! and [`reference`] (the CPU interpreter every GPU result is checked against).

pub use kiln_ir as ir;
pub use kiln_kernels as kernels;
pub use kiln_plan as plan;
pub use kiln_reference as reference;
pub use kiln_runtime as runtime;
