// @file quant.wgsl
// GGUF block-quantized weights (Q4_0, Q4_1, Q8_0) dequantized on the fly (activations.wgsl is
// prepended): a matmul `out = act(A × Wᵀ + bias)` with W [N, K] quantized along K, and the
// embedding lookup from a quantized [rows, dim] table.
//
// Packed tensors lie byte for byte in the arena from a word boundary (`base`, in words). Blocks
// are 18, 20 or 34 bytes, so every block, and every field in it, starts at an even byte: a u32
// at byte b is one word when b % 4 == 0, else the high half of word b / 4 and the low half of
// the next. Format codes: 0 = Q4_0, 1 = Q4_1, 2 = Q8_0 (the values are kiln_ir::quant's:
// Q4_0 d * (q - 8), Q4_1 d * q + m, Q8_0 d * q; in Q4 blocks byte j holds element j in its low
// nibble and element j + 16 in its high nibble). Dequantized values are bit-identical to the
// reference's: d * q is exact in f32, and Q4_1's d * q + m rounds once either way.
//
// The work unit everywhere is a quarter block, 8 values: for Q8_0 bytes 8i..8i+8 (elements
// 8i..8i+8), for Q4 bytes 4i..4i+4 (elements 4i..4i+4 and 16+4i..16+4i+4).
//
// The matmul has two entry points with the same params and bindings (a planned step moves
// between them when the active extent changes M; `variant` records which one the params are
// for):
// - `quant_gemv`, variant 0 (few rows of A, decode): a workgroup of 256 owns 8 weight rows
//   (output columns), 32 threads per row stride K by quarter blocks, so a row's bytes are read
//   contiguously, each thread accumulates up to 4 rows of A (wid.z picks which 4), then a
//   workgroup tree reduction.
// - `quant_tiled`, variant 1 (prefill): a workgroup owns a 32 x 64 output tile; per block of K
//   it stages the 32 x 32 slice of A and dequantizes the 64 x 32 slice of W into workgroup
//   memory, where every weight is reused by 32 rows; each thread computes 2 x 4 outputs.
// The output columns form up to four segments, each computed from its own weight (or a range of
// rows of one) and written to its own output: one weight split three ways (QKV split-write), or
// sibling matmuls of one input (Q, K and V; gate and up) in one dispatch. Segment s covers
// columns col_ends[s - 1]..col_ends[s]; its column j is weight row w_rows0[s] + j of the
// weight at w_offsets[s] (format formats[s]) and goes to out_offsets[s] + row * width + j.

struct QuantMatmulParams {
    // Rows of A (all leading dims folded), columns (all segments), inner dim (a multiple of 32).
    m: u32,
    n: u32,
    k: u32,
    a_offset: u32,
    bias_offset: u32,
    has_bias: u32,
    // activations.wgsl id, or 0xffffffff for none.
    act: u32,
    // 0 GEMV, 1 tiled.
    variant: u32,
    // Workgroups in x: the column group is wid.x + wid.y * grid_x; wid.z is the row group.
    grid_x: u32,
    // With glu = 1 there are two segments, gate and up, of n / 2 columns each, and the kernel
    // writes apply_unary(glu_act, gate) * up (SwiGLU) to out_offsets[0] instead of either.
    glu: u32,
    glu_act: u32,
    _pad0: u32,
    // With norm = 1, an RMSNorm prologue: A's rows are x (a_offset) plus the residual (if
    // has_residual) times gamma (if has_gamma) as they are read, and each row's dot products
    // are scaled by 1 / sqrt(mean(row²) + eps); column group 0 writes x + residual to
    // sum_offset (if has_sum). See `prologue`.
    norm: u32,
    eps: f32,
    residual_offset: u32,
    gamma_offset: u32,
    sum_offset: u32,
    has_residual: u32,
    has_gamma: u32,
    has_sum: u32,
    col_ends: vec4<u32>,
    formats: vec4<u32>,
    w_offsets: vec4<u32>,
    w_rows0: vec4<u32>,
    out_offsets: vec4<u32>,
}

