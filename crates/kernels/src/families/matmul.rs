//! Register-tiled f32 matmul with bias/activation epilogue, batching by strides, transposed B,
//! and a split-write variant that writes Q, K and V from one dispatch.

use crate::desc::{Binding, KernelDesc, Needs};
use crate::families::elementwise::activation_id;
use crate::kernel_params;
use crate::lower::{broadcast_strides, require_f32, u32_of, Dispatch, LowerError, Operand};
use crate::params::KernelParams;
use kiln_ir::{Activation, Op};

/// Output tile edge of one workgroup of [`MATMUL`].
pub const TILE: usize = 64;
/// Output tile edge of one workgroup of [`MATMUL_WIDE`].
pub const WIDE_TILE: usize = 128;
/// From this many 128x128 output tiles on, the tiled matmul runs [`MATMUL_WIDE`]: it stages
/// each value of A and B for twice as many fmas as [`MATMUL`] and sums no partial tiles, but
/// its 4x fewer workgroups leave SMs idle on smaller outputs (an H200 has 132). Measured on the
/// H200 against the 64x64 kernels once the wide kernel's k loop was written out (eleventh
/// session): 96 tiles (4096 x 384 -> 384) 67.6 -> 63.8 µs, 128 tiles (2048 x 1024 -> 1024)
/// 193 -> 146 µs, 144 to 192 tiles 7-16 % faster; 64 tiles (1024^3) stay on the 64x64 kernel.
pub const WIDE_MIN_TILES: usize = 96;
/// Workgroups of 256 invocations of the tiled f32 kernels that run at once on the GPU their
/// choice is tuned on: an H200's 132 SMs hold two each (the kernels take 116-128 registers
/// per invocation, `kiln kernel-stats`), one of [`MATMUL_K8`]'s 512. A dispatch of more
/// workgroups runs in waves, the last one partly idle.
pub const CONCURRENT_WORKGROUPS: usize = 264;
/// Up to this many rows of A, with B stored `[N, K]`, the matmul runs [`MATMUL_SKINNY`] (a
/// few output columns per workgroup, lanes striding K). All f32 matmul kernels take the same
/// params and bindings, so a planned step can switch between them when the active extent
/// changes its rows.
pub const SKINNY_MAX_ROWS: usize = 16;
/// Output columns per workgroup of the skinny kernel (`SKINNY_COLS` in matmul_skinny.wgsl).
pub const SKINNY_COLS: usize = 4;
/// Output columns per workgroup of [`MATMUL_SKINNY_NARROW`]: twice the workgroups, for
/// outputs whose [`SKINNY_COLS`]-column workgroups would be fewer than the GPU's SMs
/// ([`CONCURRENT_WORKGROUPS`] / 2 on the H200).
pub const SKINNY_NARROW_COLS: usize = 2;

/// Batch dims the kernel unravels (more are folded where contiguous, else rejected).
pub const MAX_BATCH_RANK: usize = 4;

kernel_params! {
    /// Params of the `matmul` entry point.
    pub struct MatmulParams as "MatmulParams" {
        pub m: u32,
        pub n: u32,
        pub k: u32,
        pub batch_rank: u32,
        pub a_offset: u32,
        pub b_offset: u32,
        pub bias_offset: u32,
        pub has_bias: u32,
        pub a_stride_m: u32,
        pub b_stride_k: u32,
        pub b_stride_n: u32,
        /// Activation id, or `NO_ACTIVATION`.
        pub act: u32,
        /// Columns per output; equal to `n` unless split-writing.
        pub split_width: u32,
        pub out_stride_m: u32,
        /// Split-k ([`MATMUL_WIDE`] only; 0 = none): workgroup z covers k from
        /// `(z / batches) * k_chunk`, `k_chunk` further, writing raw partial sums.
        pub k_chunk: u32,
        /// The product of `batch_dims` (1 without batches).
        pub batches: u32,
        pub out_offsets: [u32; 4],
        pub batch_dims: [u32; 4],
        pub a_batch_strides: [u32; 4],
        pub b_batch_strides: [u32; 4],
    }
}

/// Whether rows of `k` elements starting at `offset` and at every batch stride stay 16-byte
/// aligned, so that the `*_VEC4` kernels may load them a k-quad at a time.
fn rows_aligned(offset: u32, k: usize, batch_strides: &[usize]) -> bool {
    offset.is_multiple_of(4)
        && k > 0
        && k.is_multiple_of(4)
        && batch_strides.iter().all(|s| s.is_multiple_of(4))
}

/// The `act` value meaning "no activation" (one value for every kernel).
pub use crate::families::elementwise::NO_ACTIVATION;

/// The arena, the params and the arena again as vec4s (see [`MATMUL_VEC4`]): every f32 matmul
/// kernel declares all three (matmul_common.wgsl), so that they bind alike.
const MATMUL_BINDINGS: &[Binding] = &[
    Binding::StorageReadWrite,
    Binding::Uniform,
    Binding::ArenaVec4,
];

