//! Reduce, softmax and cumsum on the Vulkan device against kiln-reference, on random shapes.
//!
//! Tolerances (u = 2^-24, the f32 unit roundoff; the reference accumulates in f64 and rounds
//! once, so its own error is at most u·|want|):
//! - max / min select an input element: exact.
//! - sum: each thread adds up to ceil(count / 256) elements, then a 256-wide tree adds 8 more
//!   levels, so an element passes through at most h = ceil(count / 256) + 8 roundings and the
//!   error is at most h·u·Σ|x| (the classic summation bound). Where the kernel shares a
//!   workgroup among eight outputs (at most 1024 reduced elements, the innermost axis kept),
//!   32 invocations reduce each: h = ceil(count / 32) + 5 (`sum_depth`). We allow twice that
//!   plus u·|want|.
//!   It is computed per output from Σ|x| (the reference's sum of |x|), so it stays tight where
//!   there is no cancellation and is honest where there is.
//! - mean: the sum's bound divided by the count, plus one rounding of the division.
//! - prod: every multiplication rounds once (relative u) and relative errors compound, so the
//!   product of `count` values is within (count - 1)·u relative; we allow 2·count·u. Inputs are
//!   kept in [0.9, 1.1] so products of up to a few hundred values neither overflow nor underflow.
//! - softmax: x - max is exact or off by u relative (|x - max| <= 12 here: <= 7e-7 absolute),
//!   Vulkan's exp is within 3 + 2|x| ulp (<= 27 ulp = 1.6e-6 relative), the sum adds h·u and the
//!   division 2.5 ulp: under 3.5e-6 relative in all. We allow 1e-5 relative.
//! - cumsum runs sequentially in f32: the k-th partial sum has error at most u·Σ_{j<=k} |S_j|
//!   (each addition rounds the running sum S_j once). We allow twice that plus u·|want|, with
//!   the S_j taken from the reference.

mod common;

use kiln::ir::{Activation, DType, Graph, HostTensor, ReduceOp};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

const U: f32 = 1.0 / 16_777_216.0;
const KINDS: [ReduceOp; 5] = [
    ReduceOp::Sum,
    ReduceOp::Mean,
    ReduceOp::Max,
    ReduceOp::Min,
    ReduceOp::Prod,
];

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    common::uniform(n, seed, lo, hi)
}

fn tensor(shape: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::from_f32(shape, v).unwrap()
}

/// Runs a one-input graph on the GPU and on the reference.
fn run_both(g: &Graph, x: HostTensor) -> (Vec<f32>, Vec<f32>) {
    let inputs = [("x", x)];
    let gpu = run_eager(&common::device(), g, &[], &inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(g, &[], &inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gpu[0].shape, cpu[0].shape);
    (gpu[0].to_f32(), cpu[0].to_f32())
}

/// Asserts `|got - want| <= tol` element by element (NaN matches NaN, infinities match exactly).
fn assert_within(got: &[f32], want: &[f32], tol: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, ((g, w), t)) in got.iter().zip(want).zip(tol).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= *t;
        assert!(ok, "{what}: element {i}: got {g}, want {w} (tolerance {t})");
    }
}

fn reduce_graph(shape: &[usize], kind: ReduceOp, axes: &[usize], keep_dim: bool) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape).unwrap();
    let y = g.reduce(kind, x, axes, keep_dim).unwrap();
    g.output(y).unwrap();
    g
}

/// The most roundings an element passes through in the GPU's sum (see the file's doc comment):
/// 32 invocations per output where the kernel shares a workgroup among several outputs (few
/// reduced elements, the innermost axis longer than 1 kept), else 256.
fn sum_depth(shape: &[usize], axes: &[usize]) -> usize {
    use kiln::kernels::families::reduce::{OUTPUTS_PER_GROUP, SHARED_MAX_COUNT};
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let innermost_kept = (0..shape.len())
        .rev()
        .find(|&i| shape[i] > 1)
        .is_some_and(|i| !axes.contains(&i));
    let lanes = if count <= SHARED_MAX_COUNT && innermost_kept {
        256 / OUTPUTS_PER_GROUP as usize
    } else {
        256
    };
    count.div_ceil(lanes) + lanes.ilog2() as usize
}

