//! Block-quantized (GGUF Q4_0, Q4_1, Q8_0) weights dequantized on the fly: a matmul against a
//! quantized `[N, K]` weight, with bias/activation epilogue and QKV split-write, several
//! matmuls of one input against their own weights in one dispatch (Q, K and V; gate and up),
//! and the embedding gather from a quantized `[rows, dim]` table. See `shaders/quant.wgsl` for
//! the kernel designs.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::dispatch::MAX_GROUPS_PER_DIM;
use crate::families::elementwise::activation_id;
use crate::families::matmul::{Epilogue, NO_ACTIVATION};
use crate::kernel_params;
use crate::lower::{grid, repr, require_f32, u32_of, Dispatch, LowerError, Operand, Repr};
use crate::params::KernelParams;
use kiln_ir::{Activation, DType, Op};

const SOURCE: &str = concat!(
    include_str!("../../../../shaders/activations.wgsl"),
    include_str!("../../../../shaders/quant.wgsl")
);
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];
const NEEDS: Needs = Needs::BASELINE;

/// Elements per quantized block (all three formats).
pub const BLOCK: usize = 32;
/// Up to this many rows of A (all leading dims folded) the matmul runs the GEMV variant;
/// more run the tiled one.
pub const GEMV_MAX_ROWS: usize = 8;
/// GEMV: rows of A and weight rows (output columns) per workgroup.
pub const GEMV_ROWS: usize = 4;
pub const GEMV_COLS: usize = 8;
/// Tiled: output tile of one workgroup, rows × columns.
pub const TILE_M: usize = 32;
pub const TILE_N: usize = 64;
/// Column segments one dispatch computes, each with its own weight (or rows of one) and output.
pub const MAX_SEGMENTS: usize = 4;

kernel_params! {
    /// Params of the `quant_gemv` and `quant_tiled` entry points.
    pub struct QuantMatmulParams as "QuantMatmulParams" {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub a_offset: u32,
        pub bias_offset: u32,
        pub has_bias: u32,
        /// Activation id, or `NO_ACTIVATION`.
        pub act: u32,
        /// A [`Variant`] code.
        pub variant: u32,
        /// Workgroups in x (the column group is `wid.x + wid.y * grid_x`).
        pub grid_x: u32,
        /// 1: two segments (gate, up) and the output `glu_act(gate) * up` (SwiGLU).
        pub glu: u32,
        /// Activation id of the gate under `glu`.
        pub glu_act: u32,
        pub _pad0: u32,
        /// 1: an RMSNorm prologue (see [`NormPrologueArgs`]): A's rows are `x (+ residual)`
        /// times `gamma` as read, each row's products scaled by `1 / sqrt(mean(row²) + eps)`.
        pub norm: u32,
        pub eps: f32,
        pub residual_offset: u32,
        pub gamma_offset: u32,
        /// Where column group 0 writes `x + residual` (the tee), under `has_sum`.
        pub sum_offset: u32,
        pub has_residual: u32,
        pub has_gamma: u32,
        pub has_sum: u32,
        /// Per column segment: its end column (cumulative; unused ones hold `n`), weight
        /// [`format_code`], weight offset in words, first weight row, output offset.
        pub col_ends: [u32; 4],
        pub formats: [u32; 4],
        pub w_offsets: [u32; 4],
        pub w_rows0: [u32; 4],
        pub out_offsets: [u32; 4],
    }
}

kernel_params! {
    /// Params of the `quant_gather` entry point.
    pub struct QuantGatherParams as "QuantGatherParams" {
        pub num_indices: u32,
        pub rows: u32,
        pub dim: u32,
        pub format: u32,
        pub table_offset: u32,
        pub index_offset: u32,
        pub out_offset: u32,
        pub grid_width: u32,
    }
}

