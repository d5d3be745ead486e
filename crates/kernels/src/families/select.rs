//! Selection kernels along the last axis: `argmax`, `topk` and `sample`, one 256-thread
//! workgroup per row.
//!
//! `argmax` and `topk` select one element per pass (a workgroup max-reduction over exact
//! integer order keys), so a pass costs about `8 + n / 256` steps; `k` is capped at
//! [`MAX_TOPK`] to keep one dispatch short. `sample` finds every cut it needs (top_k, the top_p
//! nucleus, the draw) by binary search over order keys and indices, so it has no limit on the
//! row length, top_k or top_p; it costs up to about 150 passes over the row. Greedy sampling
//! (temperature 0) lowers to `argmax`.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::lower::{grid, repr, require_f32, u32_of, Dispatch, LowerError, Operand, Repr};
use crate::params::KernelParams;
use kiln_ir::{DType, Op, TopKOutput};

/// The largest `k` [`TOPK`] takes: each selected element is one pass over the workgroup, and
/// larger `k` (a full sort) wants a sorting kernel instead.
pub const MAX_TOPK: usize = 1024;

/// Threads per workgroup (the `WG` constant of `select.wgsl`).
pub const ROW_WORKGROUP: u32 = 256;

const SOURCE: &str = include_str!("../../../../shaders/select.wgsl");
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];
const NEEDS: Needs = Needs::BASELINE;

kernel_params! {
    /// Params of the `argmax` and `topk` entry points.
    pub struct SelectParams as "SelectParams" {
        pub rows: u32,
        /// The row length (last axis).
        pub n: u32,
        pub k: u32,
        /// 1 writes indices as i32 words, 0 writes values.
        pub write_indices: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        pub groups_x: u32,
        pub _pad: u32,
    }
}

kernel_params! {
    /// Params of the `sample` entry point.
    pub struct SampleParams as "SampleParams" {
        pub rows: u32,
        pub n: u32,
        /// 0 keeps every element.
        pub top_k: u32,
        pub has_counter: u32,
        pub top_p: f32,
        pub temperature: f32,
        /// The low and high halves of the u64 seed.
        pub seed_lo: u32,
        pub seed_hi: u32,
        pub in_offset: u32,
        pub out_offset: u32,
        /// The word of the counter input (unused without one).
        pub counter_offset: u32,
        pub groups_x: u32,
    }
}

