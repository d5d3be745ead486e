//! Active extent: one executable compiled for `seq <= 12` runs any length exactly. Each run is
//! compared with a graph compiled for that exact length; both execute the same kernels on the
//! same dims, so the results must be bit-identical.

mod common;

use kiln::ir::{
    Activation, AttentionMask, DType, Dim, DimBinding, Graph, HeadLayout, HostTensor, NodeId, Op,
    ReduceOp, Shape,
};
use kiln::runtime::{CompileOptions, Device, Executable, RunError};

/// Held by the tests that count the device's pipelines (one device per test binary, shared by
/// tests that run in parallel): no other test of this file compiles kernels meanwhile.
static PIPELINE_COUNT: std::sync::Mutex<()> = std::sync::Mutex::new(());

const MAX: usize = 12;
const C: usize = 16;
const H: usize = 2;

fn values(n: usize, seed: u64) -> Vec<f32> {
    common::signed_unit(n, seed)
}

/// An encoder-like block over `[batch, seq, C]` with a key-padding (or causal) attention,
/// LayerNorm, a softmax over the sequence axis and a mean over it.
fn graph(batch: usize, causal: bool) -> (Graph, Vec<(String, HostTensor)>) {
    let seq = Dim::bounded("seq", MAX);
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![Dim::Static(batch), seq.clone(), Dim::Static(C)]),
        )
        .unwrap();
    let mask = g
        .input(
            "mask",
            DType::F32,
            Shape(vec![Dim::Static(batch), seq.clone()]),
        )
        .unwrap();
    let mut params = Vec::new();
    let mut p = |g: &mut Graph, name: &str, shape: &[usize]| {
        let n = shape.iter().product();
        params.push((
            name.to_string(),
            HostTensor::from_f32(shape, &values(n, params.len() as u64 + 5)).unwrap(),
        ));
        g.param(name, DType::F32, shape).unwrap()
    };
    let w = p(&mut g, "wqkv", &[3 * C, C]);
    let b = p(&mut g, "bqkv", &[3 * C]);
    let qkv = g.fused_matmul_bias_act(x, w, Some(b), None, true).unwrap();
    let head_shape = Shape(vec![
        Dim::Static(batch),
        seq.clone(),
        Dim::Static(H),
        Dim::Static(C / H),
    ]);
    let parts: Vec<NodeId> = (0..3)
        .map(|i| {
            let n = g.narrow(qkv, 2, i * C, C).unwrap();
            g.reshape(n, head_shape.clone()).unwrap()
        })
        .collect();
    let mut ins = parts.clone();
    if !causal {
        ins.push(mask);
    }
    let op = Op::Attention {
        num_heads: H,
        num_kv_heads: H,
        head_dim: C / H,
        scale: 0.4,
        mask: if causal {
            AttentionMask::Causal
        } else {
            AttentionMask::KeyPadding
        },
        layout: HeadLayout::Bshd,
        has_past_len: false,
    };
    let a = g.add(op, &ins).unwrap();
    let a = g
        .reshape(
            a,
            Shape(vec![Dim::Static(batch), seq.clone(), Dim::Static(C)]),
        )
        .unwrap();
    let gm = p(&mut g, "g", &[C]);
    let bt = p(&mut g, "b", &[C]);
    let s = g.add_op(a, x).unwrap();
    let h = g.layer_norm(s, Some(gm), Some(bt), 1e-5).unwrap();
    let w2 = p(&mut g, "w2", &[C, C]);
    let b2 = p(&mut g, "b2", &[C]);
    let f = g.matmul(h, w2).unwrap();
    let f = g.add_op(f, b2).unwrap();
    let f = g.activation(Activation::Gelu, f).unwrap();
    let over_seq = g.softmax(f, 1).unwrap();
    let pooled = g.reduce(ReduceOp::Mean, f, &[1], false).unwrap();
    if causal {
        // Keep the mask input used so both variants have the same inputs.
        let m = g.reduce(ReduceOp::Sum, mask, &[1], false).unwrap();
        g.output(m).unwrap();
    }
    g.output(h).unwrap();
    g.output(over_seq).unwrap();
    g.output(pooled).unwrap();
    (g, params)
}

