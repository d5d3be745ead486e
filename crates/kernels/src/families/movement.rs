//! Data movement: transpose, narrow, concat, expand, cast and staging copies through one
//! strided-copy kernel, gather (numpy take), and the row update of a tensor (in place when the
//! planner gave the output the input's slot).

use crate::desc::{Binding, KernelDesc, Needs};
use crate::families::elementwise::pack_dims;
use crate::kernel_params;
use crate::lower::{
    broadcast_strides, grid, repr, strides, u32_of, Dispatch, LowerError, Operand, Repr,
};
use crate::params::KernelParams;
use kiln_ir::{DType, Op};

const SOURCE: &str = include_str!("../../../../shaders/movement.wgsl");
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];
const NEEDS: Needs = Needs::BASELINE;

kernel_params! {
    /// Params of the `strided_copy` entry point.
    pub struct CopyParams as "CopyParams" {
        pub numel: u32,
        pub rank: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
        /// A [`Convert`] code.
        pub convert: u32,
        pub lo: i32,
        pub hi: i32,
        pub shape: [[u32; 4]; 2],
        pub in_strides: [[u32; 4]; 2],
        pub out_strides: [[u32; 4]; 2],
    }
}

kernel_params! {
    /// Params of the `gather` entry point.
    pub struct GatherParams as "GatherParams" {
        pub outer: u32,
        pub axis_size: u32,
        pub num_indices: u32,
        pub inner: u32,
        pub table_offset: u32,
        pub index_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
    }
}

kernel_params! {
    /// Params of the `update_rows` entry point.
    pub struct UpdateRowsParams as "UpdateRowsParams" {
        pub outer: u32,
        pub dest_rows: u32,
        pub rows: u32,
        pub inner: u32,
        pub start_offset: u32,
        pub grid_width: u32,
        pub _pad0: u32,
        pub _pad1: u32,
        /// Per job (the grid's z).
        pub update_offsets: [u32; 4],
        pub out_offsets: [u32; 4],
    }
}

