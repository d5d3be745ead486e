// Fused scaled-dot-product attention with a streaming (online) softmax.
//
// Three variants (the `variant` param), each on an entry point of its own; they bind alike, so a
// planned step switches between them when its extent changes (decode at seq_q = 1, prefill at
// seq_q = prompt):
//
// - 0, `attention_row` (few queries, decode): one workgroup computes one query row (batch b,
//   head h, query i), its 256 invocations in ROW_GROUPS = 4 key groups of 64. The query row is
//   staged in workgroup memory; group g visits the key tiles g, g + 4, ... (64 keys each), one
//   key per invocation for the score, then every invocation of the group folds the whole tile
//   into its share of head_dim (dims t, t + 64, ...). A group's running max `m` and sum `l` are
//   kept identically by its invocations; at the end the four groups' states merge. No score
//   matrix is ever stored and any key length works; the groups give a long cache four times
//   the parallelism (decode has one workgroup per head).
//
// - 1, `attention`, tiled (prefill, encoders): one workgroup of 64 invocations computes TQ = 16
//   query rows of one (batch, head). Keys are visited in tiles of TK = 32; each tile of K, then of V, is staged
//   once in workgroup memory and reused by all 16 rows. head_dim is staged in chunks of 64
//   dims. Invocation t owns the query rows 2 * (t / 8) and 2 * (t / 8) + 1; for the scores it
//   owns the keys t % 8 + 8 j (j < 4) of the tile, for the output the dims 4 (t % 8) .. + 4 and
//   4 (t % 8 + 8) .. + 4 of each 64-dim chunk. Per tile: scores (2 x 4 per invocation, summed
//   over the staged chunks), each row's tile max from the 8 invocations that share it (through
//   workgroup memory), the weights exp(s - m_new) stored for the whole row, then V accumulated.
//   The running max and sum of a row are kept identically by the 8 invocations that own it. Up
//   to 128 output dims are accumulated per pass; head_dim above 128 takes two passes, which
//   recompute the scores (register use stays at 32 accumulators per invocation).
//
// - 2, `attention_block` (many query rows, head_dim <= 32; at the end of the file).
//
// Operands are addressed by element offsets into the arena and by (batch, seq, head) strides in
// elements (head_dim is contiguous), which covers BSHD, BHSD and views into a packed QKV tensor.
// Grids larger than 65535 workgroups are folded into y.
//
// Keys that a query may not see (past the cache length or the causal limit, padded, or with a
// bias of -inf) are tracked explicitly and weigh exactly 0: the kernel never relies on -inf
// arithmetic. A row that sees no key writes zeros.

