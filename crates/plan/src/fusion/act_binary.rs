//! Activation into binary: `binary(act(a), b)` becomes one elementwise step that applies the
//! activation to `a` as it reads it, e.g. SwiGLU's `silu(gate) * up`, so the activated tensor is
//! never written. For a commutative op the activation may be either operand.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::{BinaryOp, Op};

fn commutative(op: BinaryOp) -> bool {
    matches!(
        op,
        BinaryOp::Add | BinaryOp::Mul | BinaryOp::Max | BinaryOp::Min
    )
}

pub fn run(st: &mut FusionState<'_>) {
    for bin in 0..st.graph.len() {
        let Op::Binary { kind } = st.node(bin).op else {
            continue;
        };
        if !st.is_free(bin) {
            continue;
        }
        // Operand 0 first; operand 1 only for a commutative op (the step swaps them).
        let candidates: &[usize] = if commutative(kind) { &[0, 1] } else { &[0] };
        for &k in candidates {
            let act = st.input(bin, k);
            let other = st.input(bin, 1 - k);
            let fusable = matches!(st.node(act).op, Op::Activation { .. })
                && act != other
                && st.is_free(act)
                && st.sole_consumer(act) == Some(bin)
                // The activated operand must have the output's shape (no broadcast of it).
                && st.node(act).shape.same_extents(&st.node(bin).shape);
            if fusable {
                st.claim(Group {
                    kind: StepKind::ActBinary {
                        act,
                        binary: bin,
                        swap: k == 1,
                    },
                    writes: vec![bin],
                    internal: vec![act],
                });
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{Activation, DType, Graph};

    fn groups(g: &Graph) -> Vec<Group> {
        crate::fusion::groups_after(g, &[run])
    }

    #[test]
    fn fires_on_swiglu_either_side() {
        for act_first in [true, false] {
            let mut g = Graph::new();
            let gate = g.input("gate", DType::F32, [2, 8]).unwrap();
            let up = g.input("up", DType::F32, [2, 8]).unwrap();
            let s = g.activation(Activation::Silu, gate).unwrap();
            let y = if act_first {
                g.mul(s, up).unwrap()
            } else {
                g.mul(up, s).unwrap()
            };
            g.output(y).unwrap();
            let gs = groups(&g);
            assert_eq!(gs.len(), 1);
            assert!(
                matches!(gs[0].kind, StepKind::ActBinary { act: 2, binary: 3, swap } if swap != act_first)
            );
        }
    }

    #[test]
    fn not_when_the_activation_is_read_elsewhere_broadcast_or_second_of_a_sub() {
        let mut g = Graph::new();
        let a = g.input("a", DType::F32, [2, 8]).unwrap();
        let row = g.input("row", DType::F32, [8]).unwrap();
        let s = g.activation(Activation::Relu, a).unwrap();
        let y = g.mul(s, a).unwrap();
        g.output(y).unwrap();
        g.output(s).unwrap(); // a second reader
        let r = g.activation(Activation::Exp, row).unwrap();
        let z = g.add_op(a, r).unwrap(); // the activated operand is broadcast
        g.output(z).unwrap();
        let t = g.activation(Activation::Tanh, a).unwrap();
        let w = g.binary(BinaryOp::Sub, a, t).unwrap(); // second operand of a sub
        g.output(w).unwrap();
        assert!(groups(&g).is_empty());
    }
}
