//! Quantized kernels (GGUF Q4_0, Q4_1, Q8_0) on the Vulkan device against kiln-reference: the
//! matmul with a quantized `[N, K]` weight (GEMV variant for few rows, tiled for more; bias and
//! activation epilogue; QKV split-write) and the embedding gather from a quantized table, through
//! `run_eager` and through the planned `Executable` (whole arena and 8 KiB bindings).
//!
//! Tolerances. The reference dequantizes exactly as the kernels do: `d * q` is exact in f32
//! (an 11-bit f16 significand times an integer below 2^8), and Q4_1's `d * q + m` rounds once
//! either way, so the dequantized weights are bit-identical and a quantized gather must match
//! exactly (tolerance 0). A matmul output differs only by f32 accumulation (the kernels sum in a
//! different order, partly by tree reduction) against the reference's f64. Activations are
//! uniform in [-1, 1] and the dequantized weights stay within about [-1, 1] (the test quantizer
//! maps each block's extreme value to itself), so each of the K terms is at most s = 1 in
//! magnitude, partial sums are about sqrt(K) s, and the f32 error of a K-term sum is about
//! K * 2^-24 * s (3.4e-5 s at K = 576, in the worst case for random signs a few times more).
//! An absolute 1e-5 * sqrt(K) * s (2.4e-4 at K = 576) bounds that with a margin of at least
//! 7x, while any indexing or decoding mistake moves an output by O(s). The epilogue adds a
//! relative 1e-5 for the device's own transcendentals (exp in SiLU, tanh in GELU).

mod common;

use kiln::ir::{Activation, DType, Dim, Graph, HostTensor, NodeId, Op, Shape};
use kiln::plan::StepKind;
use kiln::reference::evaluate;
use kiln::runtime::{run_eager, CompileOptions, Device, Executable};

const FORMATS: [DType; 3] = [DType::Q4_0, DType::Q4_1, DType::Q8_0];
const ACTS: [Option<Activation>; 4] = [
    None,
    Some(Activation::Relu),
    Some(Activation::Silu),
    Some(Activation::GeluTanh),
];

/// Absolute tolerance of a K-term dot product of terms of magnitude at most 1 (see the top).
fn abs_tol(k: usize) -> f32 {
    1e-5 * (k as f32).sqrt()
}
const REL_TOL: f32 = 1e-5;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// `v` rounded to f16 (round half up on the significand), as (bits, value). Only the normal
/// f16 range is needed here; smaller magnitudes flush to zero.
fn f16_round(v: f32) -> (u16, f32) {
    if v.abs() < 6.2e-5 {
        return (0, 0.0);
    }
    assert!(v.abs() < 65_000.0, "{v} is out of the f16 range");
    let r = (v.to_bits() + 0x1000) & !0x1fff;
    let sign = (r >> 16) & 0x8000;
    let exp = ((r >> 23) & 0xff) as i32 - 127 + 15;
    let bits = sign | ((exp as u32) << 10) | ((r >> 13) & 0x3ff);
    (bits as u16, f32::from_bits(r))
}

/// Quantizes one block of 32 values the way GGUF's reference quantizers do.
fn quantize_block(dtype: DType, v: &[f32], out: &mut Vec<u8>) {
    let inv = |d: f32| if d == 0.0 { 0.0 } else { 1.0 / d };
    match dtype {
        DType::Q8_0 => {
            let amax = v.iter().fold(0f32, |a, x| a.max(x.abs()));
            let (bits, d) = f16_round(amax / 127.0);
            out.extend_from_slice(&bits.to_le_bytes());
            out.extend(
                v.iter()
                    .map(|x| (x * inv(d)).round().clamp(-127.0, 127.0) as i8 as u8),
            );
        }
        DType::Q4_0 => {
            // The value of largest magnitude maps to q = 0, i.e. -8 d.
            let mx = v
                .iter()
                .fold(0f32, |a, &x| if x.abs() > a.abs() { x } else { a });
            let (bits, d) = f16_round(mx / -8.0);
            out.extend_from_slice(&bits.to_le_bytes());
            let q = |x: f32| (x * inv(d) + 8.0).round().clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(v[j]) | (q(v[j + 16]) << 4)));
        }
        DType::Q4_1 => {
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let (dbits, d) = f16_round((hi - lo) / 15.0);
            let (mbits, m) = f16_round(lo);
            out.extend_from_slice(&dbits.to_le_bytes());
            out.extend_from_slice(&mbits.to_le_bytes());
            let q = |x: f32| ((x - m) * inv(d)).round().clamp(0.0, 15.0) as u8;
            out.extend((0..16).map(|j| q(v[j]) | (q(v[j + 16]) << 4)));
        }
        _ => unreachable!("{dtype} is not quantized"),
    }
}

