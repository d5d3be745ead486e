//! Fused scaled-dot-product attention with an online softmax: one workgroup per query row for
//! few queries (decode, `attention_row`), or per tile of [`TILE_QUERIES`] query rows of one
//! (batch, head), K and V staged once per key tile for all of them (prefill, encoders:
//! `attention`); many query rows of at most [`BLOCK_MAX_HEAD_DIM`] dims run in blocks of
//! [`BLOCK_QUERIES`] rows whose scores and weighted values are small register-tiled matmuls
//! (`attention_block`). See [`Variant`]; `shaders/attention.wgsl` describes them.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::kernel_params;
use crate::lower::{
    broadcast_strides, grid, repr, require_f32, strides, u32_of, Dispatch, LowerError, Operand,
    Repr,
};
use crate::params::KernelParams;
use kiln_ir::{AttentionMask, HeadLayout, Op};

/// Invocations per workgroup of the tiled variant, per key group of the per-row one (and keys
/// per tile there), per key half of the per-invocation one.
pub const WORKGROUP: u32 = 64;
/// Key groups of the per-row variant (the shader's `ROW_GROUPS`): decode at a long cache has
/// one workgroup per head, so its keys are split four ways inside the workgroup.
pub const ROW_KEY_GROUPS: usize = 4;
/// The largest head_dim the kernel holds.
pub const MAX_HEAD_DIM: usize = 256;
/// Query rows per workgroup of the tiled variant (the shader's `TQ`).
pub const TILE_QUERIES: usize = 16;
/// From this many queries (seq_q) on, the tiled variant runs; fewer run one row per workgroup.
/// At 16 queries the tiled variant has one workgroup per (batch, head), 12 for MiniLM at one
/// sequence, and took 20 µs on the H200 where the per-row one took 10; at 128 queries, tiled
/// 27 µs against 110. The crossover lies between; 32 (two query tiles) is interpolated, not
/// measured.
pub const TILED_MIN_QUERIES: usize = 32;
/// Query rows per workgroup of [`Variant::Block`] (the shader's `BQ`).
pub const BLOCK_QUERIES: usize = 64;
/// The largest head_dim [`Variant::Block`] holds: its staged Q^T, K^T (then P^T) and V fit
/// 32 KiB of workgroup memory (the software driver's limit) at 32 dims. MiniLM 32 x 128
/// (head_dim 32): 77-78 µs per layer on an H200, against 97-99 for the variant it replaced
/// (two query rows per invocation, bound by its workgroup-memory reads) and 246 tiled.
pub const BLOCK_MAX_HEAD_DIM: usize = 32;
/// [`Variant::Block`] needs at least this many workgroups (batch * heads * query blocks),
/// about one per SM of an H200; below it the tiled variant's four times as many workgroups
/// are expected to fill the GPU better (a judgement, not measured: SmolLM2's prefill has
/// head_dim 64 and runs tiled anyway).
pub const BLOCK_MIN_GROUPS: usize = 128;

const SOURCE: &str = include_str!("../../../../shaders/attention.wgsl");
const BINDINGS: &[Binding] = &[
    Binding::StorageReadWrite,
    Binding::Uniform,
    Binding::ArenaVec4,
];

