//! Every op family rejects bad inputs with a typed error that names the node, and symbol
//! bindings are checked.

use kiln_ir::*;

type R = Result<NodeId, IrError>;

/// Asserts that `r` is a node error at `id` for `op`, whose message starts with
/// `node {id} ({op}): `, and returns the reason.
#[track_caller]
fn node_err(r: R, id: &str, op: &str) -> InferError {
    match r {
        Err(e @ IrError::Node { .. }) => {
            let msg = e.to_string();
            let prefix = format!("node {id} ({op}): ");
            assert!(
                msg.starts_with(&prefix),
                "{msg:?} should start with {prefix:?}"
            );
            let IrError::Node {
                node,
                op: o,
                source,
            } = e
            else {
                unreachable!()
            };
            assert_eq!((node.as_str(), o), (id, op));
            source
        }
        other => panic!("expected an error at {id} ({op}), got {other:?}"),
    }
}

fn f32_input(g: &mut Graph, name: &str, shape: impl Into<Shape>) -> NodeId {
    g.input(name, DType::F32, shape).unwrap()
}

fn seq(max: usize) -> Dim {
    Dim::bounded("seq", max)
}

fn attention_op(heads: usize, kv: usize, head_dim: usize, mask: AttentionMask) -> Op {
    Op::Attention {
        num_heads: heads,
        num_kv_heads: kv,
        head_dim,
        scale: 0.5,
        mask,
        layout: HeadLayout::Bshd,
        has_past_len: false,
    }
}

fn rope_op(head_dim: usize, rotary_dims: usize, theta: f32) -> Op {
    Op::Rope {
        head_dim,
        rotary_dims,
        theta,
        style: RopeStyle::RotateHalf,
        layout: HeadLayout::Bshd,
        position_offset: 0,
        has_offset_input: false,
    }
}

fn sample_op(top_p: f32, temperature: f32, has_counter: bool) -> Op {
    Op::Sample {
        top_k: 0,
        top_p,
        temperature,
        seed: 1,
        has_counter,
    }
}

#[test]
fn matmul_errors() {
    let mut g = Graph::new();
    let v = f32_input(&mut g, "v", [4]); // %0
    let a = f32_input(&mut g, "a", [2, 4]); // %1
    let b = g.param("b", DType::F32, [3, 5]).unwrap(); // %2

    // A 1-D left operand: rank must be >= 2.
    assert_eq!(
        node_err(g.matmul(v, a), "%3", "matmul"),
        InferError::Rank {
            input: 0,
            expected: ">= 2".into(),
            got: 1
        }
    );
    // ... or right operand.
    assert!(matches!(
        node_err(g.matmul(a, v), "%3", "matmul"),
        InferError::Rank {
            input: 1,
            got: 1,
            ..
        }
    ));
    // [2, 4] × [3, 5]: K = 4 vs 3.
    assert!(matches!(
        node_err(g.matmul(a, b), "%3", "matmul"),
        InferError::Shape(m) if m.contains("inner dims")
    ));
    // Transposed, b is [N=3, K=5]: K = 4 vs 5.
    assert!(matches!(
        node_err(g.matmul_t(a, b), "%3", "matmul"),
        InferError::Shape(_)
    ));
    // Integer operands are rejected.
    let i = g.input("i", DType::I32, [2, 4]).unwrap(); // %3
    assert!(matches!(
        node_err(g.matmul(i, i), "%4", "matmul"),
        InferError::DType {
            input: 0,
            got: DType::I32,
            ..
        }
    ));
    // Mixed float dtypes.
    let h = g.input("h", DType::F16, [4, 2]).unwrap(); // %4
    assert!(matches!(
        node_err(g.matmul(a, h), "%5", "matmul"),
        InferError::DType {
            input: 1,
            got: DType::F16,
            ..
        }
    ));
    // Batch dims that do not broadcast: [2, 2, 4] × [3, 4, 2].
    let x = f32_input(&mut g, "x", [2, 2, 4]); // %5
    let y = f32_input(&mut g, "y", [3, 4, 2]); // %6
    assert!(matches!(
        node_err(g.matmul(x, y), "%7", "matmul"),
        InferError::Shape(m) if m.contains("batch")
    ));
    // A quantized weight must be used transposed.
    let q = g.param("q", DType::Q4_0, [32, 32]).unwrap(); // %7
    let a32 = f32_input(&mut g, "a32", [1, 32]); // %8
    assert!(matches!(
        node_err(g.matmul(a32, q), "%9", "matmul"),
        InferError::Attr(_)
    ));
    // Fused: a bias that is not [N].
    let w = g.param("w", DType::F32, [4, 3]).unwrap(); // %9
    let bias = g.param("bias", DType::F32, [4]).unwrap(); // %10
    assert!(matches!(
        node_err(
            g.fused_matmul_bias_act(a, w, Some(bias), Some(Activation::Relu), false),
            "%11",
            "fused_matmul_bias_act"
        ),
        InferError::Shape(_)
    ));
    // Fused with has_bias but no bias input: arity.
    let op = Op::FusedMatMulBiasAct {
        transpose_b: false,
        has_bias: true,
        act: None,
    };
    assert_eq!(
        node_err(g.add(op, &[a, w]), "%11", "fused_matmul_bias_act"),
        InferError::Arity {
            expected: "3".into(),
            got: 2
        }
    );
    // None of the failures added a node.
    assert_eq!(g.len(), 11);
}

