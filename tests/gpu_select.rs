//! Argmax, top-k and sampling on the Vulkan device against kiln-reference.
//!
//! Tolerances: argmax and top-k compare exact integer order keys (the same order as the
//! reference's `total_cmp` / `>`), so indices and values must match exactly, ties included.
//! Sampling draws the same uniform number (kiln_ir::rng, reproduced bit for bit in WGSL) but
//! weighs candidates in f32 where the reference uses f64; the kept set (top_k) is exact, while
//! the nucleus cut and the drawn index can only differ when a decision lands within rounding of
//! a boundary: |cum - top_p| or |u·mass - acc| below ~1e-6 relative (f32 exp and sums of up to
//! 49152 weights). The tests compute each row's distance to every boundary with an f64 replica
//! of the reference and require an exact match where it exceeds 1e-4 (100x the error); nearer
//! rows (rare, counted and bounded) must still pick from the exact top_k set.

mod common;

use kiln::ir::rng::sample_uniform;
use kiln::ir::{DType, Graph, HostTensor, Op, TopKOutput};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

/// Decisions nearer than this (relative) to a boundary may legitimately differ in f32.
const MARGIN: f64 = 1e-4;

/// A deterministic LCG stream.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    }
}

/// Small integers in [-3, 3] (many ties), with signed zeros.
fn tie_values(n: usize, seed: u64) -> Vec<f32> {
    let mut next = lcg(seed);
    (0..n)
        .map(|_| match next() % 8 {
            7 => -0.0,
            r => r as f32 - 3.0,
        })
        .collect()
}

/// `rows` rows of `n` distinct logits each, spread over [lo, hi] in shuffled order.
fn distinct_logits(rows: usize, n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut next = lcg(seed);
    let mut out = Vec::with_capacity(rows * n);
    for _ in 0..rows {
        let mut ranks: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            ranks.swap(i, next() as usize % (i + 1));
        }
        out.extend(
            ranks
                .iter()
                .map(|&r| lo + (hi - lo) * r as f32 / n.max(2) as f32),
        );
    }
    out
}

fn run_both(g: &Graph, inputs: &[(&str, HostTensor)]) -> (Vec<f32>, Vec<f32>) {
    let gpu = run_eager(&common::device(), g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(gpu[0].shape, cpu[0].shape);
    assert_eq!(gpu[0].dtype, cpu[0].dtype);
    (gpu[0].to_f32(), cpu[0].to_f32())
}

fn one_op(shape: &[usize], op: Op) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape).unwrap();
    let y = g.add(op, &[x]).unwrap();
    g.output(y).unwrap();
    g
}

/// Bitwise equality, so that -0.0 and 0.0 (which top-k orders) are told apart.
fn assert_bits_eq(got: &[f32], want: &[f32], what: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(got), bits(want), "{what}");
}

/// Shapes whose last axis is one of the awkward lengths, up to rows many times the workgroup's
/// 256 invocations (2048, and 5003 with a ragged tail).
fn row_shape() -> impl Strategy<Value = Vec<usize>> {
    (
        prop::collection::vec(prop::sample::select(vec![1usize, 2, 3]), 0..=2),
        prop::sample::select(vec![1usize, 3, 17, 65, 257, 300, 2048, 5003]),
    )
        .prop_map(|(mut lead, last)| {
            lead.push(last);
            lead
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn argmax_matches_reference_with_ties(shape in row_shape(), seed in any::<u64>()) {
        let x = tie_values(shape.iter().product(), seed);
        let g = one_op(&shape, Op::Argmax);
        let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&shape, &x).unwrap())]);
        prop_assert_eq!(gpu, cpu);
    }

    #[test]
    fn topk_matches_reference_with_ties(shape in row_shape(), kf in 0.0f64..1.0, seed in any::<u64>()) {
        let n = *shape.last().unwrap();
        let k = 1 + ((n.min(40) - 1) as f64 * kf) as usize;
        let x = tie_values(shape.iter().product(), seed);
        for output in [TopKOutput::Values, TopKOutput::Indices] {
            let g = one_op(&shape, Op::TopK { k, output });
            let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&shape, &x).unwrap())]);
            assert_bits_eq(&gpu, &cpu, &format!("topk {k} {output:?} {shape:?}"));
        }
    }
}

