//! Matmul into a residual norm: a matmul without activation (a plain or bias-fused `MatMul`,
//! or a matmul-epilogue group with only a bias) whose product only the sum of a residual-norm
//! group reads joins that group. Where the matmul splits k among workgroups, the norm then adds
//! the chunks' partial products and the bias as it reads them, instead of a sum dispatch
//! writing the product for the norm to read again (a transformer's FFN down projection before
//! its residual LayerNorm). The product keeps its slot: at extents where the matmul does not
//! split, the matmul writes it and the norm reads it as before.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::Op;

pub fn run(st: &mut FusionState<'_>) {
    for product in 0..st.graph.len() {
        let Some((matmul, bias_add, own_group)) = matmul_of(st, product) else {
            continue;
        };
        let Some(add) = st.sole_consumer(product) else {
            continue;
        };
        let Some(norm_group) = st.claimed[add] else {
            continue;
        };
        let StepKind::ResidualNorm { add: a, norm, tee } = st.groups[norm_group].kind else {
            continue;
        };
        if a != add {
            continue;
        }
        let mut writes = vec![product];
        let mut internal = Vec::new();
        if let Some(g) = own_group {
            internal.extend(st.take(g).internal);
        }
        let residual = st.take(norm_group);
        writes.extend(residual.writes);
        internal.extend(residual.internal);
        st.claim(Group {
            kind: StepKind::MatmulResidualNorm {
                matmul,
                bias_add,
                add,
                norm,
                tee,
            },
            writes,
            internal,
        });
    }
}

/// The matmul (and its bias add) whose product is node `product`, without activation, with
/// the group that holds it if any: a free `MatMul` or `FusedMatMulBiasAct`, or the last node
/// of a matmul-epilogue group with only a bias.
fn matmul_of(
    st: &FusionState<'_>,
    product: usize,
) -> Option<(usize, Option<usize>, Option<usize>)> {
    match st.claimed[product] {
        None => match st.node(product).op {
            Op::MatMul { .. } | Op::FusedMatMulBiasAct { act: None, .. } => {
                Some((product, None, None))
            }
            _ => None,
        },
        Some(g) => match st.groups[g].kind {
            StepKind::MatmulEpilogue {
                matmul,
                bias_add: Some(add),
                act: None,
            } if add == product => Some((matmul, Some(add), Some(g))),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::{epilogue, groups_after, residual};
    use kiln_ir::{Activation, DType, Graph};

    /// `x @ w (+ b) (act)` → `+ r` → LayerNorm; with `tee` the sum is an output too, with
    /// `spy` the product is.
    fn graph(bias: bool, act: bool, tee: bool, spy: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [4, 16]).unwrap();
        let r = g.input("r", DType::F32, [4, 8]).unwrap();
        let w = g.param("w", DType::F32, [16, 8]).unwrap();
        let mut y = g.matmul(x, w).unwrap();
        if bias {
            let b = g.param("b", DType::F32, [8]).unwrap();
            y = g.add_op(y, b).unwrap();
        }
        if act {
            y = g.activation(Activation::Relu, y).unwrap();
        }
        if spy {
            g.output(y).unwrap();
        }
        let s = g.add_op(r, y).unwrap();
        if tee {
            g.output(s).unwrap();
        }
        let n = g.layer_norm(s, None, None, 1e-5).unwrap();
        g.output(n).unwrap();
        g
    }

    fn groups(g: &Graph) -> Vec<Group> {
        groups_after(g, &[epilogue::run, residual::run, run])
    }

    #[test]
    fn a_bias_matmul_joins_the_residual_norm() {
        let gs = groups(&graph(true, false, false, false));
        assert_eq!(gs.len(), 1);
        // x, r, w, matmul 3, b, add 5, residual add 6, norm 7.
        assert_eq!(
            gs[0].kind,
            StepKind::MatmulResidualNorm {
                matmul: 3,
                bias_add: Some(5),
                add: 6,
                norm: 7,
                tee: false
            }
        );
        assert_eq!(gs[0].writes, vec![5, 7]);
        assert_eq!(gs[0].internal, vec![3, 6]);
    }

    #[test]
    fn a_plain_matmul_joins_and_the_tee_stays_written() {
        let gs = groups(&graph(false, false, true, false));
        assert_eq!(gs.len(), 1);
        assert_eq!(
            gs[0].kind,
            StepKind::MatmulResidualNorm {
                matmul: 3,
                bias_add: None,
                add: 4,
                norm: 5,
                tee: true
            }
        );
        assert_eq!(gs[0].writes, vec![3, 4, 5]);
    }

    #[test]
    fn not_with_an_activation_or_another_reader_of_the_product() {
        for g in [
            graph(true, true, false, false),
            graph(true, false, false, true),
        ] {
            let gs = groups(&g);
            assert!(gs
                .iter()
                .all(|g| !matches!(g.kind, StepKind::MatmulResidualNorm { .. })));
            assert!(gs
                .iter()
                .any(|g| matches!(g.kind, StepKind::ResidualNorm { .. })));
        }
    }
}
