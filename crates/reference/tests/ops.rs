//! Graph-level tests of every op through `kiln_reference::evaluate`, against values computed
//! by hand (stated in the comments), plus the interpreter's typed run errors.

use half::f16;
use kiln_ir::rng::sample_uniform;
use kiln_ir::*;
use kiln_reference::{evaluate, Interpreter, RefError};

type R = Result<NodeId, IrError>;

// ---- Helpers ----

fn f(shape: &[usize], v: &[f32]) -> HostTensor {
    HostTensor::from_f32(shape, v).unwrap()
}

fn i(shape: &[usize], v: &[i32]) -> HostTensor {
    HostTensor::from_i32(shape, v).unwrap()
}

fn bools(shape: &[usize], v: &[bool]) -> HostTensor {
    let v: Vec<f32> = v.iter().map(|&b| f32::from(u8::from(b))).collect();
    HostTensor::from_values(DType::Bool, shape, &v).unwrap()
}

fn iota(n: usize) -> Vec<f32> {
    (0..n).map(|k| k as f32).collect()
}

/// Deterministic, irregular test data in about [-1, 1].
fn wavy(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|k| ((k as f32 + 1.0) * 0.731 + seed).sin())
        .collect()
}

fn run(g: &Graph, params: &[(&str, HostTensor)], inputs: &[(&str, HostTensor)]) -> Vec<HostTensor> {
    evaluate(g, params, inputs).unwrap()
}

/// Builds `op(x)` on one input `x` shaped and typed like `x`, and runs it.
fn unary(x: HostTensor, build: impl FnOnce(&mut Graph, NodeId) -> R) -> HostTensor {
    let mut g = Graph::new();
    let xi = g.input("x", x.dtype, x.shape.as_slice()).unwrap();
    let y = build(&mut g, xi).unwrap();
    g.output(y).unwrap();
    run(&g, &[], &[("x", x)]).remove(0)
}

/// Builds `op(a, b)` on two inputs and runs it.
fn binary(
    a: HostTensor,
    b: HostTensor,
    build: impl FnOnce(&mut Graph, NodeId, NodeId) -> R,
) -> HostTensor {
    let mut g = Graph::new();
    let ai = g.input("a", a.dtype, a.shape.as_slice()).unwrap();
    let bi = g.input("b", b.dtype, b.shape.as_slice()).unwrap();
    let y = build(&mut g, ai, bi).unwrap();
    g.output(y).unwrap();
    run(&g, &[], &[("a", a), ("b", b)]).remove(0)
}

#[track_caller]
fn assert_close(got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "got {got:?}, want {want:?}");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g - w).abs() <= tol * (1.0 + w.abs()) || (g.is_nan() && w.is_nan()) || g == w;
        assert!(
            ok,
            "element {k}: got {g}, want {w} (got {got:?}, want {want:?})"
        );
    }
}

#[track_caller]
fn check(t: &HostTensor, dtype: DType, shape: &[usize], want: &[f32]) {
    assert_eq!(t.dtype, dtype);
    assert_eq!(t.shape, shape);
    assert_close(&t.to_f32(), want, 1e-6);
}

// ---- Movement ----

#[test]
fn reshape_keeps_order() {
    // [2, 3] of 0..6 read as [3, 2]: the same row-major elements.
    let y = unary(f(&[2, 3], &iota(6)), |g, x| g.reshape(x, [3, 2]));
    check(&y, DType::F32, &[3, 2], &iota(6));
    let y = unary(f(&[2, 3], &iota(6)), |g, x| g.reshape(x, [6, 1, 1]));
    check(&y, DType::F32, &[6, 1, 1], &iota(6));
}

#[test]
fn transpose_by_hand() {
    // [[0, 1, 2], [3, 4, 5]]ᵀ = [[0, 3], [1, 4], [2, 5]]
    let y = unary(f(&[2, 3], &iota(6)), |g, x| g.transpose(x, &[1, 0]));
    check(&y, DType::F32, &[3, 2], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    // x[a, b, c] = 12a + 4b + c of shape [2, 3, 4]; perm [2, 0, 1] gives out[c, a, b].
    let y = unary(f(&[2, 3, 4], &iota(24)), |g, x| g.transpose(x, &[2, 0, 1]));
    let mut want = Vec::new();
    for c in 0..4 {
        for a in 0..2 {
            for b in 0..3 {
                want.push((12 * a + 4 * b + c) as f32);
            }
        }
    }
    check(&y, DType::F32, &[4, 2, 3], &want);
    // e.g. out[1, 0, 2] = x[0, 2, 1] = 9 (flat index 1*6 + 0*3 + 2 = 8).
    assert_eq!(y.to_f32()[8], 9.0);
}

#[test]
fn narrow_by_hand() {
    // [[0, 1, 2, 3], [4, 5, 6, 7]]: columns 1..3 = [[1, 2], [5, 6]]; row 1 = [4, 5, 6, 7].
    let y = unary(f(&[2, 4], &iota(8)), |g, x| g.narrow(x, 1, 1, 2));
    check(&y, DType::F32, &[2, 2], &[1.0, 2.0, 5.0, 6.0]);
    let y = unary(f(&[2, 4], &iota(8)), |g, x| g.narrow(x, 0, 1, 1));
    check(&y, DType::F32, &[1, 4], &[4.0, 5.0, 6.0, 7.0]);
    // An empty slice is fine.
    let y = unary(f(&[2, 4], &iota(8)), |g, x| g.narrow(x, 1, 4, 0));
    check(&y, DType::F32, &[2, 0], &[]);
}

#[test]
fn concat_by_hand() {
    // [[0], [1]] ++ [[10, 11], [12, 13]] along axis 1 = [[0, 10, 11], [1, 12, 13]].
    let y = binary(
        f(&[2, 1], &[0.0, 1.0]),
        f(&[2, 2], &[10.0, 11.0, 12.0, 13.0]),
        |g, a, b| g.concat(&[a, b], 1),
    );
    check(&y, DType::F32, &[2, 3], &[0.0, 10.0, 11.0, 1.0, 12.0, 13.0]);
    // Along axis 0, three parts (one repeated): rows a, b, a.
    let y = binary(
        f(&[1, 2], &[1.0, 2.0]),
        f(&[2, 2], &[3.0, 4.0, 5.0, 6.0]),
        |g, a, b| g.concat(&[a, b, a], 0),
    );
    check(
        &y,
        DType::F32,
        &[4, 2],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0],
    );
}

#[test]
fn expand_by_hand() {
    // [[1], [2], [3]] → [2, 3, 2]: each value twice per row, the whole block twice.
    let y = unary(f(&[3, 1], &[1.0, 2.0, 3.0]), |g, x| g.expand(x, [2, 3, 2]));
    check(
        &y,
        DType::F32,
        &[2, 3, 2],
        &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0],
    );
}