kernel_params! {
    /// Params of the attention entry points (`attention_row`, `attention`, `attention_block`).
    pub struct AttentionParams as "AttentionParams" {
        /// Work items, one workgroup each: batch * num_heads * q_tiles.
        pub items: u32,
        /// Workgroups in x of the folded grid.
        pub groups_x: u32,
        pub seq_q: u32,
        pub seq_k: u32,
        pub num_heads: u32,
        /// num_heads / num_kv_heads.
        pub group: u32,
        pub head_dim: u32,
        pub scale: f32,
        /// [`mask_kind_id`].
        pub mask_kind: u32,
        /// 1 when a key-padding mask is stored as integer words.
        pub mask_is_int: u32,
        pub mask_offset: u32,
        pub has_past: u32,
        pub past_offset: u32,
        pub q_offset: u32,
        pub k_offset: u32,
        pub v_offset: u32,
        pub out_offset: u32,
        /// A [`Variant`] code.
        pub variant: u32,
        /// Query tiles per (batch, head): seq_q divided by the variant's rows per workgroup
        /// (1, [`TILE_QUERIES`] or [`BLOCK_QUERIES`]), rounded up.
        pub q_tiles: u32,
        /// 1 where `attention_block` reads q, k, v and writes out as 16-byte quads
        /// ([`in_quads`]); the other variants ignore it.
        pub quads: u32,
        /// (batch, seq, head, 0) strides in elements; head_dim is contiguous.
        pub q_strides: [u32; 4],
        pub k_strides: [u32; 4],
        pub v_strides: [u32; 4],
        pub out_strides: [u32; 4],
        /// The mask's strides over (batch, head, query, key), 0 on broadcast axes.
        pub mask_strides: [u32; 4],
    }
}

