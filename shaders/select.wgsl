// Selection along the last axis: argmax, top-k and sampling, one 256-thread workgroup per row.
//
// Elements are compared through a u32 "order key" that sorts like Rust's `f32::total_cmp`
// (what the reference's ordering uses), with equal keys ordered by lower index. An element's
// place in the row's descending order is therefore exact: no f32 rounding can change it.
//
// `argmax` / `topk` pick one element per pass with a workgroup max-reduction of (key, index).
// Each thread caches the best of its own elements that come after the previous pick (the first
// scan loads eight elements per step); only the thread that owned the pick rescans (not after
// the last pick), so k passes cost about n / 256 + 8k + (k - 1) * n / 256 steps.
//
// `sample` never materialises a sorted candidate list, so it handles any row length, top_k and
// top_p. Every set it needs (the top_k kept, the top_p nucleus, the drawn prefix) is a prefix of
// the descending order, i.e. everything up to a "cut" element, and each cut is found by binary
// search: first over the 32-bit key (the largest key whose prefix satisfies the condition), then
// over the index among elements with that key. Each probe is one pass over the row with a
// workgroup reduction of (count, sum of weights).

const WG: u32 = 256u;
const NONE: u32 = 0xffffffffu;

struct SelectParams {
    rows: u32,
    // Row length (the last axis).
    n: u32,
    k: u32,
    // 0: write values, 1: write indices (as i32 words).
    write_indices: u32,
    in_offset: u32,
    out_offset: u32,
    // Workgroups in x: the row is `wid.x + wid.y * groups_x`.
    groups_x: u32,
    _pad: u32,
}

struct SampleParams {
    rows: u32,
    n: u32,
    // 0 = keep all.
    top_k: u32,
    has_counter: u32,
    top_p: f32,
    temperature: f32,
    seed_lo: u32,
    seed_hi: u32,
    in_offset: u32,
    out_offset: u32,
    counter_offset: u32,
    groups_x: u32,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: SelectParams;
@group(0) @binding(1) var<uniform> sp: SampleParams;

var<workgroup> red_key: array<u32, WG>;
var<workgroup> red_idx: array<u32, WG>;
var<workgroup> red_sum: array<f32, WG>;

// ---------------------------------------------------------------------------------------------
// Keys and the (key, index) order.

// Sorts like `f32::total_cmp`: -NaN < -inf < ... < -0 < +0 < ... < +inf < +NaN.
fn order_key(x: f32) -> u32 {
    let b = bitcast<u32>(x);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// The inverse of `order_key`.
fn key_value(k: u32) -> f32 {
    return bitcast<f32>(select(~k, k & 0x7fffffffu, (k & 0x80000000u) != 0u));
}

// The reference's argmax compares with `>`: -0 ties with +0 and NaN never wins (it ranks as
// -inf here; a NaN in the first place is handled by the caller).
fn argmax_key(x: f32) -> u32 {
    let mag = bitcast<u32>(x) & 0x7fffffffu;
    if (mag > 0x7f800000u) {
        return order_key(bitcast<f32>(0xff800000u));
    }
    if (mag == 0u) {
        return 0x80000000u;
    }
    return order_key(x);
}

fn is_nan(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u;
}

// Whether (ka, ia) comes before (kb, ib) in the descending order. `NONE` indices come last.
fn before(ka: u32, ia: u32, kb: u32, ib: u32) -> bool {
    return ia != NONE && (ib == NONE || ka > kb || (ka == kb && ia < ib));
}

// ---------------------------------------------------------------------------------------------
// argmax and top-k.

fn select_key(x: f32, argmax_keys: bool) -> u32 {
    if (argmax_keys) {
        return argmax_key(x);
    }
    return order_key(x);
}

// The first of this thread's elements (lid, lid + WG, ...) that comes after (ck, ci), or
// (0, NONE). Pass ci = NONE to consider every element.
fn local_best(base: u32, n: u32, lid: u32, ck: u32, ci: u32, argmax_keys: bool) -> vec2<u32> {
    var bk = 0u;
    var bi = NONE;
    for (var i = lid; i < n; i += WG) {
        let k = select_key(arena[base + i], argmax_keys);
        let after_cut = ci == NONE || before(ck, ci, k, i);
        if (after_cut && before(k, i, bk, bi)) {
            bk = k;
            bi = i;
        }
    }
    return vec2<u32>(bk, bi);
}

// The first of all threads' candidates, in every thread.
fn workgroup_best(cand: vec2<u32>, lid: u32) -> vec2<u32> {
    red_key[lid] = cand.x;
    red_idx[lid] = cand.y;
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s && before(red_key[lid + s], red_idx[lid + s], red_key[lid], red_idx[lid])) {
            red_key[lid] = red_key[lid + s];
            red_idx[lid] = red_idx[lid + s];
        }
    }
    workgroupBarrier();
    let best = vec2<u32>(red_key[0], red_idx[0]);
    // Everyone has read the winner before the arrays are written again.
    workgroupBarrier();
    return best;
}