struct AttentionParams {
    // Work items, one workgroup each: batch * heads * q_tiles.
    items: u32,
    groups_x: u32,
    seq_q: u32,
    seq_k: u32,
    num_heads: u32,
    // num_heads / num_kv_heads: query head h reads kv head h / group.
    group: u32,
    head_dim: u32,
    scale: f32,
    // 0 none, 1 causal, 2 additive bias, 3 key padding.
    mask_kind: u32,
    // Key padding stored as integer words (else f32 words).
    mask_is_int: u32,
    mask_offset: u32,
    has_past: u32,
    past_offset: u32,
    q_offset: u32,
    k_offset: u32,
    v_offset: u32,
    out_offset: u32,
    // 0 per row, 1 tiled, 2 blocks (which entry point the params are for).
    variant: u32,
    // Query tiles per (batch, head): seq_q over the variant's rows per workgroup (1, TQ, BQ).
    q_tiles: u32,
    // 1 where q, k, v and out are read and written as 16-byte quads through `arena4`: their
    // offsets, (batch, seq, head) strides and head_dim are multiples of 4.
    quads: u32,
    // (batch, seq, head, unused) strides in elements.
    q_strides: vec4<u32>,
    k_strides: vec4<u32>,
    v_strides: vec4<u32>,
    out_strides: vec4<u32>,
    // The mask's strides over (batch, head, query, key); 0 on broadcast axes.
    mask_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: AttentionParams;
// The same arena as vec4s, for rows that start on 16 bytes (`p.quads`).
@group(0) @binding(2) var<storage, read_write> arena4: array<vec4<f32>>;

const WG: u32 = 64u;
// head_dim / WG accumulators per invocation: head_dim up to 256.
const DIMS_PER_THREAD: u32 = 4u;
const MAX_HEAD_DIM: u32 = 256u;
const MASK_CAUSAL: u32 = 1u;
const MASK_BIAS: u32 = 2u;
const MASK_KEY_PADDING: u32 = 3u;
// The most negative finite f32: WGSL lets implementations assume no infinities, so the kernel
// never relies on -inf arithmetic.
const NEG_MAX: f32 = -3.40282347e38;
// Whether the pipeline reads an additive bias mask (`finish_scores`). `attention_block` is built
// without it and `attention_block_bias` with it: the uniform test of the mask kind, with the
// loads it guards, cost MiniLM 32 x 128 4 of its 65 µs of attention per layer on the H200 (the
// model 3.51 -> 3.48 ms GPU in one pass without it).
override READS_BIAS: bool = true;

// Variant 0 (`attention_row`): key groups per workgroup, each of WG invocations.
const ROW_GROUPS: u32 = 4u;
const ROW_WG: u32 = 256u; // ROW_GROUPS * WG
var<workgroup> q_row: array<f32, MAX_HEAD_DIM>;
// Group g's tile at [g * WG, (g + 1) * WG).
var<workgroup> tile_score: array<f32, ROW_WG>;
var<workgroup> tile_live: array<u32, ROW_WG>;
var<workgroup> tile_p: array<f32, ROW_WG>;
// Each group's (max, sum) and output sums, for the merge.
var<workgroup> group_ml: array<vec2<f32>, ROW_GROUPS>;
var<workgroup> group_acc: array<f32, 1024>; // ROW_GROUPS * MAX_HEAD_DIM
// Both variants: the end of the keys any row of the workgroup may see.
var<workgroup> key_end: u32;

// Variant 1: query rows per workgroup, keys per tile.
const TQ: u32 = 16u;
const TK: u32 = 32u;
// head_dim is staged in chunks of CHUNK dims (CHUNK4 vec4s). A staged row takes PITCH4 vec4s:
// the spare one puts the rows that the 8 invocations of a row pair read in different banks.
const CHUNK: u32 = 64u;
const CHUNK4: u32 = 16u;
const PITCH4: u32 = 17u;
// Invocations that share a pair of query rows.
const LANES: u32 = 8u;
// vec4s per row of weights (TK / 4, plus a spare against bank conflicts).
const W_PITCH4: u32 = 9u;
// Output dims accumulated per pass.
const PASS_DIMS: u32 = 128u;

// Q: two chunks of TQ rows, chunk c in half c % 2. head_dim <= 128 is staged once; a larger one
// is restaged chunk by chunk for every key tile.
var<workgroup> tq: array<vec4<f32>, 544>; // 2 * TQ * PITCH4
// One chunk of the current key tile's K, then of its V.
var<workgroup> tkv: array<vec4<f32>, 544>; // TK * PITCH4
// The tile's weights of row r: vec4 x holds keys x, x + 8, x + 16, x + 24, the keys that
// invocation x of the row pair scores.
var<workgroup> tw: array<vec4<f32>, 144>; // TQ * W_PITCH4
// Each row's partial tile maxima, one per invocation of its pair.
var<workgroup> tmax: array<f32, 128>; // TQ * LANES
// Set once a staged value of V is not finite: from then on a weight of 0 skips its value (0 * inf
// would be NaN), as the reference ignores masked keys whatever their values.
var<workgroup> v_bad: atomic<u32>;

// exp that never sees an argument below -87 (where f32 exp underflows to denormals or an
// infinite difference); the clamped weight 1.6e-38 is negligible next to the max's weight 1.
fn safe_exp(x: f32) -> f32 {
    return exp(max(x, -87.0));
}

// The keys query `i` may see form the prefix [0, end): the past length limits the cache to
// past + seq_q keys and causality to past + i + 1. A negative past counts as 0.
fn compute_key_end(i: u32) -> u32 {
    var past = 0u;
    var end = p.seq_k;
    if (p.has_past != 0u) {
        past = min(u32(max(bitcast<i32>(arena[p.past_offset]), 0)), p.seq_k);
        end = min(past + p.seq_q, p.seq_k);
    }
    if (p.mask_kind == MASK_CAUSAL) {
        end = min(end, past + i + 1u);
    }
    return end;
}

// Whether a key-padding word is nonzero, by bits so denormals count and -0.0 does not.
fn padding_keeps(word: f32) -> bool {
    let bits = bitcast<u32>(word);
    if (p.mask_is_int != 0u) {
        return bits != 0u;
    }
    return (bits & 0x7fffffffu) != 0u;
}

// The word offset of the mask element for (b, h, i, j).
fn mask_at(b: u32, h: u32, i: u32, j: u32) -> u32 {
    let s = p.mask_strides;
    return p.mask_offset + b * s.x + h * s.y + i * s.z + j * s.w;
}

// One key's scaled score (plus bias) and whether the key takes part at all.
struct Score {
    value: f32,
    live: bool,
}

// The score of key j for query i. A bias of -inf is detected by its bits and masks the key, as
// it does in the reference softmax; other scores are clamped to finite values.
fn score(b: u32, h: u32, i: u32, j: u32, k_head: u32) -> Score {
    var bias = 0.0;
    if (p.mask_kind == MASK_KEY_PADDING && !padding_keeps(arena[mask_at(b, 0u, 0u, j)])) {
        return Score(0.0, false);
    }
    if (p.mask_kind == MASK_BIAS) {
        bias = arena[mask_at(b, h, i, j)];
        if (bitcast<u32>(bias) == 0xff800000u) {
            return Score(0.0, false);
        }
    }
    return Score(max(dot_q(k_head + j * p.k_strides.y) * p.scale + bias, NEG_MAX), true);
}

// q_row · k. Unless the driver unrolls the loop, a load consumed in its own iteration waits for
// memory every iteration; sixteen independent partial sums keep sixteen loads in flight
// regardless (1.5x faster than eight for decode, measured on an H200).
fn dot_q(k_base: u32) -> f32 {
    var s0 = vec4<f32>(0.0);
    var s1 = vec4<f32>(0.0);
    var s2 = vec4<f32>(0.0);
    var s3 = vec4<f32>(0.0);
    var d = 0u;
    for (; d + 16u <= p.head_dim; d += 16u) {
        let k = k_base + d;
        let k0 = vec4<f32>(arena[k], arena[k + 1u], arena[k + 2u], arena[k + 3u]);
        let k1 = vec4<f32>(arena[k + 4u], arena[k + 5u], arena[k + 6u], arena[k + 7u]);
        let k2 = vec4<f32>(arena[k + 8u], arena[k + 9u], arena[k + 10u], arena[k + 11u]);
        let k3 = vec4<f32>(arena[k + 12u], arena[k + 13u], arena[k + 14u], arena[k + 15u]);
        s0 += vec4<f32>(q_row[d], q_row[d + 1u], q_row[d + 2u], q_row[d + 3u]) * k0;
        s1 += vec4<f32>(q_row[d + 4u], q_row[d + 5u], q_row[d + 6u], q_row[d + 7u]) * k1;
        s2 += vec4<f32>(q_row[d + 8u], q_row[d + 9u], q_row[d + 10u], q_row[d + 11u]) * k2;
        s3 += vec4<f32>(q_row[d + 12u], q_row[d + 13u], q_row[d + 14u], q_row[d + 15u]) * k3;
    }
    var tail = 0.0;
    for (; d < p.head_dim; d++) {
        tail += q_row[d] * arena[k_base + d];
    }
    let s = (s0 + s1) + (s2 + s3);
    return ((s.x + s.y) + (s.z + s.w)) + tail;
}

// w * x for a key of weight w; masked keys (w == 0) add nothing even if their values are not
// finite, as in the reference.
fn weigh(w: f32, x: f32) -> f32 {
    return select(0.0, w * x, w != 0.0);
}

// Eight keys' weighted values at one dim: w0, w1 weigh the value rows from `d` on, `vs` apart.
fn weigh8(d: u32, vs: u32, w0: vec4<f32>, w1: vec4<f32>) -> f32 {
    let a = (weigh(w0.x, arena[d]) + weigh(w0.y, arena[d + vs]))
        + (weigh(w0.z, arena[d + 2u * vs]) + weigh(w0.w, arena[d + 3u * vs]));
    let e = (weigh(w1.x, arena[d + 4u * vs]) + weigh(w1.y, arena[d + 5u * vs]))
        + (weigh(w1.z, arena[d + 6u * vs]) + weigh(w1.w, arena[d + 7u * vs]));
    return a + e;
}

// Variant 0: one query row per workgroup of ROW_GROUPS groups of WG invocations (see the file
// comment). Group g walks the key tiles g, g + ROW_GROUPS, ... with its own running max, sum
// and accumulators; the groups' states merge at the end. Every group runs the same number of
// rounds (a group past the keys has an empty tile), so the barriers stay uniform.
@compute @workgroup_size(256)
fn attention_row(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) tid: u32,
) {
    let row = wid.x + wid.y * p.groups_x;
    if (row >= p.items) {
        return;
    }
    let g = tid / WG;
    let t = tid % WG;
    let base = g * WG;
    let i = row % p.seq_q;
    let h = (row / p.seq_q) % p.num_heads;
    let b = row / (p.seq_q * p.num_heads);
    let hk = h / p.group;

    let q_base = p.q_offset + b * p.q_strides.x + i * p.q_strides.y + h * p.q_strides.z;
    for (var d = tid; d < p.head_dim; d += ROW_WG) {
        q_row[d] = arena[q_base + d];
    }
    if (tid == 0u) {
        key_end = compute_key_end(i);
    }
    // Also the barrier that publishes q_row.
    let end = workgroupUniformLoad(&key_end);

    var m = NEG_MAX;
    var l = 0.0;
    var seen = false;
    // Dims t + c * WG (c < DIMS_PER_THREAD = 4) of the output row: a vec4 touched component
    // by component with constant indices, not an array, which a driver may leave in local memory.
    var acc = vec4<f32>(0.0);
    let dims = vec4<u32>(t) + vec4<u32>(0u, 1u, 2u, 3u) * WG;
    let in_row = dims < vec4<u32>(p.head_dim);
    let k_head = p.k_offset + b * p.k_strides.x + hk * p.k_strides.z;
    let v_head = p.v_offset + b * p.v_strides.x + hk * p.v_strides.z;
    for (var round = 0u; round < end; round += ROW_WG) {
        let kb = round + base;
        let len = select(0u, min(WG, end - kb), kb < end);

        // One key per invocation: its score and whether it is live.
        var s = Score(0.0, false);
        if (t < len) {
            s = score(b, h, i, kb + t, k_head);
        }
        tile_score[base + t] = s.value;
        tile_live[base + t] = select(0u, 1u, s.live);
        workgroupBarrier();

        // Every invocation derives the same new max from the tile.
        var tile_max = NEG_MAX;
        var tile_any = false;
        for (var u = 0u; u < len; u++) {
            if (tile_live[base + u] != 0u) {
                tile_max = max(tile_max, tile_score[base + u]);
                tile_any = true;
            }
        }
        let m_new = max(m, tile_max);
        let alpha = select(1.0, safe_exp(m - m_new), seen);
        tile_p[base + t] = select(0.0, safe_exp(s.value - m_new), s.live);
        workgroupBarrier();

        // Rescale the running sums to the new max and add this tile's weighted values.
        l *= alpha;
        acc *= alpha;
        // Eight keys at a time, to keep loads in flight as in dot_q.
        let vs = p.v_strides.y;
        var u = 0u;
        for (; u + 8u <= len; u += 8u) {
            let w0 = vec4<f32>(tile_p[base + u], tile_p[base + u + 1u], tile_p[base + u + 2u], tile_p[base + u + 3u]);
            let w1 = vec4<f32>(tile_p[base + u + 4u], tile_p[base + u + 5u], tile_p[base + u + 6u], tile_p[base + u + 7u]);
            l += ((w0.x + w0.y) + (w0.z + w0.w)) + ((w1.x + w1.y) + (w1.z + w1.w));
            let r = v_head + (kb + u) * vs;
            if (in_row.x) {
                acc.x += weigh8(r + dims.x, vs, w0, w1);
            }
            if (in_row.y) {
                acc.y += weigh8(r + dims.y, vs, w0, w1);
            }
            if (in_row.z) {
                acc.z += weigh8(r + dims.z, vs, w0, w1);
            }
            if (in_row.w) {
                acc.w += weigh8(r + dims.w, vs, w0, w1);
            }
        }
        for (; u < len; u++) {
            let w = tile_p[base + u];
            l += w;
            let r = v_head + (kb + u) * vs;
            if (in_row.x) {
                acc.x += weigh(w, arena[r + dims.x]);
            }
            if (in_row.y) {
                acc.y += weigh(w, arena[r + dims.y]);
            }
            if (in_row.z) {
                acc.z += weigh(w, arena[r + dims.z]);
            }
            if (in_row.w) {
                acc.w += weigh(w, arena[r + dims.w]);
            }
        }
        m = m_new;
        seen = seen || tile_any;
    }

    // Merge: every group parks its state, group 0 combines them. A group that saw no key has
    // l = 0 and zero sums; if no group saw one, the row writes zeros.
    if (t == 0u) {
        group_ml[g] = vec2<f32>(select(NEG_MAX, m, seen), l);
    }
    let parked = g * MAX_HEAD_DIM;
    if (in_row.x) {
        group_acc[parked + dims.x] = acc.x;
    }
    if (in_row.y) {
        group_acc[parked + dims.y] = acc.y;
    }
    if (in_row.z) {
        group_acc[parked + dims.z] = acc.z;
    }
    if (in_row.w) {
        group_acc[parked + dims.w] = acc.w;
    }
    workgroupBarrier();
    if (g != 0u) {
        return;
    }
    var m_all = NEG_MAX;
    for (var k = 0u; k < ROW_GROUPS; k++) {
        m_all = max(m_all, group_ml[k].x);
    }
    var l_all = 0.0;
    var y = vec4<f32>(0.0);
    for (var k = 0u; k < ROW_GROUPS; k++) {
        let e = safe_exp(group_ml[k].x - m_all);
        l_all += group_ml[k].y * e;
        // An unseen group's sums are exactly zero (masked keys add nothing); dims past
        // head_dim read a clamped slot and are never stored.
        let at = vec4<u32>(k * MAX_HEAD_DIM) + min(dims, vec4<u32>(MAX_HEAD_DIM - 1u));
        y += e * vec4<f32>(group_acc[at.x], group_acc[at.y], group_acc[at.z], group_acc[at.w]);
    }
    let o_base = p.out_offset + b * p.out_strides.x + i * p.out_strides.y + h * p.out_strides.z;
    let out = y * select(0.0, 1.0 / l_all, l_all > 0.0);
    if (in_row.x) {
        arena[o_base + dims.x] = out.x;
    }
    if (in_row.y) {
        arena[o_base + dims.y] = out.y;
    }
    if (in_row.z) {
        arena[o_base + dims.z] = out.z;
    }
    if (in_row.w) {
        arena[o_base + dims.w] = out.w;
    }
}

