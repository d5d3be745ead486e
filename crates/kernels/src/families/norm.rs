//! LayerNorm / RMSNorm over the last axis, fused with residual, bias, and the "tee" that also
//! writes the pre-norm sum.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::lower::{require_f32, u32_of, Dispatch, LowerError, Operand};
use crate::params::KernelParams;
use kiln_ir::{Affine, NormKind, Op};

kernel_params! {
    /// Params of the `norm` entry point.
    pub struct NormParams as "NormParams" {
        pub rows: u32,
        pub width: u32,
        pub kind: u32,
        pub eps: f32,
        pub x_offset: u32,
        pub residual_offset: u32,
        pub bias_offset: u32,
        pub gamma_offset: u32,
        pub beta_offset: u32,
        pub out_offset: u32,
        pub sum_offset: u32,
        pub flags: u32,
        pub groups_x: u32,
        /// Above 1: `x` is this many partial products of a split-k matmul, `chunk_words`
        /// apart, which the norm adds up (see [`XChunks`]).
        pub x_chunks: u32,
        pub chunk_words: u32,
        pub _pad0: u32,
    }
}

const FLAG_RESIDUAL: u32 = 1;
const FLAG_BIAS: u32 = 2;
const FLAG_GAMMA: u32 = 4;
const FLAG_BETA: u32 = 8;
const FLAG_TEE: u32 = 16;

pub const NORM: KernelDesc = KernelDesc {
    name: "norm",
    file: "norm.wgsl",
    source: include_str!("../../../../shaders/norm.wgsl"),
    entry: "norm",
    workgroup_size: [256, 1, 1],
    bindings: &[Binding::StorageReadWrite, Binding::Uniform],
    params: NormParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// [`NORM`] with 64 invocations per row instead of 256, from [`MANY_ROWS`] rows on.
pub const NORM_MANY_ROWS: KernelDesc = KernelDesc {
    name: "norm_many_rows",
    workgroup_size: [64, 1, 1],
    constants: &[("WG", 64.0)],
    ..NORM
};

/// From this many rows on, a norm runs on [`NORM_MANY_ROWS`]: with thousands of rows,
/// workgroups of 64 fill the GPU and each waits on shorter reductions (MiniLM 32 x 128's
/// 4096 rows of 384: 23.5 -> 17.6 µs per norm on the H200); with few rows the 256 invocations
/// of [`NORM`] share a row's latency better (16 rows: slower with 64). Between the two
/// measured points the threshold is a round guess.
pub const MANY_ROWS: usize = 1024;

/// The norm kernels a step may move between when its extent changes (they bind alike).
pub const EXTENT_VARIANTS: [&KernelDesc; 2] = [&NORM, &NORM_MANY_ROWS];

/// A split-k matmul's partial products standing for a norm's `x`: `count` of them, each laid
/// out like `x`, `stride` words apart from `x`'s offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XChunks {
    pub count: u32,
    pub stride: u32,
}

/// The operands of one (possibly fused) norm.
#[derive(Debug, Clone, Copy)]
pub struct NormArgs<'a> {
    pub kind: NormKind,
    pub eps: f32,
    pub x: &'a Operand,
    /// `x` as the chunks of a split-k matmul, added up in chunk order and then to `bias` and
    /// `residual` (the order of the matmul's own sum dispatch and a separate norm, so the
    /// result is the same to the bit).
    pub x_chunks: Option<XChunks>,
    pub residual: Option<&'a Operand>,
    pub bias: Option<&'a Operand>,
    pub gamma: Option<&'a Operand>,
    pub beta: Option<&'a Operand>,
    pub out: &'a Operand,
    /// Where to also write `x + residual + bias` (the tee).
    pub sum_out: Option<&'a Operand>,
}

