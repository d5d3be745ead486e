// @file matmul.wgsl
// Register-tiled f32 matmul with a bias + activation epilogue (activations.wgsl is prepended).
//
// out[z, m, n] = act(sum_k A[z, m, k] * B[z, k, n] + bias[n]).
// A workgroup of 16x16 invocations computes a 64x64 output tile, 4x4 values per invocation,
// staging 64x16 slices of A and 16x64 slices of B in workgroup memory. Operands are addressed by
// strides, so B may be stored [K, N] or [N, K] (transposed) and batches may broadcast (stride 0).
// With `split_width` < n, output column c goes to output c / split_width at column
// c % split_width: the QKV split-write, three outputs from one dispatch.

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
    _pad0: u32,
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

const TILE: u32 = 64u;
const TK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>; // [kk * TILE + row]
var<workgroup> b_tile: array<f32, 1024>; // [kk * TILE + col]

@compute @workgroup_size(16, 16, 1)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let tid = lid.y * 16u + lid.x;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;

    // Where this batch's matrices start.
    var rem = wid.z;
    var a_base = p.a_offset;
    var b_base = p.b_offset;
    for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
        let size = p.batch_dims[d];
        let c = rem % size;
        rem = rem / size;
        a_base += c * p.a_batch_strides[d];
        b_base += c * p.b_batch_strides[d];
    }
    // B stored [N, K] is read along k by consecutive invocations, [K, N] along n.
    let b_k_fastest = p.b_stride_k == 1u;

    var acc: array<array<f32, 4>, 4>;
    for (var t = 0u; t < p.k; t += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = tid + i * 256u;
            let r = e / TK;
            let kk = e % TK;
            var av = 0.0;
            if (row0 + r < p.m && t + kk < p.k) {
                av = arena[a_base + (row0 + r) * p.a_stride_m + t + kk];
            }
            a_tile[kk * TILE + r] = av;

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
            b_tile[kb * TILE + c] = bv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var av: array<f32, 4>;
            var bv: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                av[i] = a_tile[kk * TILE + lid.y * 4u + i];
                bv[i] = b_tile[kk * TILE + lid.x * 4u + i];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(av[i], bv[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
    }

    let out_batch = wid.z * p.m * p.out_stride_m;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r >= p.m) {
            continue;
        }
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x * 4u + j;
            if (c >= p.n) {
                continue;
            }
            var v = acc[i][j];
            if (p.has_bias != 0u) {
                v += arena[p.bias_offset + c];
            }
            if (p.act != 0xffffffffu) {
                v = apply_unary(p.act, v);
            }
            let which = c / p.split_width;
            let col = c % p.split_width;
            arena[p.out_offsets[which] + out_batch + r * p.out_stride_m + col] = v;
        }
    }
}