pub const ATTENTION: KernelDesc = KernelDesc {
    name: "attention",
    file: "attention.wgsl",
    source: SOURCE,
    entry: "attention",
    workgroup_size: [WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: AttentionParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// `attention_row`: [`Variant::Row`].
pub const ATTENTION_ROW: KernelDesc = KernelDesc {
    name: "attention_row",
    file: "attention.wgsl",
    source: SOURCE,
    entry: "attention_row",
    workgroup_size: [ROW_KEY_GROUPS as u32 * WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: AttentionParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// `attention_block`: [`Variant::Block`] for every mask but an additive bias, whose reads
/// it leaves out (the shader's `READS_BIAS`).
pub const ATTENTION_BLOCK: KernelDesc = KernelDesc {
    name: "attention_block",
    file: "attention.wgsl",
    source: SOURCE,
    entry: "attention_block",
    workgroup_size: [2 * WORKGROUP, 1, 1],
    bindings: BINDINGS,
    params: AttentionParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[("READS_BIAS", 0.0)],
};

/// `attention_block` for a bias mask: the same entry point reading the bias.
pub const ATTENTION_BLOCK_BIAS: KernelDesc = KernelDesc {
    name: "attention_block_bias",
    constants: &[],
    ..ATTENTION_BLOCK
};

/// The attention kernels a planned step moves between when its extent changes its queries
/// (a step's mask kind never changes, so it uses one of the two block kernels).
pub const EXTENT_VARIANTS: [&KernelDesc; 4] = [
    &ATTENTION_ROW,
    &ATTENTION,
    &ATTENTION_BLOCK,
    &ATTENTION_BLOCK_BIAS,
];

/// Which algorithm runs, each on an entry point of its own (`attention_row`, `attention`,
/// `attention_block`; they bind alike). A planned step moves between all three when its active
/// extent changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// One query row per workgroup of [`ROW_KEY_GROUPS`] groups of 64 invocations: each group
    /// walks every fourth tile of 64 keys (one key per invocation for the score), and the
    /// groups' softmax states merge at the end.
    Row,
    /// [`TILE_QUERIES`] query rows of one (batch, head) per workgroup: each tile of 32 keys of
    /// K and V is staged once in workgroup memory and reused by all of them.
    Tiled,
    /// [`BLOCK_QUERIES`] rows of one (batch, head) per workgroup of 128 invocations, the
    /// scores and the weighted values of each tile of 32 keys computed as register-tiled
    /// matmuls (4 rows x 4 keys, then 4 rows x 4 dims per invocation) through workgroup memory.
    Block,
}

impl Variant {
    /// The variant for `seq_q` queries per (batch, head), `batch_heads` (batch * num_heads)
    /// of them, of `head_dim` dims.
    pub fn choose(seq_q: usize, batch_heads: usize, head_dim: usize) -> Variant {
        if seq_q < TILED_MIN_QUERIES {
            Variant::Row
        } else if head_dim <= BLOCK_MAX_HEAD_DIM
            && batch_heads.saturating_mul(seq_q.div_ceil(BLOCK_QUERIES)) >= BLOCK_MIN_GROUPS
        {
            Variant::Block
        } else {
            Variant::Tiled
        }
    }

    /// The shader's `variant` code.
    pub fn code(self) -> u32 {
        match self {
            Variant::Row => 0,
            Variant::Tiled => 1,
            Variant::Block => 2,
        }
    }

    /// The kernel that runs it for a `mask` of that kind.
    pub fn kernel(self, mask: AttentionMask) -> &'static KernelDesc {
        match (self, mask) {
            (Variant::Row, _) => &ATTENTION_ROW,
            (Variant::Tiled, _) => &ATTENTION,
            (Variant::Block, AttentionMask::Bias) => &ATTENTION_BLOCK_BIAS,
            (Variant::Block, _) => &ATTENTION_BLOCK,
        }
    }

    /// Query rows per workgroup (per work item).
    fn rows_per_item(self) -> usize {
        match self {
            Variant::Row => 1,
            Variant::Tiled => TILE_QUERIES,
            Variant::Block => BLOCK_QUERIES,
        }
    }
}

/// The shader's id of a mask kind.
pub const fn mask_kind_id(mask: AttentionMask) -> u32 {
    match mask {
        AttentionMask::None => 0,
        AttentionMask::Causal => 1,
        AttentionMask::Bias => 2,
        AttentionMask::KeyPadding => 3,
    }
}

/// The attributes of an attention op that lowering needs.
struct Attrs {
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    mask: AttentionMask,
    layout: HeadLayout,
    has_past_len: bool,
}

fn attrs(op: &Op) -> Result<Attrs, LowerError> {
    match *op {
        Op::Attention {
            num_heads,
            num_kv_heads,
            head_dim,
            scale,
            mask,
            layout,
            has_past_len,
        } => Ok(Attrs {
            num_heads,
            num_kv_heads,
            head_dim,
            scale,
            mask,
            layout,
            has_past_len,
        }),
        _ => Err(LowerError::unsupported(op, "not an attention op")),
    }
}

/// (batch, seq, head, 0) element strides of a contiguous rank-4 operand in `layout` (shared
/// with rope, whose params use the same convention).
pub(crate) fn head_strides(
    op: &Op,
    x: &Operand,
    layout: HeadLayout,
) -> Result<[u32; 4], LowerError> {
    let s = strides(&x.dims);
    let (ba, sa, ha, _) = layout.axes();
    Ok([
        u32_of(op, "stride", s[ba])?,
        u32_of(op, "stride", s[sa])?,
        u32_of(op, "stride", s[ha])?,
        0,
    ])
}

/// Checks that q, k, v and out are rank-4 f32 tensors with the op's heads and head_dim.
fn check_qkvo(op: &Op, a: &Attrs, inputs: &[Operand], out: &Operand) -> Result<(), LowerError> {
    require_f32(op, inputs[..3].iter().chain([out]))?;
    if a.num_kv_heads == 0 || !a.num_heads.is_multiple_of(a.num_kv_heads) {
        return Err(LowerError::unsupported(
            op,
            format!(
                "num_heads = {} is not a multiple of num_kv_heads = {}",
                a.num_heads, a.num_kv_heads
            ),
        ));
    }
    if a.head_dim > MAX_HEAD_DIM {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "head_dim",
            value: a.head_dim as u64,
            limit: MAX_HEAD_DIM as u64,
        });
    }
    let (_, _, ha, da) = a.layout.axes();
    for (i, x) in inputs[..3].iter().chain([out]).enumerate() {
        let heads = if i == 1 || i == 2 {
            a.num_kv_heads
        } else {
            a.num_heads
        };
        if x.dims.len() != 4 || x.dims[ha] != heads || x.dims[da] != a.head_dim {
            return Err(LowerError::unsupported(
                op,
                format!(
                    "operand {i} has dims {:?}, not {heads} heads of {} in {:?}",
                    x.dims, a.head_dim, a.layout
                ),
            ));
        }
    }
    Ok(())
}