pub const MATMUL: KernelDesc = KernelDesc {
    name: "matmul",
    file: "matmul.wgsl",
    source: concat!(
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl"),
        include_str!("../../../../shaders/matmul.wgsl")
    ),
    entry: "matmul",
    workgroup_size: [256, 1, 1],
    bindings: MATMUL_BINDINGS,
    params: MatmulParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// [`MATMUL`] with 128x128 output tiles, 8x8 values per invocation (see [`WIDE_MIN_TILES`]).
pub const MATMUL_WIDE: KernelDesc = KernelDesc {
    name: "matmul_wide",
    file: "matmul_wide.wgsl",
    source: concat!(
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl"),
        include_str!("../../../../shaders/matmul_wide.wgsl"),
        include_str!("../../../../shaders/matmul_wide_staged.wgsl")
    ),
    entry: "matmul_wide",
    workgroup_size: [256, 1, 1],
    bindings: MATMUL_BINDINGS,
    params: MatmulParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// The pipeline-overridable constant of matmul_common.wgsl that the `*_VEC4` kernels set.
const ROWS_AS_VEC4: &[(&str, f64)] = &[("ROWS_AS_VEC4", 1.0)];

/// [`MATMUL`] loading rows of A (and of B stored `[N, K]`) a k-quad at a time, where they are
/// 16-byte aligned (offsets, strides and K multiples of four elements).
pub const MATMUL_VEC4: KernelDesc = KernelDesc {
    name: "matmul_vec4",
    constants: ROWS_AS_VEC4,
    ..MATMUL
};

/// [`MATMUL`] with eight k-groups (512 invocations, half as many workgroups at once): see
/// [`prefers_eight_groups`].
pub const MATMUL_K8: KernelDesc = KernelDesc {
    name: "matmul_k8",
    workgroup_size: [512, 1, 1],
    constants: &[("GROUPS", 8.0)],
    ..MATMUL
};

/// [`MATMUL_K8`] loading aligned rows a k-quad at a time, like [`MATMUL_VEC4`].
pub const MATMUL_K8_VEC4: KernelDesc = KernelDesc {
    name: "matmul_k8_vec4",
    constants: &[("GROUPS", 8.0), ("ROWS_AS_VEC4", 1.0)],
    ..MATMUL_K8
};

/// [`MATMUL`] for B stored `[K, N]` (the shader's `B_ALONG_N`; the pipelines without `_kn`
/// are built for `[N, K]`, see [`tiled_kernel`]).
pub const MATMUL_KN: KernelDesc = KernelDesc {
    name: "matmul_kn",
    constants: &[B_ALONG_N],
    ..MATMUL
};

/// [`MATMUL_VEC4`] for B stored `[K, N]`.
pub const MATMUL_VEC4_KN: KernelDesc = KernelDesc {
    name: "matmul_vec4_kn",
    constants: &[("ROWS_AS_VEC4", 1.0), B_ALONG_N],
    ..MATMUL_VEC4
};

/// [`MATMUL_K8`] for B stored `[K, N]`.
pub const MATMUL_K8_KN: KernelDesc = KernelDesc {
    name: "matmul_k8_kn",
    constants: &[("GROUPS", 8.0), B_ALONG_N],
    ..MATMUL_K8
};

/// [`MATMUL_K8_VEC4`] for B stored `[K, N]`.
pub const MATMUL_K8_VEC4_KN: KernelDesc = KernelDesc {
    name: "matmul_k8_vec4_kn",
    constants: &[("GROUPS", 8.0), ("ROWS_AS_VEC4", 1.0), B_ALONG_N],
    ..MATMUL_K8_VEC4
};

/// Whether `tiles` 64x64 output tiles run better on [`MATMUL_K8`] than on [`MATMUL`]: when
/// its waves (half as many workgroups at once, each tile done in about half the time) leave
/// less of the GPU idle. MiniLM's 384-wide projections at 4096 rows have 384 tiles: 1.45
/// waves of the four-group kernel, 2.9 of the eight-group one (on the H200, 4096x384 -> 384
/// 84 -> 73 µs in the model, and 4096x1536 -> 384 no longer 240 or 291 µs from run to run but
/// 240). With equal waves the four-group kernel is faster (1024^3: 100 against 106 µs).
pub fn prefers_eight_groups(tiles: usize) -> bool {
    // The share of the workgroup slots that the waves keep busy, in whole waves.
    let fill = |concurrent: usize| tiles as f64 / (tiles.div_ceil(concurrent) * concurrent) as f64;
    tiles > 0 && fill(CONCURRENT_WORKGROUPS / 2) > fill(CONCURRENT_WORKGROUPS)
}

/// [`MATMUL_WIDE`] loading aligned rows a k-quad at a time, like [`MATMUL_VEC4`].
pub const MATMUL_WIDE_VEC4: KernelDesc = KernelDesc {
    name: "matmul_wide_vec4",
    constants: ROWS_AS_VEC4,
    ..MATMUL_WIDE
};

/// [`MATMUL_WIDE_VEC4`] storing its tile straight from registers as vec4s (the epilogue of
/// matmul_wide_quads.wgsl), where every output quad is 16-byte aligned: see [`wide_kernel`].
pub const MATMUL_WIDE_QUADS: KernelDesc = KernelDesc {
    name: "matmul_wide_quads",
    source: concat!(
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl"),
        include_str!("../../../../shaders/matmul_wide.wgsl"),
        include_str!("../../../../shaders/matmul_wide_quads.wgsl")
    ),
    constants: ROWS_AS_VEC4,
    ..MATMUL_WIDE
};

/// The wide pipelines' B layout constant: `[K, N]`, loaded along n (the shader's
/// `B_ALONG_N`; the default pipelines are built for `[N, K]`, see [`wide_kernel`]).
const B_ALONG_N: (&str, f64) = ("B_ALONG_N", 1.0);

/// [`MATMUL_WIDE`] for B stored `[K, N]`.
pub const MATMUL_WIDE_KN: KernelDesc = KernelDesc {
    name: "matmul_wide_kn",
    constants: &[B_ALONG_N],
    ..MATMUL_WIDE
};

/// [`MATMUL_WIDE_VEC4`] for B stored `[K, N]`.
pub const MATMUL_WIDE_VEC4_KN: KernelDesc = KernelDesc {
    name: "matmul_wide_vec4_kn",
    constants: &[("ROWS_AS_VEC4", 1.0), B_ALONG_N],
    ..MATMUL_WIDE_VEC4
};

/// [`MATMUL_WIDE_QUADS`] for B stored `[K, N]`.
pub const MATMUL_WIDE_QUADS_KN: KernelDesc = KernelDesc {
    name: "matmul_wide_quads_kn",
    constants: &[("ROWS_AS_VEC4", 1.0), B_ALONG_N],
    ..MATMUL_WIDE_QUADS
};

/// The matmul for few rows of A against B stored `[N, K]` (see [`SKINNY_MAX_ROWS`]).
pub const MATMUL_SKINNY: KernelDesc = KernelDesc {
    name: "matmul_skinny",
    file: "matmul_skinny.wgsl",
    source: concat!(
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl"),
        include_str!("../../../../shaders/matmul_skinny.wgsl")
    ),
    entry: "matmul_skinny",
    workgroup_size: [256, 1, 1],
    bindings: MATMUL_BINDINGS,
    params: MatmulParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// [`MATMUL_SKINNY`] reading aligned rows a k-quad at a time, like [`MATMUL_VEC4`].
pub const MATMUL_SKINNY_VEC4: KernelDesc = KernelDesc {
    name: "matmul_skinny_vec4",
    constants: ROWS_AS_VEC4,
    ..MATMUL_SKINNY
};

/// [`MATMUL_SKINNY`] with [`SKINNY_NARROW_COLS`] columns of 128 lanes per workgroup.
pub const MATMUL_SKINNY_NARROW: KernelDesc = KernelDesc {
    name: "matmul_skinny_narrow",
    constants: &[("SKINNY_COLS", SKINNY_NARROW_COLS as f64)],
    ..MATMUL_SKINNY
};

/// [`MATMUL_SKINNY_NARROW`] reading aligned rows a k-quad at a time.
pub const MATMUL_SKINNY_NARROW_VEC4: KernelDesc = KernelDesc {
    name: "matmul_skinny_narrow_vec4",
    constants: &[
        ("SKINNY_COLS", SKINNY_NARROW_COLS as f64),
        ("ROWS_AS_VEC4", 1.0),
    ],
    ..MATMUL_SKINNY
};

/// Output columns per workgroup of a skinny kernel.
fn skinny_columns(kernel: &KernelDesc) -> usize {
    if kernel.name == MATMUL_SKINNY_NARROW.name || kernel.name == MATMUL_SKINNY_NARROW_VEC4.name {
        SKINNY_NARROW_COLS
    } else {
        SKINNY_COLS
    }
}

/// The f32 matmul kernels a step may move between when its extent changes (all bind alike).
pub const EXTENT_VARIANTS: [&KernelDesc; 19] = [
    &MATMUL,
    &MATMUL_VEC4,
    &MATMUL_K8,
    &MATMUL_K8_VEC4,
    &MATMUL_KN,
    &MATMUL_VEC4_KN,
    &MATMUL_K8_KN,
    &MATMUL_K8_VEC4_KN,
    &MATMUL_WIDE,
    &MATMUL_WIDE_VEC4,
    &MATMUL_WIDE_QUADS,
    &MATMUL_WIDE_KN,
    &MATMUL_WIDE_VEC4_KN,
    &MATMUL_WIDE_QUADS_KN,
    &MATMUL_SKINNY,
    &MATMUL_SKINNY_VEC4,
    &MATMUL_SKINNY_NARROW,
    &MATMUL_SKINNY_NARROW_VEC4,
    &MATMUL_COOP,
];

/// Output tile of the cooperative-matrix kernel: rows, columns.
pub const COOP_TILE: [usize; 2] = [128, 64];

/// The f32 matmul on cooperative matrices: f16 inputs (converted while staging), f32
/// accumulation, the same params and epilogue as [`MATMUL`]. Needs 16x16x16 f16 → f32
/// cooperative matrices and a subgroup size of exactly 32 (the kernel splits its 256
/// invocations into 8 subgroups by index); see [`use_cooperative`].
pub const MATMUL_COOP: KernelDesc = KernelDesc {
    name: "matmul_coop",
    file: "matmul_coop.wgsl",
    // The `enable` directives must come first, so the kernel's own file leads.
    source: concat!(
        include_str!("../../../../shaders/matmul_coop.wgsl"),
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl")
    ),
    entry: "matmul_coop",
    workgroup_size: [256, 1, 1],
    bindings: MATMUL_BINDINGS,
    params: MatmulParams::LAYOUT,
    needs: Needs {
        f16: true,
        subgroups: false,
        cooperative_matrix: true,
    },
    constants: &[],
};

/// Whether [`use_cooperative`] moves dispatches of `kernel` to [`MATMUL_COOP`] (the tiled f32
/// kernels; compared by name, as a `const` item has no guaranteed single address).
pub fn replaced_by_cooperative(kernel: &KernelDesc) -> bool {
    [
        MATMUL.name,
        MATMUL_VEC4.name,
        MATMUL_K8.name,
        MATMUL_K8_VEC4.name,
        MATMUL_KN.name,
        MATMUL_VEC4_KN.name,
        MATMUL_K8_KN.name,
        MATMUL_K8_VEC4_KN.name,
        MATMUL_WIDE.name,
        MATMUL_WIDE_VEC4.name,
        MATMUL_WIDE_QUADS.name,
        MATMUL_WIDE_KN.name,
        MATMUL_WIDE_VEC4_KN.name,
        MATMUL_WIDE_QUADS_KN.name,
    ]
    .contains(&kernel.name)
}

/// Moves the tiled f32 matmul dispatches among `dispatches` ([`MATMUL`], [`MATMUL_WIDE`] and
/// their `_VEC4` pipelines) to
/// [`MATMUL_COOP`] (f16 inputs), keeping their params and giving them the coop kernel's grid;
/// skinny ones stay as they are. Re-lowering at another extent must call this again.
pub fn use_cooperative(dispatches: &mut [Dispatch]) -> Result<(), LowerError> {
    for d in dispatches {
        if !replaced_by_cooperative(d.kernel) {
            continue;
        }
        // The params were written by `lower_split_k` from a `MatmulParams`.
        let p: MatmulParams = bytemuck::pod_read_unaligned(&d.params);
        if p.k_chunk != 0 {
            // A split-k chunk's partial products: the coop kernel covers all of k.
            continue;
        }
        let groups = [
            (p.n as usize).div_ceil(COOP_TILE[1]),
            (p.m as usize).div_ceil(COOP_TILE[0]),
        ];
        // The coop tile is narrower than the wide kernel's: its grid may exceed the limit
        // that `lower_split_k` checked for the kernel it chose.
        if let Some(&g) = groups
            .iter()
            .find(|&&g| g > crate::dispatch::MAX_GROUPS_PER_DIM as usize)
        {
            return Err(LowerError::TooLarge {
                op: "matmul",
                what: "cooperative workgroups per dimension",
                value: g as u64,
                limit: crate::dispatch::MAX_GROUPS_PER_DIM as u64,
            });
        }
        d.kernel = &MATMUL_COOP;
        d.groups[0] = groups[0] as u32;
        d.groups[1] = groups[1] as u32;
    }
    Ok(())
}

/// Moves [`MATMUL_K8`] dispatches (512 invocations per workgroup) to the four-group kernel
/// (the same tiles, grid and params) where the device allows fewer invocations per workgroup
/// than that: `max_invocations` is the lesser of its `max_compute_invocations_per_workgroup`
/// and `max_compute_workgroup_size_x` (WebGPU guarantees 256 of both, which every other
/// kernel stays within). Re-lowering must call this again. wgpu does not check a workgroup
/// size set by an override constant against the device's limits, so nothing else would.
pub fn fit_invocation_limit(dispatches: &mut [Dispatch], max_invocations: u32) {
    for d in dispatches {
        if d.kernel.invocations() <= max_invocations {
            continue;
        }
        let four_groups: Option<&'static KernelDesc> = match d.kernel.name {
            n if n == MATMUL_K8.name => Some(&MATMUL),
            n if n == MATMUL_K8_VEC4.name => Some(&MATMUL_VEC4),
            n if n == MATMUL_K8_KN.name => Some(&MATMUL_KN),
            n if n == MATMUL_K8_VEC4_KN.name => Some(&MATMUL_VEC4_KN),
            _ => None,
        };
        if let Some(k) = four_groups {
            d.kernel = k;
        }
    }
}

/// What the epilogue adds after the product.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    pub bias: Option<&'a Operand>,
    pub act: Option<Activation>,
}

/// Lowers `MatMul` and `FusedMatMulBiasAct` writing one output.
pub fn lower(op: &Op, inputs: &[Operand], out: &Operand) -> Result<Vec<Dispatch>, LowerError> {
    lower_with(op, inputs, out, None)
}

/// [`lower`], with split-k where `workspace` is given (see [`lower_split_k`]).
pub fn lower_with(
    op: &Op,
    inputs: &[Operand],
    out: &Operand,
    workspace: Option<SplitWorkspace>,
) -> Result<Vec<Dispatch>, LowerError> {
    let [a, b, rest @ ..] = inputs else {
        return Err(LowerError::unsupported(op, "a matmul takes a and b"));
    };
    let (transpose_b, epilogue) = match op {
        Op::MatMul { transpose_b } => (*transpose_b, Epilogue::default()),
        Op::FusedMatMulBiasAct {
            transpose_b,
            has_bias,
            act,
        } => {
            let bias = match (has_bias, rest.first()) {
                (false, _) => None,
                (true, Some(bias)) => Some(bias),
                (true, None) => {
                    return Err(LowerError::unsupported(op, "the bias operand is missing"))
                }
            };
            (*transpose_b, Epilogue { bias, act: *act })
        }
        _ => return Err(LowerError::unsupported(op, "not a matmul")),
    };
    lower_split_k(op, a, b, transpose_b, epilogue, &[out], workspace)
}

/// Arena words a split-k matmul may use for its partial products: from `offset` (in the
/// step's binding), `words` of them. The caller guarantees that nothing else lives there
/// during the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitWorkspace {
    pub offset: u32,
    pub words: usize,
    /// Whether the product's consumer adds the chunks itself (a residual norm, see
    /// [`take_split_sum`]) when they cover the whole product: no sum dispatch to pay for, so a
    /// split pays from a smaller gain ([`split_k_chunk`]) and from k = 256 on.
    pub sum_absorbed: bool,
}

