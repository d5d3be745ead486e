// @file matmul_wide.wgsl
// Register-tiled f32 matmul for large outputs: the same params, operands and epilogue as
// `matmul` (activations.wgsl and matmul_common.wgsl are prepended), with a 128x128 output tile
// per workgroup and 8x8 values per invocation, each reading four vec4s from workgroup memory
// per k for 64 fmas. Against the 64x64 kernel, which splits k among four groups for the same
// ratio, it stages each value of A and B for twice as many fmas and needs no final sum of
// partial tiles; the price is 4x fewer workgroups, so the lowering picks it only for outputs
// with enough 128x128 tiles to fill the GPU.
//
// Invocation (tx, ty) = (tid % 16, tid / 16) owns rows ty*4..+4 and 64+ty*4..+4 and columns
// tx*4..+4 and 64+tx*4..+4 of the tile: split in halves, the vec4 reads of a warp hit
// consecutive addresses (no bank conflicts). Each stage holds WK = 16 values of k (with 8,
// twice the barriers, a 4096^3 linear took 5.5 ms against 4.6); the next stage's values are read from global
// memory into registers while the current one is multiplied. Staged slices are not padded
// but swizzled (see `swizzle`), so both fit WebGPU's default 16 KiB of workgroup memory.
//
// The epilogue, `store_tile`, is appended from one of two files: matmul_wide_staged.wgsl (the
// tile through workgroup memory, for any output layout) or matmul_wide_quads.wgsl (column
// quads straight from registers, for 16-byte aligned outputs).

// B stored [K, N] (p.b_stride_k != 1): a stage's B is loaded along n, a column quad at a time
// by scalar loads, and stored as is. The lowering builds each wide pipeline for one layout
// (the `_kn` ones for [K, N]): with both paths behind a runtime test of the stride, MiniLM 32 x
// 128 took 3.36 ms GPU in one pass instead of 3.17 and 4096^3 (B [N, K]) 3.67 ms instead of
// 3.39 on the H200.
override B_ALONG_N: bool = false;

const WT: u32 = 128u;
const WK: u32 = 16u;
const WT4: u32 = 32u; // vec4s per k of a staged slice

// During the k-loop: the A and B slices, [kk * WT4 + (row / 4 ^ swizzle(kk))][row % 4] (by
// column for B). In the epilogue: 32 rows of the output tile, [row * WT4 + col / 4][col % 4],
// the first 16 in `wa` and the rest in `wb`. (As one array with B at an offset, 4096^3 took
// 5.70 ms instead of 4.46 on the H200, at 128 registers instead of 116.)
var<workgroup> wa: array<vec4<f32>, 512>;
var<workgroup> wb: array<vec4<f32>, 512>;

// One invocation's share of a stage: k-quad tid % 4 of tile rows tid / 4 and 64 + tid / 4 of
// A (columns, for B stored [N, K]); for B stored [K, N], column quad tid % 32 of k-rows
// tid / 32 and 8 + tid / 32.
struct Stage {
    a0: vec4<f32>,
    a1: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
}