#[test]
fn argmax_nan_infinity_and_signed_zero_rules() {
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let rows: [[f32; 3]; 7] = [
        [nan, 1.0, 2.0],   // a NaN first wins: nothing compares greater
        [1.0, nan, 3.0],   // later NaNs never win
        [-inf, nan, -inf], // all -inf: the first
        [0.0, -0.0, -1.0],
        [-0.0, 0.0, -1.0], // -0 ties with +0: the first
        [-inf, -inf, -inf],
        [1.0, inf, inf],
    ];
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    let g = one_op(&[7, 3], Op::Argmax);
    let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&[7, 3], &x).unwrap())]);
    assert_eq!(cpu, [0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    assert_eq!(gpu, cpu);
}

#[test]
fn topk_orders_signed_zeros_and_infinities_like_total_cmp() {
    let inf = f32::INFINITY;
    let x = [0.0, -0.0, -inf, inf, 0.0, -0.0, 1.0, -inf];
    for output in [TopKOutput::Values, TopKOutput::Indices] {
        let g = one_op(&[8], Op::TopK { k: 8, output });
        let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&[8], &x).unwrap())]);
        assert_bits_eq(&gpu, &cpu, &format!("{output:?}"));
    }
}

#[test]
fn topk_64_of_a_vocabulary_row() {
    let n = 49_152;
    let mut x = distinct_logits(2, n, 3, -8.0, 8.0);
    // Some exact ties among the largest values too.
    x[10] = 7.99;
    x[20] = 7.99;
    x[n + 5] = 7.99;
    x[n + 6] = 7.99;
    for output in [TopKOutput::Values, TopKOutput::Indices] {
        let g = one_op(&[2, n], Op::TopK { k: 64, output });
        let (gpu, cpu) = run_both(&g, &[("x", HostTensor::from_f32(&[2, n], &x).unwrap())]);
        assert_bits_eq(&gpu, &cpu, &format!("{output:?}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling.

#[derive(Debug, Clone, Copy)]
struct Spec {
    top_k: usize,
    top_p: f32,
    temperature: f32,
    seed: u64,
}

fn sample_graph(shape: &[usize], s: Spec, has_counter: bool) -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, shape).unwrap();
    let mut ins = vec![x];
    if has_counter {
        ins.push(g.input("counter", DType::U32, [1]).unwrap());
    }
    let op = Op::Sample {
        top_k: s.top_k,
        top_p: s.top_p,
        temperature: s.temperature,
        seed: s.seed,
        has_counter,
    };
    let y = g.add(op, &ins).unwrap();
    g.output(y).unwrap();
    g
}

/// Runs a sample graph; returns the GPU's and the reference's indices.
fn run_sample(shape: &[usize], x: &[f32], s: Spec, counter: Option<u32>) -> (Vec<f32>, Vec<f32>) {
    let g = sample_graph(shape, s, counter.is_some());
    let mut inputs = vec![("x", HostTensor::from_f32(shape, x).unwrap())];
    if let Some(c) = counter {
        inputs.push((
            "counter",
            HostTensor::from_values(DType::U32, &[1], &[c as f32]).unwrap(),
        ));
    }
    run_both(&g, &inputs)
}

/// The indices of a row in the reference's order: descending, equal values by lower index.
fn order_desc(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx
}

/// The candidates the GPU may pick (the reference's kept set up to the largest nucleus the
/// rounding allows) and, when f32 rounding cannot change it, the pick itself.
///
/// An f64 replica of the reference: any nucleus cut whose cumulative probability is within
/// `MARGIN` of top_p might be the GPU's, and a draw within `MARGIN·mass` of a cumulative
/// boundary might fall either side. The pick is certain when every possible cut gives the same
/// pick with no draw that near a boundary; otherwise `None`.
fn expected_pick(row: &[f32], s: Spec, counter: u32, r: u32) -> (Vec<usize>, Option<usize>) {
    let order = order_desc(row);
    let keep = if s.top_k == 0 {
        row.len()
    } else {
        s.top_k.min(row.len())
    };
    let kept = order[..keep].to_vec();
    let t = s.temperature as f64;
    let zmax = row[kept[0]] as f64 / t;
    // acc[j]: the weight of the first j + 1 kept candidates.
    let acc: Vec<f64> = kept
        .iter()
        .scan(0.0, |a, &i| {
            *a += (row[i] as f64 / t - zmax).exp();
            Some(*a)
        })
        .collect();
    let total = acc[keep - 1];
    // The nucleus sizes the GPU might choose: the first prefix reaching top_p ± MARGIN.
    let reach = |p: f64| acc.partition_point(|&a| a / total < p).min(keep - 1) + 1;
    let (lo, hi) = if s.top_p < 1.0 {
        (
            reach(s.top_p as f64 - MARGIN),
            reach(s.top_p as f64 + MARGIN),
        )
    } else {
        (keep, keep)
    };
    let allowed = kept[..hi].to_vec();
    let u = sample_uniform(s.seed, counter, r) as f64;
    let mut pick = None;
    for m in lo..=hi {
        let mass = acc[m - 1];
        let target = u * mass;
        let q = acc[..m].partition_point(|&a| a <= target).min(m - 1);
        let near = |a: f64| (a - target).abs() < MARGIN * mass;
        if near(acc[q]) || (q > 0 && near(acc[q - 1])) || pick.is_some_and(|p| p != kept[q]) {
            return (allowed, None);
        }
        pick = Some(kept[q]);
    }
    (allowed, pick)
}

/// Compares GPU and reference picks row by row; returns how many rows were too near a boundary
/// to require equality.
fn check_picks(x: &[f32], n: usize, s: Spec, counter: u32, gpu: &[f32], cpu: &[f32]) -> usize {
    let mut near = 0;
    for (r, row) in x.chunks(n).enumerate() {
        let (allowed, pick) = expected_pick(row, s, counter, r as u32);
        let (g, c) = (gpu[r] as usize, cpu[r] as usize);
        match pick {
            Some(p) => {
                assert_eq!(c, p, "the test's replica disagrees with the reference");
                assert_eq!(g, c, "row {r} of {s:?}, counter {counter}");
            }
            None => {
                near += 1;
                assert!(allowed.contains(&g), "row {r}: {g} is outside the nucleus");
            }
        }
    }
    near
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn greedy_sampling_is_argmax(shape in row_shape(), seed in any::<u64>(), top_k in 0usize..5) {
        let x = tie_values(shape.iter().product(), seed);
        let s = Spec { top_k, top_p: 0.5, temperature: 0.0, seed };
        let (gpu, cpu) = run_sample(&shape, &x, s, Some(3));
        let (argmax, _) = run_both(&one_op(&shape, Op::Argmax), &[("x", HostTensor::from_f32(&shape, &x).unwrap())]);
        prop_assert_eq!(&gpu, &cpu);
        prop_assert_eq!(&gpu, &argmax);
    }
}

proptest! {
    // A fixed seed for the generated cases: whether a row's draw lands within MARGIN of a
    // cumulative boundary is chance (a few per cent of rows), so the check that at most one row
    // per case does (which keeps the exact comparison from going unexercised) failed now and then
    // on valid picks: a CI run on 2026-11-21 drew 3 rows of 257 with two near a boundary, the GPU's
    // picks inside the nucleus. The inputs are still random, chosen once.
    #![proptest_config(ProptestConfig {
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x6b69_6c6e),
        ..ProptestConfig::with_cases(8)
    })]

    #[test]
    fn seeded_sampling_matches_reference(
        rows in 1usize..5,
        n in prop::sample::select(vec![1usize, 3, 17, 65, 257, 300]),
        top_k in prop::sample::select(vec![0usize, 1, 3, 40, 1000]),
        top_p in prop::sample::select(vec![1.0f32, 0.95, 0.6, 0.2]),
        temperature in prop::sample::select(vec![0.3f32, 1.0, 1.7]),
        seed in any::<u64>(),
        // The reference carries integers as f32, so counters stay below 2^24.
        counter in prop::option::of(0u32..1 << 24),
    ) {
        let x = distinct_logits(rows, n, seed, -4.0, 4.0);
        let s = Spec { top_k, top_p, temperature, seed };
        let (gpu, cpu) = run_sample(&[rows, n], &x, s, counter);
        let near = check_picks(&x, n, s, counter.unwrap_or(0), &gpu, &cpu);
        prop_assert!(near <= 1, "{near} of {rows} rows near a boundary");
    }
}