/// A random quantized tensor of `shape` (blocks along the last axis).
fn quantized(dtype: DType, shape: &[usize], seed: u64) -> HostTensor {
    let n: usize = shape.iter().product();
    let mut bytes = Vec::new();
    for block in values(n, seed).chunks_exact(32) {
        quantize_block(dtype, block, &mut bytes);
    }
    HostTensor::from_bytes(dtype, shape, bytes).unwrap()
}

fn f32s(shape: &[usize], seed: u64) -> HostTensor {
    HostTensor::from_f32(shape, &values(shape.iter().product(), seed)).unwrap()
}

/// A graph with its params, inputs and, per output, a label and the tolerance it is held to
/// (`None`: exact).
#[derive(Default)]
struct Case {
    g: Graph,
    params: Vec<(String, HostTensor)>,
    inputs: Vec<(String, HostTensor)>,
    checks: Vec<(String, Option<usize>)>,
}

impl Case {
    fn input(&mut self, t: HostTensor) -> NodeId {
        let name = format!("x{}", self.inputs.len());
        let id = self.g.input(&name, t.dtype, t.shape.as_slice()).unwrap();
        self.inputs.push((name, t));
        id
    }

    fn param(&mut self, t: HostTensor) -> NodeId {
        let name = format!("p{}", self.params.len());
        let id = self.g.param(&name, t.dtype, t.shape.as_slice()).unwrap();
        self.params.push((name, t));
        id
    }

    /// Marks `id` an output compared within the tolerance of a `k`-term dot product.
    fn output(&mut self, id: NodeId, k: Option<usize>, what: String) {
        self.g.output(id).unwrap();
        self.checks.push((what, k));
    }

    fn params(&self) -> Vec<(&str, HostTensor)> {
        self.params
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect()
    }

    fn inputs(&self) -> Vec<(&str, HostTensor)> {
        self.inputs
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect()
    }

    fn reference(&self) -> Vec<HostTensor> {
        evaluate(&self.g, &self.params(), &self.inputs()).unwrap_or_else(|e| panic!("{e}"))
    }

    fn compare(&self, got: &[HostTensor], want: &[HostTensor], how: &str) {
        assert_eq!(got.len(), self.checks.len(), "{how}");
        for ((g, w), (what, k)) in got.iter().zip(want).zip(&self.checks) {
            assert_eq!((g.dtype, &g.shape), (w.dtype, &w.shape), "{how}: {what}");
            let what = format!("{how}: {what}");
            match k {
                Some(k) => {
                    common::assert_close(&g.to_f32(), &w.to_f32(), abs_tol(*k), REL_TOL, &what)
                }
                None => assert_eq!(g.to_f32(), w.to_f32(), "{what}"),
            }
        }
    }

    fn run_eager(&self, how: &str) {
        let got = run_eager(&common::device(), &self.g, &self.params(), &self.inputs())
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        self.compare(&got, &self.reference(), how);
    }