struct QuantGatherParams {
    num_indices: u32,
    rows: u32,
    dim: u32,
    format: u32,
    table_offset: u32,
    index_offset: u32,
    out_offset: u32,
    grid_width: u32,
}

@group(0) @binding(0) var<storage, read_write> arena: array<u32>;
@group(0) @binding(1) var<uniform> p: QuantMatmulParams;
@group(0) @binding(1) var<uniform> gp: QuantGatherParams;

const Q4_0: u32 = 0u;
const Q4_1: u32 = 1u;
const Q8_0: u32 = 2u;

fn block_bytes(format: u32) -> u32 {
    return select(select(34u, 20u, format == Q4_1), 18u, format == Q4_0);
}

// The u32 at even byte `b` of the packed tensor at word `base`.
// Both words are read on either path so that a warp whose blocks alternate in alignment does not
// diverge; the extra word may lie past the tensor, even past the binding (the kernels run
// without wgpu's bounds checks), so its index is clamped to the binding's last word: a word
// the result needs always lies inside the tensor, so the clamp only moves discarded reads.
fn load_u32(base: u32, b: u32) -> u32 {
    let w = base + (b >> 2u);
    let last = arrayLength(&arena) - 1u;
    let lo = arena[w];
    let hi = arena[min(w + 1u, last)];
    return select(lo, (lo >> 16u) | (hi << 16u), (b & 2u) != 0u);
}

// The two u32 at even byte `b` (the third word read is clamped as in `load_u32`).
fn load_u32x2(base: u32, b: u32) -> vec2<u32> {
    let w = base + (b >> 2u);
    let last = arrayLength(&arena) - 1u;
    let v = vec3<u32>(arena[w], arena[w + 1u], arena[min(w + 2u, last)]);
    return select(v.xy, (v.xy >> vec2<u32>(16u)) | (v.yz << vec2<u32>(16u)), (b & 2u) != 0u);
}

// Quarter `i` (0..4) of the block at byte `bb`: its 8 values as two vec4s.
fn dequant_quarter(format: u32, base: u32, bb: u32, i: u32) -> array<vec4<f32>, 2> {
    // d, and for Q4_1 m, are the block's first f16s.
    let s = unpack2x16float(load_u32(base, bb));
    if (format == Q8_0) {
        let q = load_u32x2(base, bb + 2u + 8u * i);
        return array<vec4<f32>, 2>(
            s.x * vec4<f32>(unpack4xI8(q.x)),
            s.x * vec4<f32>(unpack4xI8(q.y)),
        );
    }
    var q: u32;
    var m: f32;
    if (format == Q4_1) {
        q = load_u32(base, bb + 4u + 4u * i);
        m = s.y;
    } else {
        q = load_u32(base, bb + 2u + 4u * i);
        m = -8.0 * s.x;
    }
    let lo = vec4<f32>(unpack4xU8(q & 0x0f0f0f0fu));
    let hi = vec4<f32>(unpack4xU8((q >> 4u) & 0x0f0f0f0fu));
    return array<vec4<f32>, 2>(fma(vec4<f32>(s.x), lo, vec4<f32>(m)), fma(vec4<f32>(s.x), hi, vec4<f32>(m)));
}

// Where the two vec4s of quarter `i` sit within the block (element index of their first value).
fn quarter_offsets(format: u32, i: u32) -> vec2<u32> {
    if (format == Q8_0) {
        return vec2<u32>(8u * i, 8u * i + 4u);
    }
    return vec2<u32>(4u * i, 16u + 4u * i);
}

fn load_f32x4(at: u32) -> vec4<f32> {
    return bitcast<vec4<f32>>(vec4<u32>(arena[at], arena[at + 1u], arena[at + 2u], arena[at + 3u]));
}

