// @file movement.wgsl
// Data movement over the f32 arena window.
//
// `strided_copy` walks a copy shape of up to 8 dims and moves element (c0..cr) from
// in_offset + sum(c_d * in_strides[d]) to out_offset + sum(c_d * out_strides[d]), converting the
// word on the way. With the right strides it is a transpose (permuted input strides), a narrow
// (shifted input offset), an expand (zero input strides), one input of a concat (a window of
// the output), a cast, or a plain copy for staging between arena regions.
// `gather` is numpy take: out[o, j, i] = table[o, idx[j], i]; `gather_quads` the same four
// consecutive i at a time, where the rows are 16-byte aligned.
// `update_rows` writes out[o, start + r, i] = update[o, r, i] for the rows inside out (the rest
// of out is dest, already there when updating in place, else copied by a preceding dispatch);
// wid.z picks one of up to four such updates of equal shapes and start (a decoder's K and V).

struct CopyParams {
    numel: u32,
    rank: u32,
    in_offset: u32,
    out_offset: u32,
    grid_width: u32,
    // 0 copy the word, 1 float -> int (truncate, clamp to [lo, hi], NaN -> 0), 2 int -> float,
    // 3 uint -> float, 4 float -> bool, 5 int -> bool, 6 int -> int (clamp to [lo, hi]).
    convert: u32,
    lo: i32,
    hi: i32,
    shape: array<vec4<u32>, 2>,
    in_strides: array<vec4<u32>, 2>,
    out_strides: array<vec4<u32>, 2>,
}

struct GatherParams {
    outer: u32,
    axis_size: u32,
    num_indices: u32,
    inner: u32,
    table_offset: u32,
    index_offset: u32,
    out_offset: u32,
    grid_width: u32,
}

struct UpdateRowsParams {
    outer: u32,
    dest_rows: u32,
    rows: u32,
    inner: u32,
    start_offset: u32,
    grid_width: u32,
    _pad0: u32,
    _pad1: u32,
    // Per job (wid.z).
    update_offsets: vec4<u32>,
    out_offsets: vec4<u32>,
}

@group(0) @binding(0) var<storage, read_write> arena: array<f32>;
@group(0) @binding(1) var<uniform> cp: CopyParams;
@group(0) @binding(1) var<uniform> gp: GatherParams;
@group(0) @binding(1) var<uniform> up: UpdateRowsParams;
// The arena again as vec4s (`gather_quads` only).
@group(0) @binding(2) var<storage, read_write> arena4: array<vec4<f32>>;

fn convert_word(w: f32) -> f32 {
    switch cp.convert {
        case 1u: {
            if (w != w) {
                return bitcast<f32>(0i);
            }
            let t = trunc(clamp(w, f32(cp.lo), f32(cp.hi)));
            // f32(hi) may round above hi (e.g. i32::MAX); clamp again in the integer domain.
            return bitcast<f32>(clamp(i32(t), cp.lo, cp.hi));
        }
        case 2u: { return f32(bitcast<i32>(w)); }
        case 3u: { return f32(bitcast<u32>(w)); }
        case 4u: { return select(0.0, 1.0, w != 0.0); }
        case 5u: { return select(0.0, 1.0, bitcast<i32>(w) != 0i); }
        case 6u: { return bitcast<f32>(clamp(bitcast<i32>(w), cp.lo, cp.hi)); }
        default: { return w; }
    }
}

@compute @workgroup_size(64)
fn strided_copy(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * cp.grid_width;
    if (i >= cp.numel) {
        return;
    }
    var rem = i;
    var src = cp.in_offset;
    var dst = cp.out_offset;
    for (var d = i32(cp.rank) - 1; d >= 0; d--) {
        let q = u32(d) / 4u;
        let r = u32(d) % 4u;
        let size = cp.shape[q][r];
        let c = rem % size;
        rem = rem / size;
        src += c * cp.in_strides[q][r];
        dst += c * cp.out_strides[q][r];
    }
    arena[dst] = convert_word(arena[src]);
}

// Where output row `row` (num_indices of them per outer index) comes from: the table row's
// offset in words from table_offset, unless its index lies outside the table (a kernel cannot
// raise: such rows read as zeros).
struct GatherSource {
    at: u32,
    inside: bool,
}

fn gather_source(row: u32) -> GatherSource {
    // One division per row where the gather has no outer dims (an embedding lookup).
    var o = 0u;
    var j = row;
    if (gp.outer > 1u) {
        o = row / gp.num_indices;
        j = row - o * gp.num_indices;
    }
    let index = bitcast<i32>(arena[gp.index_offset + j]);
    let inside = index >= 0i && u32(index) < gp.axis_size;
    return GatherSource((o * gp.axis_size + u32(index)) * gp.inner, inside);
}

@compute @workgroup_size(64)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * gp.grid_width;
    let total = gp.outer * gp.num_indices * gp.inner;
    if (i >= total) {
        return;
    }
    let row = i / gp.inner;
    let source = gather_source(row);
    var v = 0.0;
    if (source.inside) {
        v = arena[gp.table_offset + source.at + i - row * gp.inner];
    }
    arena[gp.out_offset + i] = v;
}

// `gather` for rows of inner a multiple of four, with the table and the output at 16-byte
// offsets: one vec4 per invocation (MiniLM's embedding lookups took 21 µs each with one
// element per invocation on the H200).
@compute @workgroup_size(64)
fn gather_quads(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x + gid.y * gp.grid_width;
    let quads = gp.inner / 4u;
    if (i >= gp.outer * gp.num_indices * quads) {
        return;
    }
    let row = i / quads;
    let source = gather_source(row);
    var v = vec4<f32>(0.0);
    if (source.inside) {
        v = arena4[(gp.table_offset + source.at) / 4u + i - row * quads];
    }
    arena4[gp.out_offset / 4u + i] = v;
}

@compute @workgroup_size(64)
fn update_rows(@builtin(global_invocation_id) gid: vec3<u32>) {
    let job = gid.z;
    let i = gid.x + gid.y * up.grid_width;
    if (i >= up.outer * up.rows * up.inner) {
        return;
    }
    let inner_i = i % up.inner;
    let r = (i / up.inner) % up.rows;
    let o = i / (up.inner * up.rows);
    // A kernel cannot raise: rows outside out are dropped.
    let at = bitcast<i32>(arena[up.start_offset]) + i32(r);
    if (at < 0i || u32(at) >= up.dest_rows) {
        return;
    }
    let dst = up.out_offsets[job] + (o * up.dest_rows + u32(at)) * up.inner + inner_i;
    arena[dst] = arena[up.update_offsets[job] + i];
}
