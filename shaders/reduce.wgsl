// Reductions, softmax and cumulative sums over an f32 arena window.
//
// `reduce` and `softmax` run one workgroup per output element / row: the threads stride over the
// reduced elements and combine their partials with a tree in workgroup memory, so long rows are
// read in parallel and the summation error grows with log2(256) + n / 256, not with n. Short
// reductions (at most 1024 elements) over a contiguous innermost kept axis share a workgroup
// among eight outputs, 32 invocations each (log2(32) + n / 32).
// `cumsum` runs one invocation per line with a sequential loop (simple and exact in order; long
// lines would want a workgroup scan). Grids larger than 65535 workgroups are folded into y.

const WG: u32 = 256u;

struct ReduceParams {
    // 0 sum, 1 mean, 2 max, 3 min, 4 prod.
    kind: u32,
    // Reduced elements per output element.
    count: u32,
    out_numel: u32,
    in_offset: u32,
    out_offset: u32,
    kept_rank: u32,
    red_rank: u32,
    // Workgroups in x: the workgroup index is `wid.x + wid.y * groups_x`.
    groups_x: u32,
    // Consecutive outputs per workgroup (1 or 8), each with 256 / per_group invocations.
    per_group: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    // The kept (output) sub-shape with its input strides, and the reduced sub-shape with its
    // input strides; up to 8 dims each, packed four to a vec4.
    kept_shape: array<vec4<u32>, 2>,
    kept_strides: array<vec4<u32>, 2>,
    red_shape: array<vec4<u32>, 2>,
    red_strides: array<vec4<u32>, 2>,
}

struct SoftmaxParams {
    // outer * inner rows of `axis_len` elements, `inner` apart.
    rows: u32,
    axis_len: u32,
    inner: u32,
    in_offset: u32,
    out_offset: u32,
    groups_x: u32,
    _pad0: u32,
    _pad1: u32,
}

struct CumsumParams {
    lines: u32,
    axis_len: u32,
    inner: u32,
    exclusive: u32,
    in_offset: u32,
    out_offset: u32,
    grid_width: u32,
    _pad: u32,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> rp: ReduceParams;
@group(0) @binding(1) var<uniform> sp: SoftmaxParams;
@group(0) @binding(1) var<uniform> cp: CumsumParams;

var<workgroup> partial: array<f32, WG>;

// Infinities come from bit patterns: WGSL has no infinite literals.
fn pos_inf() -> f32 {
    return bitcast<f32>(0x7f800000u);
}

fn neg_inf() -> f32 {
    return bitcast<f32>(0xff800000u);
}

// The element offset of flat index `i` of a row-major sub-shape read through `strides`.
fn strided_offset(i: u32, rank: u32, shape: array<vec4<u32>, 2>, strides: array<vec4<u32>, 2>) -> u32 {
    var rem = i;
    var off = 0u;
    for (var d = i32(rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let size = shape[q][r];
        off += (rem % size) * strides[q][r];
        rem = rem / size;
    }
    return off;
}

fn identity(kind: u32) -> f32 {
    switch kind {
        case 2u: { return neg_inf(); }
        case 3u: { return pos_inf(); }
        case 4u: { return 1.0; }
        default: { return 0.0; }
    }
}

fn combine(kind: u32, a: f32, b: f32) -> f32 {
    switch kind {
        case 2u: { return max(a, b); }
        case 3u: { return min(a, b); }
        case 4u: { return a * b; }
        default: { return a + b; }
    }
}

// Combines every thread's `partial` entry and returns the result to all threads as a uniform
// value (so rows can branch on it before later barriers); `partial` is free again afterwards.
fn tree_combine(kind: u32, lid: u32) -> f32 {
    for (var s = WG / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lid < s) {
            partial[lid] = combine(kind, partial[lid], partial[lid + s]);
        }
    }
    return workgroupUniformLoad(&partial[0]);
}

@compute @workgroup_size(256)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // Invocation lid works on output `sub` of the workgroup's per_group, as lane `lane` of its
    // lanes: consecutive invocations take consecutive outputs, so with the innermost kept axis
    // contiguous one load instruction reads whole memory sectors.
    let lanes = WG / rp.per_group;
    let sub = lid % rp.per_group;
    let lane = lid / rp.per_group;
    let o = (wid.x + wid.y * rp.groups_x) * rp.per_group + sub;
    let valid = o < rp.out_numel;
    var acc = identity(rp.kind);
    if (valid) {
        let base = rp.in_offset + strided_offset(o, rp.kept_rank, rp.kept_shape, rp.kept_strides);
        for (var r = lane; r < rp.count; r += lanes) {
            let x = arena[base + strided_offset(r, rp.red_rank, rp.red_shape, rp.red_strides)];
            acc = combine(rp.kind, acc, x);
        }
    }
    partial[lid] = acc;
    // A tree per output over its lanes (lane l of output sub sits at l * per_group + sub).
    for (var s = lanes / 2u; s > 0u; s = s / 2u) {
        workgroupBarrier();
        if (lane < s) {
            partial[lid] = combine(rp.kind, partial[lid], partial[lid + s * rp.per_group]);
        }
    }
    workgroupBarrier();
    if (lane == 0u && valid) {
        var y = partial[sub];
        if (rp.kind == 1u) {
            y = y / f32(rp.count);
        }
        arena[rp.out_offset + o] = y;
    }
}

// Softmax of one row: max, then the sum of exp(x - max), then the normalised values. A row whose
// max is -inf (all masked) gives zeros, like the reference.
@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.x + wid.y * sp.groups_x;
    if (row >= sp.rows) {
        return;
    }
    let outer = row / sp.inner;
    let base = outer * sp.axis_len * sp.inner + row % sp.inner;
    let src = sp.in_offset + base;
    let dst = sp.out_offset + base;

    var m = neg_inf();
    for (var k = lid; k < sp.axis_len; k += WG) {
        m = max(m, arena[src + k * sp.inner]);
    }
    partial[lid] = m;
    m = tree_combine(2u, lid);

    if (m == neg_inf()) {
        for (var k = lid; k < sp.axis_len; k += WG) {
            arena[dst + k * sp.inner] = 0.0;
        }
        return;
    }
    var s = 0.0;
    for (var k = lid; k < sp.axis_len; k += WG) {
        s += exp(arena[src + k * sp.inner] - m);
    }
    partial[lid] = s;
    let total = tree_combine(0u, lid);
    for (var k = lid; k < sp.axis_len; k += WG) {
        let i = k * sp.inner;
        arena[dst + i] = exp(arena[src + i] - m) / total;
    }
}

// One invocation per line; accumulates sequentially in f32.
@compute @workgroup_size(64)
fn cumsum(@builtin(global_invocation_id) gid: vec3<u32>) {
    let line = gid.x + gid.y * cp.grid_width;
    if (line >= cp.lines) {
        return;
    }
    let base = (line / cp.inner) * cp.axis_len * cp.inner + line % cp.inner;
    var acc = 0.0;
    for (var k = 0u; k < cp.axis_len; k++) {
        let i = base + k * cp.inner;
        let x = arena[cp.in_offset + i];
        if (cp.exclusive != 0u) {
            arena[cp.out_offset + i] = acc;
            acc += x;
        } else {
            acc += x;
            arena[cp.out_offset + i] = acc;
        }
    }
}
