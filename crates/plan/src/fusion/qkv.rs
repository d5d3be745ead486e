//! QKV split-write: a matmul (with bias, no activation) read only by three last-axis narrows of
//! equal width at columns 0, w and 2w writes the three narrows itself, from one dispatch.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::Op;

/// The three narrows of `o` ordered by start, if `o` is read exactly by a last-axis split in
/// three equal parts.
fn three_way_split(st: &FusionState<'_>, o: usize) -> Option<[usize; 3]> {
    if st.is_output[o] || st.consumers[o].len() != 3 {
        return None;
    }
    let rank = st.node(o).shape.rank();
    let n = st.node(o).shape.dims().last()?.as_static()?;
    // A zero-width projection has nothing to split (and w = 0 below would divide by zero).
    if n == 0 || n % 3 != 0 {
        return None;
    }
    let w = n / 3;
    let mut parts = [usize::MAX; 3];
    for &c in &st.consumers[o] {
        match st.node(c).op {
            Op::Narrow { axis, start, len } if axis + 1 == rank && len == w && start % w == 0 => {
                let slot = &mut parts[start / w];
                if *slot != usize::MAX || !st.is_free(c) {
                    return None;
                }
                *slot = c;
            }
            _ => return None,
        }
    }
    Some(parts)
}

pub fn run(st: &mut FusionState<'_>) {
    for o in 0..st.graph.len() {
        // The producer: an epilogue group without activation, a fused matmul without
        // activation, or a plain matmul.
        let (matmul, bias_add, group) = match (st.claimed[o], &st.node(o).op) {
            (Some(gi), _) => match st.groups[gi].kind {
                StepKind::MatmulEpilogue {
                    matmul,
                    bias_add,
                    act: None,
                } if st.groups[gi].writes == [o] => (matmul, bias_add, Some(gi)),
                _ => continue,
            },
            (None, Op::FusedMatMulBiasAct { act: None, .. }) | (None, Op::MatMul { .. }) => {
                (o, None, None)
            }
            _ => continue,
        };
        let Some(outputs) = three_way_split(st, o) else {
            continue;
        };
        let mut internal = vec![o];
        if let Some(gi) = group {
            internal = st.take(gi).internal;
            internal.push(o);
        }
        st.claim(Group {
            kind: StepKind::QkvSplit {
                matmul,
                bias_add,
                outputs,
            },
            writes: outputs.to_vec(),
            internal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fusion::epilogue;
    use kiln_ir::{Activation, DType, Graph};

    /// x·W + b split three ways; `act` adds an activation, `fourth` a fourth reader, `skew`
    /// unequal widths.
    fn graph(act: bool, fourth: bool, skew: bool) -> Graph {
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [2, 5, 8]).unwrap();
        let w = g.param("w", DType::F32, [24, 8]).unwrap();
        let b = g.param("b", DType::F32, [24]).unwrap();
        let a = act.then_some(Activation::Gelu);
        let y = g.fused_matmul_bias_act(x, w, Some(b), a, true).unwrap();
        let (w0, w1) = if skew { (6, 10) } else { (8, 8) };
        let q = g.narrow(y, 2, 0, w0).unwrap();
        let k = g.narrow(y, 2, w0, w1).unwrap();
        let v = g.narrow(y, 2, w0 + w1, 24 - w0 - w1).unwrap();
        for n in [q, k, v] {
            g.output(n).unwrap();
        }
        if fourth {
            let r = g.activation(Activation::Relu, y).unwrap();
            g.output(r).unwrap();
        }
        g
    }

    fn groups(g: &Graph) -> Vec<Group> {
        crate::fusion::groups_after(g, &[epilogue::run, run])
    }

    #[test]
    fn fires_on_an_even_three_way_split() {
        let gs = groups(&graph(false, false, false));
        assert_eq!(gs.len(), 1);
        assert_eq!(gs[0].writes, vec![4, 5, 6]);
        assert_eq!(gs[0].internal, vec![3]);
    }

    #[test]
    fn not_with_an_activation_a_fourth_reader_or_unequal_parts() {
        for (act, fourth, skew) in [
            (true, false, false),
            (false, true, false),
            (false, false, true),
        ] {
            assert!(
                groups(&graph(act, fourth, skew)).is_empty(),
                "{act} {fourth} {skew}"
            );
        }
    }

    #[test]
    fn extends_an_epilogue_group() {
        // MatMul + Add(bias) first fuse as an epilogue, then the split absorbs it.
        let mut g = Graph::new();
        let x = g.input("x", DType::F32, [3, 4]).unwrap();
        let w = g.param("w", DType::F32, [4, 9]).unwrap();
        let b = g.param("b", DType::F32, [9]).unwrap();
        let m = g.matmul(x, w).unwrap();
        let y = g.add_op(m, b).unwrap();
        for i in 0..3 {
            let n = g.narrow(y, 1, 3 * i, 3).unwrap();
            g.output(n).unwrap();
        }
        let gs = groups(&g);
        assert_eq!(gs.len(), 1);
        assert!(matches!(
            gs[0].kind,
            StepKind::QkvSplit {
                matmul: 3,
                bias_add: Some(4),
                ..
            }
        ));
        assert_eq!(gs[0].internal, vec![3, 4]);
    }
}
