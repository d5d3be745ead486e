// Rotary position embedding over rank-4 head tensors.
//
// Every head vector (one (batch, seq, head) row) has `half` = rotary_dims / 2 pairs to rotate
// and, when the output is another tensor than the input, `tail` = head_dim - rotary_dims
// elements to copy. One invocation handles one pair or one tail element. Operands are addressed
// by element offsets and (batch, seq, head) strides, so BSHD, BHSD and strided views all work.
// Grids larger than 65535 workgroups are folded into y. One dispatch may rotate two tensors
// with the same attributes and positions (a decoder's Q and K): invocations below `split` work
// on job 0, the rest on job 1, each with its own heads, offsets and strides.

struct RopeParams {
    // rows * per_row invocations do work.
    work: u32,
    // half + tail.
    per_row: u32,
    half: u32,
    seq: u32,
    interleaved: u32,
    has_offset_input: u32,
    offset_word: u32,
    position_offset: u32,
    grid_width: u32,
    // -2 log2(theta) / rotary_dims (computed in f64 on the host): pair i turns by
    // pos * exp2(i * this).
    log2_freq_step: f32,
    // Invocations of job 0 (= work with one job).
    split: u32,
    _pad0: u32,
    // Per job (x: job 0, y: job 1): heads, input and output offsets.
    heads: vec4<u32>,
    x_offsets: vec4<u32>,
    out_offsets: vec4<u32>,
    // Per job, (batch, seq, head, unused) strides in elements; head_dim is contiguous.
    x_strides: array<vec4<u32>, 2>,
    out_strides: array<vec4<u32>, 2>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> p: RopeParams;

// 2*pi as 6.28125 (8 significant bits, so k * TWO_PI_HI is exact for k < 2^16) plus the
// rounded remainder: Cody-Waite reduction keeps the argument of sin/cos within [-pi, pi], the
// only range where Vulkan bounds their error.
const TWO_PI_HI: f32 = 6.28125;
const TWO_PI_LO: f32 = 0.0019353071795864769;
const INV_TWO_PI: f32 = 0.15915494309189535;

// The position of sequence index s: the static offset plus the optional integer input.
fn position(s: u32) -> f32 {
    var pos = i32(p.position_offset) + i32(s);
    if (p.has_offset_input != 0u) {
        pos += bitcast<i32>(arena[p.offset_word]);
    }
    return f32(pos);
}

// The angle pos * theta^(-2i / rotary_dims), reduced to [-pi, pi].
fn angle(pos: f32, i: u32) -> f32 {
    let a = pos * exp2(f32(i) * p.log2_freq_step);
    let k = round(a * INV_TWO_PI);
    return (a - k * TWO_PI_HI) - k * TWO_PI_LO;
}

// Word offsets of the two elements of pair i within a row.
fn pair(i: u32) -> vec2<u32> {
    if (p.interleaved != 0u) {
        return vec2<u32>(2u * i, 2u * i + 1u);
    }
    return vec2<u32>(i, i + p.half);
}

@compute @workgroup_size(64)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>) {
    let g = gid.x + gid.y * p.grid_width;
    if (g >= p.work) {
        return;
    }
    let job = u32(g >= p.split);
    let n = g - select(0u, p.split, job == 1u);
    let heads = p.heads[job];
    let row = n / p.per_row;
    let item = n % p.per_row;
    let h = row % heads;
    let s = (row / heads) % p.seq;
    let b = row / (heads * p.seq);
    let xs = p.x_strides[job];
    let os = p.out_strides[job];
    let x_base = p.x_offsets[job] + b * xs.x + s * xs.y + h * xs.z;
    let o_base = p.out_offsets[job] + b * os.x + s * os.y + h * os.z;

    if (item >= p.half) {
        // A pass-through element after the rotary dims.
        let d = item + p.half;
        arena[o_base + d] = arena[x_base + d];
        return;
    }
    let e = pair(item);
    let x1 = arena[x_base + e.x];
    let x2 = arena[x_base + e.y];
    let a = angle(position(s), item);
    let c = cos(a);
    let sn = sin(a);
    arena[o_base + e.x] = x1 * c - x2 * sn;
    arena[o_base + e.y] = x1 * sn + x2 * c;
}
