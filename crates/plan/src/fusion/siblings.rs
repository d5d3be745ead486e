//! Sibling matmuls: plain matmuls that read the same input against their own quantized `[N, K]`
//! weights (a decoder's Q, K and V projections; its gate and up projections) become one step
//! that computes every product in one dispatch, each column range from its own weight into its
//! own output. At decode, each of those matmuls is a GEMV whose cost is mostly its launch and
//! its latency, so merging them saves whole dispatches.
//!
//! A gate/up pair whose products are read only by `act(gate) * up` (SwiGLU, found by the
//! activation-binary pass) goes further: the step writes the gated product itself, so neither
//! product is stored.

use super::{FusionState, Group};
use crate::step::{Glu, StepKind};
use kiln_ir::{BinaryOp, Op};

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

/// `act(gate) * up` over two sibling products: the sibling step replacing the activation-binary
/// group at `idx`, if its gate and up are sibling products read only by it.
fn glu_of(st: &FusionState<'_>, idx: usize) -> Option<Group> {
    // A group another pass took apart keeps its kind but covers nothing.
    if st.groups[idx].writes.is_empty() {
        return None;
    }
    let StepKind::ActBinary { act, binary, swap } = st.groups[idx].kind else {
        return None;
    };
    if !matches!(
        st.node(binary).op,
        Op::Binary {
            kind: BinaryOp::Mul
        }
    ) {
        return None;
    }
    let gate = st.input(act, 0);
    let up = st.input(binary, usize::from(!swap));
    let siblings = gate != up
        && candidate(st, gate)
        && candidate(st, up)
        && st.input(gate, 0) == st.input(up, 0)
        && st.sole_consumer(gate) == Some(act)
        && st.sole_consumer(up) == Some(binary)
        // The gated product has the products' shape (no broadcast).
        && st.node(gate).shape.same_extents(&st.node(binary).shape)
        && st.node(up).shape.same_extents(&st.node(binary).shape);
    siblings.then(|| Group {
        kind: StepKind::SiblingMatmuls {
            matmuls: vec![gate, up],
            glu: Some(Glu { act, binary }),
            prologue: None,
        },
        writes: vec![binary],
        internal: vec![gate, up, act],
    })
}

pub fn run(st: &mut FusionState<'_>) {
    for idx in 0..st.groups.len() {
        if let Some(group) = glu_of(st, idx) {
            st.take(idx);
            st.claim(group);
        }
    }
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
                    glu: None,
                    prologue: None,
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
        crate::fusion::groups_after(g, &[run])
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
                matmuls: ids.clone(),
                glu: None,
                prologue: None,
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

    #[test]
    fn swiglu_over_siblings_writes_the_gated_product() {
        use kiln_ir::Activation;
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [1, 64]).unwrap();
        let wg = g.param("gate", DType::Q4_1, [96, 64]).unwrap();
        let wu = g.param("up", DType::Q4_1, [96, 64]).unwrap();
        let gate = g.matmul_t(x, wg).unwrap();
        let up = g.matmul_t(x, wu).unwrap();
        let s = g.activation(Activation::Silu, gate).unwrap();
        let y = g.mul(up, s).unwrap(); // the activation second: the group swaps
        g.output(y).unwrap();
        let mut st = FusionState::new(&g);
        crate::fusion::act_binary::run(&mut st);
        run(&mut st);
        let live: Vec<&Group> = st
            .groups
            .iter()
            .filter(|gr| !gr.writes.is_empty())
            .collect();
        assert_eq!(live.len(), 1);
        assert_eq!(
            live[0].kind,
            StepKind::SiblingMatmuls {
                matmuls: vec![gate.0, up.0],
                glu: Some(Glu {
                    act: s.0,
                    binary: y.0
                }),
                prologue: None,
            }
        );
        assert_eq!(live[0].writes, vec![y.0]);
    }
}