/// Lowers a matmul whose output columns are split evenly over `outs` (one output normally,
/// three for the QKV split-write; every output is contiguous with the split width as its last
/// dim). Where `workspace` is given and the output has too few 128x128 tiles to occupy the
/// GPU's SMs, k may be split among workgroups ([`split_k_chunk`]): two
/// dispatches, [`MATMUL_WIDE`] writing each chunk's partial products into the workspace and
/// [`MATMUL_SPLIT_SUM`] adding them up through the epilogue. Where the wide tiles leave a
/// short last wave, the rows of the whole waves run apart from the rest
/// (`last_wave_split_dispatches`). Without a workspace every matmul is one dispatch (what a
/// step re-lowered at another extent falls back to); with one, the dispatch count depends on
/// the shape: a caller
/// whose shapes change with the active extent keeps its count with [`fill_slots`].
pub fn lower_split_k(
    op: &Op,
    a: &Operand,
    b: &Operand,
    transpose_b: bool,
    epilogue: Epilogue<'_>,
    outs: &[&Operand],
    workspace: Option<SplitWorkspace>,
) -> Result<Vec<Dispatch>, LowerError> {
    if b.dtype.is_quantized() {
        return crate::families::quant::lower_matmul(op, a, b, transpose_b, epilogue, outs);
    }
    require_f32(
        op,
        [a, b]
            .into_iter()
            .chain(epilogue.bias)
            .chain(outs.iter().copied()),
    )?;
    if outs.is_empty() || outs.len() > 3 {
        return Err(LowerError::unsupported(
            op,
            "a matmul writes one to three outputs",
        ));
    }
    let (ar, br) = (a.dims.len(), b.dims.len());
    if ar < 2 || br < 2 {
        return Err(LowerError::unsupported(
            op,
            format!("operands {:?} and {:?} must be matrices", a.dims, b.dims),
        ));
    }
    let (m, k) = (a.dims[ar - 2], a.dims[ar - 1]);
    let n = if transpose_b {
        b.dims[br - 2]
    } else {
        b.dims[br - 1]
    };
    let split = n / outs.len();
    if split * outs.len() != n {
        return Err(LowerError::unsupported(
            op,
            format!("{n} columns do not split into {} outputs", outs.len()),
        ));
    }
    // A 2-D B folds every leading dim of A into the rows; otherwise the output's leading dims
    // are batches with broadcast strides.
    let (rows, batch_dims, a_batch, b_batch) = if br == 2 {
        (
            a.dims[..ar - 1].iter().product::<usize>(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    } else {
        let batch: Vec<usize> = outs[0].dims[..outs[0].dims.len() - 2].to_vec();
        let scale = |s: Vec<usize>, mat: usize| s.into_iter().map(|x| x * mat).collect::<Vec<_>>();
        let a_b = scale(broadcast_strides(&a.dims[..ar - 2], &batch), m * k);
        let b_b = scale(broadcast_strides(&b.dims[..br - 2], &batch), k * n);
        (m, batch, a_b, b_b)
    };
    let (batch_dims, a_batch, b_batch) = fold_batch(batch_dims, a_batch, b_batch);
    if batch_dims.len() > MAX_BATCH_RANK {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "batch rank",
            value: batch_dims.len() as u64,
            limit: MAX_BATCH_RANK as u64,
        });
    }
    let batch: usize = batch_dims.iter().product();
    let pack = |v: &[usize]| -> Result<[u32; 4], LowerError> {
        let mut o = [0u32; 4];
        for (i, &x) in v.iter().enumerate() {
            o[i] = u32_of(op, "batch stride", x)?;
        }
        Ok(o)
    };
    let mut out_offsets = [0u32; 4];
    for (i, o) in outs.iter().enumerate() {
        out_offsets[i] = o.offset;
    }
    let (b_stride_k, b_stride_n) = if transpose_b { (1, k) } else { (n, 1) };
    let skinny = transpose_b && rows <= SKINNY_MAX_ROWS;
    let p = MatmulParams {
        m: u32_of(op, "rows", rows)?,
        n: u32_of(op, "columns", n)?,
        k: u32_of(op, "inner dim", k)?,
        batch_rank: batch_dims.len() as u32,
        a_offset: a.offset,
        b_offset: b.offset,
        bias_offset: epilogue.bias.map_or(0, |b| b.offset),
        has_bias: u32::from(epilogue.bias.is_some()),
        a_stride_m: u32_of(op, "row stride", k)?,
        b_stride_k: u32_of(op, "stride", b_stride_k)?,
        b_stride_n: u32_of(op, "stride", b_stride_n)?,
        act: epilogue.act.map_or(NO_ACTIVATION, activation_id),
        split_width: u32_of(op, "columns", split)?,
        out_stride_m: u32_of(op, "columns", split)?,
        k_chunk: 0,
        batches: u32_of(op, "batches", batch.max(1))?,
        out_offsets,
        batch_dims: pack(&batch_dims)?,
        a_batch_strides: pack(&a_batch)?,
        b_batch_strides: pack(&b_batch)?,
    };
    if rows == 0 || n == 0 || batch == 0 {
        // An empty output: nothing to compute (the kernels assume at least one row).
        return Ok(Vec::new());
    }
    let tiles = |[r, c]: [usize; 2]| rows.div_ceil(r) * n.div_ceil(c) * batch.max(1);
    // (K = 0 stays on the 64x64 kernel, whose loads are guarded per element.)
    let vec4_rows = rows_aligned(a.offset, k, &a_batch)
        && (!transpose_b || rows_aligned(b.offset, k, &b_batch));
    // Split-k only where the 64x64 kernels would take the eight-group one (its waves fit
    // better than the four-group one's, so the output is small for the GPU) and k is long.
    // Where the consumer adds the chunks, from two chunks of the shortest length on.
    let absorbed = workspace.is_some_and(|w| w.sum_absorbed) && k >= 2 * SPLIT_MIN_CHUNK;
    let split_pays = absorbed || (k >= SPLIT_MIN_K && prefers_eight_groups(tiles([TILE; 2])));
    if let Some(ws) = workspace.filter(|_| !skinny && split_pays) {
        if let Some(ds) = split_k_dispatches(op, &p, tiles([WIDE_TILE; 2]), batch, vec4_rows, ws)? {
            return Ok(ds);
        }
    }
    // A wide tile over fewer rows than its 128 computes mostly padding (MiniLM's pooling, 32
    // batches of one row against 384 columns, took 37.5 µs on wide tiles, 22 on 64x64 ones).
    let wide = tiles([WIDE_TILE; 2]) >= WIDE_MIN_TILES && rows >= WIDE_TILE && k > 0;
    // Without a workspace the caller wants one dispatch (a step re-lowered at another
    // extent falls back to that when its split does not fit its recorded dispatches).
    if let Some(ws) = workspace.filter(|_| !skinny && wide && batch <= 1) {
        if let Some(ds) = last_wave_split_dispatches(op, &p, vec4_rows, ws)? {
            return Ok(ds);
        }
    }
    let (kernel, tile) = if skinny {
        let narrow = n.div_ceil(SKINNY_COLS) * batch.max(1) < CONCURRENT_WORKGROUPS / 2;
        let skinny = match (narrow, vec4_rows) {
            (false, false) => &MATMUL_SKINNY,
            (false, true) => &MATMUL_SKINNY_VEC4,
            (true, false) => &MATMUL_SKINNY_NARROW,
            (true, true) => &MATMUL_SKINNY_NARROW_VEC4,
        };
        (skinny, None)
    } else if wide {
        (wide_kernel(&p, vec4_rows), Some([WIDE_TILE; 2]))
    } else {
        (
            tiled_kernel(tiles([TILE; 2]), vec4_rows, &p),
            Some([TILE; 2]),
        )
    };
    let groups = match tile {
        None => [
            u32_of(op, "column groups", n.div_ceil(skinny_columns(kernel)))?,
            1,
            u32_of(op, "batches", batch.max(1))?,
        ],
        Some([r, c]) => [
            u32_of(op, "column tiles", n.div_ceil(c))?,
            u32_of(op, "row tiles", rows.div_ceil(r))?,
            u32_of(op, "batches", batch.max(1))?,
        ],
    };
    if groups
        .iter()
        .any(|&g| g > crate::dispatch::MAX_GROUPS_PER_DIM)
    {
        return Err(LowerError::TooLarge {
            op: op.name(),
            what: "workgroups per dimension",
            value: groups.iter().copied().max().unwrap_or(0) as u64,
            limit: crate::dispatch::MAX_GROUPS_PER_DIM as u64,
        });
    }
    Ok(vec![Dispatch::new(kernel, &p, groups)])
}

