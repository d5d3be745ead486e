//! The tiled matmul on the Vulkan device against kiln-reference.
//!
//! Tolerance: inputs are uniform in [-1, 1]; each output is a K-term dot product accumulated with
//! f32 fma, the reference in f64. Rounding errors of a K-term f32 sum grow like sqrt(K) * 2^-24
//! times the partial sums' size (about sqrt(K)), so an absolute 1e-5 * sqrt(K) bounds them with
//! a wide margin while still catching any indexing error (which is O(1)).

mod common;

use kiln::ir::{Activation, DType, Graph, HostTensor};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

fn tensor(shape: &[usize], seed: u64) -> HostTensor {
    common::signed_unit_tensor(shape, seed)
}

fn check(
    g: &Graph,
    params: &[(&str, HostTensor)],
    inputs: &[(&str, HostTensor)],
    k: usize,
    what: &str,
) {
    let gpu =
        run_eager(&common::device(), g, params, inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let cpu = evaluate(g, params, inputs).unwrap_or_else(|e| panic!("{what}: {e}"));
    let tol = 1e-5 * (k as f32).sqrt();
    common::assert_close(&gpu[0].to_f32(), &cpu[0].to_f32(), tol, 0.0, what);
}

fn dim() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 6, 12, 16, 17, 64, 65, 130])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(10))]

    #[test]
    fn plain_and_transposed(m in dim(), k in dim(), n in dim(), transpose in any::<bool>(), seed in any::<u64>()) {
        let mut g = Graph::new();
        let a = g.input("a", DType::F32, [m, k]).unwrap();
        let bshape = if transpose { [n, k] } else { [k, n] };
        let b = g.param("b", DType::F32, bshape).unwrap();
        let y = if transpose { g.matmul_t(a, b).unwrap() } else { g.matmul(a, b).unwrap() };
        g.output(y).unwrap();
        check(&g, &[("b", tensor(&bshape, seed ^ 3))], &[("a", tensor(&[m, k], seed))], k, &format!("{m}x{k}x{n} t={transpose}"));
    }

    #[test]
    fn fused_bias_and_activation(m in dim(), k in dim(), n in dim(), act in prop::sample::select(vec![None, Some(Activation::Gelu), Some(Activation::Relu), Some(Activation::Silu)]), seed in any::<u64>()) {
        let mut g = Graph::new();
        let a = g.input("a", DType::F32, [2, m, k]).unwrap();
        let w = g.param("w", DType::F32, [n, k]).unwrap();
        let bias = g.param("bias", DType::F32, [n]).unwrap();
        let y = g.fused_matmul_bias_act(a, w, Some(bias), act, true).unwrap();
        g.output(y).unwrap();
        let params = [("w", tensor(&[n, k], seed ^ 5)), ("bias", tensor(&[n], seed ^ 9))];
        check(&g, &params, &[("a", tensor(&[2, m, k], seed))], k, &format!("{m}x{k}x{n} {act:?}"));
    }

    #[test]
    fn batched_with_broadcast(b1 in 1usize..4, m in dim(), k in dim(), n in dim(), broadcast_a in any::<bool>(), seed in any::<u64>()) {
        // a: [b1, 2, m, k] (or [1, 2, m, k] broadcast over b1); b: [b1, 1, k, n].
        let ashape = [if broadcast_a { 1 } else { b1 }, 2, m, k];
        let bshape = [b1, 1, k, n];
        let mut g = Graph::new();
        let a = g.input("a", DType::F32, ashape).unwrap();
        let b = g.input("b", DType::F32, bshape).unwrap();
        let y = g.matmul(a, b).unwrap();
        g.output(y).unwrap();
        check(&g, &[], &[("a", tensor(&ashape, seed)), ("b", tensor(&bshape, seed ^ 1))], k, &format!("{ashape:?} x {bshape:?}"));
    }
}

#[test]
fn many_batches_fold_into_four_dims() {
    // Six batch dims, all contiguous: folded into one before dispatch.
    let shape_a = [2, 1, 3, 2, 1, 2, 5, 7];
    let shape_b = [2, 1, 3, 2, 1, 2, 7, 4];
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, shape_a).unwrap();
    let b = g.input("b", DType::F32, shape_b).unwrap();
    let y = g.matmul(a, b).unwrap();
    g.output(y).unwrap();
    check(
        &g,
        &[],
        &[("a", tensor(&shape_a, 1)), ("b", tensor(&shape_b, 2))],
        7,
        "rank 8",
    );
}

