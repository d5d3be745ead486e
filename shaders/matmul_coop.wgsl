// @file matmul_coop.wgsl
// f32 matmul on cooperative matrices (tensor cores): f16 inputs, f32 accumulation. Same params,
// bindings and epilogue as `matmul` (matmul_common.wgsl and activations.wgsl are appended), so
// a planned step can use either kernel.
//
// A workgroup of 256 invocations (8 subgroups of 32: the runtime only picks this kernel where
// the adapter's subgroup size is exactly 32) computes a 128x64 output tile. Each k-step stages
// a 128x64 slice of A and a 64x64 slice of B in workgroup memory, converted to f16 (values
// beyond f16's range become infinite), and each subgroup multiplies its 32x32 part as 2x2
// fragments of 16x16x16. The next slices are read from global memory into registers while the
// current ones are multiplied, hiding the global latency behind the tensor-core work. Results go through workgroup memory one fragment at a time, so the
// epilogue (bounds, bias, activation, split-write) is the same code as the f32 kernel's.
enable f16;
enable wgpu_cooperative_matrix;

const CM: u32 = 128u; // tile rows
const CN: u32 = 64u; // tile columns
const CK: u32 = 64u; // k per stage
// Row strides of the staged tiles, padded by 8 halves (16 bytes) against bank conflicts.
const LDA: u32 = 72u;
const LDB: u32 = 72u;

var<workgroup> a_half: array<f16, 9216>; // CM x LDA
var<workgroup> b_half: array<f16, 4608>; // CK x LDB
var<workgroup> c_frag: array<f32, 2048>; // one 16x16 fragment per subgroup

// Writes subgroup `sg`'s staged fragment (tile-relative origin r0, c0) through the epilogue.
fn store_fragment(out_base: u32, sg: u32, lane: u32, r0: u32, c0: u32) {
    for (var i = 0u; i < 8u; i++) {
        let e = lane + i * 32u;
        let r = r0 + e / 16u;
        let c = c0 + e % 16u;
        if (r < p.m && c < p.n) {
            store_one(out_base, r, c, c_frag[sg * 256u + e]);
        }
    }
}

// The staged values one invocation moves per k-step: 32 of A and 16 of B, as vec4s (indexed
// local arrays could be placed in slow local memory).
struct Staged {
    a0: vec4<f32>,
    a1: vec4<f32>,
    a2: vec4<f32>,
    a3: vec4<f32>,
    a4: vec4<f32>,
    a5: vec4<f32>,
    a6: vec4<f32>,
    a7: vec4<f32>,
    b0: vec4<f32>,
    b1: vec4<f32>,
    b2: vec4<f32>,
    b3: vec4<f32>,
}

// Element `i` (0..32) of this invocation's share of the A slice at k-offset t: 64 consecutive
// invocations read 64 consecutive k of one row.
fn load_a(a_base: u32, row0: u32, t: u32, tid: u32, i: u32) -> f32 {
    let e = tid + i * 256u;
    let r = row0 + e / CK;
    let k = t + e % CK;
    let inside = r < p.m && k < p.k;
    return select(0.0, arena[select(0u, a_base + r * p.a_stride_m + k, inside)], inside);
}

// Element `i` (0..16) of the B slice, read along whichever of k and n is contiguous.
fn b_coords(tid: u32, i: u32) -> vec2<u32> {
    let e = tid + i * 256u;
    if (p.b_stride_k == 1u) {
        return vec2<u32>(e % CK, e / CK);
    }
    return vec2<u32>(e / CN, e % CN);
}

fn load_b(b_base: u32, col0: u32, t: u32, tid: u32, i: u32) -> f32 {
    let kc = b_coords(tid, i);
    let k = t + kc.x;
    let c = col0 + kc.y;
    let inside = k < p.k && c < p.n;
    let at = b_base + k * p.b_stride_k + c * p.b_stride_n;
    return select(0.0, arena[select(0u, at, inside)], inside);
}

fn load_a4(a_base: u32, row0: u32, t: u32, tid: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(
        load_a(a_base, row0, t, tid, i),
        load_a(a_base, row0, t, tid, i + 1u),
        load_a(a_base, row0, t, tid, i + 2u),
        load_a(a_base, row0, t, tid, i + 3u),
    );
}

fn load_b4(b_base: u32, col0: u32, t: u32, tid: u32, i: u32) -> vec4<f32> {
    return vec4<f32>(
        load_b(b_base, col0, t, tid, i),
        load_b(b_base, col0, t, tid, i + 1u),
        load_b(b_base, col0, t, tid, i + 2u),
        load_b(b_base, col0, t, tid, i + 3u),
    );
}

