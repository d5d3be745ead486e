//! Sibling matmuls: plain matmuls that read the same input against their own quantized `[N, K]`
//! weights (a decoder's Q, K and V projections; its gate and up projections) become one step
//! that computes every product in one dispatch, each column range from its own weight into its
//! own output. At decode, each of those matmuls is a GEMV whose cost is mostly its launch and
//! its latency, so merging them saves whole dispatches.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::Op;

/// The most products one step computes (the kernel's column segments).
pub const MAX_SIBLINGS: usize = 4;

/// Whether `i` is a free plain `a × wᵀ` with a quantized 2-D param `w`.
fn candidate(st: &FusionState<'_>, i: usize) -> bool {
    let node = st.node(i);
    if !matches!(node.op, Op::MatMul { transpose_b: true }) || !st.is_free(i) {
        return false;
    }
    let w = st.node(st.input(i, 1));
    // A param, so no sibling's weight can depend on another sibling's product.
    matches!(w.op, Op::Param { .. }) && w.dtype.is_quantized() && w.shape.rank() == 2
}

pub fn run(st: &mut FusionState<'_>) {
    for a in 0..st.graph.len() {
        let siblings: Vec<usize> = st.consumers[a]
            .iter()
            .copied()
            .filter(|&c| st.input(c, 0) == a && candidate(st, c))
            .collect();
        for chunk in siblings.chunks(MAX_SIBLINGS) {
            if chunk.len() < 2 {
                continue;
            }
            st.claim(Group {
                kind: StepKind::SiblingMatmuls {
                    matmuls: chunk.to_vec(),
                },
                writes: chunk.to_vec(),
                internal: Vec::new(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Graph};

    fn groups(g: &Graph) -> Vec<Group> {
        let mut st = FusionState::new(g);
        run(&mut st);
        st.groups
    }

    #[test]
    fn q_k_v_and_gate_up_share_a_step_each() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1, 64]).unwrap();
        let q = g.param("q", DType::Q4_1, [64, 64]).unwrap();
        let k = g.param("k", DType::Q4_1, [32, 64]).unwrap();
        let v = g.param("v", DType::Q8_0, [32, 64]).unwrap();
        let products: Vec<_> = [q, k, v]
            .iter()
            .map(|&w| g.matmul_t(x, w).unwrap())
            .collect();
        for p in &products {
            g.output(*p).unwrap();
        }
        let gs = groups(&g);
        assert_eq!(gs.len(), 1);
        let ids: Vec<usize> = products.iter().map(|p| p.0).collect();
        assert_eq!(gs[0].writes, ids);
        assert_eq!(
            gs[0].kind,
            StepKind::SiblingMatmuls {
                matmuls: ids.clone()
            }
        );
    }

    #[test]
    fn not_for_f32_weights_computed_weights_a_lone_matmul_or_the_other_operand() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1, 64]).unwrap();
        let wf = g.param("wf", DType::F32, [64, 64]).unwrap();
        let wq = g.param("wq", DType::Q4_0, [64, 64]).unwrap();
        let a = g.matmul_t(x, wf).unwrap(); // f32 weight
        let b = g.matmul_t(x, wq).unwrap(); // the only quantized one reading x
        let c = g.matmul_t(b, wf).unwrap(); // reads b as A, not a sibling of anything
        for n in [a, b, c] {
            g.output(n).unwrap();
        }
        assert!(groups(&g).is_empty());
    }

    #[test]
    fn more_than_four_split_into_steps() {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [2, 32]).unwrap();
        for i in 0..6 {
            let w = g.param(format!("w{i}"), DType::Q8_0, [8, 32]).unwrap();
            let y = g.matmul_t(x, w).unwrap();
            g.output(y).unwrap();
        }
        let sizes: Vec<usize> = groups(&g).iter().map(|gr| gr.writes.len()).collect();
        assert_eq!(sizes, [4, 2]);
    }
}
