//! Elementwise kernels: binary/compare with broadcasting by strides, and unary activations.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::lower::{
    broadcast_strides, coalesce_dims, grid, require_f32, u32_of, Dispatch, LowerError, Operand,
};
use crate::params::KernelParams;
use kiln_ir::{Activation, BinaryOp, CompareOp, DType, Op};

/// The most dims a broadcasting kernel handles (two vec4s per stride list).
pub const MAX_RANK: usize = 8;

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/activations.wgsl"),
    include_str!("../../../../shaders/elementwise.wgsl")
);
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
        /// Activation applied to operand a first, or [`NO_ACTIVATION`].
        pub act_a: u32,
        pub out_shape: [[u32; 4]; 2],
        pub a_strides: [[u32; 4]; 2],
        pub b_strides: [[u32; 4]; 2],
    }
}

/// The `act_a` value meaning "none".
pub const NO_ACTIVATION: u32 = u32::MAX;

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

kernel_params! {
    /// Params of the `where_select` entry point.
    pub struct WhereParams as "WhereParams" {
        pub numel: u32,
        pub rank: u32,
        pub cond_offset: u32,
        pub a_offset: u32,
        pub b_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
        pub _pad: u32,
        pub out_shape: [[u32; 4]; 2],
        pub cond_strides: [[u32; 4]; 2],
        pub a_strides: [[u32; 4]; 2],
        pub b_strides: [[u32; 4]; 2],
    }
}

pub const WHERE: KernelDesc = KernelDesc {
    name: "where_select",
    file: "elementwise.wgsl",
    source: SOURCE,
    entry: "where_select",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: WhereParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// Binds the arena as vec4s too (unused), like [`BINARY_QUADS`]: a step moves between the two
/// when its active extent changes whether the operands fall into quads.
pub const BINARY: KernelDesc = KernelDesc {
    name: "binary",
    file: "elementwise.wgsl",
    source: SOURCE,
    entry: "binary",
    workgroup_size: [64, 1, 1],
    bindings: &[
        Binding::StorageReadWrite,
        Binding::Uniform,
        Binding::ArenaVec4,
    ],
    params: BinaryParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// [`BINARY`] a vec4 at a time (see [`as_quads`]).
pub const BINARY_QUADS: KernelDesc = KernelDesc {
    name: "binary_quads",
    entry: "binary_quads",
    ..BINARY
};

/// The binary kernels a planned step moves between when its extent changes: an extent can
/// leave the coalesced operands out of quads (8 x 2 values fall into quads, 3 x 2 do not).
pub const EXTENT_VARIANTS: [&KernelDesc; 2] = [&BINARY, &BINARY_QUADS];

/// The coalesced `dims` and `strides` of a binary op in units of vec4s, where every operand
/// walks its innermost dim contiguously in a multiple of four and every other stride and every
/// offset is a multiple of four (16-byte aligned); `None` otherwise.
fn as_quads(
    dims: &[usize],
    strides: &[Vec<usize>],
    offsets: [u32; 3],
) -> Option<(Vec<usize>, Vec<Vec<usize>>)> {
    let inner = *dims.last()?;
    let aligned = inner.is_multiple_of(4)
        && offsets.iter().all(|o| o.is_multiple_of(4))
        && strides.iter().all(|st| {
            st.last() == Some(&1) && st[..st.len() - 1].iter().all(|s| s.is_multiple_of(4))
        });
    if !aligned {
        return None;
    }
    let mut quad_dims = dims.to_vec();
    *quad_dims.last_mut()? /= 4;
    let quad_strides = strides
        .iter()
        .map(|st| {
            let mut q: Vec<usize> = st.iter().map(|s| s / 4).collect();
            *q.last_mut().expect("checked above: a last stride of 1") = 1;
            q
        })
        .collect();
    Some((quad_dims, quad_strides))
}

pub const UNARY: KernelDesc = KernelDesc {
    name: "unary",
    file: "elementwise.wgsl",
    source: SOURCE,
    entry: "unary",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: UnaryParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
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

/// Packs up to [`MAX_RANK`] dims into the shader's vec4 pairs.
pub fn pack_dims(op: &Op, dims: &[usize]) -> Result<[[u32; 4]; 2], LowerError> {
    if dims.len() > MAX_RANK {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "rank",
            value: dims.len() as u64,
            limit: MAX_RANK as u64,
        });
    }
    let mut out = [[0u32; 4]; 2];
    for (i, &d) in dims.iter().enumerate() {
        out[i / 4][i % 4] = u32_of(op, "dim", d)?;
    }
    Ok(out)
}

/// Lowers `Where`: the condition is any float-word tensor (bool or f32), a and b are f32.
fn lower_where(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    if crate::lower::repr(inputs[0].dtype) != crate::lower::Repr::F32 {
        return Err(LowerError::unsupported(
            op,
            format!("condition dtype {}", inputs[0].dtype),
        ));
    }
    require_f32(op, [&inputs[1], &inputs[2], out])?;
    let numel = out.numel();
    let g = grid(op, numel, 64)?;
    let (dims, st) = coalesce_dims(
        &out.dims,
        &[0, 1, 2].map(|i| broadcast_strides(&inputs[i].dims, &out.dims)),
    );
    let s = |i: usize| pack_dims(op, &st[i]);
    let p = WhereParams {
        numel: u32_of(op, "elements", numel)?,
        rank: dims.len() as u32,
        cond_offset: inputs[0].offset,
        a_offset: inputs[1].offset,
        b_offset: inputs[2].offset,
        out_offset: out.offset,
        grid_width: g.grid_width,
        _pad: 0,
        out_shape: pack_dims(op, &dims)?,
        cond_strides: s(0)?,
        a_strides: s(1)?,
        b_strides: s(2)?,
    };
    Ok(vec![Dispatch::new(&WHERE, &p, g.groups)])
}

/// Lowers binary, compare, where and activation ops.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    if matches!(op, Op::Where) {
        return lower_where(op, inputs, out);
    }
    require_f32(op, inputs)?;
    if !(out.dtype == DType::F32 || (out.dtype == DType::Bool && matches!(op, Op::Compare { .. })))
    {
        require_f32(op, [out])?;
    }
    let numel = out.numel();
    let g = grid(op, numel, 64)?;
    let n = u32_of(op, "elements", numel)?;
    let dispatch = match op {
        Op::Binary { .. } | Op::Compare { .. } => {
            let code = match op {
                Op::Binary { kind } => binary_op_id(*kind),
                Op::Compare { kind } => compare_op_id(*kind),
                _ => unreachable!("matched by the outer arm"),
            };
            let (dims, st) = coalesce_dims(
                &out.dims,
                &[0, 1].map(|i| broadcast_strides(&inputs[i].dims, &out.dims)),
            );
            let offsets = [inputs[0].offset, inputs[1].offset, out.offset];
            // Offsets stay in words; the quads kernel divides them.
            let (kernel, dims, st, g, n) = match as_quads(&dims, &st, offsets) {
                Some((dims, st)) => {
                    let quads = numel / 4;
                    let g = grid(op, quads, 64)?;
                    (&BINARY_QUADS, dims, st, g, u32_of(op, "elements", quads)?)
                }
                None => (&BINARY, dims, st, g, n),
            };
            let p = BinaryParams {
                numel: n,
                op: code,
                rank: dims.len() as u32,
                a_offset: inputs[0].offset,
                b_offset: inputs[1].offset,
                out_offset: out.offset,
                grid_width: g.grid_width,
                act_a: NO_ACTIVATION,
                out_shape: pack_dims(op, &dims)?,
                a_strides: pack_dims(op, &st[0])?,
                b_strides: pack_dims(op, &st[1])?,
            };
            Dispatch::new(kernel, &p, g.groups)
        }
        Op::Activation { kind } => {
            let p = UnaryParams {
                numel: n,
                op: activation_id(*kind),
                in_offset: inputs[0].offset,
                out_offset: out.offset,
                grid_width: g.grid_width,
                ..Default::default()
            };
            Dispatch::new(&UNARY, &p, g.groups)
        }
        _ => return Err(LowerError::unsupported(op, "not an elementwise op")),
    };
    Ok(vec![dispatch])
}

