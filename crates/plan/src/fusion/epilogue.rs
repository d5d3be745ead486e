//! Matmul epilogue: `MatMul → Add(bias) → Activation` becomes one matmul step whose epilogue
//! adds the bias and applies the activation, so neither intermediate is written to memory.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::{BinaryOp, Op};

/// The bias operand of `add` if `add = matmul + bias` (either order) with `bias` shaped `[N]`.
fn bias_of(st: &FusionState<'_>, add: usize, matmul: usize) -> Option<usize> {
    if !matches!(
        st.node(add).op,
        Op::Binary {
            kind: BinaryOp::Add
        }
    ) {
        return None;
    }
    let (a, b) = (st.input(add, 0), st.input(add, 1));
    let bias = if a == matmul { b } else { a };
    if bias == matmul {
        return None;
    }
    let n = st.node(matmul).shape.dims().last()?.clone();
    let bs = &st.node(bias).shape;
    let ok = bs.rank() == 1
        && bs.dims()[0].same_extent(&n)
        && st.node(bias).dtype == st.node(matmul).dtype;
    ok.then_some(bias)
}

pub fn run(st: &mut FusionState<'_>) {
    for m in 0..st.graph.len() {
        if !st.is_free(m) || !matches!(st.node(m).op, Op::MatMul { .. }) {
            continue;
        }
        let Some(add) = st.sole_consumer(m).filter(|&a| st.is_free(a)) else {
            continue;
        };
        if bias_of(st, add, m).is_none() {
            continue;
        }
        let act = st
            .sole_consumer(add)
            .filter(|&a| st.is_free(a) && matches!(st.node(a).op, Op::Activation { .. }));
        let last = act.unwrap_or(add);
        let mut internal = vec![m];
        if act.is_some() {
            internal.push(add);
        }
        st.claim(Group {
            kind: StepKind::MatmulEpilogue {
                matmul: m,
                bias_add: Some(add),
                act,
            },
            writes: vec![last],
            internal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, DType, Graph};

    fn graph(with_act: bool, extra_reader: bool, vector_bias: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [4, 8]).unwrap();
        let w = g.param("w", DType::F32, [8, 16]).unwrap();
        let b = if vector_bias {
            g.param("b", DType::F32, [16]).unwrap()
        } else {
            g.param("b", DType::F32, [4, 16]).unwrap()
        };
        let m = g.matmul(x, w).unwrap();
        let y = g.add_op(m, b).unwrap();
        let y = if with_act {
            g.activation(Activation::Gelu, y).unwrap()
        } else {
            y
        };
        g.output(y).unwrap();
        if extra_reader {
            let z = g.activation(Activation::Relu, m).unwrap();
            g.output(z).unwrap();
        }
        g
    }

    #[test]
    fn fires_with_and_without_activation() {
        for act in [false, true] {
            let g = graph(act, false, true);
            let mut st = FusionState::new(&g);
            run(&mut st);
            assert_eq!(st.groups.len(), 1);
            assert_eq!(st.groups[0].writes, vec![if act { 5 } else { 4 }]);
        }
    }

    #[test]
    fn not_when_the_product_has_another_reader_or_the_bias_is_not_a_vector() {
        for (extra, vector) in [(true, true), (false, false)] {
            let g = graph(true, extra, vector);
            let mut st = FusionState::new(&g);
            run(&mut st);
            assert!(st.groups.is_empty());
        }
    }
}
