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