    /// Compiles for `dev`, sets the params (packed ones from raw bytes), runs and compares.
    fn run_planned(&self, dev: &Device, how: &str) -> Executable {
        let mut exe = Executable::compile(dev, &self.g, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{how}: {e}"));
        for (n, t) in &self.params {
            if t.dtype.is_quantized() {
                exe.set_param_bytes(n, &t.bytes).unwrap();
            } else {
                exe.set_param(n, t).unwrap();
            }
        }
        let inputs: Vec<(&str, &HostTensor)> =
            self.inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let got = exe.run(&inputs).unwrap_or_else(|e| panic!("{how}: {e}"));
        self.compare(&got, &self.reference(), how);
        exe
    }
}

/// Every (M, K, N) of the grid, each as a plain `MatMul` and as a `FusedMatMulBiasAct` (bias
/// and activation varying), in one graph.
fn matmul_grid(dtype: DType, ms: &[usize], ks: &[usize], ns: &[usize]) -> Case {
    let mut c = Case::default();
    let mut i = 0u64;
    for &m in ms {
        for &k in ks {
            let x = c.input(f32s(&[m, k], 1000 + i));
            for &n in ns {
                i += 1;
                let w = c.param(quantized(dtype, &[n, k], i));
                let y = c.g.matmul_t(x, w).unwrap();
                c.output(y, Some(k), format!("{dtype} {m}x{k}x{n}"));
                let act = ACTS[i as usize % ACTS.len()];
                let bias = (!i.is_multiple_of(3)).then(|| c.param(f32s(&[n], 500 + i)));
                let y = c.g.fused_matmul_bias_act(x, w, bias, act, true).unwrap();
                let what = format!("{dtype} {m}x{k}x{n} bias={} {act:?}", bias.is_some());
                c.output(y, Some(k), what);
            }
        }
    }
    c
}

#[test]
fn matmul_every_format_and_shape_eager() {
    for dtype in FORMATS {
        matmul_grid(dtype, &[1, 3, 7, 17, 130], &[32, 96, 576], &[1, 7, 64, 200])
            .run_eager(&format!("eager {dtype}"));
    }
}

#[test]
fn leading_dims_fold_into_rows() {
    for (dtype, shape) in [(DType::Q4_1, [2, 3, 64]), (DType::Q8_0, [2, 65, 64])] {
        let mut c = Case::default();
        let x = c.input(f32s(&shape, 7));
        let w = c.param(quantized(dtype, &[40, 64], 8));
        let b = c.param(f32s(&[40], 9));
        let y =
            c.g.fused_matmul_bias_act(x, w, Some(b), None, true)
                .unwrap();
        c.output(y, Some(64), format!("{dtype} {shape:?}"));
        c.run_eager("eager");
        c.run_planned(&common::device(), "planned");
    }
}

/// The SmolLM2-135M projections at decode (M = 1), including the tied Q8_0 output head.
#[test]
fn smollm2_decode_shapes() {
    let mut c = Case::default();
    let x576 = c.input(f32s(&[1, 576], 1));
    let x1536 = c.input(f32s(&[1, 1536], 2));
    for (i, (dtype, n, k)) in [
        (DType::Q4_0, 576, 576),
        (DType::Q4_1, 192, 576),
        (DType::Q8_0, 1536, 576),
        (DType::Q4_0, 576, 1536),
        (DType::Q8_0, 49_152, 576),
    ]
    .into_iter()
    .enumerate()
    {
        let x = if k == 576 { x576 } else { x1536 };
        let w = c.param(quantized(dtype, &[n, k], 40 + i as u64));
        let y = c.g.matmul_t(x, w).unwrap();
        c.output(y, Some(k), format!("{dtype} 1x{k}x{n}"));
    }
    c.run_planned(&common::device(), "planned");
}

/// The planner's fusions around a quantized matmul: `MatMul → Add → Activation` (matmul
/// epilogue), and `MatMul [→ Add] → three narrows` (QKV split-write), besides plain matmuls.
fn fusion_graph(dtype: DType, ms: &[usize], ks: &[usize], ns: &[usize], ws: &[usize]) -> Case {
    let mut c = Case::default();
    let mut i = 0usize;
    for &m in ms {
        for &k in ks {
            i += 1;
            let seed = i as u64 * 10;
            let (n, w3) = (ns[i % ns.len()], ws[i % ws.len()]);
            let x = c.input(f32s(&[m, k], seed));
            // Epilogue: bias, then an activation (or none).
            let w = c.param(quantized(dtype, &[n, k], seed + 1));
            let b = c.param(f32s(&[n], seed + 2));
            let y = c.g.matmul_t(x, w).unwrap();
            let mut y = c.g.add_op(y, b).unwrap();
            let act = ACTS[i % ACTS.len()];
            if let Some(a) = act {
                y = c.g.activation(a, y).unwrap();
            }
            c.output(y, Some(k), format!("{dtype} epilogue {m}x{k}x{n} {act:?}"));
            // QKV split, with a bias every other time.
            let wqkv = c.param(quantized(dtype, &[3 * w3, k], seed + 3));
            let mut qkv = c.g.matmul_t(x, wqkv).unwrap();
            let with_bias = i.is_multiple_of(2);
            if with_bias {
                let bq = c.param(f32s(&[3 * w3], seed + 4));
                qkv = c.g.add_op(qkv, bq).unwrap();
            }
            for part in 0..3 {
                let p = c.g.narrow(qkv, 1, part * w3, w3).unwrap();
                let what = format!("{dtype} qkv {m}x{k}x{w3} part {part} bias={with_bias}");
                c.output(p, Some(k), what);
            }
        }
    }
    c
}

fn count_steps(exe: &Executable) -> (usize, usize) {
    let steps = &exe.plan().steps;
    let epilogues = steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::MatmulEpilogue { .. }))
        .count();
    let splits = steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::QkvSplit { .. }))
        .count();
    (epilogues, splits)
}

