// @file matmul.wgsl
// Register-tiled f32 matmul with a bias + activation epilogue (activations.wgsl and
// matmul_common.wgsl are prepended).
//
// out[z, m, n] = act(sum_k A[z, m, k] * B[z, k, n] + bias[n]).
// A workgroup computes a 64x64 output tile as GROUPS k-groups of 64 invocations (four in the
// `matmul` pipelines, eight in `matmul_k8`): each stage holds 4 * GROUPS values of k of A
// (64 x 4G) and B (4G x 64), and group g multiplies k = 4g..4g+3 of it, 8x8 outputs per
// invocation (four vec4 workgroup reads per k for 64 fmas). The groups' partial tiles are
// summed in workgroup memory at the end and all invocations store. Several groups on one tile
// keep that many times as many invocations busy as one group per tile would: what outputs with
// few tiles (a 384-wide projection) need, without a workspace for split-k. Eight groups make
// workgroups of 512 invocations, of which an SM holds one instead of two of 256: the lowering
// picks them where that fills the GPU's last wave better.
// Operands are addressed by strides, so B may be stored [K, N] or [N, K] (transposed) and
// batches may broadcast (stride 0). With `split_width` < n, output column c goes to output
// c / split_width at column c % split_width: the QKV split-write, three outputs from one
// dispatch.

// B stored [K, N] (p.b_stride_k != 1): the `_kn` pipelines, like the wide kernel's (a runtime
// test of the stride cost 1024^3 101 against 95 µs on the H200).
override B_ALONG_N: bool = false;

const TILE: u32 = 64u;
// k-groups of 64 invocations (4 or 8: a stage must fit the 16 KiB tile below).
override GROUPS: u32 = 4u;
const GROUP_K: u32 = 4u; // k per group per stage
override TK: u32 = GROUPS * GROUP_K; // k per stage
const TILE4: u32 = 16u; // vec4s per k of a staged slice
override B_AT: u32 = TK * TILE4; // where the B slice starts in `tiles`
override INVOCATIONS: u32 = GROUPS * 64u;

// During the k-loop: the A slice at [k * 16 + (row / 4 ^ swizzle(k))][row % 4] and B's likewise
// by column from B_AT. Afterwards: the 64x64 tile of partial sums, [row * 16 + col / 4].
var<workgroup> tiles: array<vec4<f32>, 1024>;

// One invocation's share of a stage: k-quad tid % GROUPS of row (column of an [N, K] B)
// tid / GROUPS; for a [K, N] B, column quad tid % 16 of k-row tid / 16.
struct Stage {
    a: vec4<f32>,
    b: vec4<f32>,
}