// Stores elements d .. d + 4 (those below head_dim) of the row at `base`.
fn store4(base: u32, d: u32, x: vec4<f32>) {
    if (d + 4u <= p.head_dim) {
        let a = base + d;
        arena[a] = x.x;
        arena[a + 1u] = x.y;
        arena[a + 2u] = x.z;
        arena[a + 3u] = x.w;
        return;
    }
    for (var k = 0u; k < 4u; k++) {
        if (d + k < p.head_dim) {
            arena[base + d + k] = x[k];
        }
    }
}

// Elements d .. d + 4 of the row at `base` where `ok` and below head_dim, else zero. The loads
// are issued unconditionally, so that a staging loop's loads are all in flight at once. Callers
// point rows past their range at the last row in range; past head_dim, a discarded load may lie
// past the tensor, even past the binding (the kernels run without wgpu's bounds checks), so the
// indices are clamped to the binding's last word; those of kept values lie inside the tensor.
fn load4_or_zero(base: u32, d: u32, ok: bool) -> vec4<f32> {
    let at = min(vec4<u32>(base + d) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(arrayLength(&arena) - 1u));
    let x = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
    let inside = vec4<u32>(d) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.head_dim);
    return select(vec4<f32>(0.0), x, inside & vec4<bool>(ok));
}