#[test]
fn sampling_through_ties_keeps_the_lower_indices() {
    // Five equal logits and top_k 2: only indices 0 and 1 are kept, each with probability 1/2.
    let x = [1.0, 1.0, 1.0, 1.0, 1.0, -2.0];
    let s = Spec {
        top_k: 2,
        top_p: 1.0,
        temperature: 1.0,
        seed: 11,
    };
    let mut seen = [0usize; 6];
    let mut near = 0;
    for c in 0..24 {
        let (gpu, cpu) = run_sample(&[1, 6], &x, s, Some(c));
        near += check_picks(&x, 6, s, c, &gpu, &cpu);
        seen[gpu[0] as usize] += 1;
    }
    assert!(near <= 2, "{near} draws near a boundary");
    assert!(
        seen[0] > 0 && seen[1] > 0 && seen[2..].iter().all(|&c| c == 0),
        "{seen:?}"
    );
}

/// Logits shaped like a language model's: 64 plausible tokens 0.25 apart below 10, and a long
/// tail in [-16, -4] holding well under 1% of the mass. Every value is distinct.
fn peaked_logits(rows: usize, n: usize, seed: u64) -> Vec<f32> {
    let ranks = distinct_logits(rows, n, seed, 0.0, n as f32);
    ranks
        .iter()
        .map(|&r| {
            let r = r as usize;
            if r >= n - 64 {
                10.0 - 0.25 * (n - 1 - r) as f32
            } else {
                -16.0 + 12.0 * r as f32 / n as f32
            }
        })
        .collect()
}