// The segment holding column c.
fn segment_of(c: u32) -> u32 {
    return u32(c >= p.col_ends.x) + u32(c >= p.col_ends.y) + u32(c >= p.col_ends.z);
}

fn segment_start(s: u32) -> u32 {
    if (s == 0u) {
        return 0u;
    }
    return p.col_ends[s - 1u];
}

// Where column c's weight row lies: x the weight's word offset, y the row's first byte in it,
// z the format.
fn weight_row(c: u32, blocks: u32) -> vec3<u32> {
    let s = segment_of(c);
    let format = p.formats[s];
    let row = p.w_rows0[s] + c - segment_start(s);
    return vec3<u32>(p.w_offsets[s], row * blocks * block_bytes(format), format);
}

// The gated product of gate column c: act(gate) * up, into the single output.
fn store_glu(row: u32, c: u32, gate: f32, up: f32) {
    let width = p.n / 2u;
    arena[p.out_offsets[0] + row * width + c] = bitcast<u32>(apply_unary(p.glu_act, gate) * up);
}

// Bias, activation and the store of output element (row, col) into its segment's output.
fn store_out(row: u32, col: u32, sum: f32) {
    var v = sum;
    if (p.has_bias != 0u) {
        v += bitcast<f32>(arena[p.bias_offset + col]);
    }
    if (p.act != 0xffffffffu) {
        v = apply_unary(p.act, v);
    }
    let s = segment_of(col);
    let start = segment_start(s);
    let width = p.col_ends[s] - start;
    arena[p.out_offsets[s] + row * width + col - start] = bitcast<u32>(v);
}

const WG: u32 = 256u;
// GEMV: threads per weight row, weight rows per workgroup, rows of A per workgroup.
const GEMV_LANES: u32 = 32u;
const GEMV_COLS: u32 = 8u;
const GEMV_ROWS: u32 = 4u;
// Tiled: the output tile is TM rows x TN columns; K advances one block (32) at a time.
const TM: u32 = 32u;
const TN: u32 = 64u;
// Padded row pitches of the workgroup tiles (no bank conflicts on their transposing stores).
const A_PITCH: u32 = 33u; // a_tile[r * A_PITCH + kk]
const W_PITCH: u32 = 65u; // w_tile[kk * W_PITCH + c]

var<workgroup> a_tile: array<f32, 1056>; // TM * A_PITCH
// The tiled variant's W slice (32 * W_PITCH); the GEMV's partial sums (products and sums of
// squares, 2 * GEMV_ROWS * WG) and the tiled norm prologue's reuse it.
var<workgroup> w_tile: array<f32, 2080>;

// Each row's norm scale (1.0 without a norm prologue), for the workgroup's rows.
var<workgroup> row_scale: array<f32, 32>; // TM

fn store_f32x4(at: u32, v: vec4<f32>) {
    arena[at] = bitcast<u32>(v.x);
    arena[at + 1u] = bitcast<u32>(v.y);
    arena[at + 2u] = bitcast<u32>(v.z);
    arena[at + 3u] = bitcast<u32>(v.w);
}

// Four values of A's rows from element `i` (row * k + column) before gamma: x, plus the
// residual under a norm prologue (the norm's input; uniform branch).
fn x_plus_residual4(i: u32) -> vec4<f32> {
    var v = load_f32x4(p.a_offset + i);
    if (p.has_residual != 0u) {
        v += load_f32x4(p.residual_offset + i);
    }
    return v;
}

// Four values of A from element `i` (row * k + column `c`), before the row's norm scale: x,
// plus the residual and times gamma under a norm prologue (uniform branches).
fn a4(i: u32, c: u32) -> vec4<f32> {
    var v = x_plus_residual4(i);
    if (p.has_gamma != 0u) {
        v *= load_f32x4(p.gamma_offset + c);
    }
    return v;
}