#[test]
fn elementwise_errors() {
    let mut g = Graph::new();
    let i = g.input("i", DType::I32, [3]).unwrap(); // %0
    let x = f32_input(&mut g, "x", [3]); // %1
    let c = g.input("c", DType::Bool, [3]).unwrap(); // %2

    // Activations need floats.
    for kind in ALL_ACTIVATIONS {
        assert_eq!(
            node_err(g.activation(kind, i), "%3", "activation"),
            InferError::DType {
                input: 0,
                expected: "f32, f16 or bf16".into(),
                got: DType::I32
            }
        );
    }
    // Binary operands must share a dtype; the second one is blamed.
    assert!(matches!(
        node_err(g.add_op(x, i), "%3", "binary"),
        InferError::DType {
            input: 1,
            got: DType::I32,
            ..
        }
    ));
    // Bool is not arithmetic, nor comparable.
    assert!(matches!(
        node_err(g.mul(c, c), "%3", "binary"),
        InferError::DType {
            input: 0,
            got: DType::Bool,
            ..
        }
    ));
    assert!(matches!(
        node_err(g.compare(CompareOp::Eq, c, c), "%3", "compare"),
        InferError::DType { .. }
    ));
    // Where with two inputs (through Graph::add): arity.
    assert_eq!(
        node_err(g.add(Op::Where, &[c, x]), "%3", "where"),
        InferError::Arity {
            expected: "3".into(),
            got: 2
        }
    );
    // Where's branches must share a dtype.
    assert!(matches!(
        node_err(g.where_(c, x, i), "%3", "where"),
        InferError::DType { input: 2, .. }
    ));
    // Binary with three inputs.
    assert!(matches!(
        node_err(
            g.add(
                Op::Binary {
                    kind: BinaryOp::Add
                },
                &[x, x, x]
            ),
            "%3",
            "binary"
        ),
        InferError::Arity { got: 3, .. }
    ));
    // Casts from or to a quantized type.
    let q = g.param("q", DType::Q8_0, [1, 32]).unwrap(); // %3
    assert!(matches!(
        node_err(g.cast(q, DType::F32), "%4", "cast"),
        InferError::DType {
            got: DType::Q8_0,
            ..
        }
    ));
    assert!(matches!(
        node_err(g.cast(x, DType::Q4_1), "%4", "cast"),
        InferError::Attr(_)
    ));
}

