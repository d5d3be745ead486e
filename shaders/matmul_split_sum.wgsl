// @file matmul_split_sum.wgsl
// The second dispatch of a split-k matmul (activations.wgsl and matmul_common.wgsl are
// prepended): `matmul_wide` wrote the raw partial products of p.k chunks of k at a_offset, laid
// out [chunk][batch][m][n]; this adds them up in chunk order and stores each output value
// through the matmul epilogue (bias, activation, split-write). One invocation per output value:
// workgroup (x, y, z) covers 64 columns of row y of batch z.

@compute @workgroup_size(64, 1, 1)
fn matmul_split_sum(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let c = wid.x * 64u + lane;
    if (c >= p.n) {
        return;
    }
    let r = wid.y;
    let z = wid.z;
    let chunk_words = p.batches * p.m * p.n;
    let at = p.a_offset + (z * p.m + r) * p.n + c;
    var sum = 0.0;
    for (var s = 0u; s < p.k; s++) {
        sum += arena[at + s * chunk_words];
    }
    store_in_column(out_column(z * p.m * p.out_stride_m, c), r, sum);
}

// `matmul_split_sum` a column quad per invocation, where the partial products are 16-byte
// aligned (the workspace offset and n multiples of four) and no quad straddles two outputs of
// a split-write (split_width a multiple of four): workgroup (x, y, z) covers column quads
// 32x .. + 32 of rows 8y .. + 8 of batch z. One scalar invocation per value in workgroups of
// 64 left the loads one word wide and the grid 16 times as large.
const SUM_QUAD_COLUMNS: u32 = 32u;
const SUM_QUAD_ROWS: u32 = 8u;

@compute @workgroup_size(256, 1, 1)
fn matmul_split_sum_quads(
    @builtin(local_invocation_index) lane: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let c = (wid.x * SUM_QUAD_COLUMNS + lane % SUM_QUAD_COLUMNS) * 4u;
    let r = wid.y * SUM_QUAD_ROWS + lane / SUM_QUAD_COLUMNS;
    if (c >= p.n || r >= p.m) {
        return;
    }
    let z = wid.z;
    let chunk_quads = p.batches * p.m * p.n / 4u;
    let at = (p.a_offset + (z * p.m + r) * p.n + c) / 4u;
    var sum = vec4<f32>(0.0);
    for (var s = 0u; s < p.k; s++) {
        sum += arena4[at + s * chunk_quads];
    }
    let out_base = z * p.m * p.out_stride_m;
    store_one(out_base, r, c, sum.x);
    store_one(out_base, r, c + 1u, sum.y);
    store_one(out_base, r, c + 2u, sum.z);
    store_one(out_base, r, c + 3u, sum.w);
}