fn inputs(batch: usize, len: usize) -> Vec<(&'static str, HostTensor)> {
    // Batch row b keeps its first len - b keys (at least one).
    let mask: Vec<f32> = (0..batch * len)
        .map(|i| f32::from((i % len) < len.saturating_sub(i / len).max(1)))
        .collect();
    vec![
        (
            "x",
            HostTensor::from_f32(&[batch, len, C], &values(batch * len * C, len as u64)).unwrap(),
        ),
        ("mask", HostTensor::from_f32(&[batch, len], &mask).unwrap()),
    ]
}

fn compile(dev: &Device, g: &Graph, params: &[(String, HostTensor)]) -> Executable {
    let mut exe =
        Executable::compile(dev, g, &CompileOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    for (n, t) in params {
        exe.set_param(n, t).unwrap();
    }
    exe
}

fn run(exe: &mut Executable, ins: &[(&'static str, HostTensor)]) -> Vec<HostTensor> {
    let refs: Vec<(&str, &HostTensor)> = ins.iter().map(|(n, t)| (*n, t)).collect();
    exe.run(&refs).unwrap_or_else(|e| panic!("{e}"))
}

fn check(dev: &Device, batch: usize, causal: bool) {
    let (g, params) = graph(batch, causal);
    let mut bounded = compile(dev, &g, &params);
    let dispatches = bounded.dispatch_count();
    let pipelines = dev.pipelines().len();
    for len in [MAX, 5, 1, 9, 5] {
        let exact_graph = g.bind(&DimBinding::new().with("seq", len)).unwrap();
        let mut exact = compile(dev, &exact_graph, &params);
        let ins = inputs(batch, len);
        let want = run(&mut exact, &ins);
        let got = run(&mut bounded, &ins);
        assert_eq!(bounded.active_extent().get("seq"), Some(len));
        assert_eq!(got.len(), want.len());
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            assert_eq!(a, b, "batch {batch} causal {causal} len {len} output {i}");
        }
    }
    assert_eq!(bounded.dispatch_count(), dispatches);
    assert_eq!(dev.pipelines().len(), pipelines, "no new pipelines");
}

#[test]
fn batch_one_and_three_key_padding_and_causal() {
    let _counting = PIPELINE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    for batch in [1, 3] {
        for causal in [false, true] {
            check(&common::device(), batch, causal);
        }
    }
    // With 8 KiB bindings the block's QKV step fits only at batch 1.
    for causal in [false, true] {
        check(&common::tiny_device(), 1, causal);
    }
}

#[test]
fn extent_errors_are_typed_and_leave_the_executable_usable() {
    let dev = common::device();
    let (g, params) = graph(2, false);
    let mut exe = compile(&dev, &g, &params);
    assert!(matches!(
        exe.set_active_extent("seq", MAX + 1),
        Err(RunError::ExtentOutOfRange { .. })
    ));
    assert!(matches!(
        exe.set_active_extent("seq", 0),
        Err(RunError::ExtentOutOfRange { .. })
    ));
    assert!(matches!(
        exe.set_active_extent("len", 3),
        Err(RunError::UnknownSymbol { .. })
    ));
    // Inputs longer than the bound are refused by the extent they imply.
    let err = exe
        .run(&[
            ("x", &inputs(2, MAX + 1)[0].1),
            ("mask", &inputs(2, MAX + 1)[1].1),
        ])
        .unwrap_err();
    assert!(matches!(err, RunError::ExtentOutOfRange { .. }), "{err}");
    // Inputs that disagree on the extent.
    let err = exe
        .run(&[("x", &inputs(2, 4)[0].1), ("mask", &inputs(2, 5)[1].1)])
        .unwrap_err();
    assert!(matches!(err, RunError::Mismatch { .. }), "{err}");
    // Still fine afterwards.
    let ins = inputs(2, 7);
    assert_eq!(run(&mut exe, &ins)[1].shape, [2, 7, C]);
}

/// `x [rows, k] · w [n, k]^T + b` through GELU, rows bounded by `max_rows`.
fn linear_graph(max_rows: usize, k: usize, n: usize) -> (Graph, Vec<(String, HostTensor)>) {
    let mut g = Graph::new();
    let rows = Dim::bounded("rows", max_rows);
    let x = g
        .input("x", DType::F32, Shape(vec![rows, Dim::Static(k)]))
        .unwrap();
    let w = g.param("w", DType::F32, [n, k]).unwrap();
    let b = g.param("b", DType::F32, [n]).unwrap();
    let y = g
        .fused_matmul_bias_act(x, w, Some(b), Some(Activation::Gelu), true)
        .unwrap();
    g.output(y).unwrap();
    let params = vec![
        (
            "w".to_string(),
            HostTensor::from_f32(&[n, k], &values(n * k, 31)).unwrap(),
        ),
        (
            "b".to_string(),
            HostTensor::from_f32(&[n], &values(n, 32)).unwrap(),
        ),
    ];
    (g, params)
}

/// Runs the bounded linear at each `(rows, kernels)`: bit-identical to the graph compiled for
/// those rows, with the kernels that run (`kernel_names`) as listed.
fn check_linear_extents(max_rows: usize, k: usize, n: usize, cases: &[(usize, &[&str])]) {
    let _counting = PIPELINE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let dev = common::device();
    let (g, params) = linear_graph(max_rows, k, n);
    let mut bounded = compile(&dev, &g, &params);
    let dispatches = bounded.dispatch_count();
    for &(rows, kernels) in cases {
        let exact_graph = g.bind(&DimBinding::new().with("rows", rows)).unwrap();
        let mut exact = compile(&dev, &exact_graph, &params);
        let x = HostTensor::from_f32(&[rows, k], &values(rows * k, rows as u64)).unwrap();
        let ins = [("x", x)];
        let want = run(&mut exact, &ins);
        let pipelines = dev.pipelines().len();
        let got = run(&mut bounded, &ins);
        assert_eq!(
            dev.pipelines().len(),
            pipelines,
            "{rows} rows: no new pipelines"
        );
        assert_eq!(bounded.kernel_names(), kernels, "{rows} rows");
        assert_eq!(
            exact.kernel_names(),
            kernels,
            "{rows} rows, compiled for them"
        );
        assert_eq!(got, want, "{rows} rows");
        // A profile times the dispatches that run (where the device has timestamps).
        let refs: Vec<(&str, &HostTensor)> = ins.iter().map(|(n, t)| (*n, t)).collect();
        if let Ok(times) = bounded.profile(&refs) {
            let ran: usize = times.iter().map(|t| t.dispatches).sum();
            assert_eq!(ran, kernels.len(), "{rows} rows: dispatches profiled");
        }
    }
    assert_eq!(bounded.dispatch_count(), dispatches);
}

/// Split matmuls in steps that follow the extent: the dispatch count fixed at the bound, the
/// dispatches a split does not need at other rows run empty. A small output with long k splits
/// k at the bound (512 rows: 12 wide tiles, eight chunks) and at 40 rows, and runs the skinny
/// kernel alone at 16; a wide output with a short last wave (88 x 3 tiles fill a wave, 77 rows
/// are left) runs those rows apart on 64x64 tiles at the bound, and one kernel at fewer rows;
/// with 1800 rows left (and k too short to split) on wide tiles of their own.
#[test]
fn split_matmuls_follow_the_extent() {
    let split: &[&str] = &["matmul_wide_quads", "matmul_split_sum_quads"];
    check_linear_extents(
        512,
        1536,
        384,
        &[
            (512, split),
            (16, &["matmul_skinny_narrow_vec4"]),
            (40, split),
            (300, split),
        ],
    );
    let last_wave: &[&str] = &["matmul_wide_quads", "matmul_k8_vec4"];
    check_linear_extents(
        88 * 128 + 77,
        256,
        384,
        &[
            (88 * 128 + 77, last_wave),
            (3000, &["matmul_k8_vec4"]),
            (88 * 128 + 77, last_wave),
            (7, &["matmul_skinny_narrow_vec4"]),
        ],
    );
    // 1800 rows past the wave at k = 200 (too short to split, 174 tiles of 64x64): their 45
    // wide tiles in a dispatch of their own at the bound; 77 rows past it on 64x64 tiles, and
    // one kernel at fewer rows, in the same two slots.
    let wide_tail: &[&str] = &["matmul_wide_quads", "matmul_wide_quads"];
    check_linear_extents(
        88 * 128 + 1800,
        200,
        384,
        &[
            (88 * 128 + 1800, wide_tail),
            (88 * 128 + 77, last_wave),
            (3000, &["matmul_k8_vec4"]),
            (88 * 128 + 1800, wide_tail),
        ],
    );
}

/// `y = x [rows, k] · w [n, k]^T + b`, `s = r + y`, `LayerNorm(s)` (with `tee`, `s` is an
/// output as well), rows bounded by `max_rows`: the matmul joins the residual norm's step.
fn linear_norm_graph(
    max_rows: usize,
    k: usize,
    n: usize,
    tee: bool,
) -> (Graph, Vec<(String, HostTensor)>) {
    let mut g = Graph::new();
    let rows = Dim::bounded("rows", max_rows);
    let x = g
        .input("x", DType::F32, Shape(vec![rows.clone(), Dim::Static(k)]))
        .unwrap();
    let r = g
        .input("r", DType::F32, Shape(vec![rows, Dim::Static(n)]))
        .unwrap();
    let w = g.param("w", DType::F32, [n, k]).unwrap();
    let b = g.param("b", DType::F32, [n]).unwrap();
    let gamma = g.param("gamma", DType::F32, [n]).unwrap();
    let beta = g.param("beta", DType::F32, [n]).unwrap();
    let y = g.fused_matmul_bias_act(x, w, Some(b), None, true).unwrap();
    let s = g.add_op(r, y).unwrap();
    let out = g.layer_norm(s, Some(gamma), Some(beta), 1e-5).unwrap();
    g.output(out).unwrap();
    if tee {
        g.output(s).unwrap();
    }
    let params = [
        ("w", vec![n, k], 41),
        ("b", vec![n], 42),
        ("gamma", vec![n], 43),
        ("beta", vec![n], 44),
    ]
    .into_iter()
    .map(|(name, dims, seed)| {
        let v = values(dims.iter().product(), seed);
        (name.to_string(), HostTensor::from_f32(&dims, &v).unwrap())
    })
    .collect();
    (g, params)
}

/// `g` compiled without the matmul-norm join (its split-k sum a dispatch of its own).
fn compile_unjoined(dev: &Device, g: &Graph, params: &[(String, HostTensor)]) -> Executable {
    let options = CompileOptions {
        fusion: kiln::plan::FusionOptions {
            matmul_norm: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut exe = Executable::compile(dev, g, &options).unwrap_or_else(|e| panic!("{e}"));
    for (name, t) in params {
        exe.set_param(name, t).unwrap();
    }
    exe
}

/// Random `x [rows, k]` and `r [rows, n]` for [`linear_norm_graph`], from `seed`.
fn linear_norm_inputs(
    rows: usize,
    k: usize,
    n: usize,
    seed: u64,
) -> [(&'static str, HostTensor); 2] {
    [
        (
            "x",
            HostTensor::from_f32(&[rows, k], &values(rows * k, seed)).unwrap(),
        ),
        (
            "r",
            HostTensor::from_f32(&[rows, n], &values(rows * n, seed + 7)).unwrap(),
        ),
    ]
}

/// Asserts that two runs' outputs are equal to the bit, naming the first value that is not.
fn same_bits(got: &[HostTensor], want: &[HostTensor], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: outputs");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.shape, w.shape, "{what}: output {i}");
        let (g, w) = (g.to_f32(), w.to_f32());
        if let Some(j) = (0..g.len()).find(|&j| g[j].to_bits() != w[j].to_bits()) {
            panic!(
                "{what}: output {i} value {j} is {} instead of {}",
                g[j], w[j]
            );
        }
    }
}

/// A split-k matmul joined with the residual LayerNorm that reads its product: at rows where
/// it splits, the norm adds the chunks (no sum dispatch); elsewhere the matmul writes the
/// product. Every run is bit-identical to the graph compiled for its rows and to the graph
/// compiled without the join (the split's sum writing the product, a norm step reading it).
#[test]
fn a_split_matmul_hands_its_chunks_to_the_residual_norm() {
    let _counting = PIPELINE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let dev = common::device();
    let (k, n) = (1536, 384);
    let split: &[&str] = &["matmul_wide_quads", "norm"];
    let skinny: &[&str] = &["matmul_skinny_narrow_vec4", "norm"];
    for tee in [false, true] {
        let (g, params) = linear_norm_graph(512, k, n, tee);
        let mut bounded = compile(&dev, &g, &params);
        let kinds: Vec<&str> = bounded.plan().steps.iter().map(|s| s.kind.name()).collect();
        assert_eq!(kinds, ["matmul_residual_norm"]);
        for (rows, kernels) in [(512, split), (16, skinny), (40, split), (300, split)] {
            let exact_graph = g.bind(&DimBinding::new().with("rows", rows)).unwrap();
            let mut exact = compile(&dev, &exact_graph, &params);
            let mut unjoined = compile_unjoined(&dev, &exact_graph, &params);
            let ins = linear_norm_inputs(rows, k, n, rows as u64);
            let got = run(&mut bounded, &ins);
            assert_eq!(bounded.kernel_names(), kernels, "{rows} rows");
            let exact_out = run(&mut exact, &ins);
            same_bits(&got, &exact_out, &format!("{rows} rows, compiled for them"));
            let unjoined_out = run(&mut unjoined, &ins);
            same_bits(&got, &unjoined_out, &format!("{rows} rows, not joined"));
            let names = unjoined.kernel_names();
            if kernels == split {
                assert!(names.contains(&"matmul_split_sum_quads"), "{names:?}");
            }
        }
    }
    // k = 384 splits only where the norm adds the chunks (three of 128 for 12 tiles): the
    // graph without the join runs one matmul, whose sums differ in rounding.
    let (k, rows) = (384, 512);
    let (g, params) = linear_norm_graph(rows, k, n, false);
    let mut joined = compile(&dev, &g, &params);
    let mut unjoined = compile_unjoined(&dev, &g, &params);
    let ins = linear_norm_inputs(rows, k, n, 5);
    let got = run(&mut joined, &ins)[0].to_f32();
    assert_eq!(joined.kernel_names(), split);
    assert!(!unjoined.kernel_names().contains(&"matmul_split_sum_quads"));
    let want = run(&mut unjoined, &ins)[0].to_f32();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "k = 384: off by {worst}");
}

/// A step whose bound lowering is one dispatch (17024 rows x 384: a wave of 264 tiles and 135
/// more, too many to run apart, with k = 200 too short to split) falls back to one dispatch at
/// an extent where its own lowering would run a short last wave apart (12544 rows: 30 tiles
/// past the wave, 120 of 64x64) and so need more dispatches than the step recorded.
#[test]
fn a_split_that_does_not_fit_the_recorded_dispatches_falls_back_to_one() {
    let _counting = PIPELINE_COUNT.lock().unwrap_or_else(|e| e.into_inner());
    let dev = common::device();
    let (max_rows, rows, k, n) = (17024, 12544, 200, 384);
    let (g, params) = linear_graph(max_rows, k, n);
    let mut bounded = compile(&dev, &g, &params);
    assert_eq!(bounded.kernel_names(), ["matmul_wide_quads"]);
    let exact_graph = g.bind(&DimBinding::new().with("rows", rows)).unwrap();
    let mut exact = compile(&dev, &exact_graph, &params);
    assert_eq!(
        exact.kernel_names(),
        ["matmul_wide_quads", "matmul_k8_vec4"]
    );
    let x = HostTensor::from_f32(&[rows, k], &values(rows * k, 7)).unwrap();
    let ins = [("x", x)];
    let want = run(&mut exact, &ins);
    let got = run(&mut bounded, &ins);
    assert_eq!(bounded.kernel_names(), ["matmul_wide_quads"]);
    // The tail's rows are summed by another kernel in another order.
    common::assert_close(
        &got[0].to_f32(),
        &want[0].to_f32(),
        1e-5,
        1e-5,
        "12544 rows",
    );
}
