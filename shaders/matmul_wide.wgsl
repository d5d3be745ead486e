// @file matmul_wide.wgsl
// Register-tiled f32 matmul for large outputs: the same params, operands and epilogue as
// `matmul` (activations.wgsl and matmul_common.wgsl are prepended), with a 128x128 output tile
// per workgroup and 8x8 values per invocation. Per k, an invocation reads four vec4s from
// workgroup memory for 64 fmas (the 64x64 kernel: two for 16), so it is bound by arithmetic
// rather than by workgroup-memory bandwidth; the price is 4x fewer workgroups, so the lowering
// picks it only for outputs with enough 128x128 tiles to fill the GPU.
//
// Invocation (tx, ty) = (tid % 16, tid / 16) owns rows ty*4..+4 and 64+ty*4..+4 and columns
// tx*4..+4 and 64+tx*4..+4 of the tile: split in halves, the vec4 reads of a warp hit
// consecutive addresses (no bank conflicts). Each stage holds WK = 8 values of k; the next
// stage's values are read from global memory into registers while the current one is
// multiplied.

const WT: u32 = 128u;
const WK: u32 = 8u;
// vec4s per k of a staged tile: 32, plus one so that the two k-quads an A (or [N, K] B) load
// writes fall in different banks.
const WLD: u32 = 33u;

var<workgroup> wa: array<vec4<f32>, 264>; // WK x WLD: [kk * WLD + row / 4][row % 4]
var<workgroup> wb: array<vec4<f32>, 264>; // WK x WLD: [kk * WLD + col / 4][col % 4]

// One invocation's share of a stage: four values of A and four of B.
struct Stage {
    a: vec4<f32>,
    b: vec4<f32>,
}

// A: invocation tid reads k-quad tid % 2 of tile row tid / 2. B stored [N, K] likewise, by
// column; B stored [K, N]: four consecutive columns (tid % 32) * 4 of k-row tid / 32.
fn load_stage(a_base: u32, b_base: u32, row0: u32, col0: u32, t: u32, tid: u32) -> Stage {
    let half = tid / 2u;
    let quad = t + (tid % 2u) * 4u;
    let r = min(row0 + half, p.m - 1u);
    let a = along_k(a_base + r * p.a_stride_m, quad);
    var b: vec4<f32>;
    if (p.b_stride_k == 1u) {
        let c = min(col0 + half, p.n - 1u);
        b = along_k(b_base + c * p.b_stride_n, quad);
    } else {
        let k = t + tid / 32u;
        let cs = min(vec4<u32>(col0 + (tid % 32u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
        let at = vec4<u32>(b_base + min(k, p.k - 1u) * p.b_stride_k) + cs * p.b_stride_n;
        let v = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
        b = select(vec4<f32>(0.0), v, k < p.k);
    }
    return Stage(a, b);
}

fn store_stage(s: Stage, tid: u32) {
    let half = tid / 2u;
    let kq = (tid % 2u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        wa[(kq + j) * WLD + half / 4u][half % 4u] = s.a[j];
    }
    if (p.b_stride_k == 1u) {
        for (var j = 0u; j < 4u; j++) {
            wb[(kq + j) * WLD + half / 4u][half % 4u] = s.b[j];
        }
    } else {
        wb[(tid / 32u) * WLD + tid % 32u] = s.b;
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
    var next = load_stage(a_base, b_base, row0, col0, 0u, tid);
    for (var t = 0u; t < p.k; t += WK) {
        store_stage(next, tid);
        workgroupBarrier();
        if (t + WK < p.k) {
            next = load_stage(a_base, b_base, row0, col0, t + WK, tid);
        }
        for (var kk = 0u; kk < WK; kk++) {
            let al = wa[kk * WLD + ty];
            let ah = wa[kk * WLD + 16u + ty];
            let bl = wb[kk * WLD + tx];
            let bh = wb[kk * WLD + 16u + tx];
            c0l = fma(vec4<f32>(al.x), bl, c0l);
            c0h = fma(vec4<f32>(al.x), bh, c0h);
            c1l = fma(vec4<f32>(al.y), bl, c1l);
            c1h = fma(vec4<f32>(al.y), bh, c1h);
            c2l = fma(vec4<f32>(al.z), bl, c2l);
            c2h = fma(vec4<f32>(al.z), bh, c2h);
            c3l = fma(vec4<f32>(al.w), bl, c3l);
            c3h = fma(vec4<f32>(al.w), bh, c3h);
            c4l = fma(vec4<f32>(ah.x), bl, c4l);
            c4h = fma(vec4<f32>(ah.x), bh, c4h);
            c5l = fma(vec4<f32>(ah.y), bl, c5l);
            c5h = fma(vec4<f32>(ah.y), bh, c5h);
            c6l = fma(vec4<f32>(ah.z), bl, c6l);
            c6h = fma(vec4<f32>(ah.z), bh, c6h);
            c7l = fma(vec4<f32>(ah.w), bl, c7l);
            c7h = fma(vec4<f32>(ah.w), bh, c7h);
        }
        workgroupBarrier();
    }

    let out_base = wid.z * p.m * p.out_stride_m;
    let rl = row0 + ty * 4u;
    let rh = rl + 64u;
    let cl = col0 + tx * 4u;
    let ch = cl + 64u;
    store_row(out_base, rl, cl, c0l);
    store_row(out_base, rl, ch, c0h);
    store_row(out_base, rl + 1u, cl, c1l);
    store_row(out_base, rl + 1u, ch, c1h);
    store_row(out_base, rl + 2u, cl, c2l);
    store_row(out_base, rl + 2u, ch, c2h);
    store_row(out_base, rl + 3u, cl, c3l);
    store_row(out_base, rl + 3u, ch, c3h);
    store_row(out_base, rh, cl, c4l);
    store_row(out_base, rh, ch, c4h);
    store_row(out_base, rh + 1u, cl, c5l);
    store_row(out_base, rh + 1u, ch, c5h);
    store_row(out_base, rh + 2u, cl, c6l);
    store_row(out_base, rh + 2u, ch, c6h);
    store_row(out_base, rh + 3u, cl, c7l);
    store_row(out_base, rh + 3u, ch, c7h);
}
