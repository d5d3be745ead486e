//! Norm prologue: an RMSNorm read only by one sibling-matmul step (Q/K/V, or gate/up with
//! SwiGLU) is computed by that step's dispatch while it reads its input rows, instead of by a
//! step of its own: each workgroup sums the squares of its rows (a decoder's one 576-wide row
//! at decode), scales its dot products by `1 / sqrt(mean + eps)` and multiplies the input by
//! `gamma` as it loads it. A residual sum feeding the norm (a residual-norm group) comes along:
//! the dispatch adds the two tensors as it reads them and, when the sum has other readers,
//! writes it too. At decode this removes two of a layer's nine dispatches.
//!
//! Only RMSNorm with at most a `gamma` (no `beta`) folds this way, and `gamma` must be a param
//! or constant, so the fused step cannot depend on its own output.

use super::FusionState;
use crate::step::{NormPrologue, StepKind};
use kiln_ir::{Affine, NormKind, Op};

pub fn run(st: &mut FusionState<'_>) {
    for idx in 0..st.groups.len() {
        let StepKind::SiblingMatmuls {
            ref matmuls,
            glu,
            prologue: None,
        } = st.groups[idx].kind
        else {
            continue;
        };
        if st.groups[idx].writes.is_empty() {
            continue;
        }
        let matmuls = matmuls.clone();
        let Some(&first) = matmuls.first() else {
            continue;
        };
        let norm = st.input(first, 0);
        if !foldable(st, norm, &matmuls) {
            continue;
        }
        let mut group = st.groups[idx].clone();
        let prologue = match st.claimed[norm] {
            None => NormPrologue {
                norm,
                add: None,
                tee: false,
            },
            Some(r) => match st.groups[r].kind {
                StepKind::ResidualNorm { add, norm: n, tee } if n == norm => NormPrologue {
                    norm,
                    add: Some(add),
                    tee,
                },
                _ => continue,
            },
        };
        if let Some(r) = st.claimed[norm] {
            st.take(r);
        }
        st.take(idx);
        group.internal.push(norm);
        match (prologue.add, prologue.tee) {
            (Some(add), true) => group.writes.push(add),
            (Some(add), false) => group.internal.push(add),
            (None, _) => {}
        }
        group.kind = StepKind::SiblingMatmuls {
            matmuls,
            glu,
            prologue: Some(prologue),
        };
        st.claim(group);
    }
}

/// Whether `norm` is an RMSNorm over the matmuls' K, with a param or constant `gamma` (or
/// none), read by those matmuls only.
fn foldable(st: &FusionState<'_>, norm: usize, matmuls: &[usize]) -> bool {
    let node = st.node(norm);
    let Op::Norm {
        kind: NormKind::Rms,
        affine,
        ..
    } = node.op
    else {
        return false;
    };
    let gamma_ok = match affine {
        Affine::None => true,
        Affine::Scale => st.node(st.input(norm, 1)).op.is_source(),
        Affine::ScaleShift => false,
    };
    gamma_ok
        && !st.is_output[norm]
        && st.consumers[norm].iter().all(|c| matmuls.contains(c))
        && matmuls.iter().all(|&m| st.input(m, 0) == norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::Group;
    use kiln_ir::{DType, Graph};

    /// `x (+ r)` → RMSNorm → Q/K/V-like siblings; with `tee`, the sum is also an output.
    fn graph(residual: bool, tee: bool, beta: bool) -> (Graph, Vec<usize>) {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1, 3, 64]).unwrap();
        let gamma = g.param("g", DType::F32, [64]).unwrap();
        let mut src = x;
        if residual {
            let r = g.input("r", DType::F32, [1, 3, 64]).unwrap();
            src = g.add_op(x, r).unwrap();
            if tee {
                g.output(src).unwrap();
            }
        }
        let n = if beta {
            let b = g.param("b", DType::F32, [64]).unwrap();
            g.layer_norm(src, Some(gamma), Some(b), 1e-5).unwrap()
        } else {
            g.rms_norm(src, Some(gamma), 1e-5).unwrap()
        };
        let mut products = Vec::new();
        for (i, rows) in [64, 32, 32].into_iter().enumerate() {
            let w = g.param(format!("w{i}"), DType::Q8_0, [rows, 64]).unwrap();
            let y = g.matmul_t(n, w).unwrap();
            g.output(y).unwrap();
            products.push(y.0);
        }
        (g, products)
    }

    fn live_groups(g: &Graph) -> Vec<Group> {
        use crate::fusion::{groups_after, residual, siblings};
        groups_after(g, &[residual::run, siblings::run, run])
    }

    #[test]
    fn a_plain_norm_folds_into_the_siblings() {
        let (g, products) = graph(false, false, false);
        let gs = live_groups(&g);
        assert_eq!(gs.len(), 1);
        let norm = 2;
        assert_eq!(
            gs[0].kind,
            StepKind::SiblingMatmuls {
                matmuls: products.clone(),
                glu: None,
                prologue: Some(NormPrologue {
                    norm,
                    add: None,
                    tee: false
                }),
            }
        );
        assert_eq!(gs[0].writes, products);
        assert_eq!(gs[0].internal, vec![norm]);
    }

    #[test]
    fn a_residual_sum_comes_along_and_is_written_when_read_elsewhere() {
        for tee in [false, true] {
            let (g, products) = graph(true, tee, false);
            let gs = live_groups(&g);
            assert_eq!(gs.len(), 1, "tee {tee}");
            let (add, norm) = (3, 4);
            let StepKind::SiblingMatmuls {
                prologue: Some(p), ..
            } = gs[0].kind
            else {
                panic!("no prologue: {:?}", gs[0].kind);
            };
            assert_eq!(
                p,
                NormPrologue {
                    norm,
                    add: Some(add),
                    tee
                }
            );
            let mut writes = products.clone();
            if tee {
                writes.push(add);
                assert_eq!(gs[0].internal, vec![norm]);
            } else {
                assert_eq!(gs[0].internal, vec![norm, add]);
            }
            assert_eq!(gs[0].writes, writes);
        }
    }

    #[test]
    fn not_for_layer_norm_or_a_norm_read_elsewhere() {
        // LayerNorm (mean and beta) does not fold.
        let (g, _) = graph(false, false, true);
        let gs = live_groups(&g);
        assert!(gs.iter().all(|gr| !matches!(
            gr.kind,
            StepKind::SiblingMatmuls {
                prologue: Some(_),
                ..
            }
        )));
        assert!(
            gs.iter().any(|gr| gr.writes.len() == 3),
            "the siblings formed"
        );
        // The norm is also an output: it must be stored, so it stays a step of its own.
        let mut g = graph(false, false, false).0;
        g.output(kiln_ir::NodeId(2)).unwrap();
        let gs = live_groups(&g);
        assert!(gs.iter().all(|gr| !matches!(
            gr.kind,
            StepKind::SiblingMatmuls {
                prologue: Some(_),
                ..
            }
        )));
        assert!(gs.iter().any(|gr| gr.writes.len() == 3));
    }
}