// The tiled variant's norm prologue for rows row0..row0 + rows (at most 32), `lanes`
// invocations per row (a power of two, lanes * rows <= WG): each row's sum of squares of
// x + residual into row_scale as 1 / sqrt(mean + eps), and, in column group 0, the sum stored
// (the tee). Without a norm every scale is 1. Uses w_tile as scratch; ends with a barrier.
fn prologue(tid: u32, group: u32, row0: u32, rows: u32, lanes: u32) {
    if (p.norm == 0u) {
        if (tid < 32u) {
            row_scale[tid] = 1.0;
        }
        workgroupBarrier();
        return;
    }
    let r = tid / lanes;
    let lane = tid % lanes;
    var ss = 0.0;
    if (r < rows) {
        let base = (row0 + r) * p.k;
        for (var c = lane * 4u; c < p.k; c += lanes * 4u) {
            let v = x_plus_residual4(base + c);
            if (p.has_sum != 0u && group == 0u) {
                store_f32x4(p.sum_offset + base + c, v);
            }
            ss += dot(v, v);
        }
    }
    w_tile[tid] = ss;
    workgroupBarrier();
    for (var s = lanes / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            w_tile[tid] += w_tile[tid + s];
        }
        workgroupBarrier();
    }
    if (lane == 0u && r < 32u) {
        row_scale[r] = inverseSqrt(w_tile[tid] / f32(p.k) + p.eps);
    }
    workgroupBarrier();
}


// Column `t` of column group `group` of `cols` columns (GEMV: one per warp; tiled: one per
// tile column): `cols` consecutive columns, or with glu cols / 2 gate columns then the matching
// up columns.
fn group_col(group: u32, t: u32, cols: u32) -> u32 {
    if (p.glu != 0u) {
        let half = cols / 2u;
        return group * half + t % half + select(0u, p.n / 2u, t >= half);
    }
    return group * cols + t;
}

// Row `row` of A at the two vec4s of a quarter (block column kb, offsets o) before gamma: x,
// plus the residual under a norm prologue.
fn row8(row: u32, kb: u32, o: vec2<u32>) -> array<vec4<f32>, 2> {
    let i = row * p.k + kb;
    return array<vec4<f32>, 2>(x_plus_residual4(i + o.x), x_plus_residual4(i + o.y));
}

// The GEMV of one A row's quarter: x: the dot product with the weights (A times gamma), y: the
// sum of squares of A (the norm prologue's; every warp reads all of K, so each warp has its
// rows' full sums after its reduction, with no extra pass or barrier). Warp 0 of column
// group 0 writes the residual sum (the tee).
fn gemv_quarter(
    w: array<vec4<f32>, 2>,
    g: array<vec4<f32>, 2>,
    row: u32,
    kb: u32,
    o: vec2<u32>,
    tee: bool,
) -> vec2<f32> {
    let a = row8(row, kb, o);
    if (tee) {
        let at = p.sum_offset + row * p.k + kb;
        store_f32x4(at + o.x, a[0]);
        store_f32x4(at + o.y, a[1]);
    }
    let product = dot(w[0], a[0] * g[0]) + dot(w[1], a[1] * g[1]);
    return vec2<f32>(product, dot(a[0], a[0]) + dot(a[1], a[1]));
}

