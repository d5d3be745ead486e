//! Property tests of numpy broadcasting in shape inference: `broadcast_shapes` and the graph
//! builders of Binary, Compare and Where.

use kiln_ir::{
    broadcast_shapes, BinaryOp, CompareOp, DType, Dim, Graph, InferError, IrError, Shape,
};
use proptest::prelude::*;

const BINARY_OPS: [BinaryOp; 7] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Max,
    BinaryOp::Min,
    BinaryOp::Pow,
];

const COMPARE_OPS: [CompareOp; 6] = [
    CompareOp::Eq,
    CompareOp::Ne,
    CompareOp::Lt,
    CompareOp::Le,
    CompareOp::Gt,
    CompareOp::Ge,
];

/// A dim of an output shape: a small static size (1 included) or one of two symbols. A symbol
/// always has the same bound, as in a real graph.
fn dim() -> impl Strategy<Value = Dim> {
    prop_oneof![
        4 => (1usize..=5).prop_map(Dim::Static),
        1 => Just(Dim::bounded("seq", 16)),
        1 => Just(Dim::sym("batch")),
    ]
}

/// `n` shapes that broadcast together to a known shape, and that shape.
///
/// Built from an output shape: on each axis a nonempty subset of the operands carries the
/// output dim and the others have a 1 there; then each operand drops some of its leading 1s.
fn compatible(n: usize) -> impl Strategy<Value = (Shape, Vec<Shape>)> {
    (
        prop::collection::vec(dim(), 0..=4),
        prop::collection::vec(1usize..(1 << n), 4),
        prop::collection::vec(0usize..8, n),
    )
        .prop_map(move |(out, carriers, drops)| {
            let rank = out.len();
            let mut shapes = Vec::with_capacity(n);
            for (j, drop) in drops.iter().enumerate() {
                let dims: Vec<Dim> = out
                    .iter()
                    .enumerate()
                    .map(|(i, d)| {
                        if carriers[i] & (1 << j) != 0 {
                            d.clone()
                        } else {
                            Dim::Static(1)
                        }
                    })
                    .collect();
                let leading_ones = dims.iter().take_while(|d| **d == Dim::Static(1)).count();
                let drop = drop % (leading_ones + 1);
                shapes.push(Shape(dims[drop..].to_vec()));
            }
            // Axes that every operand dropped were 1 everywhere: the result omits them.
            let out_rank = shapes.iter().map(Shape::rank).max().unwrap_or(0);
            (Shape(out[rank - out_rank..].to_vec()), shapes)
        })
}

/// Two dims that cannot be broadcast together.
fn clashing_dims() -> impl Strategy<Value = (Dim, Dim)> {
    prop_oneof![
        // Two different static sizes, neither 1.
        (2usize..=6, 1usize..=4).prop_map(|(p, d)| (Dim::Static(p), Dim::Static(p + d))),
        // A symbol against a static size other than 1.
        (2usize..=6).prop_map(|p| (Dim::bounded("seq", 16), Dim::Static(p))),
        // Two different symbols.
        Just((Dim::bounded("seq", 16), Dim::sym("batch"))),
    ]
}

/// Two incompatible shapes: equal (or 1) everywhere but on one axis, where they clash.
fn incompatible() -> impl Strategy<Value = (Shape, Shape)> {
    (
        prop::collection::vec(dim(), 1..=4),
        any::<prop::sample::Index>(),
        clashing_dims(),
        prop::collection::vec(any::<bool>(), 4),
        any::<bool>(),
    )
        .prop_map(|(base, axis, (p, q), ones, swap)| {
            let axis = axis.index(base.len());
            let mut a = base.clone();
            let mut b = base;
            for (i, one) in ones.iter().enumerate().take(a.len()) {
                // Elsewhere, a may hold a 1 (which still broadcasts).
                if i != axis && *one {
                    a[i] = Dim::Static(1);
                }
            }
            a[axis] = p;
            b[axis] = q;
            // b may lose the leading axes before the clash (a missing axis acts like a 1).
            let b = Shape(b[axis.min(1)..].to_vec());
            let a = Shape(a);
            if swap {
                (b, a)
            } else {
                (a, b)
            }
        })
}

