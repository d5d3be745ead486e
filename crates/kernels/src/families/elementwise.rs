//! Elementwise kernels: binary/compare with broadcasting by strides, and unary activations.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::params::KernelParams;
use kiln_ir::{Activation, BinaryOp, CompareOp};

/// The most dims a broadcasting kernel handles (two vec4s per stride list).
pub const MAX_RANK: usize = 8;

const SOURCE: &str = include_str!("../../../../shaders/elementwise.wgsl");
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];

kernel_params! {
    /// Params of the `binary` entry point.
    pub struct BinaryParams as "BinaryParams" {
        pub numel: u32,
        /// [`binary_op_id`] or [`compare_op_id`].
        pub op: u32,
        pub rank: u32,
        pub a_offset: u32,
        pub b_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
        pub _pad: u32,
        pub out_shape: [[u32; 4]; 2],
        pub a_strides: [[u32; 4]; 2],
        pub b_strides: [[u32; 4]; 2],
    }
}

kernel_params! {
    /// Params of the `unary` entry point.
    pub struct UnaryParams as "UnaryParams" {
        pub numel: u32,
        /// [`activation_id`].
        pub op: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
    }
}

pub const BINARY: KernelDesc = KernelDesc {
    name: "binary",
    file: "elementwise.wgsl",
    source: SOURCE,
    entry: "binary",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: BinaryParams::LAYOUT,
    needs: Needs {
        f16: false,
        subgroups: false,
    },
};

pub const UNARY: KernelDesc = KernelDesc {
    name: "unary",
    file: "elementwise.wgsl",
    source: SOURCE,
    entry: "unary",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: UnaryParams::LAYOUT,
    needs: Needs {
        f16: false,
        subgroups: false,
    },
};

/// The shader's id of a binary op.
pub const fn binary_op_id(op: BinaryOp) -> u32 {
    match op {
        BinaryOp::Add => 0,
        BinaryOp::Sub => 1,
        BinaryOp::Mul => 2,
        BinaryOp::Div => 3,
        BinaryOp::Max => 4,
        BinaryOp::Min => 5,
        BinaryOp::Pow => 6,
    }
}

/// The shader's id of a comparison (its result is 1.0 or 0.0).
pub const fn compare_op_id(op: CompareOp) -> u32 {
    16 + match op {
        CompareOp::Eq => 0,
        CompareOp::Ne => 1,
        CompareOp::Lt => 2,
        CompareOp::Le => 3,
        CompareOp::Gt => 4,
        CompareOp::Ge => 5,
    }
}

/// The shader's id of an activation: its position in [`kiln_ir::ALL_ACTIVATIONS`].
pub fn activation_id(act: Activation) -> u32 {
    kiln_ir::ALL_ACTIVATIONS
        .iter()
        .position(|a| *a == act)
        .expect("ALL_ACTIVATIONS lists every variant") as u32
}

/// Packs up to [`MAX_RANK`] dims into the shader's vec4 pairs; `None` when the rank is larger
/// or a value does not fit in u32.
pub fn pack_dims(dims: &[usize]) -> Option<[[u32; 4]; 2]> {
    if dims.len() > MAX_RANK {
        return None;
    }
    let mut out = [[0u32; 4]; 2];
    for (i, &d) in dims.iter().enumerate() {
        out[i / 4][i % 4] = u32::try_from(d).ok()?;
    }
    Some(out)
}
