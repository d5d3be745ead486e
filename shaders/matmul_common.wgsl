// @file matmul_common.wgsl
// What the tiled, skinny and cooperative-matrix matmul kernels share: the params, the arena
// bindings, where a batch's matrices start, the skinny variant and the epilogue that stores one
// output value (bias, activation, split-write). activations.wgsl is prepended to every matmul.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch_rank: u32,
    a_offset: u32,
    b_offset: u32,
    bias_offset: u32,
    has_bias: u32,
    a_stride_m: u32,
    b_stride_k: u32,
    b_stride_n: u32,
    // activations.wgsl id, or 0xffffffff for none.
    act: u32,
    split_width: u32,
    out_stride_m: u32,
    // 0: tiled; 1: skinny (few rows of A, B stored [N, K]), see `skinny`.
    variant: u32,
    _pad1: u32,
    // Up to three outputs (one unless split-writing).
    out_offsets: vec4<u32>,
    // Up to four batch dims of the output, and each operand's stride over them (0 = broadcast).
    batch_dims: vec4<u32>,
    a_batch_strides: vec4<u32>,
    b_batch_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: MatmulParams;

// Where batch `z`'s A and B start (x: A, y: B).
fn batch_bases(z: u32) -> vec2<u32> {
    var rem = z;
    var a_base = p.a_offset;
    var b_base = p.b_offset;
    for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
        let size = p.batch_dims[d];
        let c = rem % size;
        rem = rem / size;
        a_base += c * p.a_batch_strides[d];
        b_base += c * p.b_batch_strides[d];
    }
    return vec2<u32>(a_base, b_base);
}

// The skinny variant, for a few rows of A against B stored [N, K] (a decoder's or a short
// sequence's linear layers): the tiled kernel would give each of few workgroups a long serial
// loop over K. Here a workgroup owns SKINNY_COLS output columns; SKINNY_LANES lanes per column
// stride K, reading B's rows contiguously, for all rows of A at once (in groups of four rows,
// as many groups as the rows need), then reduce through workgroup memory: `a_tile`
// (array<vec4<f32>, 256>), which every kernel including this file declares (the tiled
// kernel's A tile, unused in the skinny variant), so the variant costs no workgroup memory.
// The sums are separate vec4 variables, never an indexed local array, which drivers may keep
// in slow local memory.
const SKINNY_COLS: u32 = 4u;
const SKINNY_LANES: u32 = 64u;

// Rows `first..first + 4` of A at column `k` (A's start plus k is `a`); rows past m read row
// m - 1 and are dropped. The offsets are recomputed at each use rather than kept in 16
// registers: the tiled kernel shares this entry point and its register budget.
fn skinny_rows(a: u32, first: u32) -> vec4<f32> {
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.a_stride_m;
    return vec4<f32>(arena[a + rows.x], arena[a + rows.y], arena[a + rows.z], arena[a + rows.w]);
}

fn skinny(tid: u32, wid: vec3<u32>, a_base: u32, b_base: u32) {
    let lane = tid % SKINNY_LANES;
    let c = wid.x * SKINNY_COLS + tid / SKINNY_LANES;
    let b_row = b_base + min(c, p.n - 1u) * p.b_stride_n;
    let out_base = wid.z * p.m * p.out_stride_m;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    // One loop per row count (a uniform branch), so few rows load only what they use.
    if (p.m <= 4u) {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            acc0 = fma(skinny_rows(a_base + k, 0u), vec4<f32>(arena[b_row + k]), acc0);
        }
    } else if (p.m <= 8u) {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            let w = vec4<f32>(arena[b_row + k]);
            acc0 = fma(skinny_rows(a_base + k, 0u), w, acc0);
            acc1 = fma(skinny_rows(a_base + k, 4u), w, acc1);
        }
    } else {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            let w = vec4<f32>(arena[b_row + k]);
            acc0 = fma(skinny_rows(a_base + k, 0u), w, acc0);
            acc1 = fma(skinny_rows(a_base + k, 4u), w, acc1);
            acc2 = fma(skinny_rows(a_base + k, 8u), w, acc2);
            acc3 = fma(skinny_rows(a_base + k, 12u), w, acc3);
        }
    }
    skinny_store(tid, lane, c, 0u, out_base, acc0);
    if (p.m > 4u) {
        skinny_store(tid, lane, c, 4u, out_base, acc1);
    }
    if (p.m > 8u) {
        skinny_store(tid, lane, c, 8u, out_base, acc2);
        skinny_store(tid, lane, c, 12u, out_base, acc3);
    }
}

// Sums one column's partial sums of rows `row0..row0 + 4` over its lanes and stores them.
fn skinny_store(tid: u32, lane: u32, c: u32, row0: u32, out_base: u32, v: vec4<f32>) {
    a_tile[tid] = v;
    workgroupBarrier();
    for (var s = SKINNY_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            a_tile[tid] += a_tile[tid + s];
        }
        workgroupBarrier();
    }
    let r = row0 + lane;
    if (lane < 4u && c < p.n && r < p.m) {
        store_one(out_base, r, c, a_tile[tid - lane][lane]);
    }
    workgroupBarrier();
}

fn store_one(out_base: u32, r: u32, c: u32, v: f32) {
    var x = v;
    if (p.has_bias != 0u) {
        x += arena[p.bias_offset + c];
    }
    if (p.act != 0xffffffffu) {
        x = apply_unary(p.act, x);
    }
    let which = c / p.split_width;
    let col = c % p.split_width;
    arena[p.out_offsets[which] + out_base + r * p.out_stride_m + col] = x;
}

