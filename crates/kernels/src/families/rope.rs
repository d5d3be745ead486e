//! Rotary position embedding: one invocation per rotated pair or passed-through tail element.

use super::attention::head_strides;
use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::lower::{grid, repr, require_f32, u32_of, Dispatch, LowerError, Operand, Repr};
use crate::params::KernelParams;
use kiln_ir::{HeadLayout, Op, RopeStyle};

const SOURCE: &str = include_str!("../../../../shaders/rope.wgsl");
const BINDINGS: &[Binding] = &[Binding::StorageReadWrite, Binding::Uniform];

kernel_params! {
    /// Params of the `rope` entry point.
    pub struct RopeParams as "RopeParams" {
        /// rows * per_row.
        pub work: u32,
        /// Invocations per head vector: the pairs plus the copied tail.
        pub per_row: u32,
        /// rotary_dims / 2.
        pub half: u32,
        pub seq: u32,
        /// 1 for [`RopeStyle::Interleaved`].
        pub interleaved: u32,
        pub has_offset_input: u32,
        pub offset_word: u32,
        pub position_offset: u32,
        pub grid_width: u32,
        /// -2 log2(theta) / rotary_dims.
        pub log2_freq_step: f32,
        /// Invocations of job 0 (all of `work` with one job).
        pub split: u32,
        pub _pad0: u32,
        /// Per job (index 0 and 1): heads, input and output offsets.
        pub heads: [u32; 4],
        pub x_offsets: [u32; 4],
        pub out_offsets: [u32; 4],
        /// Per job, (batch, seq, head, 0) strides in elements; head_dim is contiguous.
        pub x_strides: [[u32; 4]; 2],
        pub out_strides: [[u32; 4]; 2],
    }
}

pub const ROPE: KernelDesc = KernelDesc {
    name: "rope",
    file: "rope.wgsl",
    source: SOURCE,
    entry: "rope",
    workgroup_size: [64, 1, 1],
    bindings: BINDINGS,
    params: RopeParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// The attributes of a rope op that lowering needs.
struct Attrs {
    head_dim: usize,
    rotary_dims: usize,
    theta: f32,
    style: RopeStyle,
    layout: HeadLayout,
    position_offset: usize,
    has_offset_input: bool,
}

fn attrs(op: &Op) -> Result<Attrs, LowerError> {
    match *op {
        Op::Rope {
            head_dim,
            rotary_dims,
            theta,
            style,
            layout,
            position_offset,
            has_offset_input,
        } => Ok(Attrs {
            head_dim,
            rotary_dims,
            theta,
            style,
            layout,
            position_offset,
            has_offset_input,
        }),
        _ => Err(LowerError::unsupported(op, "not a rope op")),
    }
}

/// Checks the operands and attributes the kernel relies on.
fn check(op: &Op, a: &Attrs, inputs: &[Operand], out: &Operand) -> Result<(), LowerError> {
    let want = 1 + usize::from(a.has_offset_input);
    if inputs.len() != want {
        return Err(LowerError::unsupported(
            op,
            format!("{} inputs, expected {want}", inputs.len()),
        ));
    }
    require_f32(op, [&inputs[0], out])?;
    let (_, _, _, da) = a.layout.axes();
    let x = &inputs[0];
    if x.dims.len() != 4 || x.dims[da] != a.head_dim || out.dims != x.dims {
        return Err(LowerError::unsupported(
            op,
            format!(
                "x {:?} / out {:?} with head_dim {}",
                x.dims, out.dims, a.head_dim
            ),
        ));
    }
    if a.rotary_dims == 0 || !a.rotary_dims.is_multiple_of(2) || a.rotary_dims > a.head_dim {
        return Err(LowerError::unsupported(
            op,
            format!("rotary_dims = {} of head_dim {}", a.rotary_dims, a.head_dim),
        ));
    }
    if !(a.theta.is_finite() && a.theta > 0.0) {
        return Err(LowerError::unsupported(op, format!("theta = {}", a.theta)));
    }
    match inputs.get(1) {
        Some(o) if repr(o.dtype) != Repr::I32 => Err(LowerError::unsupported(
            op,
            format!("position offset of dtype {}", o.dtype),
        )),
        _ => Ok(()),
    }
}

/// The static position offset as the shader adds it: a non-negative i32.
fn position_offset(op: &Op, offset: usize) -> Result<u32, LowerError> {
    match i32::try_from(offset) {
        Ok(o) => Ok(o as u32),
        Err(_) => Err(LowerError::TooLarge {
            op: op.name(),
            what: "position_offset",
            value: offset as u64,
            limit: i32::MAX as u64,
        }),
    }
}

/// Lowers a rope op to one dispatch over every pair (and tail element) of every head vector.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    lower_jobs(op, &[(inputs, out)])
}