/// The quantized matmul for few rows of A (see [`Variant::Gemv`]).
pub const QUANT_GEMV: KernelDesc = KernelDesc {
    name: "quant_gemv",
    file: "quant.wgsl",
    source: SOURCE,
    entry: "quant_gemv",
    workgroup_size: [256, 1, 1],
    bindings: BINDINGS,
    params: QuantMatmulParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// The quantized matmul for many rows of A (see [`Variant::Tiled`]).
pub const QUANT_TILED: KernelDesc = KernelDesc {
    name: "quant_tiled",
    file: "quant.wgsl",
    source: SOURCE,
    entry: "quant_tiled",
    workgroup_size: [256, 1, 1],
    bindings: BINDINGS,
    params: QuantMatmulParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// The quantized matmul kernels a step moves between when its extent changes its rows.
pub const EXTENT_VARIANTS: [&KernelDesc; 2] = [&QUANT_GEMV, &QUANT_TILED];

pub const QUANT_GATHER: KernelDesc = KernelDesc {
    name: "quant_gather",
    file: "quant.wgsl",
    source: SOURCE,
    entry: "quant_gather",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: QuantGatherParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// Which quantized matmul kernel runs. Both take the same params and bindings, so a planned
/// step may switch between them when the active extent changes its rows (prefill at M =
/// prompt, decode at M = 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// Few rows: 32 threads per weight row stride K, workgroup reduction.
    Gemv,
    /// Many rows: 32 × 64 output tiles, W dequantized once per tile into workgroup memory.
    Tiled,
}

impl Variant {
    /// The variant for `rows` rows of A.
    pub fn for_rows(rows: usize) -> Variant {
        if rows <= GEMV_MAX_ROWS {
            Variant::Gemv
        } else {
            Variant::Tiled
        }
    }

    fn code(self) -> u32 {
        match self {
            Variant::Gemv => 0,
            Variant::Tiled => 1,
        }
    }
}

/// The shader's format code of a quantized dtype.
pub fn format_code(dtype: DType) -> Option<u32> {
    match dtype {
        DType::Q4_0 => Some(0),
        DType::Q4_1 => Some(1),
        DType::Q8_0 => Some(2),
        _ => None,
    }
}

/// Bytes of a packed tensor, checked to be addressable by the kernels' u32 byte offsets.
fn packed_bytes(op: &Op, o: &Operand) -> Result<usize, LowerError> {
    let last = o.dims.last().copied().unwrap_or(1);
    let bytes = o.dtype.storage_bytes(o.numel(), last).ok_or_else(|| {
        LowerError::unsupported(
            op,
            format!(
                "a {} tensor's last dim ({last}) must be a multiple of {BLOCK}",
                o.dtype
            ),
        )
    })?;
    u32_of(op, "packed bytes", bytes)?;
    Ok(bytes)
}

/// One column segment of a quantized matmul: `cols` weight rows from `row0` of `weight`,
/// written to `out`.
struct Segment<'a> {
    weight: &'a Operand,
    row0: usize,
    cols: usize,
    out: &'a Operand,
}

/// Lowers a matmul `act(a × bᵀ + bias)` whose `b` is a quantized `[N, K]` weight, its output
/// columns split evenly over `outs` (see [`crate::families::matmul::lower_split_k`]).
pub fn lower_matmul(
    op: &Op,
    a: &Operand,
    b: &Operand,
    transpose_b: bool,
    epilogue: Epilogue<'_>,
    outs: &[&Operand],
) -> Result<Vec<Dispatch>, LowerError> {
    if !transpose_b {
        return Err(LowerError::unsupported(
            op,
            "a quantized weight must be 2-D [N, K] with transpose_b",
        ));
    }
    if outs.is_empty() || outs.len() > 3 {
        return Err(LowerError::unsupported(
            op,
            "a matmul writes one to three outputs",
        ));
    }
    let n = b.dims.first().copied().unwrap_or(0);
    let split = n / outs.len();
    if split * outs.len() != n {
        return Err(LowerError::unsupported(
            op,
            format!("{n} columns do not split into {} outputs", outs.len()),
        ));
    }
    let segments: Vec<Segment<'_>> = outs
        .iter()
        .enumerate()
        .map(|(i, out)| Segment {
            weight: b,
            row0: i * split,
            cols: split,
            out,
        })
        .collect();
    lower_segments(op, a, &segments, epilogue, None, None)
}

/// An RMSNorm the matmul applies to its input rows as it reads them: A (the `a` operand, `x`)
/// plus `residual` (if any), times `gamma` (if any), each row scaled by
/// `1 / sqrt(mean(row²) + eps)`; `sum` (if any) receives `x + residual`.
#[derive(Debug, Clone, Copy)]
pub struct NormPrologueArgs<'a> {
    pub eps: f32,
    pub residual: Option<&'a Operand>,
    pub gamma: Option<&'a Operand>,
    pub sum: Option<&'a Operand>,
}