#[test]
fn gather_by_hand() {
    // Axis 0: table rows [0, 1], [2, 3], [4, 5]; indices [[2, 0], [1, 2]] → [2, 2, 2].
    let y = binary(
        f(&[3, 2], &iota(6)),
        i(&[2, 2], &[2, 0, 1, 2]),
        |g, t, ix| g.gather(t, ix, 0),
    );
    check(
        &y,
        DType::F32,
        &[2, 2, 2],
        &[4.0, 5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
    );
    // Axis 1: [[0, 1, 2], [3, 4, 5]] columns [2, 0] → [[2, 0], [5, 3]].
    let y = binary(f(&[2, 3], &iota(6)), i(&[2], &[2, 0]), |g, t, ix| {
        g.gather(t, ix, 1)
    });
    check(&y, DType::F32, &[2, 2], &[2.0, 0.0, 5.0, 3.0]);
    // Integer tables stay integer.
    let y = binary(i(&[3], &[7, 8, 9]), i(&[2], &[2, 2]), |g, t, ix| {
        g.gather(t, ix, 0)
    });
    check(&y, DType::I32, &[2], &[9.0, 9.0]);
}

/// A Q8_0 table of 2 rows × 32, built by hand:
/// row 0: d = 0.5, q[j] = j - 16   → values 0.5 (j - 16): -8, -7.5, ..., 7.5
/// row 1: d = 2.0, q[j] = 1 (j < 16) or -3 (j >= 16) → values 2 or -6
fn q8_table() -> (HostTensor, Vec<f32>) {
    let mut bytes = f16::from_f32(0.5).to_le_bytes().to_vec();
    bytes.extend((0..32).map(|j| (j as i8 - 16) as u8));
    bytes.extend(f16::from_f32(2.0).to_le_bytes());
    bytes.extend((0..32).map(|j| if j < 16 { 1u8 } else { (-3i8) as u8 }));
    let mut values: Vec<f32> = (0..32).map(|j| 0.5 * (j as f32 - 16.0)).collect();
    values.extend((0..32).map(|j| if j < 16 { 2.0 } else { -6.0 }));
    (
        HostTensor::from_bytes(DType::Q8_0, &[2, 32], bytes).unwrap(),
        values,
    )
}

#[test]
fn gather_from_a_quantized_table() {
    let (table, values) = q8_table();
    let mut g = Graph::new();
    let t = g.param("emb", DType::Q8_0, [2, 32]).unwrap();
    let ix = g.input("ids", DType::I32, [3]).unwrap();
    let y = g.gather(t, ix, 0).unwrap();
    g.output(y).unwrap();
    let out = run(&g, &[("emb", table)], &[("ids", i(&[3], &[1, 0, 1]))]).remove(0);
    // Rows 1, 0, 1, dequantized to f32.
    let want: Vec<f32> = [&values[32..], &values[..32], &values[32..]].concat();
    check(&out, DType::F32, &[3, 32], &want);
    let o = out.to_f32();
    assert_eq!((o[0], o[16], o[32], o[32 + 31]), (2.0, -6.0, -8.0, 7.5));
}

#[test]
fn cast_by_hand() {
    let x = f(&[6], &[-2.7, -0.5, 0.0, 0.5, 2.7, 3.99]);
    // Floats to integers truncate toward zero.
    let y = unary(x.clone(), |g, x| g.cast(x, DType::I32));
    check(&y, DType::I32, &[6], &[-2.0, 0.0, 0.0, 0.0, 2.0, 3.0]);
    // Anything to bool is x != 0.
    let y = unary(x, |g, x| g.cast(x, DType::Bool));
    check(&y, DType::Bool, &[6], &[1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
    // ... and saturate: u8 holds 0..=255.
    let y = unary(f(&[3], &[300.0, -5.0, 17.9]), |g, x| g.cast(x, DType::U8));
    check(&y, DType::U8, &[3], &[255.0, 0.0, 17.0]);
    // To f16, round to nearest even: the f16 spacing at 1 is 2^-10.
    //   1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to even → 1.
    //   1 + 3·2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties to even → 1 + 2^-9.
    //   0.1 → 0.0999755859375 (1638 / 16384); 65519 → 65504 (the largest f16); 65520 → inf.
    let e = 2f32.powi(-11);
    let y = unary(
        f(&[5], &[1.0 + e, 1.0 + 3.0 * e, 0.1, 65519.0, 65520.0]),
        |g, x| g.cast(x, DType::F16),
    );
    check(
        &y,
        DType::F16,
        &[5],
        &[1.0, 1.0 + 4.0 * e, 0.099_975_586, 65504.0, f32::INFINITY],
    );
    // Bools and integers to f32.
    let y = unary(bools(&[3], &[true, false, true]), |g, x| {
        g.cast(x, DType::F32)
    });
    check(&y, DType::F32, &[3], &[1.0, 0.0, 1.0]);
    let y = unary(i(&[2], &[-3, 7]), |g, x| g.cast(x, DType::F32));
    check(&y, DType::F32, &[2], &[-3.0, 7.0]);
}

// ---- Elementwise ----

#[test]
fn every_binary_op_with_broadcasting() {
    // a = [[1, 2, 3], [4, 5, 6]] against b = [2, -1, 0.5], broadcast along rows.
    let a = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f(&[3], &[2.0, -1.0, 0.5]);
    let cases: [(BinaryOp, [f32; 6]); 7] = [
        (BinaryOp::Add, [3.0, 1.0, 3.5, 6.0, 4.0, 6.5]),
        (BinaryOp::Sub, [-1.0, 3.0, 2.5, 2.0, 6.0, 5.5]),
        (BinaryOp::Mul, [2.0, -2.0, 1.5, 8.0, -5.0, 3.0]),
        (BinaryOp::Div, [0.5, -2.0, 6.0, 2.0, -5.0, 12.0]),
        (BinaryOp::Max, [2.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        (BinaryOp::Min, [1.0, -1.0, 0.5, 2.0, -1.0, 0.5]),
        // 1², 2⁻¹, √3, 4², 5⁻¹, √6
        (
            BinaryOp::Pow,
            [1.0, 0.5, 1.732_050_8, 16.0, 0.2, 2.449_489_7],
        ),
    ];
    for (kind, want) in cases {
        let y = binary(a.clone(), b.clone(), |g, a, b| g.binary(kind, a, b));
        check(&y, DType::F32, &[2, 3], &want);
    }
    // [2, 1] + [1, 3] → [2, 3]: [[1 + 10, 1 + 20, 1 + 30], [2 + 10, 2 + 20, 2 + 30]].
    let y = binary(
        f(&[2, 1], &[1.0, 2.0]),
        f(&[1, 3], &[10.0, 20.0, 30.0]),
        |g, a, b| g.add_op(a, b),
    );
    check(
        &y,
        DType::F32,
        &[2, 3],
        &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0],
    );
    // A scalar constant operand: x * 3.
    let y = unary(f(&[2], &[1.5, -2.0]), |g, x| {
        let c = g.constant_f32(Shape::scalar(), &[3.0])?;
        g.mul(x, c)
    });
    check(&y, DType::F32, &[2], &[4.5, -6.0]);
}

#[test]
fn integer_arithmetic() {
    // Division truncates toward zero: 7/2 = 3, -7/2 = -3, 7/-2 = -3, -7/-2 = 3, 9/3 = 3.
    let y = binary(
        i(&[5], &[7, -7, 7, -7, 9]),
        i(&[5], &[2, 2, -2, -2, 3]),
        |g, a, b| g.binary(BinaryOp::Div, a, b),
    );
    check(&y, DType::I32, &[5], &[3.0, -3.0, -3.0, 3.0, 3.0]);
    // [7, 3, 2] - [9, -4, 3] = [-2, 7, -1];  [7, 3, 2] · [9, -4, 3] = [63, -12, 6].
    let a = i(&[3], &[7, 3, 2]);
    let b = i(&[3], &[9, -4, 3]);
    let y = binary(a.clone(), b.clone(), |g, a, b| {
        g.binary(BinaryOp::Sub, a, b)
    });
    check(&y, DType::I32, &[3], &[-2.0, 7.0, -1.0]);
    let y = binary(a.clone(), b, |g, a, b| g.mul(a, b));
    check(&y, DType::I32, &[3], &[63.0, -12.0, 6.0]);
    // 7² = 49, 3⁻⁴ = 1/81 truncates to 0, 2³ = 8.
    let y = binary(a, i(&[3], &[2, -4, 3]), |g, a, b| {
        g.binary(BinaryOp::Pow, a, b)
    });
    check(&y, DType::I32, &[3], &[49.0, 0.0, 8.0]);
    // Max and min on integers: [7, 3, 2] against [2, 5, 2].
    let y = binary(i(&[3], &[7, 3, 2]), i(&[3], &[2, 5, 2]), |g, a, b| {
        g.binary(BinaryOp::Max, a, b)
    });
    check(&y, DType::I32, &[3], &[7.0, 5.0, 2.0]);
    let y = binary(i(&[3], &[7, 3, 2]), i(&[3], &[2, 5, 2]), |g, a, b| {
        g.binary(BinaryOp::Min, a, b)
    });
    check(&y, DType::I32, &[3], &[2.0, 3.0, 2.0]);
}

#[test]
fn every_compare_op() {
    // a = [1, 2, 3, 6] against b = [2, 2, 3, 5].
    let a = f(&[4], &[1.0, 2.0, 3.0, 6.0]);
    let b = f(&[4], &[2.0, 2.0, 3.0, 5.0]);
    let cases: [(CompareOp, [f32; 4]); 6] = [
        (CompareOp::Eq, [0.0, 1.0, 1.0, 0.0]),
        (CompareOp::Ne, [1.0, 0.0, 0.0, 1.0]),
        (CompareOp::Lt, [1.0, 0.0, 0.0, 0.0]),
        (CompareOp::Le, [1.0, 1.0, 1.0, 0.0]),
        (CompareOp::Gt, [0.0, 0.0, 0.0, 1.0]),
        (CompareOp::Ge, [0.0, 1.0, 1.0, 1.0]),
    ];
    for (kind, want) in cases {
        let y = binary(a.clone(), b.clone(), |g, a, b| g.compare(kind, a, b));
        check(&y, DType::Bool, &[4], &want);
    }
    // Broadcast against a scalar, on integers: [1, 5, 3] > 2 = [false, true, true].
    let y = binary(i(&[3], &[1, 5, 3]), i(&[], &[2]), |g, a, b| {
        g.compare(CompareOp::Gt, a, b)
    });
    check(&y, DType::Bool, &[3], &[0.0, 1.0, 1.0]);
}

#[test]
fn where_by_hand() {
    // cond [[true], [false]], a = [1, 2, 3], b = -1 (scalar) → [[1, 2, 3], [-1, -1, -1]].
    let mut g = Graph::new();
    let c = g.input("c", DType::Bool, [2, 1]).unwrap();
    let a = g.input("a", DType::F32, [3]).unwrap();
    let b = g.input("b", DType::F32, Shape::scalar()).unwrap();
    let y = g.where_(c, a, b).unwrap();
    g.output(y).unwrap();
    let out = run(
        &g,
        &[],
        &[
            ("c", bools(&[2, 1], &[true, false])),
            ("a", f(&[3], &[1.0, 2.0, 3.0])),
            ("b", f(&[], &[-1.0])),
        ],
    );
    check(
        &out[0],
        DType::F32,
        &[2, 3],
        &[1.0, 2.0, 3.0, -1.0, -1.0, -1.0],
    );
    // A float condition: nonzero is true (0.5 and -2 pick a; 0 picks b).
    let y = binary(
        f(&[3], &[0.5, 0.0, -2.0]),
        f(&[3], &[10.0, 20.0, 30.0]),
        |g, c, a| {
            let z = g.constant_f32([1], &[0.0])?;
            g.where_(c, a, z)
        },
    );
    check(&y, DType::F32, &[3], &[10.0, 0.0, 30.0]);
}

#[test]
fn every_activation_at_a_few_points() {
    use std::f32::consts::{E, FRAC_PI_2, FRAC_PI_3, FRAC_PI_4, FRAC_PI_6, PI};
    let cases: Vec<(Activation, Vec<f32>, Vec<f32>)> = vec![
        (Activation::Relu, vec![0.0, 1.0, -2.0], vec![0.0, 1.0, 0.0]),
        // 1 / (1 + e^-x)
        (
            Activation::Sigmoid,
            vec![0.0, 1.0, -2.0],
            vec![0.5, 0.731_058_6, 0.119_202_92],
        ),
        (
            Activation::Tanh,
            vec![0.0, 1.0, -2.0],
            vec![0.0, 0.761_594_2, -0.964_027_6],
        ),
        (
            Activation::Exp,
            vec![0.0, 1.0, -2.0],
            vec![1.0, E, 0.135_335_28],
        ),
        (
            Activation::Log,
            vec![1.0, E, 0.5],
            vec![0.0, 1.0, -std::f32::consts::LN_2],
        ),
        (Activation::Sqrt, vec![4.0, 2.25, 0.0], vec![2.0, 1.5, 0.0]),
        (Activation::Rsqrt, vec![4.0, 0.25, 1.0], vec![0.5, 2.0, 1.0]),
        (Activation::Neg, vec![0.0, 1.0, -2.0], vec![0.0, -1.0, 2.0]),
        (Activation::Abs, vec![0.0, 1.0, -2.0], vec![0.0, 1.0, 2.0]),
        // x Φ(x): Φ(1) = 0.8413447, -2 Φ(-2) = -2 · 0.0227501 = -0.0455003
        (
            Activation::Gelu,
            vec![0.0, 1.0, -2.0],
            vec![0.0, 0.841_344_8, -0.045_500_264],
        ),
        // 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        (
            Activation::GeluTanh,
            vec![0.0, 1.0, -2.0],
            vec![0.0, 0.841_192, -0.045_402_306],
        ),
        // x σ(x): σ(1) = 0.7310586, -2 σ(-2) = -0.2384058
        (
            Activation::Silu,
            vec![0.0, 1.0, -2.0],
            vec![0.0, 0.731_058_6, -0.238_405_84],
        ),
        // Half to even.
        (
            Activation::Round,
            vec![0.5, 1.5, 2.5, -2.5, 2.6],
            vec![0.0, 2.0, 2.0, -2.0, 3.0],
        ),
        (
            Activation::Sin,
            vec![0.0, FRAC_PI_2, FRAC_PI_6],
            vec![0.0, 1.0, 0.5],
        ),
        (
            Activation::Cos,
            vec![0.0, PI, FRAC_PI_3],
            vec![1.0, -1.0, 0.5],
        ),
        (Activation::Tan, vec![0.0, FRAC_PI_4], vec![0.0, 1.0]),
        (
            Activation::Atan,
            vec![0.0, 1.0, -1.0],
            vec![0.0, FRAC_PI_4, -FRAC_PI_4],
        ),
    ];
    assert_eq!(cases.len(), ALL_ACTIVATIONS.len());
    for (kind, x, want) in cases {
        let n = x.len();
        let y = unary(f(&[n], &x), |g, x| g.activation(kind, x));
        assert_eq!(y.shape, [n]);
        let got = y.to_f32();
        for k in 0..n {
            assert!(
                (got[k] - want[k]).abs() <= 1e-6 * (1.0 + want[k].abs()),
                "{kind:?}({}) = {}, want {}",
                x[k],
                got[k],
                want[k]
            );
        }
    }
    // In f16 the result is rounded to f16: exp(1) = 2.71875 (the nearest f16 to e).
    let x = HostTensor::from_values(DType::F16, &[1], &[1.0]).unwrap();
    let y = unary(x, |g, x| g.activation(Activation::Exp, x));
    check(&y, DType::F16, &[1], &[2.718_75]);
}

// ---- Reductions and normalisation ----

#[test]
fn reduce_each_kind() {
    // x = [[1, 2, 3], [4, 5, 6]]
    let x = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let red = |kind, axes: &[usize], keep| {
        let axes = axes.to_vec();
        unary(x.clone(), move |g, x| g.reduce(kind, x, &axes, keep))
    };
    // Row sums 6, 15; dropped or kept as size 1.
    check(
        &red(ReduceOp::Sum, &[1], false),
        DType::F32,
        &[2],
        &[6.0, 15.0],
    );
    check(
        &red(ReduceOp::Sum, &[1], true),
        DType::F32,
        &[2, 1],
        &[6.0, 15.0],
    );
    // Column means (1+4)/2, (2+5)/2, (3+6)/2.
    check(
        &red(ReduceOp::Mean, &[0], false),
        DType::F32,
        &[3],
        &[2.5, 3.5, 4.5],
    );
    check(
        &red(ReduceOp::Mean, &[0], true),
        DType::F32,
        &[1, 3],
        &[2.5, 3.5, 4.5],
    );
    // Over everything: max 6, into a scalar or a [1, 1].
    check(&red(ReduceOp::Max, &[0, 1], false), DType::F32, &[], &[6.0]);
    check(
        &red(ReduceOp::Max, &[1, 0], true),
        DType::F32,
        &[1, 1],
        &[6.0],
    );
    check(
        &red(ReduceOp::Min, &[1], false),
        DType::F32,
        &[2],
        &[1.0, 4.0],
    );
    // 1·2·3 = 6, 4·5·6 = 120.
    check(
        &red(ReduceOp::Prod, &[1], false),
        DType::F32,
        &[2],
        &[6.0, 120.0],
    );

    // x[a, b, c] = 4a + 2b + c of shape [2, 2, 2]; sum over axes 0 and 2:
    //   b = 0: 0 + 1 + 4 + 5 = 10;  b = 1: 2 + 3 + 6 + 7 = 18.
    for axes in [[0, 2], [2, 0]] {
        let y = unary(f(&[2, 2, 2], &iota(8)), |g, x| {
            g.reduce(ReduceOp::Sum, x, &axes, false)
        });
        check(&y, DType::F32, &[2], &[10.0, 18.0]);
        let y = unary(f(&[2, 2, 2], &iota(8)), |g, x| {
            g.reduce(ReduceOp::Sum, x, &axes, true)
        });
        check(&y, DType::F32, &[1, 2, 1], &[10.0, 18.0]);
    }
    // Integer max and sum.
    let y = unary(i(&[2, 2], &[3, -7, 9, 2]), |g, x| {
        g.reduce(ReduceOp::Sum, x, &[0], false)
    });
    check(&y, DType::I32, &[2], &[12.0, -5.0]);
}

#[test]
fn softmax_on_a_non_last_axis() {
    // x = [[0, 1], [ln 3, 1]], softmax down the columns:
    //   column 0: e^0 : e^ln3 = 1 : 3 → [1/4, 3/4];  column 1: equal → [1/2, 1/2].
    let y = unary(f(&[2, 2], &[0.0, 1.0, 3f32.ln(), 1.0]), |g, x| {
        g.softmax(x, 0)
    });
    check(&y, DType::F32, &[2, 2], &[0.25, 0.5, 0.75, 0.5]);
    // Along the middle axis of [1, 3, 2]: columns [0, ln 2, ln 5] → [1/8, 2/8, 5/8] and equal
    // values → 1/3 each.
    let x = [0.0, 7.0, 2f32.ln(), 7.0, 5f32.ln(), 7.0];
    let y = unary(f(&[1, 3, 2], &x), |g, x| g.softmax(x, 1));
    let t = 1.0 / 3.0;
    check(&y, DType::F32, &[1, 3, 2], &[0.125, t, 0.25, t, 0.625, t]);
    // Large values do not overflow: softmax([1000, 1000]) = [0.5, 0.5].
    let y = unary(f(&[2], &[1000.0, 1000.0]), |g, x| g.softmax(x, 0));
    check(&y, DType::F32, &[2], &[0.5, 0.5]);
}

#[test]
fn layer_norm_by_hand() {
    // Row 0 [1, 3, 5, 7]: mean 4, deviations [-3, -1, 1, 3], variance (9+1+1+9)/4 = 5;
    // with eps = 4 the denominator is √9 = 3 → [-1, -1/3, 1/3, 1].
    // Row 1 [2, 2, 2, 2]: no deviation → zeros.
    let x = f(&[2, 4], &[1.0, 3.0, 5.0, 7.0, 2.0, 2.0, 2.0, 2.0]);
    let gamma = f(&[4], &[1.0, 2.0, 3.0, 4.0]);
    let beta = f(&[4], &[0.5; 4]);
    let t = 1.0 / 3.0;

    let plain = unary(x.clone(), |g, x| g.layer_norm(x, None, None, 4.0));
    check(
        &plain,
        DType::F32,
        &[2, 4],
        &[-1.0, -t, t, 1.0, 0.0, 0.0, 0.0, 0.0],
    );

    let build = |with_beta: bool| {
        let mut g = Graph::new();
        let xi = g.input("x", DType::F32, [2, 4]).unwrap();
        let gi = g.param("gamma", DType::F32, [4]).unwrap();
        let bi = with_beta.then(|| g.param("beta", DType::F32, [4]).unwrap());
        let y = g.layer_norm(xi, Some(gi), bi, 4.0).unwrap();
        g.output(y).unwrap();
        g
    };
    // Scaled by gamma [1, 2, 3, 4]: [-1, -2/3, 1, 4].
    let g = build(false);
    let out = run(&g, &[("gamma", gamma.clone())], &[("x", x.clone())]);
    check(
        &out[0],
        DType::F32,
        &[2, 4],
        &[-1.0, -2.0 * t, 1.0, 4.0, 0.0, 0.0, 0.0, 0.0],
    );
    // Then shifted by 0.5.
    let g = build(true);
    let out = run(&g, &[("gamma", gamma), ("beta", beta)], &[("x", x)]);
    check(
        &out[0],
        DType::F32,
        &[2, 4],
        &[-0.5, 0.5 - 2.0 * t, 1.5, 4.5, 0.5, 0.5, 0.5, 0.5],
    );
}

#[test]
fn rms_norm_by_hand() {
    // Row 0 [3, 4, 0, 0]: mean square 25/4, rms 2.5 → [1.2, 1.6, 0, 0].
    // Row 1 [2, -2, 2, -2]: mean square 4, rms 2 → [1, -1, 1, -1].
    let x = f(&[2, 4], &[3.0, 4.0, 0.0, 0.0, 2.0, -2.0, 2.0, -2.0]);
    let y = unary(x.clone(), |g, x| g.rms_norm(x, None, 0.0));
    check(
        &y,
        DType::F32,
        &[2, 4],
        &[1.2, 1.6, 0.0, 0.0, 1.0, -1.0, 1.0, -1.0],
    );
    // eps is added to the mean square: row 1 with eps = 5 → rms 3 → ±2/3.
    let y = unary(x.clone(), |g, x| g.rms_norm(x, None, 5.0));
    let t = 2.0 / 3.0;
    assert_close(&y.to_f32()[4..], &[t, -t, t, -t], 1e-6);
    // With gamma [1, 2, 3, 4]: [1.2, 3.2, 0, 0], [1, -2, 3, -4].
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, [2, 4]).unwrap();
    let gi = g.param("gamma", DType::F32, [4]).unwrap();
    let y = g.rms_norm(xi, Some(gi), 0.0).unwrap();
    g.output(y).unwrap();
    let out = run(
        &g,
        &[("gamma", f(&[4], &[1.0, 2.0, 3.0, 4.0]))],
        &[("x", x)],
    );
    check(
        &out[0],
        DType::F32,
        &[2, 4],
        &[1.2, 3.2, 0.0, 0.0, 1.0, -2.0, 3.0, -4.0],
    );
}

#[test]
fn fused_residual_norm_by_hand() {
    // x = [1, 2], residual = [0, 2]: x + residual = [1, 4]; mean square 17/2 →
    //   [1/√8.5, 4/√8.5] = [0.34299717, 1.37198868].
    // With bias [1, 0]: [2, 4]; mean square 10 → [0.63245553, 1.26491106].
    for (bias, want) in [
        (None, [0.342_997_17, 1.371_988_7]),
        (Some([1.0, 0.0]), [0.632_455_5, 1.264_911]),
    ] {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1, 2]).unwrap();
        let r = g.input("r", DType::F32, [1, 2]).unwrap();
        let b = bias.map(|_| g.param("b", DType::F32, [2]).unwrap());
        let y = g
            .fused_residual_norm(NormKind::Rms, x, r, b, None, None, 0.0)
            .unwrap();
        g.output(y).unwrap();
        let params: Vec<(&str, HostTensor)> = bias.iter().map(|b| ("b", f(&[2], b))).collect();
        let out = run(
            &g,
            &params,
            &[
                ("x", f(&[1, 2], &[1.0, 2.0])),
                ("r", f(&[1, 2], &[0.0, 2.0])),
            ],
        );
        check(&out[0], DType::F32, &[1, 2], &want);
    }
}