fn write_pick(row: u32, j: u32, base: u32, idx: u32) {
    let o = p.out_offset + row * p.k + j;
    if (p.write_indices != 0u) {
        arena[o] = bitcast<f32>(i32(idx));
    } else {
        arena[o] = arena[base + idx];
    }
}

// The first of this thread's elements (lid, lid + WG, ...) in the whole row: local_best's
// first scan, with eight loads issued together per step (their indices clamped into the row),
// since one load per step waits for memory every step.
fn first_best(base: u32, n: u32, lid: u32, argmax_keys: bool) -> vec2<u32> {
    var bk = 0u;
    var bi = NONE;
    for (var i0 = lid; i0 < n; i0 += 8u * WG) {
        let is0 = vec4<u32>(i0) + vec4<u32>(0u, 1u, 2u, 3u) * WG;
        let is1 = is0 + vec4<u32>(4u * WG);
        let last = vec4<u32>(n - 1u);
        let a0 = min(is0, last);
        let a1 = min(is1, last);
        let x0 = vec4<f32>(arena[base + a0.x], arena[base + a0.y], arena[base + a0.z], arena[base + a0.w]);
        let x1 = vec4<f32>(arena[base + a1.x], arena[base + a1.y], arena[base + a1.z], arena[base + a1.w]);
        for (var c = 0u; c < 4u; c++) {
            let k = select_key(x0[c], argmax_keys);
            if (is0[c] < n && before(k, is0[c], bk, bi)) {
                bk = k;
                bi = is0[c];
            }
        }
        for (var c = 0u; c < 4u; c++) {
            let k = select_key(x1[c], argmax_keys);
            if (is1[c] < n && before(k, is1[c], bk, bi)) {
                bk = k;
                bi = is1[c];
            }
        }
    }
    return vec2<u32>(bk, bi);
}

// Writes the k first elements of one row in descending order.
fn select_row(row: u32, lid: u32, argmax_keys: bool) {
    let base = p.in_offset + row * p.n;
    var cand = first_best(base, p.n, lid, argmax_keys);
    for (var j = 0u; j < p.k; j++) {
        let best = workgroup_best(cand, lid);
        if (lid == 0u) {
            write_pick(row, j, base, best.y);
        }
        // The owner of the pick rescans for its next candidate, unless that was the last pick
        // (one thread scanning its n / 256 elements alone costs as much as the whole first pass).
        if (j + 1u < p.k && best.y % WG == lid) {
            cand = local_best(base, p.n, lid, best.x, best.y, argmax_keys);
        }
    }
}

@compute @workgroup_size(256)
fn argmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * p.groups_x;
    if (row >= p.rows) {
        return;
    }
    select_row(row, lid, true);
    // The reference keeps index 0 when it is NaN: nothing compares greater than it.
    if (lid == 0u && is_nan(arena[p.in_offset + row * p.n])) {
        arena[p.out_offset + row] = bitcast<f32>(0i);
    }
}