/// Lowers matmuls of one input `a` against their own quantized `[N_i, K]` weights (plain
/// products, no epilogue) as one dispatch writing each product to its output; with `norm`,
/// `a` is first normalised (see [`NormPrologueArgs`]).
pub fn lower_siblings(
    op: &Op,
    a: &Operand,
    weights: &[&Operand],
    outs: &[&Operand],
    norm: Option<&NormPrologueArgs<'_>>,
) -> Result<Vec<Dispatch>, LowerError> {
    if weights.is_empty() || weights.len() != outs.len() || weights.len() > MAX_SEGMENTS {
        return Err(LowerError::unsupported(
            op,
            format!("one to {MAX_SEGMENTS} sibling matmuls, each with its output"),
        ));
    }
    siblings(op, a, weights, outs, None, norm)
}

/// Lowers `out = act(a × gateᵀ) * (a × upᵀ)` (SwiGLU) with quantized weights of equal shape
/// as one dispatch that stores neither product.
pub fn lower_glu(
    op: &Op,
    a: &Operand,
    gate: &Operand,
    up: &Operand,
    act: Activation,
    out: &Operand,
    norm: Option<&NormPrologueArgs<'_>>,
) -> Result<Vec<Dispatch>, LowerError> {
    if gate.dims != up.dims {
        return Err(LowerError::unsupported(
            op,
            format!("gate {:?} and up {:?} differ", gate.dims, up.dims),
        ));
    }
    siblings(op, a, &[gate, up], &[out, out], Some(act), norm)
}

fn siblings(
    op: &Op,
    a: &Operand,
    weights: &[&Operand],
    outs: &[&Operand],
    glu: Option<Activation>,
    norm: Option<&NormPrologueArgs<'_>>,
) -> Result<Vec<Dispatch>, LowerError> {
    let segments: Vec<Segment<'_>> = weights
        .iter()
        .zip(outs)
        .map(|(w, out)| Segment {
            weight: w,
            row0: 0,
            cols: w.dims.first().copied().unwrap_or(0),
            out,
        })
        .collect();
    lower_segments(op, a, &segments, Epilogue::default(), glu, norm)
}

/// The prologue's fields of [`QuantMatmulParams`], checked against A `a` of K columns (all zero
/// without a prologue).
fn norm_params(
    op: &Op,
    a: &Operand,
    k: usize,
    norm: Option<&NormPrologueArgs<'_>>,
) -> Result<QuantMatmulParams, LowerError> {
    let Some(n) = norm else {
        return Ok(QuantMatmulParams::default());
    };
    if n.sum.is_some() && n.residual.is_none() {
        // The sum written is x + residual; without a residual there is nothing to tee.
        return Err(LowerError::unsupported(
            op,
            "a norm prologue writes its sum only with a residual",
        ));
    }
    require_f32(op, [n.residual, n.gamma, n.sum].into_iter().flatten())?;
    for (what, o) in [("residual", n.residual), ("sum", n.sum)] {
        if let Some(o) = o {
            if o.dims != a.dims {
                return Err(LowerError::unsupported(
                    op,
                    format!("the norm's {what} {:?} differs from A {:?}", o.dims, a.dims),
                ));
            }
        }
    }
    if let Some(g) = n.gamma {
        if g.numel() != k {
            return Err(LowerError::unsupported(
                op,
                format!("gamma {:?} does not hold K = {k} values", g.dims),
            ));
        }
    }
    Ok(QuantMatmulParams {
        norm: 1,
        eps: n.eps,
        residual_offset: n.residual.map_or(0, |o| o.offset),
        gamma_offset: n.gamma.map_or(0, |o| o.offset),
        sum_offset: n.sum.map_or(0, |o| o.offset),
        has_residual: u32::from(n.residual.is_some()),
        has_gamma: u32::from(n.gamma.is_some()),
        has_sum: u32::from(n.sum.is_some()),
        ..Default::default()
    })
}