#[test]
fn fused_residual_norm_equals_the_unfused_composition() {
    let (rows, n) = (3, 5);
    let x = f(&[rows, n], &wavy(rows * n, 0.0));
    let r = f(&[rows, n], &wavy(rows * n, 1.0));
    let params = [
        ("bias", f(&[n], &wavy(n, 2.0))),
        ("gamma", f(&[n], &wavy(n, 3.0))),
        ("beta", f(&[n], &wavy(n, 4.0))),
    ];
    for kind in [NormKind::Layer, NormKind::Rms] {
        for has_bias in [false, true] {
            for affine in 0..3 {
                let mut g = Graph::new();
                let xi = g.input("x", DType::F32, [rows, n]).unwrap();
                let ri = g.input("r", DType::F32, [rows, n]).unwrap();
                let bias = g.param("bias", DType::F32, [n]).unwrap();
                let gamma = g.param("gamma", DType::F32, [n]).unwrap();
                let beta = g.param("beta", DType::F32, [n]).unwrap();
                let bias = has_bias.then_some(bias);
                let gamma = (affine >= 1).then_some(gamma);
                let beta = (affine == 2 && kind == NormKind::Layer).then_some(beta);
                let fused = g
                    .fused_residual_norm(kind, xi, ri, bias, gamma, beta, 1e-5)
                    .unwrap();
                // norm((x + r) + bias), step by step.
                let mut sum = g.add_op(xi, ri).unwrap();
                if let Some(b) = bias {
                    sum = g.add_op(sum, b).unwrap();
                }
                let unfused = match kind {
                    NormKind::Layer => g.layer_norm(sum, gamma, beta, 1e-5).unwrap(),
                    NormKind::Rms => g.rms_norm(sum, gamma, 1e-5).unwrap(),
                    NormKind::L2 => unreachable!("the loop covers Layer and Rms"),
                };
                g.output(fused).unwrap();
                g.output(unfused).unwrap();
                let out = run(&g, &params, &[("x", x.clone()), ("r", r.clone())]);
                assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
            }
        }
    }
}