#[test]
fn sampling_a_vocabulary_row() {
    let n = 49_152;
    let rows = 2;
    let x = peaked_logits(rows, n, 17);
    let mut near = 0;
    let cases = [
        // The common decode setting.
        (40, 1.0, 0.8, Some(0)),
        (40, 0.9, 1.0, Some(12345)),
        // No top_k: the nucleus search runs over the whole row.
        (0, 0.9, 1.0, None),
        (0, 0.5, 2.5, Some(7)),
    ];
    for (top_k, top_p, temperature, counter) in cases {
        let s = Spec {
            top_k,
            top_p,
            temperature,
            seed: 0xdead_beef_0123_4567,
        };
        let (gpu, cpu) = run_sample(&[rows, n], &x, s, counter);
        near += check_picks(&x, n, s, counter.unwrap_or(0), &gpu, &cpu);
    }
    assert!(near <= 1, "{near} rows near a boundary");
}

#[test]
fn sampling_a_flat_vocabulary_row() {
    // ~40k nearly equal candidates in the nucleus: their cumulative boundaries are closer than
    // f32 sums can resolve, so only the nucleus is checked (see `expected_pick`).
    let n = 49_152;
    let x = distinct_logits(1, n, 23, -6.0, 6.0);
    let s = Spec {
        top_k: 0,
        top_p: 0.9,
        temperature: 1.0,
        seed: 99,
    };
    let (gpu, cpu) = run_sample(&[1, n], &x, s, Some(1));
    check_picks(&x, n, s, 1, &gpu, &cpu);
}

#[test]
fn the_counter_changes_the_draw() {
    // Sixteen equally likely candidates: different counters give different picks.
    let x = vec![0.0f32; 16];
    let s = Spec {
        top_k: 0,
        top_p: 1.0,
        temperature: 1.0,
        seed: 5,
    };
    let picks: Vec<f32> = (0..8)
        .map(|c| run_sample(&[1, 16], &x, s, Some(c)).0[0])
        .collect();
    let mut distinct = picks.clone();
    distinct.sort_by(f32::total_cmp);
    distinct.dedup();
    assert!(distinct.len() > 2, "{picks:?}");
}
