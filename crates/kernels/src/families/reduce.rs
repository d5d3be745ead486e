//! Reduction kernels: `reduce` over any set of axes, `softmax` and `cumsum` over any axis.
//!
//! `reduce` and `softmax` run one 256-thread workgroup per output element / row and combine
//! strided partials with a tree in workgroup memory; `cumsum` runs one invocation per line with
//! a sequential loop (a workgroup scan would serve long lines better).

use crate::desc::{Binding, KernelDesc, Needs};
use crate::families::elementwise::pack_dims;
use crate::kernel_params;
use crate::lower::{
    coalesce_dims, grid, require_f32, strides, u32_of, Dispatch, LowerError, Operand,
};
use crate::params::KernelParams;
use kiln_ir::{Op, ReduceOp};

/// The most dims the kept and the reduced sub-shapes may each have after merging adjacent axes.
pub const MAX_RANK: usize = 8;

/// Threads per workgroup of `reduce` and `softmax` (the `WG` constant of `reduce.wgsl`).
pub const ROW_WORKGROUP: u32 = 256;

/// Up to this many reduced elements per output, with the innermost kept axis contiguous, a
/// workgroup reduces [`OUTPUTS_PER_GROUP`] consecutive outputs, 32 invocations each: the
/// neighbours' loads then share memory sectors (MiniLM's mean pooling, a sum over 128 tokens of
/// 384-wide rows, read each sector eight times with one output per workgroup: 39 µs on an H200).
/// Longer reductions keep all 256 invocations on one output (a shorter sequential part per
/// invocation).
pub const SHARED_MAX_COUNT: usize = 1024;
/// See [`SHARED_MAX_COUNT`].
pub const OUTPUTS_PER_GROUP: u32 = 8;

/// Up to [`MAX_RANK`] values packed four to a vec4, as the shader's uniform arrays need.
type Packed = [[u32; 4]; 2];

const SOURCE: &str = include_str!("../../../../shaders/reduce.wgsl");
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];
const NEEDS: Needs = Needs::BASELINE;

kernel_params! {
    /// Params of the `reduce` entry point.
    pub struct ReduceParams as "ReduceParams" {
        /// [`reduce_op_id`].
        pub kind: u32,
        /// Reduced elements per output element.
        pub count: u32,
        pub out_numel: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub kept_rank: u32,
        pub red_rank: u32,
        pub groups_x: u32,
        /// Outputs per workgroup: 1, or [`OUTPUTS_PER_GROUP`] (see [`SHARED_MAX_COUNT`]).
        pub per_group: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        pub _pad2: u32,
        pub kept_shape: Packed,
        pub kept_strides: Packed,
        pub red_shape: Packed,
        pub red_strides: Packed,
    }
}

kernel_params! {
    /// Params of the `softmax` entry point.
    pub struct SoftmaxParams as "SoftmaxParams" {
        pub rows: u32,
        pub axis_len: u32,
        pub inner: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub groups_x: u32,
        pub _pad0: u32,
        pub _pad1: u32,
    }
}

kernel_params! {
    /// Params of the `cumsum` entry point.
    pub struct CumsumParams as "CumsumParams" {
        pub lines: u32,
        pub axis_len: u32,
        pub inner: u32,
        pub exclusive: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
        pub _pad: u32,
    }
}