#[test]
fn planned_fusions_whole_arena() {
    for dtype in FORMATS {
        let c = fusion_graph(
            dtype,
            &[1, 3, 17, 130],
            &[32, 96, 576],
            &[1, 7, 64, 200],
            &[7, 64],
        );
        let exe = c.run_planned(&common::device(), &format!("planned {dtype}"));
        assert_eq!(count_steps(&exe), (12, 12), "{dtype}: every fusion fired");
    }
}

#[test]
fn planned_fusions_tiny_bindings() {
    for dtype in FORMATS {
        let c = fusion_graph(dtype, &[1, 3, 12], &[32, 64], &[24, 7], &[8]);
        let exe = c.run_planned(&common::tiny_device(), &format!("tiny {dtype}"));
        assert_eq!(count_steps(&exe), (6, 6), "{dtype}: every fusion fired");
        assert!(!exe.plan().whole_arena, "{dtype}: the arena is windowed");
        assert!(exe.plan().scratch_bytes > 0, "{dtype}: some step is staged");
    }
}

/// Matmuls of one input against their own weights of mixed formats, with column counts that do
/// not fill a workgroup's columns, as one sibling step; rows take the GEMV and tiled variants.
fn sibling_graph(ms: &[usize], ks: &[usize], ns: &[usize]) -> Case {
    let mut c = Case::default();
    let mut seed = 0u64;
    for &m in ms {
        for &k in ks {
            seed += 10;
            let x = c.input(f32s(&[m, k], seed));
            for (i, &n) in ns.iter().enumerate() {
                let dtype = FORMATS[(i + seed as usize / 10) % FORMATS.len()];
                let w = c.param(quantized(dtype, &[n, k], seed + i as u64 + 1));
                let y = c.g.matmul_t(x, w).unwrap();
                c.output(y, Some(k), format!("sibling {i} {dtype} {m}x{k}x{n}"));
            }
        }
    }
    c
}

fn sibling_steps(exe: &Executable) -> Vec<usize> {
    exe.plan()
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::SiblingMatmuls { matmuls, .. } => Some(matmuls.len()),
            _ => None,
        })
        .collect()
}

#[test]
fn sibling_matmuls_share_one_dispatch() {
    let c = sibling_graph(&[1, 3, 17, 130], &[32, 96], &[7, 40, 13]);
    let exe = c.run_planned(&common::device(), "siblings");
    assert_eq!(sibling_steps(&exe), [3; 8]);
    // Five siblings: four in one step, the fifth alone.
    let c = sibling_graph(&[2], &[64], &[8, 3, 16, 5, 24]);
    let exe = c.run_planned(&common::device(), "five siblings");
    assert_eq!(sibling_steps(&exe), [4]);
    let c = sibling_graph(&[1, 12], &[32, 64], &[9, 24]);
    let exe = c.run_planned(&common::tiny_device(), "tiny siblings");
    assert_eq!(sibling_steps(&exe), [2; 4]);
    assert!(exe.plan().scratch_bytes > 0, "some step is staged");
}

/// SwiGLU over two quantized projections of one input, `silu(x·gateᵀ) * (x·upᵀ)`, in the
/// shape a decoder writes it, for gate widths that fill neither a GEMV workgroup's four gate
/// columns nor a tile's 32, at GEMV and tiled row counts.
///
/// Tolerance: each product is within abs_tol(k) of the reference, and the gated product moves
/// by at most |silu'(g)| |Δg| |u| + |silu(g)| |Δu| ≤ (1.1 |u| + |g|) abs_tol(k); the products
/// are sums of k terms of magnitude ≤ 1 with random signs, so about sqrt(k) (a few times that
/// at most here), and abs_tol(4 k²) = 2 sqrt(k) abs_tol(k) covers it.
fn glu_case(ms: &[usize], k: usize, fs: &[usize]) -> Case {
    let mut c = Case::default();
    for (i, &m) in ms.iter().enumerate() {
        let x = c.input(f32s(&[m, k], 900 + i as u64));
        for (j, &f) in fs.iter().enumerate() {
            let dtype = FORMATS[(i + j) % FORMATS.len()];
            let seed = 100 * i as u64 + 10 * j as u64;
            let wg = c.param(quantized(dtype, &[f, k], seed + 1));
            let wu = c.param(quantized(dtype, &[f, k], seed + 2));
            let gate = c.g.matmul_t(x, wg).unwrap();
            let up = c.g.matmul_t(x, wu).unwrap();
            let s = c.g.activation(Activation::Silu, gate).unwrap();
            let y = if j % 2 == 0 {
                c.g.mul(s, up).unwrap()
            } else {
                c.g.mul(up, s).unwrap()
            };
            c.output(y, Some(4 * k * k), format!("swiglu {dtype} {m}x{k}x{f}"));
        }
    }
    c
}