fn b_k_row(b_base: u32, col0: u32, k: u32, tid: u32) -> vec4<f32> {
    let cs = min(vec4<u32>(col0 + (tid % 32u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    let at = vec4<u32>(b_base + min(k, p.k - 1u) * p.b_stride_k) + cs * p.b_stride_n;
    let v = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
    return select(vec4<f32>(0.0), v, k < p.k);
}

fn load_stage(a_base: u32, b_base: u32, row0: u32, col0: u32, t: u32, tid: u32) -> Stage {
    let line = tid / 4u;
    let quad = t + (tid % 4u) * 4u;
    let a0 = along_k(a_base + min(row0 + line, p.m - 1u) * p.a_stride_m, quad);
    let a1 = along_k(a_base + min(row0 + 64u + line, p.m - 1u) * p.a_stride_m, quad);
    if (!B_ALONG_N) {
        let b0 = along_k(b_base + min(col0 + line, p.n - 1u) * p.b_stride_n, quad);
        let b1 = along_k(b_base + min(col0 + 64u + line, p.n - 1u) * p.b_stride_n, quad);
        return Stage(a0, a1, b0, b1);
    }
    let k = t + tid / 32u;
    return Stage(a0, a1, b_k_row(b_base, col0, k, tid), b_k_row(b_base, col0, k + 8u, tid));
}

fn store_stage(s: Stage, tid: u32) {
    let line = tid / 4u;
    let k0 = (tid % 4u) * 4u;
    let lo = (line / 4u) ^ swizzle(k0);
    let hi = (16u + line / 4u) ^ swizzle(k0);
    for (var j = 0u; j < 4u; j++) {
        wa[(k0 + j) * WT4 + lo][line % 4u] = s.a0[j];
        wa[(k0 + j) * WT4 + hi][line % 4u] = s.a1[j];
    }
    if (!B_ALONG_N) {
        for (var j = 0u; j < 4u; j++) {
            wb[(k0 + j) * WT4 + lo][line % 4u] = s.b0[j];
            wb[(k0 + j) * WT4 + hi][line % 4u] = s.b1[j];
        }
    } else {
        let k = tid / 32u;
        wb[k * WT4 + ((tid % 32u) ^ swizzle(k))] = s.b0;
        wb[(k + 8u) * WT4 + ((tid % 32u) ^ swizzle(k + 8u))] = s.b1;
    }
}

@compute @workgroup_size(256, 1, 1)
fn matmul_wide(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    let row0 = wid.y * WT;
    let col0 = wid.x * WT;
    let tx = tid % 16u;
    let ty = tid / 16u;

    // c<row><l|h>: row ty*4 + row (rows 4..7: 64 + ty*4 + row - 4), columns tx*4 (l) or
    // 64 + tx*4 (h).
    var c0l = vec4<f32>();
    var c0h = vec4<f32>();
    var c1l = vec4<f32>();
    var c1h = vec4<f32>();
    var c2l = vec4<f32>();
    var c2h = vec4<f32>();
    var c3l = vec4<f32>();
    var c3h = vec4<f32>();
    var c4l = vec4<f32>();
    var c4h = vec4<f32>();
    var c5l = vec4<f32>();
    var c5h = vec4<f32>();
    var c6l = vec4<f32>();
    var c6h = vec4<f32>();
    var c7l = vec4<f32>();
    var c7h = vec4<f32>();
    // The k range of this workgroup: all of k, or with split-k its chunk (a multiple of WK,
    // so no stage reaches into the next chunk).
    var k_begin = 0u;
    var k_end = p.k;
    if (p.k_chunk != 0u) {
        k_begin = (wid.z / p.batches) * p.k_chunk;
        k_end = min(p.k, k_begin + p.k_chunk);
    }
    var next = load_stage(a_base, b_base, row0, col0, k_begin, tid);
    for (var t = k_begin; t < k_end; t += WK) {
        store_stage(next, tid);
        workgroupBarrier();
        if (t + WK < k_end) {
            next = load_stage(a_base, b_base, row0, col0, t + WK, tid);
        }
        // The stage's 16 k written out, a quad of k (one swizzle) per block: NVIDIA's compiler
        // (driver 580) kept a loop over them as a loop, and in its disassembly every k then
        // recomputed the four swizzled addresses and copied accumulators between registers (96
        // instructions per 64 fmas). Written out, 4096^3 took 3.74 ms instead of 4.62 on the
        // H200. The compiler is sensitive to the form: the accumulators as a struct updated by
        // a shared function took 3.91 ms, fragment variables declared outside the loop 3.97.
        {
            let sw = swizzle(0u);
            let a_at = 0u * WT4 + (ty ^ sw);
            let ah_at = 0u * WT4 + ((16u + ty) ^ sw);
            let b_at = 0u * WT4 + (tx ^ sw);
            let bh_at = 0u * WT4 + ((16u + tx) ^ sw);
            {
                let al = wa[a_at + 0u * WT4];
                let ah = wa[ah_at + 0u * WT4];
                let bl = wb[b_at + 0u * WT4];
                let bh = wb[bh_at + 0u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 1u * WT4];
                let ah = wa[ah_at + 1u * WT4];
                let bl = wb[b_at + 1u * WT4];
                let bh = wb[bh_at + 1u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 2u * WT4];
                let ah = wa[ah_at + 2u * WT4];
                let bl = wb[b_at + 2u * WT4];
                let bh = wb[bh_at + 2u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 3u * WT4];
                let ah = wa[ah_at + 3u * WT4];
                let bl = wb[b_at + 3u * WT4];
                let bh = wb[bh_at + 3u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
        }
        {
            let sw = swizzle(4u);
            let a_at = 4u * WT4 + (ty ^ sw);
            let ah_at = 4u * WT4 + ((16u + ty) ^ sw);
            let b_at = 4u * WT4 + (tx ^ sw);
            let bh_at = 4u * WT4 + ((16u + tx) ^ sw);
            {
                let al = wa[a_at + 0u * WT4];
                let ah = wa[ah_at + 0u * WT4];
                let bl = wb[b_at + 0u * WT4];
                let bh = wb[bh_at + 0u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 1u * WT4];
                let ah = wa[ah_at + 1u * WT4];
                let bl = wb[b_at + 1u * WT4];
                let bh = wb[bh_at + 1u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 2u * WT4];
                let ah = wa[ah_at + 2u * WT4];
                let bl = wb[b_at + 2u * WT4];
                let bh = wb[bh_at + 2u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 3u * WT4];
                let ah = wa[ah_at + 3u * WT4];
                let bl = wb[b_at + 3u * WT4];
                let bh = wb[bh_at + 3u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
        }
        {
            let sw = swizzle(8u);
            let a_at = 8u * WT4 + (ty ^ sw);
            let ah_at = 8u * WT4 + ((16u + ty) ^ sw);
            let b_at = 8u * WT4 + (tx ^ sw);
            let bh_at = 8u * WT4 + ((16u + tx) ^ sw);
            {
                let al = wa[a_at + 0u * WT4];
                let ah = wa[ah_at + 0u * WT4];
                let bl = wb[b_at + 0u * WT4];
                let bh = wb[bh_at + 0u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 1u * WT4];
                let ah = wa[ah_at + 1u * WT4];
                let bl = wb[b_at + 1u * WT4];
                let bh = wb[bh_at + 1u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 2u * WT4];
                let ah = wa[ah_at + 2u * WT4];
                let bl = wb[b_at + 2u * WT4];
                let bh = wb[bh_at + 2u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 3u * WT4];
                let ah = wa[ah_at + 3u * WT4];
                let bl = wb[b_at + 3u * WT4];
                let bh = wb[bh_at + 3u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
        }
        {
            let sw = swizzle(12u);
            let a_at = 12u * WT4 + (ty ^ sw);
            let ah_at = 12u * WT4 + ((16u + ty) ^ sw);
            let b_at = 12u * WT4 + (tx ^ sw);
            let bh_at = 12u * WT4 + ((16u + tx) ^ sw);
            {
                let al = wa[a_at + 0u * WT4];
                let ah = wa[ah_at + 0u * WT4];
                let bl = wb[b_at + 0u * WT4];
                let bh = wb[bh_at + 0u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 1u * WT4];
                let ah = wa[ah_at + 1u * WT4];
                let bl = wb[b_at + 1u * WT4];
                let bh = wb[bh_at + 1u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 2u * WT4];
                let ah = wa[ah_at + 2u * WT4];
                let bl = wb[b_at + 2u * WT4];
                let bh = wb[bh_at + 2u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
            {
                let al = wa[a_at + 3u * WT4];
                let ah = wa[ah_at + 3u * WT4];
                let bl = wb[b_at + 3u * WT4];
                let bh = wb[bh_at + 3u * WT4];
                c0l = fma(vec4<f32>(al.x), bl, c0l); c0h = fma(vec4<f32>(al.x), bh, c0h);
                c1l = fma(vec4<f32>(al.y), bl, c1l); c1h = fma(vec4<f32>(al.y), bh, c1h);
                c2l = fma(vec4<f32>(al.z), bl, c2l); c2h = fma(vec4<f32>(al.z), bh, c2h);
                c3l = fma(vec4<f32>(al.w), bl, c3l); c3h = fma(vec4<f32>(al.w), bh, c3h);
                c4l = fma(vec4<f32>(ah.x), bl, c4l); c4h = fma(vec4<f32>(ah.x), bh, c4h);
                c5l = fma(vec4<f32>(ah.y), bl, c5l); c5h = fma(vec4<f32>(ah.y), bh, c5h);
                c6l = fma(vec4<f32>(ah.z), bl, c6l); c6h = fma(vec4<f32>(ah.z), bh, c6h);
                c7l = fma(vec4<f32>(ah.w), bl, c7l); c7h = fma(vec4<f32>(ah.w), bh, c7h);
            }
        }
        workgroupBarrier();
    }

    store_tile(tid, wid, row0, col0, tx, ty, c0l, c0h, c1l, c1h, c2l, c2h, c3l, c3h, c4l, c4h,
        c5l, c5h, c6l, c6h, c7l, c7h);
}