pub const REDUCE: KernelDesc = KernelDesc {
    name: "reduce",
    file: "reduce.wgsl",
    source: SOURCE,
    entry: "reduce",
    workgroup_size: [ROW_WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: ReduceParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

pub const SOFTMAX: KernelDesc = KernelDesc {
    name: "softmax",
    file: "reduce.wgsl",
    source: SOURCE,
    entry: "softmax",
    workgroup_size: [ROW_WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: SoftmaxParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

pub const CUMSUM: KernelDesc = KernelDesc {
    name: "cumsum",
    file: "reduce.wgsl",
    source: SOURCE,
    entry: "cumsum",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: CumsumParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// The shader's id of a reduction.
pub const fn reduce_op_id(kind: ReduceOp) -> u32 {
    match kind {
        ReduceOp::Sum => 0,
        ReduceOp::Mean => 1,
        ReduceOp::Max => 2,
        ReduceOp::Min => 3,
        ReduceOp::Prod => 4,
    }
}

/// Lowers reduce, softmax and cumsum (f32 only).
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    let x = inputs
        .first()
        .ok_or_else(|| LowerError::unsupported(op, "missing input"))?;
    require_f32(op, [x, out])?;
    if out.numel() == 0 {
        return Ok(Vec::new());
    }
    let dispatch = match op {
        Op::Reduce { kind, axes, .. } => lower_reduce(op, *kind, axes, x, out)?,
        Op::Softmax { axis } => lower_softmax(op, *axis, x, out)?,
        Op::Cumsum { axis, exclusive } => lower_cumsum(op, *axis, *exclusive, x, out)?,
        _ => return Err(LowerError::unsupported(op, "not a reduction")),
    };
    Ok(vec![dispatch])
}

/// Some of the input's axes: their dims and input strides.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct SubShape {
    dims: Vec<usize>,
    strides: Vec<usize>,
}

impl SubShape {
    fn packed(&self, op: &Op) -> Result<(Packed, Packed), LowerError> {
        Ok((pack_dims(op, &self.dims)?, pack_dims(op, &self.strides)?))
    }
}

/// Splits the input's axes into the kept and the reduced sub-shapes, each with its
/// contiguous axes merged and size-1 axes dropped (`coalesce_dims`): fewer dims mean fewer
/// divisions per element in the shader, and neither changes offsets or the output order.
fn split_axes(dims: &[usize], axes: &[usize]) -> (SubShape, SubShape) {
    let all = strides(dims);
    let pick = |reduced: bool| {
        let (d, s): (Vec<usize>, Vec<usize>) = (0..dims.len())
            .filter(|i| axes.contains(i) == reduced)
            .map(|i| (dims[i], all[i]))
            .unzip();
        let (dims, mut strides) = coalesce_dims(&d, &[s]);
        SubShape {
            dims,
            strides: strides.remove(0),
        }
    };
    (pick(false), pick(true))
}

fn lower_reduce(
    op: &Op,
    kind: ReduceOp,
    axes: &[usize],
    x: &Operand,
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    let (kept, red) = split_axes(&x.dims, axes);
    let count: usize = red.dims.iter().product();
    let (kept_shape, kept_strides) = kept.packed(op)?;
    let (red_shape, red_strides) = red.packed(op)?;
    let shared = count <= SHARED_MAX_COUNT && kept.strides.last() == Some(&1);
    let per_group = if shared { OUTPUTS_PER_GROUP } else { 1 };
    let g = grid(op, out.numel().div_ceil(per_group as usize), 1)?;
    let p = ReduceParams {
        kind: reduce_op_id(kind),
        count: u32_of(op, "reduced elements", count)?,
        out_numel: u32_of(op, "elements", out.numel())?,
        in_offset: x.offset,
        out_offset: out.offset,
        kept_rank: kept.dims.len() as u32,
        red_rank: red.dims.len() as u32,
        groups_x: g.groups[0],
        per_group,
        _pad0: 0,
        _pad1: 0,
        _pad2: 0,
        kept_shape,
        kept_strides,
        red_shape,
        red_strides,
    };
    Ok(Dispatch::new(&REDUCE, &p, g.groups))
}

/// (outer, axis length, inner) element counts around `axis`, checked against the input's rank.
fn around_axis(op: &Op, dims: &[usize], axis: usize) -> Result<(usize, usize, usize), LowerError> {
    let len = *dims.get(axis).ok_or_else(|| {
        LowerError::unsupported(op, format!("axis {axis} out of range for {dims:?}"))
    })?;
    let outer = dims[..axis].iter().product();
    let inner = dims[axis + 1..].iter().product();
    Ok((outer, len, inner))
}

fn lower_softmax(op: &Op, axis: usize, x: &Operand, out: &Operand) -> Result<Dispatch, LowerError> {
    let (outer, len, inner) = around_axis(op, &x.dims, axis)?;
    let rows = outer * inner;
    let g = grid(op, rows, 1)?;
    let p = SoftmaxParams {
        rows: u32_of(op, "rows", rows)?,
        axis_len: u32_of(op, "axis length", len)?,
        inner: u32_of(op, "inner size", inner)?,
        in_offset: x.offset,
        out_offset: out.offset,
        groups_x: g.groups[0],
        ..Default::default()
    };
    Ok(Dispatch::new(&SOFTMAX, &p, g.groups))
}

fn lower_cumsum(
    op: &Op,
    axis: usize,
    exclusive: bool,
    x: &Operand,
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    let (outer, len, inner) = around_axis(op, &x.dims, axis)?;
    let lines = outer * inner;
    let g = grid(op, lines, CUMSUM.workgroup_size[0])?;
    let p = CumsumParams {
        lines: u32_of(op, "lines", lines)?,
        axis_len: u32_of(op, "axis length", len)?,
        inner: u32_of(op, "inner size", inner)?,
        exclusive: u32::from(exclusive),
        in_offset: x.offset,
        out_offset: out.offset,
        grid_width: g.grid_width,
        _pad: 0,
    };
    Ok(Dispatch::new(&CUMSUM, &p, g.groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    fn operand(offset: u32, dims: &[usize]) -> Operand {
        Operand::new(offset, dims, DType::F32)
    }

    #[test]
    fn adjacent_axes_merge_and_size_one_axes_drop() {
        // [2, 3, 1, 4, 5] reducing axes 0 and 3: kept {1, 4}, reduced {0, 3}; none adjacent.
        let (kept, red) = split_axes(&[2, 3, 1, 4, 5], &[0, 3]);
        assert_eq!(kept.dims, [3, 5]);
        assert_eq!(kept.strides, [20, 1]);
        assert_eq!(red.dims, [2, 4]);
        assert_eq!(red.strides, [60, 5]);
        // Reducing 1 and 3 merges them: the size-1 axis between does not break contiguity.
        let (kept, red) = split_axes(&[2, 3, 1, 4, 5], &[3, 1]);
        assert_eq!(red.dims, [12]);
        assert_eq!(red.strides, [5]);
        assert_eq!(kept.dims, [2, 5]);
    }

    #[test]
    fn reduce_params_describe_the_sub_shapes() {
        let op = Op::Reduce {
            kind: ReduceOp::Mean,
            axes: vec![0, 2],
            keep_dim: true,
        };
        let d = lower(&op, &[operand(8, &[4, 3, 5])], &operand(100, &[1, 3, 1])).unwrap();
        assert_eq!(d.len(), 1);
        let p: ReduceParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.kind, p.count, p.out_numel), (1, 20, 3));
        assert_eq!((p.kept_rank, p.red_rank), (1, 2));
        assert_eq!(p.kept_strides[0][0], 5);
        assert_eq!(p.red_shape[0][..2], [4, 5]);
        assert_eq!(p.red_strides[0][..2], [15, 1]);
        assert_eq!(d[0].groups, [3, 1, 1]);
    }

    #[test]
    fn softmax_and_cumsum_split_around_the_axis() {
        let x = operand(0, &[2, 7, 3]);
        let d = lower(
            &Op::Softmax { axis: 1 },
            std::slice::from_ref(&x),
            &operand(64, &[2, 7, 3]),
        )
        .unwrap();
        let p: SoftmaxParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.rows, p.axis_len, p.inner), (6, 7, 3));
        let op = Op::Cumsum {
            axis: 2,
            exclusive: true,
        };
        let d = lower(&op, &[x], &operand(64, &[2, 7, 3])).unwrap();
        let p: CumsumParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.lines, p.axis_len, p.inner, p.exclusive), (14, 3, 1, 1));
    }

    #[test]
    fn integer_reductions_are_unsupported_and_empty_outputs_dispatch_nothing() {
        let op = Op::Reduce {
            kind: ReduceOp::Sum,
            axes: vec![0],
            keep_dim: false,
        };
        let mut x = operand(0, &[4]);
        x.dtype = DType::I32;
        let mut out = operand(4, &[]);
        out.dtype = DType::I32;
        assert!(matches!(
            lower(&op, &[x], &out),
            Err(LowerError::Unsupported { .. })
        ));
        let d = lower(&op, &[operand(0, &[3, 0])], &operand(0, &[0])).unwrap();
        assert!(d.is_empty());
    }
}