// Whether any of four values is not finite (judged by their bits).
fn non_finite(x: vec4<f32>) -> bool {
    return any((bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u));
}

// Dims d .. d + 4 of row `r` of the `count` rows from `first` (stride apart), zero past them.
fn row_at(head: u32, stride: u32, first: u32, count: u32, r: u32, d: u32) -> vec4<f32> {
    return load4_or_zero(head + (first + min(r, count - 1u)) * stride, d, r < count);
}

// Stages chunk c of the `rows` query rows from i0 into half c % 2 of tq (zeros past them).
// Invocation t stages dims 4 (t % 16) .. + 4 of rows t / 16 + 4 n (n < 4), sixteen
// invocations per row so the loads coalesce. The loads are named values, not an array (which a
// driver may leave in local memory), all issued before the stores.
fn stage_q(q_head: u32, i0: u32, rows: u32, c: u32, t: u32) {
    let at = ((c % 2u) * TQ + t / CHUNK4) * PITCH4 + t % CHUNK4;
    let r = t / CHUNK4;
    let d = c * CHUNK + 4u * (t % CHUNK4);
    let s = p.q_strides.y;
    let x0 = row_at(q_head, s, i0, rows, r, d);
    let x1 = row_at(q_head, s, i0, rows, r + 4u, d);
    let x2 = row_at(q_head, s, i0, rows, r + 8u, d);
    let x3 = row_at(q_head, s, i0, rows, r + 12u, d);
    tq[at] = x0;
    tq[at + 4u * PITCH4] = x1;
    tq[at + 8u * PITCH4] = x2;
    tq[at + 12u * PITCH4] = x3;
}

// Stages chunk c of the `len` key rows from kb (K or V) into tkv (zeros past them), laid out
// as stage_q's. Returns whether a staged value is not finite.
fn stage_kv(head: u32, stride: u32, kb: u32, len: u32, c: u32, t: u32) -> bool {
    let at = (t / CHUNK4) * PITCH4 + t % CHUNK4;
    let r = t / CHUNK4;
    let d = c * CHUNK + 4u * (t % CHUNK4);
    let x0 = row_at(head, stride, kb, len, r, d);
    let x1 = row_at(head, stride, kb, len, r + 4u, d);
    let x2 = row_at(head, stride, kb, len, r + 8u, d);
    let x3 = row_at(head, stride, kb, len, r + 12u, d);
    let x4 = row_at(head, stride, kb, len, r + 16u, d);
    let x5 = row_at(head, stride, kb, len, r + 20u, d);
    let x6 = row_at(head, stride, kb, len, r + 24u, d);
    let x7 = row_at(head, stride, kb, len, r + 28u, d);
    tkv[at] = x0;
    tkv[at + 4u * PITCH4] = x1;
    tkv[at + 8u * PITCH4] = x2;
    tkv[at + 12u * PITCH4] = x3;
    tkv[at + 16u * PITCH4] = x4;
    tkv[at + 20u * PITCH4] = x5;
    tkv[at + 24u * PITCH4] = x6;
    tkv[at + 28u * PITCH4] = x7;
    return ((non_finite(x0) || non_finite(x1)) || (non_finite(x2) || non_finite(x3)))
        || ((non_finite(x4) || non_finite(x5)) || (non_finite(x6) || non_finite(x7)));
}

// Two rows' values for four keys.
struct Pair {
    a: vec4<f32>,
    b: vec4<f32>,
}

// q · k over staged chunk c for rows ra, ra + 1 and keys lane + 8 j of the tile.
fn score_chunk(c: u32, ra: u32, lane: u32) -> Pair {
    let n4 = min(CHUNK4, (p.head_dim - c * CHUNK + 3u) / 4u);
    let qa = ((c % 2u) * TQ + ra) * PITCH4;
    let qb = qa + PITCH4;
    let k0 = lane * PITCH4;
    var sa = vec4<f32>(0.0);
    var sb = vec4<f32>(0.0);
    for (var d4 = 0u; d4 < n4; d4++) {
        let x = tq[qa + d4];
        let y = tq[qb + d4];
        let k_0 = tkv[k0 + d4];
        let k_1 = tkv[k0 + 8u * PITCH4 + d4];
        let k_2 = tkv[k0 + 16u * PITCH4 + d4];
        let k_3 = tkv[k0 + 24u * PITCH4 + d4];
        sa += vec4<f32>(dot(x, k_0), dot(x, k_1), dot(x, k_2), dot(x, k_3));
        sb += vec4<f32>(dot(y, k_0), dot(y, k_1), dot(y, k_2), dot(y, k_3));
    }
    return Pair(sa, sb);
}

// Four keys' scaled scores (plus bias) and which take part.
struct Scores {
    value: vec4<f32>,
    live: vec4<bool>,
}

// The scores of query i (whose keys end at `end`) for keys j0 + step * j from their q · k times
// `scale`; `kept` is the key-padding verdict. As in variant 0, a bias of -inf (by its bits)
// masks the key and other scores are clamped to finite values. The mask kind is tested once,
// not per key: per key it left a branch around a load at each of the 16 scores of an
// `attention_block` tile (in NVIDIA's disassembly), 77.5 -> 75 µs per MiniLM layer on the H200.
fn finish_scores(qk: vec4<f32>, scale: f32, b: u32, h: u32, i: u32, end: u32, j0: u32, step: u32, kept: vec4<bool>) -> Scores {
    let js = vec4<u32>(j0) + vec4<u32>(0u, 1u, 2u, 3u) * step;
    var live = (js < vec4<u32>(end)) & kept;
    var bias = vec4<f32>(0.0);
    if (READS_BIAS && p.mask_kind == MASK_BIAS) {
        for (var jj = 0u; jj < 4u; jj++) {
            if (live[jj]) {
                bias[jj] = arena[mask_at(b, h, i, js[jj])];
                live[jj] = bitcast<u32>(bias[jj]) != 0xff800000u;
            }
        }
    }
    return Scores(max(qk * scale + select(vec4<f32>(0.0), bias, live), vec4<f32>(NEG_MAX)), live);
}