#[test]
fn more_row_tiles_than_one_grid_row() {
    // 300 x 40 x 70: five row tiles and two column tiles with ragged edges.
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [300, 40]).unwrap();
    let b = g.input("b", DType::F32, [40, 70]).unwrap();
    let y = g.matmul(a, b).unwrap();
    g.output(y).unwrap();
    check(
        &g,
        &[],
        &[("a", tensor(&[300, 40], 4)), ("b", tensor(&[40, 70], 5))],
        40,
        "300x40x70",
    );
}

#[test]
fn skinny_and_tiled_variants_across_extents_on_one_executable() {
    // rows = 2 x seq: the skinny kernel up to 16 rows, the tiled one above, on one executable.
    use kiln::ir::{Dim, Shape};
    use kiln::runtime::{CompileOptions, Executable};
    let (k, n) = (96, 40);
    let mut g = Graph::new();
    let shape = Shape(vec![
        Dim::Static(2),
        Dim::bounded("seq", 30),
        Dim::Static(k),
    ]);
    let a = g.input("a", DType::F32, shape).unwrap();
    let w = g.param("w", DType::F32, [n, k]).unwrap();
    let b = g.param("b", DType::F32, [n]).unwrap();
    let y = g
        .fused_matmul_bias_act(a, w, Some(b), Some(Activation::Silu), true)
        .unwrap();
    g.output(y).unwrap();
    let params = [("w", tensor(&[n, k], 5)), ("b", tensor(&[n], 6))];
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    for (name, t) in &params {
        exe.set_param(name, t).unwrap();
    }
    for seq in [30, 1, 8, 9, 3, 30] {
        let x = tensor(&[2, seq, k], seq as u64);
        let got = exe.run(&[("a", &x)]).unwrap();
        let want = evaluate(
            &g.bind(&kiln::ir::DimBinding::new().with("seq", seq))
                .unwrap(),
            &params,
            &[("a", x.clone())],
        )
        .unwrap();
        common::assert_close(
            &got[0].to_f32(),
            &want[0].to_f32(),
            1e-5 * (k as f32).sqrt(),
            1e-5,
            &format!("seq {seq}"),
        );
    }
}

/// Which f32 matmul kernel the lowering picks for `a [batch, m, k]` times `b [batch, n, k]`
/// (transposed) or `[batch, k, n]`.
fn kernel_for(batch: usize, m: usize, k: usize, n: usize, transpose: bool) -> &'static str {
    use kiln::kernels::{lower, Operand};
    let a = Operand::new(0, &[batch, m, k], DType::F32);
    let bdims = if transpose {
        [batch, n, k]
    } else {
        [batch, k, n]
    };
    let b = Operand::new(1 << 24, &bdims, DType::F32);
    let out = Operand::new(2 << 24, &[batch, m, n], DType::F32);
    let op = kiln::ir::Op::MatMul {
        transpose_b: transpose,
    };
    lower(&op, &[a, b], &out).expect("lowers")[0].kernel.name
}

/// The graph of `a x b` over inputs `a` `[..batch, m, k]` and `b` `[..batch, k, n]` (or, with
/// `transpose`, `[..batch, n, k]`), with the two inputs' shapes.
fn matmul_graph(
    batch: &[usize],
    [m, k, n]: [usize; 3],
    transpose: bool,
) -> (Graph, Vec<usize>, Vec<usize>) {
    let ashape = [batch, &[m, k]].concat();
    let bshape = [batch, &(if transpose { [n, k] } else { [k, n] })[..]].concat();
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, ashape.as_slice()).unwrap();
    let b = g.input("b", DType::F32, bshape.as_slice()).unwrap();
    let y = if transpose {
        g.matmul_t(a, b).unwrap()
    } else {
        g.matmul(a, b).unwrap()
    };
    g.output(y).unwrap();
    (g, ashape, bshape)
}

/// Checks batched `[batch, m, k] x B` against the reference on `kernel`, with B stored
/// `[batch, k, n]` or (`transpose`) `[batch, n, k]`.
fn check_batched(batch: usize, m: usize, k: usize, n: usize, transpose: bool, kernel: &str) {
    assert_eq!(kernel_for(batch, m, k, n, transpose), kernel);
    let (g, ashape, bshape) = matmul_graph(&[batch], [m, k, n], transpose);
    let inputs = [
        ("a", tensor(&ashape, 11 + k as u64)),
        ("b", tensor(&bshape, 12 + k as u64)),
    ];
    check(
        &g,
        &[],
        &inputs,
        k,
        &format!("{kernel} k={k} t={transpose}"),
    );
}