/// Merges adjacent batch dims that both operands traverse contiguously, so deep batch shapes
/// fit the kernel's four dims.
fn fold_batch(
    dims: Vec<usize>,
    a: Vec<usize>,
    b: Vec<usize>,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let mut out: (Vec<usize>, Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..dims.len() {
        if dims[i] == 1 {
            continue;
        }
        if let (Some(&d), Some(&sa), Some(&sb)) = (out.0.last(), out.1.last(), out.2.last()) {
            // The previous dim steps over exactly this one in both operands.
            if sa == a[i] * dims[i] && sb == b[i] * dims[i] {
                let last = out.0.len() - 1;
                out.0[last] = d * dims[i];
                out.1[last] = a[i];
                out.2[last] = b[i];
                continue;
            }
        }
        out.0.push(dims[i]);
        out.1.push(a[i]);
        out.2.push(b[i]);
    }
    out
}

/// Chunks of k below this many values would spend more on writing and adding partial tiles
/// than the extra workgroups gain.
pub const SPLIT_MIN_CHUNK: usize = 128;
/// Shorter k is never split. Measured on the H200 (one call, 19:42 UTC): MiniLM's FFN down
/// (4096 x 1536 -> 384, 96 wide tiles, four chunks of 384) 238-241 -> 216 µs in the model,
/// but 1024^3 (64 wide tiles in two chunks, against one full wave of the four-group 64x64
/// kernel) 100 -> 112 µs and 256^3 20 -> 39 µs.
pub const SPLIT_MIN_K: usize = 1024;
/// The most chunks k is split into.
pub const MAX_SPLITS: usize = 8;

/// How long an SM takes for `j` workgroups, two at a time, in units of one running alone: a
/// pair takes 1.8 times one alone (a second wide workgroup adds about 11 % throughput on the
/// H200: a stage 2.04 µs alone, 3.69 for two, twelfth session).
fn sm_time(j: usize) -> f64 {
    (j / 2) as f64 * 1.8 + (j % 2) as f64
}

/// The chunk of k each workgroup of a split-k matmul covers (a multiple of the wide kernel's
/// 16-deep stage), or `None` where splitting does not pay: the output's `wide_tiles` 128x128
/// tiles already occupy every SM, or k is too short. Models the run time as the busiest SM's
/// share of the chunks' workgroups ([`sm_time`]) times the chunk's share of k, against 1 for
/// one workgroup per tile; of equal times, the most chunks (the finest grain balances best).
/// Writing and re-reading the partial tiles is not priced: since the wide kernel stores them
/// as column quads from registers, MiniLM's FFN down (96 tiles, k = 1536, 4096 x 384 outputs)
/// took 210, 190, 182 and 168 µs per layer in 3, 4, 6 and 8 chunks (H200, one call, the model
/// profiled; 8 chunks took the model 3.75 -> 3.61 ms GPU in one pass against 4; the model
/// prices them 0.93, 0.70, 0.77, 0.68). A sum dispatch of its own is priced by asking for a
/// clear gain (below 0.9); where the consumer adds the chunks (`sum_absorbed`), any gain: the
/// output projection's 96 tiles at k = 384 in two chunks (0.9) took MiniLM's attention output
/// and residual norm 85 -> 74 µs per layer (H200, two processes), and the model 3.42 -> 3.36 ms
/// GPU in one pass; in three or four chunks 80 and 79 µs (and with a sum dispatch of its own,
/// two chunks had gained nothing: 73 -> 74 µs, thirteenth session).
/// MiniLM at 32 x 128: FFN down splits in 8 chunks of 192; 24 tiles at k = 384 in 3 of 128.
pub fn split_k_chunk(wide_tiles: usize, k: usize, sum_absorbed: bool) -> Option<usize> {
    let sms = CONCURRENT_WORKGROUPS / 2;
    if wide_tiles == 0 || wide_tiles >= sms {
        return None;
    }
    let mut best: Option<(f64, usize)> = None;
    for wanted in 2..=MAX_SPLITS {
        let chunk = k.div_ceil(wanted).next_multiple_of(16);
        if chunk < SPLIT_MIN_CHUNK {
            break;
        }
        let splits = k.div_ceil(chunk);
        let busiest = (wide_tiles * splits).div_ceil(sms);
        let cost = sm_time(busiest) * chunk as f64 / k as f64;
        if best.is_none_or(|(c, _)| cost <= c) {
            best = Some((cost, chunk));
        }
    }
    let bar = if sum_absorbed { 1.0 } else { 0.9 };
    best.filter(|&(cost, _)| cost < bar).map(|(_, chunk)| chunk)
}

/// The two dispatches of a split-k matmul with params `p` (see [`lower_split_k`]), or `None`
/// where it does not pay or does not fit the workspace or the grid.
fn split_k_dispatches(
    op: &Op,
    p: &MatmulParams,
    wide_tiles: usize,
    batch: usize,
    vec4_rows: bool,
    ws: SplitWorkspace,
) -> Result<Option<Vec<Dispatch>>, LowerError> {
    let (rows, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let Some(chunk) = split_k_chunk(wide_tiles, k, ws.sum_absorbed) else {
        return Ok(None);
    };
    let splits = k.div_ceil(chunk);
    let batch = batch.max(1);
    let words = splits
        .checked_mul(batch)
        .and_then(|x| x.checked_mul(rows))
        .and_then(|x| x.checked_mul(n));
    let max_dim = crate::dispatch::MAX_GROUPS_PER_DIM as usize;
    let fits = words.is_some_and(|w| w <= ws.words)
        && batch * splits <= max_dim
        && rows <= max_dim
        && rows.div_ceil(WIDE_TILE) <= max_dim;
    if !fits || u32::try_from(words.unwrap_or(0)).is_err() {
        return Ok(None);
    }
    // The partial products: one output, [chunk][batch][m][n], no bias or activation.
    let partial = MatmulParams {
        k_chunk: u32_of(op, "k chunk", chunk)?,
        has_bias: 0,
        act: NO_ACTIVATION,
        split_width: p.n,
        out_stride_m: p.n,
        out_offsets: [ws.offset, 0, 0, 0],
        ..*p
    };
    let sum = MatmulParams {
        k: u32_of(op, "chunks", splits)?,
        a_offset: ws.offset,
        ..*p
    };
    Ok(Some(vec![
        Dispatch::new(
            wide_kernel(&partial, vec4_rows),
            &partial,
            [
                u32_of(op, "column tiles", n.div_ceil(WIDE_TILE))?,
                u32_of(op, "row tiles", rows.div_ceil(WIDE_TILE))?,
                u32_of(op, "batches", batch * splits)?,
            ],
        ),
        split_sum_dispatch(op, &sum, rows, batch)?,
    ]))
}

/// The chunks' sum of a split-k matmul with params `sum`: a column quad per invocation where
/// [`MATMUL_SPLIT_SUM_QUADS`] applies, else a value per invocation.
fn split_sum_dispatch(
    op: &Op,
    sum: &MatmulParams,
    rows: usize,
    batch: usize,
) -> Result<Dispatch, LowerError> {
    let n = sum.n as usize;
    let quads = sum.a_offset.is_multiple_of(4)
        && sum.n.is_multiple_of(4)
        && sum.split_width.is_multiple_of(4);
    let (kernel, groups) = if quads {
        (
            &MATMUL_SPLIT_SUM_QUADS,
            [
                n.div_ceil(4 * SPLIT_SUM_QUAD_COLUMNS),
                rows.div_ceil(SPLIT_SUM_QUAD_ROWS),
            ],
        )
    } else {
        (&MATMUL_SPLIT_SUM, [n.div_ceil(SPLIT_SUM_COLUMNS), rows])
    };
    Ok(Dispatch::new(
        kernel,
        sum,
        [
            u32_of(op, "column groups", groups[0])?,
            u32_of(op, "row groups", groups[1])?,
            u32_of(op, "batches", batch)?,
        ],
    ))
}

/// Whether `kernel` adds up a split-k matmul's chunks (either form).
fn is_split_sum(kernel: &KernelDesc) -> bool {
    kernel.name == MATMUL_SPLIT_SUM.name || kernel.name == MATMUL_SPLIT_SUM_QUADS.name
}

/// The 64x64 kernel for an output of `tiles` 64x64 tiles: four k-groups, or eight where their
/// waves fill the GPU better; loading rows as vec4s where they are aligned.
fn tiled_kernel(tiles: usize, vec4_rows: bool, p: &MatmulParams) -> &'static KernelDesc {
    // Each pipeline is built for one layout of B, like the wide ones (see [`wide_kernel`]).
    let along_n = p.b_stride_k != 1;
    match (prefers_eight_groups(tiles), vec4_rows, along_n) {
        (false, false, false) => &MATMUL,
        (false, true, false) => &MATMUL_VEC4,
        (true, false, false) => &MATMUL_K8,
        (true, true, false) => &MATMUL_K8_VEC4,
        (false, false, true) => &MATMUL_KN,
        (false, true, true) => &MATMUL_VEC4_KN,
        (true, false, true) => &MATMUL_K8_KN,
        (true, true, true) => &MATMUL_K8_VEC4_KN,
    }
}

/// The 128x128 kernel for params `p`: loading rows as vec4s where they are aligned, and then
/// storing column quads straight from registers where the outputs are aligned too (split-k
/// partial products included). Against the staged epilogue (H200, one call, three processes
/// each): MiniLM 32 x 128's Q/K/V 132.4 -> 126.5 µs per layer profiled, the output projection
/// 73.3 -> 68.0, FFN up with GELU 176.5 -> 161.0, the model 3.82-3.83 -> 3.69 ms GPU in one
/// pass; 4096^3 3.73 -> 3.65-3.67 ms.
fn wide_kernel(p: &MatmulParams, vec4_rows: bool) -> &'static KernelDesc {
    // Each pipeline is built for one layout of B (`B_ALONG_N`), chosen by the same test of
    // the stride that the shader made at run time before.
    let along_n = p.b_stride_k != 1;
    match (vec4_rows, outputs_in_quads(p), along_n) {
        (false, _, false) => &MATMUL_WIDE,
        (false, _, true) => &MATMUL_WIDE_KN,
        (true, false, false) => &MATMUL_WIDE_VEC4,
        (true, false, true) => &MATMUL_WIDE_VEC4_KN,
        (true, true, false) => &MATMUL_WIDE_QUADS,
        (true, true, true) => &MATMUL_WIDE_QUADS_KN,
    }
}