fn glu_steps(exe: &Executable) -> usize {
    exe.plan()
        .steps
        .iter()
        .filter(|s| matches!(s.kind, StepKind::SiblingMatmuls { glu: Some(_), .. }))
        .count()
}

#[test]
fn swiglu_writes_only_the_gated_product() {
    let c = glu_case(&[1, 5, 40], 64, &[3, 36, 70]);
    let exe = c.run_planned(&common::device(), "swiglu");
    assert_eq!(glu_steps(&exe), 9);
    let c = glu_case(&[2, 12], 32, &[9, 40, 24]);
    let exe = c.run_planned(&common::tiny_device(), "tiny swiglu");
    assert_eq!(glu_steps(&exe), 6);
    assert!(exe.plan().scratch_bytes > 0, "some step is staged");
}

/// One executable for `seq <= 130` runs the tiled variant at long extents and the GEMV at short
/// ones (the extent change rewrites params and grid of the same pipeline).
#[test]
fn active_extent_switches_variants() {
    let seq = Dim::bounded("seq", 130);
    let mut c = Case::default();
    let x =
        c.g.input("x", DType::F32, Shape(vec![seq.clone(), Dim::Static(96)]))
            .unwrap();
    let w = c.param(quantized(DType::Q4_1, &[72, 96], 3));
    let b = c.param(f32s(&[72], 4));
    let y = c.g.matmul_t(x, w).unwrap();
    let y = c.g.add_op(y, b).unwrap();
    let y = c.g.activation(Activation::Silu, y).unwrap();
    c.output(y, Some(96), "seq x 96 x 72".into());
    let mut exe = Executable::compile(&common::device(), &c.g, &CompileOptions::default()).unwrap();
    for (n, t) in &c.params {
        if t.dtype.is_quantized() {
            exe.set_param_bytes(n, &t.bytes).unwrap();
        } else {
            exe.set_param(n, t).unwrap();
        }
    }
    for len in [130, 1, 17, 3, 130, 1] {
        c.inputs = vec![("x".into(), f32s(&[len, 96], len as u64))];
        let got = exe.run(&[("x", &c.inputs[0].1)]).unwrap();
        c.compare(&got, &c.reference(), &format!("seq = {len}"));
    }
}

fn gather_case(dtype: DType, rows: usize, dim: usize, ids: &[i32]) -> Case {
    let mut c = Case::default();
    let table = c.param(quantized(dtype, &[rows, dim], rows as u64));
    let idx = c.input(HostTensor::from_i32(&[2, ids.len() / 2], ids).unwrap());
    let y = c.g.gather(table, idx, 0).unwrap();
    c.output(y, None, format!("{dtype} [{rows}, {dim}] gather {ids:?}"));
    c
}

#[test]
fn quantized_gather_is_exact() {
    for dtype in [DType::Q8_0, DType::Q4_1, DType::Q4_0] {
        let c = gather_case(dtype, 50, 96, &[0, 49, 7, 7, 13, 31]);
        c.run_eager("eager");
        c.run_planned(&common::device(), "planned");
        gather_case(dtype, 5, 32, &[4, 0, 2, 1]).run_planned(&common::tiny_device(), "tiny");
    }
}

/// An embedding lookup feeding a quantized projection, as in a decoder's first layer.
#[test]
fn gather_then_quantized_matmul() {
    let mut c = Case::default();
    let table = c.param(quantized(DType::Q8_0, &[64, 96], 1));
    let idx = c.input(HostTensor::from_i32(&[1, 3], &[5, 63, 0]).unwrap());
    let e = c.g.gather(table, idx, 0).unwrap();
    let w = c.param(quantized(DType::Q4_0, &[40, 96], 2));
    let y = c.g.matmul_t(e, w).unwrap();
    c.output(y, Some(96), "embed -> q4_0 proj".into());
    c.run_eager("eager");
    c.run_planned(&common::device(), "planned");
    c.run_planned(&common::tiny_device(), "tiny");
}