/// Lowers `binary(act(a), b)` as one dispatch (the activation-into-binary fusion, e.g. SwiGLU's
/// `silu(gate) * up`). With `swap`, the IR node is `binary(b, act(a))` of a commutative op.
pub fn lower_act_binary(
    binary: &Op,
    act: Activation,
    a: &Operand,
    b: &Operand,
    out: &Operand,
) -> Result<Vec<Dispatch>, LowerError> {
    let mut d = lower(binary, &[a.clone(), b.clone()], out)?;
    let mut p: BinaryParams = bytemuck::pod_read_unaligned(&d[0].params);
    p.act_a = activation_id(act);
    d[0].params = bytemuck::bytes_of(&p).to_vec();
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quads_where_every_operand_walks_aligned_rows() {
        let st = |v: &[usize]| v.to_vec();
        // A [3, 8] plus a broadcast row of 8: quads of 2 per row.
        let q = as_quads(&[3, 8], &[st(&[8, 1]), st(&[0, 1])], [0, 24, 48]).unwrap();
        assert_eq!(q, (vec![3, 2], vec![st(&[2, 1]), st(&[0, 1])]));
        // An innermost broadcast (stride 0), a row of 6, an odd offset: words.
        assert!(as_quads(&[3, 8], &[st(&[8, 1]), st(&[1, 0])], [0, 24, 48]).is_none());
        assert!(as_quads(&[3, 6], &[st(&[6, 1]), st(&[6, 1])], [0, 24, 48]).is_none());
        assert!(as_quads(&[3, 8], &[st(&[8, 1]), st(&[8, 1])], [0, 26, 48]).is_none());
        assert!(as_quads(&[], &[st(&[]), st(&[])], [0, 0, 0]).is_none());
    }
}
