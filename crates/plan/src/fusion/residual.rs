//! Residual norm: `Add → LayerNorm/RMSNorm` becomes one step. When the sum has other readers
//! (the residual stream of the next block) the step also writes it — the "tee" — and the step
//! must then run before every other reader of the sum.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::{BinaryOp, Op};

pub fn run(st: &mut FusionState<'_>) {
    for norm in 0..st.graph.len() {
        if !st.is_free(norm) || !matches!(st.node(norm).op, Op::Norm { .. }) {
            continue;
        }
        let add = st.input(norm, 0);
        if !st.is_free(add)
            || !matches!(
                st.node(add).op,
                Op::Binary {
                    kind: BinaryOp::Add
                }
            )
        {
            continue;
        }
        // Only a same-shape add: a broadcast add is not a residual connection.
        let shape = &st.node(norm).shape;
        let same = (0..2).all(|k| st.node(st.input(add, k)).shape.same_extents(shape));
        if !same {
            continue;
        }
        let others: Vec<usize> = st.consumers[add]
            .iter()
            .copied()
            .filter(|&c| c != norm)
            .collect();
        let tee = !others.is_empty() || st.is_output[add];
        // The fused step runs where the sum is needed first; the norm's parameters must exist
        // by then.
        if let Some(&first) = others.iter().min() {
            let params_ready = st.node(norm).inputs[1..].iter().all(|p| p.0 < first);
            if !params_ready {
                continue;
            }
        }
        let (writes, internal) = if tee {
            (vec![add, norm], vec![])
        } else {
            (vec![norm], vec![add])
        };
        st.claim(Group {
            kind: StepKind::ResidualNorm { add, norm, tee },
            writes,
            internal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, DType, Graph};

    fn graph(tee: bool, broadcast: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [4, 8]).unwrap();
        let r = if broadcast {
            g.input("r", DType::F32, [8]).unwrap()
        } else {
            g.input("r", DType::F32, [4, 8]).unwrap()
        };
        let gamma = g.param("g", DType::F32, [8]).unwrap();
        let s = g.add_op(x, r).unwrap();
        if tee {
            // Another reader of the sum, before the norm in node order.
            let other = g.activation(Activation::Relu, s).unwrap();
            g.output(other).unwrap();
        }
        let y = g.rms_norm(s, Some(gamma), 1e-6).unwrap();
        g.output(y).unwrap();
        g
    }

    fn groups(g: &Graph) -> Vec<Group> {
        crate::fusion::groups_after(g, &[run])
    }

    #[test]
    fn fires_and_absorbs_the_sum() {
        let gs = groups(&graph(false, false));
        assert_eq!(gs.len(), 1);
        assert!(matches!(
            gs[0].kind,
            StepKind::ResidualNorm {
                add: 3,
                norm: 4,
                tee: false
            }
        ));
        assert_eq!(gs[0].internal, vec![3]);
    }

    #[test]
    fn tees_when_the_sum_has_other_readers() {
        let gs = groups(&graph(true, false));
        assert_eq!(gs.len(), 1);
        assert!(matches!(
            gs[0].kind,
            StepKind::ResidualNorm { tee: true, .. }
        ));
        assert_eq!(gs[0].writes, vec![3, 5]);
    }

    #[test]
    fn not_on_a_broadcast_add() {
        assert!(groups(&graph(false, true)).is_empty());
    }

    #[test]
    fn not_when_the_params_come_after_the_other_reader() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [2, 4]).unwrap();
        let s = g.add_op(x, x).unwrap();
        let other = g.activation(Activation::Exp, s).unwrap();
        // gamma is computed after the other reader of the sum.
        let gamma = g
            .reduce(kiln_ir::ReduceOp::Sum, other, &[0], false)
            .unwrap();
        let y = g.rms_norm(s, Some(gamma), 1e-6).unwrap();
        g.output(y).unwrap();
        assert!(groups(&g).is_empty());
    }
}