/// Whether every column quad of the outputs of `p` starts on 16 bytes, in every row, and its
/// bias quad too: the offsets of the outputs in use, the row stride, the split width (so that
/// a quad never straddles two outputs) and n (so that a quad is wholly inside or past it).
fn outputs_in_quads(p: &MatmulParams) -> bool {
    let outputs = (p.n / p.split_width.max(1)) as usize;
    let aligned = |x: u32| x.is_multiple_of(4);
    p.out_offsets.iter().take(outputs).all(|&o| aligned(o))
        && aligned(p.out_stride_m)
        && aligned(p.split_width)
        && aligned(p.n)
        && (p.has_bias == 0 || aligned(p.bias_offset))
}

/// Where a wide matmul's 128x128 tiles fill whole waves of the GPU and leave a short last
/// one: the rows of the whole waves as usual, then the remaining rows either on the 64x64
/// kernels, where their 64x64 tiles fit one round of them (two dispatches), or else as a
/// split-k matmul in `ws` (its chunks and sum, see [`split_k_dispatches`]: three), or else,
/// where they are at most one wide tile per SM, as wide tiles in a dispatch of their own
/// (two: MiniLM's FFN up, whose 120 tail tiles otherwise land two to an SM by a race);
/// `None` where none applies. Only where the caller
/// offers a workspace: without one it wants a single dispatch, even for the 64x64 tail.
/// The tiles of a short last wave run one per SM: MiniLM's Q/K/V at 32 x 128 rows has 288
/// tiles against 264 slots; its last 27 rows of tiles took 60 µs after a 122 µs wave on the
/// H200 (sixth and eighth sessions), as split-k chunks and a sum 147.6 µs for the three
/// dispatches in the model, and as 108 tiles of the eight-group 64x64 kernel 132.5 µs for the
/// two (eleventh session, profiled; 25.9 µs for the tail alone).
/// Unbatched outputs only: the rows are split by offsetting A and the outputs.
fn last_wave_split_dispatches(
    op: &Op,
    p: &MatmulParams,
    vec4_rows: bool,
    ws: SplitWorkspace,
) -> Result<Option<Vec<Dispatch>>, LowerError> {
    let (rows, n) = (p.m as usize, p.n as usize);
    let column_tiles = n.div_ceil(WIDE_TILE);
    let waves = rows.div_ceil(WIDE_TILE) * column_tiles / CONCURRENT_WORKGROUPS;
    let head_rows = waves * CONCURRENT_WORKGROUPS / column_tiles * WIDE_TILE;
    if head_rows == 0 || head_rows >= rows {
        return Ok(None);
    }
    let tail_rows = rows - head_rows;
    let shift = |offset: u32, stride: u32| {
        let shifted = offset as usize + head_rows * stride as usize;
        u32_of(op, "row offset", shifted)
    };
    let outputs = n / p.split_width.max(1) as usize;
    let mut out_offsets = p.out_offsets;
    for o in out_offsets.iter_mut().take(outputs) {
        *o = shift(*o, p.out_stride_m)?;
    }
    let tail = MatmulParams {
        m: u32_of(op, "rows", tail_rows)?,
        a_offset: shift(p.a_offset, p.a_stride_m)?,
        out_offsets,
        ..*p
    };
    let tail_tiles = tail_rows.div_ceil(WIDE_TILE) * column_tiles;
    let small_tiles = tail_rows.div_ceil(TILE) * n.div_ceil(TILE);
    let tail = if small_tiles <= CONCURRENT_WORKGROUPS / 2 {
        // Few enough 64x64 tiles for one round of the 64x64 kernels: no partial sums.
        vec![Dispatch::new(
            tiled_kernel(small_tiles, vec4_rows, &tail),
            &tail,
            [
                u32_of(op, "column tiles", n.div_ceil(TILE))?,
                u32_of(op, "row tiles", tail_rows.div_ceil(TILE))?,
                1,
            ],
        )]
    } else if let Some(split) = split_k_dispatches(
        op,
        &tail,
        tail_tiles,
        1,
        vec4_rows,
        // The tail's sum covers its rows only: a dispatch of its own, whatever the consumer.
        SplitWorkspace {
            sum_absorbed: false,
            ..ws
        },
    )? {
        split
    } else if tail_tiles <= CONCURRENT_WORKGROUPS / 2 {
        // At most one wide tile per SM: in a dispatch of their own they start on an idle GPU,
        // one per SM, instead of wherever the first wave frees a slot (two to an SM take
        // 1.8x as long as one).
        vec![Dispatch::new(
            wide_kernel(&tail, vec4_rows),
            &tail,
            [
                u32_of(op, "column tiles", column_tiles)?,
                u32_of(op, "row tiles", tail_rows.div_ceil(WIDE_TILE))?,
                1,
            ],
        )]
    } else {
        return Ok(None);
    };
    let head = MatmulParams {
        m: u32_of(op, "rows", head_rows)?,
        ..*p
    };
    let groups = [
        u32_of(op, "column tiles", column_tiles)?,
        u32_of(op, "row tiles", head_rows / WIDE_TILE)?,
        1,
    ];
    let mut ds = vec![Dispatch::new(wide_kernel(&head, vec4_rows), &head, groups)];
    ds.extend(tail);
    Ok(Some(ds))
}

/// A step's dispatches at a new active extent laid over the `slots` (kernels) it was recorded
/// with, or `None` where they are more than the slots. Split-k and the last-wave split change
/// a matmul's dispatch count with its rows, but a recorded step keeps its count: missing
/// dispatches become empty ones (no workgroups) of their slot's kernel, in front where the
/// dispatches end with the chunks' sum (which keeps the last slot), else behind. A dispatch
/// of every slot thus keeps a kernel of the slot's family.
pub fn fill_slots(ds: Vec<Dispatch>, slots: &[&'static KernelDesc]) -> Option<Vec<Dispatch>> {
    if ds.len() >= slots.len() {
        return (ds.len() == slots.len()).then_some(ds);
    }
    // A last dispatch of another kind (the norm of a matmul joined with its residual norm)
    // keeps the last slot; the matmul's dispatches fill the slots before it.
    if ds.last().is_some_and(|d| !d.kernel.binds_like(&MATMUL)) {
        let mut ds = ds;
        let last = ds.pop()?;
        let mut out = fill_slots(ds, &slots[..slots.len() - 1])?;
        out.push(last);
        return Some(out);
    }
    let template = ds.first()?.params.clone();
    let empty = |kernel: &'static KernelDesc| {
        (kernel.params.size == template.len()).then(|| Dispatch {
            kernel,
            params: template.clone(),
            groups: [0, 1, 1],
        })
    };
    let missing = slots.len() - ds.len();
    let ends_in_sum = ds.last().is_some_and(|d| is_split_sum(d.kernel));
    if ends_in_sum {
        let mut out: Vec<Dispatch> = slots[..missing]
            .iter()
            .map(|k| empty(k))
            .collect::<Option<_>>()?;
        out.extend(ds);
        Some(out)
    } else {
        let mut out = ds;
        for k in &slots[out.len()..] {
            out.push(empty(k)?);
        }
        Some(out)
    }
}

/// Arena words that the split-k dispatches among `dispatches` use from their workspace (0
/// for none): what a caller offering a [`SplitWorkspace`] must reserve. Counted from the
/// partial products' dispatches, which a consumer adding the chunks itself keeps without the
/// sum ([`take_split_sum`]).
pub fn split_k_words(dispatches: &[Dispatch]) -> usize {
    dispatches
        .iter()
        .filter(|d| d.kernel.binds_like(&MATMUL))
        .map(|d| bytemuck::pod_read_unaligned::<MatmulParams>(&d.params))
        .filter(|p| p.k_chunk != 0)
        .map(|p| {
            let chunks = p.k.div_ceil(p.k_chunk) as usize;
            chunks * p.batches as usize * p.m as usize * p.n as usize
        })
        .max()
        .unwrap_or(0)
}

/// Where a split-k matmul's partial products lie: chunk 0 at `offset` (words, laid out like
/// the product), `count` chunks `stride` words apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitPartials {
    pub offset: u32,
    pub count: u32,
    pub stride: u32,
}

/// Removes the chunks' sum from the end of `ds` where it adds up the whole product `out`
/// (contiguous, one output, not a last-wave tail of its rows), for a consumer that adds the
/// chunks itself and applies the sum's bias (its only epilogue: no activation); returns where
/// the chunks lie. `None` (and `ds` unchanged) otherwise.
pub fn take_split_sum(ds: &mut Vec<Dispatch>, out: &Operand) -> Option<SplitPartials> {
    let last = ds.last().filter(|d| is_split_sum(d.kernel))?;
    // Written by `split_k_dispatches` from a `MatmulParams`.
    let p: MatmulParams = bytemuck::pod_read_unaligned(&last.params);
    let words = p.batches as usize * p.m as usize * p.n as usize;
    let whole = p.out_offsets[0] == out.offset
        && p.split_width == p.n
        && p.out_stride_m == p.n
        && p.act == NO_ACTIVATION
        && out.dims.last() == Some(&(p.n as usize))
        && words == out.numel();
    let stride = u32::try_from(words).ok().filter(|_| whole)?;
    ds.pop();
    Some(SplitPartials {
        offset: p.a_offset,
        count: p.k,
        stride,
    })
}

/// Output columns per workgroup of [`MATMUL_SPLIT_SUM`].
const SPLIT_SUM_COLUMNS: usize = 64;

/// The second dispatch of a split-k matmul: adds the chunks' partial products and applies the
/// epilogue (see [`lower_split_k`]).
pub const MATMUL_SPLIT_SUM: KernelDesc = KernelDesc {
    name: "matmul_split_sum",
    file: "matmul_split_sum.wgsl",
    source: concat!(
        include_str!("../../../../shaders/activations.wgsl"),
        include_str!("../../../../shaders/matmul_common.wgsl"),
        include_str!("../../../../shaders/matmul_split_sum.wgsl")
    ),
    entry: "matmul_split_sum",
    workgroup_size: [SPLIT_SUM_COLUMNS as u32, 1, 1],
    bindings: MATMUL_BINDINGS,
    params: MatmulParams::LAYOUT,
    needs: Needs::BASELINE,
    constants: &[],
};

