// @file matmul_common.wgsl
// What every f32 matmul kernel shares (64x64 and 128x128 tiles, skinny, cooperative matrices):
// the params, the arena bindings, where a batch's matrices start, and the epilogue that stores
// one output value (bias, activation, split-write). Sharing them lets the runtime move a step
// between these kernels when the active extent changes its rows. activations.wgsl is prepended
// to every matmul.

struct MatmulParams {
    m: u32,
    n: u32,
    k: u32,
    batch_rank: u32,
    a_offset: u32,
    b_offset: u32,
    bias_offset: u32,
    has_bias: u32,
    a_stride_m: u32,
    b_stride_k: u32,
    b_stride_n: u32,
    // activations.wgsl id, or 0xffffffff for none.
    act: u32,
    split_width: u32,
    out_stride_m: u32,
    // Split-k (`matmul_wide` only; 0 = none): workgroup z covers k from (z / batches) * k_chunk
    // to k_chunk further and writes its raw partial sums, which `matmul_split_sum` adds up.
    k_chunk: u32,
    // The product of batch_dims (1 without batches).
    batches: u32,
    // Up to three outputs (one unless split-writing).
    out_offsets: vec4<u32>,
    // Up to four batch dims of the output, and each operand's stride over them (0 = broadcast).
    batch_dims: vec4<u32>,
    a_batch_strides: vec4<u32>,
    b_batch_strides: vec4<u32>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: MatmulParams;
// The same buffer range as `arena`, for 16-byte loads of aligned rows.
@group(0) @binding(2) var<storage, read_write> arena4: array<vec4<f32>>;

// Set (by the `*_vec4` kernels' pipelines) where every row that `along_k` reads starts on 16
// bytes and k is a positive multiple of four: A's offset, row and batch strides, and B's too
// when it is stored [N, K]. A specialised pipeline rather than a branch on a param: with both
// paths in one pipeline the tiled kernels ran slower than with either alone (more registers;
// MiniLM 32x128 6.54 ms against 5.82 with vec4 loads only, H200).
override ROWS_AS_VEC4: bool = false;

// Where batch `z`'s A and B start (x: A, y: B).
fn batch_bases(z: u32) -> vec2<u32> {
    var rem = z;
    var a_base = p.a_offset;
    var b_base = p.b_offset;
    for (var d = i32(p.batch_rank) - 1; d >= 0; d--) {
        let size = p.batch_dims[d];
        let c = rem % size;
        rem = rem / size;
        a_base += c * p.a_batch_strides[d];
        b_base += c * p.b_batch_strides[d];
    }
    return vec2<u32>(a_base, b_base);
}

// Four consecutive k (from k0, a multiple of four) of the row starting at `row`, zero past k
// (the tiled kernels' staging loads): one vec4 load with `ROWS_AS_VEC4` (a quad is then wholly
// inside or past k), else four clamped loads. Rows and columns past the matrix are clamped to
// its last one by the callers: they only feed outputs that are never stored. Past k, both
// operands read zero, so no stray value (an infinity of a mask) reaches a stored output.
fn along_k(row: u32, k0: u32) -> vec4<f32> {
    if (ROWS_AS_VEC4) {
        // Clamped like the scalar loads: the last stage's quads past k stay inside the row.
        return select(vec4<f32>(0.0), arena4[(row + min(k0, p.k - 4u)) / 4u], k0 < p.k);
    }
    let ks = vec4<u32>(k0) + vec4<u32>(0u, 1u, 2u, 3u);
    let at = min(ks, vec4<u32>(p.k - 1u)) + vec4<u32>(row);
    let v = vec4<f32>(arena[at.x], arena[at.y], arena[at.z], arena[at.w]);
    return select(vec4<f32>(0.0), v, ks < vec4<u32>(p.k));
}

fn store_one(out_base: u32, r: u32, c: u32, v: f32) {
    var x = v;
    if (p.has_bias != 0u) {
        x += arena[p.bias_offset + c];
    }
    if (p.act != 0xffffffffu) {
        x = apply_unary(p.act, x);
    }
    // Which of up to three outputs, by comparisons: an integer division costs dozens of
    // instructions per stored value (QKV 4096x384 -> 1152: 211 -> 202 µs on the H200).
    let w = p.split_width;
    let which = select(0u, 1u, c >= w) + select(0u, 1u, c >= 2u * w);
    let col = c - which * w;
    arena[p.out_offsets[which] + out_base + r * p.out_stride_m + col] = x;
}

// One output column as the tiled kernels' epilogue stores it: where its row 0 lies (after the
// split-write's choice of output), its bias, and whether it exists. The tiled kernels give each
// invocation one column and walk it down the tile's rows, so that a warp stores 32 consecutive
// values per instruction and the bias, the output choice and the activation's call site are
// computed or inlined once rather than per value (storing four consecutive columns per
// invocation, every store instruction of a warp touched four times the memory sectors it
// filled: a 4096x16 -> 1024 linear, almost all epilogue, took 32 µs on the H200).
struct OutColumn {
    at: u32,
    bias: f32,
    inside: bool,
}

fn out_column(out_base: u32, c: u32) -> OutColumn {
    let inside = c < p.n;
    var bias = 0.0;
    if (p.has_bias != 0u && inside) {
        bias = arena[p.bias_offset + c];
    }
    let w = p.split_width;
    let which = select(0u, 1u, c >= w) + select(0u, 1u, c >= 2u * w);
    return OutColumn(p.out_offsets[which] + out_base + c - which * w, bias, inside);
}

// Stores row r of a column: bias, activation, and nothing past the matrix.
fn store_in_column(col: OutColumn, r: u32, v: f32) {
    if (!col.inside || r >= p.m) {
        return;
    }
    var x = v + col.bias;
    if (p.act != 0xffffffffu) {
        x = apply_unary(p.act, x);
    }
    arena[col.at + r * p.out_stride_m] = x;
}

// The XOR applied to a staged slice's vec4 index at k (the tiled kernels stage A and B as
// [k][row quad ^ swizzle(k)]), so that the four k-quads one warp stores land in different
// banks; reads stay conflict-free, as it permutes the quads within a k.
fn swizzle(k: u32) -> u32 {
    return (k / 4u) % 8u;
}
