//! Lowering: one IR op with concrete operand layouts becomes one or more kernel dispatches.
//!
//! This is where an op's semantics meet a kernel's params: every executor (the eager one today,
//! the planned one later) calls [`lower`] and only binds and dispatches what it returns.

use crate::desc::KernelDesc;
use crate::families;
use kiln_ir::{DType, Op};
use thiserror::Error;

/// How a tensor is held in the f32 arena: which 4-byte word format its elements use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repr {
    /// One f32 per element (f32; f16 and bf16 widened; bool as 0.0 / 1.0).
    F32,
    /// One 32-bit two's-complement integer per element (i32, u32, i64, u8, i8), read with
    /// `bitcast<i32>`.
    I32,
    /// Packed quantized blocks, read as raw words.
    Packed,
}

/// The arena representation of a dtype.
pub const fn repr(dtype: DType) -> Repr {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 | DType::Bool => Repr::F32,
        DType::I32 | DType::U32 | DType::I64 | DType::U8 | DType::I8 => Repr::I32,
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => Repr::Packed,
    }
}

/// A tensor as a kernel sees it: where it starts in the bound window (in 4-byte words), its
/// concrete dims and its dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operand {
    pub offset: u32,
    pub dims: Vec<usize>,
    pub dtype: DType,
}

impl Operand {
    pub fn new(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand {
            offset,
            dims: dims.to_vec(),
            dtype,
        }
    }

    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
}

/// One kernel launch: the kernel, its params bytes and its grid.
#[derive(Debug, Clone)]
pub struct Dispatch {
    pub kernel: &'static KernelDesc,
    pub params: Vec<u8>,
    pub groups: [u32; 3],
}