/// Lowers `Norm` and `FusedResidualNorm`.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    let (kind, eps, affine, lead, has_bias) = match op {
        Op::Norm { kind, eps, affine } => (*kind, *eps, *affine, 1, false),
        Op::FusedResidualNorm {
            kind,
            eps,
            affine,
            has_bias,
        } => (*kind, *eps, *affine, 2, *has_bias),
        _ => return Err(LowerError::unsupported(op, "not a norm")),
    };
    let p = lead + usize::from(has_bias);
    lower_args(
        op,
        &NormArgs {
            kind,
            eps,
            x: &inputs[0],
            x_chunks: None,
            residual: (lead == 2).then(|| &inputs[1]),
            bias: has_bias.then(|| &inputs[2]),
            gamma: (affine != Affine::None).then(|| &inputs[p]),
            beta: (affine == Affine::ScaleShift).then(|| &inputs[p + 1]),
            out,
            sum_out: None,
        },
    )
}

/// Lowers a norm described by `args` (also used by the residual-tee fusion).
pub fn lower_args(op: &Op, args: &NormArgs<'_>) -> Result<Vec<Dispatch>, LowerError> {
    let all = [args.x, args.out]
        .into_iter()
        .chain(args.residual)
        .chain(args.bias)
        .chain(args.gamma)
        .chain(args.beta)
        .chain(args.sum_out);
    require_f32(op, all)?;
    let width = *args.x.dims.last().unwrap_or(&1);
    let rows = args.x.numel() / width.max(1);
    let groups_x = rows.clamp(1, crate::dispatch::MAX_GROUPS_PER_DIM as usize);
    let groups_y = rows.div_ceil(groups_x).max(1);
    let flag = |o: Option<&Operand>, f: u32| if o.is_some() { f } else { 0 };
    let offset = |o: Option<&Operand>| o.map_or(0, |o| o.offset);
    let p = NormParams {
        rows: u32_of(op, "rows", rows)?,
        width: u32_of(op, "width", width)?,
        kind: match args.kind {
            NormKind::Layer => 0,
            NormKind::Rms => 1,
            NormKind::L2 => 2,
        },
        eps: args.eps,
        x_offset: args.x.offset,
        residual_offset: offset(args.residual),
        bias_offset: offset(args.bias),
        gamma_offset: offset(args.gamma),
        beta_offset: offset(args.beta),
        out_offset: args.out.offset,
        sum_offset: offset(args.sum_out),
        flags: flag(args.residual, FLAG_RESIDUAL)
            | flag(args.bias, FLAG_BIAS)
            | flag(args.gamma, FLAG_GAMMA)
            | flag(args.beta, FLAG_BETA)
            | flag(args.sum_out, FLAG_TEE),
        groups_x: groups_x as u32,
        x_chunks: args.x_chunks.map_or(1, |c| c.count),
        chunk_words: args.x_chunks.map_or(0, |c| c.stride),
        ..Default::default()
    };
    let groups = [groups_x as u32, u32_of(op, "row groups", groups_y)?, 1];
    let kernel = if rows >= MANY_ROWS {
        &NORM_MANY_ROWS
    } else {
        &NORM
    };
    Ok(vec![Dispatch::new(kernel, &p, groups)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    fn kernel_for(rows: usize, width: usize) -> &'static str {
        let x = Operand::new(0, &[rows, width], DType::F32);
        let out = Operand::new(1 << 24, &[rows, width], DType::F32);
        let args = NormArgs {
            kind: NormKind::Rms,
            eps: 1e-6,
            x: &x,
            x_chunks: None,
            residual: None,
            bias: None,
            gamma: None,
            beta: None,
            out: &out,
            sum_out: None,
        };
        let op = Op::Norm {
            kind: NormKind::Rms,
            eps: 1e-6,
            affine: Affine::None,
        };
        lower_args(&op, &args).unwrap()[0].kernel.name
    }

    #[test]
    fn many_rows_take_the_smaller_workgroups() {
        assert_eq!(kernel_for(16, 384), "norm");
        assert_eq!(kernel_for(MANY_ROWS - 1, 384), "norm");
        assert_eq!(kernel_for(MANY_ROWS, 384), "norm_many_rows");
        assert_eq!(kernel_for(4096, 384), "norm_many_rows");
        assert!(NORM.binds_like(&NORM_MANY_ROWS));
    }
}