// The largest live score of four (NEG_MAX if none is live).
fn live_max(s: Scores) -> f32 {
    let v = select(vec4<f32>(NEG_MAX), s.value, s.live);
    return max(max(v.x, v.y), max(v.z, v.w));
}

fn safe_exp4(x: vec4<f32>) -> vec4<f32> {
    return exp(max(x, vec4<f32>(-87.0)));
}

// Output accumulators of one 64-dim chunk: rows a and b, dims 4 lane .. + 4 (0) and
// 4 lane + 32 .. + 4 (1).
struct Acc {
    a0: vec4<f32>,
    a1: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
}

fn zero_acc() -> Acc {
    return Acc(vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0), vec4<f32>(0.0));
}

// w * x for a key of weight w; masked keys (w == 0) add nothing even if their values are not
// finite.
fn weigh4(w: f32, x: vec4<f32>) -> vec4<f32> {
    return select(vec4<f32>(0.0), w * x, w != 0.0);
}

// The accumulators after a tile, and the sums of the rows' weights in it.
struct Folded {
    acc: Acc,
    weights: vec2<f32>,
}

// Rescales by the rows' alpha, then adds the tile's weighted V chunk (staged in tkv). Without
// `upper` (head_dim ends within the chunk's first 32 dims, e.g. MiniLM's 32) the fast path
// skips the dims 32..64, all zero (the careful path, for non-finite values, does not).
fn accumulate(
    acc_in: Acc,
    alpha: vec2<f32>,
    ra: u32,
    lane: u32,
    careful: bool,
    upper: bool,
) -> Folded {
    var acc = Acc(acc_in.a0 * alpha.x, acc_in.a1 * alpha.x, acc_in.b0 * alpha.y, acc_in.b1 * alpha.y);
    let wa0 = ra * W_PITCH4;
    let wb0 = wa0 + W_PITCH4;
    var wsa = vec4<f32>(0.0);
    var wsb = vec4<f32>(0.0);
    if (careful) {
        for (var x = 0u; x < LANES; x++) {
            let wa = tw[wa0 + x];
            let wb = tw[wb0 + x];
            wsa += wa;
            wsb += wb;
            for (var jj = 0u; jj < 4u; jj++) {
                let r = (x + 8u * jj) * PITCH4 + lane;
                let v0 = tkv[r];
                let v1 = tkv[r + 8u];
                acc.a0 += weigh4(wa[jj], v0);
                acc.a1 += weigh4(wa[jj], v1);
                acc.b0 += weigh4(wb[jj], v0);
                acc.b1 += weigh4(wb[jj], v1);
            }
        }
    } else {
        for (var x = 0u; x < LANES; x++) {
            let wa = tw[wa0 + x];
            let wb = tw[wb0 + x];
            wsa += wa;
            wsb += wb;
            if (upper) {
                for (var jj = 0u; jj < 4u; jj++) {
                    let r = (x + 8u * jj) * PITCH4 + lane;
                    let v0 = tkv[r];
                    let v1 = tkv[r + 8u];
                    acc.a0 = fma(vec4<f32>(wa[jj]), v0, acc.a0);
                    acc.a1 = fma(vec4<f32>(wa[jj]), v1, acc.a1);
                    acc.b0 = fma(vec4<f32>(wb[jj]), v0, acc.b0);
                    acc.b1 = fma(vec4<f32>(wb[jj]), v1, acc.b1);
                }
            } else {
                for (var jj = 0u; jj < 4u; jj++) {
                    let v0 = tkv[(x + 8u * jj) * PITCH4 + lane];
                    acc.a0 = fma(vec4<f32>(wa[jj]), v0, acc.a0);
                    acc.b0 = fma(vec4<f32>(wb[jj]), v0, acc.b0);
                }
            }
        }
    }
    let sums = vec2<f32>((wsa.x + wsa.y) + (wsa.z + wsa.w), (wsb.x + wsb.y) + (wsb.z + wsb.w));
    return Folded(acc, sums);
}

// Writes chunk c of rows ra and ra + 1 (those below `rows`), scaled by the rows' 1 / l.
fn write_chunk(o_head: u32, i0: u32, rows: u32, ra: u32, lane: u32, c: u32, acc: Acc, inv: vec2<f32>) {
    let d = c * CHUNK + 4u * lane;
    if (ra < rows) {
        let base = o_head + (i0 + ra) * p.out_strides.y;
        store4(base, d, acc.a0 * inv.x);
        store4(base, d + 32u, acc.a1 * inv.x);
    }
    if (ra + 1u < rows) {
        let base = o_head + (i0 + ra + 1u) * p.out_strides.y;
        store4(base, d, acc.b0 * inv.y);
        store4(base, d + 32u, acc.b1 * inv.y);
    }
}