fn gemv(tid: u32, group: u32, row0: u32) {
    let lane = tid % GEMV_LANES;
    let col = group_col(group, tid / GEMV_LANES, GEMV_COLS);
    let nr = min(GEMV_ROWS, p.m - row0);
    let blocks = p.k / 32u;
    let tee = p.has_sum != 0u && group == 0u && tid < GEMV_LANES;
    var acc = vec4<f32>(0.0);
    var sq = vec4<f32>(0.0);
    if (col < p.n) {
        let wr = weight_row(col, blocks);
        let format = wr.z;
        let bytes = block_bytes(format);
        for (var u = lane; u < 4u * blocks; u += GEMV_LANES) {
            let blk = u / 4u;
            let i = u % 4u;
            let w = dequant_quarter(format, wr.x, wr.y + blk * bytes, i);
            let o = quarter_offsets(format, i);
            let kb = blk * 32u;
            var g = array<vec4<f32>, 2>(vec4<f32>(1.0), vec4<f32>(1.0));
            if (p.has_gamma != 0u) {
                let at = p.gamma_offset + kb;
                g = array<vec4<f32>, 2>(load_f32x4(at + o.x), load_f32x4(at + o.y));
            }
            var d = gemv_quarter(w, g, row0, kb, o, tee);
            acc.x += d.x;
            sq.x += d.y;
            if (nr > 1u) {
                d = gemv_quarter(w, g, row0 + 1u, kb, o, tee);
                acc.y += d.x;
                sq.y += d.y;
            }
            if (nr > 2u) {
                d = gemv_quarter(w, g, row0 + 2u, kb, o, tee);
                acc.z += d.x;
                sq.z += d.y;
            }
            if (nr > 3u) {
                d = gemv_quarter(w, g, row0 + 3u, kb, o, tee);
                acc.w += d.x;
                sq.w += d.y;
            }
        }
    }
    // Tree reduction over each row's 32 lanes (only the nr rows in use, and their sums of
    // squares under a norm prologue; nr and p.norm are uniform).
    for (var r = 0u; r < GEMV_ROWS; r++) {
        if (r < nr) {
            w_tile[r * WG + tid] = acc[r];
            w_tile[(GEMV_ROWS + r) * WG + tid] = sq[r];
        }
    }
    workgroupBarrier();
    for (var s = GEMV_LANES / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            for (var r = 0u; r < 2u * GEMV_ROWS; r++) {
                if (r % GEMV_ROWS < nr && r < select(GEMV_ROWS, 2u * GEMV_ROWS, p.norm != 0u)) {
                    w_tile[r * WG + tid] += w_tile[r * WG + tid + s];
                }
            }
        }
        workgroupBarrier();
    }
    // Row `lane`'s norm scale, from this warp's sum of squares (1 without a norm).
    var scale = 1.0;
    if (p.norm != 0u && lane < nr) {
        scale = inverseSqrt(w_tile[(GEMV_ROWS + lane) * WG + tid - lane] / f32(p.k) + p.eps);
    }
    if (p.glu != 0u) {
        // Gate warps combine with the up warp four above (same lane, WG / 2 threads later).
        if (tid < WG / 2u && lane < nr && col < p.n / 2u) {
            let g = w_tile[lane * WG + tid - lane];
            let u = w_tile[lane * WG + tid - lane + WG / 2u];
            store_glu(row0 + lane, col, g * scale, u * scale);
        }
    } else if (lane < nr && col < p.n) {
        store_out(row0 + lane, col, w_tile[lane * WG + tid - lane] * scale);
    }
}