/// The mask operand's strides over (batch, head, query, key) and whether it holds integers.
fn mask_strides(
    op: &Op,
    a: &Attrs,
    mask: Option<&Operand>,
    scores: &[usize; 4],
) -> Result<([u32; 4], bool), LowerError> {
    let Some(m) = mask else {
        return Ok(([0; 4], false));
    };
    let s = match a.mask {
        AttentionMask::Bias => {
            require_f32(op, [m])?;
            if m.dims.len() > 4 {
                return Err(LowerError::unsupported(op, "a bias mask of rank above 4"));
            }
            broadcast_strides(&m.dims, scores)
        }
        AttentionMask::KeyPadding => {
            if m.dims.len() != 2 || repr(m.dtype) == Repr::Packed {
                return Err(LowerError::unsupported(
                    op,
                    format!("key-padding mask {} {:?}", m.dtype, m.dims),
                ));
            }
            let own = strides(&m.dims);
            vec![own[0], 0, 0, own[1]]
        }
        AttentionMask::None | AttentionMask::Causal => return Ok(([0; 4], false)),
    };
    let mut out = [0u32; 4];
    for (o, v) in out.iter_mut().zip(s) {
        *o = u32_of(op, "mask stride", v)?;
    }
    Ok((out, repr(m.dtype) == Repr::I32))
}

/// The word offset of the past-length input, checked to hold integers.
fn past_offset(op: &Op, a: &Attrs, inputs: &[Operand]) -> Result<u32, LowerError> {
    if !a.has_past_len {
        return Ok(0);
    }
    let past = inputs
        .last()
        .ok_or_else(|| LowerError::unsupported(op, "missing the past-length input"))?;
    if repr(past.dtype) != Repr::I32 {
        return Err(LowerError::unsupported(
            op,
            format!("past length of dtype {}", past.dtype),
        ));
    }
    Ok(past.offset)
}

/// Where the kernel reads q, k and v: word offsets and (batch, seq, head, 0) strides.
struct Views {
    offsets: [u32; 3],
    strides: [[u32; 4]; 3],
}

/// Checks the input count and the q, k, v, out operands; returns the attributes.
fn checked(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Attrs, LowerError> {
    let a = attrs(op)?;
    let has_mask = matches!(a.mask, AttentionMask::Bias | AttentionMask::KeyPadding);
    let want = 3 + usize::from(has_mask) + usize::from(a.has_past_len);
    if inputs.len() != want {
        return Err(LowerError::unsupported(
            op,
            format!("{} inputs, expected {want}", inputs.len()),
        ));
    }
    check_qkvo(op, &a, inputs, out)?;
    Ok(a)
}

/// Lowers an attention op to one dispatch (see [`Variant`] for its workgroups).
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    let a = checked(op, inputs, out)?;
    let mut views = Views {
        offsets: [inputs[0].offset, inputs[1].offset, inputs[2].offset],
        strides: [[0; 4]; 3],
    };
    for (s, x) in views.strides.iter_mut().zip(inputs) {
        *s = head_strides(op, x, a.layout)?;
    }
    lower_views(op, &a, inputs, &views, out)
}

/// Lowers attention whose q, k and v are last-axis column ranges of one packed BSHD projection
/// `[B, S, C]` starting at `columns`: the kernel reads them in place by strides, so the narrows
/// and reshapes that define them in the graph are never copied. `inputs` are the op's own
/// inputs (their dims are used; the offsets of q, k and v are not).
pub fn lower_packed(
    op: &Op,
    packed: &Operand,
    columns: [usize; 3],
    inputs: &[Operand],
    out: &Operand,
) -> Result<Vec<Dispatch>, LowerError> {
    let a = checked(op, inputs, out)?;
    require_f32(op, [packed])?;
    let fits = |i: usize| {
        let heads = if i == 0 { a.num_heads } else { a.num_kv_heads };
        let d = &inputs[i].dims;
        packed.dims.len() == 3
            && packed.dims[..2] == d[..2]
            && columns[i] + heads * a.head_dim <= packed.dims[2]
    };
    if a.layout != HeadLayout::Bshd || !(0..3).all(fits) {
        return Err(LowerError::unsupported(
            op,
            format!(
                "q, k, v at columns {columns:?} of a packed {:?} in {:?}",
                packed.dims, a.layout
            ),
        ));
    }
    let (s, c) = (packed.dims[1], packed.dims[2]);
    let strides = [
        u32_of(op, "stride", s * c)?,
        u32_of(op, "stride", c)?,
        u32_of(op, "stride", a.head_dim)?,
        0,
    ];
    let mut offsets = [0u32; 3];
    for (o, col) in offsets.iter_mut().zip(columns) {
        *o = packed
            .offset
            .checked_add(u32_of(op, "column", col)?)
            .ok_or_else(|| LowerError::unsupported(op, "packed offset overflows u32"))?;
    }
    let views = Views {
        offsets,
        strides: [strides; 3],
    };
    lower_views(op, &a, inputs, &views, out)
}

