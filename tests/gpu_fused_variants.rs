//! Kernel variants that have no IR op of their own (the planner's fusions emit them): the QKV
//! split-write matmul and the residual-norm "tee". Each is dispatched directly and compared
//! with kiln-reference evaluating the unfused graph. Tolerances as in gpu_matmul / gpu_norm.

mod common;

use kiln::ir::{Activation, DType, Graph, HostTensor, NormKind, Op};
use kiln::kernels::families::{matmul, norm};
use kiln::kernels::Operand;
use kiln::reference::evaluate;
use kiln::runtime::run_dispatches;

fn values(n: usize, seed: u64) -> Vec<f32> {
    common::signed_unit(n, seed)
}

fn operand(offset: u32, dims: &[usize]) -> Operand {
    Operand::new(offset, dims, DType::F32)
}

/// Packs f32 tensors one after another into arena bytes; returns their word offsets.
fn pack(tensors: &[&[f32]], extra_words: usize) -> (Vec<u8>, Vec<u32>) {
    let mut bytes = Vec::new();
    let mut offsets = Vec::new();
    for t in tensors {
        offsets.push((bytes.len() / 4) as u32);
        bytes.extend(t.iter().flat_map(|v| v.to_le_bytes()));
    }
    offsets.push((bytes.len() / 4) as u32);
    bytes.resize(bytes.len() + extra_words * 4, 0);
    (bytes, offsets)
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Inputs `x [m, k]`, `w [3w, k]`, `b [3w]` (random, from `seed`) and the reference's Q, K and V:
/// one fused matmul with bias and GELU, `[m, 3w]`, then three narrows.
fn qkv_reference(
    m: usize,
    k: usize,
    w: usize,
    seed: u64,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<HostTensor>) {
    let (x, wt, bias) = (
        values(m * k, seed),
        values(3 * w * k, seed + 1),
        values(3 * w, seed + 2),
    );
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [m, k]).unwrap();
    let wi = g.input("w", DType::F32, [3 * w, k]).unwrap();
    let bi = g.input("b", DType::F32, [3 * w]).unwrap();
    let y = g
        .fused_matmul_bias_act(xi, wi, Some(bi), Some(Activation::Gelu), true)
        .unwrap();
    for i in 0..3 {
        let part = g.narrow(y, 1, i * w, w).unwrap();
        g.output(part).unwrap();
    }
    let inputs = [
        ("x", HostTensor::from_f32(&[m, k], &x).unwrap()),
        ("w", HostTensor::from_f32(&[3 * w, k], &wt).unwrap()),
        ("b", HostTensor::from_f32(&[3 * w], &bias).unwrap()),
    ];
    let want = evaluate(&g, &[], &inputs).unwrap();
    (x, wt, bias, want)
}

#[test]
fn qkv_split_write_matches_matmul_and_narrows() {
    // Widths 20 and 18: the tiled kernels store four columns at a time, which with 18 straddle
    // the outputs' boundaries.
    for w in [20, 18] {
        qkv_split_write(w);
    }
}

fn qkv_split_write(w: usize) {
    let case = SplitCase::new(17, 24, w, 1, 0);
    let ops = case.lower(None);
    assert_eq!(ops.len(), 1, "one dispatch writes all three");
    case.compare(&ops, &format!("width {w}"));
}

/// Runs `ops` on `arena` and compares the outputs `outs` with the reference's `want`
/// (tolerance as in gpu_matmul: `k` terms per value).
fn check_parts(
    ops: &[kiln::kernels::Dispatch],
    arena: &[u8],
    outs: &[Operand],
    want: &[HostTensor],
    k: usize,
    what: &str,
) {
    let reads: Vec<(u64, u64)> = outs
        .iter()
        .map(|o| (o.offset as u64, o.numel() as u64))
        .collect();
    let got = run_dispatches(&common::device(), arena, ops, &reads).unwrap();
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (got, want)) in got.iter().zip(want).enumerate() {
        common::assert_close(
            &floats(got),
            &want.to_f32(),
            1e-5 * (k as f32).sqrt(),
            0.0,
            &format!("{what}, part {i}"),
        );
    }
}

/// A split QKV case: the arena packs x, w and b, the three outputs and `partial_words` of
/// workspace after them; `lower` lowers the fused matmul (bias, GELU, split-write) with the
/// workspace given.
struct SplitCase {
    arena: Vec<u8>,
    offsets: Vec<u32>,
    outs: Vec<Operand>,
    want: Vec<HostTensor>,
    workspace: matmul::SplitWorkspace,
    m: usize,
    k: usize,
    w: usize,
}

impl SplitCase {
    fn new(m: usize, k: usize, w: usize, seed: u64, partial_words: usize) -> SplitCase {
        let (x, wt, bias, want) = qkv_reference(m, k, w, seed);
        let (arena, offsets) = pack(&[&x, &wt, &bias], 3 * m * w + partial_words);
        let outs = (0..3)
            .map(|i| operand(offsets[3] + (i * m * w) as u32, &[m, w]))
            .collect();
        let workspace = matmul::SplitWorkspace {
            offset: offsets[3] + (3 * m * w) as u32,
            words: partial_words,
            sum_absorbed: false,
        };
        SplitCase {
            arena,
            offsets,
            outs,
            want,
            workspace,
            m,
            k,
            w,
        }
    }