fn load_stage(a_base: u32, b_base: u32, row0: u32, col0: u32, t: u32, tid: u32) -> Staged {
    return Staged(
        load_a4(a_base, row0, t, tid, 0u),
        load_a4(a_base, row0, t, tid, 4u),
        load_a4(a_base, row0, t, tid, 8u),
        load_a4(a_base, row0, t, tid, 12u),
        load_a4(a_base, row0, t, tid, 16u),
        load_a4(a_base, row0, t, tid, 20u),
        load_a4(a_base, row0, t, tid, 24u),
        load_a4(a_base, row0, t, tid, 28u),
        load_b4(b_base, col0, t, tid, 0u),
        load_b4(b_base, col0, t, tid, 4u),
        load_b4(b_base, col0, t, tid, 8u),
        load_b4(b_base, col0, t, tid, 12u),
    );
}

fn put_a4(v: vec4<f32>, tid: u32, i: u32) {
    for (var j = 0u; j < 4u; j++) {
        let e = tid + (i + j) * 256u;
        a_half[(e / CK) * LDA + e % CK] = f16(v[j]);
    }
}

fn put_b4(v: vec4<f32>, tid: u32, i: u32) {
    for (var j = 0u; j < 4u; j++) {
        let kc = b_coords(tid, i + j);
        b_half[kc.x * LDB + kc.y] = f16(v[j]);
    }
}

fn put_stage(s: Staged, tid: u32) {
    put_a4(s.a0, tid, 0u);
    put_a4(s.a1, tid, 4u);
    put_a4(s.a2, tid, 8u);
    put_a4(s.a3, tid, 12u);
    put_a4(s.a4, tid, 16u);
    put_a4(s.a5, tid, 20u);
    put_a4(s.a6, tid, 24u);
    put_a4(s.a7, tid, 28u);
    put_b4(s.b0, tid, 0u);
    put_b4(s.b1, tid, 4u);
    put_b4(s.b2, tid, 8u);
    put_b4(s.b3, tid, 12u);
}

@compute @workgroup_size(256, 1, 1)
fn matmul_coop(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    let row0 = wid.y * CM;
    let col0 = wid.x * CN;
    let sg = tid / 32u;
    let lane = tid % 32u;
    // This subgroup's 32x32 part of the tile.
    let sr = (sg / 2u) * 32u;
    let sc = (sg % 2u) * 32u;

    var c00 = coop_mat16x16<f32, C>();
    var c01 = coop_mat16x16<f32, C>();
    var c10 = coop_mat16x16<f32, C>();
    var c11 = coop_mat16x16<f32, C>();
    var next = load_stage(a_base, b_base, row0, col0, 0u, tid);
    for (var t = 0u; t < p.k; t += CK) {
        put_stage(next, tid);
        workgroupBarrier();
        if (t + CK < p.k) {
            next = load_stage(a_base, b_base, row0, col0, t + CK, tid);
        }
        for (var kk = 0u; kk < CK; kk += 16u) {
            let a0 = coopLoadT<coop_mat16x16<f16, A>>(&a_half[sr * LDA + kk], LDA);
            let a1 = coopLoadT<coop_mat16x16<f16, A>>(&a_half[(sr + 16u) * LDA + kk], LDA);
            let b0 = coopLoadT<coop_mat16x16<f16, B>>(&b_half[kk * LDB + sc], LDB);
            let b1 = coopLoadT<coop_mat16x16<f16, B>>(&b_half[kk * LDB + sc + 16u], LDB);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }

    let out_base = wid.z * p.m * p.out_stride_m;
    let r0 = row0 + sr;
    let c0 = col0 + sc;
    coopStoreT(c00, &c_frag[sg * 256u], 16u);
    workgroupBarrier();
    store_fragment(out_base, sg, lane, r0, c0);
    workgroupBarrier();
    coopStoreT(c01, &c_frag[sg * 256u], 16u);
    workgroupBarrier();
    store_fragment(out_base, sg, lane, r0, c0 + 16u);
    workgroupBarrier();
    coopStoreT(c10, &c_frag[sg * 256u], 16u);
    workgroupBarrier();
    store_fragment(out_base, sg, lane, r0 + 16u, c0);
    workgroupBarrier();
    coopStoreT(c11, &c_frag[sg * 256u], 16u);
    workgroupBarrier();
    store_fragment(out_base, sg, lane, r0 + 16u, c0 + 16u);
}
