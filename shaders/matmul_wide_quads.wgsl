// @file matmul_wide_quads.wgsl
// The epilogue of `matmul_wide_quads` (appended to matmul_wide.wgsl, with ROWS_AS_VEC4 set),
// for outputs whose every row and column quad starts on 16 bytes (offsets, row stride, split
// width, n and the bias offset multiples of four): each invocation stores its accumulators
// straight from registers as vec4s, with no pass through workgroup memory and no barrier.
// Against the staged epilogue, one source for both with a pipeline constant choosing between
// them ran slower than either alone (4096^3 3.74 -> 3.89 ms, H200), hence two files.

// Activation ids (activations.wgsl) that `store_tile` compiles in.
const ACT_NONE: u32 = 0xffffffffu;
const ACT_RELU: u32 = 0u;
const ACT_GELU: u32 = 9u;
const ACT_GELU_TANH: u32 = 10u;
const ACT_SILU: u32 = 11u;

// One column quad of the output as `store_quads` writes it: where its row 0 lies (after the
// split-write's choice of output), its bias, and whether it exists (n is a multiple of four,
// so a quad is wholly inside or past it).
struct OutQuad {
    at: u32,
    bias: vec4<f32>,
    inside: bool,
}

fn out_quad(out_base: u32, c: u32) -> OutQuad {
    let inside = c < p.n;
    var bias = vec4<f32>(0.0);
    if (p.has_bias != 0u && inside) {
        bias = arena4[(p.bias_offset + c) / 4u];
    }
    let w = p.split_width;
    let which = select(0u, 1u, c >= w) + select(0u, 1u, c >= 2u * w);
    return OutQuad(p.out_offsets[which] + out_base + c - which * w, bias, inside);
}

fn store_quad(act: u32, q: OutQuad, r: u32, v: vec4<f32>) {
    if (!q.inside || r >= p.m) {
        return;
    }
    var x = v + q.bias;
    if (act != ACT_NONE) {
        x = vec4<f32>(apply_unary(act, x.x), apply_unary(act, x.y), apply_unary(act, x.z),
            apply_unary(act, x.w));
    }
    arena4[(q.at + r * p.out_stride_m) / 4u] = x;
}

// The quad epilogue (see QUAD_STORES) with activation `act`: invocation (tx, ty)'s rows ty*4..+4 and 64+ty*4..+4
// (accumulator rows 0-3 and 4-7), columns tx*4..+4 (`l`) and 64+tx*4..+4 (`h`). A warp stores
// two rows of 256 contiguous bytes per instruction, so no sector is written twice.
fn store_quads(act: u32, out_base: u32, row0: u32, col0: u32, ty: u32, tx: u32,
    c0l: vec4<f32>, c0h: vec4<f32>, c1l: vec4<f32>, c1h: vec4<f32>,
    c2l: vec4<f32>, c2h: vec4<f32>, c3l: vec4<f32>, c3h: vec4<f32>,
    c4l: vec4<f32>, c4h: vec4<f32>, c5l: vec4<f32>, c5h: vec4<f32>,
    c6l: vec4<f32>, c6h: vec4<f32>, c7l: vec4<f32>, c7h: vec4<f32>) {
    let ql = out_quad(out_base, col0 + tx * 4u);
    let qh = out_quad(out_base, col0 + 64u + tx * 4u);
    let r = row0 + ty * 4u;
    store_quad(act, ql, r, c0l);
    store_quad(act, qh, r, c0h);
    store_quad(act, ql, r + 1u, c1l);
    store_quad(act, qh, r + 1u, c1h);
    store_quad(act, ql, r + 2u, c2l);
    store_quad(act, qh, r + 2u, c2h);
    store_quad(act, ql, r + 3u, c3l);
    store_quad(act, qh, r + 3u, c3h);
    store_quad(act, ql, r + 64u, c4l);
    store_quad(act, qh, r + 64u, c4h);
    store_quad(act, ql, r + 65u, c5l);
    store_quad(act, qh, r + 65u, c5h);
    store_quad(act, ql, r + 66u, c6l);
    store_quad(act, qh, r + 66u, c6h);
    store_quad(act, ql, r + 67u, c7l);
    store_quad(act, qh, r + 67u, c7h);
}

// Stores the tile of invocation (tx, ty)'s accumulators (see `matmul_wide`).
fn store_tile(tid: u32, wid: vec3<u32>, row0: u32, col0: u32, tx: u32, ty: u32,
    c0l: vec4<f32>, c0h: vec4<f32>, c1l: vec4<f32>, c1h: vec4<f32>,
    c2l: vec4<f32>, c2h: vec4<f32>, c3l: vec4<f32>, c3h: vec4<f32>,
    c4l: vec4<f32>, c4h: vec4<f32>, c5l: vec4<f32>, c5h: vec4<f32>,
    c6l: vec4<f32>, c6h: vec4<f32>, c7l: vec4<f32>, c7h: vec4<f32>) {
    // The activation is switched on once per workgroup, each case storing with its own
    // activation inlined; any other applies `p.act` per value. Switched per value, it took
    // MiniLM's FFN up with GELU to 237 µs instead of 162 (32 x 128, H200); one pipeline per
    // activation made the model slower in one pass (3.86 against 3.83 ms with the staged
    // epilogue, 3.69 with this switch).
    let out_base = wid.z * p.m * p.out_stride_m;
    switch p.act {
        case ACT_NONE: {
            store_quads(ACT_NONE, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
        case ACT_RELU: {
            store_quads(ACT_RELU, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
        case ACT_GELU: {
            store_quads(ACT_GELU, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
        case ACT_GELU_TANH: {
            store_quads(ACT_GELU_TANH, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
        case ACT_SILU: {
            store_quads(ACT_SILU, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
        default: {
            store_quads(p.act, out_base, row0, col0, ty, tx, c0l, c0h, c1l, c1h, c2l, c2h,
                c3l, c3h, c4l, c4h, c5l, c5h, c6l, c6h, c7l, c7h);
        }
    }
}
