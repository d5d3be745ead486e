// @file norm.wgsl
// LayerNorm / RMSNorm / L2 normalisation over the last axis, optionally fused with a residual
// add and a bias:
//   s = x (+ residual) (+ bias);  out = norm(s) (* gamma) (+ beta)
// and, for the "tee", the sum s is also written out for its other consumers.
//
// One workgroup of 256 invocations per row: invocations stride over the row, partial sums meet
// in workgroup memory. The mean is found first and the variance from centred values (two
// passes), which avoids the cancellation of E[x^2] - E[x]^2. Rows beyond 65535 fold into y.

struct NormParams {
    rows: u32,
    width: u32,
    // 0 = LayerNorm, 1 = RMSNorm, 2 = L2 (x / max(||x||, eps)).
    kind: u32,
    eps: f32,
    x_offset: u32,
    residual_offset: u32,
    bias_offset: u32,
    gamma_offset: u32,
    beta_offset: u32,
    out_offset: u32,
    sum_offset: u32,
    // Bit flags: 1 residual, 2 bias, 4 gamma, 8 beta, 16 write the sum (tee).
    flags: u32,
    groups_x: u32,
    // Above 1: x is that many partial products of a split-k matmul, chunk_words apart.
    x_chunks: u32,
    chunk_words: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: NormParams;

// Invocations per row: 256 (`norm`), or 64 (`norm_many_rows`) where rows are plenty: a
// 4096 x 384 residual LayerNorm took 23.5 µs with 256 and 17.6 with 64 on the H200, while 16
// rows took longer with 64 (MiniLM 1 x 16: 0.366 -> 0.414 ms).
override WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>; // the first WG entries

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

// The pre-norm value s[i] of a row, from the inputs.
fn summed_inputs(row: u32, i: u32) -> f32 {
    let at = row * p.width + i;
    if (p.x_chunks > 1u) {
        // A split-k matmul's chunks in chunk order, then its bias, then the residual: the
        // order of the matmul's own sum dispatch and a norm reading its product.
        var v = 0.0;
        for (var c = 0u; c < p.x_chunks; c++) {
            v += arena[p.x_offset + c * p.chunk_words + at];
        }
        if (has(2u)) {
            v += arena[p.bias_offset + i];
        }
        if (has(1u)) {
            v += arena[p.residual_offset + at];
        }
        return v;
    }
    var v = arena[p.x_offset + at];
    if (has(1u)) {
        v += arena[p.residual_offset + at];
    }
    if (has(2u)) {
        v += arena[p.bias_offset + i];
    }
    return v;
}

// Where s[i] of a row is kept while the norm runs when x comes in chunks (adding them up
// three times would read every chunk three times): the tee, else the output, which the last
// pass overwrites. Each invocation reads back only the values it wrote.
fn stash_at(row: u32, i: u32) -> u32 {
    return select(p.out_offset, p.sum_offset, has(16u)) + row * p.width + i;
}

// The pre-norm value s[i] of a row.
fn summed(row: u32, i: u32) -> f32 {
    if (p.x_chunks > 1u) {
        return arena[stash_at(row, i)];
    }
    return summed_inputs(row, i);
}

// Sums `v` over the workgroup; every invocation gets the total.
fn workgroup_sum(lid: u32, v: f32) -> f32 {
    partial[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride = stride / 2u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(WG)
fn norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x + wid.y * p.groups_x;
    // Uniform per workgroup, so every invocation leaves together (barriers stay uniform).
    if (row >= p.rows) {
        return;
    }
    let n = f32(p.width);
    if (p.x_chunks > 1u) {
        for (var i = lid; i < p.width; i += WG) {
            arena[stash_at(row, i)] = summed_inputs(row, i);
        }
    }
    var mean = 0.0;
    if (p.kind == 0u) {
        var s = 0.0;
        for (var i = lid; i < p.width; i += WG) {
            s += summed(row, i);
        }
        mean = workgroup_sum(lid, s) / n;
    }
    var sq = 0.0;
    for (var i = lid; i < p.width; i += WG) {
        let d = summed(row, i) - mean;
        sq += d * d;
    }
    let total = workgroup_sum(lid, sq);
    var inv = inverseSqrt(total / n + p.eps);
    if (p.kind == 2u) {
        // L2: unit length, the norm clamped below at eps (a zero row stays zero).
        inv = 1.0 / max(sqrt(total), p.eps);
    }
    for (var i = lid; i < p.width; i += WG) {
        let s = summed(row, i);
        var y = (s - mean) * inv;
        if (has(4u)) {
            y *= arena[p.gamma_offset + i];
        }
        if (has(8u)) {
            y += arena[p.beta_offset + i];
        }
        if (has(16u)) {
            arena[p.sum_offset + row * p.width + i] = s;
        }
        arena[p.out_offset + row * p.width + i] = y;
    }
}