pub const STRIDED_COPY: KernelDesc = KernelDesc {
    name: "strided_copy",
    file: "movement.wgsl",
    source: SOURCE,
    entry: "strided_copy",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: CopyParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// Binds the arena as vec4s too (unused), like [`GATHER_QUADS`], its extent variant.
pub const GATHER: KernelDesc = KernelDesc {
    name: "gather",
    file: "movement.wgsl",
    source: SOURCE,
    entry: "gather",
    workgroup_size: [64, 1, 1],
    bindings: &[
        Binding::StorageReadWrite,
        Binding::Uniform,
        Binding::ArenaVec4,
    ],
    params: GatherParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// [`GATHER`] a vec4 at a time, where rows are 16-byte aligned (see [`quads_fit`]).
pub const GATHER_QUADS: KernelDesc = KernelDesc {
    name: "gather_quads",
    entry: "gather_quads",
    ..GATHER
};

/// The gather kernels a planned step moves between when its extent changes the table's row
/// length (a table with a symbolic dim after the gathered axis) in or out of quads.
pub const EXTENT_VARIANTS: [&KernelDesc; 2] = [&GATHER, &GATHER_QUADS];

/// Whether a gather can move whole vec4s: rows of `inner` values a multiple of four long,
/// starting at 16-byte offsets in the table and the output.
fn quads_fit(table: &Operand, inner: usize, out: &Operand) -> bool {
    inner > 0
        && inner.is_multiple_of(4)
        && table.offset.is_multiple_of(4)
        && out.offset.is_multiple_of(4)
}

pub const UPDATE_ROWS: KernelDesc = KernelDesc {
    name: "update_rows",
    file: "movement.wgsl",
    source: SOURCE,
    entry: "update_rows",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: UpdateRowsParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// How `strided_copy` converts each word (the shader's `convert` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convert {
    Copy,
    FloatToInt { lo: i32, hi: i32 },
    IntToFloat,
    UintToFloat,
    FloatToBool,
    IntToBool,
    IntToInt { lo: i32, hi: i32 },
}

impl Convert {
    fn code(self) -> (u32, i32, i32) {
        match self {
            Convert::Copy => (0, 0, 0),
            Convert::FloatToInt { lo, hi } => (1, lo, hi),
            Convert::IntToFloat => (2, 0, 0),
            Convert::UintToFloat => (3, 0, 0),
            Convert::FloatToBool => (4, 0, 0),
            Convert::IntToBool => (5, 0, 0),
            Convert::IntToInt { lo, hi } => (6, lo, hi),
        }
    }
}

/// One strided copy: `shape` elements from `src` (with `src_strides`) to `dst` (with
/// `dst_strides`), offsets in words.
#[derive(Debug, Clone)]
pub struct StridedCopy<'a> {
    pub shape: &'a [usize],
    pub src_offset: u32,
    pub src_strides: &'a [usize],
    pub dst_offset: u32,
    pub dst_strides: &'a [usize],
    pub convert: Convert,
}

/// Lowers one strided copy.
pub fn strided_copy(op: &Op, c: &StridedCopy<'_>) -> Result<Dispatch, LowerError> {
    let numel: usize = c.shape.iter().product();
    let g = grid(op, numel, 64)?;
    let (convert, lo, hi) = c.convert.code();
    let p = CopyParams {
        numel: u32_of(op, "elements", numel)?,
        rank: c.shape.len() as u32,
        in_offset: c.src_offset,
        out_offset: c.dst_offset,
        grid_width: g.grid_width,
        convert,
        lo,
        hi,
        shape: pack_dims(op, c.shape)?,
        in_strides: pack_dims(op, c.src_strides)?,
        out_strides: pack_dims(op, c.dst_strides)?,
    };
    Ok(Dispatch::new(&STRIDED_COPY, &p, g.groups))
}

/// A contiguous copy of `words` words (staging between arena regions).
pub fn copy_words(op: &Op, src: u32, dst: u32, words: usize) -> Result<Dispatch, LowerError> {
    strided_copy(
        op,
        &StridedCopy {
            shape: &[words],
            src_offset: src,
            src_strides: &[1],
            dst_offset: dst,
            dst_strides: &[1],
            convert: Convert::Copy,
        },
    )
}

fn packed(op: &Op, o: &Operand) -> Result<(), LowerError> {
    if repr(o.dtype) == Repr::Packed {
        return Err(LowerError::unsupported(
            op,
            format!("{} tensors are moved only by views", o.dtype),
        ));
    }
    Ok(())
}

/// Lowers transpose, narrow, concat, expand, cast and gather.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    if !matches!(op, Op::Gather { .. }) {
        packed(op, &inputs[0])?;
    }
    if let Op::UpdateRows { axis } = op {
        return update_rows(op, inputs, *axis, out);
    }
    let out_strides = strides(&out.dims);
    let copy =
        |shape: &[usize], src: u32, src_strides: &[usize], dst: u32, dst_strides: &[usize]| {
            strided_copy(
                op,
                &StridedCopy {
                    shape,
                    src_offset: src,
                    src_strides,
                    dst_offset: dst,
                    dst_strides,
                    convert: Convert::Copy,
                },
            )
        };
    let x = &inputs[0];
    let d = match op {
        Op::Transpose { perm } => {
            let own = strides(&x.dims);
            let permuted: Vec<usize> = perm.iter().map(|&p| own[p]).collect();
            vec![copy(
                &out.dims,
                x.offset,
                &permuted,
                out.offset,
                &out_strides,
            )?]
        }
        Op::Narrow { axis, start, .. } => {
            let own = strides(&x.dims);
            let src = u32_of(op, "offset", x.offset as usize + start * own[*axis])?;
            vec![copy(&out.dims, src, &own, out.offset, &out_strides)?]
        }
        Op::Expand { .. } => {
            let s = broadcast_strides(&x.dims, &out.dims);
            vec![copy(&out.dims, x.offset, &s, out.offset, &out_strides)?]
        }
        Op::Concat { axis } => {
            let mut at = 0usize;
            let mut ds = Vec::with_capacity(inputs.len());
            for i in inputs {
                let dst = u32_of(op, "offset", out.offset as usize + at * out_strides[*axis])?;
                ds.push(copy(
                    &i.dims,
                    i.offset,
                    &strides(&i.dims),
                    dst,
                    &out_strides,
                )?);
                at += i.dims[*axis];
            }
            ds
        }
        Op::Cast { to } => {
            let convert = cast_conversion(op, x.dtype, *to)?;
            vec![strided_copy(
                op,
                &StridedCopy {
                    shape: &[out.numel()],
                    src_offset: x.offset,
                    src_strides: &[1],
                    dst_offset: out.offset,
                    dst_strides: &[1],
                    convert,
                },
            )?]
        }
        Op::Gather { axis } => vec![gather(op, x, &inputs[1], *axis, out)?],
        _ => return Err(LowerError::unsupported(op, "not a data-movement op")),
    };
    Ok(d)
}