fn load_stage(a_base: u32, b_base: u32, row0: u32, col0: u32, t: u32, tid: u32) -> Stage {
    let line = tid / GROUPS;
    let quad = t + (tid % GROUPS) * 4u;
    let a = along_k(a_base + min(row0 + line, p.m - 1u) * p.a_stride_m, quad);
    var b: vec4<f32>;
    if (!B_ALONG_N) {
        b = along_k(b_base + min(col0 + line, p.n - 1u) * p.b_stride_n, quad);
    } else {
        let k = t + tid / 16u;
        let cs = min(vec4<u32>(col0 + (tid % 16u) * 4u) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
        let at = vec4<u32>(b_base + min(k, p.k - 1u) * p.b_stride_k) + cs * p.b_stride_n;
        let v = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
        b = select(vec4<f32>(0.0), v, k < p.k);
    }
    return Stage(a, b);
}

// Stores four consecutive k of one row (or [N, K] column) from `base`.
fn put_along_k(base: u32, v: vec4<f32>, tid: u32) {
    let line = tid / GROUPS;
    let k0 = (tid % GROUPS) * 4u;
    let at = (line / 4u) ^ swizzle(k0);
    for (var j = 0u; j < 4u; j++) {
        tiles[base + (k0 + j) * TILE4 + at][line % 4u] = v[j];
    }
}

fn store_stage(s: Stage, tid: u32) {
    put_along_k(0u, s.a, tid);
    if (!B_ALONG_N) {
        put_along_k(B_AT, s.b, tid);
    } else {
        let k = tid / 16u;
        tiles[B_AT + k * TILE4 + ((tid % 16u) ^ swizzle(k))] = s.b;
    }
}

// Adds a group's partial vec4 into the summed tile (the first group to arrive writes it).
fn fold(i: u32, v: vec4<f32>, first: bool) {
    if (first) {
        tiles[i] = v;
    } else {
        tiles[i] += v;
    }
}

@compute @workgroup_size(INVOCATIONS, 1, 1)
fn matmul(
    @builtin(local_invocation_index) tid: u32,
    @builtin(workgroup_id) wid: vec3<u32>,
) {
    let bases = batch_bases(wid.z);
    let a_base = bases.x;
    let b_base = bases.y;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let group = tid / 64u;
    let tx = tid % 8u;
    let ty = (tid % 64u) / 8u;

    // c<row><l|h>: tile row ty*4 + row (rows 4..7: 32 + ty*4 + row - 4), columns tx*4 (l) or
    // 32 + tx*4 (h).
    var c0l = vec4<f32>();
    var c0h = vec4<f32>();
    var c1l = vec4<f32>();
    var c1h = vec4<f32>();
    var c2l = vec4<f32>();
    var c2h = vec4<f32>();
    var c3l = vec4<f32>();
    var c3h = vec4<f32>();
    var c4l = vec4<f32>();
    var c4h = vec4<f32>();
    var c5l = vec4<f32>();
    var c5h = vec4<f32>();
    var c6l = vec4<f32>();
    var c6h = vec4<f32>();
    var c7l = vec4<f32>();
    var c7h = vec4<f32>();
    var next = load_stage(a_base, b_base, row0, col0, 0u, tid);
    for (var t = 0u; t < p.k; t += TK) {
        store_stage(next, tid);
        workgroupBarrier();
        if (t + TK < p.k) {
            next = load_stage(a_base, b_base, row0, col0, t + TK, tid);
        }
        for (var kk = 0u; kk < GROUP_K; kk++) {
            let k = group * GROUP_K + kk;
            let sw = swizzle(k);
            let al = tiles[k * TILE4 + (ty ^ sw)];
            let ah = tiles[k * TILE4 + ((8u + ty) ^ sw)];
            let bl = tiles[B_AT + k * TILE4 + (tx ^ sw)];
            let bh = tiles[B_AT + k * TILE4 + ((8u + tx) ^ sw)];
            // The 16 fmas are written out in each kernel: as a struct updated by a shared
            // function, MiniLM 32x128 took 6.09 ms instead of 5.69 (H200).
            c0l = fma(vec4<f32>(al.x), bl, c0l);
            c0h = fma(vec4<f32>(al.x), bh, c0h);
            c1l = fma(vec4<f32>(al.y), bl, c1l);
            c1h = fma(vec4<f32>(al.y), bh, c1h);
            c2l = fma(vec4<f32>(al.z), bl, c2l);
            c2h = fma(vec4<f32>(al.z), bh, c2h);
            c3l = fma(vec4<f32>(al.w), bl, c3l);
            c3h = fma(vec4<f32>(al.w), bh, c3h);
            c4l = fma(vec4<f32>(ah.x), bl, c4l);
            c4h = fma(vec4<f32>(ah.x), bh, c4h);
            c5l = fma(vec4<f32>(ah.y), bl, c5l);
            c5h = fma(vec4<f32>(ah.y), bh, c5h);
            c6l = fma(vec4<f32>(ah.z), bl, c6l);
            c6h = fma(vec4<f32>(ah.z), bh, c6h);
            c7l = fma(vec4<f32>(ah.w), bl, c7l);
            c7h = fma(vec4<f32>(ah.w), bh, c7h);
        }
        workgroupBarrier();
    }

    // The groups take turns adding into the tile (group 1 first, group 0 last).
    let il = ty * 64u + tx;
    let ih = il + 512u;
    for (var turn = 0u; turn < GROUPS; turn++) {
        if (group == (turn + 1u) % GROUPS) {
            let first = turn == 0u;
            fold(il, c0l, first);
            fold(il + 8u, c0h, first);
            fold(il + 16u, c1l, first);
            fold(il + 24u, c1h, first);
            fold(il + 32u, c2l, first);
            fold(il + 40u, c2h, first);
            fold(il + 48u, c3l, first);
            fold(il + 56u, c3h, first);
            fold(ih, c4l, first);
            fold(ih + 8u, c4h, first);
            fold(ih + 16u, c5l, first);
            fold(ih + 24u, c5h, first);
            fold(ih + 32u, c6l, first);
            fold(ih + 40u, c6h, first);
            fold(ih + 48u, c7l, first);
            fold(ih + 56u, c7h, first);
        }
        workgroupBarrier();
    }

    // Invocation tid stores column tid % 64 of rows tid / 64 + GROUPS * i (see `OutColumn`).
    let c = tid % TILE;
    let col = out_column(wid.z * p.m * p.out_stride_m, col0 + c);
    for (var i = 0u; i < TILE / GROUPS; i++) {
        let r = tid / TILE + GROUPS * i;
        store_in_column(col, row0 + r, tiles[r * TILE4 + c / 4u][c % 4u]);
    }
}