/// The name of a tiled kernel's pipeline for B stored `[K, N]` (not `transpose`): `_kn`.
fn for_layout(kernel: &str, transpose: bool) -> String {
    if !transpose && !kernel.starts_with("matmul_skinny") {
        format!("{kernel}_kn")
    } else {
        kernel.to_string()
    }
}

#[test]
fn wide_and_grouped_k_tiles_with_ragged_edges_and_batches() {
    // Batches of 130 x 33 x 200: 64 of them make 2 x 2 tiles of 128 each, 256 in all (the
    // wide kernel); 16 make 3 x 4 tiles of 64 each, 192 in all (the 64x64 kernel, whose four
    // k-groups see a ragged last stage: 33 = 2 * 16 + 1); 4 make 48 (the eight-group one,
    // whose stage of 32 k is ragged too).
    for (batch, kernel) in [(64, "matmul_wide"), (16, "matmul"), (4, "matmul_k8")] {
        for transpose in [false, true] {
            check_batched(
                batch,
                130,
                33,
                200,
                transpose,
                &for_layout(kernel, transpose),
            );
        }
    }
}

/// Rows loaded four k at a time (K a multiple of four: the `_vec4` pipelines, with the tiled
/// kernels' last stage's quads past K reading zeros) and element by element (K = 37), by the
/// 64x64 kernels (eight k-groups with one batch, four with 32), the wide one (64 batches) and
/// the skinny ones (3, 7 and 16 rows, each row count its own loop, against B stored [N, K],
/// with K past one round of their lanes; 70 columns on two per workgroup, 601 on four).
#[test]
fn vec4_and_scalar_row_loads() {
    for k in [4, 36, 37, 300] {
        let cases = [
            (1, 150, 70, "matmul_k8", false),
            (1, 150, 70, "matmul_k8", true),
            (32, 150, 70, "matmul", false),
            (32, 150, 70, "matmul", true),
            (64, 130, 200, "matmul_wide", false),
            (64, 130, 200, "matmul_wide", true),
            (1, 3, 70, "matmul_skinny_narrow", true),
            (2, 7, 70, "matmul_skinny_narrow", true),
            (1, 16, 70, "matmul_skinny_narrow", true),
            (1, 3, 601, "matmul_skinny", true),
            (2, 7, 601, "matmul_skinny", true),
            (1, 16, 601, "matmul_skinny", true),
        ];
        for (batch, m, n, base, transpose) in cases {
            // The wide kernel's aligned outputs (n = 200) store column quads from registers.
            let kernel = match (k % 4 == 0, base) {
                (false, _) => base.to_string(),
                (true, "matmul_wide") => "matmul_wide_quads".to_string(),
                (true, _) => format!("{base}_vec4"),
            };
            check_batched(batch, m, k, n, transpose, &for_layout(&kernel, transpose));
        }
    }
}

/// The wide kernel's epilogues with bias and every activation the quad epilogue compiles in,
/// and sigmoid (its fallback, `p.act` per value): 1586 rows and 1020 columns (13 x 8 tiles,
/// the last row and column tiles ragged) store column quads; 1018 columns (rows off 16
/// bytes) go through workgroup memory.
#[test]
fn wide_epilogues_with_bias_and_each_activation() {
    use kiln::runtime::{CompileOptions, Executable};
    let (m, k) = (1586, 24);
    let acts = [
        None,
        Some(Activation::Relu),
        Some(Activation::Gelu),
        Some(Activation::GeluTanh),
        Some(Activation::Silu),
        Some(Activation::Sigmoid),
    ];
    for (n, kernel) in [(1020, "matmul_wide_quads"), (1018, "matmul_wide_vec4")] {
        for (i, act) in acts.into_iter().enumerate() {
            let mut g = Graph::new();
            let x = g.input("x", DType::F32, [m, k]).unwrap();
            let w = g.param("w", DType::F32, [n, k]).unwrap();
            let b = g.param("b", DType::F32, [n]).unwrap();
            let y = g.fused_matmul_bias_act(x, w, Some(b), act, true).unwrap();
            g.output(y).unwrap();
            let seed = 60 + 3 * i as u64;
            let params = [("w", tensor(&[n, k], seed)), ("b", tensor(&[n], seed + 1))];
            let inputs = [("x", tensor(&[m, k], seed + 2))];
            let what = format!("{kernel} with bias and {act:?}");
            let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(exe.kernel_names(), [kernel], "{what}");
            for (name, t) in &params {
                exe.set_param(name, t).unwrap();
            }
            let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
            let got = exe.run(&feed).unwrap();
            let want = evaluate(&g, &params, &inputs).unwrap();
            let tol = 1e-5 * (k as f32).sqrt();
            common::assert_close(&got[0].to_f32(), &want[0].to_f32(), tol, 0.0, &what);
        }
    }
}