@compute @workgroup_size(256)
fn topk(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * p.groups_x;
    if (row >= p.rows) {
        return;
    }
    select_row(row, lid, false);
}

// ---------------------------------------------------------------------------------------------
// The counter-based RNG of kiln_ir::rng, bit for bit.

fn mix32(x0: u32) -> u32 {
    var x = x0;
    x ^= x >> 16u;
    x *= 0x7feb352du;
    x ^= x >> 15u;
    x *= 0x846ca68bu;
    x ^= x >> 16u;
    return x;
}

fn sample_uniform(seed_lo: u32, seed_hi: u32, counter: u32, row: u32) -> f32 {
    let h = mix32(seed_lo ^ mix32(seed_hi ^ mix32(counter ^ mix32(row ^ 0x9e3779b9u))));
    // 24 bits convert to f32 exactly and the scale is a power of two: no rounding anywhere.
    return f32(h >> 8u) * (1.0 / 16777216.0);
}

// ---------------------------------------------------------------------------------------------
// sample.

// A prefix of the row's descending order: every element up to and including (key, idx).
// `ALL_KEY` with idx `NONE` is the whole row.
struct Cut {
    key: u32,
    idx: u32,
}

const ALL_KEY: u32 = 0u;

fn in_prefix(k: u32, i: u32, c: Cut) -> bool {
    return k > c.key || (k == c.key && i <= c.idx);
}

// The row being sampled: where it starts, its max value and the temperature.
struct Row {
    base: u32,
    vmax: f32,
}

// What a probe measures over a set.
struct Agg {
    count: u32,
    sum: f32,
}

var<workgroup> agg_out: Agg;
var<workgroup> u32_out: vec2<u32>;

// The unnormalised probability of logit `x`: exp((x - max) / T), which is the reference's
// exp(x / T - max / T) with one rounding less.
fn weight(r: Row, x: f32) -> f32 {
    return exp((x - r.vmax) / sp.temperature);
}

// Count and weight sum of the elements in both prefixes `outer` and `probe`, in every thread.
fn aggregate(r: Row, lid: u32, outer: Cut, probe: Cut, weighted: bool) -> Agg {
    var c = 0u;
    var s = 0.0;
    for (var i = lid; i < sp.n; i += WG) {
        let x = arena[r.base + i];
        let k = order_key(x);
        if (in_prefix(k, i, outer) && in_prefix(k, i, probe)) {
            c += 1u;
            if (weighted) {
                s += weight(r, x);
            }
        }
    }
    red_idx[lid] = c;
    red_sum[lid] = s;
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (lid < h) {
            red_idx[lid] += red_idx[lid + h];
            red_sum[lid] += red_sum[lid + h];
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        agg_out = Agg(red_idx[0], red_sum[0]);
    }
    return workgroupUniformLoad(&agg_out);
}

// The largest order key in the row, or the (min, max) index of the elements of `outer` whose
// key is `tie_key` (NONE, 0 if there are none), in every thread.
fn key_max_or_tie_range(r: Row, lid: u32, outer: Cut, tie_key: u32, ties: bool) -> vec2<u32> {
    var a = select(0u, NONE, ties);
    var b = 0u;
    for (var i = lid; i < sp.n; i += WG) {
        let k = order_key(arena[r.base + i]);
        if (!ties) {
            a = max(a, k);
        } else if (k == tie_key && in_prefix(k, i, outer)) {
            a = min(a, i);
            b = max(b, i);
        }
    }
    red_key[lid] = a;
    red_idx[lid] = b;
    for (var h = WG / 2u; h > 0u; h = h / 2u) {
        workgroupBarrier();
        if (lid < h) {
            if (ties) {
                red_key[lid] = min(red_key[lid], red_key[lid + h]);
            } else {
                red_key[lid] = max(red_key[lid], red_key[lid + h]);
            }
            red_idx[lid] = max(red_idx[lid], red_idx[lid + h]);
        }
    }
    workgroupBarrier();
    if (lid == 0u) {
        u32_out = vec2<u32>(red_key[0], red_idx[0]);
    }
    return workgroupUniformLoad(&u32_out);
}