#[test]
fn movement_errors() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [2, 3]); // %0
    let s = f32_input(&mut g, "s", Shape(vec![seq(8), Dim::Static(3)])); // %1

    // Reshape: 6 elements into 8.
    assert!(matches!(
        node_err(g.reshape(x, [2, 4]), "%2", "reshape"),
        InferError::Shape(m) if m.contains("element counts differ")
    ));
    // A symbol cannot become a static size.
    assert!(matches!(
        node_err(g.reshape(s, [24]), "%2", "reshape"),
        InferError::Shape(_)
    ));
    // Transpose: not a permutation, or of the wrong length.
    assert!(matches!(
        node_err(g.transpose(x, &[0, 0]), "%2", "transpose"),
        InferError::Attr(_)
    ));
    assert!(matches!(
        node_err(g.transpose(x, &[1, 0, 2]), "%2", "transpose"),
        InferError::Attr(_)
    ));
    // Narrow: axis out of range, range past the end, overflowing range, symbolic axis.
    assert_eq!(
        node_err(g.narrow(x, 2, 0, 1), "%2", "narrow"),
        InferError::Axis { axis: 2, rank: 2 }
    );
    assert!(matches!(
        node_err(g.narrow(x, 1, 2, 2), "%2", "narrow"),
        InferError::Shape(m) if m.contains("exceeds")
    ));
    assert!(matches!(
        node_err(g.narrow(x, 1, 1, usize::MAX), "%2", "narrow"),
        InferError::Shape(_)
    ));
    assert!(matches!(
        node_err(g.narrow(s, 0, 0, 1), "%2", "narrow"),
        InferError::Shape(m) if m.contains("static")
    ));
    // Concat: axis out of range, other dims differing, dtype or rank differing, no inputs.
    assert_eq!(
        node_err(g.concat(&[x, x], 2), "%2", "concat"),
        InferError::Axis { axis: 2, rank: 2 }
    );
    let y = f32_input(&mut g, "y", [3, 3]); // %2
    assert!(matches!(
        node_err(g.concat(&[x, y], 1), "%3", "concat"),
        InferError::Shape(_)
    ));
    let i = g.input("i", DType::I32, [2, 3]).unwrap(); // %3
    assert!(matches!(
        node_err(g.concat(&[x, i], 0), "%4", "concat"),
        InferError::DType { input: 1, .. }
    ));
    let v = f32_input(&mut g, "v", [3]); // %4
    assert!(matches!(
        node_err(g.concat(&[x, v], 0), "%5", "concat"),
        InferError::Rank { input: 1, .. }
    ));
    assert!(matches!(
        node_err(g.concat(&[], 0), "%5", "concat"),
        InferError::Arity { got: 0, .. }
    ));
    // Concat along a symbolic axis.
    assert!(matches!(
        node_err(g.concat(&[s, s], 0), "%5", "concat"),
        InferError::Shape(_)
    ));
    // Expand: [2, 3] cannot become [2, 4] nor lose a dim.
    assert!(matches!(
        node_err(g.expand(x, [2, 4]), "%5", "expand"),
        InferError::Shape(_)
    ));
    assert!(matches!(
        node_err(g.expand(x, [3]), "%5", "expand"),
        InferError::Shape(_)
    ));
    // Gather: float indices, axis out of range, a quantized table along axis 1.
    assert!(matches!(
        node_err(g.gather(x, v, 0), "%5", "gather"),
        InferError::DType {
            input: 1,
            got: DType::F32,
            ..
        }
    ));
    assert_eq!(
        node_err(g.gather(x, i, 2), "%5", "gather"),
        InferError::Axis { axis: 2, rank: 2 }
    );
    let q = g.param("q", DType::Q8_0, [4, 32]).unwrap(); // %5
    assert!(matches!(
        node_err(g.gather(q, i, 1), "%6", "gather"),
        InferError::Attr(_)
    ));
    // Quantized tensors keep their blocks: no narrow along the last axis, no transpose, no
    // reshape that changes the last axis.
    assert!(matches!(
        node_err(g.narrow(q, 1, 0, 16), "%6", "narrow"),
        InferError::Attr(_)
    ));
    assert!(matches!(
        node_err(g.transpose(q, &[1, 0]), "%6", "transpose"),
        InferError::DType { .. }
    ));
    assert!(matches!(
        node_err(g.reshape(q, [2, 64]), "%6", "reshape"),
        InferError::Shape(_)
    ));
    // ... but these are fine.
    g.narrow(q, 0, 1, 2).unwrap();
    g.reshape(q, [2, 2, 32]).unwrap();
}

#[test]
fn update_rows_errors() {
    let mut g = Graph::new();
    let cache = f32_input(&mut g, "cache", [1, 8, 2, 4]); // %0
    let new = f32_input(
        &mut g,
        "new",
        Shape(vec![1.into(), seq(8), 2.into(), 4.into()]),
    ); // %1
    let pos = g.input("pos", DType::I32, [1]).unwrap(); // %2
    let ok = g.update_rows(cache, new, pos, 1).unwrap(); // %3
    assert_eq!(g.node(ok).unwrap().shape, Shape::from([1, 8, 2, 4]));
    let wide = f32_input(&mut g, "wide", [1, 1, 2, 5]); // %4
    assert!(matches!(
        node_err(g.update_rows(cache, wide, pos, 1), "%5", "update_rows"),
        InferError::Shape(_)
    ));
    let ints = g.input("ints", DType::I32, [1, 1, 2, 4]).unwrap(); // %5
    assert!(matches!(
        node_err(g.update_rows(cache, ints, pos, 1), "%6", "update_rows"),
        InferError::DType { input: 1, .. }
    ));
    let two = g.input("two", DType::I32, [2]).unwrap(); // %6
    assert!(matches!(
        node_err(g.update_rows(cache, new, two, 1), "%7", "update_rows"),
        InferError::Shape(_)
    ));
    let fpos = f32_input(&mut g, "fpos", [1]); // %7
    assert!(matches!(
        node_err(g.update_rows(cache, new, fpos, 1), "%8", "update_rows"),
        InferError::DType { input: 2, .. }
    ));
    assert_eq!(
        node_err(g.update_rows(cache, new, pos, 4), "%8", "update_rows"),
        InferError::Axis { axis: 4, rank: 4 }
    );
}