pub const ARGMAX: KernelDesc = KernelDesc {
    name: "argmax",
    file: "select.wgsl",
    source: SOURCE,
    entry: "argmax",
    workgroup_size: [ROW_WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: SelectParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

pub const TOPK: KernelDesc = KernelDesc {
    name: "topk",
    file: "select.wgsl",
    source: SOURCE,
    entry: "topk",
    workgroup_size: [ROW_WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: SelectParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

pub const SAMPLE: KernelDesc = KernelDesc {
    name: "sample",
    file: "select.wgsl",
    source: SOURCE,
    entry: "sample",
    workgroup_size: [ROW_WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: SampleParams::LAYOUT,
    needs: NEEDS,
    constants: &[],
};

/// Lowers argmax, topk and sample (f32 rows only).
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    let x = inputs
        .first()
        .ok_or_else(|| LowerError::unsupported(op, "missing input"))?;
    require_f32(op, [x])?;
    let n = *x
        .dims
        .last()
        .ok_or_else(|| LowerError::unsupported(op, "needs rank >= 1"))?;
    if n == 0 || x.numel() == 0 {
        return Ok(Vec::new());
    }
    let rows = x.numel() / n;
    let argmax = Picks {
        kernel: &ARGMAX,
        k: 1,
        indices: true,
    };
    let dispatch = match op {
        Op::Argmax => select(op, argmax, rows, n, x, out)?,
        Op::TopK { k, output } => {
            let topk = Picks {
                kernel: &TOPK,
                k: *k,
                indices: *output == TopKOutput::Indices,
            };
            select(op, topk, rows, n, x, out)?
        }
        Op::Sample { temperature: t, .. } if *t == 0.0 => select(op, argmax, rows, n, x, out)?,
        Op::Sample { .. } => sample(op, rows, n, inputs, out)?,
        _ => return Err(LowerError::unsupported(op, "not a selection op")),
    };
    Ok(vec![dispatch])
}

/// Checks the output holds what the kernel writes: i32 words for indices, else f32.
fn require_output(op: &Op, out: &Operand, indices: bool) -> Result<(), LowerError> {
    let ok = if indices {
        repr(out.dtype) == Repr::I32
    } else {
        out.dtype == DType::F32
    };
    if ok {
        Ok(())
    } else {
        Err(LowerError::unsupported(
            op,
            format!("output dtype {}", out.dtype),
        ))
    }
}

/// What an `argmax` / `topk` launch selects per row.
#[derive(Debug, Clone, Copy)]
struct Picks {
    kernel: &'static KernelDesc,
    k: usize,
    /// Write indices (as i32 words) rather than values.
    indices: bool,
}

fn select(
    op: &Op,
    picks: Picks,
    rows: usize,
    n: usize,
    x: &Operand,
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    let Picks { kernel, k, indices } = picks;
    require_output(op, out, indices)?;
    if k > MAX_TOPK {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "k",
            value: k as u64,
            limit: MAX_TOPK as u64,
        });
    }
    if k == 0 || k > n {
        return Err(LowerError::unsupported(
            op,
            format!("k = {k} must be in 1..={n}"),
        ));
    }
    let g = grid(op, rows, 1)?;
    let p = SelectParams {
        rows: u32_of(op, "rows", rows)?,
        n: u32_of(op, "row length", n)?,
        k: k as u32,
        write_indices: u32::from(indices),
        in_offset: x.offset,
        out_offset: out.offset,
        groups_x: g.groups[0],
        _pad: 0,
    };
    Ok(Dispatch::new(kernel, &p, g.groups))
}

fn sample(
    op: &Op,
    rows: usize,
    n: usize,
    inputs: &[Operand],
    out: &Operand,
) -> Result<Dispatch, LowerError> {
    let Op::Sample {
        top_k,
        top_p,
        temperature,
        seed,
        has_counter,
    } = op
    else {
        return Err(LowerError::unsupported(op, "not a sample op"));
    };
    require_output(op, out, true)?;
    let counter = if *has_counter {
        let c = inputs
            .get(1)
            .ok_or_else(|| LowerError::unsupported(op, "missing the counter input"))?;
        if repr(c.dtype) != Repr::I32 || c.numel() != 1 {
            return Err(LowerError::unsupported(
                op,
                format!("counter must be one integer, got {}{:?}", c.dtype, c.dims),
            ));
        }
        Some(c.offset)
    } else {
        None
    };
    let g = grid(op, rows, 1)?;
    let p = SampleParams {
        rows: u32_of(op, "rows", rows)?,
        n: u32_of(op, "row length", n)?,
        // A top_k at or beyond the row length keeps everything, like 0.
        top_k: u32::try_from(*top_k).unwrap_or(0),
        has_counter: u32::from(counter.is_some()),
        top_p: *top_p,
        temperature: *temperature,
        seed_lo: *seed as u32,
        seed_hi: (*seed >> 32) as u32,
        in_offset: inputs[0].offset,
        out_offset: out.offset,
        counter_offset: counter.unwrap_or(0),
        groups_x: g.groups[0],
    };
    Ok(Dispatch::new(&SAMPLE, &p, g.groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operand(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand::new(offset, dims, dtype)
    }

    #[test]
    fn greedy_sampling_lowers_to_argmax() {
        let op = Op::Sample {
            top_k: 5,
            top_p: 0.9,
            temperature: 0.0,
            seed: 1,
            has_counter: false,
        };
        let d = lower(
            &op,
            &[operand(0, &[3, 10], DType::F32)],
            &operand(32, &[3], DType::I32),
        )
        .unwrap();
        assert_eq!(d[0].kernel.name, "argmax");
        assert_eq!(d[0].groups, [3, 1, 1]);
    }

    #[test]
    fn sample_params_split_the_seed_and_find_the_counter() {
        let op = Op::Sample {
            top_k: 40,
            top_p: 0.9,
            temperature: 0.7,
            seed: 0x1234_5678_9abc_def0,
            has_counter: true,
        };
        let ins = [
            operand(0, &[2, 100], DType::F32),
            operand(200, &[1], DType::U32),
        ];
        let d = lower(&op, &ins, &operand(204, &[2], DType::I32)).unwrap();
        let p: SampleParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.seed_lo, p.seed_hi), (0x9abc_def0, 0x1234_5678));
        assert_eq!((p.has_counter, p.counter_offset), (1, 200));
        assert_eq!((p.rows, p.n, p.top_k), (2, 100, 40));
    }

    #[test]
    fn topk_beyond_the_limit_is_a_typed_error() {
        let op = Op::TopK {
            k: MAX_TOPK + 1,
            output: TopKOutput::Values,
        };
        let err = lower(
            &op,
            &[operand(0, &[4096], DType::F32)],
            &operand(4096, &[MAX_TOPK + 1], DType::F32),
        )
        .unwrap_err();
        assert!(
            matches!(err, LowerError::TooLarge { what: "k", .. }),
            "{err}"
        );
    }
}