fn lower_segments(
    op: &Op,
    a: &Operand,
    segments: &[Segment<'_>],
    epilogue: Epilogue<'_>,
    glu: Option<Activation>,
    norm: Option<&NormPrologueArgs<'_>>,
) -> Result<Vec<Dispatch>, LowerError> {
    require_f32(
        op,
        [a].into_iter()
            .chain(epilogue.bias)
            .chain(segments.iter().map(|s| s.out)),
    )?;
    let ar = a.dims.len();
    let k = a.dims.last().copied().unwrap_or(0);
    if ar < 2 {
        return Err(LowerError::unsupported(op, "A must have rows and columns"));
    }
    let mut col_ends = [0u32; 4];
    let mut formats = [0u32; 4];
    let mut w_offsets = [0u32; 4];
    let mut w_rows0 = [0u32; 4];
    let mut out_offsets = [0u32; 4];
    let mut n = 0usize;
    for (i, s) in segments.iter().enumerate() {
        let w = s.weight;
        formats[i] = format_code(w.dtype)
            .ok_or_else(|| LowerError::unsupported(op, format!("{} is not quantized", w.dtype)))?;
        if w.dims.len() != 2 || w.dims[1] != k {
            return Err(LowerError::unsupported(
                op,
                format!(
                    "a quantized weight must be 2-D [N, {k}] matching A {:?}, got {:?}",
                    a.dims, w.dims
                ),
            ));
        }
        if !k.is_multiple_of(BLOCK) {
            return Err(LowerError::unsupported(
                op,
                format!("K = {k} is not a multiple of the block size {BLOCK}"),
            ));
        }
        packed_bytes(op, w)?;
        n += s.cols;
        col_ends[i] = u32_of(op, "columns", n)?;
        w_offsets[i] = w.offset;
        w_rows0[i] = u32_of(op, "rows", s.row0)?;
        out_offsets[i] = s.out.offset;
    }
    for end in col_ends.iter_mut().skip(segments.len()) {
        *end = n as u32;
    }
    let rows: usize = a.dims[..ar - 1].iter().product();
    let norm_fields = norm_params(op, a, k, norm)?;
    u32_of(op, "elements", rows.saturating_mul(k))?;
    u32_of(op, "elements", rows.saturating_mul(n))?;
    // Each output holds its segment's columns for every row (under glu, the one output holds
    // the gate's columns); a smaller one would be written past its slot.
    for s in segments {
        let cols = if glu.is_some() { n / 2 } else { s.cols };
        if s.out.numel() != rows.saturating_mul(cols) {
            return Err(LowerError::unsupported(
                op,
                format!(
                    "output {:?} does not hold {rows} rows of {cols} columns",
                    s.out.dims
                ),
            ));
        }
    }
    if rows == 0 || n == 0 {
        return Ok(Vec::new());
    }
    let variant = Variant::for_rows(rows);
    // Under glu a workgroup's columns are half gate, half up, so n = 2 x gate columns still
    // counts the workgroups.
    let (col_groups, row_groups) = match variant {
        Variant::Gemv => (n.div_ceil(GEMV_COLS), rows.div_ceil(GEMV_ROWS)),
        Variant::Tiled => (n.div_ceil(TILE_N), rows.div_ceil(TILE_M)),
    };
    // Column groups folded into x and y (one "invocation" per workgroup).
    let g = grid(op, col_groups, 1)?;
    let [gx, gy] = [g.groups[0], g.groups[1]];
    if row_groups > MAX_GROUPS_PER_DIM as usize {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "row groups",
            value: row_groups as u64,
            limit: MAX_GROUPS_PER_DIM as u64,
        });
    }
    let p = QuantMatmulParams {
        m: rows as u32,
        n: n as u32,
        k: k as u32,
        a_offset: a.offset,
        bias_offset: epilogue.bias.map_or(0, |b| b.offset),
        has_bias: u32::from(epilogue.bias.is_some()),
        act: epilogue.act.map_or(NO_ACTIVATION, activation_id),
        variant: variant.code(),
        grid_x: gx,
        glu: u32::from(glu.is_some()),
        glu_act: glu.map_or(NO_ACTIVATION, activation_id),
        col_ends,
        formats,
        w_offsets,
        w_rows0,
        out_offsets,
        ..norm_fields
    };
    let kernel = match variant {
        Variant::Gemv => &QUANT_GEMV,
        Variant::Tiled => &QUANT_TILED,
    };
    Ok(vec![Dispatch::new(kernel, &p, [gx, gy, row_groups as u32])])
}