// Variant 1: TQ query rows of one (batch, head) per workgroup (see the file comment).
fn attention_tiled(item: u32, t: u32) {
    let qt = item % p.q_tiles;
    let bh = item / p.q_tiles;
    let h = bh % p.num_heads;
    let b = bh / p.num_heads;
    let hk = h / p.group;
    let i0 = qt * TQ;
    let rows = min(TQ, p.seq_q - i0);
    let q_head = p.q_offset + b * p.q_strides.x + h * p.q_strides.z;
    let k_head = p.k_offset + b * p.k_strides.x + hk * p.k_strides.z;
    let v_head = p.v_offset + b * p.v_strides.x + hk * p.v_strides.z;
    let o_head = p.out_offset + b * p.out_strides.x + h * p.out_strides.z;
    let chunks = (p.head_dim + CHUNK - 1u) / CHUNK;
    let q_resident = chunks <= 2u;
    if (q_resident) {
        for (var c = 0u; c < chunks; c++) {
            stage_q(q_head, i0, rows, c, t);
        }
    }
    if (t == 0u) {
        // Key ends grow with the query index: the last row's bounds every row's.
        key_end = compute_key_end(i0 + rows - 1u);
        atomicStore(&v_bad, 0u);
    }
    // Also the barrier that publishes Q.
    let kv_end = workgroupUniformLoad(&key_end);

    let lane = t % LANES;
    let ra = 2u * (t / LANES);
    let rb = ra + 1u;
    // Rows past seq_q (in the last query tile) see no key.
    let end_a = select(0u, compute_key_end(i0 + ra), ra < rows);
    let end_b = select(0u, compute_key_end(i0 + rb), rb < rows);

    let passes = (p.head_dim + PASS_DIMS - 1u) / PASS_DIMS;
    for (var pass_ = 0u; pass_ < passes; pass_++) {
        // This pass accumulates V chunks c0 and (if `two`) c0 + 1.
        let c0 = 2u * pass_;
        let two = c0 + 1u < chunks;
        // Whether each accumulated chunk has dims in its upper half (see `accumulate`).
        let upper0 = c0 * CHUNK + CHUNK / 2u < p.head_dim;
        let upper1 = (c0 + 1u) * CHUNK + CHUNK / 2u < p.head_dim;
        // Running max and weight sum of rows a and b.
        var m = vec2<f32>(NEG_MAX);
        var l = vec2<f32>(0.0);
        var acc0 = zero_acc();
        var acc1 = zero_acc();
        for (var kb = 0u; kb < kv_end; kb += TK) {
            let len = min(TK, kv_end - kb);

            // Scores of rows a, b for keys kb + lane + 8 j, chunk by chunk of head_dim.
            var qk = Pair(vec4<f32>(0.0), vec4<f32>(0.0));
            for (var c = 0u; c < chunks; c++) {
                if (!q_resident) {
                    stage_q(q_head, i0, rows, c, t);
                }
                stage_kv(k_head, p.k_strides.y, kb, len, c, t);
                workgroupBarrier();
                let s = score_chunk(c, ra, lane);
                qk.a += s.a;
                qk.b += s.b;
                if (c + 1u < chunks) {
                    workgroupBarrier();
                }
            }
            let j0 = kb + lane;
            var kept = vec4<bool>(true);
            if (p.mask_kind == MASK_KEY_PADDING) {
                for (var jj = 0u; jj < 4u; jj++) {
                    let j = j0 + 8u * jj;
                    kept[jj] = j < kv_end && padding_keeps(arena[mask_at(b, 0u, 0u, j)]);
                }
            }
            let sa = finish_scores(qk.a, p.scale, b, h, i0 + ra, end_a, j0, 8u, kept);
            let sb = finish_scores(qk.b, p.scale, b, h, i0 + rb, end_b, j0, 8u, kept);
            tmax[ra * LANES + lane] = live_max(sa);
            tmax[rb * LANES + lane] = live_max(sb);
            // Also the barrier after which tkv may take V.
            workgroupBarrier();

            // Every invocation of a row pair derives the same new maxima.
            var m_new = m;
            for (var u = 0u; u < LANES; u++) {
                m_new = max(m_new, vec2<f32>(tmax[ra * LANES + u], tmax[rb * LANES + u]));
            }
            let alpha = exp(max(m - m_new, vec2<f32>(-87.0)));
            m = m_new;
            let wa = select(vec4<f32>(0.0), safe_exp4(sa.value - vec4<f32>(m_new.x)), sa.live);
            let wb = select(vec4<f32>(0.0), safe_exp4(sb.value - vec4<f32>(m_new.y)), sb.live);
            tw[ra * W_PITCH4 + lane] = wa;
            tw[rb * W_PITCH4 + lane] = wb;
            if (stage_kv(v_head, p.v_strides.y, kb, len, c0, t)) {
                atomicOr(&v_bad, 1u);
            }
            workgroupBarrier();

            // The rows' sums take the whole tile's weights (read by every invocation of a pair).
            let f0 = accumulate(acc0, alpha, ra, lane, atomicLoad(&v_bad) != 0u, upper0);
            acc0 = f0.acc;
            l = l * alpha + f0.weights;
            if (two) {
                workgroupBarrier();
                if (stage_kv(v_head, p.v_strides.y, kb, len, c0 + 1u, t)) {
                    atomicOr(&v_bad, 1u);
                }
                workgroupBarrier();
                acc1 = accumulate(acc1, alpha, ra, lane, atomicLoad(&v_bad) != 0u, upper1).acc;
            }
            // Before the next tile overwrites tkv, tw and tmax.
            workgroupBarrier();
        }

        // A row that saw no key writes zeros (l is about 1 or more otherwise: the max key
        // weighs exp(0)).
        let inv = select(vec2<f32>(0.0), 1.0 / max(l, vec2<f32>(1e-30)), l > vec2<f32>(0.0));
        write_chunk(o_head, i0, rows, ra, lane, c0, acc0, inv);
        if (two) {
            write_chunk(o_head, i0, rows, ra, lane, c0 + 1u, acc1, inv);
        }
    }
}

@compute @workgroup_size(64)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let item = wid.x + wid.y * p.groups_x;
    if (item >= p.items) {
        return;
    }
    attention_tiled(item, t);
}

// ---------------------------------------------------------------------------------------------
// `attention_block` (variant 2): the scores and the weighted values as two small matmuls per
// tile of keys (many query rows, head_dim <= 32).
//
// A workgroup of 128 invocations takes BQ = 64 consecutive query rows of one (batch, head);
// keys come in tiles of BK = 32. The queries are staged once, transposed and pre-scaled
// (Q^T, [dim][row]); each tile stages K^T ([dim][key]) and V ([key][dim]). Invocation t owns
// rows 4 (t / 8) .. + 4 in both halves of a tile's work:
// - scores: keys 4 (t % 8) .. + 4, so each dim reads one vec4 of Q^T and one of K^T for 16
//   fmas (an earlier variant with two query rows per invocation read one staged vec4 per 8
//   fmas and was bound by that walk: MiniLM 32 x 128 took 97-99 µs per layer against this
//   one's 77-78 on an H200);
// - after the eight invocations of a row group have traded their partial tile maxima through
//   workgroup memory, each raises its rows' running max (all eight identically), rescales, and
//   writes its weights exp(s - m) into P^T ([key][row], over the spent K^T);
// - values: dims 4 (t % 8) .. + 4, each key reading one vec4 of P^T and one of V for 16 fmas.
// A row's sum of weights stays split among its eight invocations (each the sum over its own
// keys, rescaled alike) until the end. Four barriers per tile, no scores stored beyond one
// tile. Masks, the past length and non-finite values follow the other variants (a key of
// weight 0 adds nothing: values of a tile with a non-finite one are weighed one by one).

const BQ: u32 = 64u;
const BK: u32 = 32u;
// vec4s per dim of Q^T and per key of P^T (BQ / 4); per dim of K^T (BK / 4); per key of V.
const BQ4: u32 = 16u;
const BK4: u32 = 8u;
const BD4: u32 = 8u;

// Q^T of the workgroup's rows, pre-scaled, zero past head_dim: [dim * BQ4 + row / 4][row % 4].
var<workgroup> bq: array<vec4<f32>, 512>; // 32 * BQ4
// The tile's K^T, [dim * BK4 + key / 4][key % 4] (the first 256), then its weights P^T,
// [key * BQ4 + (row / 4 ^ key / 4 % 8)][row % 4] (the swizzle spreads the eight invocations of
// a row group, which store different keys of the same rows, over the banks).
var<workgroup> bkp: array<vec4<f32>, 512>;
// The tile's V, [key * BD4 + dim / 4], zero past head_dim and past the tile's keys.
var<workgroup> bv: array<vec4<f32>, 256>; // BK * BD4
// Per row, the eight partial maxima (then sums) of its invocations: [row * 2 + g / 4][g % 4].
var<workgroup> bpart: array<vec4<f32>, 128>; // BQ * 2
// Whether key u of the tile is visible at all (below the tile's key end, not padded).
var<workgroup> blive: array<u32, 32>; // BK