/// The 64x64 kernels' epilogue after their k-groups' sums: bias and GELU on a linear layer
/// (ragged: 1000 rows, 760 columns, 192 tiles for four k-groups; 300 rows, 60 tiles for eight).
#[test]
fn grouped_k_tiles_with_bias_and_activation() {
    for (m, kernel) in [(1000, "matmul_vec4"), (300, "matmul_k8_vec4")] {
        grouped_k_tiles_with_bias_and_gelu(m, kernel);
    }
}

fn grouped_k_tiles_with_bias_and_gelu(m: usize, kernel: &str) {
    let (k, n) = (40, 760);
    assert_eq!(kernel_for(1, m, k, n, true), kernel);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [m, k]).unwrap();
    let w = g.param("w", DType::F32, [n, k]).unwrap();
    let b = g.param("b", DType::F32, [n]).unwrap();
    let y = g
        .fused_matmul_bias_act(x, w, Some(b), Some(Activation::Gelu), true)
        .unwrap();
    g.output(y).unwrap();
    let params = [("w", tensor(&[n, k], 21)), ("b", tensor(&[n], 22))];
    let inputs = [("x", tensor(&[m, k], 23))];
    check(
        &g,
        &params,
        &inputs,
        k,
        &format!("{kernel} with bias and GELU"),
    );
}

#[test]
fn wide_tiled_and_skinny_kernels_across_extents_on_one_executable() {
    use kiln::ir::{Dim, Shape};
    use kiln::runtime::{CompileOptions, Executable};
    let (k, n) = (33, 200);
    let dims = |rows: Dim| Shape(vec![Dim::bounded("batch", 64), rows, Dim::Static(k)]);
    let mut g = Graph::new();
    let a = g
        .input("a", DType::F32, dims(Dim::bounded("seq", 130)))
        .unwrap();
    let w = g.input("w", DType::F32, dims(Dim::Static(n))).unwrap();
    let y = g.matmul_t(a, w).unwrap();
    g.output(y).unwrap();
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default()).unwrap();
    // Each extent's kernel, asserted so the test keeps covering every switch.
    let extents = [
        (64, 130, "matmul_wide"),
        (64, 9, "matmul_skinny"),
        (3, 130, "matmul_k8"),
        (16, 130, "matmul"),
        (64, 130, "matmul_wide"),
        (2, 5, "matmul_skinny_narrow"),
    ];
    for (i, (batch, seq, kernel)) in extents.into_iter().enumerate() {
        assert_eq!(kernel_for(batch, seq, k, n, true), kernel);
        // Half the changes by hand, one symbol at a time (through a mixed extent); the others
        // from the inputs' lengths, both symbols at once.
        if i % 2 == 0 {
            exe.set_active_extent("batch", batch).unwrap();
            exe.set_active_extent("seq", seq).unwrap();
        }
        let x = tensor(&[batch, seq, k], seq as u64);
        let wt = tensor(&[batch, n, k], batch as u64);
        let got = exe.run(&[("a", &x), ("w", &wt)]).unwrap();
        assert_eq!(
            (
                exe.active_extent().get("batch"),
                exe.active_extent().get("seq")
            ),
            (Some(batch), Some(seq))
        );
        let bound = g
            .bind(
                &kiln::ir::DimBinding::new()
                    .with("seq", seq)
                    .with("batch", batch),
            )
            .unwrap();
        let want = evaluate(&bound, &[], &[("a", x.clone()), ("w", wt.clone())]).unwrap();
        common::assert_close(
            &got[0].to_f32(),
            &want[0].to_f32(),
            1e-5 * (k as f32).sqrt(),
            0.0,
            &format!("batch {batch}, seq {seq}"),
        );
    }
}