    fn lower(&self, workspace: Option<matmul::SplitWorkspace>) -> Vec<kiln::kernels::Dispatch> {
        let (m, k, w, off) = (self.m, self.k, self.w, &self.offsets);
        let op = Op::FusedMatMulBiasAct {
            transpose_b: true,
            has_bias: true,
            act: Some(Activation::Gelu),
        };
        matmul::lower_split_k(
            &op,
            &operand(off[0], &[m, k]),
            &operand(off[1], &[3 * w, k]),
            true,
            matmul::Epilogue {
                bias: Some(&operand(off[2], &[3 * w])),
                act: Some(Activation::Gelu),
            },
            &[&self.outs[0], &self.outs[1], &self.outs[2]],
            workspace,
        )
        .unwrap()
    }

    /// Lowers with the whole workspace, checks the kernels and the workspace they use, runs
    /// them and compares the outputs with the reference.
    fn check(&self, kernels: &[&str], what: &str) {
        let ops = self.lower(Some(self.workspace));
        let names: Vec<_> = ops.iter().map(|d| d.kernel.name).collect();
        assert_eq!(names, kernels, "{what}");
        assert_eq!(matmul::split_k_words(&ops), self.workspace.words, "{what}");
        self.compare(&ops, what);
    }

    /// Runs `ops` and compares the three outputs with the reference.
    fn compare(&self, ops: &[kiln::kernels::Dispatch], what: &str) {
        check_parts(ops, &self.arena, &self.outs, &self.want, self.k, what);
    }
}

/// Split-k (`matmul_wide` writing each chunk's partial products into a workspace, then
/// `matmul_split_sum` adding them through the epilogue) with everything the epilogue does:
/// bias, GELU and the QKV split-write; k = 1100 makes seven chunks of 144 and a ragged last
/// one of 92. Outputs 40 wide are summed a column quad per invocation (the partial products
/// stored as quads too), 42 wide (no quad may straddle two outputs) a value per invocation
/// (the partial products, 126 wide, through the staged epilogue). A workspace too small for
/// the partial products keeps one dispatch.
#[test]
fn split_k_adds_chunks_through_the_epilogue() {
    let m = 150;
    let case = SplitCase::new(m, 1100, 40, 4, 8 * m * 3 * 40);
    let too_small = matmul::SplitWorkspace {
        words: case.workspace.words - 1,
        ..case.workspace
    };
    assert_eq!(case.lower(Some(too_small)).len(), 1);
    case.check(&["matmul_wide_quads", "matmul_split_sum_quads"], "split-k");
    let case = SplitCase::new(m, 1100, 42, 5, 8 * m * 3 * 42);
    case.check(
        &["matmul_wide_vec4", "matmul_split_sum"],
        "split-k by values",
    );
}

/// A wide matmul with a short last wave: the rows of the whole waves in one dispatch, the rest
/// apart (see `matmul::lower_split_k`), through the whole epilogue. 3 x 100 columns make 3
/// column tiles, so 88 row tiles (11264 rows) fill the 264 slots of a wave. 77 rows left are
/// ten 64x64 tiles, one round of the 64x64 kernel; 1800 rows left are 145, more than a round,
/// so k = 272 splits them into chunks of 144 and a ragged 128, and k = 200 (too short to
/// split) leaves them 45 wide tiles in a dispatch of their own. Outputs 100 wide store their
/// tiles as column quads (`matmul_wide_quads`); 102 wide, through the staged epilogue.
#[test]
fn a_short_last_wave_runs_its_rows_apart() {
    let w = 100;
    let case = SplitCase::new(88 * 128 + 77, 272, w, 9, 0);
    case.check(
        &["matmul_wide_quads", "matmul_k8_vec4"],
        "last wave on 64x64 tiles",
    );
    let case = SplitCase::new(88 * 128 + 1800, 272, w, 10, 2 * 1800 * 3 * w);
    case.check(
        &[
            "matmul_wide_quads",
            "matmul_wide_quads",
            "matmul_split_sum_quads",
        ],
        "last wave split",
    );
    // With k = 200 the 1800 rows do not split (chunks under 128): their 45 wide tiles run in
    // a dispatch of their own.
    let case = SplitCase::new(88 * 128 + 1800, 200, w, 11, 0);
    case.check(
        &["matmul_wide_quads", "matmul_wide_quads"],
        "last wave on wide tiles",
    );
    let case = SplitCase::new(88 * 128 + 1800, 200, 102, 12, 0);
    case.check(
        &["matmul_wide_vec4", "matmul_wide_vec4"],
        "last wave on wide tiles, staged epilogue",
    );
}