#[test]
fn reduction_and_norm_errors() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [2, 3]); // %0
    let i = g.input("i", DType::I32, [2, 3]).unwrap(); // %1

    // Softmax axis out of range; softmax of integers.
    assert_eq!(
        node_err(g.softmax(x, 2), "%2", "softmax"),
        InferError::Axis { axis: 2, rank: 2 }
    );
    assert!(matches!(
        node_err(g.softmax(i, 0), "%2", "softmax"),
        InferError::DType { .. }
    ));
    // Reduce: duplicate axis, no axes, axis out of range, mean of integers.
    assert!(matches!(
        node_err(g.reduce(ReduceOp::Sum, x, &[1, 1], false), "%2", "reduce"),
        InferError::Attr(m) if m.contains("twice")
    ));
    assert!(matches!(
        node_err(g.reduce(ReduceOp::Sum, x, &[], false), "%2", "reduce"),
        InferError::Attr(_)
    ));
    assert_eq!(
        node_err(g.reduce(ReduceOp::Max, x, &[0, 5], true), "%2", "reduce"),
        InferError::Axis { axis: 5, rank: 2 }
    );
    assert!(matches!(
        node_err(g.reduce(ReduceOp::Mean, i, &[0], true), "%2", "reduce"),
        InferError::DType { .. }
    ));
    g.reduce(ReduceOp::Sum, i, &[0], true).unwrap(); // %2: integer sums are fine
                                                     // Cumsum axis out of range; cumsum of bools.
    assert_eq!(
        node_err(g.cumsum(x, 3, false), "%3", "cumsum"),
        InferError::Axis { axis: 3, rank: 2 }
    );
    let b = g.input("b", DType::Bool, [2]).unwrap(); // %3
    assert!(matches!(
        node_err(g.cumsum(b, 0, true), "%4", "cumsum"),
        InferError::DType { .. }
    ));

    // Norms: gamma of the wrong length, negative or NaN eps, beta without gamma, integers.
    let g2 = g.param("g2", DType::F32, [2]).unwrap(); // %4
    let g3 = g.param("g3", DType::F32, [3]).unwrap(); // %5
    assert!(matches!(
        node_err(g.layer_norm(x, Some(g2), None, 1e-5), "%6", "norm"),
        InferError::Shape(_)
    ));
    assert!(matches!(
        node_err(g.rms_norm(x, Some(g3), -1.0), "%6", "norm"),
        InferError::Attr(_)
    ));
    assert!(matches!(
        node_err(g.rms_norm(x, None, f32::NAN), "%6", "norm"),
        InferError::Attr(_)
    ));
    assert!(matches!(
        node_err(g.layer_norm(x, None, Some(g3), 1e-5), "%6", "norm"),
        InferError::Arity { got: 2, .. }
    ));
    assert!(matches!(
        node_err(g.rms_norm(i, None, 1e-5), "%6", "norm"),
        InferError::DType { .. }
    ));
    // Fused residual norm: residual of another shape, bias of the wrong length.
    let r = f32_input(&mut g, "r", [3, 2]); // %6
    assert!(matches!(
        node_err(
            g.fused_residual_norm(NormKind::Rms, x, r, None, Some(g3), None, 1e-5),
            "%7",
            "fused_residual_norm"
        ),
        InferError::Shape(m) if m.contains("residual")
    ));
    assert!(matches!(
        node_err(
            g.fused_residual_norm(NormKind::Layer, x, x, Some(g2), None, None, 1e-5),
            "%7",
            "fused_residual_norm"
        ),
        InferError::Shape(_)
    ));
}