/// The dispatch for checked operands, with q, k and v read through `views`.
fn lower_views(
    op: &Op,
    a: &Attrs,
    inputs: &[Operand],
    views: &Views,
    out: &Operand,
) -> Result<Vec<Dispatch>, LowerError> {
    let (ba, sa, _, _) = a.layout.axes();
    let has_mask = matches!(a.mask, AttentionMask::Bias | AttentionMask::KeyPadding);
    let (batch, seq_q, seq_k) = (inputs[0].dims[ba], inputs[0].dims[sa], inputs[1].dims[sa]);
    let scores = [batch, a.num_heads, seq_q, seq_k];
    let mask = inputs.get(3).filter(|_| has_mask);
    let (mask_strides, mask_is_int) = mask_strides(op, a, mask, &scores)?;
    let variant = Variant::choose(seq_q, batch * a.num_heads, a.head_dim);
    let q_tiles = seq_q.div_ceil(variant.rows_per_item());
    let items = batch * a.num_heads * q_tiles;
    // One workgroup per work item.
    let kernel = variant.kernel(a.mask);
    let per_group = kernel.invocations();
    let g = grid(op, items * per_group as usize, per_group)?;
    let p = AttentionParams {
        items: u32_of(op, "work items", items)?,
        groups_x: g.groups[0],
        seq_q: u32_of(op, "seq_q", seq_q)?,
        seq_k: u32_of(op, "seq_k", seq_k)?,
        num_heads: u32_of(op, "num_heads", a.num_heads)?,
        group: u32_of(op, "group", a.num_heads / a.num_kv_heads)?,
        head_dim: u32_of(op, "head_dim", a.head_dim)?,
        scale: a.scale,
        mask_kind: mask_kind_id(a.mask),
        mask_is_int: u32::from(mask_is_int),
        mask_offset: mask.map_or(0, |m| m.offset),
        has_past: u32::from(a.has_past_len),
        past_offset: past_offset(op, a, inputs)?,
        q_offset: views.offsets[0],
        k_offset: views.offsets[1],
        v_offset: views.offsets[2],
        out_offset: out.offset,
        q_strides: views.strides[0],
        k_strides: views.strides[1],
        v_strides: views.strides[2],
        out_strides: head_strides(op, out, a.layout)?,
        mask_strides,
        variant: variant.code(),
        q_tiles: u32_of(op, "query tiles", q_tiles)?,
        ..Default::default()
    };
    let p = AttentionParams {
        quads: u32::from(in_quads(&p)),
        ..p
    };
    Ok(vec![Dispatch::new(kernel, &p, g.groups)])
}

