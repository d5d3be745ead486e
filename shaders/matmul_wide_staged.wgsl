// @file matmul_wide_staged.wgsl
// The epilogue of `matmul_wide` and `matmul_wide_vec4` (appended to matmul_wide.wgsl): the tile
// leaves through workgroup memory, a column per invocation (`OutColumn`), which suits any
// output offset, stride and split width.

// Stores pass q of the epilogue: staged row l is accumulator row 2q + l % 2 of invocation row
// ty = l / 2, i.e. tile row (q / 2) * 64 + ty * 4 + (q % 2) * 2 + l % 2. Ends with a barrier, so
// that the next pass may overwrite the staged rows.
fn store_pass(col: OutColumn, row0: u32, q: u32, tid: u32) {
    let c = tid % WT;
    let at = tid / WT * WT4 + c / 4u;
    let first = (q / 2u) * 64u + (q % 2u) * 2u;
    for (var i = 0u; i < 8u; i++) {
        let l = tid / WT + 2u * i;
        store_in_column(col, row0 + first + (l / 2u) * 4u + l % 2u, wa[at + i * 2u * WT4][c % 4u]);
    }
    for (var i = 0u; i < 8u; i++) {
        let l = 16u + tid / WT + 2u * i;
        store_in_column(col, row0 + first + (l / 2u) * 4u + l % 2u, wb[at + i * 2u * WT4][c % 4u]);
    }
    workgroupBarrier();
}

// Stages accumulator rows 2q and 2q + 1 of the invocation (see `store_pass`): rows ty * 2 and
// ty * 2 + 1 of the pass, in `wa` for ty < 8 (a warp's two ty agree).
fn stage_rows(ty: u32, tx: u32, l0: vec4<f32>, h0: vec4<f32>, l1: vec4<f32>, h1: vec4<f32>) {
    let lo = (ty % 8u) * 2u * WT4 + tx;
    if (ty < 8u) {
        wa[lo] = l0;
        wa[lo + 16u] = h0;
        wa[lo + WT4] = l1;
        wa[lo + WT4 + 16u] = h1;
    } else {
        wb[lo] = l0;
        wb[lo + 16u] = h0;
        wb[lo + WT4] = l1;
        wb[lo + WT4 + 16u] = h1;
    }
    workgroupBarrier();
}

// Stores the tile of invocation (tx, ty)'s accumulators (see `matmul_wide`).
fn store_tile(tid: u32, wid: vec3<u32>, row0: u32, col0: u32, tx: u32, ty: u32,
    c0l: vec4<f32>, c0h: vec4<f32>, c1l: vec4<f32>, c1h: vec4<f32>,
    c2l: vec4<f32>, c2h: vec4<f32>, c3l: vec4<f32>, c3h: vec4<f32>,
    c4l: vec4<f32>, c4h: vec4<f32>, c5l: vec4<f32>, c5h: vec4<f32>,
    c6l: vec4<f32>, c6h: vec4<f32>, c7l: vec4<f32>, c7h: vec4<f32>) {
    // The tile leaves through workgroup memory in four passes of 32 rows (16 KiB, the staging
    // space), pass q holding accumulator rows 2q and 2q + 1 of every invocation; invocation tid
    // then stores column tid % 128 of every other row of the pass (see `OutColumn`).
    let col = out_column(wid.z * p.m * p.out_stride_m, col0 + tid % WT);
    stage_rows(ty, tx, c0l, c0h, c1l, c1h);
    store_pass(col, row0, 0u, tid);
    stage_rows(ty, tx, c2l, c2h, c3l, c3h);
    store_pass(col, row0, 1u, tid);
    stage_rows(ty, tx, c4l, c4h, c5l, c5h);
    store_pass(col, row0, 2u, tid);
    stage_rows(ty, tx, c6l, c6h, c7l, c7h);
    store_pass(col, row0, 3u, tid);
}