#[test]
fn attention_errors() {
    let mut g = Graph::new();
    // q: [batch 1, seq 3, 4 heads, 2], k/v: [1, 5, 2 heads, 2]  (BSHD)
    let q = f32_input(&mut g, "q", [1, 3, 4, 2]); // %0
    let k = f32_input(&mut g, "k", [1, 5, 2, 2]); // %1
    let v = f32_input(&mut g, "v", [1, 5, 2, 2]); // %2
    g.add(attention_op(4, 2, 2, AttentionMask::Causal), &[q, k, v])
        .unwrap(); // %3

    // 4 query heads do not split over 3 kv heads.
    assert!(matches!(
        node_err(g.add(attention_op(4, 3, 2, AttentionMask::None), &[q, k, v]), "%4", "attention"),
        InferError::Attr(m) if m.contains("multiple")
    ));
    // q does not have the stated number of heads or head_dim.
    assert!(matches!(
        node_err(
            g.add(attention_op(2, 2, 2, AttentionMask::None), &[q, k, v]),
            "%4",
            "attention"
        ),
        InferError::Shape(_)
    ));
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 4, AttentionMask::None), &[q, k, v]),
            "%4",
            "attention"
        ),
        InferError::Shape(_)
    ));
    // A key-padding mask must be [batch, seq_k] = [1, 5].
    let m = g.input("m", DType::Bool, [1, 3]).unwrap(); // %4
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 2, AttentionMask::KeyPadding), &[q, k, v, m]),
            "%5",
            "attention"
        ),
        InferError::Shape(msg) if msg.contains("key-padding")
    ));
    // A mask kind that needs a mask, without one.
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 2, AttentionMask::Bias), &[q, k, v]),
            "%5",
            "attention"
        ),
        InferError::Arity { got: 3, .. }
    ));
    // A bias that does not broadcast to the scores [1, 4, 3, 5].
    let bias = f32_input(&mut g, "bias", [1, 4, 3, 4]); // %5
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 2, AttentionMask::Bias), &[q, k, v, bias]),
            "%6",
            "attention"
        ),
        InferError::Shape(_)
    ));
    // k and v of different lengths.
    let v4 = f32_input(&mut g, "v4", [1, 4, 2, 2]); // %6
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 2, AttentionMask::None), &[q, k, v4]),
            "%7",
            "attention"
        ),
        InferError::Shape(_)
    ));
    // A rank-3 q.
    let q3 = f32_input(&mut g, "q3", [3, 4, 2]); // %7
    assert!(matches!(
        node_err(
            g.add(attention_op(4, 2, 2, AttentionMask::None), &[q3, k, v]),
            "%8",
            "attention"
        ),
        InferError::Rank { input: 0, .. }
    ));
    // The past length must be one integer.
    let past = f32_input(&mut g, "past", [1]); // %8
    let past2 = g.input("past2", DType::I32, [2]).unwrap(); // %9
    let with_past = Op::Attention {
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 2,
        scale: 1.0,
        mask: AttentionMask::Causal,
        layout: HeadLayout::Bshd,
        has_past_len: true,
    };
    assert!(matches!(
        node_err(
            g.add(with_past.clone(), &[q, k, v, past]),
            "%10",
            "attention"
        ),
        InferError::DType { input: 3, .. }
    ));
    assert!(matches!(
        node_err(g.add(with_past, &[q, k, v, past2]), "%10", "attention"),
        InferError::Shape(_)
    ));
    // A non-finite scale.
    let mut op = attention_op(4, 2, 2, AttentionMask::None);
    if let Op::Attention { scale, .. } = &mut op {
        *scale = f32::INFINITY;
    }
    assert!(matches!(
        node_err(g.add(op, &[q, k, v]), "%10", "attention"),
        InferError::Attr(_)
    ));
}

#[test]
fn rope_errors() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [1, 3, 2, 8]); // %0: BSHD, head_dim 8
    g.add(rope_op(8, 4, 10000.0), &[x]).unwrap(); // %1: valid

    // Odd rotary dims, zero, or more than head_dim.
    for bad in [3, 0, 10] {
        assert!(matches!(
            node_err(g.add(rope_op(8, bad, 10000.0), &[x]), "%2", "rope"),
            InferError::Attr(m) if m.contains("rotary_dims")
        ));
    }
    // head_dim not matching x.
    assert!(matches!(
        node_err(g.add(rope_op(4, 4, 10000.0), &[x]), "%2", "rope"),
        InferError::Shape(_)
    ));
    // theta must be positive.
    assert!(matches!(
        node_err(g.add(rope_op(8, 8, 0.0), &[x]), "%2", "rope"),
        InferError::Attr(_)
    ));
    // Rank 3.
    let x3 = f32_input(&mut g, "x3", [3, 2, 8]); // %2
    assert!(matches!(
        node_err(g.add(rope_op(8, 8, 1e4), &[x3]), "%3", "rope"),
        InferError::Rank { input: 0, .. }
    ));
    // An offset input without has_offset_input: arity.
    let off = g.input("off", DType::I32, [1]).unwrap(); // %3
    assert!(matches!(
        node_err(g.add(rope_op(8, 8, 1e4), &[x, off]), "%4", "rope"),
        InferError::Arity { got: 2, .. }
    ));
}