/// A decoder block's two norm sites in one graph, per row count: `s = x + r` (also an
/// output: the tee) → RMSNorm → three sibling projections, and `rms_norm(x)` (no residual) →
/// SwiGLU over gate/up (with or without gamma). Each norm folds into its sibling step, which
/// normalises rows as it reads them. Rows: GEMV (1, 3, 6) and tiled (40: two row tiles, the
/// second partial).
///
/// Tolerance as for the plain products and SwiGLU: the normalised rows have entries of about
/// the inputs' size, and the scale is within a few ulps of the reference's. The sum is one
/// f32 addition, which the reference rounds the same way: compared exactly.
fn norm_prologue_case(ms: &[usize], k: usize, widths: [usize; 3]) -> Case {
    let mut c = Case::default();
    for (i, &m) in ms.iter().enumerate() {
        let seed = 700 + 10 * i as u64;
        let x = c.input(f32s(&[m, k], seed));
        let r = c.input(f32s(&[m, k], seed + 1));
        let gamma = c.param(f32s(&[k], seed + 2));
        let s = c.g.add_op(x, r).unwrap();
        // Every other case reads the sum elsewhere (the step writes it), the others do not.
        if i % 2 == 0 {
            c.output(s, None, format!("residual sum {m}x{k}"));
        }
        let n = c.g.rms_norm(s, Some(gamma), 1e-5).unwrap();
        for (j, width) in widths.into_iter().enumerate() {
            let dtype = FORMATS[(i + j) % FORMATS.len()];
            let w = c.param(quantized(dtype, &[width, k], seed + 3 + j as u64));
            let y = c.g.matmul_t(n, w).unwrap();
            c.output(
                y,
                Some(k),
                format!("normed sibling {j} {dtype} {m}x{k}x{width}"),
            );
        }
        // Every other case without gamma; a large eps, so that it shows in the outputs.
        let n2 =
            c.g.rms_norm(x, (i % 2 == 1).then_some(gamma), 0.25)
                .unwrap();
        let wg = c.param(quantized(DType::Q4_1, &[40, k], seed + 7));
        let wu = c.param(quantized(DType::Q8_0, &[40, k], seed + 8));
        let gate = c.g.matmul_t(n2, wg).unwrap();
        let up = c.g.matmul_t(n2, wu).unwrap();
        let a = c.g.activation(Activation::Silu, gate).unwrap();
        let y = c.g.mul(a, up).unwrap();
        c.output(y, Some(4 * k * k), format!("normed swiglu {m}x{k}x40"));
    }
    c
}

fn prologue_steps(exe: &Executable) -> usize {
    exe.plan()
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.kind,
                StepKind::SiblingMatmuls {
                    prologue: Some(_),
                    ..
                }
            )
        })
        .count()
}

#[test]
fn rms_norm_folds_into_the_sibling_matmuls_that_read_it() {
    // K = 288: 36 quarter blocks, more than a warp's 32 lanes (each lane loops twice).
    for k in [64, 288] {
        // Rows 6: two GEMV row groups, the second partial.
        let c = norm_prologue_case(&[1, 3, 6, 40], k, [k, 32, 32]);
        let exe = c.run_planned(&common::device(), &format!("norm prologue k={k}"));
        assert_eq!(prologue_steps(&exe), 8, "k={k}: every norm folded");
        let plan = exe.plan();
        let norm_left = plan.steps.iter().any(|s| match s.kind {
            StepKind::ResidualNorm { .. } => true,
            StepKind::Op { node } => matches!(plan.graph.nodes()[node].op, Op::Norm { .. }),
            _ => false,
        });
        assert!(!norm_left, "k={k}: no norm step is left");
    }
    let c = norm_prologue_case(&[2, 9], 32, [32, 8, 8]);
    let exe = c.run_planned(&common::tiny_device(), "tiny norm prologue");
    assert_eq!(prologue_steps(&exe), 4);
    let staged = exe.plan().steps.iter().any(|s| {
        matches!(
            s.kind,
            StepKind::SiblingMatmuls {
                prologue: Some(_),
                ..
            }
        ) && !s.staged.is_empty()
    });
    assert!(staged, "a step with a norm prologue is staged");
}
