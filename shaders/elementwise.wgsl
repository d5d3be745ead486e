// @file elementwise.wgsl
// Elementwise kernels over an f32 arena window (activations.wgsl is prepended).
//
// Every operand is addressed by an element offset into the bound window. Broadcasting is done by
// strides (a broadcast axis has stride 0), never by materialised copies. The lowering merges the
// dims that every operand walks contiguously (`coalesce_dims`), so a flat index unravels into as
// few dims as possible (one division each, none for the outermost). Grids larger than 65535
// workgroups are folded into y; `grid_width` is the number of invocations in one row of the grid.

struct BinaryParams {
    numel: u32,
    op: u32,
    rank: u32,
    a_offset: u32,
    b_offset: u32,
    out_offset: u32,
    grid_width: u32,
    // An activation applied to operand a before the op (activations.wgsl id), 0xffffffff none.
    act_a: u32,
    // Up to 8 dims each, packed four to a vec4 (uniform arrays need 16-byte strides).
    out_shape: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

struct UnaryParams {
    numel: u32,
    op: u32,
    in_offset: u32,
    out_offset: u32,
    grid_width: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

struct WhereParams {
    numel: u32,
    rank: u32,
    cond_offset: u32,
    a_offset: u32,
    b_offset: u32,
    out_offset: u32,
    grid_width: u32,
    _pad: u32,
    out_shape: array<vec4<u32>, 2>,
    cond_strides: array<vec4<u32>, 2>,
    a_strides: array<vec4<u32>, 2>,
    b_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> bp: BinaryParams;
@group(0) @binding(1) var<uniform> up: UnaryParams;
@group(0) @binding(1) var<uniform> wp: WhereParams;
// The arena again as vec4s (`binary_quads` only).
@group(0) @binding(2) var<storage, read_write> arena4: array<vec4<f32>>;

// pow with the real-valued cases WGSL leaves undefined: a negative base with an integer
// exponent, and 0^0 = 1.
fn pow_real(a: f32, b: f32) -> f32 {
    if (b == 0.0) {
        return 1.0;
    }
    if (a >= 0.0) {
        return pow(a, b);
    }
    if (b != floor(b)) {
        return nan();
    }
    let r = pow(-a, b);
    if (fract(b * 0.5) != 0.0) {
        return -r;
    }
    return r;
}

// Op ids 0..6: add sub mul div max min pow; 16..21: eq ne lt le gt ge (results 1.0 / 0.0).
fn apply_binary(op: u32, a: f32, b: f32) -> f32 {
    switch op {
        case 0u: { return a + b; }
        case 1u: { return a - b; }
        case 2u: { return a * b; }
        case 3u: { return a / b; }
        case 4u: { return max(a, b); }
        case 5u: { return min(a, b); }
        case 6u: { return pow_real(a, b); }
        case 16u: { return select(0.0, 1.0, a == b); }
        case 17u: { return select(0.0, 1.0, a != b); }
        case 18u: { return select(0.0, 1.0, a < b); }
        case 19u: { return select(0.0, 1.0, a <= b); }
        case 20u: { return select(0.0, 1.0, a > b); }
        case 21u: { return select(0.0, 1.0, a >= b); }
        default: { return nan(); }
    }
}

// Where output element `i` (of `binary`, or vec4 `i` of `binary_quads`) finds its operands:
// (a, b) offsets from a_offset and b_offset, in the units the shape and strides count.
fn operand_offsets(i: u32) -> vec2<u32> {
    var rem = i;
    var ao = 0u;
    var bo = 0u;
    for (var d = i32(bp.rank) - 1; d > 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let size = bp.out_shape[q][r];
        let c = rem % size;
        rem = rem / size;
        ao += c * bp.a_strides[q][r];
        bo += c * bp.b_strides[q][r];
    }
    // What is left is the index along the outermost dim: no division for it.
    if (bp.rank > 0u) {
        ao += rem * bp.a_strides[0].x;
        bo += rem * bp.b_strides[0].x;
    }
    return vec2<u32>(ao, bo);
}

@compute @workgroup_size(64)
fn binary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * bp.grid_width;
    if (i >= bp.numel) {
        return;
    }
    let at = operand_offsets(i);
    let ao = at.x;
    let bo = at.y;
    var a = arena[bp.a_offset + ao];
    if (bp.act_a != 0xffffffffu) {
        a = apply_unary(bp.act_a, a);
    }
    arena[bp.out_offset + i] = apply_binary(bp.op, a, arena[bp.b_offset + bo]);
}

// `binary` four consecutive elements at a time, where every operand walks its innermost dim
// contiguously in 16-byte-aligned quads (the lowering's `as_quads`): shape, strides and numel
// count vec4s, offsets words.
@compute @workgroup_size(64)
fn binary_quads(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * bp.grid_width;
    if (i >= bp.numel) {
        return;
    }
    let at = operand_offsets(i);
    var a = arena4[bp.a_offset / 4u + at.x];
    if (bp.act_a != 0xffffffffu) {
        a = vec4<f32>(apply_unary(bp.act_a, a.x), apply_unary(bp.act_a, a.y), apply_unary(bp.act_a, a.z), apply_unary(bp.act_a, a.w));
    }
    let b = arena4[bp.b_offset / 4u + at.y];
    arena4[bp.out_offset / 4u + i] = vec4<f32>(
        apply_binary(bp.op, a.x, b.x),
        apply_binary(bp.op, a.y, b.y),
        apply_binary(bp.op, a.z, b.z),
        apply_binary(bp.op, a.w, b.w),
    );
}

@compute @workgroup_size(64)
fn unary(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * up.grid_width;
    if (i >= up.numel) {
        return;
    }
    arena[up.out_offset + i] = apply_unary(up.op, arena[up.in_offset + i]);
}

// cond is read as a float word (bool tensors hold 0.0 / 1.0).
@compute @workgroup_size(64)
fn where_select(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * wp.grid_width;
    if (i >= wp.numel) {
        return;
    }
    var rem = i;
    var co = 0u;
    var ao = 0u;
    var bo = 0u;
    for (var d = i32(wp.rank) - 1; d > 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let size = wp.out_shape[q][r];
        let c = rem % size;
        rem = rem / size;
        co += c * wp.cond_strides[q][r];
        ao += c * wp.a_strides[q][r];
        bo += c * wp.b_strides[q][r];
    }
    if (wp.rank > 0u) {
        co += rem * wp.cond_strides[0].x;
        ao += rem * wp.a_strides[0].x;
        bo += rem * wp.b_strides[0].x;
    }
    let take_a = arena[wp.cond_offset + co] != 0.0;
    arena[wp.out_offset + i] = select(arena[wp.b_offset + bo], arena[wp.a_offset + ao], take_a);
}