#[test]
fn selection_errors() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [2, 5]); // %0
    let s = g.input("s", DType::F32, Shape::scalar()).unwrap(); // %1

    // TopK: k above the last dim, k = 0, a symbolic last dim.
    assert!(matches!(
        node_err(g.topk(x, 6, TopKOutput::Values), "%2", "topk"),
        InferError::Attr(m) if m.contains("k = 6")
    ));
    assert!(matches!(
        node_err(g.topk(x, 0, TopKOutput::Indices), "%2", "topk"),
        InferError::Attr(_)
    ));
    let y = f32_input(&mut g, "y", Shape(vec![Dim::Static(2), seq(8)])); // %2
    assert!(matches!(
        node_err(g.topk(y, 1, TopKOutput::Values), "%3", "topk"),
        InferError::Attr(_)
    ));
    // Argmax of a scalar, of an empty axis, of bools.
    assert!(matches!(
        node_err(g.argmax(s), "%3", "argmax"),
        InferError::Rank { got: 0, .. }
    ));
    let e = f32_input(&mut g, "e", [2, 0]); // %3
    assert!(matches!(
        node_err(g.argmax(e), "%4", "argmax"),
        InferError::Shape(_)
    ));
    let b = g.input("b", DType::Bool, [4]).unwrap(); // %4
    assert!(matches!(
        node_err(g.argmax(b), "%5", "argmax"),
        InferError::DType { .. }
    ));
    // Sample: top_p = 0 (or above 1, or NaN), a negative temperature, a float counter, integer
    // logits.
    for top_p in [0.0, 1.5, f32::NAN] {
        assert!(matches!(
            node_err(g.add(sample_op(top_p, 1.0, false), &[x]), "%5", "sample"),
            InferError::Attr(m) if m.contains("top_p")
        ));
    }
    assert!(matches!(
        node_err(g.add(sample_op(0.9, -1.0, false), &[x]), "%5", "sample"),
        InferError::Attr(m) if m.contains("temperature")
    ));
    assert!(matches!(
        node_err(g.add(sample_op(0.9, 1.0, true), &[x, s]), "%5", "sample"),
        InferError::DType { input: 1, .. }
    ));
    let i = g.input("i", DType::I32, [2, 5]).unwrap(); // %5
    assert!(matches!(
        node_err(g.add(sample_op(0.9, 1.0, false), &[i]), "%6", "sample"),
        InferError::DType { input: 0, .. }
    ));
}

#[test]
fn source_errors() {
    let mut g = Graph::new();
    // A Q4_0 param whose last dim (40) is not a multiple of 32.
    let e = g.param("w", DType::Q4_0, [4, 40]).unwrap_err();
    assert!(matches!(
        &e,
        IrError::Node {
            op: "param",
            source: InferError::Shape(_),
            ..
        }
    ));
    assert!(e.to_string().starts_with("node %0 (param): "), "{e}");
    // ... or symbolic.
    assert!(matches!(
        node_err(
            g.param("w", DType::Q8_0, Shape(vec![Dim::Static(2), seq(64)])),
            "%0",
            "param"
        ),
        InferError::Shape(_)
    ));
    // A constant f32[2, 2] with 12 bytes instead of 16.
    let e = node_err(
        g.constant(DType::F32, [2, 2], vec![0; 12]),
        "%0",
        "constant",
    );
    assert!(matches!(e, InferError::Shape(m) if m.contains("12 bytes")));
    // A constant with a symbolic shape.
    assert!(matches!(
        node_err(
            g.constant(DType::F32, Shape(vec![seq(4)]), vec![]),
            "%0",
            "constant"
        ),
        InferError::Shape(_)
    ));
    // A constant too large to count is an error, not an overflow.
    assert!(matches!(
        node_err(
            g.constant(DType::F32, [1 << 40, 1 << 40], vec![]),
            "%0",
            "constant"
        ),
        InferError::Shape(_)
    ));
    // Quantized constants need whole blocks: one Q8_0 block is 34 bytes.
    g.constant(DType::Q8_0, [1, 32], vec![0; 34]).unwrap(); // %0
    assert!(matches!(
        node_err(
            g.constant(DType::Q8_0, [1, 32], vec![0; 32]),
            "%1",
            "constant"
        ),
        InferError::Shape(_)
    ));
    // An empty name.
    assert!(matches!(
        node_err(g.input("", DType::F32, [1]), "%1", "input"),
        InferError::Attr(_)
    ));
    // Duplicate names, across inputs and params.
    g.input("x", DType::F32, [1]).unwrap(); // %1
    assert_eq!(
        g.input("x", DType::F16, [2]),
        Err(IrError::DuplicateName { name: "x".into() })
    );
    assert_eq!(
        g.param("x", DType::F32, [1]),
        Err(IrError::DuplicateName { name: "x".into() })
    );
    assert!(IrError::DuplicateName { name: "x".into() }
        .to_string()
        .contains("`x`"));
    // Sources cannot be added through Graph::add.
    assert!(matches!(
        node_err(g.add(Op::Input { name: "y".into() }, &[]), "%2", "input"),
        InferError::Attr(_)
    ));
    assert_eq!(g.len(), 2);
}

