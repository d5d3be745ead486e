//! The fused attention kernel on the Vulkan device against kiln-reference.
//!
//! All three variants run here: one workgroup per query row below `TILED_MIN_QUERIES` queries,
//! 16 query rows per workgroup with K and V staged in workgroup memory from there on, and
//! blocks of 64 query rows whose scores and weighted values are register-tiled matmuls when
//! head_dim <= 32 and there are enough (batch, head) pairs to fill the GPU.
//!
//! Tolerances: the reference accumulates dot products, the softmax and the weighted sum in f64;
//! the kernel does all three in f32 with a streaming softmax (running max and sum, rescaled by
//! `exp(m_old - m_new)` per tile of 64 keys, 32 in the tiled and block variants). With inputs
//! in [-1.5, 1.5], head_dim <= 256 and scale <= 1.5, a score is off by a few f32 ulps of the sum
//! of |q·k| terms, which moves each softmax weight by about that much relative; the driver's
//! `exp` adds a few ulps more. The output is a convex combination of values of magnitude
//! <= 1.5, so its error stays at a few 1e-6 absolute: the largest seen over 512 random cases
//! was 4.8e-6 on lavapipe and below 5e-6 on an H200 (measured before the block variant, which
//! the random cases rarely reach; it is checked by the fixed cases below). We allow 2e-5 + 2e-5 * |want|, about 4x that, while a wrong key count, a wrong mask or a
//! mis-scaled weight moves outputs by 1e-2 or more. Rows that see no key must be exactly zero.

mod common;

use kiln::ir::{AttentionMask, DType, Graph, HeadLayout, HostTensor, Op};
use kiln::reference::evaluate;
use kiln::runtime::run_eager;
use proptest::prelude::*;

const ATOL: f32 = 2e-5;
const RTOL: f32 = 2e-5;

const MASKS: [AttentionMask; 4] = [
    AttentionMask::None,
    AttentionMask::Causal,
    AttentionMask::Bias,
    AttentionMask::KeyPadding,
];

/// Deterministic values in [lo, hi) from a seed (a small LCG).
fn values(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    common::uniform(n, seed, lo, hi)
}

/// One attention call: its geometry, mask, layout and optional past length.
#[derive(Debug, Clone)]
struct Case {
    batch: usize,
    seq_q: usize,
    /// Rows of k and v (the cache capacity when `past` is set).
    seq_k: usize,
    kv_heads: usize,
    group: usize,
    head_dim: usize,
    scale: f32,
    mask: AttentionMask,
    layout: HeadLayout,
    past: Option<usize>,
    /// Which broadcast shape a bias mask takes (see [`bias_shape`]).
    bias_form: usize,
    seed: u64,
}

impl Case {
    fn heads(&self) -> usize {
        self.kv_heads * self.group
    }

    fn dims(&self, seq: usize, heads: usize) -> Vec<usize> {
        match self.layout {
            HeadLayout::Bshd => vec![self.batch, seq, heads, self.head_dim],
            HeadLayout::Bhsd => vec![self.batch, heads, seq, self.head_dim],
        }
    }

    fn op(&self) -> Op {
        Op::Attention {
            num_heads: self.heads(),
            num_kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            scale: self.scale,
            mask: self.mask,
            layout: self.layout,
            has_past_len: self.past.is_some(),
        }
    }
}

/// A bias shape broadcastable to the scores [batch, heads, seq_q, seq_k].
fn bias_shape(c: &Case) -> Vec<usize> {
    let (b, h, q, k) = (c.batch, c.heads(), c.seq_q, c.seq_k);
    match c.bias_form % 4 {
        0 => vec![b, h, q, k],
        1 => vec![q, k],
        2 => vec![b, 1, 1, k],
        _ => vec![1, h, q, 1],
    }
}

/// Bias values in [-2, 2) with about one in eight set to -inf.
fn bias_values(n: usize, seed: u64) -> Vec<f32> {
    let pick = values(n, seed ^ 0xb1a5, 0.0, 1.0);
    values(n, seed, -2.0, 2.0)
        .into_iter()
        .zip(pick)
        .map(|(v, p)| if p < 0.125 { f32::NEG_INFINITY } else { v })
        .collect()
}