// ---- Matrix products ----

#[test]
fn matmul_2d_and_transposed() {
    // [[1, 2, 3], [4, 5, 6]] × [[7, 8], [9, 10], [11, 12]]:
    //   [1·7 + 2·9 + 3·11, 1·8 + 2·10 + 3·12] = [58, 64]; [4·7 + 5·9 + 6·11, ...] = [139, 154].
    let a = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let y = binary(
        a.clone(),
        f(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]),
        |g, a, b| g.matmul(a, b),
    );
    check(&y, DType::F32, &[2, 2], &[58.0, 64.0, 139.0, 154.0]);
    // The same b stored transposed, [N, K] = [[7, 9, 11], [8, 10, 12]].
    let y = binary(
        a,
        f(&[2, 3], &[7.0, 9.0, 11.0, 8.0, 10.0, 12.0]),
        |g, a, b| g.matmul_t(a, b),
    );
    check(&y, DType::F32, &[2, 2], &[58.0, 64.0, 139.0, 154.0]);
}

#[test]
fn matmul_batched() {
    // a: two 1×2 matrices [1, 2] and [3, 4]; b: one 2×2 [[1, 2], [3, 4]] broadcast over them:
    //   [1, 2] b = [1 + 6, 2 + 8] = [7, 10];  [3, 4] b = [3 + 12, 6 + 16] = [15, 22].
    let y = binary(
        f(&[2, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
        f(&[1, 2, 2], &[1.0, 2.0, 3.0, 4.0]),
        |g, a, b| g.matmul(a, b),
    );
    check(&y, DType::F32, &[2, 1, 2], &[7.0, 10.0, 15.0, 22.0]);
    // The other way round: one identity a against three b's gives the b's back.
    let bs = iota(12);
    let y = binary(
        f(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]),
        f(&[3, 2, 2], &bs),
        |g, a, b| g.matmul(a, b),
    );
    check(&y, DType::F32, &[3, 2, 2], &bs);
    // Transposed batched b: [[1, 0], [0, 2]]ᵀ per batch; a = [[1, 1]] → [1, 2] each.
    let y = binary(
        f(&[2, 1, 2], &[1.0, 1.0, 2.0, 2.0]),
        f(&[2, 2, 2], &[1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 2.0]),
        |g, a, b| g.matmul_t(a, b),
    );
    check(&y, DType::F32, &[2, 1, 2], &[1.0, 2.0, 2.0, 4.0]);
}

#[test]
fn matmul_rank3_by_2d() {
    // Every row [p, q] of a [2, 2, 2] times [10, 1]ᵀ: 10p + q → 12, 34, 56, 78.
    let a = f(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
    let y = binary(a, f(&[2, 1], &[10.0, 1.0]), |g, a, b| g.matmul(a, b));
    check(&y, DType::F32, &[2, 2, 1], &[12.0, 34.0, 56.0, 78.0]);
}

#[test]
fn fused_matmul_bias_act_by_hand() {
    // a = [[1, 2], [3, 4]], w [N=3, K=2] = [[1, 1], [1, -1], [-2, 0]] (transposed), bias [0, 1, 0.5]:
    //   row 0: [3, -1, -2] + bias = [3, 0, -1.5];  row 1: [7, -1, -6] + bias = [7, 0, -5.5].
    let a = f(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = f(&[3, 2], &[1.0, 1.0, 1.0, -1.0, -2.0, 0.0]);
    let bias = f(&[3], &[0.0, 1.0, 0.5]);
    let build = |act: Option<Activation>, with_bias: bool| {
        let mut g = Graph::new();
        let ai = g.input("a", DType::F32, [2, 2]).unwrap();
        let wi = g.param("w", DType::F32, [3, 2]).unwrap();
        let bi = g.param("bias", DType::F32, [3]).unwrap();
        let y = g
            .fused_matmul_bias_act(ai, wi, with_bias.then_some(bi), act, true)
            .unwrap();
        g.output(y).unwrap();
        let params = [("w", w.clone()), ("bias", bias.clone())];
        run(&g, &params, &[("a", a.clone())]).remove(0)
    };
    check(
        &build(None, true),
        DType::F32,
        &[2, 3],
        &[3.0, 0.0, -1.5, 7.0, 0.0, -5.5],
    );
    check(
        &build(Some(Activation::Relu), true),
        DType::F32,
        &[2, 3],
        &[3.0, 0.0, 0.0, 7.0, 0.0, 0.0],
    );
    // Without the bias: [3, -1, -2], [7, -1, -6]; relu → [3, 0, 0], [7, 0, 0]; neg flips.
    check(
        &build(None, false),
        DType::F32,
        &[2, 3],
        &[3.0, -1.0, -2.0, 7.0, -1.0, -6.0],
    );
    check(
        &build(Some(Activation::Neg), false),
        DType::F32,
        &[2, 3],
        &[-3.0, 1.0, 2.0, -7.0, 1.0, 6.0],
    );
    // Equal to matmul, add, activation done one by one.
    let mut g = Graph::new();
    let ai = g.input("a", DType::F32, [2, 2]).unwrap();
    let wi = g.param("w", DType::F32, [3, 2]).unwrap();
    let bi = g.param("bias", DType::F32, [3]).unwrap();
    let fused = g
        .fused_matmul_bias_act(ai, wi, Some(bi), Some(Activation::Silu), true)
        .unwrap();
    let m = g.matmul_t(ai, wi).unwrap();
    let s = g.add_op(m, bi).unwrap();
    let unfused = g.activation(Activation::Silu, s).unwrap();
    g.output(fused).unwrap();
    g.output(unfused).unwrap();
    let out = run(&g, &[("w", w), ("bias", bias)], &[("a", a)]);
    assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
}

/// A Q4_1 weight [N = 2, K = 32], built by hand:
/// row 0: d = 0.5, m = -1, byte j = j | (15 - j) << 4
///        → element j < 16: 0.5 j - 1;  element 16 + j: 0.5 (15 - j) - 1
/// row 1: d = 0.25, m = 0.5, every byte 0x37 → elements 0..16: 0.25·7 + 0.5 = 2.25,
///        elements 16..32: 0.25·3 + 0.5 = 1.25
fn q4_1_weight() -> Vec<u8> {
    let mut bytes = Vec::new();
    bytes.extend(f16::from_f32(0.5).to_le_bytes());
    bytes.extend(f16::from_f32(-1.0).to_le_bytes());
    bytes.extend((0..16u8).map(|j| j | ((15 - j) << 4)));
    bytes.extend(f16::from_f32(0.25).to_le_bytes());
    bytes.extend(f16::from_f32(0.5).to_le_bytes());
    bytes.extend([0x37u8; 16]);
    bytes
}

#[test]
fn quantized_matmul_equals_dequantized() {
    let bytes = q4_1_weight();
    let deq = quant::dequantize(DType::Q4_1, &bytes).unwrap();
    assert_eq!(
        (deq[0], deq[15], deq[16], deq[32], deq[48]),
        (-1.0, 6.5, 6.5, 2.25, 1.25)
    );

    // a row 0 = ones, row 1 = j / 8.
    let mut a = vec![1.0f32; 32];
    a.extend((0..32).map(|j| j as f32 / 8.0));
    let a = f(&[2, 32], &a);

    let mut g = Graph::new();
    let ai = g.input("a", DType::F32, [2, 32]).unwrap();
    let wq = g.param("wq", DType::Q4_1, [2, 32]).unwrap();
    let wf = g.param("wf", DType::F32, [2, 32]).unwrap();
    let yq = g.matmul_t(ai, wq).unwrap();
    let yf = g.matmul_t(ai, wf).unwrap();
    g.output(yq).unwrap();
    g.output(yf).unwrap();
    let params = [
        (
            "wq",
            HostTensor::from_bytes(DType::Q4_1, &[2, 32], bytes).unwrap(),
        ),
        ("wf", f(&[2, 32], &deq)),
    ];
    let out = run(&g, &params, &[("a", a)]);
    assert_eq!(out[0].dtype, DType::F32);
    assert_eq!(out[0].shape, [2, 2]);
    assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
    // Ones · row 0 = 2 · (0.5 · (0 + ... + 15) - 16) = 2 · (60 - 16) = 88;
    // ones · row 1 = 16 · 2.25 + 16 · 1.25 = 56.
    let o = out[0].to_f32();
    assert_eq!((o[0], o[1]), (88.0, 56.0));
    // (j / 8) · row 1 = (2.25 · (0 + ... + 15) + 1.25 · (16 + ... + 31)) / 8 = (270 + 470) / 8.
    assert_close(&o[3..4], &[92.5], 1e-6);
}

// ---- Attention ----

fn attention_op(
    heads: usize,
    kv: usize,
    head_dim: usize,
    mask: AttentionMask,
    layout: HeadLayout,
    past: bool,
) -> Op {
    Op::Attention {
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        scale: 1.0,
        mask,
        layout,
        has_past_len: past,
    }
}

/// Runs one attention node on q, k, v and the optional extra inputs (mask, past length).
fn attend(
    op: Op,
    q: HostTensor,
    k: HostTensor,
    v: HostTensor,
    extra: Vec<HostTensor>,
) -> HostTensor {
    let mut g = Graph::new();
    let mut ids = Vec::new();
    let mut inputs = Vec::new();
    for (n, t) in [q, k, v].into_iter().chain(extra).enumerate() {
        let name = format!("in{n}");
        ids.push(g.input(name.clone(), t.dtype, t.shape.as_slice()).unwrap());
        inputs.push((name, t));
    }
    let y = g.add(op, &ids).unwrap();
    g.output(y).unwrap();
    let inputs: Vec<(&str, HostTensor)> = inputs
        .iter()
        .map(|(n, t)| (n.as_str(), t.clone()))
        .collect();
    run(&g, &[], &inputs).remove(0)
}

#[test]
fn attention_without_mask() {
    // One query (head_dim 1) q = 1 against keys [0, ln 3]: scores [0, ln 3], weights
    // [1/4, 3/4] over values [4, 8] → 1 + 6 = 7.
    let op = attention_op(1, 1, 1, AttentionMask::None, HeadLayout::Bshd, false);
    let y = attend(
        op,
        f(&[1, 1, 1, 1], &[1.0]),
        f(&[1, 2, 1, 1], &[0.0, 3f32.ln()]),
        f(&[1, 2, 1, 1], &[4.0, 8.0]),
        vec![],
    );
    check(&y, DType::F32, &[1, 1, 1, 1], &[7.0]);
    // The scale multiplies the scores: q = 1, keys [0, 1], scale ln 3 → the same weights.
    let mut op = attention_op(1, 1, 1, AttentionMask::None, HeadLayout::Bshd, false);
    if let Op::Attention { scale, .. } = &mut op {
        *scale = 3f32.ln();
    }
    let y = attend(
        op,
        f(&[1, 1, 1, 1], &[1.0]),
        f(&[1, 2, 1, 1], &[0.0, 1.0]),
        f(&[1, 2, 1, 1], &[4.0, 8.0]),
        vec![],
    );
    check(&y, DType::F32, &[1, 1, 1, 1], &[7.0]);
}

#[test]
fn attention_causal() {
    // Equal scores (q = k = 0): query i averages the values of keys 0..=i.
    //   values [1, 2, 3] → [1, (1+2)/2, (1+2+3)/3] = [1, 1.5, 2].
    let op = attention_op(1, 1, 1, AttentionMask::Causal, HeadLayout::Bshd, false);
    let z = f(&[1, 3, 1, 1], &[0.0; 3]);
    let y = attend(op, z.clone(), z, f(&[1, 3, 1, 1], &[1.0, 2.0, 3.0]), vec![]);
    check(&y, DType::F32, &[1, 3, 1, 1], &[1.0, 1.5, 2.0]);
}

#[test]
fn attention_with_bias() {
    // Equal scores plus the bias [0, ln 3, -inf]: weights [1/4, 3/4, 0] over [4, 8, 100] → 7.
    let op = attention_op(1, 1, 1, AttentionMask::Bias, HeadLayout::Bshd, false);
    let y = attend(
        op,
        f(&[1, 1, 1, 1], &[0.0]),
        f(&[1, 3, 1, 1], &[0.0; 3]),
        f(&[1, 3, 1, 1], &[4.0, 8.0, 100.0]),
        vec![f(&[1, 1, 1, 3], &[0.0, 3f32.ln(), f32::NEG_INFINITY])],
    );
    check(&y, DType::F32, &[1, 1, 1, 1], &[7.0]);
}

#[test]
fn attention_with_key_padding() {
    // Two batches, equal scores, mask [[1, 1, 0], [0, 1, 1]]:
    //   batch 0 averages values 1, 2 → 1.5;  batch 1 averages 4, 6 → 5.
    let op = attention_op(1, 1, 1, AttentionMask::KeyPadding, HeadLayout::Bshd, false);
    let y = attend(
        op,
        f(&[2, 1, 1, 1], &[0.0; 2]),
        f(&[2, 3, 1, 1], &[0.0; 6]),
        f(&[2, 3, 1, 1], &[1.0, 2.0, 100.0, 100.0, 4.0, 6.0]),
        vec![bools(&[2, 3], &[true, true, false, false, true, true])],
    );
    check(&y, DType::F32, &[2, 1, 1, 1], &[1.5, 5.0]);
    // A query that sees no key outputs zeros.
    let op = attention_op(1, 1, 2, AttentionMask::KeyPadding, HeadLayout::Bshd, false);
    let y = attend(
        op,
        f(&[1, 1, 1, 2], &[1.0, 1.0]),
        f(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
        f(&[1, 2, 1, 2], &[5.0, 6.0, 7.0, 8.0]),
        vec![bools(&[1, 2], &[false, false])],
    );
    check(&y, DType::F32, &[1, 1, 1, 2], &[0.0, 0.0]);
    // So does one whose bias is -inf everywhere.
    let op = attention_op(1, 1, 2, AttentionMask::Bias, HeadLayout::Bshd, false);
    let y = attend(
        op,
        f(&[1, 1, 1, 2], &[1.0, 1.0]),
        f(&[1, 2, 1, 2], &[1.0, 2.0, 3.0, 4.0]),
        f(&[1, 2, 1, 2], &[5.0, 6.0, 7.0, 8.0]),
        vec![f(&[1, 1, 1, 2], &[f32::NEG_INFINITY; 2])],
    );
    check(&y, DType::F32, &[1, 1, 1, 2], &[0.0, 0.0]);
}

#[test]
fn attention_layouts_agree() {
    // BSHD attention equals BHSD attention on the transposed operands, transposed back.
    let (b, s, h, d) = (2, 3, 2, 4);
    let q = f(&[b, s, h, d], &wavy(b * s * h * d, 0.0));
    let k = f(&[b, s, h, d], &wavy(b * s * h * d, 1.0));
    let v = f(&[b, s, h, d], &wavy(b * s * h * d, 2.0));
    for mask in [AttentionMask::None, AttentionMask::Causal] {
        let mut g = Graph::new();
        let qi = g.input("q", DType::F32, [b, s, h, d]).unwrap();
        let ki = g.input("k", DType::F32, [b, s, h, d]).unwrap();
        let vi = g.input("v", DType::F32, [b, s, h, d]).unwrap();
        let direct = g
            .add(
                attention_op(h, h, d, mask, HeadLayout::Bshd, false),
                &[qi, ki, vi],
            )
            .unwrap();
        let swap = [0, 2, 1, 3];
        let qt = g.transpose(qi, &swap).unwrap();
        let kt = g.transpose(ki, &swap).unwrap();
        let vt = g.transpose(vi, &swap).unwrap();
        let bhsd = g
            .add(
                attention_op(h, h, d, mask, HeadLayout::Bhsd, false),
                &[qt, kt, vt],
            )
            .unwrap();
        let back = g.transpose(bhsd, &swap).unwrap();
        g.output(direct).unwrap();
        g.output(back).unwrap();
        let out = run(
            &g,
            &[],
            &[("q", q.clone()), ("k", k.clone()), ("v", v.clone())],
        );
        assert_eq!(out[1].shape, [b, s, h, d]);
        assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
    }
}

#[test]
fn grouped_query_attention_repeats_kv_heads() {
    // 4 query heads over 2 kv heads: heads 0, 1 read kv head 0 and heads 2, 3 read kv head 1,
    // the same as 4 kv heads [k0, k0, k1, k1] (gathered along the heads axis).
    let (b, sq, sk, d) = (1, 3, 5, 2);
    let q = f(&[b, sq, 4, d], &wavy(b * sq * 4 * d, 0.5));
    let k = f(&[b, sk, 2, d], &wavy(b * sk * 2 * d, 1.5));
    let v = f(&[b, sk, 2, d], &wavy(b * sk * 2 * d, 2.5));
    let mut g = Graph::new();
    let qi = g.input("q", DType::F32, [b, sq, 4, d]).unwrap();
    let ki = g.input("k", DType::F32, [b, sk, 2, d]).unwrap();
    let vi = g.input("v", DType::F32, [b, sk, 2, d]).unwrap();
    let gqa = g
        .add(
            attention_op(4, 2, d, AttentionMask::None, HeadLayout::Bshd, false),
            &[qi, ki, vi],
        )
        .unwrap();
    let rep = g
        .constant(DType::I32, [4], bytemuck_i32(&[0, 0, 1, 1]))
        .unwrap();
    let kr = g.gather(ki, rep, 2).unwrap();
    let vr = g.gather(vi, rep, 2).unwrap();
    let mha = g
        .add(
            attention_op(4, 4, d, AttentionMask::None, HeadLayout::Bshd, false),
            &[qi, kr, vr],
        )
        .unwrap();
    g.output(gqa).unwrap();
    g.output(mha).unwrap();
    let out = run(&g, &[], &[("q", q), ("k", k), ("v", v)]);
    assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
}

fn bytemuck_i32(v: &[i32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn attention_with_a_past_length() {
    // A cache of 4 rows holding values [1, 3, 5, 100]; all scores equal; 2 new queries.
    let q = f(&[1, 2, 1, 1], &[0.0; 2]);
    let k = f(&[1, 4, 1, 1], &[0.0; 4]);
    let v = f(&[1, 4, 1, 1], &[1.0, 3.0, 5.0, 100.0]);
    let causal = attention_op(1, 1, 1, AttentionMask::Causal, HeadLayout::Bshd, true);
    let none = attention_op(1, 1, 1, AttentionMask::None, HeadLayout::Bshd, true);
    // past = 1: queries at positions 1 and 2; keys 0..3 exist, row 3 (100) is ignored.
    //   causal: query 0 sees keys 0, 1 → (1+3)/2 = 2; query 1 sees 0..=2 → (1+3+5)/3 = 3.
    //   no mask: both see keys 0..=2 → 3.
    let past1 = i(&[1], &[1]);
    let y = attend(
        causal.clone(),
        q.clone(),
        k.clone(),
        v.clone(),
        vec![past1.clone()],
    );
    check(&y, DType::F32, &[1, 2, 1, 1], &[2.0, 3.0]);
    let y = attend(none, q.clone(), k.clone(), v.clone(), vec![past1]);
    check(&y, DType::F32, &[1, 2, 1, 1], &[3.0, 3.0]);
    // past = 2 fills the cache: query 1 sees all four → (1+3+5+100)/4 = 27.25.
    let y = attend(
        causal.clone(),
        q.clone(),
        k.clone(),
        v.clone(),
        vec![i(&[1], &[2])],
    );
    check(&y, DType::F32, &[1, 2, 1, 1], &[3.0, 27.25]);
    // past = 0 with the past input equals plain causal attention on the first 2 keys.
    let y = attend(causal, q, k, v, vec![i(&[1], &[0])]);
    check(&y, DType::F32, &[1, 2, 1, 1], &[1.0, 2.0]);
}

// ---- RoPE ----

fn rope_op(
    head_dim: usize,
    rotary_dims: usize,
    style: RopeStyle,
    layout: HeadLayout,
    offset: usize,
    input: bool,
) -> Op {
    Op::Rope {
        head_dim,
        rotary_dims,
        theta: 100.0,
        style,
        layout,
        position_offset: offset,
        has_offset_input: input,
    }
}

fn rope_run(op: Op, x: HostTensor, offset: Option<i32>) -> HostTensor {
    let mut g = Graph::new();
    let xi = g.input("x", DType::F32, x.shape.as_slice()).unwrap();
    let mut ids = vec![xi];
    let mut inputs = vec![("x", x)];
    if let Some(o) = offset {
        ids.push(g.input("off", DType::I32, [1]).unwrap());
        inputs.push(("off", i(&[1], &[o])));
    }
    let y = g.add(op, &ids).unwrap();
    g.output(y).unwrap();
    run(&g, &[], &inputs).remove(0)
}

/// `(x1, x2)` turned by `angle`.
fn turn(x1: f64, x2: f64, angle: f64) -> (f32, f32) {
    let (s, c) = angle.sin_cos();
    ((x1 * c - x2 * s) as f32, (x1 * s + x2 * c) as f32)
}

#[test]
fn rope_both_styles() {
    // x: [batch 1, seq 2, heads 1, head_dim 4], both rows [1, 2, 3, 4]; theta 100, rotary 4:
    // pair 0 turns by pos · 1, pair 1 by pos · 100^(-2/4) = pos · 0.1.
    let x = f(&[1, 2, 1, 4], &[1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]);
    // Rotate-half pairs (0, 2) and (1, 3); position 0 is unchanged, position 1:
    //   (1, 3) by 1 rad → (cos 1 - 3 sin 1, sin 1 + 3 cos 1) = (-1.9841, 2.4624)
    //   (2, 4) by 0.1 rad → (2 cos .1 - 4 sin .1, 2 sin .1 + 4 cos .1) = (1.5907, 4.1797)
    let y = rope_run(
        rope_op(4, 4, RopeStyle::RotateHalf, HeadLayout::Bshd, 0, false),
        x.clone(),
        None,
    );
    let (a0, a2) = turn(1.0, 3.0, 1.0);
    let (a1, a3) = turn(2.0, 4.0, 0.1);
    check(
        &y,
        DType::F32,
        &[1, 2, 1, 4],
        &[1.0, 2.0, 3.0, 4.0, a0, a1, a2, a3],
    );
    assert_close(
        &[a0, a1, a2, a3],
        &[-1.984_110_6, 1.590_674_7, 2.462_378, 4.179_683_5],
        1e-6,
    );
    // Interleaved pairs (0, 1) and (2, 3):
    //   (1, 2) by 1 rad → (cos 1 - 2 sin 1, sin 1 + 2 cos 1) = (-1.1426, 1.9221)
    //   (3, 4) by 0.1 rad → (3 cos .1 - 4 sin .1, 3 sin .1 + 4 cos .1) = (2.5857, 4.2795)
    let y = rope_run(
        rope_op(4, 4, RopeStyle::Interleaved, HeadLayout::Bshd, 0, false),
        x,
        None,
    );
    let (b0, b1) = turn(1.0, 2.0, 1.0);
    let (b2, b3) = turn(3.0, 4.0, 0.1);
    check(
        &y,
        DType::F32,
        &[1, 2, 1, 4],
        &[1.0, 2.0, 3.0, 4.0, b0, b1, b2, b3],
    );
    assert_close(
        &[b0, b1, b2, b3],
        &[-1.142_639_7, 1.922_075_6, 2.585_678_8, 4.279_517],
        1e-6,
    );
}

#[test]
fn rope_position_offsets() {
    // One position, offset 5 (static, or 2 static + 3 from the input): pair 0 turns by 5 rad,
    // pair 1 by 0.5 rad.
    let x = f(&[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let (a0, a2) = turn(1.0, 3.0, 5.0);
    let (a1, a3) = turn(2.0, 4.0, 0.5);
    let want = [a0, a1, a2, a3];
    let y = rope_run(
        rope_op(4, 4, RopeStyle::RotateHalf, HeadLayout::Bshd, 5, false),
        x.clone(),
        None,
    );
    check(&y, DType::F32, &[1, 1, 1, 4], &want);
    let y = rope_run(
        rope_op(4, 4, RopeStyle::RotateHalf, HeadLayout::Bshd, 2, true),
        x.clone(),
        Some(3),
    );
    check(&y, DType::F32, &[1, 1, 1, 4], &want);
    let y = rope_run(
        rope_op(4, 4, RopeStyle::RotateHalf, HeadLayout::Bshd, 0, true),
        x,
        Some(5),
    );
    check(&y, DType::F32, &[1, 1, 1, 4], &want);
}

#[test]
fn rope_partial_rotary_dims() {
    // head_dim 6, rotary 4 (rotate-half pairs (0, 2), (1, 3)); elements 4, 5 pass through.
    let x = f(
        &[1, 2, 1, 6],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
    );
    let y = rope_run(
        rope_op(6, 4, RopeStyle::RotateHalf, HeadLayout::Bshd, 0, false),
        x.clone(),
        None,
    );
    let (a0, a2) = turn(1.0, 3.0, 1.0);
    let (a1, a3) = turn(2.0, 4.0, 0.1);
    check(
        &y,
        DType::F32,
        &[1, 2, 1, 6],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, a0, a1, a2, a3, 5.0, 6.0],
    );
    // Interleaved with rotary 2: only (0, 1) turns, by pos · 100^0 = pos.
    let y = rope_run(
        rope_op(6, 2, RopeStyle::Interleaved, HeadLayout::Bshd, 0, false),
        x,
        None,
    );
    let (b0, b1) = turn(1.0, 2.0, 1.0);
    check(
        &y,
        DType::F32,
        &[1, 2, 1, 6],
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, b0, b1, 3.0, 4.0, 5.0, 6.0],
    );
}

#[test]
fn rope_layouts_agree() {
    // BSHD rope equals BHSD rope on the transposed input, transposed back.
    let (b, s, h, d) = (2, 3, 2, 4);
    let x = f(&[b, s, h, d], &wavy(b * s * h * d, 0.3));
    for style in [RopeStyle::RotateHalf, RopeStyle::Interleaved] {
        let mut g = Graph::new();
        let xi = g.input("x", DType::F32, [b, s, h, d]).unwrap();
        let direct = g
            .add(rope_op(d, 4, style, HeadLayout::Bshd, 3, false), &[xi])
            .unwrap();
        let xt = g.transpose(xi, &[0, 2, 1, 3]).unwrap();
        let r = g
            .add(rope_op(d, 4, style, HeadLayout::Bhsd, 3, false), &[xt])
            .unwrap();
        let back = g.transpose(r, &[0, 2, 1, 3]).unwrap();
        g.output(direct).unwrap();
        g.output(back).unwrap();
        let out = run(&g, &[], &[("x", x.clone())]);
        assert_close(&out[0].to_f32(), &out[1].to_f32(), 1e-6);
        // And it did rotate something.
        assert_ne!(out[0].to_f32(), x.to_f32());
    }
}

// ---- Scans and selection ----

#[test]
fn cumsum_by_hand() {
    // x = [[1, 2, 3], [4, 5, 6]]
    let x = f(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let cs = |axis, exclusive| unary(x.clone(), move |g, x| g.cumsum(x, axis, exclusive));
    // Along rows: [1, 3, 6], [4, 9, 15]; exclusive: [0, 1, 3], [0, 4, 9].
    check(
        &cs(1, false),
        DType::F32,
        &[2, 3],
        &[1.0, 3.0, 6.0, 4.0, 9.0, 15.0],
    );
    check(
        &cs(1, true),
        DType::F32,
        &[2, 3],
        &[0.0, 1.0, 3.0, 0.0, 4.0, 9.0],
    );
    // Down columns: [1, 2, 3], [5, 7, 9]; exclusive: zeros, then the first row.
    check(
        &cs(0, false),
        DType::F32,
        &[2, 3],
        &[1.0, 2.0, 3.0, 5.0, 7.0, 9.0],
    );
    check(
        &cs(0, true),
        DType::F32,
        &[2, 3],
        &[0.0, 0.0, 0.0, 1.0, 2.0, 3.0],
    );
    // Integers (e.g. positions from a mask): [1, 1, 0, 1] → [1, 2, 2, 3].
    let y = unary(i(&[4], &[1, 1, 0, 1]), |g, x| g.cumsum(x, 0, false));
    check(&y, DType::I32, &[4], &[1.0, 2.0, 2.0, 3.0]);
}

#[test]
fn argmax_first_on_ties() {
    // [1, 5, 5, 2] → 1 (first of the tied 5s); all equal → 0; [0, 3, 7, 7] → 2.
    let x = f(
        &[3, 4],
        &[
            1.0, 5.0, 5.0, 2.0, -1.0, -1.0, -1.0, -1.0, 0.0, 3.0, 7.0, 7.0,
        ],
    );
    let y = unary(x, |g, x| g.argmax(x));
    check(&y, DType::I32, &[3], &[1.0, 0.0, 2.0]);
    // Integer input, rank 1 → a scalar.
    let y = unary(i(&[3], &[4, 9, -2]), |g, x| g.argmax(x));
    check(&y, DType::I32, &[], &[1.0]);
}

#[test]
fn topk_values_and_indices() {
    // Rows [3, 1, 4, 1, 5] and [9, 2, 6, 5, 3], k = 3:
    //   values [5, 4, 3], [9, 6, 5];  indices [4, 2, 0], [0, 2, 3].
    let x = f(&[2, 5], &[3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]);
    let y = unary(x.clone(), |g, x| g.topk(x, 3, TopKOutput::Values));
    check(&y, DType::F32, &[2, 3], &[5.0, 4.0, 3.0, 9.0, 6.0, 5.0]);
    let y = unary(x, |g, x| g.topk(x, 3, TopKOutput::Indices));
    check(&y, DType::I32, &[2, 3], &[4.0, 2.0, 0.0, 0.0, 2.0, 3.0]);
    // Ties go to the lower index: [1, 3, 3, 2], k = 2 → indices [1, 2].
    let y = unary(f(&[4], &[1.0, 3.0, 3.0, 2.0]), |g, x| {
        g.topk(x, 2, TopKOutput::Indices)
    });
    check(&y, DType::I32, &[2], &[1.0, 2.0]);
    // k = the whole row sorts it.
    let y = unary(i(&[4], &[2, 8, -1, 5]), |g, x| {
        g.topk(x, 4, TopKOutput::Values)
    });
    check(&y, DType::I32, &[4], &[8.0, 5.0, 2.0, -1.0]);
}

/// Samples rows of `logits` with a counter input.
fn sample_run(
    logits: &HostTensor,
    top_k: usize,
    temperature: f32,
    seed: u64,
    counter: u32,
) -> Vec<f32> {
    let mut g = Graph::new();
    let x = g
        .input("logits", DType::F32, logits.shape.as_slice())
        .unwrap();
    let c = g.input("counter", DType::U32, [1]).unwrap();
    let op = Op::Sample {
        top_k,
        top_p: 1.0,
        temperature,
        seed,
        has_counter: true,
    };
    let y = g.add(op, &[x, c]).unwrap();
    g.output(y).unwrap();
    let counter = HostTensor::from_values(DType::U32, &[1], &[counter as f32]).unwrap();
    let out = run(&g, &[], &[("logits", logits.clone()), ("counter", counter)]).remove(0);
    assert_eq!(out.dtype, DType::I32);
    assert_eq!(out.shape, &logits.shape[..logits.shape.len() - 1]);
    out.to_f32()
}

#[test]
fn sample_greedy_and_top_k_1_are_argmax() {
    // Rows [0, 10, 9, -5] and [1, 2, 3, 4]: argmax 1 and 3.
    let logits = f(&[2, 4], &[0.0, 10.0, 9.0, -5.0, 1.0, 2.0, 3.0, 4.0]);
    for counter in 0..20 {
        assert_eq!(sample_run(&logits, 0, 0.0, 7, counter), [1.0, 3.0]);
        assert_eq!(sample_run(&logits, 1, 1.0, 7, counter), [1.0, 3.0]);
    }
}

#[test]
fn sample_draws_from_the_counter_based_stream() {
    // With 8 equal logits every index has weight 1 and mass 8, so the pick for a row is
    // floor(8 · u) with u = sample_uniform(seed, counter, row).
    let logits = f(&[2, 8], &[0.0; 16]);
    let mut picks = Vec::new();
    for counter in 0..24 {
        let got = sample_run(&logits, 0, 1.0, 42, counter);
        for (row, &p) in got.iter().enumerate() {
            let want = (8.0 * sample_uniform(42, counter, row as u32) as f64).floor() as f32;
            assert_eq!(p, want, "counter {counter}, row {row}");
        }
        // The same seed and counter reproduce the draw.
        assert_eq!(sample_run(&logits, 0, 1.0, 42, counter), got);
        picks.push(got[0]);
    }
    // Different counters give different draws: several distinct indices over 24 steps.
    picks.sort_by(f32::total_cmp);
    picks.dedup();
    assert!(picks.len() >= 4, "{picks:?}");
    // Another seed gives another stream.
    let a: Vec<Vec<f32>> = (0..8).map(|c| sample_run(&logits, 0, 1.0, 42, c)).collect();
    let b: Vec<Vec<f32>> = (0..8).map(|c| sample_run(&logits, 0, 1.0, 43, c)).collect();
    assert_ne!(a, b);
}

#[test]
fn sample_top_k_and_top_p_restrict_the_choice() {
    // [0, 10, 9, -5] with top_k = 2: only indices 1 and 2 can appear (and both do).
    let logits = f(&[1, 4], &[0.0, 10.0, 9.0, -5.0]);
    let picks: Vec<f32> = (0..64)
        .map(|c| sample_run(&logits, 2, 1.0, 5, c)[0])
        .collect();
    assert!(picks.iter().all(|&p| p == 1.0 || p == 2.0), "{picks:?}");
    assert!(picks.contains(&1.0) && picks.contains(&2.0));
    // top_p = 0.5: index 1 alone has probability e^10 / (1 + e^10 + e^9 + e^-5) ≈ 0.73 >= 0.5.
    let mut g = Graph::new();
    let x = g.input("logits", DType::F32, [1, 4]).unwrap();
    let op = Op::Sample {
        top_k: 0,
        top_p: 0.5,
        temperature: 1.0,
        seed: 3,
        has_counter: false,
    };
    let y = g.add(op, &[x]).unwrap();
    g.output(y).unwrap();
    let out = run(&g, &[], &[("logits", logits)]);
    check(&out[0], DType::I32, &[1], &[1.0]);
}

// ---- Symbolic dims ----

#[test]
fn symbolic_sequence_length() {
    // x: [seq <= 8, 4] times w = [1, 2, 3, 4] summed per row; row r of x is all (r + 1), so the
    // sums are 10 (r + 1). Also a causal-style running sum down the sequence: 10, 30, 60, ...
    let mut g = Graph::new();
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![Dim::bounded("seq", 8), Dim::Static(4)]),
        )
        .unwrap();
    let w = g.param("w", DType::F32, [4]).unwrap();
    let xw = g.mul(x, w).unwrap();
    let s = g.reduce(ReduceOp::Sum, xw, &[1], false).unwrap();
    let c = g.cumsum(s, 0, false).unwrap();
    let flat = g
        .reshape(x, Shape(vec![Dim::Static(4), Dim::bounded("seq", 8)]))
        .unwrap();
    g.output(s).unwrap();
    g.output(c).unwrap();
    g.output(flat).unwrap();

    let mut interp = Interpreter::new(&g);
    interp
        .set_param("w", f(&[4], &[1.0, 2.0, 3.0, 4.0]))
        .unwrap();
    for seq in [3usize, 8] {
        let xs: Vec<f32> = (0..seq).flat_map(|r| [(r + 1) as f32; 4]).collect();
        let out = interp.run(&[("x", f(&[seq, 4], &xs))]).unwrap();
        let sums: Vec<f32> = (1..=seq).map(|r| 10.0 * r as f32).collect();
        // 10 (1 + 2 + ... + r) = 5 r (r + 1)
        let running: Vec<f32> = (1..=seq).map(|r| 5.0 * (r * (r + 1)) as f32).collect();
        check(&out[0], DType::F32, &[seq], &sums);
        check(&out[1], DType::F32, &[seq], &running);
        check(&out[2], DType::F32, &[4, seq], &xs);
    }
    // Above the bound.
    let e = interp.run(&[("x", f(&[9, 4], &[0.0; 36]))]).unwrap_err();
    assert_eq!(
        e,
        RefError::Graph(IrError::AboveBound {
            symbol: "seq".into(),
            value: 9,
            max: 8
        })
    );
}

// ---- Run errors ----

/// x: f32[2, 3], y: f32[3]; w: param f32[3]; output x * w + y.
fn two_input_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [2, 3]).unwrap();
    let y = g.input("y", DType::F32, [3]).unwrap();
    let w = g.param("w", DType::F32, [3]).unwrap();
    let xw = g.mul(x, w).unwrap();
    let out = g.add_op(xw, y).unwrap();
    g.output(out).unwrap();
    g
}

#[test]
fn run_errors_are_typed() {
    let g = two_input_graph();
    let x = f(&[2, 3], &iota(6));
    let y = f(&[3], &[1.0; 3]);
    let w = || ("w", f(&[3], &[2.0; 3]));

    // Sanity: a good run. [0, 1, 2, 3, 4, 5] · 2 + 1.
    let out = evaluate(&g, &[w()], &[("x", x.clone()), ("y", y.clone())]).unwrap();
    check(
        &out[0],
        DType::F32,
        &[2, 3],
        &[1.0, 3.0, 5.0, 7.0, 9.0, 11.0],
    );

    // Missing input y.
    assert_eq!(
        evaluate(&g, &[w()], &[("x", x.clone())]),
        Err(RefError::MissingInput { name: "y".into() })
    );
    // An input name that the graph does not have (a param's name included).
    assert_eq!(
        evaluate(
            &g,
            &[w()],
            &[("x", x.clone()), ("y", y.clone()), ("z", y.clone())]
        ),
        Err(RefError::UnknownName { name: "z".into() })
    );
    assert_eq!(
        evaluate(
            &g,
            &[w()],
            &[("x", x.clone()), ("y", y.clone()), ("w", y.clone())]
        ),
        Err(RefError::UnknownName { name: "w".into() })
    );
    // Wrong dtype: y as i32.
    assert_eq!(
        evaluate(&g, &[w()], &[("x", x.clone()), ("y", i(&[3], &[1, 1, 1]))]),
        Err(RefError::Mismatch {
            name: "y".into(),
            expected_dtype: DType::F32,
            expected_shape: vec![3],
            got_dtype: DType::I32,
            got_shape: vec![3],
        })
    );
    // Wrong shape: x as [3, 2].
    assert!(matches!(
        evaluate(&g, &[w()], &[("x", f(&[3, 2], &iota(6))), ("y", y.clone())]),
        Err(RefError::Graph(IrError::InputShape { name, .. })) if name == "x"
    ));
    // Missing param.
    assert_eq!(
        evaluate(&g, &[], &[("x", x.clone()), ("y", y.clone())]),
        Err(RefError::MissingParam { name: "w".into() })
    );
    // Params: unknown name, wrong dtype (at set_param), wrong shape (at run).
    let mut it = Interpreter::new(&g);
    assert_eq!(
        it.set_param("nope", f(&[3], &[0.0; 3])),
        Err(RefError::UnknownName {
            name: "nope".into()
        })
    );
    assert!(matches!(
        it.set_param("w", i(&[3], &[0; 3])),
        Err(RefError::Mismatch {
            got_dtype: DType::I32,
            ..
        })
    ));
    it.set_param("w", f(&[4], &[0.0; 4])).unwrap();
    assert!(matches!(
        it.run(&[("x", x), ("y", y)]),
        Err(RefError::Mismatch { name, got_shape, .. }) if name == "w" && got_shape == [4]
    ));
}

#[test]
fn gather_index_out_of_range() {
    // A table of 3 rows: index 3 and -1 are out of range.
    for bad in [3, -1] {
        let mut g = Graph::new();
        let t = g.input("t", DType::F32, [3, 2]).unwrap();
        let ix = g.input("ix", DType::I32, [2]).unwrap();
        let y = g.gather(t, ix, 0).unwrap(); // %2
        g.output(y).unwrap();
        let e = evaluate(
            &g,
            &[],
            &[("t", f(&[3, 2], &iota(6))), ("ix", i(&[2], &[1, bad]))],
        )
        .unwrap_err();
        assert_eq!(
            e,
            RefError::IndexOutOfRange {
                node: 2,
                op: "gather",
                index: bad as i64,
                size: 3
            }
        );
        assert!(e.to_string().starts_with("node %2 (gather): "), "{e}");
    }
}

#[test]
fn past_length_too_long() {
    // 2 queries after 3 cached keys need 5 rows, but the cache has 4.
    let mut g = Graph::new();
    let q = g.input("q", DType::F32, [1, 2, 1, 1]).unwrap();
    let k = g.input("k", DType::F32, [1, 4, 1, 1]).unwrap();
    let past = g.input("past", DType::I32, [1]).unwrap();
    let y = g
        .add(
            attention_op(1, 1, 1, AttentionMask::Causal, HeadLayout::Bshd, true),
            &[q, k, k, past],
        )
        .unwrap(); // %3
    g.output(y).unwrap();
    let inputs = |p: i32| {
        vec![
            ("q", f(&[1, 2, 1, 1], &[0.0; 2])),
            ("k", f(&[1, 4, 1, 1], &[0.0; 4])),
            ("past", i(&[1], &[p])),
        ]
    };
    assert_eq!(
        evaluate(&g, &[], &inputs(3)),
        Err(RefError::PastTooLong {
            node: 3,
            past: 3,
            seq_q: 2,
            seq_k: 4
        })
    );
    // A negative past length is rejected too.
    assert!(matches!(
        evaluate(&g, &[], &inputs(-1)),
        Err(RefError::PastTooLong { past: -1, .. })
    ));
    assert!(evaluate(&g, &[], &inputs(2)).is_ok());
}

#[test]
fn a_quantized_output_is_unsupported() {
    // A param returned as is cannot be encoded from values.
    let (table, _) = q8_table();
    let mut g = Graph::new();
    let t = g.param("emb", DType::Q8_0, [2, 32]).unwrap();
    g.output(t).unwrap();
    assert!(matches!(
        evaluate(&g, &[("emb", table)], &[]),
        Err(RefError::Unsupported {
            node: 0,
            op: "param",
            ..
        })
    ));
}

#[test]
fn hand_built_tensor_with_wrong_byte_count_is_an_error() {
    let mut g = kiln_ir::Graph::new();
    let x = g.input("x", kiln_ir::DType::F32, [2]).unwrap();
    let y = g.activation(kiln_ir::Activation::Neg, x).unwrap();
    g.output(y).unwrap();
    // The fields are public, so a caller can build an inconsistent tensor by hand.
    let bad = kiln_ir::HostTensor {
        dtype: kiln_ir::DType::F32,
        shape: vec![2],
        bytes: vec![0; 5],
    };
    let err = kiln_reference::evaluate(&g, &[], &[("x", bad)]).unwrap_err();
    assert!(
        matches!(err, kiln_reference::RefError::BadData { ref name, .. } if name == "x"),
        "{err}"
    );
}
