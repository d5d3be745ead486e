// @file matmul_tall.wgsl
// Register-tiled f32 matmul for outputs too narrow for `matmul_wide`: the same params, operands
// and epilogue as `matmul` (activations.wgsl and matmul_common.wgsl are prepended), with a
// 128x64 output tile per workgroup and 8x4 values per invocation. Per k, an invocation reads
// three vec4s from workgroup memory for 32 fmas (the 64x64 kernel: two for 16), with half the
// wide kernel's tile, so a 384-wide output (MiniLM's attention output and FFN-down
// projections) makes 1.5 workgroups per SM of an H200 at 4096 rows instead of 0.7.
//
// Invocation (tx, ty) = (tid % 16, tid / 16) owns rows ty*4..+4 and 64+ty*4..+4 and columns
// tx*4..+4 of the tile. Each stage holds TWK = 8 values of k; the next stage's values are read
// from global memory into registers while the current one is multiplied.

const TT_ROWS: u32 = 128u;
const TT_COLS: u32 = 64u;
const TWK: u32 = 8u;
// vec4s per k of the staged A tile (32, plus one against bank conflicts) and of B (16 + 1).
const TLDA: u32 = 33u;
const TLDB: u32 = 17u;

var<workgroup> ta: array<vec4<f32>, 264>; // TWK x TLDA: [kk * TLDA + row / 4][row % 4]
var<workgroup> tb: array<vec4<f32>, 136>; // TWK x TLDB: [kk * TLDB + col / 4][col % 4]

// One invocation's share of a stage: four values of A and (invocations below 128) of B.
struct TallStage {
    a: vec4<f32>,
    b: vec4<f32>,
}

// A: invocation tid reads k-quad tid % 2 of tile row tid / 2. B (invocations below 128) stored
// [N, K]: k-quad tid % 2 of tile column tid / 2; stored [K, N]: four consecutive columns
// (tid % 16) * 4 of k-row tid / 16.
fn tall_load(a_base: u32, b_base: u32, row0: u32, col0: u32, t: u32, tid: u32) -> TallStage {
    let half = tid / 2u;
    let quad = t + (tid % 2u) * 4u;
    let r = min(row0 + half, p.m - 1u);
    let a = along_k(a_base + r * p.a_stride_m, quad);
    var b = vec4<f32>(0.0);
    if (tid < 128u) {
        if (p.b_stride_k == 1u) {
            let c = min(col0 + half, p.n - 1u);
            b = along_k(b_base + c * p.b_stride_n, quad);
        } else {
            let k = t + tid / 16u;
            let cs = min(vec4<u32>(col0 + (tid % 16u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
            let at = vec4<u32>(b_base + min(k, p.k - 1u) * p.b_stride_k) + cs * p.b_stride_n;
            let v = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
            b = select(vec4<f32>(0.0), v, k < p.k);
        }
    }
    return TallStage(a, b);
}

fn tall_store(s: TallStage, tid: u32) {
    let half = tid / 2u;
    let kq = (tid % 2u) * 4u;
    for (var j = 0u; j < 4u; j++) {
        ta[(kq + j) * TLDA + half / 4u][half % 4u] = s.a[j];
    }
    if (tid < 128u) {
        if (p.b_stride_k == 1u) {
            for (var j = 0u; j < 4u; j++) {
                tb[(kq + j) * TLDB + half / 4u][half % 4u] = s.b[j];
            }
        } else {
            tb[(tid / 16u) * TLDB + tid % 16u] = s.b;
        }
    }
}

@compute @workgroup_size(256, 1, 1)
fn matmul_tall(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    let row0 = wid.y * TT_ROWS;
    let col0 = wid.x * TT_COLS;
    let tx = tid % 16u;
    let ty = tid / 16u;

    // c<row>: row ty*4 + row (rows 4..7: 64 + ty*4 + row - 4), columns tx*4 .. + 4.
    var c0 = vec4<f32>();
    var c1 = vec4<f32>();
    var c2 = vec4<f32>();
    var c3 = vec4<f32>();
    var c4 = vec4<f32>();
    var c5 = vec4<f32>();
    var c6 = vec4<f32>();
    var c7 = vec4<f32>();
    var next = tall_load(a_base, b_base, row0, col0, 0u, tid);
    for (var t = 0u; t < p.k; t += TWK) {
        tall_store(next, tid);
        workgroupBarrier();
        if (t + TWK < p.k) {
            next = tall_load(a_base, b_base, row0, col0, t + TWK, tid);
        }
        for (var kk = 0u; kk < TWK; kk++) {
            let al = ta[kk * TLDA + ty];
            let ah = ta[kk * TLDA + 16u + ty];
            let b = tb[kk * TLDB + tx];
            c0 = fma(vec4<f32>(al.x), b, c0);
            c1 = fma(vec4<f32>(al.y), b, c1);
            c2 = fma(vec4<f32>(al.z), b, c2);
            c3 = fma(vec4<f32>(al.w), b, c3);
            c4 = fma(vec4<f32>(ah.x), b, c4);
            c5 = fma(vec4<f32>(ah.y), b, c5);
            c6 = fma(vec4<f32>(ah.z), b, c6);
            c7 = fma(vec4<f32>(ah.w), b, c7);
        }
        workgroupBarrier();
    }

    let out_base = wid.z * p.m * p.out_stride_m;
    let rl = row0 + ty * 4u;
    let rh = rl + 64u;
    let c = col0 + tx * 4u;
    store_row(out_base, rl, c, c0);
    store_row(out_base, rl + 1u, c, c1);
    store_row(out_base, rl + 2u, c, c2);
    store_row(out_base, rl + 3u, c, c3);
    store_row(out_base, rh, c, c4);
    store_row(out_base, rh + 1u, c, c5);
    store_row(out_base, rh + 2u, c, c6);
    store_row(out_base, rh + 3u, c, c7);
}