fn shape_err_at(r: Result<kiln_ir::NodeId, IrError>, node: &str, op: &str) {
    match r {
        Err(IrError::Node {
            node: n,
            op: o,
            source: InferError::Shape(_),
        }) => {
            assert_eq!(n, node);
            assert_eq!(o, op);
        }
        other => panic!("expected a shape error at {node} ({op}), got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn broadcast_gives_the_constructed_shape((out, shapes) in compatible(2)) {
        let (a, b) = (&shapes[0], &shapes[1]);
        prop_assert_eq!(broadcast_shapes(a, b), Some(out.clone()));
        // Symmetric.
        prop_assert_eq!(broadcast_shapes(b, a), Some(out.clone()));
        // Broadcasting with itself or with a scalar changes nothing.
        prop_assert_eq!(broadcast_shapes(&out, &out), Some(out.clone()));
        prop_assert_eq!(broadcast_shapes(&out, &Shape::scalar()), Some(out.clone()));
        // The result broadcasts with each operand back to itself.
        prop_assert_eq!(broadcast_shapes(&out, a), Some(out.clone()));
        prop_assert_eq!(broadcast_shapes(b, &out), Some(out));
    }

    #[test]
    fn builders_infer_the_broadcast_shape(
        (out, shapes) in compatible(2),
        kind in 0usize..7,
        cmp in 0usize..6,
        dtype in prop::sample::select(vec![DType::F32, DType::F16, DType::I32]),
    ) {
        let mut g = Graph::new();
        let a = g.input("a", dtype, shapes[0].clone()).unwrap();
        let b = g.input("b", dtype, shapes[1].clone()).unwrap();

        let y = g.binary(BINARY_OPS[kind], a, b).unwrap();
        prop_assert_eq!(&g.node(y).unwrap().shape, &out);
        prop_assert_eq!(g.node(y).unwrap().dtype, dtype);
        // Operand order does not matter.
        let y = g.binary(BINARY_OPS[kind], b, a).unwrap();
        prop_assert_eq!(&g.node(y).unwrap().shape, &out);

        // Compare gives the same shape, as bool.
        let c = g.compare(COMPARE_OPS[cmp], a, b).unwrap();
        prop_assert_eq!(&g.node(c).unwrap().shape, &out);
        prop_assert_eq!(g.node(c).unwrap().dtype, DType::Bool);

        // Where with that bool condition picks between a and b: still the same shape.
        let w = g.where_(c, a, b).unwrap();
        prop_assert_eq!(&g.node(w).unwrap().shape, &out);
        prop_assert_eq!(g.node(w).unwrap().dtype, dtype);
        g.output(w).unwrap();
        prop_assert_eq!(g.validate(), Ok(()));
    }

    #[test]
    fn where_broadcasts_all_three((out, shapes) in compatible(3)) {
        let mut g = Graph::new();
        let cond = g.input("cond", DType::Bool, shapes[0].clone()).unwrap();
        let x = g.input("x", DType::F32, shapes[1].clone()).unwrap();
        let y = g.input("y", DType::F32, shapes[2].clone()).unwrap();
        let w = g.where_(cond, x, y).unwrap();
        prop_assert_eq!(&g.node(w).unwrap().shape, &out);
        prop_assert_eq!(g.node(w).unwrap().dtype, DType::F32);
        // The condition may come last in the broadcast order without changing the result.
        let mut expected = broadcast_shapes(&shapes[1], &shapes[2]).unwrap();
        expected = broadcast_shapes(&expected, &shapes[0]).unwrap();
        prop_assert_eq!(expected, out);
    }

    #[test]
    fn incompatible_shapes_are_rejected((a, b) in incompatible(), kind in 0usize..7) {
        prop_assert_eq!(broadcast_shapes(&a, &b), None);
        prop_assert_eq!(broadcast_shapes(&b, &a), None);

        let mut g = Graph::new();
        let x = g.input("a", DType::F32, a).unwrap();
        let y = g.input("b", DType::F32, b).unwrap();
        shape_err_at(g.binary(BINARY_OPS[kind], x, y), "%2", "binary");
        shape_err_at(g.compare(CompareOp::Lt, y, x), "%2", "compare");
        let cond = g.input("cond", DType::Bool, Shape::scalar()).unwrap();
        let s = g.input("s", DType::F32, Shape::scalar()).unwrap();
        // %2 was never added: the failed builders left the graph unchanged.
        prop_assert_eq!(g.len(), 4);
        shape_err_at(g.where_(cond, x, y), "%4", "where");
        // Any input may be the one that clashes, the condition included.
        shape_err_at(g.where_(x, y, s), "%4", "where");
        shape_err_at(g.where_(y, s, x), "%4", "where");
    }
}

#[test]
fn broadcast_by_hand() {
    let s = |d: &[usize]| Shape::of(d);
    // [4, 1, 5] and [3, 1] align from the right: [4, 3, 5].
    assert_eq!(
        broadcast_shapes(&s(&[4, 1, 5]), &s(&[3, 1])),
        Some(s(&[4, 3, 5]))
    );
    // A 1 stretches to a symbol; equal symbols match.
    let seq = Dim::bounded("seq", 8);
    let a = Shape(vec![Dim::Static(1), seq.clone()]);
    let b = Shape(vec![Dim::Static(2), Dim::Static(1)]);
    assert_eq!(
        broadcast_shapes(&a, &b),
        Some(Shape(vec![Dim::Static(2), seq.clone()]))
    );
    assert_eq!(
        broadcast_shapes(&Shape(vec![seq.clone()]), &Shape(vec![seq.clone()])),
        Some(Shape(vec![seq]))
    );
    // Scalars with scalars.
    assert_eq!(
        broadcast_shapes(&Shape::scalar(), &Shape::scalar()),
        Some(Shape::scalar())
    );
}
