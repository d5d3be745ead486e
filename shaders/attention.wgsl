// Fused scaled-dot-product attention with a streaming (online) softmax.
//
// One workgroup of 64 invocations computes one query row (batch b, head h, query i). The query
// row is staged in workgroup memory; keys are visited in tiles of 64, one key per invocation for
// the score, then every invocation folds the whole tile into its share of head_dim (dims t,
// t + 64, ...). The running max `m` and sum `l` are kept identically by every invocation, so no
// score matrix is ever stored and any key length works.
//
// Operands are addressed by element offsets into the arena and by (batch, seq, head) strides in
// elements (head_dim is contiguous), which covers BSHD, BHSD and views into a packed QKV tensor.
// Grids larger than 65535 workgroups are folded into y.

struct AttentionParams {
    rows: u32,
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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
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

var<workgroup> q_row: array<f32, MAX_HEAD_DIM>;
var<workgroup> tile_score: array<f32, WG>;
var<workgroup> tile_live: array<u32, WG>;
var<workgroup> tile_p: array<f32, WG>;
var<workgroup> key_end: u32;

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

@compute @workgroup_size(64)
fn attention(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let row = wid.x + wid.y * p.groups_x;
    if (row >= p.rows) {
        return;
    }
    let i = row % p.seq_q;
    let h = (row / p.seq_q) % p.num_heads;
    let b = row / (p.seq_q * p.num_heads);
    let hk = h / p.group;

    let q_base = p.q_offset + b * p.q_strides.x + i * p.q_strides.y + h * p.q_strides.z;
    for (var d = t; d < p.head_dim; d += WG) {
        q_row[d] = arena[q_base + d];
    }
    if (t == 0u) {
        key_end = compute_key_end(i);
    }
    // Also the barrier that publishes q_row.
    let end = workgroupUniformLoad(&key_end);

    var m = NEG_MAX;
    var l = 0.0;
    var seen = false;
    var acc: array<f32, DIMS_PER_THREAD>;
    let k_head = p.k_offset + b * p.k_strides.x + hk * p.k_strides.z;
    let v_head = p.v_offset + b * p.v_strides.x + hk * p.v_strides.z;
    for (var kb = 0u; kb < end; kb += WG) {
        let len = min(WG, end - kb);

        // One key per invocation: its score and whether it is live.
        var s = Score(0.0, false);
        if (t < len) {
            s = score(b, h, i, kb + t, k_head);
        }
        tile_score[t] = s.value;
        tile_live[t] = select(0u, 1u, s.live);
        workgroupBarrier();

        // Every invocation derives the same new max from the tile.
        var tile_max = NEG_MAX;
        var tile_any = false;
        for (var u = 0u; u < len; u++) {
            if (tile_live[u] != 0u) {
                tile_max = max(tile_max, tile_score[u]);
                tile_any = true;
            }
        }
        let m_new = max(m, tile_max);
        let alpha = select(1.0, safe_exp(m - m_new), seen);
        tile_p[t] = select(0.0, safe_exp(s.value - m_new), s.live);
        workgroupBarrier();

        // Rescale the running sums to the new max and add this tile's weighted values.
        l *= alpha;
        for (var c = 0u; c < DIMS_PER_THREAD; c++) {
            acc[c] *= alpha;
        }
        // Eight keys at a time, to keep loads in flight as in dot_q.
        let vs = p.v_strides.y;
        var u = 0u;
        for (; u + 8u <= len; u += 8u) {
            let w0 = vec4<f32>(tile_p[u], tile_p[u + 1u], tile_p[u + 2u], tile_p[u + 3u]);
            let w1 = vec4<f32>(tile_p[u + 4u], tile_p[u + 5u], tile_p[u + 6u], tile_p[u + 7u]);
            l += ((w0.x + w0.y) + (w0.z + w0.w)) + ((w1.x + w1.y) + (w1.z + w1.w));
            let r = v_head + (kb + u) * vs;
            for (var c = 0u; c < DIMS_PER_THREAD; c++) {
                let d = r + t + c * WG;
                if (t + c * WG < p.head_dim) {
                    let a = (weigh(w0.x, arena[d]) + weigh(w0.y, arena[d + vs]))
                        + (weigh(w0.z, arena[d + 2u * vs]) + weigh(w0.w, arena[d + 3u * vs]));
                    let e = (weigh(w1.x, arena[d + 4u * vs]) + weigh(w1.y, arena[d + 5u * vs]))
                        + (weigh(w1.z, arena[d + 6u * vs]) + weigh(w1.w, arena[d + 7u * vs]));
                    acc[c] += a + e;
                }
            }
        }
        for (; u < len; u++) {
            let w = tile_p[u];
            l += w;
            let r = v_head + (kb + u) * vs;
            for (var c = 0u; c < DIMS_PER_THREAD; c++) {
                if (t + c * WG < p.head_dim) {
                    acc[c] += weigh(w, arena[r + t + c * WG]);
                }
            }
        }
        m = m_new;
        seen = seen || tile_any;
    }

    // A row that saw no key writes zeros (l >= 1 otherwise: the max key weighs exp(0)).
    let inv_l = select(0.0, 1.0 / l, seen);
    let o_base = p.out_offset + b * p.out_strides.x + i * p.out_strides.y + h * p.out_strides.z;
    for (var c = 0u; c < DIMS_PER_THREAD; c++) {
        let d = t + c * WG;
        if (d < p.head_dim) {
            arena[o_base + d] = acc[c] * inv_l;
        }
    }
}