// Four rows' values of one kind (scores, weights, accumulators).
struct Rows4 {
    r0: vec4<f32>,
    r1: vec4<f32>,
    r2: vec4<f32>,
    r3: vec4<f32>,
}

// `load4_or_zero` for `attention_block`, d a multiple of 4: with `p.quads` one 16-byte load
// instead of four scalar ones, each of which touched 32 rows of a warp (MiniLM 32 x 128 on the
// H200: 75 -> 65 µs per layer). The other variants keep the scalar loads: the tiled one took
// twice as long with this branch in its staging.
fn block_load4(base: u32, d: u32, ok: bool) -> vec4<f32> {
    if (p.quads != 0u) {
        // A quad lies wholly below head_dim or wholly past it (clamped like the scalar loads).
        let x = arena4[min((base + d) / 4u, arrayLength(&arena4) - 1u)];
        return select(vec4<f32>(0.0), x, d < p.head_dim && ok);
    }
    return load4_or_zero(base, d, ok);
}

// `row_at` through `block_load4`.
fn block_row_at(head: u32, stride: u32, first: u32, count: u32, r: u32, d: u32) -> vec4<f32> {
    return block_load4(head + (first + min(r, count - 1u)) * stride, d, r < count);
}

// `store4` for `attention_block`, a 16-byte store with `p.quads`.
fn block_store4(base: u32, d: u32, x: vec4<f32>) {
    if (p.quads != 0u) {
        if (d < p.head_dim) {
            arena4[(base + d) / 4u] = x;
        }
        return;
    }
    store4(base, d, x);
}

// Stages Q^T: invocation t loads dims 16 (t / 64) .. + 16 of row t % 64 (rows past `rows`
// read the last one; they are never stored) and stores them transposed, a warp's 32 rows
// side by side.
fn stage_block_q(q_head: u32, i0: u32, rows: u32, t: u32) {
    let r = t % BQ;
    let d0 = (t / BQ) * 16u;
    let base = q_head + (i0 + min(r, rows - 1u)) * p.q_strides.y;
    for (var c = 0u; c < 4u; c++) {
        let x = block_load4(base, d0 + 4u * c, true) * p.scale;
        for (var e = 0u; e < 4u; e++) {
            bq[(d0 + 4u * c + e) * BQ4 + r / 4u][r % 4u] = x[e];
        }
    }
}

// Stages the tile's keys [kb, kb + len): K^T (invocation t: dims 8 (t / 32) .. + 8 of key
// t % 32, a warp's keys side by side) and V (dims 8 (t % 4) .. + 8 of key t / 4). Returns
// whether a staged value of V is not finite.
fn stage_block_kv(k_head: u32, v_head: u32, kb: u32, len: u32, t: u32) -> bool {
    let u = t % BK;
    let d0 = (t / BK) * 8u;
    let k0 = block_row_at(k_head, p.k_strides.y, kb, len, u, d0);
    let k1 = block_row_at(k_head, p.k_strides.y, kb, len, u, d0 + 4u);
    let uv = t / 4u;
    let dv = (t % 4u) * 8u;
    let v0 = block_row_at(v_head, p.v_strides.y, kb, len, uv, dv);
    let v1 = block_row_at(v_head, p.v_strides.y, kb, len, uv, dv + 4u);
    for (var e = 0u; e < 4u; e++) {
        bkp[(d0 + e) * BK4 + u / 4u][u % 4u] = k0[e];
        bkp[(d0 + 4u + e) * BK4 + u / 4u][u % 4u] = k1[e];
    }
    bv[uv * BD4 + dv / 4u] = v0;
    bv[uv * BD4 + dv / 4u + 1u] = v1;
    return non_finite(v0) || non_finite(v1);
}

// Trades each row's per-invocation partials `x` (of rows 4 rg .. + 4, invocation g of the row
// group) through `bpart`: the caller passes the barrier between `post_parts` and `row_parts`.
fn post_parts(rg: u32, g: u32, x: vec4<f32>) {
    for (var r = 0u; r < 4u; r++) {
        bpart[(4u * rg + r) * 2u + g / 4u][g % 4u] = x[r];
    }
}

// The eight partials of row `row`, as two vec4s.
fn row_parts(row: u32) -> array<vec4<f32>, 2> {
    return array<vec4<f32>, 2>(bpart[row * 2u], bpart[row * 2u + 1u]);
}

fn max8(x: array<vec4<f32>, 2>) -> f32 {
    let m = max(x[0], x[1]);
    return max(max(m.x, m.y), max(m.z, m.w));
}

fn sum8(x: array<vec4<f32>, 2>) -> f32 {
    let s = x[0] + x[1];
    return (s.x + s.y) + (s.z + s.w);
}