#[test]
fn graph_structure_errors() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [2]); // %0
                                         // An input that does not exist yet.
    assert_eq!(
        g.add(
            Op::Activation {
                kind: Activation::Relu
            },
            &[NodeId(5)]
        ),
        Err(IrError::NotTopological { node: 1, input: 5 })
    );
    assert_eq!(
        g.output(NodeId(3)),
        Err(IrError::UnknownNode { id: 3, len: 1 })
    );
    assert_eq!(
        g.set_label(NodeId(1), "nope"),
        Err(IrError::UnknownNode { id: 1, len: 1 })
    );
    assert_eq!(
        g.node(NodeId(1)).unwrap_err().to_string(),
        "node id %1 does not exist (the graph has 1 nodes)"
    );
    // No outputs yet.
    assert_eq!(g.validate(), Err(IrError::NoOutputs));
    g.output(x).unwrap();
    assert_eq!(g.validate(), Ok(()));
}

#[test]
fn huge_dims_are_errors_not_overflows() {
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [1, 1, 1, 2]); // %0
                                                  // A "one-element" past length whose dims multiply past usize::MAX.
    let past = g.input("past", DType::I32, [1 << 40, 1 << 40]).unwrap(); // %1
    let op = Op::Attention {
        num_heads: 1,
        num_kv_heads: 1,
        head_dim: 2,
        scale: 1.0,
        mask: AttentionMask::None,
        layout: HeadLayout::Bshd,
        has_past_len: true,
    };
    assert!(matches!(
        node_err(g.add(op, &[x, x, x, past]), "%2", "attention"),
        InferError::Shape(_)
    ));
    // Concat sizes that add past usize::MAX.
    let big = f32_input(&mut g, "big", [usize::MAX / 2 + 1]); // %2
    assert!(matches!(
        node_err(g.concat(&[big, big], 0), "%3", "concat"),
        InferError::Shape(_)
    ));
}

#[test]
fn labels_name_nodes_in_validation_errors() {
    // A node error found by validate() carries the node's label.
    let mut g = Graph::new();
    let x = f32_input(&mut g, "x", [2, 3]);
    let y = g.softmax(x, 1).unwrap();
    g.set_label(y, "probs").unwrap();
    g.output(y).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&g.to_json()).unwrap();
    v["nodes"][1]["op"]["axis"] = serde_json::json!(7);
    let e = Graph::from_json(&v.to_string()).unwrap_err();
    assert_eq!(
        e,
        IrError::Node {
            node: "%1 \"probs\"".into(),
            op: "softmax",
            source: InferError::Axis { axis: 7, rank: 2 }
        }
    );
    assert_eq!(
        e.to_string(),
        "node %1 \"probs\" (softmax): axis 7 is out of range for rank 2"
    );
}

// ---- Bindings ----

/// x: f32[seq<=8, 4], y: f32[batch, seq<=8], p: param f32[4];
/// %3 = reshape(x, [seq, 2, 2]); output %3 and y.
fn bound_graph() -> Graph {
    let mut g = Graph::new();
    g.input("x", DType::F32, Shape(vec![seq(8), Dim::Static(4)]))
        .unwrap();
    let y = g
        .input("y", DType::F32, Shape(vec![Dim::sym("batch"), seq(8)]))
        .unwrap();
    g.param("p", DType::F32, [4]).unwrap();
    let r = g
        .reshape(
            NodeId(0),
            Shape(vec![seq(8), Dim::Static(2), Dim::Static(2)]),
        )
        .unwrap();
    g.output(r).unwrap();
    g.output(y).unwrap();
    g
}

