//! Elementwise kernels on the Vulkan device against kiln-reference, on random shapes.
//!
//! Tolerances: add/sub/mul/max/min and comparisons are single IEEE operations, so the GPU and
//! the reference (f64 rounded once to f32) agree exactly. Division and pow go through the
//! driver's `/` and `pow`, which Vulkan allows 2.5 ULP and `exp2(y*log2 x)` accuracy for, so they
//! get a relative 1e-5. Transcendentals get a relative 2e-5 plus an absolute 2e-6 (erf's
//! approximation error is 1.5e-7; Vulkan's exp/log bounds are a few ULP), and sin/cos/tan an
//! absolute 1e-3 because Vulkan only promises 2^-11 absolute error for sin and cos.

mod common;

use kiln::ir::{Activation, BinaryOp, CompareOp, DType, Graph, HostTensor, ALL_ACTIVATIONS};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    common::uniform(n, seed, lo, hi)
}

fn tensor(shape: &[usize], seed: u64, lo: f32, hi: f32) -> HostTensor {
    let n = shape.iter().product();
    HostTensor::from_f32(shape, &values(n, seed, lo, hi)).unwrap()
}

fn run_both(g: &Graph, inputs: &[(&str, HostTensor)]) -> (Vec<f32>, Vec<f32>) {
    let gpu = run_eager(&common::device(), g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    (gpu[0].to_f32(), cpu[0].to_f32())
}

/// A shape and a second shape that broadcasts against it (some dims set to 1, some dropped).
/// Innermost dims of 4 and 8 take `binary_quads` where both operands walk them.
fn broadcast_pair() -> impl Strategy<Value = (Vec<usize>, Vec<usize>)> {
    prop::collection::vec(prop::sample::select(vec![1usize, 2, 3, 4, 5, 8, 17]), 1..5)
        .prop_flat_map(|a| {
            let r = a.len();
            (Just(a), prop::collection::vec(any::<bool>(), r), 0..=r).prop_map(|(a, ones, drop)| {
                let b: Vec<usize> = a
                    .iter()
                    .zip(&ones)
                    .map(|(&d, &one)| if one { 1 } else { d })
                    .collect();
                (a, b[drop..].to_vec())
            })
        })
}

const BINARY: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
];

/// `a op b` for shapes `sa` and `sb` against the reference. Pow on a positive base keeps
/// results real; division avoids tiny divisors.
fn check_binary(op: BinaryOp, sa: &[usize], sb: &[usize], seed: u64) {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, sa).unwrap();
    let b = g.input("b", DType::F32, sb).unwrap();
    let y = g.binary(op, a, b).unwrap();
    g.output(y).unwrap();
    let (lo, hi) = if op == BinaryOp::Pow {
        (0.1, 3.0)
    } else {
        (-4.0, 4.0)
    };
    let ta = tensor(sa, seed, lo, hi);
    let tb = if op == BinaryOp::Div {
        tensor(sb, seed ^ 1, 0.5, 4.0)
    } else {
        tensor(sb, seed ^ 1, -3.0, 3.0)
    };
    let (gpu, cpu) = run_both(&g, &[("a", ta), ("b", tb)]);
    let rel = if matches!(op, BinaryOp::Div | BinaryOp::Pow) {
        1e-5
    } else {
        0.0
    };
    common::assert_close(&gpu, &cpu, 0.0, rel, &format!("{op:?} {sa:?} {sb:?}"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn binary_broadcasting_matches_reference((sa, sb) in broadcast_pair(), swap in any::<bool>(), seed in any::<u64>()) {
        let (sa, sb) = if swap { (sb, sa) } else { (sa, sb) };
        for op in BINARY {
            check_binary(op, &sa, &sb, seed);
        }
    }

    #[test]
    fn compare_matches_reference((sa, sb) in broadcast_pair(), seed in any::<u64>()) {
        for op in [CompareOp::Eq, CompareOp::Ne, CompareOp::Lt, CompareOp::Le, CompareOp::Gt, CompareOp::Ge] {
            let mut g = Graph::new();
            let a = g.input("a", DType::F32, sa.as_slice()).unwrap();
            let b = g.input("b", DType::F32, sb.as_slice()).unwrap();
            let y = g.compare(op, a, b).unwrap();
            g.output(y).unwrap();
            // Integer-valued inputs make equality common.
            let round = |t: HostTensor| {
                let v: Vec<f32> = t.to_f32().iter().map(|x| x.round()).collect();
                HostTensor::from_f32(&t.shape, &v).unwrap()
            };
            let (gpu, cpu) = run_both(&g, &[("a", round(tensor(&sa, seed, -2.0, 2.0))), ("b", round(tensor(&sb, seed ^ 7, -2.0, 2.0)))]);
            prop_assert_eq!(gpu, cpu);
        }
    }
}

/// Shapes whose coalesced innermost dim both operands walk in 16-byte quads (`binary_quads`),
/// broadcast over rows and middle dims, every op, against the reference.
#[test]
fn quad_aligned_binaries_match_reference() {
    for (sa, sb) in [
        (vec![3, 8], vec![8]),
        (vec![2, 3, 4], vec![2, 1, 4]),
        (vec![5, 12], vec![5, 12]),
        (vec![4], vec![4]),
    ] {
        for op in BINARY {
            check_binary(op, &sa, &sb, 1);
        }
    }
}

fn unary_tolerance(act: Activation) -> (f32, f32) {
    match act {
        Activation::Relu | Activation::Neg | Activation::Abs | Activation::Round => (0.0, 0.0),
        Activation::Sin | Activation::Cos => (1e-3, 0.0),
        Activation::Tan => (1e-3, 1e-3),
        _ => (2e-6, 2e-5),
    }
}

#[test]
fn every_activation_matches_reference() {
    for act in ALL_ACTIVATIONS {
        for shape in [vec![1], vec![3, 17], vec![65, 5]] {
            let mut g = Graph::new();
            let x = g.input("x", DType::F32, shape.as_slice()).unwrap();
            let y = g.activation(act, x).unwrap();
            g.output(y).unwrap();
            // Log, sqrt and rsqrt need positive inputs; tan stays away from its poles.
            let (lo, hi) = match act {
                Activation::Log | Activation::Sqrt | Activation::Rsqrt => (0.05, 10.0),
                Activation::Tan => (-1.2, 1.2),
                _ => (-6.0, 6.0),
            };
            let (gpu, cpu) = run_both(&g, &[("x", tensor(&shape, 11, lo, hi))]);
            let (abs, rel) = unary_tolerance(act);
            common::assert_close(&gpu, &cpu, abs, rel, &format!("{act:?} {shape:?}"));
        }
    }
}

#[test]
fn round_is_half_to_even_on_the_gpu() {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [4]).unwrap();
    let y = g.activation(Activation::Round, x).unwrap();
    g.output(y).unwrap();
    let t = HostTensor::from_f32(&[4], &[0.5, 1.5, 2.5, -2.5]).unwrap();
    let (gpu, cpu) = run_both(&g, &[("x", t)]);
    assert_eq!(gpu, [0.0, 2.0, 2.0, -2.0]);
    assert_eq!(gpu, cpu);
}