/// The tolerance of every output of a reduction (see the file's doc comment).
fn reduce_tolerance(kind: ReduceOp, shape: &[usize], axes: &[usize], x: &[f32]) -> Vec<f32> {
    let count: usize = axes.iter().map(|&a| shape[a]).product();
    let h = sum_depth(shape, axes) as f32;
    let abs: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let g = reduce_graph(shape, ReduceOp::Sum, axes, false);
    let abs_sum = evaluate(&g, &[], &[("x", tensor(shape, &abs))]).unwrap()[0].to_f32();
    let want = evaluate(
        &reduce_graph(shape, kind, axes, false),
        &[],
        &[("x", tensor(shape, x))],
    )
    .unwrap()[0]
        .to_f32();
    abs_sum
        .iter()
        .zip(&want)
        .map(|(s, w)| match kind {
            ReduceOp::Max | ReduceOp::Min => 0.0,
            ReduceOp::Sum => 2.0 * h * U * s + U * w.abs(),
            ReduceOp::Mean => (2.0 * h * U * s) / count as f32 + 2.0 * U * w.abs(),
            ReduceOp::Prod => 2.0 * count as f32 * U * w.abs(),
        })
        .collect()
}

fn check_reduce(shape: &[usize], axes: &[usize], keep_dim: bool, seed: u64) {
    for kind in KINDS {
        let n = shape.iter().product();
        let x = if kind == ReduceOp::Prod {
            values(n, seed, 0.9, 1.1)
        } else {
            values(n, seed, -2.0, 2.0)
        };
        let g = reduce_graph(shape, kind, axes, keep_dim);
        let (gpu, cpu) = run_both(&g, tensor(shape, &x));
        let tol = reduce_tolerance(kind, shape, axes, &x);
        assert_within(
            &gpu,
            &cpu,
            &tol,
            &format!("{kind:?} {shape:?} axes {axes:?}"),
        );
    }
}

/// A small shape (some dims 1, some awkward, at most 4000 elements) and a nonempty set of its
/// axes in random order.
fn shape_and_axes() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(
        prop::sample::select(vec![1usize, 2, 3, 5, 17, 65, 257]),
        1..=4,
    )
    .prop_filter("at most 4000 elements", |s| {
        s.iter().product::<usize>() <= 4000
    })
    .prop_flat_map(|s| {
        let axes: Vec<usize> = (0..s.len()).collect();
        let r = s.len();
        (
            Just(s),
            prop::sample::subsequence(axes, 1..=r).prop_shuffle(),
        )
    })
}