/// The word conversion of a cast, following the IR's cast rules.
pub fn cast_conversion(op: &Op, from: DType, to: DType) -> Result<Convert, LowerError> {
    let int_range = |t: DType| -> Option<(i32, i32)> {
        match t {
            DType::I32 | DType::I64 => Some((i32::MIN, i32::MAX)),
            DType::U8 => Some((0, 255)),
            DType::I8 => Some((-128, 127)),
            _ => None,
        }
    };
    let unsupported = || {
        LowerError::unsupported(
            op,
            format!("cast from {from} to {to} has no GPU lowering yet"),
        )
    };
    if from == to {
        return Ok(Convert::Copy);
    }
    Ok(match (repr(from), repr(to)) {
        (Repr::F32, Repr::F32) => match (from, to) {
            (_, DType::Bool) => Convert::FloatToBool,
            (DType::Bool, DType::F32) => Convert::Copy,
            _ => return Err(unsupported()),
        },
        (Repr::F32, Repr::I32) => {
            let (lo, hi) = int_range(to).ok_or_else(unsupported)?;
            Convert::FloatToInt { lo, hi }
        }
        (Repr::I32, Repr::F32) => match (from, to) {
            (_, DType::Bool) => Convert::IntToBool,
            (DType::U32, DType::F32) => Convert::UintToFloat,
            (_, DType::F32) => Convert::IntToFloat,
            _ => return Err(unsupported()),
        },
        (Repr::I32, Repr::I32) if from != DType::U32 => {
            let (lo, hi) = match to {
                DType::U32 => (0, i32::MAX),
                t => int_range(t).ok_or_else(unsupported)?,
            };
            Convert::IntToInt { lo, hi }
        }
        _ => return Err(unsupported()),
    })
}

/// `out` = `dest` with `update`'s rows at `start..` along `axis`. When `out` is `dest`'s slot
/// (the planner's in-place update) only the new rows are written; otherwise `dest` is copied
/// first.
fn update_rows(
    op: &Op,
    inputs: &[Operand],
    axis: usize,
    out: &Operand,
) -> Result<Vec<Dispatch>, LowerError> {
    lower_update_rows(op, axis, &[(inputs, out)])
}

/// Up to four row updates with equal shapes and the same start, each `(inputs, out)` with
/// inputs `dest, update, start`, as one dispatch (after the copies of those not in place).
pub fn lower_update_rows(
    op: &Op,
    axis: usize,
    jobs: &[(&[Operand], &Operand)],
) -> Result<Vec<Dispatch>, LowerError> {
    if jobs.is_empty() || jobs.len() > 4 {
        return Err(LowerError::unsupported(op, "one to four row updates"));
    }
    let mut ds = Vec::with_capacity(jobs.len() + 1);
    let mut p = UpdateRowsParams::default();
    let mut shape: Option<(&[usize], &[usize], u32)> = None;
    for (j, &(inputs, out)) in jobs.iter().enumerate() {
        let [dest, update, start] = inputs else {
            return Err(LowerError::unsupported(
                op,
                "expects dest, update and start",
            ));
        };
        packed(op, dest)?;
        if repr(start.dtype) != Repr::I32 {
            return Err(LowerError::unsupported(op, "the start must be an integer"));
        }
        let this = (dest.dims.as_slice(), update.dims.as_slice(), start.offset);
        if shape.is_some_and(|s| s != this) {
            return Err(LowerError::unsupported(
                op,
                "batched row updates must share shapes and start",
            ));
        }
        shape = Some(this);
        if out.offset != dest.offset {
            ds.push(copy_words(op, dest.offset, out.offset, dest.numel())?);
        }
        p.update_offsets[j] = update.offset;
        p.out_offsets[j] = out.offset;
    }
    // `shape` is set: `jobs` is not empty.
    let Some((dest, update, start)) = shape else {
        return Ok(ds);
    };
    if axis >= dest.len() || update.len() != dest.len() {
        return Err(LowerError::unsupported(
            op,
            format!("axis {axis} of dest {dest:?} and update {update:?}"),
        ));
    }
    let outer: usize = dest[..axis].iter().product();
    let inner: usize = dest[axis + 1..].iter().product();
    let numel: usize = update.iter().product();
    let g = grid(op, numel, 64)?;
    p.outer = u32_of(op, "outer", outer)?;
    p.dest_rows = u32_of(op, "rows", dest[axis])?;
    p.rows = u32_of(op, "rows", update[axis])?;
    p.inner = u32_of(op, "inner", inner)?;
    p.start_offset = start;
    p.grid_width = g.grid_width;
    let groups = [g.groups[0], g.groups[1], jobs.len() as u32];
    ds.push(Dispatch::new(&UPDATE_ROWS, &p, groups));
    Ok(ds)
}