#[test]
fn grids_over_65535_workgroups() {
    // 65535 * 64 + 1000 elements need a second row of workgroups.
    let n = 65_535 * 64 + 1000;
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [n]).unwrap();
    let one = g.constant_f32([1], &[1.0]).unwrap();
    let y = g.binary(BinaryOp::Add, x, one).unwrap();
    let y = g.activation(Activation::Neg, y).unwrap();
    g.output(y).unwrap();
    let v: Vec<f32> = (0..n).map(|i| (i % 1024) as f32).collect();
    let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&[n], &v).unwrap())]);
    assert_eq!(gpu, cpu);
}

#[test]
fn unsupported_ops_and_bad_inputs_are_typed_errors() {
    use kiln::runtime::RunError;
    let dev = common::device();
    // Integer reductions have no kernel (the planner rewrites them through f32; the eager
    // executor does not).
    let mut g = Graph::new();
    let x = g.input("x", DType::I32, [2, 3]).unwrap();
    let y = g.reduce(kiln::ir::ReduceOp::Sum, x, &[1], false).unwrap();
    g.output(y).unwrap();
    let ti = HostTensor::from_i32(&[2, 3], &[0; 6]).unwrap();
    let err = run_eager(&dev, &g, &[], &[("x", ti)]).unwrap_err();
    assert!(
        matches!(
            err,
            RunError::Unsupported {
                node: 1,
                op: "reduce",
                ..
            }
        ),
        "{err}"
    );
    let t = HostTensor::from_f32(&[2, 3], &[0.0; 6]).unwrap();

    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [2, 3]).unwrap();
    let y = g.activation(Activation::Exp, x).unwrap();
    g.output(y).unwrap();
    let err = run_eager(&dev, &g, &[], &[]).unwrap_err();
    assert!(
        matches!(err, RunError::MissingInput { ref name } if name == "x"),
        "{err}"
    );
    let wrong = HostTensor::from_f32(&[3, 2], &[0.0; 6]).unwrap();
    let err = run_eager(&dev, &g, &[], &[("x", wrong)]).unwrap_err();
    assert!(err.to_string().contains('x'), "{err}");
    // The device is still usable afterwards.
    assert!(run_eager(&dev, &g, &[], &[("x", t)]).is_ok());
}
