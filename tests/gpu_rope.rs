//! The rope kernel on the Vulkan device against kiln-reference.
//!
//! Tolerances: the reference computes each angle `pos * theta^(-2i/rotary_dims)` and its sine
//! and cosine in f64. The kernel computes the frequency with f32 `exp2`, the angle as one f32
//! product, reduces it to [-pi, pi] (Cody-Waite, exact at these sizes) and calls f32 `sin`/`cos`.
//! The angle's error is f32 rounding relative to the angle (<= pos): 2^-24 for the product,
//! ~2 * 2^-23 for `exp2`, and ln2 * |exponent| * 2^-23 through the exponent's rounding (at most
//! 0.37 * 2^-23 * pos, since angle * |exponent| <= pos * 0.53). That is about 3.5 * 2^-24 * pos
//! radians at worst, so each case allows the pair's norm (<= 1.5 * sqrt 2) times pos * 2^-22,
//! plus 4e-6 for the final products: ~1e-5 at position 0, ~8e-4 at position 1650. Over 768
//! random cases with positions up to ~2000, the largest error was 0.49 of that bound on lavapipe
//! (0.39 on an H200 through NVIDIA's Vulkan driver). Positions stay realistic (below ~2048): the
//! error of an f32 angle grows linearly with the position, a property of f32 rope that f32
//! reference implementations share. Pass-through tail elements are copies and must be exact.

mod common;

use kiln::ir::{DType, Graph, HeadLayout, HostTensor, Op, RopeStyle};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

/// The error allowed at position 0: a few f32 roundings of values up to 1.5.
const BASE_TOL: f32 = 4e-6;
/// The largest norm of a rotated pair: both elements are in [-1.5, 1.5).
const PAIR_NORM: f32 = 2.1214;

impl Case {
    /// The largest position of the case.
    fn max_pos(&self) -> f32 {
        let seq = self.dims[self.layout.axes().1];
        (self.position_offset as i64 + self.offset_input.unwrap_or(0) as i64 + seq as i64 - 1)
            as f32
    }

    /// The absolute tolerance: the angle may be off by pos * 2^-22 radians.
    fn tol(&self) -> f32 {
        BASE_TOL + PAIR_NORM * self.max_pos() * (2f32).powi(-22)
    }
}

/// Deterministic values in [lo, hi) from a seed (a small LCG).
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    common::uniform(n, seed, lo, hi)
}

/// One rope call.
#[derive(Debug, Clone)]
struct Case {
    dims: [usize; 4],
    layout: HeadLayout,
    rotary_dims: usize,
    theta: f32,
    style: RopeStyle,
    position_offset: usize,
    /// The value of the offset input, when there is one.
    offset_input: Option<i32>,
    seed: u64,
}

impl Case {
    fn head_dim(&self) -> usize {
        self.dims[3]
    }

    fn op(&self) -> Op {
        Op::Rope {
            head_dim: self.head_dim(),
            rotary_dims: self.rotary_dims,
            theta: self.theta,
            style: self.style,
            layout: self.layout,
            position_offset: self.position_offset,
            has_offset_input: self.offset_input.is_some(),
        }
    }
}

/// Runs a case on the GPU and on the reference; returns (gpu, cpu).
fn run_both(c: &Case) -> (Vec<f32>, Vec<f32>) {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, c.dims).unwrap();
    let mut ids = vec![x];
    let xv = values(c.dims.iter().product(), c.seed, -1.5, 1.5);
    let mut inputs = vec![("x", HostTensor::from_f32(&c.dims, &xv).unwrap())];
    if let Some(o) = c.offset_input {
        ids.push(g.input("offset", DType::I32, [1]).unwrap());
        inputs.push(("offset", HostTensor::from_i32(&[1], &[o]).unwrap()));
    }
    let y = g.add(c.op(), &ids).unwrap();
    g.output(y).unwrap();
    let gpu = run_eager(&common::device(), &g, &[], &inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(&g, &[], &inputs).unwrap_or_else(|e| panic!("{e}"));
    (gpu[0].to_f32(), cpu[0].to_f32())
}