/// Column quads per workgroup of [`MATMUL_SPLIT_SUM_QUADS`] (per row), and its rows.
const SPLIT_SUM_QUAD_COLUMNS: usize = 32;
const SPLIT_SUM_QUAD_ROWS: usize = 8;

/// [`MATMUL_SPLIT_SUM`] a column quad per invocation (vec4 loads of the partial products),
/// where the workspace offset, n and the split width are multiples of four. MiniLM's FFN down
/// at 32 x 128 rows (eight chunks of 4096 x 384) takes one workgroup per 8 rows instead of
/// one per 64 values.
pub const MATMUL_SPLIT_SUM_QUADS: KernelDesc = KernelDesc {
    name: "matmul_split_sum_quads",
    entry: "matmul_split_sum_quads",
    workgroup_size: [(SPLIT_SUM_QUAD_COLUMNS * SPLIT_SUM_QUAD_ROWS) as u32, 1, 1],
    ..MATMUL_SPLIT_SUM
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_split_sum_quad_constants_match_the_shader() {
        let source = MATMUL_SPLIT_SUM_QUADS.source;
        assert!(source.contains(&format!(
            "const SUM_QUAD_COLUMNS: u32 = {SPLIT_SUM_QUAD_COLUMNS}u;"
        )));
        assert!(source.contains(&format!(
            "const SUM_QUAD_ROWS: u32 = {SPLIT_SUM_QUAD_ROWS}u;"
        )));
        assert_eq!(
            MATMUL_SPLIT_SUM_QUADS.invocations() as usize,
            SPLIT_SUM_QUAD_COLUMNS * SPLIT_SUM_QUAD_ROWS
        );
        assert!(source.contains("@workgroup_size(256, 1, 1)\nfn matmul_split_sum_quads"));
    }
    use kiln_ir::DType;

    fn names(ds: &[Dispatch]) -> Vec<&'static str> {
        ds.iter().map(|d| d.kernel.name).collect()
    }

    fn matmul_dispatch(m: usize, k: usize, n: usize) -> Dispatch {
        let a = Operand::new(0, &[m, k], DType::F32);
        let b = Operand::new(1 << 20, &[n, k], DType::F32);
        let out = Operand::new(2 << 20, &[m, n], DType::F32);
        let op = Op::MatMul { transpose_b: true };
        let mut ds = lower(&op, &[a, b], &out).expect("a plain matmul lowers");
        assert_eq!(ds.len(), 1);
        ds.remove(0)
    }

    #[test]
    fn the_quad_epilogue_activation_ids_match_the_shader() {
        let source = MATMUL_WIDE_QUADS.source;
        for (name, act) in [
            ("ACT_RELU", Activation::Relu),
            ("ACT_GELU", Activation::Gelu),
            ("ACT_GELU_TANH", Activation::GeluTanh),
            ("ACT_SILU", Activation::Silu),
        ] {
            let line = format!("const {name}: u32 = {}u;", activation_id(act));
            assert!(source.contains(&line), "{line}");
        }
        assert!(source.contains(&format!("const ACT_NONE: u32 = {NO_ACTIVATION:#x}u;")));
        // The quad epilogue replaces the staged one: one `store_tile` per kernel source.
        for k in [&MATMUL_WIDE, &MATMUL_WIDE_VEC4, &MATMUL_WIDE_QUADS] {
            assert_eq!(k.source.matches("fn store_tile(").count(), 1, "{}", k.name);
        }
    }

    /// Each wide pipeline is built for one layout of B: `[N, K]` (k contiguous) or, as the
    /// `_kn` pipelines, `[K, N]`.
    #[test]
    fn wide_pipelines_follow_the_layout_of_b() {
        let wide = |k: usize, n: usize, transpose: bool, k4: bool| {
            let k = if k4 { k } else { k + 1 };
            let a = Operand::new(0, &[4096, k], DType::F32);
            let dims = if transpose { [n, k] } else { [k, n] };
            let b = Operand::new(1 << 24, &dims, DType::F32);
            let out = Operand::new(2 << 24, &[4096, n], DType::F32);
            let op = Op::MatMul {
                transpose_b: transpose,
            };
            let ds = lower_split_k(&op, &a, &b, transpose, Epilogue::default(), &[&out], None);
            ds.unwrap()[0].kernel.name
        };
        assert_eq!(wide(64, 1024, true, true), "matmul_wide_quads");
        assert_eq!(wide(64, 1024, false, true), "matmul_wide_quads_kn");
        assert_eq!(wide(64, 1022, true, true), "matmul_wide_vec4");
        assert_eq!(wide(64, 1022, false, true), "matmul_wide_vec4_kn");
        assert_eq!(wide(64, 1024, true, false), "matmul_wide");
        assert_eq!(wide(64, 1024, false, false), "matmul_wide_kn");
        assert!(MATMUL_WIDE_QUADS_KN.binds_like(&MATMUL_WIDE_QUADS));
        let wide_source = include_str!("../../../../shaders/matmul_wide.wgsl");
        assert!(wide_source.contains("override B_ALONG_N: bool = false;"));
        for k in [&MATMUL_WIDE_KN, &MATMUL_WIDE_VEC4_KN, &MATMUL_WIDE_QUADS_KN] {
            assert!(k.constants.contains(&B_ALONG_N), "{}", k.name);
        }
    }

    /// The wide kernel stores column quads from registers only where every quad of every
    /// output row starts on 16 bytes, its bias quad too, and the rows load as vec4s.
    #[test]
    fn wide_outputs_store_quads_only_when_aligned() {
        let lower_wide = |n: usize, out_offset: u32, bias_offset: Option<u32>, outs: usize| {
            let (m, k) = (4096, 64);
            let a = Operand::new(0, &[m, k], DType::F32);
            let b = Operand::new(1 << 20, &[n, k], DType::F32);
            let bias = bias_offset.map(|o| Operand::new(o, &[n], DType::F32));
            let parts: Vec<Operand> = (0..outs)
                .map(|i| {
                    Operand::new(
                        out_offset + (i * m * n / outs) as u32,
                        &[m, n / outs],
                        DType::F32,
                    )
                })
                .collect();
            let refs: Vec<&Operand> = parts.iter().collect();
            let op = Op::FusedMatMulBiasAct {
                transpose_b: true,
                has_bias: bias.is_some(),
                act: Some(Activation::Gelu),
            };
            let epilogue = Epilogue {
                bias: bias.as_ref(),
                act: Some(Activation::Gelu),
            };
            let ds = lower_split_k(&op, &a, &b, true, epilogue, &refs, None).unwrap();
            ds[0].kernel.name
        };
        assert_eq!(
            lower_wide(1024, 2 << 20, Some(3 << 20), 1),
            "matmul_wide_quads"
        );
        assert_eq!(
            lower_wide(1020, 2 << 20, Some(3 << 20), 3),
            "matmul_wide_quads"
        );
        // An output, or its bias, off 16 bytes; rows of n = 1022 that start off them; a split
        // width (1022 / 2 = 511) whose quads would straddle two outputs.
        assert_eq!(lower_wide(1024, (2 << 20) + 2, None, 1), "matmul_wide_vec4");
        assert_eq!(
            lower_wide(1024, 2 << 20, Some((3 << 20) + 1), 1),
            "matmul_wide_vec4"
        );
        assert_eq!(lower_wide(1022, 2 << 20, None, 1), "matmul_wide_vec4");
        assert_eq!(lower_wide(1022, 2 << 20, None, 2), "matmul_wide_vec4");
        // Rows that do not load as vec4s keep the scalar kernel and its staged epilogue.
        assert_eq!(matmul_dispatch(4096, 66, 1024).kernel.name, "matmul_wide");
    }

    #[test]
    fn rows_load_as_vec4s_only_when_aligned() {
        assert_eq!(matmul_dispatch(300, 64, 100).kernel.name, "matmul_k8_vec4");
        assert_eq!(
            matmul_dispatch(4096, 36, 1024).kernel.name,
            "matmul_wide_quads"
        );
        // K not a multiple of four: every row but the first starts off 16 bytes.
        assert_eq!(matmul_dispatch(300, 66, 100).kernel.name, "matmul_k8");
        assert_eq!(matmul_dispatch(4096, 66, 1024).kernel.name, "matmul_wide");
        let lower_one = |a_offset: u32, b_offset: u32, transpose_b: bool| {
            let a = Operand::new(a_offset, &[300, 64], DType::F32);
            let bdims = if transpose_b { [100, 64] } else { [64, 100] };
            let b = Operand::new(b_offset, &bdims, DType::F32);
            let out = Operand::new(2 << 20, &[300, 100], DType::F32);
            let op = Op::MatMul { transpose_b };
            lower(&op, &[a, b], &out).unwrap().remove(0).kernel.name
        };
        assert_eq!(lower_one(2, 1 << 20, true), "matmul_k8");
        assert_eq!(lower_one(0, (1 << 20) + 2, true), "matmul_k8");
        // B stored [K, N] is read along n, never by k-quads: its offset does not matter (the
        // `_kn` pipeline, built for that layout).
        assert_eq!(lower_one(0, (1 << 20) + 2, false), "matmul_k8_vec4_kn");
        assert_eq!(lower_one(2, 1 << 20, false), "matmul_k8_kn");
        // K = 0 has no quad to load.
        assert_eq!(matmul_dispatch(300, 0, 100).kernel.name, "matmul_k8");
    }

    #[test]
    fn kernel_by_shape() {
        assert_eq!(
            matmul_dispatch(4, 64, 100).kernel.name,
            "matmul_skinny_narrow_vec4"
        );
        assert_eq!(
            matmul_dispatch(4, 66, 100).kernel.name,
            "matmul_skinny_narrow"
        );
        assert_eq!(matmul_dispatch(4, 66, 1000).kernel.name, "matmul_skinny");
        assert_eq!(matmul_dispatch(300, 64, 100).kernel.name, "matmul_k8_vec4");
        let wide = matmul_dispatch(4096, 64, 1024);
        assert_eq!(wide.kernel.name, "matmul_wide_quads");
        assert_eq!(wide.groups, [8, 32, 1]);
        // The wide kernel from WIDE_MIN_TILES 128x128 tiles on (MiniLM's 4096 x 384 -> 384 at
        // 32 x 128 tokens has 96), the 64x64 kernels below.
        let n = 3 * WIDE_TILE;
        let edge = WIDE_TILE * WIDE_MIN_TILES / 3;
        assert_eq!(
            matmul_dispatch(edge, 64, n).kernel.name,
            "matmul_wide_quads"
        );
        assert_eq!(
            matmul_dispatch(edge - WIDE_TILE, 64, n).kernel.name,
            "matmul_k8_vec4"
        );
        // 300 tiles of 64x64 (75 wide ones): 2.3 waves of four-group workgroups, 2.3 of
        // eight-group ones, whose last is the fuller.
        assert_eq!(
            matmul_dispatch(3200, 1536, 384).kernel.name,
            "matmul_k8_vec4"
        );
        // Batches of single rows never take wide tiles, however many (96 here).
        let a = Operand::new(0, &[32, 1, 128], DType::F32);
        let b = Operand::new(1 << 20, &[32, 128, 384], DType::F32);
        let out = Operand::new(2 << 20, &[32, 1, 384], DType::F32);
        let op = Op::MatMul { transpose_b: false };
        let pooling = lower(&op, &[a, b], &out).expect("a batched matmul lowers");
        assert_eq!(pooling[0].kernel.name, "matmul_vec4_kn");
        // 256 tiles: one wave of either, and the four-group kernel is the faster one.
        assert_eq!(matmul_dispatch(1024, 1024, 1024).kernel.name, "matmul_vec4");
    }

    #[test]
    fn eight_groups_where_their_waves_fill_the_gpu_better() {
        let c = CONCURRENT_WORKGROUPS;
        // Up to one wave of eight-group workgroups: they keep twice the share busy.
        for tiles in [1, 12, c / 2] {
            assert!(prefers_eight_groups(tiles), "{tiles}");
        }
        // Equal whole waves: the four-group kernel.
        for tiles in [c / 2 + 1, c, 2 * c, 4 * c] {
            assert!(!prefers_eight_groups(tiles), "{tiles}");
        }
        // Just past a wave of four-group workgroups: three of eight-group ones are fuller.
        assert!(prefers_eight_groups(c + 1));
        assert!(prefers_eight_groups(3 * c / 2));
        assert!(!prefers_eight_groups(0));
    }

    #[test]
    fn eight_groups_fall_back_where_workgroups_are_limited() {
        let mut ds = vec![
            matmul_dispatch(300, 64, 100),
            matmul_dispatch(300, 66, 100),
            matmul_dispatch(4096, 64, 1024),
        ];
        let before: Vec<_> = ds.iter().map(|d| (d.groups, d.params.clone())).collect();
        fit_invocation_limit(&mut ds, 512);
        assert_eq!(
            names(&ds),
            ["matmul_k8_vec4", "matmul_k8", "matmul_wide_quads"]
        );
        fit_invocation_limit(&mut ds, 256);
        assert_eq!(names(&ds), ["matmul_vec4", "matmul", "matmul_wide_quads"]);
        // The same tiles: grid and params carry over.
        let after: Vec<_> = ds.iter().map(|d| (d.groups, d.params.clone())).collect();
        assert_eq!(before, after);
        // B stored [K, N]: the `_kn` pipelines fall back to theirs.
        let mut kn = vec![
            Dispatch::new(&MATMUL_K8_VEC4_KN, &MatmulParams::default(), [1, 1, 1]),
            Dispatch::new(&MATMUL_K8_KN, &MatmulParams::default(), [1, 1, 1]),
        ];
        fit_invocation_limit(&mut kn, 256);
        assert_eq!(names(&kn), ["matmul_vec4_kn", "matmul_kn"]);
    }

    #[test]
    fn an_empty_output_lowers_to_nothing() {
        let a = Operand::new(0, &[0, 64], DType::F32);
        let b = Operand::new(1 << 20, &[100, 64], DType::F32);
        let out = Operand::new(2 << 20, &[0, 100], DType::F32);
        let op = Op::MatMul { transpose_b: true };
        assert!(lower(&op, &[a, b], &out).unwrap().is_empty());
    }

    #[test]
    fn a_cooperative_grid_over_the_limit_is_a_typed_error() {
        // 5,000,000 columns: 39,063 wide tiles per row, 78,125 coop tiles (limit 65,535).
        let mut ds = vec![matmul_dispatch(256, 32, 5_000_000)];
        assert_eq!(ds[0].kernel.name, "matmul_wide_quads");
        let err = use_cooperative(&mut ds).unwrap_err();
        assert!(
            matches!(err, LowerError::TooLarge { value: 78_125, .. }),
            "{err}"
        );
        assert_eq!(ds[0].kernel.name, "matmul_wide_quads", "left as it was");
    }

    #[test]
    fn cooperative_swap_regrids_tiled_and_keeps_skinny() {
        let mut ds = vec![
            matmul_dispatch(300, 64, 100),
            matmul_dispatch(4, 64, 100),
            matmul_dispatch(4096, 64, 1024),
        ];
        assert_eq!(ds[0].groups, [2, 5, 1]); // 64x64 tiles
        let skinny_groups = ds[1].groups;
        let params: Vec<Vec<u8>> = ds.iter().map(|d| d.params.clone()).collect();
        use_cooperative(&mut ds).unwrap();
        assert_eq!(
            names(&ds),
            ["matmul_coop", "matmul_skinny_narrow_vec4", "matmul_coop"]
        );
        assert_eq!(ds[0].groups, [2, 3, 1]); // 128x64 tiles
        assert_eq!(ds[1].groups, skinny_groups);
        assert_eq!(ds[2].groups, [16, 32, 1]);
        assert_eq!(
            params,
            ds.iter().map(|d| d.params.clone()).collect::<Vec<_>>()
        );
        // Other kernels are left alone, and swapping twice changes nothing.
        let mut again = ds.clone();
        use_cooperative(&mut again).unwrap();
        assert_eq!(again[0].groups, ds[0].groups);
    }

    #[test]
    fn skinny_columns_agree_with_the_shader() {
        // The source's default, and each pipeline's override, against the grid's columns.
        let module = naga::front::wgsl::parse_str(MATMUL_SKINNY.source).expect("parses");
        let cols = module
            .overrides
            .iter()
            .find(|(_, o)| o.name.as_deref() == Some("SKINNY_COLS"))
            .and_then(|(_, o)| o.init)
            .map(|init| &module.global_expressions[init]);
        assert!(matches!(
            cols,
            Some(naga::Expression::Literal(naga::Literal::U32(4)))
        ));
        assert_eq!(SKINNY_COLS, 4);
        for k in [&MATMUL_SKINNY_NARROW, &MATMUL_SKINNY_NARROW_VEC4] {
            assert!(k
                .constants
                .contains(&("SKINNY_COLS", SKINNY_NARROW_COLS as f64)));
            assert_eq!(skinny_columns(k), SKINNY_NARROW_COLS);
            crate::validate_kernel(k).expect("valid with its constants");
        }
        assert_eq!(skinny_columns(&MATMUL_SKINNY_VEC4), SKINNY_COLS);
        // 384 columns make 96 workgroups of four, fewer than the SMs: two columns each.
        let narrow = matmul_dispatch(16, 64, 384);
        assert_eq!(narrow.kernel.name, "matmul_skinny_narrow_vec4");
        assert_eq!(narrow.groups, [192, 1, 1]);
        let wide = matmul_dispatch(16, 64, 1536);
        assert_eq!(wide.kernel.name, "matmul_skinny_vec4");
        assert_eq!(wide.groups, [384, 1, 1]);
    }

    #[test]
    fn cooperative_kernel_translates_to_spirv() {
        let module = crate::validate_kernel(&MATMUL_COOP).expect("valid WGSL");
        let info = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::all(),
        )
        .validate(&module)
        .expect("valid with every capability");
        // `ROWS_AS_VEC4` (matmul_common.wgsl) takes its default, as wgpu's pipeline would.
        let (module, info) = naga::back::pipeline_constants::process_overrides(
            &module,
            &info,
            None,
            &Default::default(),
        )
        .expect("the overrides resolve");
        let options = naga::back::spv::Options {
            lang_version: (1, 3),
            ..Default::default()
        };
        let words = naga::back::spv::write_vec(&module, &info, &options, None)
            .expect("the SPIR-V writer accepts the cooperative kernel");
        // Walk the instruction stream (after the 5-word header; each instruction's first word
        // holds its length and opcode) and find OpCooperativeMatrixMulAddKHR (opcode 4459).
        let mut opcodes = Vec::new();
        let mut at = 5;
        while at < words.len() {
            let (len, opcode) = ((words[at] >> 16) as usize, words[at] & 0xffff);
            assert!(len > 0, "malformed SPIR-V at word {at}");
            opcodes.push(opcode);
            at += len;
        }
        assert_eq!(at, words.len(), "the last instruction overruns the module");
        assert!(
            opcodes.contains(&4459),
            "no cooperative multiply-add emitted"
        );
    }

    #[test]
    fn missing_operands_are_typed_errors() {
        let a = Operand::new(0, &[8, 8], DType::F32);
        let op = Op::MatMul { transpose_b: false };
        assert!(lower(&op, std::slice::from_ref(&a), &a).is_err());
        let fused = Op::FusedMatMulBiasAct {
            transpose_b: false,
            has_bias: true,
            act: None,
        };
        assert!(lower(&fused, &[a.clone(), a.clone()], &a).is_err());
    }

    #[test]
    fn a_short_last_wave_of_wide_tiles_is_split() {
        let ws = SplitWorkspace {
            offset: 1 << 26,
            words: 1 << 24,
            sum_absorbed: false,
        };
        let op = Op::MatMul { transpose_b: true };
        let lower = |m: usize, k: usize, n: usize, ws| {
            let a = Operand::new(0, &[m, k], DType::F32);
            let b = Operand::new(1 << 24, &[n, k], DType::F32);
            let out = Operand::new(1 << 25, &[m, n], DType::F32);
            lower_split_k(&op, &a, &b, true, Epilogue::default(), &[&out], ws).unwrap()
        };
        // MiniLM's Q/K/V at 32 x 128: 288 tiles, 29 rows of 9 in the first wave; the other
        // 384 rows are 108 tiles of 64x64, one round of the eight-group kernel.
        let qkv = lower(4096, 384, 1152, Some(ws));
        assert_eq!(names(&qkv), ["matmul_wide_quads", "matmul_k8_vec4"]);
        let params: Vec<MatmulParams> = qkv
            .iter()
            .map(|d| bytemuck::pod_read_unaligned(&d.params))
            .collect();
        assert_eq!((params[0].m, params[0].k_chunk), (29 * 128, 0));
        assert_eq!(qkv[0].groups, [9, 29, 1]);
        assert_eq!((params[1].m, params[1].k_chunk), (384, 0));
        assert_eq!(qkv[1].groups, [18, 6, 1]);
        assert_eq!(params[1].a_offset, 29 * 128 * 384);
        assert_eq!(params[1].out_offsets[0], (1 << 25) + 29 * 128 * 1152);
        // Without a workspace, one dispatch: the fallback of a step whose split at another
        // extent does not fit its recorded dispatches.
        assert_eq!(lower(4096, 384, 1152, None).len(), 1);
        // 640 rows past the wave are 180 tiles of 64x64, more than a round: split-k there,
        // given a workspace (45 wide tiles in two chunks of 192).
        let long = lower(29 * 128 + 640, 384, 1152, Some(ws));
        assert_eq!(
            names(&long),
            [
                "matmul_wide_quads",
                "matmul_wide_quads",
                "matmul_split_sum_quads"
            ]
        );
        let params: Vec<MatmulParams> = long
            .iter()
            .map(|d| bytemuck::pod_read_unaligned(&d.params))
            .collect();
        assert_eq!((params[1].m, params[1].k_chunk), (640, 192));
        assert_eq!(params[1].a_offset, 29 * 128 * 384);
        assert_eq!(params[2].out_offsets[0], (1 << 25) + 29 * 128 * 1152);
        assert_eq!(split_k_words(&long), 2 * 640 * 1152);
        assert_eq!(lower(29 * 128 + 640, 384, 1152, None).len(), 1);
        // FFN up at 32 x 128: 384 tiles, 22 rows of 12 in the first wave; the last 1280 rows
        // are 480 tiles of 64x64 (more than a round) and too short in k to split: their 120
        // wide tiles in a dispatch of their own, one per SM.
        let ffn_up = lower(4096, 384, 1536, Some(ws));
        assert_eq!(names(&ffn_up), ["matmul_wide_quads", "matmul_wide_quads"]);
        assert_eq!(ffn_up[0].groups, [12, 22, 1]);
        assert_eq!(ffn_up[1].groups, [12, 10, 1]);
        let tail: MatmulParams = bytemuck::pod_read_unaligned(&ffn_up[1].params);
        assert_eq!((tail.m, tail.k_chunk), (1280, 0));
        assert_eq!(tail.a_offset, 22 * 128 * 384);
        assert_eq!(tail.out_offsets[0], (1 << 25) + 22 * 128 * 1536);
        assert_eq!(lower(4096, 384, 1536, None).len(), 1);
        // More wide tiles past the waves than SMs, and k too short to split: one dispatch.
        assert_eq!(lower(22 * 128 + 1409 * 11, 200, 1536, Some(ws)).len(), 1);
        // Whole waves only: 264 tiles exactly, and 4096^3 (1024 tiles, 232 past three waves).
        assert_eq!(lower(88 * 128, 384, 384, Some(ws)).len(), 1);
        assert_eq!(lower(4096, 4096, 4096, Some(ws)).len(), 1);
    }

    #[test]
    fn fewer_dispatches_fill_a_steps_slots_with_empty_ones() {
        let wide = matmul_dispatch(4096, 384, 1024);
        assert_eq!(wide.kernel.name, MATMUL_WIDE_QUADS.name);
        let sum = Dispatch {
            kernel: &MATMUL_SPLIT_SUM,
            ..wide.clone()
        };
        let slots: [&'static KernelDesc; 3] =
            [&MATMUL_WIDE_QUADS, &MATMUL_WIDE_QUADS, &MATMUL_SPLIT_SUM];
        let groups = |ds: &[Dispatch]| ds.iter().map(|d| d.groups).collect::<Vec<_>>();
        // A split-k pair keeps the sum in the last slot: the empty one goes in front.
        let pair = fill_slots(vec![wide.clone(), sum.clone()], &slots).unwrap();
        assert_eq!(
            names(&pair),
            ["matmul_wide_quads", "matmul_wide_quads", "matmul_split_sum"]
        );
        assert_eq!(groups(&pair)[0], [0, 1, 1]);
        assert_eq!(groups(&pair)[1..], [wide.groups, wide.groups]);
        // One dispatch (any matmul kernel) keeps the first slot; the others run empty.
        let skinny = matmul_dispatch(16, 384, 1152);
        let one = fill_slots(vec![skinny.clone()], &slots).unwrap();
        assert_eq!(names(&one)[0], skinny.kernel.name);
        assert_eq!(groups(&one)[1..], [[0, 1, 1], [0, 1, 1]]);
        // As many as the slots: unchanged; more: refused.
        assert_eq!(
            fill_slots(vec![wide.clone()], &slots[..1]).unwrap().len(),
            1
        );
        assert!(fill_slots(vec![wide.clone(), wide.clone(), sum.clone()], &slots[..2]).is_none());
        // A slot whose kernel takes other params cannot run empty with these.
        assert!(fill_slots(
            vec![wide.clone()],
            &[&MATMUL_WIDE, &crate::families::norm::NORM]
        )
        .is_none());
        // A norm joined to the matmul keeps the last slot: the matmul's missing dispatch runs
        // empty in front of it.
        let norm = Dispatch::new(
            &crate::families::norm::NORM,
            &crate::families::norm::NormParams::default(),
            [1, 1, 1],
        );
        let joined = [
            &MATMUL_WIDE_QUADS,
            &MATMUL_K8_VEC4,
            &crate::families::norm::NORM,
        ];
        let filled = fill_slots(vec![wide.clone(), norm], &joined).unwrap();
        assert_eq!(
            names(&filled),
            ["matmul_wide_quads", "matmul_k8_vec4", "norm"]
        );
        assert_eq!(groups(&filled), [wide.groups, [0, 1, 1], [1, 1, 1]]);
    }

    #[test]
    fn split_k_where_tiles_leave_sms_idle() {
        // 24 tiles at k = 384; MiniLM's FFN down at 32 x 128 rows.
        assert_eq!(split_k_chunk(24, 384, false), Some(128));
        assert_eq!(split_k_chunk(96, 1536, false), Some(192));
        // Enough tiles for every SM, or k too short for two chunks of 128.
        assert_eq!(split_k_chunk(132, 4096, false), None);
        assert_eq!(split_k_chunk(6, 200, false), None);
        assert_eq!(split_k_chunk(0, 4096, false), None);
        // The output projection's 96 tiles at k = 384: two chunks where the consumer adds
        // them (the busiest SM runs two workgroups of half of k: 0.9), not with a sum dispatch.
        assert_eq!(split_k_chunk(96, 384, true), Some(192));
        assert_eq!(split_k_chunk(96, 384, false), None);
        // Chunks are whole stages and cover k.
        for (tiles, k) in [(6, 1000), (1, 517), (50, 2048), (24, 4096)] {
            let chunk = split_k_chunk(tiles, k, false).unwrap();
            assert_eq!(chunk % 16, 0);
            assert!(chunk >= SPLIT_MIN_CHUNK && k.div_ceil(chunk) <= MAX_SPLITS);
        }
        // Skinny rows and a missing workspace keep one dispatch; the coop kernel leaves the
        // chunks' dispatch alone (it covers all of k).
        let a = Operand::new(0, &[512, 1536], DType::F32);
        let b = Operand::new(1 << 20, &[384, 1536], DType::F32);
        let out = Operand::new(2 << 20, &[512, 384], DType::F32);
        let ws = SplitWorkspace {
            offset: 3 << 20,
            words: 1 << 22,
            sum_absorbed: false,
        };
        let op = Op::MatMul { transpose_b: true };
        let lower = |a: &Operand, out: &Operand, ws| {
            lower_split_k(&op, a, &b, true, Epilogue::default(), &[out], ws).unwrap()
        };
        assert_eq!(names(&lower(&a, &out, None)).len(), 1);
        let mut split = lower(&a, &out, Some(ws));
        assert_eq!(
            names(&split),
            ["matmul_wide_quads", "matmul_split_sum_quads"]
        );
        // 384 columns in 12 workgroups of 32 quads, 512 rows in 64 of 8.
        assert_eq!(split[1].groups, [3, 64, 1]);
        use_cooperative(&mut split).unwrap();
        assert_eq!(
            names(&split),
            ["matmul_wide_quads", "matmul_split_sum_quads"]
        );
        // A workspace off 16 bytes, or columns not in quads: a value per invocation (and the
        // partial products through the staged epilogue).
        let odd_ws = SplitWorkspace {
            offset: ws.offset + 2,
            ..ws
        };
        let scalar = lower(&a, &out, Some(odd_ws));
        assert_eq!(names(&scalar), ["matmul_wide_vec4", "matmul_split_sum"]);
        assert_eq!(scalar[1].groups, [6, 512, 1]);
        let b_odd = Operand::new(1 << 20, &[382, 1536], DType::F32);
        let out_odd = Operand::new(2 << 20, &[512, 382], DType::F32);
        let odd = lower_split_k(
            &op,
            &a,
            &b_odd,
            true,
            Epilogue::default(),
            &[&out_odd],
            Some(ws),
        )
        .unwrap();
        assert_eq!(names(&odd), ["matmul_wide_vec4", "matmul_split_sum"]);
        let rows16 = Operand::new(0, &[16, 1536], DType::F32);
        let out16 = Operand::new(2 << 20, &[16, 384], DType::F32);
        assert_eq!(
            names(&lower(&rows16, &out16, Some(ws))),
            ["matmul_skinny_narrow_vec4"]
        );
    }
}