/// Lowers `Gather` along axis 0 of a quantized 2-D table: the rows come out as f32.
pub fn lower_gather(
    op: &Op,
    table: &Operand,
    indices: &Operand,
    axis: usize,
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    let format = format_code(table.dtype)
        .ok_or_else(|| LowerError::unsupported(op, format!("{} is not quantized", table.dtype)))?;
    if axis != 0 || table.dims.len() != 2 {
        return Err(LowerError::unsupported(
            op,
            "a quantized table must be 2-D and gathered along axis 0",
        ));
    }
    if repr(indices.dtype) != Repr::I32 {
        return Err(LowerError::unsupported(op, "indices must be integers"));
    }
    require_f32(op, [out])?;
    packed_bytes(op, table)?;
    let (rows, dim) = (table.dims[0], table.dims[1]);
    let quarters = indices.numel() * (dim / 8);
    u32_of(op, "elements", indices.numel().saturating_mul(dim))?;
    let g = grid(op, quarters, 64)?;
    let p = QuantGatherParams {
        num_indices: indices.numel() as u32,
        rows: u32_of(op, "rows", rows)?,
        dim: dim as u32,
        format,
        table_offset: table.offset,
        index_offset: indices.offset,
        out_offset: out.offset,
        grid_width: g.grid_width,
    };
    Ok(Dispatch::new(&QUANT_GATHER, &p, g.groups))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::matmul;

    fn operand(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand::new(offset, dims, dtype)
    }

    fn params(d: &Dispatch) -> QuantMatmulParams {
        *bytemuck::from_bytes(&d.params)
    }

    #[test]
    fn the_matmul_lowering_routes_quantized_weights_here() {
        let op = Op::MatMul { transpose_b: true };
        let w = operand(0, &[49_152, 576], DType::Q8_0);
        let out = operand(0, &[1, 49_152], DType::F32);
        let x = operand(0, &[1, 576], DType::F32);
        let d = matmul::lower(&op, &[x, w.clone()], &out).unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kernel.name, "quant_gemv");
        let p = params(&d[0]);
        assert_eq!(
            (p.variant, p.formats[0], p.m, p.n, p.k),
            (0, 2, 1, 49_152, 576)
        );
        assert_eq!(p.col_ends, [49_152; 4]);
        assert_eq!(d[0].groups, [(49_152 / GEMV_COLS) as u32, 1, 1]);

        // Prefill: 128 rows (two leading dims folded) take the tiled variant.
        let x = operand(0, &[2, 64, 576], DType::F32);
        let out = operand(0, &[2, 64, 49_152], DType::F32);
        let d = matmul::lower(&op, &[x, w], &out).unwrap();
        let p = params(&d[0]);
        assert_eq!((p.variant, p.m), (1, 128));
        assert_eq!(d[0].kernel.name, "quant_tiled");
        assert_eq!(d[0].groups, [49_152 / 64, 1, 4]);
    }

    #[test]
    fn norm_prologue_arguments_are_checked() {
        let op = Op::MatMul { transpose_b: true };
        let x = operand(0, &[1, 64], DType::F32);
        let w = operand(1024, &[32, 64], DType::Q8_0);
        let out = operand(4096, &[1, 32], DType::F32);
        let gamma = operand(8192, &[64], DType::F32);
        let short_gamma = operand(8192, &[32], DType::F32);
        let sum = operand(9000, &[1, 64], DType::F32);
        let lower =
            |args: NormPrologueArgs<'_>| lower_siblings(&op, &x, &[&w], &[&out], Some(&args));
        let ok = lower(NormPrologueArgs {
            eps: 1e-5,
            residual: Some(&x),
            gamma: Some(&gamma),
            sum: Some(&sum),
        })
        .unwrap();
        let p = params(&ok[0]);
        assert_eq!(
            (p.norm, p.has_residual, p.has_gamma, p.has_sum),
            (1, 1, 1, 1)
        );
        assert_eq!((p.gamma_offset, p.sum_offset, p.eps), (8192, 9000, 1e-5));
        for (args, says) in [
            (
                NormPrologueArgs {
                    eps: 1e-5,
                    residual: None,
                    gamma: None,
                    sum: Some(&sum),
                },
                "only with a residual",
            ),
            (
                NormPrologueArgs {
                    eps: 1e-5,
                    residual: None,
                    gamma: Some(&short_gamma),
                    sum: None,
                },
                "does not hold K = 64",
            ),
        ] {
            let err = lower(args).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn variants_by_rows() {
        assert_eq!(Variant::for_rows(1), Variant::Gemv);
        assert_eq!(Variant::for_rows(GEMV_MAX_ROWS), Variant::Gemv);
        assert_eq!(Variant::for_rows(GEMV_MAX_ROWS + 1), Variant::Tiled);
    }

    #[test]
    fn many_columns_fold_into_y() {
        let op = Op::MatMul { transpose_b: true };
        // More column groups than one grid row holds.
        let n = GEMV_COLS * 70_000;
        let w = operand(0, &[n, 32], DType::Q4_1);
        let d = lower_matmul(
            &op,
            &operand(0, &[1, 32], DType::F32),
            &w,
            true,
            Epilogue::default(),
            &[&operand(0, &[1, n], DType::F32)],
        )
        .unwrap();
        let [x, y, _] = d[0].groups;
        assert_eq!(params(&d[0]).grid_x, x);
        assert!(
            x as usize * y as usize >= n / GEMV_COLS && y == 2,
            "{:?}",
            d[0].groups
        );
    }

    #[test]
    fn rejects_what_the_kernel_cannot_do() {
        let op = Op::MatMul { transpose_b: true };
        let out = operand(0, &[1, 8], DType::F32);
        // K not a whole number of blocks.
        let err = lower_matmul(
            &op,
            &operand(0, &[1, 48], DType::F32),
            &operand(0, &[8, 48], DType::Q8_0),
            true,
            Epilogue::default(),
            &[&out],
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("multiple of the block size"),
            "{err}"
        );
        // Untransposed.
        assert!(lower_matmul(
            &op,
            &operand(0, &[1, 32], DType::F32),
            &operand(0, &[32, 8], DType::Q8_0),
            false,
            Epilogue::default(),
            &[&out],
        )
        .is_err());
        // Gather along axis 1.
        let g = Op::Gather { axis: 1 };
        assert!(lower_gather(
            &g,
            &operand(0, &[4, 32], DType::Q4_0),
            &operand(0, &[2], DType::I32),
            1,
            &operand(0, &[4, 2], DType::F32),
        )
        .is_err());
    }

    #[test]
    fn gather_routes_through_movement() {
        let op = Op::Gather { axis: 0 };
        let d = crate::lower(
            &op,
            &[
                operand(0, &[100, 64], DType::Q8_0),
                operand(2000, &[3], DType::I32),
            ],
            &operand(2004, &[3, 64], DType::F32),
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].kernel.name, "quant_gather");
        // 3 rows of 8 quarter blocks.
        assert_eq!(d[0].groups, [1, 1, 1]);
    }
}