/// Checks a case: rotated elements within [`Case::tol`], the tail bit-exact.
fn check(c: &Case) {
    let (gpu, cpu) = run_both(c);
    common::assert_close(&gpu, &cpu, c.tol(), 0.0, &format!("{c:?}"));
    let d = c.head_dim();
    for (i, (g, w)) in gpu.iter().zip(&cpu).enumerate() {
        if i % d >= c.rotary_dims {
            assert_eq!(g, w, "{c:?}: tail element {i} changed");
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1..=2usize,
        prop::sample::select(vec![1usize, 3, 17]),
        1..=4usize,
        prop::sample::select(vec![8usize, 16, 64]),
        // The rotated share of head_dim: all, half or one pair.
        0..3usize,
        prop::sample::select(vec![10000.0f32, 500000.0, 10.0]),
        0..1024usize,
        prop::option::of(0..1000i32),
        any::<u64>(),
    )
        .prop_map(|(b, s, h, d, share, theta, off, input, seed)| Case {
            dims: [b, s, h, d],
            layout: HeadLayout::Bshd,
            rotary_dims: [d, d / 2, 2][share],
            theta,
            style: RopeStyle::RotateHalf,
            position_offset: off,
            offset_input: input,
            seed,
        })
}

/// The same case in the other layout: dims (b, s, h, d) become (b, h, s, d).
fn in_layout(c: &Case, layout: HeadLayout) -> Case {
    let [b, s, h, d] = c.dims;
    let dims = match layout {
        HeadLayout::Bshd => [b, s, h, d],
        HeadLayout::Bhsd => [b, h, s, d],
    };
    Case {
        dims,
        layout,
        ..c.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn both_styles_and_layouts_match_reference(base in case_strategy()) {
        for layout in [HeadLayout::Bshd, HeadLayout::Bhsd] {
            for style in [RopeStyle::RotateHalf, RopeStyle::Interleaved] {
                check(&Case { style, ..in_layout(&base, layout) });
            }
        }
    }
}

fn base_case() -> Case {
    Case {
        dims: [1, 5, 2, 16],
        layout: HeadLayout::Bshd,
        rotary_dims: 16,
        theta: 10000.0,
        style: RopeStyle::RotateHalf,
        position_offset: 0,
        offset_input: None,
        seed: 9,
    }
}

#[test]
fn position_zero_is_the_identity() {
    let c = Case {
        dims: [1, 1, 3, 8],
        rotary_dims: 8,
        ..base_case()
    };
    let (gpu, cpu) = run_both(&c);
    assert_eq!(gpu, cpu);
}

#[test]
fn static_and_input_offsets_add_up() {
    // 1500 static + 400 from the input = 1900 + s, as a decode step far into a prompt.
    for style in [RopeStyle::RotateHalf, RopeStyle::Interleaved] {
        let split = Case {
            position_offset: 1500,
            offset_input: Some(400),
            style,
            ..base_case()
        };
        let all_static = Case {
            position_offset: 1900,
            offset_input: None,
            ..split.clone()
        };
        check(&split);
        let (a, _) = run_both(&split);
        let (b, _) = run_both(&all_static);
        assert_eq!(a, b, "the offset input is not added like the static offset");
    }
}

#[test]
fn partial_rotary_dims_keep_the_tail() {
    // GPT-J / NeoX style: 64-dim heads with 16 or 32 rotated dims.
    for (rotary_dims, style) in [(16, RopeStyle::Interleaved), (32, RopeStyle::RotateHalf)] {
        let c = Case {
            dims: [2, 3, 2, 64],
            rotary_dims,
            style,
            position_offset: 7,
            ..base_case()
        };
        check(&c);
        check(&in_layout(&c, HeadLayout::Bhsd));
    }
}

#[test]
fn head_dim_256_and_a_long_sequence() {
    let c = Case {
        dims: [1, 65, 1, 256],
        theta: 1_000_000.0,
        position_offset: 1900,
        ..base_case()
    };
    check(&c);
}

/// Q and K rotated with the same positions (9 and 3 heads, a tail of 2 kept) become one
/// batched dispatch on the planned executable, whole arena and 8 KiB bindings; both match the
/// reference as separate ropes.
#[test]
fn q_and_k_batch_into_one_dispatch() {
    use kiln::plan::StepKind;
    use kiln::runtime::{CompileOptions, Executable};
    let c = Case {
        dims: [1, 5, 9, 8],
        layout: HeadLayout::Bshd,
        rotary_dims: 6,
        theta: 10_000.0,
        style: RopeStyle::Interleaved,
        position_offset: 0,
        offset_input: Some(37),
        seed: 3,
    };
    let mut g = Graph::new();
    let pos = g.input("pos", DType::I32, [1]).unwrap();
    let q = g.input("q", DType::F32, [1, 5, 9, 8]).unwrap();
    let k = g.input("k", DType::F32, [1, 5, 3, 8]).unwrap();
    let rq = g.add(c.op(), &[q, pos]).unwrap();
    let rk = g.add(c.op(), &[k, pos]).unwrap();
    g.output(rq).unwrap();
    g.output(rk).unwrap();
    let inputs = [
        ("pos", HostTensor::from_i32(&[1], &[37]).unwrap()),
        (
            "q",
            HostTensor::from_f32(&[1, 5, 9, 8], &values(360, 1, -1.5, 1.5)).unwrap(),
        ),
        (
            "k",
            HostTensor::from_f32(&[1, 5, 3, 8], &values(120, 2, -1.5, 1.5)).unwrap(),
        ),
    ];
    let want = evaluate(&g, &[], &inputs).unwrap();
    for dev in [common::device(), common::tiny_device()] {
        let mut exe = Executable::compile(&dev, &g, &CompileOptions::default()).unwrap();
        let batched = exe
            .plan()
            .steps
            .iter()
            .filter(|s| matches!(s.kind, StepKind::Batched { .. }))
            .count();
        assert_eq!(batched, 1);
        let refs: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
        let got = exe.run(&refs).unwrap();
        assert_eq!(got.len(), want.len());
        for (gt, wt) in got.iter().zip(&want) {
            common::assert_close(&gt.to_f32(), &wt.to_f32(), c.tol(), 0.0, "batched rope");
        }
    }
}
