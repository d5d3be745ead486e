// @file matmul.wgsl
// Register-tiled f32 matmul with a bias + activation epilogue (activations.wgsl and
// matmul_common.wgsl are prepended).
//
// out[z, m, n] = act(sum_k A[z, m, k] * B[z, k, n] + bias[n]).
// A workgroup of 16x16 invocations computes a 64x64 output tile, 4x4 values per invocation,
// staging 64x16 slices of A and 16x64 slices of B in workgroup memory. Operands are addressed by
// strides, so B may be stored [K, N] or [N, K] (transposed) and batches may broadcast (stride 0).
// With `split_width` < n, output column c goes to output c / split_width at column
// c % split_width: the QKV split-write, three outputs from one dispatch.

const TILE: u32 = 64u;
const TK: u32 = 16u;

// Tiles hold four consecutive rows (of A) or columns (of B) per vec4, so the inner product
// reads one vec4 of each and does 16 fmas with no indexing into local arrays (which drivers
// may place in slow local memory).
var<workgroup> a_tile: array<vec4<f32>, 256>; // [kk * 16 + row / 4][row % 4]
var<workgroup> b_tile: array<vec4<f32>, 256>; // [kk * 16 + col / 4][col % 4]

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    // B stored [N, K] is read along k by consecutive invocations, [K, N] along n.
    let b_k_fastest = p.b_stride_k == 1u;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var t = 0u; t < p.k; t += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let r = e / TK;
            let kk = e % TK;
            var av = 0.0;
            if (row0 + r < p.m && t + kk < p.k) {
                av = arena[a_base + (row0 + r) * p.a_stride_m + t + kk];
            }
            a_tile[kk * 16u + r / 4u][r % 4u] = av;

            var kb = e / TILE;
            var c = e % TILE;
            if (b_k_fastest) {
                kb = e % TK;
                c = e / TK;
            }
            var bv = 0.0;
            if (t + kb < p.k && col0 + c < p.n) {
                bv = arena[b_base + (t + kb) * p.b_stride_k + (col0 + c) * p.b_stride_n];
            }
            b_tile[kb * 16u + c / 4u][c % 4u] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a = a_tile[kk * 16u + lid.y];
            let b = b_tile[kk * 16u + lid.x];
            acc0 = fma(vec4<f32>(a.x), b, acc0);
            acc1 = fma(vec4<f32>(a.y), b, acc1);
            acc2 = fma(vec4<f32>(a.z), b, acc2);
            acc3 = fma(vec4<f32>(a.w), b, acc3);
        }
        workgroupBarrier();
    }

    let out_base = wid.z * p.m * p.out_stride_m;
    let r0 = row0 + lid.y * 4u;
    let c0 = col0 + lid.x * 4u;
    store_row(out_base, r0, c0, acc0);
    store_row(out_base, r0 + 1u, c0, acc1);
    store_row(out_base, r0 + 2u, c0, acc2);
    store_row(out_base, r0 + 3u, c0, acc3);
}