/// A small shape and one of its axes.
fn shape_and_axis() -> impl Strategy<Value = (Vec<usize>, usize)> {
    prop::collection::vec(
        prop::sample::select(vec![1usize, 2, 3, 17, 65, 257, 300]),
        1..=3,
    )
    .prop_filter("at most 4000 elements", |s| {
        s.iter().product::<usize>() <= 4000
    })
    .prop_flat_map(|s| {
        let r = s.len();
        (Just(s), 0..r)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn reduce_matches_reference((shape, axes) in shape_and_axes(), keep_dim in any::<bool>(), seed in any::<u64>()) {
        check_reduce(&shape, &axes, keep_dim, seed);
    }

    #[test]
    fn softmax_matches_reference((shape, axis) in shape_and_axis(), masked in any::<bool>(), seed in any::<u64>()) {
        let n: usize = shape.iter().product();
        let mut x = values(n, seed, -6.0, 6.0);
        if masked {
            // Mask about a quarter of the elements, as attention masks do.
            for (i, v) in x.iter_mut().enumerate() {
                if (i * 7 + seed as usize).is_multiple_of(4) {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        let mut g = Graph::new();
        let xi = g.input("x", DType::F32, shape.as_slice()).unwrap();
        let y = g.softmax(xi, axis).unwrap();
        g.output(y).unwrap();
        let (gpu, cpu) = run_both(&g, tensor(&shape, &x));
        common::assert_close(&gpu, &cpu, 0.0, 1e-5, &format!("softmax {shape:?} axis {axis}"));
    }

    #[test]
    fn cumsum_matches_reference((shape, axis) in shape_and_axis(), exclusive in any::<bool>(), seed in any::<u64>()) {
        let n: usize = shape.iter().product();
        let x = values(n, seed, -2.0, 2.0);
        let cumsum = |exclusive: bool| {
            let mut g = Graph::new();
            let xi = g.input("x", DType::F32, shape.as_slice()).unwrap();
            let y = g.cumsum(xi, axis, exclusive).unwrap();
            g.output(y).unwrap();
            g
        };
        let (gpu, cpu) = run_both(&cumsum(exclusive), tensor(&shape, &x));
        // Σ_{j<=k} |S_j| along the axis, from the reference's inclusive sums.
        let partial = evaluate(&cumsum(false), &[], &[("x", tensor(&shape, &x))]).unwrap()[0].to_f32();
        let abs: Vec<f32> = partial.iter().map(|v| v.abs()).collect();
        let bound = evaluate(&cumsum(false), &[], &[("x", tensor(&shape, &abs))]).unwrap()[0].to_f32();
        let tol: Vec<f32> = bound.iter().zip(&cpu).map(|(b, w)| 2.0 * U * b + U * w.abs()).collect();
        assert_within(&gpu, &cpu, &tol, &format!("cumsum {shape:?} axis {axis} exclusive {exclusive}"));
    }
}

/// Eight outputs per workgroup (a reduced middle axis, the innermost kept): outputs that end
/// inside a workgroup, strided kept axes, MiniLM's mean pooling shape scaled down, and a count
/// just past the shared limit (one output per workgroup again).
#[test]
fn reduce_sharing_workgroups_among_outputs() {
    assert_eq!(sum_depth(&[5, 37, 3], &[1]), 2 + 5);
    check_reduce(&[5, 37, 3], &[1], false, 5);
    check_reduce(&[4, 128, 40], &[1], true, 6);
    check_reduce(&[2, 9, 3, 11], &[0, 2], false, 7);
    assert_eq!(sum_depth(&[2, 1025, 3], &[1]), 5 + 8);
    check_reduce(&[2, 1025, 3], &[1], false, 8);
    // The innermost axis reduced: one output per workgroup.
    assert_eq!(sum_depth(&[6, 7, 1], &[1]), 1 + 8);
    check_reduce(&[6, 7, 1], &[1], false, 9);
}

#[test]
fn reduce_over_rows_longer_than_a_workgroup() {
    check_reduce(&[3, 1000], &[1], false, 1);
    check_reduce(&[4099], &[0], true, 2);
    // Reduced axes that are not adjacent, with a long one, and every axis at once.
    check_reduce(&[5, 600, 2], &[2, 0], false, 3);
    check_reduce(&[5, 600, 2], &[0, 1, 2], true, 4);
}

#[test]
fn reduce_keep_dim_shapes_and_edge_values() {
    // Max and min keep infinities; an all -inf row has max -inf.
    let x = [
        1.0,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -3.0,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    ];
    for kind in [ReduceOp::Max, ReduceOp::Min] {
        for keep_dim in [false, true] {
            let g = reduce_graph(&[3, 2], kind, &[1], keep_dim);
            let (gpu, cpu) = run_both(&g, tensor(&[3, 2], &x));
            assert_eq!(gpu, cpu, "{kind:?}");
        }
    }
    let g = reduce_graph(&[3, 2], ReduceOp::Max, &[1], true);
    let out = run_eager(&common::device(), &g, &[], &[("x", tensor(&[3, 2], &x))]).unwrap();
    assert_eq!(out[0].shape, [3, 1]);
}

#[test]
fn softmax_of_a_fully_masked_row_is_zero_and_long_rows_work() {
    let n = 1000;
    let mut x = values(2 * n, 9, -20.0, 20.0);
    x[..n].fill(f32::NEG_INFINITY);
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [2, n]).unwrap();
    let y = g.softmax(xi, 1).unwrap();
    g.output(y).unwrap();
    let (gpu, cpu) = run_both(&g, tensor(&[2, n], &x));
    assert!(gpu[..n].iter().all(|&v| v == 0.0));
    common::assert_close(&gpu, &cpu, 0.0, 1e-5, "softmax [2, 1000]");
    let total: f32 = gpu[n..].iter().sum();
    assert!((total - 1.0).abs() < 1e-4, "row sums to {total}");
}

#[test]
fn reductions_chain_with_other_kernels() {
    // softmax → reduce(sum) over the same axis is 1 per row; exercises two new dispatches in one
    // pass next to an elementwise one.
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4, 33]).unwrap();
    let e = g.activation(Activation::Neg, x).unwrap();
    let s = g.softmax(e, 1).unwrap();
    let r = g.reduce(ReduceOp::Sum, s, &[1], false).unwrap();
    g.output(r).unwrap();
    let (gpu, cpu) = run_both(&g, tensor(&[4, 33], &values(132, 5, -3.0, 3.0)));
    common::assert_close(&gpu, &cpu, 1e-5, 0.0, "sum of softmax");
}