#[test]
fn infer_binding_checks_shapes() {
    let g = bound_graph();
    assert_eq!(g.symbols(), ["seq", "batch"]);

    // Consistent values from two inputs: seq = 3 (from both), batch = 2.
    let b = g.infer_binding(&[("x", &[3, 4]), ("y", &[2, 3])]).unwrap();
    assert_eq!(b, DimBinding::new().with("seq", 3).with("batch", 2));
    assert_eq!(b.to_string(), "{seq=3, batch=2}");
    // At the bound exactly.
    assert!(g.infer_binding(&[("x", &[8, 4])]).is_ok());

    // seq = 3 from x but 5 from y.
    assert_eq!(
        g.infer_binding(&[("x", &[3, 4]), ("y", &[2, 5])]),
        Err(IrError::ConflictingBinding {
            symbol: "seq".into(),
            first: 3,
            second: 5
        })
    );
    // seq = 9 is above its bound 8.
    let e = g.infer_binding(&[("x", &[9, 4])]).unwrap_err();
    assert_eq!(
        e,
        IrError::AboveBound {
            symbol: "seq".into(),
            value: 9,
            max: 8
        }
    );
    assert_eq!(e.to_string(), "symbol `seq` = 9 exceeds its bound 8");
    // An unknown name, and a param's name (params are not inputs).
    assert_eq!(
        g.infer_binding(&[("z", &[1])]),
        Err(IrError::UnknownInput { name: "z".into() })
    );
    assert_eq!(
        g.infer_binding(&[("p", &[4])]),
        Err(IrError::UnknownInput { name: "p".into() })
    );
    // One symbol twice in one input: [n, n] given [3, 4] conflicts, [3, 3] binds n = 3.
    let mut sq = Graph::new();
    let m = sq
        .input("m", DType::F32, Shape(vec![Dim::sym("n"), Dim::sym("n")]))
        .unwrap();
    sq.output(m).unwrap();
    assert_eq!(
        sq.infer_binding(&[("m", &[3, 4])]),
        Err(IrError::ConflictingBinding {
            symbol: "n".into(),
            first: 3,
            second: 4
        })
    );
    assert_eq!(
        sq.infer_binding(&[("m", &[3, 3])]),
        Ok(DimBinding::new().with("n", 3))
    );
    // A static dim that differs, and a rank that differs.
    assert!(matches!(
        g.infer_binding(&[("x", &[3, 5])]),
        Err(IrError::InputShape { name, .. }) if name == "x"
    ));
    assert!(matches!(
        g.infer_binding(&[("x", &[3])]),
        Err(IrError::InputShape { .. })
    ));
}

#[test]
fn bind_substitutes_and_checks_bounds() {
    let g = bound_graph();
    let b = DimBinding::new().with("seq", 3).with("batch", 2);
    let bound = g.bind(&b).unwrap();
    // Every shape is static now, reshape targets included.
    assert!(bound.nodes().iter().all(|n| n.shape.is_static()));
    assert_eq!(bound.node(NodeId(3)).unwrap().shape, Shape::of(&[3, 2, 2]));
    assert_eq!(
        bound.node(NodeId(3)).unwrap().op,
        Op::Reshape {
            shape: Shape::of(&[3, 2, 2])
        }
    );
    assert!(bound.symbols().is_empty());
    assert_eq!(bound.outputs(), g.outputs());

    // A partial binding leaves the other symbols.
    let partial = g.bind(&DimBinding::new().with("batch", 5)).unwrap();
    assert_eq!(partial.symbols(), ["seq"]);
    assert_eq!(
        partial.node(NodeId(1)).unwrap().shape,
        Shape(vec![Dim::Static(5), seq(8)])
    );

    // Above the bound.
    assert_eq!(
        g.bind(&DimBinding::new().with("seq", 9)),
        Err(IrError::AboveBound {
            symbol: "seq".into(),
            value: 9,
            max: 8
        })
    );
    // Unbounded symbols take any value.
    assert!(g.bind(&DimBinding::new().with("batch", 1 << 20)).is_ok());
    // Names that the graph does not use are ignored.
    assert_eq!(g.bind(&DimBinding::new().with("other", 1)), Ok(g.clone()));
}
