// @file matmul_skinny.wgsl
// The skinny matmul, for a few rows of A against B stored [N, K] (a decoder's or a short
// sequence's linear layers): a tiled kernel would give each of few workgroups a long serial
// loop over K. Here a workgroup owns SKINNY_COLS output columns; SKINNY_LANES lanes per column
// stride K, reading B's rows contiguously, for all rows of A at once (in groups of four rows,
// as many groups as the rows need), then reduce through workgroup memory. The sums are
// separate vec4 variables, never an indexed local array, which drivers may keep in slow local
// memory. Where rows are 16-byte aligned the `_vec4` pipeline reads four k per load (see
// `skinny_dots`). activations.wgsl and matmul_common.wgsl are prepended.
// 4 columns of 64 lanes (`matmul_skinny`), or 2 of 128 (`matmul_skinny_narrow`, twice the
// workgroups for outputs too narrow to fill the GPU otherwise).
override SKINNY_COLS: u32 = 4u;
override SKINNY_LANES: u32 = 256u / SKINNY_COLS;

// Rows `first..first + 4` of A at column `k` (A's start plus k is `a`); rows past m read row
// m - 1 and are dropped.
fn skinny_rows(a: u32, first: u32) -> vec4<f32> {
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.a_stride_m;
    return vec4<f32>(arena[a + rows.x], arena[a + rows.y], arena[a + rows.z], arena[a + rows.w]);
}

// With `ROWS_AS_VEC4` (the `matmul_skinny_vec4` pipeline: rows 16-byte aligned, k a multiple of
// four): rows `first..first + 4` of A at the k-quad where A's start plus k is `a`, each dotted
// with B's k-quad `w`.
fn skinny_dots(a: u32, first: u32, w: vec4<f32>) -> vec4<f32> {
    let rows = min(vec4<u32>(first) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.m - 1u)) * p.a_stride_m;
    return vec4<f32>(
        dot(arena4[(a + rows.x) / 4u], w),
        dot(arena4[(a + rows.y) / 4u], w),
        dot(arena4[(a + rows.z) / 4u], w),
        dot(arena4[(a + rows.w) / 4u], w),
    );
}

var<workgroup> sums: array<vec4<f32>, 256>;

@compute @workgroup_size(256, 1, 1)
fn matmul_skinny(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    let lane = tid % SKINNY_LANES;
    let c = wid.x * SKINNY_COLS + tid / SKINNY_LANES;
    let b_row = b_base + min(c, p.n - 1u) * p.b_stride_n;
    let out_base = wid.z * p.m * p.out_stride_m;
    var acc0 = vec4<f32>();
    var acc1 = vec4<f32>();
    var acc2 = vec4<f32>();
    var acc3 = vec4<f32>();
    // One loop per row count (a uniform branch), so few rows load only what they use.
    if (ROWS_AS_VEC4) {
        // Four k per lane and step, one 16-byte load per row and one of B.
        let step = SKINNY_LANES * 4u;
        if (p.m <= 4u) {
            for (var k = lane * 4u; k < p.k; k += step) {
                acc0 += skinny_dots(a_base + k, 0u, arena4[(b_row + k) / 4u]);
            }
        } else if (p.m <= 8u) {
            for (var k = lane * 4u; k < p.k; k += step) {
                let w = arena4[(b_row + k) / 4u];
                acc0 += skinny_dots(a_base + k, 0u, w);
                acc1 += skinny_dots(a_base + k, 4u, w);
            }
        } else {
            for (var k = lane * 4u; k < p.k; k += step) {
                let w = arena4[(b_row + k) / 4u];
                acc0 += skinny_dots(a_base + k, 0u, w);
                acc1 += skinny_dots(a_base + k, 4u, w);
                acc2 += skinny_dots(a_base + k, 8u, w);
                acc3 += skinny_dots(a_base + k, 12u, w);
            }
        }
    } else if (p.m <= 4u) {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            acc0 = fma(skinny_rows(a_base + k, 0u), vec4<f32>(arena[b_row + k]), acc0);
        }
    } else if (p.m <= 8u) {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            let w = vec4<f32>(arena[b_row + k]);
            acc0 = fma(skinny_rows(a_base + k, 0u), w, acc0);
            acc1 = fma(skinny_rows(a_base + k, 4u), w, acc1);
        }
    } else {
        for (var k = lane; k < p.k; k += SKINNY_LANES) {
            let w = vec4<f32>(arena[b_row + k]);
            acc0 = fma(skinny_rows(a_base + k, 0u), w, acc0);
            acc1 = fma(skinny_rows(a_base + k, 4u), w, acc1);
            acc2 = fma(skinny_rows(a_base + k, 8u), w, acc2);
            acc3 = fma(skinny_rows(a_base + k, 12u), w, acc3);
        }
    }
    skinny_store(tid, lane, c, 0u, out_base, acc0);
    if (p.m > 4u) {
        skinny_store(tid, lane, c, 4u, out_base, acc1);
    }
    if (p.m > 8u) {
        skinny_store(tid, lane, c, 8u, out_base, acc2);
        skinny_store(tid, lane, c, 12u, out_base, acc3);
    }
}

// Sums one column's partial sums of rows `row0..row0 + 4` over its lanes and stores them.
fn skinny_store(tid: u32, lane: u32, c: u32, row0: u32, out_base: u32, v: vec4<f32>) {
    sums[tid] = v;
    workgroupBarrier();
    for (var s = SKINNY_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            sums[tid] += sums[tid + s];
        }
        workgroupBarrier();
    }
    let r = row0 + lane;
    if (lane < 4u && c < p.n && r < p.m) {
        store_one(out_base, r, c, sums[tid - lane][lane]);
    }
    workgroupBarrier();
}