// The condition a prefix must meet: at least `count` elements, a weight sum of at least `sum`,
// or (strict) a weight sum above `sum`.
const AT_LEAST_COUNT: u32 = 0u;
const AT_LEAST_SUM: u32 = 1u;
const ABOVE_SUM: u32 = 2u;

struct Goal {
    kind: u32,
    count: u32,
    sum: f32,
}

fn meets(a: Agg, g: Goal) -> bool {
    switch g.kind {
        case AT_LEAST_COUNT: { return a.count >= g.count; }
        case AT_LEAST_SUM: { return a.sum >= g.sum; }
        default: { return a.sum > g.sum; }
    }
}

// The shortest prefix of `outer` that meets `goal` (which the whole of `outer` must meet),
// returned as the cut at its last element.
fn shortest_prefix(r: Row, lid: u32, outer: Cut, goal: Goal) -> Cut {
    let weighted = goal.kind != AT_LEAST_COUNT;
    // The largest key whose prefix (all elements with that key or larger) meets the goal.
    var lo = 0u;
    var hi = NONE;
    for (var step = 0u; step < 32u; step++) {
        if (lo >= hi) {
            break;
        }
        let mid = lo + (hi - lo) / 2u + 1u;
        if (meets(aggregate(r, lid, outer, Cut(mid, NONE), weighted), goal)) {
            lo = mid;
        } else {
            hi = mid - 1u;
        }
    }
    // Then the lowest index among the elements with that key.
    let ties = key_max_or_tie_range(r, lid, outer, lo, true);
    var first = ties.x;
    var last = ties.y;
    for (var step = 0u; step < 32u; step++) {
        if (first >= last) {
            break;
        }
        let mid = first + (last - first) / 2u;
        if (meets(aggregate(r, lid, outer, Cut(lo, mid), weighted), goal)) {
            last = mid;
        } else {
            first = mid + 1u;
        }
    }
    return Cut(lo, first);
}

// The kept set, the nucleus and the draw, as in the reference. Returns the sampled index.
fn sample_row(row: u32, lid: u32) -> u32 {
    let base = sp.in_offset + row * sp.n;
    let vmax = key_value(key_max_or_tie_range(Row(base, 0.0), lid, Cut(ALL_KEY, NONE), 0u, false).x);
    let r = Row(base, vmax);
    let all = Cut(ALL_KEY, NONE);

    var kept = all;
    if (sp.top_k != 0u && sp.top_k < sp.n) {
        kept = shortest_prefix(r, lid, all, Goal(AT_LEAST_COUNT, sp.top_k, 0.0));
    }
    var nucleus = kept;
    if (sp.top_p < 1.0) {
        let total = aggregate(r, lid, kept, all, true).sum;
        nucleus = shortest_prefix(r, lid, kept, Goal(AT_LEAST_SUM, 0u, sp.top_p * total));
    }
    let mass = aggregate(r, lid, nucleus, all, true);
    var counter = 0u;
    if (sp.has_counter != 0u) {
        counter = bitcast<u32>(arena[sp.counter_offset]);
    }
    let target_sum = sample_uniform(sp.seed_lo, sp.seed_hi, counter, row) * mass.sum;
    // Rounding can leave no prefix above the target: the reference then takes the last element.
    var goal = Goal(ABOVE_SUM, 0u, target_sum);
    if (!(mass.sum > target_sum)) {
        goal = Goal(AT_LEAST_COUNT, mass.count, 0.0);
    }
    return shortest_prefix(r, lid, nucleus, goal).idx;
}

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * sp.groups_x;
    if (row >= sp.rows) {
        return;
    }
    let idx = sample_row(row, lid);
    if (lid == 0u) {
        // NaN logits make every goal unreachable; keep the index in range regardless.
        arena[sp.out_offset + row] = bitcast<f32>(i32(min(idx, sp.n - 1u)));
    }
}