@compute @workgroup_size(128)
fn attention_block(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let item = wid.x + wid.y * p.groups_x;
    if (item >= p.items) {
        return;
    }
    let qt = item % p.q_tiles;
    let bh = item / p.q_tiles;
    let h = bh % p.num_heads;
    let b = bh / p.num_heads;
    let hk = h / p.group;
    let i0 = qt * BQ;
    let rows = min(BQ, p.seq_q - i0);
    let k_head = p.k_offset + b * p.k_strides.x + hk * p.k_strides.z;
    let v_head = p.v_offset + b * p.v_strides.x + hk * p.v_strides.z;
    let q_head = p.q_offset + b * p.q_strides.x + h * p.q_strides.z;
    // Row group (rows 4 rg .. + 4 of the block) and the invocation's place in it: keys
    // 4 g .. + 4 of a tile for the scores, dims 4 g .. + 4 for the values.
    let rg = t / 8u;
    let g = t % 8u;

    stage_block_q(q_head, i0, rows, t);
    if (t == 0u) {
        // Key ends grow with the query index: the last row's bounds every row's.
        key_end = compute_key_end(i0 + rows - 1u);
        atomicStore(&v_bad, 0u);
    }
    let kv_end = workgroupUniformLoad(&key_end);
    var ends = vec4<u32>();
    for (var r = 0u; r < 4u; r++) {
        ends[r] = select(0u, compute_key_end(i0 + 4u * rg + r), 4u * rg + r < rows);
    }

    var m = vec4<f32>(NEG_MAX);
    // This invocation's share of each row's sum of weights.
    var l = vec4<f32>(0.0);
    var acc = Rows4(vec4<f32>(), vec4<f32>(), vec4<f32>(), vec4<f32>());
    for (var kb = 0u; kb < kv_end; kb += BK) {
        let len = min(BK, kv_end - kb);
        if (t < BK) {
            var live = t < len;
            if (live && p.mask_kind == MASK_KEY_PADDING) {
                live = padding_keeps(arena[mask_at(b, 0u, 0u, kb + t)]);
            }
            blive[t] = select(0u, 1u, live);
        }
        if (stage_block_kv(k_head, v_head, kb, len, t)) {
            atomicOr(&v_bad, 1u);
        }
        workgroupBarrier();

        // Scores of rows 4 rg .. + 4 (one vec4 of keys each) against keys 4 g .. + 4.
        var s = Rows4(vec4<f32>(), vec4<f32>(), vec4<f32>(), vec4<f32>());
        for (var d = 0u; d < 32u; d++) {
            let q = bq[d * BQ4 + rg];
            let k = bkp[d * BK4 + g];
            s.r0 = fma(vec4<f32>(q.x), k, s.r0);
            s.r1 = fma(vec4<f32>(q.y), k, s.r1);
            s.r2 = fma(vec4<f32>(q.z), k, s.r2);
            s.r3 = fma(vec4<f32>(q.w), k, s.r3);
        }
        let u = 4u * g;
        let kept = vec4<bool>(blive[u] != 0u, blive[u + 1u] != 0u, blive[u + 2u] != 0u, blive[u + 3u] != 0u);
        let j0 = kb + u;
        let i = i0 + 4u * rg;
        // The scale is in the staged queries already.
        let s0 = finish_scores(s.r0, 1.0, b, h, i, ends.x, j0, 1u, kept);
        let s1 = finish_scores(s.r1, 1.0, b, h, i + 1u, ends.y, j0, 1u, kept);
        let s2 = finish_scores(s.r2, 1.0, b, h, i + 2u, ends.z, j0, 1u, kept);
        let s3 = finish_scores(s.r3, 1.0, b, h, i + 3u, ends.w, j0, 1u, kept);
        post_parts(rg, g, vec4<f32>(live_max(s0), live_max(s1), live_max(s2), live_max(s3)));
        workgroupBarrier();

        let tile_max = vec4<f32>(
            max8(row_parts(4u * rg)),
            max8(row_parts(4u * rg + 1u)),
            max8(row_parts(4u * rg + 2u)),
            max8(row_parts(4u * rg + 3u)),
        );
        let m_new = max(m, tile_max);
        let alpha = select(vec4<f32>(1.0), safe_exp4(m - m_new), tile_max > m);
        m = m_new;
        let w = Rows4(
            select(vec4<f32>(0.0), safe_exp4(s0.value - vec4<f32>(m.x)), s0.live),
            select(vec4<f32>(0.0), safe_exp4(s1.value - vec4<f32>(m.y)), s1.live),
            select(vec4<f32>(0.0), safe_exp4(s2.value - vec4<f32>(m.z)), s2.live),
            select(vec4<f32>(0.0), safe_exp4(s3.value - vec4<f32>(m.w)), s3.live),
        );
        let sums = vec4<f32>(
            (w.r0.x + w.r0.y) + (w.r0.z + w.r0.w),
            (w.r1.x + w.r1.y) + (w.r1.z + w.r1.w),
            (w.r2.x + w.r2.y) + (w.r2.z + w.r2.w),
            (w.r3.x + w.r3.y) + (w.r3.z + w.r3.w),
        );
        l = l * alpha + sums;
        // P^T over the spent K^T: key u + c of the tile, rows 4 rg .. + 4.
        let sw = rg ^ g;
        bkp[u * BQ4 + sw] = vec4<f32>(w.r0.x, w.r1.x, w.r2.x, w.r3.x);
        bkp[(u + 1u) * BQ4 + sw] = vec4<f32>(w.r0.y, w.r1.y, w.r2.y, w.r3.y);
        bkp[(u + 2u) * BQ4 + sw] = vec4<f32>(w.r0.z, w.r1.z, w.r2.z, w.r3.z);
        bkp[(u + 3u) * BQ4 + sw] = vec4<f32>(w.r0.w, w.r1.w, w.r2.w, w.r3.w);
        acc = Rows4(acc.r0 * alpha.x, acc.r1 * alpha.y, acc.r2 * alpha.z, acc.r3 * alpha.w);
        workgroupBarrier();

        // Values: rows 4 rg .. + 4, dims 4 g .. + 4, every key of the tile (those past it
        // weigh 0 and their staged values are 0).
        if (atomicLoad(&v_bad) == 0u) {
            for (var k = 0u; k < BK; k++) {
                let pw = bkp[k * BQ4 + (rg ^ (k / 4u))];
                let v = bv[k * BD4 + g];
                acc.r0 = fma(vec4<f32>(pw.x), v, acc.r0);
                acc.r1 = fma(vec4<f32>(pw.y), v, acc.r1);
                acc.r2 = fma(vec4<f32>(pw.z), v, acc.r2);
                acc.r3 = fma(vec4<f32>(pw.w), v, acc.r3);
            }
        } else {
            for (var k = 0u; k < BK; k++) {
                let pw = bkp[k * BQ4 + (rg ^ (k / 4u))];
                let v = bv[k * BD4 + g];
                acc.r0 += weigh4(pw.x, v);
                acc.r1 += weigh4(pw.y, v);
                acc.r2 += weigh4(pw.z, v);
                acc.r3 += weigh4(pw.w, v);
            }
        }
        // Before the next tile overwrites the staged keys, values and weights.
        workgroupBarrier();
    }

    // Each row's sum of weights from its eight shares, then rows 4 rg .. + 4, dims 4 g .. + 4.
    post_parts(rg, g, l);
    workgroupBarrier();
    let o_head = p.out_offset + b * p.out_strides.x + h * p.out_strides.z;
    store_block_row(o_head, i0, rows, 4u * rg, g, acc.r0);
    store_block_row(o_head, i0, rows, 4u * rg + 1u, g, acc.r1);
    store_block_row(o_head, i0, rows, 4u * rg + 2u, g, acc.r2);
    store_block_row(o_head, i0, rows, 4u * rg + 3u, g, acc.r3);
}

// Stores dims 4 g .. + 4 of block row `row` (if below `rows`): `x` over the row's sum of
// weights, posted in `bpart`. A row that saw no key writes zeros (the sum is at least 1
// otherwise: its max key weighs 1).
fn store_block_row(o_head: u32, i0: u32, rows: u32, row: u32, g: u32, x: vec4<f32>) {
    let total = sum8(row_parts(row));
    if (row < rows) {
        block_store4(o_head + (i0 + row) * p.out_strides.y, 4u * g, x * select(0.0, 1.0 / total, total > 0.0));
    }
}
