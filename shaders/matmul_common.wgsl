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
// loop over K. Here a workgroup owns 8 output columns; 32 lanes per column stride K, reading
// B's rows contiguously, for all rows of A at once, then reduce through workgroup memory:
// `a_tile` (array<vec4<f32>, 256>), which every kernel including this file declares (the tiled
// kernel's A tile, unused in the skinny variant), so the variant costs no workgroup memory.
fn skinny(tid: u32, wid: vec3<u32>, a_base: u32, b_base: u32) {
    let lane = tid % 32u;
    let c = wid.x * 8u + tid / 32u;
    let cc = min(c, p.n - 1u);
    let out_base = wid.z * p.m * p.out_stride_m;
    // All (up to 16) rows in one pass over B; rows past m read row m - 1 and are dropped.
    var acc: array<vec4<f32>, 4>;
    for (var k = lane; k < p.k; k += 32u) {
        let w = arena[b_base + k + cc * p.b_stride_n];
        for (var g = 0u; g < 4u; g++) {
            let r = 4u * g;
            let a = vec4<f32>(
                arena[a_base + min(r, p.m - 1u) * p.a_stride_m + k],
                arena[a_base + min(r + 1u, p.m - 1u) * p.a_stride_m + k],
                arena[a_base + min(r + 2u, p.m - 1u) * p.a_stride_m + k],
                arena[a_base + min(r + 3u, p.m - 1u) * p.a_stride_m + k],
            );
            acc[g] = fma(a, vec4<f32>(w), acc[g]);
        }
    }
    for (var g = 0u; g < 4u; g++) {
        if (4u * g >= p.m) {
            break;
        }
        a_tile[tid] = acc[g];
        workgroupBarrier();
        for (var s = 16u; s > 0u; s >>= 1u) {
            if (lane < s) {
                a_tile[tid] += a_tile[tid + s];
            }
            workgroupBarrier();
        }
        let r = 4u * g + lane;
        if (lane < 4u && c < p.n && r < p.m) {
            store_one(out_base, r, c, a_tile[tid - lane][lane]);
        }
        workgroupBarrier();
    }
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

