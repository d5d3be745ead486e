// @file norm.wgsl
// LayerNorm / RMSNorm over the last axis, optionally fused with a residual add and a bias:
//   s = x (+ residual) (+ bias);  out = norm(s) (* gamma) (+ beta)
// and, for the "tee", the sum s is also written out for its other consumers.
//
// Two entry points. `norm_rows`, for rows of up to 1024 values: 32 invocations per row, eight
// rows per workgroup, each invocation holding its values (i = lane + 32 k) in registers, so the
// row is read once; one barrier per reduction, after which every invocation sums its row's 32
// partials itself. `norm`, for any width: one workgroup of 256 invocations per row, striding
// over it (reading it three times), partial sums meeting in a tree. Both find the mean first
// and the variance from centred values (two passes), which avoids the cancellation of
// E[x^2] - E[x]^2. Workgroups beyond 65535 fold into y.

struct NormParams {
    rows: u32,
    width: u32,
    // 0 = LayerNorm, 1 = RMSNorm.
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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: NormParams;

const WG: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

fn has(flag: u32) -> bool {
    return (p.flags & flag) != 0u;
}

// The pre-norm value s[i] of a row.
fn summed(row: u32, i: u32) -> f32 {
    var v = arena[p.x_offset + row * p.width + i];
    if (has(1u)) {
        v += arena[p.residual_offset + row * p.width + i];
    }
    if (has(2u)) {
        v += arena[p.bias_offset + i];
    }
    return v;
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

@compute @workgroup_size(256)
fn norm(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let lid = lid3.x;
    let row = wid.x + wid.y * p.groups_x;
    // Uniform per workgroup, so every invocation leaves together (barriers stay uniform).
    if (row >= p.rows) {
        return;
    }
    let n = f32(p.width);
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
    let inv = inverseSqrt(workgroup_sum(lid, sq) / n + p.eps);
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

// `norm_rows`: lanes per row, rows per workgroup, values per lane (width <= ROW_LANES * ROW_VALUES).
const ROW_LANES: u32 = 32u;
const ROWS_PER_GROUP: u32 = 8u;
const ROW_VALUES: u32 = 32u;
var<workgroup> lane_sums: array<f32, 256>;
var<workgroup> lane_squares: array<f32, 256>;

// The sum of the ROW_LANES partials of the row whose first lane is `first`.
fn row_total(first: u32, squares: bool) -> f32 {
    var s = vec4<f32>(0.0);
    for (var j = 0u; j < ROW_LANES; j += 4u) {
        let at = first + j;
        if (squares) {
            s += vec4<f32>(lane_squares[at], lane_squares[at + 1u], lane_squares[at + 2u], lane_squares[at + 3u]);
        } else {
            s += vec4<f32>(lane_sums[at], lane_sums[at + 1u], lane_sums[at + 2u], lane_sums[at + 3u]);
        }
    }
    return (s.x + s.y) + (s.z + s.w);
}

@compute @workgroup_size(256)
fn norm_rows(@builtin(local_invocation_index) t: u32, @builtin(workgroup_id) wid: vec3<u32>) {
    let lane = t % ROW_LANES;
    let first = t - lane;
    let row = (wid.x + wid.y * p.groups_x) * ROWS_PER_GROUP + t / ROW_LANES;
    // Rows past the end (in the last workgroup) take part in the barriers with empty rows.
    let width = select(0u, p.width, row < p.rows);
    let n = f32(p.width);

    var v: array<f32, ROW_VALUES>;
    var s = 0.0;
    for (var k = 0u; k < ROW_VALUES; k++) {
        let i = lane + k * ROW_LANES;
        if (i < width) {
            v[k] = summed(row, i);
            s += v[k];
        }
    }
    var mean = 0.0;
    if (p.kind == 0u) {
        lane_sums[t] = s;
        workgroupBarrier();
        mean = row_total(first, false) / n;
    }
    var sq = 0.0;
    for (var k = 0u; k < ROW_VALUES; k++) {
        if (lane + k * ROW_LANES < width) {
            let d = v[k] - mean;
            sq += d * d;
        }
    }
    lane_squares[t] = sq;
    workgroupBarrier();
    let inv = inverseSqrt(row_total(first, true) / n + p.eps);
    for (var k = 0u; k < ROW_VALUES; k++) {
        let i = lane + k * ROW_LANES;
        if (i < width) {
            var y = (v[k] - mean) * inv;
            if (has(4u)) {
                y *= arena[p.gamma_offset + i];
            }
            if (has(8u)) {
                y += arena[p.beta_offset + i];
            }
            if (has(16u)) {
                arena[p.sum_offset + row * p.width + i] = v[k];
            }
            arena[p.out_offset + row * p.width + i] = y;
        }
    }
}