fn gather(
    op: &Op,
    table: &Operand,
    indices: &Operand,
    axis: usize,
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    if table.dtype.is_quantized() {
        return crate::families::quant::lower_gather(op, table, indices, axis, out);
    }
    if repr(indices.dtype) != Repr::I32 {
        return Err(LowerError::unsupported(op, "indices must be integers"));
    }
    let outer: usize = table.dims[..axis].iter().product();
    let inner: usize = table.dims[axis + 1..].iter().product();
    let quads = quads_fit(table, inner, out);
    let (kernel, per_invocation) = if quads {
        (&GATHER_QUADS, 4)
    } else {
        (&GATHER, 1)
    };
    let g = grid(op, out.numel() / per_invocation, 64)?;
    let p = GatherParams {
        outer: u32_of(op, "outer", outer)?,
        axis_size: u32_of(op, "axis", table.dims[axis])?,
        num_indices: u32_of(op, "indices", indices.numel())?,
        inner: u32_of(op, "inner", inner)?,
        table_offset: table.offset,
        index_offset: indices.offset,
        out_offset: out.offset,
        grid_width: g.grid_width,
    };
    Ok(Dispatch::new(kernel, &p, g.groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    const OP: Op = Op::UpdateRows { axis: 1 };

    fn operand(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand::new(offset, dims, dtype)
    }

    /// A cache [1, 16, 8] at `at` written in place from an update [1, 2, 8] at `at + 1000`.
    fn job(at: u32) -> [Operand; 3] {
        [
            operand(at, &[1, 16, 8], DType::F32),
            operand(at + 1000, &[1, 2, 8], DType::F32),
            operand(5000, &[1], DType::I32),
        ]
    }

    #[test]
    fn gathers_move_vec4s_where_rows_are_aligned() {
        let op = Op::Gather { axis: 0 };
        let kernel = |table_at: u32, inner: usize, out_at: u32| {
            let table = operand(table_at, &[100, inner], DType::F32);
            let idx = operand(9000, &[7], DType::I32);
            let out = operand(out_at, &[7, inner], DType::F32);
            let d = gather(&op, &table, &idx, 0, &out).unwrap();
            (d.kernel.name, d.groups)
        };
        // 7 rows of 384: 672 quads, 11 workgroups of 64.
        assert_eq!(kernel(0, 384, 4096), ("gather_quads", [11, 1, 1]));
        assert_eq!(kernel(2, 384, 4096).0, "gather");
        assert_eq!(kernel(0, 384, 4098).0, "gather");
        assert_eq!(kernel(0, 6, 4096).0, "gather");
    }

    #[test]
    fn batched_updates_are_one_dispatch_plus_copies_of_those_not_in_place() {
        let (a, b) = (job(0), job(200));
        let elsewhere = operand(3000, &[1, 16, 8], DType::F32);
        let ds = lower_update_rows(&OP, 1, &[(&a, &a[0]), (&b, &elsewhere)]).unwrap();
        // The copy of b's cache to its output, then the update.
        assert_eq!(ds.len(), 2);
        let d = ds.last().unwrap();
        assert_eq!(d.groups[2], 2);
        let p: UpdateRowsParams = bytemuck::pod_read_unaligned(&d.params);
        assert_eq!((p.outer, p.dest_rows, p.rows, p.inner), (1, 16, 2, 8));
        assert_eq!(p.out_offsets[..2], [0, 3000]);
        assert_eq!(p.start_offset, 5000);
    }

    #[test]
    fn rejections_name_what_is_wrong() {
        let a = job(0);
        let msg = |r: Result<Vec<Dispatch>, LowerError>| r.unwrap_err().to_string();
        assert!(msg(lower_update_rows(&OP, 1, &[])).contains("one to four"));
        let five: Vec<(&[Operand], &Operand)> = (0..5).map(|_| (&a[..], &a[0])).collect();
        assert!(msg(lower_update_rows(&OP, 1, &five)).contains("one to four"));
        assert!(
            msg(lower_update_rows(&OP, 1, &[(&a[..2], &a[0])])).contains("dest, update and start")
        );
        let mut float_start = a.clone();
        float_start[2] = operand(5000, &[1], DType::F32);
        assert!(msg(lower_update_rows(&OP, 1, &[(&float_start, &a[0])])).contains("integer"));
        // Batched jobs of other shapes.
        let mut other = job(200);
        other[1] = operand(1200, &[1, 3, 8], DType::F32);
        assert!(msg(lower_update_rows(
            &OP,
            1,
            &[(&a, &a[0]), (&other, &other[0])]
        ))
        .contains("share"));
        // An axis past the rank, and an update of another rank.
        assert!(msg(lower_update_rows(&OP, 3, &[(&a, &a[0])])).contains("axis 3"));
        let mut flat = job(0);
        flat[1] = operand(1000, &[16], DType::F32);
        assert!(msg(lower_update_rows(&OP, 1, &[(&flat, &flat[0])])).contains("axis 1"));
    }
}