#[test]
fn residual_tee_writes_norm_and_sum() {
    let (rows, w) = (5, 300);
    let (x, r, bias, gamma, beta) = (
        values(rows * w, 4),
        values(rows * w, 5),
        values(w, 6),
        values(w, 7),
        values(w, 8),
    );
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [rows, w]).unwrap();
    let ri = g.input("r", DType::F32, [rows, w]).unwrap();
    let bi = g.input("bias", DType::F32, [w]).unwrap();
    let gi = g.input("g", DType::F32, [w]).unwrap();
    let ei = g.input("e", DType::F32, [w]).unwrap();
    let s = g.add_op(xi, ri).unwrap();
    let s = g.add_op(s, bi).unwrap();
    let y = g.layer_norm(s, Some(gi), Some(ei), 1e-5).unwrap();
    g.output(y).unwrap();
    g.output(s).unwrap();
    let t = |shape: &[usize], v: &[f32]| HostTensor::from_f32(shape, v).unwrap();
    let inputs = [
        ("x", t(&[rows, w], &x)),
        ("r", t(&[rows, w], &r)),
        ("bias", t(&[w], &bias)),
        ("g", t(&[w], &gamma)),
        ("e", t(&[w], &beta)),
    ];
    let want = evaluate(&g, &[], &inputs).unwrap();

    let (arena, off) = pack(&[&x, &r, &bias, &gamma, &beta], 2 * rows * w);
    let out = operand(off[5], &[rows, w]);
    let sum = operand(off[5] + (rows * w) as u32, &[rows, w]);
    let (xo, ro, bo, go, eo) = (
        operand(off[0], &[rows, w]),
        operand(off[1], &[rows, w]),
        operand(off[2], &[w]),
        operand(off[3], &[w]),
        operand(off[4], &[w]),
    );
    let op = Op::FusedResidualNorm {
        kind: NormKind::Layer,
        eps: 1e-5,
        affine: kiln::ir::Affine::ScaleShift,
        has_bias: true,
    };
    let args = norm::NormArgs {
        kind: NormKind::Layer,
        eps: 1e-5,
        x: &xo,
        x_chunks: None,
        residual: Some(&ro),
        bias: Some(&bo),
        gamma: Some(&go),
        beta: Some(&eo),
        out: &out,
        sum_out: Some(&sum),
    };
    let ops = norm::lower_args(&op, &args).unwrap();
    let n = (rows * w) as u64;
    let got = run_dispatches(
        &common::device(),
        &arena,
        &ops,
        &[(out.offset as u64, n), (sum.offset as u64, n)],
    )
    .unwrap();
    common::assert_close(&floats(&got[0]), &want[0].to_f32(), 2e-5, 0.0, "normed");
    // The sum is two f32 additions on both sides (the reference rounds each to f32 too).
    common::assert_close(&floats(&got[1]), &want[1].to_f32(), 0.0, 0.0, "sum");
}

/// `act(a) op b` as one dispatch (the activation-into-binary fusion, SwiGLU's `silu(gate) *
/// up`) against the reference's two ops: rows of 8 (`binary_quads`) and of 7 (`binary`), with
/// b a full tensor or one broadcast row.
#[test]
fn activation_into_binary_both_kernels() {
    use kiln::ir::BinaryOp;
    use kiln::kernels::families::elementwise;
    for w in [8usize, 7] {
        for b_rows in [3usize, 1] {
            let (a, b) = (values(3 * w, 31), values(b_rows * w, 32));
            let mut g = Graph::new();
            let ga = g.input("a", DType::F32, [3, w]).unwrap();
            let gb = g.input("b", DType::F32, [b_rows, w]).unwrap();
            let s = g.activation(Activation::Silu, ga).unwrap();
            let y = g.binary(BinaryOp::Mul, s, gb).unwrap();
            g.output(y).unwrap();
            let want = evaluate(
                &g,
                &[],
                &[
                    ("a", HostTensor::from_f32(&[3, w], &a).unwrap()),
                    ("b", HostTensor::from_f32(&[b_rows, w], &b).unwrap()),
                ],
            )
            .unwrap();
            // Tensors at 16-byte offsets (pack them rounded up to four words).
            let pad = |v: &[f32]| {
                let mut v = v.to_vec();
                v.resize(v.len().next_multiple_of(4), 0.0);
                v
            };
            let (arena, at) = pack(&[&pad(&a), &pad(&b)], 3 * w + 4);
            let out = operand(at[2], &[3, w]);
            let ops = elementwise::lower_act_binary(
                &Op::Binary {
                    kind: BinaryOp::Mul,
                },
                Activation::Silu,
                &operand(at[0], &[3, w]),
                &operand(at[1], &[b_rows, w]),
                &out,
            )
            .unwrap();
            let quads = if w % 4 == 0 { "binary_quads" } else { "binary" };
            assert_eq!(ops[0].kernel.name, quads);
            let got = run_dispatches(
                &common::device(),
                &arena,
                &ops,
                &[(out.offset as u64, (3 * w) as u64)],
            )
            .unwrap();
            common::assert_close(
                &floats(&got[0]),
                &want[0].to_f32(),
                1e-6,
                1e-6,
                &format!("silu(a) * b, rows of {w}, b with {b_rows} rows"),
            );
        }
    }
}