/// Where a workgroup may have only 256 invocations (the tiny device), the eight-group kernel's
/// shapes run on the four-group kernel instead, eagerly and planned (lavapipe runs the
/// 512-invocation pipeline even there: wgpu does not check a workgroup size set by an override
/// constant against the limit, so the test asserts the kernel).
#[test]
fn eight_groups_fall_back_where_workgroups_are_limited_to_256() {
    let dev = common::tiny_device();
    assert!(dev.info().limits.max_compute_invocations_per_workgroup <= 256);
    // Planned (every step within the tiny device's 8 KB storage bindings), B stored [N, K]
    // and [K, N].
    fallback_case(&dev, 20, 17, 24, true, true);
    fallback_case(&dev, 20, 17, 24, false, true);
    // Eager (no windows): small enough for one binding.
    fallback_case(&dev, 20, 9, 24, false, false);
}

fn fallback_case(
    dev: &kiln::runtime::Device,
    m: usize,
    k: usize,
    n: usize,
    transpose: bool,
    planned: bool,
) {
    use kiln::runtime::{CompileOptions, Executable};
    assert_eq!(
        kernel_for(1, m, k, n, transpose),
        for_layout("matmul_k8", transpose)
    );
    let (g, ashape, bshape) = matmul_graph(&[], [m, k, n], transpose);
    let inputs = [("a", tensor(&ashape, 31)), ("b", tensor(&bshape, 32))];
    let want = evaluate(&g, &[], &inputs).unwrap();
    let got = if planned {
        let mut exe = Executable::compile(dev, &g, &CompileOptions::default()).unwrap();
        assert_eq!(exe.kernel_names(), [for_layout("matmul", transpose)]);
        // The full-sized device keeps the eight-group kernel.
        let full = Executable::compile(&common::device(), &g, &CompileOptions::default());
        assert_eq!(
            full.unwrap().kernel_names(),
            [for_layout("matmul_k8", transpose)]
        );
        exe.run(&[("a", &inputs[0].1), ("b", &inputs[1].1)])
            .unwrap()
    } else {
        run_eager(dev, &g, &[], &inputs).unwrap()
    };
    let what = format!("{m}x{k}x{n} planned={planned}");
    common::assert_close(
        &got[0].to_f32(),
        &want[0].to_f32(),
        1e-5 * (k as f32).sqrt(),
        0.0,
        &what,
    );
}

/// Planned matmuls whose outputs have too few 128x128 tiles for the GPU split k among
/// workgroups (a workspace past the arena, then a second dispatch adding the chunks): a linear
/// layer with bias and GELU (the planner's matmul epilogue; 6 tiles, k = 1100 in eight chunks
/// of 144, the last ragged), and a batched product with B stored [K, N] and k = 1030 read
/// element by element (3 batches of two tiles), each against the reference and against
/// running them eagerly (no workspace there: one dispatch each).
#[test]
fn planned_split_k_matches_the_reference() {
    use kiln::runtime::{CompileOptions, Executable};
    let (m, k, n) = (200, 1100, 300);
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [m, k]).unwrap();
    let w = g.param("w", DType::F32, [n, k]).unwrap();
    let b = g.param("b", DType::F32, [n]).unwrap();
    let y = g.matmul_t(x, w).unwrap();
    let y = g.add_op(y, b).unwrap();
    let y = g.activation(Activation::Gelu, y).unwrap();
    g.output(y).unwrap();
    let params = [("w", tensor(&[n, k], 41)), ("b", tensor(&[n], 42))];
    let inputs = [("x", tensor(&[m, k], 43))];
    split_k_case(
        &g,
        &params,
        &inputs,
        k,
        ["matmul_wide_quads", "matmul_split_sum_quads"],
    );

    let k = 1030;
    let (g, ashape, bshape) = matmul_graph(&[3], [130, k, 70], false);
    let inputs = [("a", tensor(&ashape, 44)), ("b", tensor(&bshape, 45))];
    // B stored [K, N]: the wide pipeline built for that layout.
    split_k_case(&g, &[], &inputs, k, ["matmul_wide_kn", "matmul_split_sum"]);

    fn split_k_case(
        g: &Graph,
        params: &[(&str, HostTensor)],
        inputs: &[(&str, HostTensor)],
        k: usize,
        kernels: [&str; 2],
    ) {
        let mut exe = Executable::compile(&common::device(), g, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{kernels:?}: {e}"));
        assert_eq!(exe.kernel_names(), kernels);
        for (name, t) in params {
            exe.set_param(name, t).unwrap();
        }
        let feed: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
        let got = exe.run(&feed).unwrap();
        let want = evaluate(g, params, inputs).unwrap();
        common::assert_close(
            &got[0].to_f32(),
            &want[0].to_f32(),
            1e-5 * (k as f32).sqrt(),
            0.0,
            &format!("{kernels:?}"),
        );
        check(g, params, inputs, k, "eager");
    }
}