impl Dispatch {
    pub fn new<P: crate::params::KernelParams>(
        kernel: &'static KernelDesc,
        params: &P,
        groups: [u32; 3],
    ) -> Dispatch {
        Dispatch {
            kernel,
            params: bytemuck::bytes_of(params).to_vec(),
            groups,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum LowerError {
    #[error("{op}: {detail}")]
    Unsupported { op: &'static str, detail: String },
    #[error("{op}: {what} = {value} exceeds the kernel's limit of {limit}")]
    TooLarge {
        op: &'static str,
        what: &'static str,
        value: u64,
        limit: u64,
    },
}

impl LowerError {
    pub fn unsupported(op: &Op, detail: impl Into<String>) -> LowerError {
        LowerError::Unsupported {
            op: op.name(),
            detail: detail.into(),
        }
    }
}

/// Converts a size to the u32 a kernel param holds.
pub fn u32_of(op: &Op, what: &'static str, v: usize) -> Result<u32, LowerError> {
    u32::try_from(v).map_err(|_| LowerError::TooLarge {
        op: op.name(),
        what,
        value: v as u64,
        limit: u32::MAX as u64,
    })
}

/// Whether `op` is a view that aliases its input's words (no dispatch): a reshape, or a cast
/// between dtypes with the same arena representation.
pub fn is_view(op: &Op, inputs: &[Operand]) -> bool {
    match op {
        Op::Reshape { .. } => true,
        Op::Cast { to } => inputs
            .first()
            .is_some_and(|i| repr(i.dtype) == repr(*to) && !needs_rounding(i.dtype, *to)),
        _ => false,
    }
}

/// Casts that change values although the words keep their format (e.g. f32 to bool).
fn needs_rounding(from: DType, to: DType) -> bool {
    from != to && (to == DType::Bool || matches!(to, DType::F16 | DType::BF16))
}

/// Lowers `op` applied to `inputs`, writing `out`. Source ops and views lower to nothing.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    if op.is_source() || is_view(op, inputs) {
        return Ok(Vec::new());
    }
    match op {
        Op::Binary { .. } | Op::Compare { .. } | Op::Where | Op::Activation { .. } => {
            families::elementwise::lower(op, inputs, out)
        }
        Op::MatMul { .. } | Op::FusedMatMulBiasAct { .. } => {
            families::matmul::lower(op, inputs, out)
        }
        Op::Norm { .. } | Op::FusedResidualNorm { .. } => families::norm::lower(op, inputs, out),
        Op::Transpose { .. }
        | Op::Narrow { .. }
        | Op::Concat { .. }
        | Op::Expand { .. }
        | Op::Cast { .. }
        | Op::Gather { .. }
        | Op::UpdateRows { .. } => families::movement::lower(op, inputs, out),
        Op::Attention { .. } => families::attention::lower(op, inputs, out),
        Op::Rope { .. } => families::rope::lower(op, inputs, out),
        Op::Reduce { .. } | Op::Softmax { .. } | Op::Cumsum { .. } => {
            families::reduce::lower(op, inputs, out)
        }
        Op::Argmax | Op::TopK { .. } | Op::Sample { .. } => {
            families::select::lower(op, inputs, out)
        }
        _ => Err(LowerError::unsupported(op, "no GPU kernel for this op yet")),
    }
}

/// Fails unless every listed operand holds f32 (f16/bf16 storage is not lowered yet: their
/// results would not be rounded to the narrower type).
pub fn require_f32<'a>(
    op: &Op,
    operands: impl IntoIterator<Item = &'a Operand>,
) -> Result<(), LowerError> {
    for o in operands {
        if o.dtype != DType::F32 {
            return Err(LowerError::unsupported(
                op,
                format!("dtype {} (this kernel runs on f32)", o.dtype),
            ));
        }
    }
    Ok(())
}

/// Row-major strides of `dims`.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Strides reading `dims` broadcast to `out` (rank-aligned from the right; 0 on broadcast axes).
pub fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len().saturating_sub(dims.len());
    let own = strides(dims);
    (0..out.len())
        .map(|i| {
            if i < lead || dims[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}

/// The same walk over `dims` with fewer dims: dims of size 1 dropped, and each dim merged into
/// the next inner one wherever every operand steps through both as one (its stride equals the
/// inner stride times the inner size; broadcast zeros included). Elementwise kernels unravel a
/// flat index one division per dim, so a contiguous `[32, 128, 384]` add unravels nothing.
/// Returns the dims and, per operand, the strides.
pub fn coalesce_dims(dims: &[usize], strides: &[Vec<usize>]) -> (Vec<usize>, Vec<Vec<usize>>) {
    // Built innermost first, reversed at the end.
    let mut out_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut out_strides: Vec<Vec<usize>> = vec![Vec::with_capacity(dims.len()); strides.len()];
    for i in (0..dims.len()).rev() {
        if dims[i] == 1 {
            continue;
        }
        if let Some(inner) = out_dims.last_mut() {
            let merges = strides
                .iter()
                .zip(&out_strides)
                .all(|(s, o)| o.last().is_some_and(|&os| s[i] == os * *inner));
            if merges {
                *inner *= dims[i];
                continue;
            }
        }
        out_dims.push(dims[i]);
        for (o, s) in out_strides.iter_mut().zip(strides) {
            o.push(s[i]);
        }
    }
    out_dims.reverse();
    for o in &mut out_strides {
        o.reverse();
    }
    (out_dims, out_strides)
}

/// A 1-D grid over `n` invocations at `workgroup` per group, or a typed error when too large.
/// The kernels compute a u32 flat index from the grid, so `n` must fit one.
pub fn grid(op: &Op, n: usize, workgroup: u32) -> Result<crate::dispatch::Grid1d, LowerError> {
    let limit = (65_535u64 * 65_535 * workgroup as u64).min(u32::MAX as u64);
    let too_large = LowerError::TooLarge {
        op: op.name(),
        what: "invocations",
        value: n as u64,
        limit,
    };
    if n as u64 > limit {
        return Err(too_large);
    }
    crate::dispatch::grid_1d(n as u64, workgroup).ok_or(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalescing_merges_contiguous_and_broadcast_dims() {
        // A contiguous add: one dim.
        let d = [32, 128, 384];
        let (dims, st) = coalesce_dims(&d, &[strides(&d), strides(&d)]);
        assert_eq!((dims, st), (vec![32 * 128 * 384], vec![vec![1], vec![1]]));
        // Position embeddings [128, 384] added over a batch of 32: the batch stays apart.
        let b = broadcast_strides(&[128, 384], &d);
        let (dims, st) = coalesce_dims(&d, &[strides(&d), b]);
        assert_eq!(dims, vec![32, 128 * 384]);
        assert_eq!(st, vec![vec![128 * 384, 1], vec![0, 1]]);
        // A row bias [1, 384]: size-1 dims vanish, broadcast zeros merge with each other.
        let b = broadcast_strides(&[1, 1, 384], &d);
        let (dims, st) = coalesce_dims(&d, &[strides(&d), b]);
        assert_eq!(dims, vec![32 * 128, 384]);
        assert_eq!(st, vec![vec![384, 1], vec![0, 1]]);
        // A transposed operand merges nothing; a scalar has no dims at all.
        let (dims, _) = coalesce_dims(&[4, 5], &[vec![5, 1], vec![1, 4]]);
        assert_eq!(dims, vec![4, 5]);
        let (dims, st) = coalesce_dims(&[1, 1], &[vec![0, 0]]);
        assert_eq!((dims, st), (vec![], vec![vec![]]));
    }
}