fn tiled(tid: u32, group: u32, rgroup: u32) {
    let tx = tid % 16u;
    let ty = tid / 16u;
    let row0 = rgroup * TM;
    let blocks = p.k / 32u;
    // The quarter of W this thread dequantizes each step: tile column cw, quarter qi.
    let cw = tid / 4u;
    let qi = tid % 4u;
    let wcol = group_col(group, cw, TN);
    let wr = weight_row(min(wcol, p.n - 1u), blocks);
    let bytes = block_bytes(wr.z);
    let ko = quarter_offsets(wr.z, qi);
    prologue(tid, group, row0, min(TM, p.m - row0), WG / TM);
    var acc0 = vec4<f32>(0.0); // row ty, columns tx + 16j
    var acc1 = vec4<f32>(0.0); // row ty + 16
    for (var blk = 0u; blk < blocks; blk++) {
        // Each invocation stages four consecutive values of one row (a vec4 of A).
        let r = tid / 8u;
        let kq = (tid % 8u) * 4u;
        var v = vec4<f32>(0.0);
        if (row0 + r < p.m) {
            v = a4((row0 + r) * p.k + blk * 32u + kq, blk * 32u + kq);
        }
        for (var j = 0u; j < 4u; j++) {
            a_tile[r * A_PITCH + kq + j] = v[j];
        }
        var w = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
        if (wcol < p.n) {
            w = dequant_quarter(wr.z, wr.x, wr.y + blk * bytes, qi);
        }
        for (var j = 0u; j < 4u; j++) {
            w_tile[(ko.x + j) * W_PITCH + cw] = w[0][j];
            w_tile[(ko.y + j) * W_PITCH + cw] = w[1][j];
        }
        workgroupBarrier();
        for (var kk = 0u; kk < 32u; kk++) {
            let b = vec4<f32>(
                w_tile[kk * W_PITCH + tx],
                w_tile[kk * W_PITCH + tx + 16u],
                w_tile[kk * W_PITCH + tx + 32u],
                w_tile[kk * W_PITCH + tx + 48u],
            );
            acc0 = fma(vec4<f32>(a_tile[ty * A_PITCH + kk]), b, acc0);
            acc1 = fma(vec4<f32>(a_tile[(ty + 16u) * A_PITCH + kk]), b, acc1);
        }
        workgroupBarrier();
    }
    acc0 *= row_scale[ty];
    acc1 *= row_scale[ty + 16u];
    if (p.glu != 0u) {
        // Columns tx and tx + 16 are gate columns; tx + 32 and tx + 48 their up columns.
        for (var j = 0u; j < 2u; j++) {
            let c = group_col(group, tx + 16u * j, TN);
            if (c >= p.n / 2u) {
                continue;
            }
            if (row0 + ty < p.m) {
                store_glu(row0 + ty, c, acc0[j], acc0[j + 2u]);
            }
            if (row0 + ty + 16u < p.m) {
                store_glu(row0 + ty + 16u, c, acc1[j], acc1[j + 2u]);
            }
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let c = group_col(group, tx + 16u * j, TN);
        if (c >= p.n) {
            continue;
        }
        if (row0 + ty < p.m) {
            store_out(row0 + ty, c, acc0[j]);
        }
        if (row0 + ty + 16u < p.m) {
            store_out(row0 + ty + 16u, c, acc1[j]);
        }
    }
}

@compute @workgroup_size(256)
fn quant_gemv(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    gemv(tid, wid.x + wid.y * p.grid_x, wid.z * GEMV_ROWS);
}

@compute @workgroup_size(256)
fn quant_tiled(@builtin(local_invocation_index) tid: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    tiled(tid, wid.x + wid.y * p.grid_x, wid.z);
}

// Embedding lookup: out[j, :] = dequantized table[idx[j], :], one quarter block per invocation.
// An index outside the table reads as zeros (a kernel cannot raise).
@compute @workgroup_size(64)
fn quant_gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let t = gid.x + gid.y * gp.grid_width;
    let quarters = gp.dim / 8u;
    if (t >= gp.num_indices * quarters) {
        return;
    }
    let j = t / quarters;
    let blk = (t % quarters) / 4u;
    let qi = t % 4u;
    let index = bitcast<i32>(arena[gp.index_offset + j]);
    var w = array<vec4<f32>, 2>(vec4<f32>(0.0), vec4<f32>(0.0));
    if (index >= 0i && u32(index) < gp.rows) {
        let bb = (u32(index) * (gp.dim / 32u) + blk) * block_bytes(gp.format);
        w = dequant_quarter(gp.format, gp.table_offset, bb, qi);
    }
    let o = quarter_offsets(gp.format, qi);
    let out = gp.out_offset + j * gp.dim + blk * 32u;
    for (var c = 0u; c < 4u; c++) {
        arena[out + o.x + c] = bitcast<u32>(w[0][c]);
        arena[out + o.y + c] = bitcast<u32>(w[1][c]);
    }
}