/// Lowers one or two rope ops with the same attributes and position inputs (e.g. a decoder's
/// Q and K) to one dispatch; each is `(inputs, out)`.
pub fn lower_pair(
    op: &Op,
    first: (&[Operand], &Operand),
    second: (&[Operand], &Operand),
) -> Result<Vec<Dispatch>, LowerError> {
    lower_jobs(op, &[first, second])
}

fn lower_jobs(op: &Op, jobs: &[(&[Operand], &Operand)]) -> Result<Vec<Dispatch>, LowerError> {
    let a = attrs(op)?;
    let (ba, sa, ha, _) = a.layout.axes();
    let half = a.rotary_dims / 2;
    let (first_x, first_out) = match jobs.first() {
        Some((inputs, out)) if jobs.len() <= 2 => (inputs.first(), *out),
        _ => return Err(LowerError::unsupported(op, "one or two rope jobs")),
    };
    // Operands and attributes first: the tail below assumes rotary_dims <= head_dim.
    for &(inputs, out) in jobs {
        check(op, &a, inputs, out)?;
    }
    // Rotating in place leaves the tail where it is: a single in-place job copies nothing
    // (a pair copies every tail, onto itself where in place).
    let in_place = jobs.len() == 1 && first_x.is_some_and(|x| x.offset == first_out.offset);
    let tail = if in_place {
        0
    } else {
        a.head_dim - a.rotary_dims
    };
    let mut p = RopeParams {
        per_row: u32_of(op, "head_dim", half + tail)?,
        half: u32_of(op, "rotary_dims", half)?,
        interleaved: u32::from(a.style == RopeStyle::Interleaved),
        has_offset_input: u32::from(a.has_offset_input),
        position_offset: position_offset(op, a.position_offset)?,
        log2_freq_step: (-2.0 * (a.theta as f64).log2() / a.rotary_dims as f64) as f32,
        ..Default::default()
    };
    let mut work = 0usize;
    for (j, &(inputs, out)) in jobs.iter().enumerate() {
        let x = &inputs[0];
        let seq = u32_of(op, "seq", x.dims[sa])?;
        let offset_word = inputs.get(1).map_or(0, |o| o.offset);
        if j > 0 && (seq != p.seq || offset_word != p.offset_word) {
            return Err(LowerError::unsupported(
                op,
                "paired rope jobs must share the sequence and the position input",
            ));
        }
        p.seq = seq;
        p.offset_word = offset_word;
        p.heads[j] = u32_of(op, "heads", x.dims[ha])?;
        p.x_offsets[j] = x.offset;
        p.out_offsets[j] = out.offset;
        p.x_strides[j] = head_strides(op, x, a.layout)?;
        p.out_strides[j] = head_strides(op, out, a.layout)?;
        work += x.dims[ba] * x.dims[sa] * x.dims[ha] * (half + tail);
        if j == 0 {
            p.split = u32_of(op, "elements", work)?;
        }
    }
    let g = grid(op, work, 64)?;
    p.work = u32_of(op, "elements", work)?;
    p.grid_width = g.grid_width;
    Ok(vec![Dispatch::new(&ROPE, &p, g.groups)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    fn operand(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand::new(offset, dims, dtype)
    }

    fn op(rotary_dims: usize, has_offset_input: bool) -> Op {
        Op::Rope {
            head_dim: 8,
            rotary_dims,
            theta: 10000.0,
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bhsd,
            position_offset: 3,
            has_offset_input,
        }
    }

    #[test]
    fn params_cover_pairs_and_tail() {
        let x = operand(0, &[2, 3, 5, 8], DType::F32);
        let off = operand(240, &[1], DType::I32);
        let out = operand(244, &[2, 3, 5, 8], DType::F32);
        let d = lower(&op(4, true), &[x, off], &out).unwrap();
        let p: RopeParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.half, p.per_row, p.work), (2, 6, 30 * 6));
        assert_eq!((p.seq, p.heads[0], p.interleaved), (5, 3, 1));
        assert_eq!(p.x_strides[0], [120, 8, 40, 0]);
        assert_eq!(p.split, p.work);
        assert_eq!((p.offset_word, p.position_offset), (240, 3));
        assert!((p.log2_freq_step - (-10000f32.log2() / 2.0)).abs() < 1e-6);
    }

    #[test]
    fn in_place_skips_the_tail() {
        let x = operand(16, &[1, 1, 1, 8], DType::F32);
        let d = lower(&op(2, false), std::slice::from_ref(&x), &x).unwrap();
        let p: RopeParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!((p.per_row, p.work), (1, 1));
    }

    #[test]
    fn a_pair_shares_one_dispatch_split_between_its_jobs() {
        let q = operand(0, &[1, 4, 3, 8], DType::F32);
        let k = operand(96, &[1, 2, 3, 8], DType::F32);
        let (qo, ko) = (
            operand(200, &[1, 4, 3, 8], DType::F32),
            operand(300, &[1, 2, 3, 8], DType::F32),
        );
        let d = lower_pair(
            &op(8, false),
            (std::slice::from_ref(&q), &qo),
            (std::slice::from_ref(&k), &ko),
        )
        .unwrap();
        let p: RopeParams = bytemuck::pod_read_unaligned(&d[0].params);
        assert_eq!(
            (p.heads[0], p.heads[1], p.split, p.work),
            (4, 2, 12 * 4, 18 * 4)
        );
        assert_eq!((p.x_offsets[1], p.out_offsets[1]), (96, 300));
    }

    #[test]
    fn a_pair_with_other_positions_or_lengths_is_rejected() {
        let rope = op(8, true);
        let q = operand(0, &[1, 2, 3, 8], DType::F32);
        let (pos_a, pos_b) = (
            operand(100, &[1], DType::I32),
            operand(101, &[1], DType::I32),
        );
        let qi = [q.clone(), pos_a.clone()];
        // Another position input.
        let ki = [q.clone(), pos_b];
        let err = lower_pair(&rope, (&qi, &q), (&ki, &q)).unwrap_err();
        assert!(err.to_string().contains("share"), "{err}");
        // Another sequence length.
        let k4 = operand(0, &[1, 2, 4, 8], DType::F32);
        let ki = [k4.clone(), pos_a];
        let err = lower_pair(&rope, (&qi, &q), (&ki, &k4)).unwrap_err();
        assert!(err.to_string().contains("share"), "{err}");
        // No jobs, or three, through the shared path.
        assert!(lower_jobs(&rope, &[]).is_err());
        let job: (&[Operand], &Operand) = (&qi, &q);
        assert!(lower_jobs(&rope, &[job, job, job]).is_err());
    }

    #[test]
    fn a_float_offset_input_is_rejected() {
        let x = operand(0, &[1, 1, 1, 8], DType::F32);
        let off = operand(8, &[1], DType::F32);
        assert!(lower(&op(8, true), &[x.clone(), off], &x).is_err());
    }
}