/// Whether every row of q, k, v and out that the kernel touches starts on 16 bytes and holds
/// whole quads: their offsets, (batch, seq, head) strides and head_dim multiples of 4.
/// `attention_block` then moves them a vec4 at a time: MiniLM 32 x 128 on the H200, 75 -> 65 µs
/// per layer, the model 3.56 -> 3.51 ms GPU in one pass (one call, three runs each). The tiled
/// variant with the same 16-byte staging took twice as long (attention 32 x 128 at head_dim 64
/// 0.264 -> 0.50 ms), so it keeps its scalar loads.
pub fn in_quads(p: &AttentionParams) -> bool {
    let aligned = |x: u32| x.is_multiple_of(4);
    let strides = [p.q_strides, p.k_strides, p.v_strides, p.out_strides];
    aligned(p.head_dim)
        && [p.q_offset, p.k_offset, p.v_offset, p.out_offset]
            .into_iter()
            .all(aligned)
        && strides.iter().all(|s| s[..3].iter().copied().all(aligned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::DType;

    fn operand(offset: u32, dims: &[usize], dtype: DType) -> Operand {
        Operand::new(offset, dims, dtype)
    }

    fn op(mask: AttentionMask, head_dim: usize) -> Op {
        Op::Attention {
            num_heads: 4,
            num_kv_heads: 2,
            head_dim,
            scale: 0.5,
            mask,
            layout: HeadLayout::Bhsd,
            has_past_len: true,
        }
    }

    fn params(d: &Dispatch) -> AttentionParams {
        bytemuck::pod_read_unaligned(&d.params)
    }

    #[test]
    fn params_follow_layout_gqa_and_broadcast_bias() {
        let q = operand(0, &[2, 4, 3, 8], DType::F32);
        let k = operand(192, &[2, 2, 5, 8], DType::F32);
        let v = operand(352, &[2, 2, 5, 8], DType::F32);
        let bias = operand(512, &[3, 5], DType::F32);
        let past = operand(528, &[1], DType::I32);
        let out = operand(532, &[2, 4, 3, 8], DType::F32);
        let ins = [q, k, v, bias, past];
        let d = lower(&op(AttentionMask::Bias, 8), &ins, &out).unwrap();
        let p = params(&d[0]);
        assert_eq!((p.items, p.group, p.seq_q, p.seq_k), (24, 2, 3, 5));
        assert_eq!(p.variant, Variant::Row.code());
        assert_eq!(p.q_strides, [96, 8, 24, 0]);
        assert_eq!(p.k_strides, [80, 8, 40, 0]);
        assert_eq!(p.mask_strides, [0, 0, 5, 1]);
        assert_eq!((p.past_offset, p.mask_offset, p.scale), (528, 512, 0.5));
        assert_eq!(d[0].groups, [24, 1, 1]);
    }

    #[test]
    fn quads_only_where_every_row_starts_on_16_bytes() {
        let quads = |offsets: [u32; 5], head_dim: usize| {
            let [qo, ko, vo, oo, mo] = offsets;
            let dims = [2, 3, 4, head_dim];
            let kv = [2, 5, 4, head_dim];
            let ins = [
                operand(qo, &dims, DType::F32),
                operand(ko, &kv, DType::F32),
                operand(vo, &kv, DType::F32),
                operand(mo, &[2, 5], DType::F32),
            ];
            let out = operand(oo, &dims, DType::F32);
            let mut op = minilm_op(head_dim);
            if let Op::Attention {
                num_heads,
                num_kv_heads,
                ..
            } = &mut op
            {
                (*num_heads, *num_kv_heads) = (4, 4);
            }
            params(&lower(&op, &ins, &out).unwrap()[0]).quads
        };
        assert_eq!(quads([0, 400, 800, 1200, 1600], 8), 1);
        // The mask is read by words and does not matter.
        assert_eq!(quads([0, 400, 800, 1200, 1601], 8), 1);
        for misaligned in 0..4 {
            let mut offsets = [0, 400, 800, 1200, 1600];
            offsets[misaligned] += 2;
            assert_eq!(quads(offsets, 8), 0, "operand {misaligned} off by 2 words");
        }
        // Rows of 6 dims: strides of 6 and a partial last quad.
        assert_eq!(quads([0, 400, 800, 1200, 1600], 6), 0);
    }

    #[test]
    fn tile_queries_match_the_shader() {
        assert!(SOURCE.contains(&format!("const TQ: u32 = {TILE_QUERIES}u;")));
    }

    #[test]
    fn variants_by_queries_heads_and_head_dim() {
        let many = BLOCK_MIN_GROUPS;
        assert_eq!(Variant::choose(1, many, 32), Variant::Row);
        assert_eq!(
            Variant::choose(TILED_MIN_QUERIES - 1, many, 32),
            Variant::Row
        );
        assert_eq!(Variant::choose(TILED_MIN_QUERIES, many, 32), Variant::Block);
        assert_eq!(Variant::choose(BLOCK_QUERIES * many, 1, 32), Variant::Block);
        // Too few workgroups, or a head too wide for the staged blocks: tiled.
        assert_eq!(Variant::choose(64, many - 1, 32), Variant::Tiled);
        assert_eq!(Variant::choose(65, many / 2, 32), Variant::Block);
        assert_eq!(Variant::choose(64, many / 2, 32), Variant::Tiled);
        assert_eq!(
            Variant::choose(128, many, BLOCK_MAX_HEAD_DIM + 1),
            Variant::Tiled
        );
        assert_eq!(Variant::choose(usize::MAX, usize::MAX, 8), Variant::Block);
    }

    #[test]
    fn the_row_constants_match_the_shader() {
        assert!(SOURCE.contains(&format!("const ROW_GROUPS: u32 = {ROW_KEY_GROUPS}u;")));
        assert!(SOURCE.contains(&format!(
            "const ROW_WG: u32 = {}u;",
            ROW_KEY_GROUPS * WORKGROUP as usize
        )));
    }

    #[test]
    fn the_block_constants_match_the_shader() {
        assert!(SOURCE.contains(&format!("const BQ: u32 = {BLOCK_QUERIES}u;")));
        // Eight vec4s per staged key of V (and 32 dims of Q^T and K^T): head_dim up to 32.
        assert!(SOURCE.contains("const BD4: u32 = 8u;"));
        assert_eq!(BLOCK_MAX_HEAD_DIM, 32);
        // Four rows per invocation.
        assert_eq!(
            BLOCK_QUERIES * 8,
            4 * ATTENTION_BLOCK.invocations() as usize
        );
    }

    fn minilm_op(head_dim: usize) -> Op {
        Op::Attention {
            num_heads: 12,
            num_kv_heads: 12,
            head_dim,
            scale: 0.125,
            mask: AttentionMask::KeyPadding,
            layout: HeadLayout::Bshd,
            has_past_len: false,
        }
    }

    fn lower_minilm(head_dim: usize, batch: usize, seq: usize) -> Vec<Dispatch> {
        let x = operand(0, &[batch, seq, 12, head_dim], DType::F32);
        let mask = operand(0, &[batch, seq], DType::F32);
        let ins = [x.clone(), x.clone(), x.clone(), mask];
        lower(&minilm_op(head_dim), &ins, &x).unwrap()
    }

    #[test]
    fn each_variant_has_one_workgroup_per_query_tile() {
        // MiniLM-L6 at batch 32 ([32, 128, 12, 32] BSHD): 64 rows per workgroup, at 130
        // queries three blocks.
        let d = lower_minilm(32, 32, 128);
        let p = params(&d[0]);
        assert_eq!(d[0].kernel.name, ATTENTION_BLOCK.name);
        assert_eq!((p.variant, p.q_tiles), (Variant::Block.code(), 2));
        assert_eq!(p.items, 32 * 12 * 2);
        assert_eq!(d[0].groups, [32 * 12 * 2, 1, 1]);
        let p = params(&lower_minilm(32, 32, 130)[0]);
        assert_eq!(
            (p.variant, p.q_tiles, p.items),
            (Variant::Block.code(), 3, 32 * 12 * 3)
        );

        // Head dim 128 at 130 queries: tiled, 9 tiles, the last one of 2 rows.
        let d = lower_minilm(128, 1, 130);
        let p = params(&d[0]);
        assert_eq!(d[0].kernel.name, ATTENTION.name);
        assert_eq!((p.variant, p.q_tiles, p.items), (1, 9, 12 * 9));

        // One query: per row.
        let d = lower_minilm(128, 1, 1);
        let p = params(&d[0]);
        assert_eq!(d[0].kernel.name, ATTENTION_ROW.name);
        assert_eq!((p.variant, p.items), (Variant::Row.code(), 12));
    }

    #[test]
    fn the_variants_kernels_bind_alike_and_are_listed() {
        assert!(ATTENTION.binds_like(&ATTENTION_BLOCK));
        assert!(ATTENTION.binds_like(&ATTENTION_ROW));
        assert!(ATTENTION.binds_like(&ATTENTION_BLOCK_BIAS));
        let masks = [
            AttentionMask::None,
            AttentionMask::Causal,
            AttentionMask::Bias,
            AttentionMask::KeyPadding,
        ];
        for v in [Variant::Row, Variant::Tiled, Variant::Block] {
            for mask in masks {
                let k = v.kernel(mask);
                assert!(crate::extent_variants(k).iter().any(|e| e.name == k.name));
            }
        }
    }

    #[test]
    fn only_a_bias_mask_gets_the_block_kernel_that_reads_it() {
        let block = |mask| Variant::Block.kernel(mask);
        assert_eq!(block(AttentionMask::Bias).name, ATTENTION_BLOCK_BIAS.name);
        for mask in [
            AttentionMask::None,
            AttentionMask::Causal,
            AttentionMask::KeyPadding,
        ] {
            assert_eq!(block(mask).name, ATTENTION_BLOCK.name);
        }
        assert!(SOURCE.contains("if (READS_BIAS && p.mask_kind == MASK_BIAS) {"));
        assert_eq!(ATTENTION_BLOCK.constants, &[("READS_BIAS", 0.0)]);
        // The default, true, for every other attention pipeline.
        assert!(SOURCE.contains("override READS_BIAS: bool = true;"));
        assert!(ATTENTION_BLOCK_BIAS.constants.is_empty());
    }

    #[test]
    fn head_dim_above_the_limit_is_too_large() {
        let x = operand(0, &[1, 4, 1, 512], DType::F32);
        let kv = operand(0, &[1, 2, 1, 512], DType::F32);
        let past = operand(0, &[1], DType::I32);
        let ins = [x.clone(), kv.clone(), kv, past];
        let err = lower(&op(AttentionMask::Causal, 512), &ins, &x).unwrap_err();
        assert!(
            matches!(
                err,
                LowerError::TooLarge {
                    what: "head_dim",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_float_past_length_is_rejected() {
        let x = operand(0, &[1, 4, 1, 8], DType::F32);
        let kv = operand(0, &[1, 2, 1, 8], DType::F32);
        let past = operand(0, &[1], DType::F32);
        let ins = [x.clone(), kv.clone(), kv, past];
        assert!(lower(&op(AttentionMask::None, 8), &ins, &x).is_err());
    }

    #[test]
    fn packed_qkv_is_read_in_place_by_strides() {
        // [B=2, S=3, C=40]: q (2 heads of 8) at column 0, k and v (1 head each) at 16 and 24.
        let op = Op::Attention {
            num_heads: 2,
            num_kv_heads: 1,
            head_dim: 8,
            scale: 0.5,
            mask: AttentionMask::Causal,
            layout: HeadLayout::Bshd,
            has_past_len: false,
        };
        let packed = operand(100, &[2, 3, 40], DType::F32);
        let q = operand(0, &[2, 3, 2, 8], DType::F32);
        let kv = operand(0, &[2, 3, 1, 8], DType::F32);
        let out = operand(400, &[2, 3, 2, 8], DType::F32);
        let ins = [q, kv.clone(), kv];
        let d = lower_packed(&op, &packed, [0, 16, 24], &ins, &out).unwrap();
        let p = params(&d[0]);
        assert_eq!((p.q_offset, p.k_offset, p.v_offset), (100, 116, 124));
        assert_eq!(p.q_strides, [120, 40, 8, 0]);
        assert_eq!(p.v_strides, [120, 40, 8, 0]);
        assert_eq!(p.out_strides, [48, 16, 8, 0]);
        // A column range past the packed width is refused.
        assert!(lower_packed(&op, &packed, [0, 16, 36], &ins, &out).is_err());
    }
}