/// Key-padding bits, about one in four zero; batch 0 may be fully padded out.
fn padding_values(c: &Case, all_zero_batch0: bool) -> Vec<f32> {
    let bits = values(c.batch * c.seq_k, c.seed ^ 0x9ad, 0.0, 1.0);
    bits.iter()
        .enumerate()
        .map(|(i, &u)| {
            let padded = (all_zero_batch0 && i < c.seq_k) || u < 0.25;
            if padded {
                0.0
            } else {
                1.0
            }
        })
        .collect()
}

/// The graph of one case and its inputs. The cache rows at and after past + seq_q hold huge
/// values, so reading any of them would show.
fn build(c: &Case, mask: Option<HostTensor>) -> (Graph, Vec<(&'static str, HostTensor)>) {
    let mut g = Graph::new();
    let (qd, kd) = (c.dims(c.seq_q, c.heads()), c.dims(c.seq_k, c.kv_heads));
    let q = g.input("q", DType::F32, qd.as_slice()).unwrap();
    let k = g.input("k", DType::F32, kd.as_slice()).unwrap();
    let v = g.input("v", DType::F32, kd.as_slice()).unwrap();
    let mut ids = vec![q, k, v];
    let mut inputs = vec![
        ("q", tensor(&qd, c.seed, None)),
        (
            "k",
            tensor(&kd, c.seed ^ 1, c.past.map(|p| (p + c.seq_q, c))),
        ),
        (
            "v",
            tensor(&kd, c.seed ^ 2, c.past.map(|p| (p + c.seq_q, c))),
        ),
    ];
    if let Some(m) = mask {
        ids.push(g.input("mask", m.dtype, m.shape.as_slice()).unwrap());
        inputs.push(("mask", m));
    }
    if let Some(p) = c.past {
        ids.push(g.input("past", DType::I32, [1]).unwrap());
        inputs.push(("past", HostTensor::from_i32(&[1], &[p as i32]).unwrap()));
    }
    let y = g.add(c.op(), &ids).unwrap();
    g.output(y).unwrap();
    (g, inputs)
}

/// Values in [-1.5, 1.5); with `stale = (limit, case)`, sequence rows >= limit hold 1e4.
fn tensor(dims: &[usize], seed: u64, stale: Option<(usize, &Case)>) -> HostTensor {
    let mut v = values(dims.iter().product(), seed, -1.5, 1.5);
    if let Some((limit, c)) = stale {
        let sa = c.layout.axes().1;
        let st = kiln::kernels::lower::strides(dims);
        for (i, x) in v.iter_mut().enumerate() {
            if (i / st[sa]) % dims[sa] >= limit {
                *x = 1e4;
            }
        }
    }
    HostTensor::from_f32(dims, &v).unwrap()
}

/// The mask input a case's mask kind needs.
fn mask_for(c: &Case) -> Option<HostTensor> {
    match c.mask {
        AttentionMask::Bias => {
            let s = bias_shape(c);
            let n = s.iter().product();
            Some(HostTensor::from_f32(&s, &bias_values(n, c.seed ^ 3)).unwrap())
        }
        AttentionMask::KeyPadding => {
            let bits = padding_values(c, c.seed.is_multiple_of(3));
            Some(HostTensor::from_values(DType::Bool, &[c.batch, c.seq_k], &bits).unwrap())
        }
        AttentionMask::None | AttentionMask::Causal => None,
    }
}

/// Runs a graph on the GPU and on the reference; returns (gpu, cpu).
fn run_both(g: &Graph, inputs: &[(&str, HostTensor)]) -> (Vec<f32>, Vec<f32>) {
    let gpu = run_eager(&common::device(), g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    let cpu = evaluate(g, &[], inputs).unwrap_or_else(|e| panic!("{e}"));
    (gpu[0].to_f32(), cpu[0].to_f32())
}

/// Checks one case (with the mask its kind needs) against the reference.
fn check(c: &Case) {
    check_with_mask(c, mask_for(c));
}

fn check_with_mask(c: &Case, mask: Option<HostTensor>) {
    let (g, inputs) = build(c, mask);
    let (gpu, cpu) = run_both(&g, &inputs);
    common::assert_close(&gpu, &cpu, ATOL, RTOL, &format!("{c:?}"));
    // Rows the reference zeroes (no visible key) must be exact zeros on the GPU too.
    for (g, w) in gpu.iter().zip(&cpu) {
        if *w == 0.0 {
            assert_eq!(*g, 0.0, "{c:?}: a masked row is not zero");
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1..=2usize,
        prop::sample::select(vec![1usize, 3, 17]),
        prop::sample::select(vec![1usize, 3, 17, 65]),
        1..=2usize,
        1..=2usize,
        prop::sample::select(vec![8usize, 16, 64]),
        0.05f32..1.5,
        prop::option::of((prop::sample::select(vec![0usize, 1, 7, 50]), 0..=5usize)),
        any::<u64>(),
    )
        .prop_map(
            |(batch, seq_q, sk, kv_heads, group, head_dim, scale, past, seed)| {
                // With a past length the cache holds past + seq_q + spare rows.
                let (seq_k, past) = match past {
                    Some((p, spare)) => (p + seq_q + spare, Some(p)),
                    None => (sk, None),
                };
                Case {
                    batch,
                    seq_q,
                    seq_k,
                    kv_heads,
                    group,
                    head_dim,
                    scale,
                    mask: AttentionMask::None,
                    layout: HeadLayout::Bshd,
                    past,
                    bias_form: (seed % 4) as usize,
                    seed,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8))]

    #[test]
    fn every_mask_and_layout_matches_reference(base in case_strategy()) {
        for layout in [HeadLayout::Bshd, HeadLayout::Bhsd] {
            for mask in MASKS {
                check(&Case { mask, layout, ..base.clone() });
            }
        }
    }
}

fn base_case() -> Case {
    Case {
        batch: 1,
        seq_q: 3,
        seq_k: 3,
        kv_heads: 1,
        group: 1,
        head_dim: 16,
        scale: 0.25,
        mask: AttentionMask::None,
        layout: HeadLayout::Bshd,
        past: None,
        bias_form: 0,
        seed: 5,
    }
}

#[test]
fn fully_padded_batch_gives_zeros() {
    let c = Case {
        batch: 2,
        seq_k: 17,
        mask: AttentionMask::KeyPadding,
        ..base_case()
    };
    let (g, inputs) = build(&c, Some(padding_tensor(&c, DType::Bool)));
    let (gpu, cpu) = run_both(&g, &inputs);
    let half = gpu.len() / 2;
    assert!(gpu[..half].iter().all(|&x| x == 0.0), "batch 0 is not zero");
    assert!(gpu[half..].iter().any(|&x| x != 0.0));
    common::assert_close(&gpu, &cpu, ATOL, RTOL, "padded batch");
}

/// Batch 0 fully padded, batch 1 random.
fn padding_tensor(c: &Case, dtype: DType) -> HostTensor {
    let bits = padding_values(c, true);
    HostTensor::from_values(dtype, &[c.batch, c.seq_k], &bits).unwrap()
}

#[test]
fn integer_key_padding_masks() {
    for dtype in [DType::I32, DType::U8, DType::I64] {
        let c = Case {
            batch: 2,
            seq_k: 17,
            mask: AttentionMask::KeyPadding,
            layout: HeadLayout::Bhsd,
            ..base_case()
        };
        check_with_mask(&c, Some(padding_tensor(&c, dtype)));
    }
}

#[test]
fn bias_rows_of_minus_infinity_give_zeros() {
    let c = Case {
        seq_q: 2,
        seq_k: 5,
        mask: AttentionMask::Bias,
        ..base_case()
    };
    // Row 0 sees nothing; row 1 sees keys 1 and 3 with a large finite bias on 3.
    let ninf = f32::NEG_INFINITY;
    let bias = [ninf, ninf, ninf, ninf, ninf, ninf, 0.0, ninf, -1e30, ninf];
    let (g, inputs) = build(&c, Some(HostTensor::from_f32(&[2, 5], &bias).unwrap()));
    let (gpu, cpu) = run_both(&g, &inputs);
    assert!(gpu[..16].iter().all(|&x| x == 0.0));
    common::assert_close(&gpu, &cpu, ATOL, RTOL, "-inf bias");
}

#[test]
fn causal_decode_with_a_long_cache() {
    // Decode (one query) and a chunk of 5 queries after a past of 70: the keys span two tiles
    // of 64, and the spare cache rows (filled with 1e4) must be ignored.
    for (seq_q, layout) in [(1, HeadLayout::Bhsd), (5, HeadLayout::Bshd)] {
        let c = Case {
            seq_q,
            seq_k: 70 + seq_q + 9,
            kv_heads: 2,
            group: 2,
            mask: AttentionMask::Causal,
            layout,
            past: Some(70),
            ..base_case()
        };
        check(&c);
    }
}

/// Decode and short chunks over caches long enough that the per-row variant's four key groups
/// walk several rounds (a round is 4 x 64 keys), the last one partial (some groups with part
/// of a tile, some with none): causal, padded and biased keys, GQA, head_dims of one to four
/// dims per invocation.
#[test]
fn per_row_key_groups_over_long_caches() {
    let cases = [
        (1, 300, AttentionMask::Causal, 64),
        (1, 600, AttentionMask::KeyPadding, 32),
        (3, 450, AttentionMask::Bias, 100),
        (2, 1000, AttentionMask::None, 256),
        (1, 130, AttentionMask::Causal, 8),
        // Seed 4005 is a multiple of 3: every key padded out (mask_for), so all four groups
        // end unseen and the merged row must be exactly zero.
        (1, 600, AttentionMask::KeyPadding, 32),
    ];
    for (n, (seq_q, past, mask, head_dim)) in cases.into_iter().enumerate() {
        check(&Case {
            batch: 1,
            seq_q,
            seq_k: past + seq_q + 7,
            kv_heads: 2,
            group: 3,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            mask,
            layout: if n.is_multiple_of(2) {
                HeadLayout::Bshd
            } else {
                HeadLayout::Bhsd
            },
            past: Some(past),
            bias_form: n,
            seed: 4000 + n as u64,
        });
    }
}

#[test]
fn large_head_dims_and_many_key_tiles() {
    for head_dim in [128, 256] {
        let c = Case {
            seq_q: 2,
            seq_k: 130,
            head_dim,
            scale: 1.0 / (head_dim as f32).sqrt(),
            mask: AttentionMask::Causal,
            ..base_case()
        };
        check(&c);
        check(&Case {
            mask: AttentionMask::None,
            layout: HeadLayout::Bhsd,
            ..c
        });
    }
}

#[test]
fn head_dim_above_the_kernel_limit_is_a_typed_error() {
    let c = Case {
        head_dim: 512,
        ..base_case()
    };
    let (g, inputs) = build(&c, None);
    let err = run_eager(&common::device(), &g, &[], &inputs).unwrap_err();
    assert!(
        matches!(
            err,
            kiln::runtime::RunError::Unsupported {
                op: "attention",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("head_dim"), "{err}");
}

/// The tiled variant (from `TILED_MIN_QUERIES` queries, 16 rows per workgroup) next to the
/// per-row one: one query, 17 (per row, above one tile), two tiles plus one, several
/// tiles with a partial last one; every mask,
/// both layouts, GQA, and head_dims that take one, two and four staged chunks of 64 dims (256
/// also takes two output passes). Non-causal cases have a few more keys than queries, so the last
/// key tile is partial too.
#[test]
fn query_tiles_every_mask_layout_and_head_dim() {
    let mut n = 0u64;
    for head_dim in [8, 64, 128, 256] {
        for seq_q in [1, 17, 33, 65, 130] {
            for (k, mask) in MASKS.into_iter().enumerate() {
                let layout = if (k + seq_q) % 2 == 0 {
                    HeadLayout::Bshd
                } else {
                    HeadLayout::Bhsd
                };
                let extra = if mask == AttentionMask::Causal { 0 } else { 5 };
                check(&Case {
                    // One batch for the largest cases keeps the test quick (key padding keeps
                    // two: batch 0 may be padded out entirely).
                    batch: if head_dim * seq_q > 64 * 65 && mask != AttentionMask::KeyPadding {
                        1
                    } else {
                        2
                    },
                    seq_q,
                    seq_k: seq_q + extra,
                    kv_heads: 2,
                    group: 2,
                    head_dim,
                    scale: 1.0 / (head_dim as f32).sqrt(),
                    mask,
                    layout,
                    past: None,
                    bias_form: n as usize,
                    seed: 1000 + n,
                });
                n += 1;
            }
        }
    }
}

/// A case with enough (batch, head) pairs for the block variant (64 query heads
/// over 16 kv heads); asserts that it takes it.
fn block_case(batch: usize, seq_q: usize, seq_k: usize, head_dim: usize, n: usize) -> Case {
    use kiln::kernels::families::attention::Variant;
    let c = Case {
        batch,
        seq_q,
        seq_k,
        kv_heads: 16,
        group: 4,
        head_dim,
        scale: 1.0 / (head_dim as f32).sqrt(),
        mask: MASKS[n % 4],
        layout: if n.is_multiple_of(2) {
            HeadLayout::Bshd
        } else {
            HeadLayout::Bhsd
        },
        past: None,
        bias_form: n,
        seed: 2000 + n as u64,
    };
    assert_eq!(
        Variant::choose(seq_q, batch * c.heads(), head_dim),
        Variant::Block,
        "{c:?}"
    );
    c
}

/// The block variant (many query rows, head_dim <= 32): a partial single
/// query tile, two tiles with a last one of one row, several key tiles with a partial last one,
/// head_dims 8, 32 and 22 (not a multiple of 4); every mask, both layouts, GQA.
#[test]
fn block_variant_every_mask_layout_and_head_dim() {
    let shapes = [
        (2, 32, 37, 8),
        (2, 65, 70, 32),
        (2, 40, 130, 22),
        (1, 130, 130, 32),
    ];
    let mut n = 0;
    for (batch, seq_q, seq_k, head_dim) in shapes {
        for mask in MASKS {
            let c = block_case(batch, seq_q, seq_k, head_dim, n);
            check(&Case { mask, ..c });
            n += 1;
        }
    }
}

/// Query rows whose bias is -inf for every key see no key and give zeros in the variants that
/// tile queries too (the per-row one: `bias_rows_of_minus_infinity_give_zeros`): every third
/// row of a [seq_q, seq_k] bias, the others random with some -inf.
#[test]
fn tiled_and_block_variants_give_zeros_for_rows_of_minus_infinity() {
    let block = Case {
        mask: AttentionMask::Bias,
        layout: HeadLayout::Bshd,
        ..block_case(2, 65, 70, 32, 1)
    };
    let tiled = Case {
        batch: 2,
        seq_q: 33,
        seq_k: 38,
        kv_heads: 2,
        group: 2,
        head_dim: 64,
        scale: 0.125,
        mask: AttentionMask::Bias,
        layout: HeadLayout::Bshd,
        past: None,
        bias_form: 1,
        seed: 77,
    };
    for c in [block, tiled] {
        let mut bias = bias_values(c.seq_q * c.seq_k, c.seed);
        for row in (0..c.seq_q).step_by(3) {
            bias[row * c.seq_k..(row + 1) * c.seq_k].fill(f32::NEG_INFINITY);
        }
        let mask = HostTensor::from_f32(&[c.seq_q, c.seq_k], &bias).unwrap();
        let (g, inputs) = build(&c, Some(mask));
        let (gpu, cpu) = run_both(&g, &inputs);
        common::assert_close(&gpu, &cpu, ATOL, RTOL, &format!("{c:?}"));
        // Output [batch, seq_q, heads, head_dim] (Bshd): row 0 of every batch is all zeros.
        let row = c.heads() * c.head_dim;
        for b in 0..c.batch {
            let at = b * c.seq_q * row;
            assert!(gpu[at..at + row].iter().all(|&x| x == 0.0), "{c:?}");
        }
    }
}

/// The block variant after a past length: keys end at past + seq_q (causally
/// at past + i + 1) and the stale cache rows after them (1e4) are never read.
#[test]
fn block_variant_after_a_past_length() {
    for (n, (seq_q, past, mask)) in [
        (33, 70, AttentionMask::Causal),
        (64, 5, AttentionMask::KeyPadding),
        (40, 64, AttentionMask::Bias),
    ]
    .into_iter()
    .enumerate()
    {
        let c = block_case(2, seq_q, past + seq_q + 9, 32, n);
        check(&Case {
            mask,
            past: Some(past),
            ..c
        });
    }
}

/// Query tiles after a past (chunked prefill): keys end at past + seq_q, causally at
/// past + i + 1, and the cache rows after them (1e4) are never read.
#[test]
fn query_tiles_after_a_past_length() {
    let cases = [
        (16, 0, AttentionMask::Causal),
        (17, 40, AttentionMask::Causal),
        (33, 5, AttentionMask::KeyPadding),
        (20, 70, AttentionMask::Bias),
        (48, 31, AttentionMask::None),
    ];
    for (n, (seq_q, past, mask)) in cases.into_iter().enumerate() {
        for layout in [HeadLayout::Bshd, HeadLayout::Bhsd] {
            check(&Case {
                batch: 2,
                seq_q,
                seq_k: past + seq_q + 9,
                kv_heads: 1,
                group: 3,
                head_dim: 32,
                scale: 0.2,
                mask,
                layout,
                past: Some(past),
                bias_form: n,
                seed: 77 + n as u64,
            });
        }
    }
}

/// head_dims that are not multiples of 4 or of the 64-dim chunk, in both variants.
#[test]
fn odd_head_dims() {
    for (n, head_dim) in [6usize, 36, 100, 200].into_iter().enumerate() {
        for seq_q in [3, 20] {
            check(&Case {
                seq_q,
                seq_k: 37,
                kv_heads: 2,
                head_dim,
                scale: 1.0 / (head_dim as f32).sqrt(),
                mask: MASKS[n],
                bias_form: n,
                seed: 300 + n as u64,
                ..base_case()
            });
        }
    }
}

/// Keys a query may not see add nothing even when their values are not finite: a padded key
/// whose value row is NaN, and (causal) a last key whose values are +inf, which only the last
/// query sees. All three variants (the last shape runs in blocks).
#[test]
fn values_of_hidden_keys_may_be_non_finite() {
    for (seq_q, kv_heads, group) in [(3, 1, 1), (20, 1, 1), (33, 16, 8)] {
        for mask in [AttentionMask::KeyPadding, AttentionMask::Causal] {
            let c = Case {
                seq_q,
                seq_k: seq_q,
                kv_heads,
                group,
                mask,
                ..base_case()
            };
            // Padding hides key 1 only.
            let mask_input = (mask == AttentionMask::KeyPadding).then(|| {
                let mut bits = vec![1.0f32; c.seq_k];
                bits[1] = 0.0;
                HostTensor::from_values(DType::Bool, &[1, c.seq_k], &bits).unwrap()
            });
            let (g, mut inputs) = build(&c, mask_input);
            let (hidden, fill) = match mask {
                AttentionMask::Causal => (seq_q - 1, f32::INFINITY),
                _ => (1, f32::NAN),
            };
            // Bshd at batch 1: key j's values (all kv heads) are v[j * w .. (j + 1) * w].
            let w = kv_heads * c.head_dim;
            let mut v = inputs[2].1.to_f32();
            v[hidden * w..(hidden + 1) * w].fill(fill);
            inputs[2].1 = HostTensor::from_f32(&c.dims(c.seq_k, kv_heads), &v).unwrap();
            let (gpu, cpu) = run_both(&g, &inputs);
            common::assert_close(&gpu, &cpu, ATOL, RTOL, &format!("{c:?}"));
            // Only the last query of the causal case sees the +inf key.
            let visible = if mask == AttentionMask::Causal {
                (seq_q - 1) * c.heads() * c.head_dim
            } else {
                gpu.len()
            };
            assert!(
                gpu[..visible].iter().all(|x| x.is_finite()),
                "{c:?}: a hidden key's values leaked"
            );
        }
    }
}

/// One executable over a bounded sequence switches between the per-row and the tiled variants
/// as the active extent changes (kernels of their own, built at compile time).
/// Q, K and V are narrows of one fused projection, so attention reads them in place
/// (`lower_packed`); GQA with 4 query heads over 2 kv heads.
#[test]
fn one_executable_switches_variants_across_extents() {
    use kiln::ir::{Dim, DimBinding, Shape};
    use kiln::runtime::{CompileOptions, Executable};

    const MAX: usize = 40;
    const C: usize = 32;
    const D: usize = 16;
    const HQ: usize = 4;
    const HKV: usize = 2;
    const W: usize = (HQ + 2 * HKV) * D;
    // The lengths below take both variants.
    use kiln::kernels::families::attention::{Variant, TILED_MIN_QUERIES};
    assert_eq!(TILED_MIN_QUERIES, 32);
    assert_eq!(Variant::choose(31, 2 * HQ, D), Variant::Row);
    assert_eq!(Variant::choose(32, 2 * HQ, D), Variant::Tiled);
    let dev = common::device();
    for mask in [AttentionMask::KeyPadding, AttentionMask::Causal] {
        let seq = Dim::bounded("seq", MAX);
        let mut g = Graph::new();
        let x = g
            .input(
                "x",
                DType::F32,
                Shape(vec![Dim::Static(2), seq.clone(), Dim::Static(C)]),
            )
            .unwrap();
        let pad = g
            .input("pad", DType::F32, Shape(vec![Dim::Static(2), seq.clone()]))
            .unwrap();
        let w = g.param("w", DType::F32, [W, C]).unwrap();
        let b = g.param("b", DType::F32, [W]).unwrap();
        let qkv = g.fused_matmul_bias_act(x, w, Some(b), None, true).unwrap();
        let mut ins = Vec::new();
        for (start, heads) in [(0, HQ), (HQ * D, HKV), ((HQ + HKV) * D, HKV)] {
            let n = g.narrow(qkv, 2, start, heads * D).unwrap();
            let shape = Shape(vec![
                Dim::Static(2),
                seq.clone(),
                Dim::Static(heads),
                Dim::Static(D),
            ]);
            ins.push(g.reshape(n, shape).unwrap());
        }
        if mask == AttentionMask::KeyPadding {
            ins.push(pad);
        }
        let op = Op::Attention {
            num_heads: HQ,
            num_kv_heads: HKV,
            head_dim: D,
            scale: 0.3,
            mask,
            layout: HeadLayout::Bshd,
            has_past_len: false,
        };
        let y = g.add(op, &ins).unwrap();
        g.output(y).unwrap();
        if mask == AttentionMask::Causal {
            // Keep the padding input used.
            let s = g.reduce(kiln::ir::ReduceOp::Sum, pad, &[1], false).unwrap();
            g.output(s).unwrap();
        }
        let params = vec![
            (
                "w",
                HostTensor::from_f32(&[W, C], &values(W * C, 11, -0.5, 0.5)).unwrap(),
            ),
            (
                "b",
                HostTensor::from_f32(&[W], &values(W, 12, -0.5, 0.5)).unwrap(),
            ),
        ];
        let mut exe = Executable::compile(&dev, &g, &CompileOptions::default())
            .unwrap_or_else(|e| panic!("{e}"));
        // The premise: attention reads Q, K and V in place from the projection.
        assert!(exe
            .plan()
            .steps
            .iter()
            .any(|s| matches!(s.kind, kiln::plan::StepKind::PackedAttention { .. })));
        for (n, t) in &params {
            exe.set_param(n, t).unwrap();
        }
        let pipelines = dev.pipelines().len();
        // Across the threshold both ways, with full and partial query tiles.
        for len in [MAX, 1, 17, 5, 33, 16, 15, 2, 32] {
            let xs =
                HostTensor::from_f32(&[2, len, C], &values(2 * len * C, len as u64, -1.0, 1.0))
                    .unwrap();
            // Batch 1 pads its last third of keys (at least one key stays).
            let bits: Vec<f32> = (0..2 * len)
                .map(|i| f32::from(i < len || (i - len) < len.div_ceil(3).max(1) * 2 || len < 3))
                .collect();
            let pad = HostTensor::from_f32(&[2, len], &bits).unwrap();
            let inputs = vec![("x", xs), ("pad", pad)];
            let refs: Vec<(&str, &HostTensor)> = inputs.iter().map(|(n, t)| (*n, t)).collect();
            let got = exe.run(&refs).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(exe.active_extent().get("seq"), Some(len));
            let exact = g.bind(&DimBinding::new().with("seq", len)).unwrap();
            let want = evaluate(&exact, &params, &inputs).unwrap_or_else(|e| panic!("{e}"));
            common::assert_close(
                &got[0].to_f32(),
                &want[0].to_f32(),
                ATOL,
                RTOL,
                &format!("{mask:?} at seq {len}"),
            );
        }
        assert_eq!(dev.pipelines().len(), pipelines, "no new pipelines");
    }
}
