//! Horizontal batching: independent ops of one kind whose kernel can run several of them as
//! jobs of one dispatch. A decoder rotates Q and K with the same positions, and writes its new
//! keys and values into the two caches at the same position: two dispatches each, one after
//! batching. Neither op of a batch reads the other, so running them together changes nothing.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::Op;

/// Ropes per batch (`rope.wgsl` runs two jobs).
pub const MAX_ROPES: usize = 2;
/// Row updates per batch (`update_rows` runs up to four jobs).
pub const MAX_UPDATES: usize = 4;

/// What must agree for two nodes to share a dispatch, or `None` if `i` never batches.
fn batch_key(st: &FusionState<'_>, i: usize) -> Option<(Op, Vec<usize>, String)> {
    let node = st.node(i);
    match &node.op {
        // Same attributes, the same position input (the offset), the same sequence length.
        Op::Rope { layout, .. } => {
            let (_, sa, _, _) = layout.axes();
            let seq = node.shape.dims().get(sa).map(|d| d.to_string())?;
            Some((
                node.op.clone(),
                node.inputs[1..].iter().map(|n| n.0).collect(),
                seq,
            ))
        }
        // The same start, and equal shapes of dest and update.
        Op::UpdateRows { .. } => {
            let update = st.node(st.input(i, 1));
            let shapes = format!("{} {}", node.shape, update.shape);
            Some((node.op.clone(), vec![st.input(i, 2)], shapes))
        }
        _ => None,
    }
}

fn limit(op: &Op) -> usize {
    match op {
        Op::Rope { .. } => MAX_ROPES,
        _ => MAX_UPDATES,
    }
}

/// Whether the value of node `from` needs any of `targets` first, once fused steps are taken
/// into account: a node claimed by a step is only available when its whole step has run, so
/// the walk goes through the inputs of every node of that step. A batch's members must be
/// independent in this sense: a decoder's layer-2 cache update depends on layer 1's through
/// the attention between them, and batching those two would need each before the other; a
/// path may also run through another batch or a residual-norm step.
fn needs(st: &FusionState<'_>, from: usize, targets: &[usize]) -> bool {
    let mut seen = vec![false; st.graph.len()];
    seen[from] = true;
    let mut stack = vec![from];
    while let Some(x) = stack.pop() {
        let step: Vec<usize> = match st.claimed[x] {
            Some(g) => st.groups[g]
                .writes
                .iter()
                .chain(&st.groups[g].internal)
                .copied()
                .collect(),
            None => vec![x],
        };
        for y in step {
            for i in &st.node(y).inputs {
                let i = i.0;
                if targets.contains(&i) {
                    return true;
                }
                if !seen[i] {
                    seen[i] = true;
                    stack.push(i);
                }
            }
        }
    }
    false
}

pub fn run(st: &mut FusionState<'_>) {
    for i in 0..st.graph.len() {
        if !st.is_free(i) {
            continue;
        }
        let Some(key) = batch_key(st, i) else {
            continue;
        };
        let mut members = vec![i];
        for j in i + 1..st.graph.len() {
            if members.len() == limit(&key.0) {
                break;
            }
            let fits = st.is_free(j)
                && batch_key(st, j).as_ref() == Some(&key)
                && !needs(st, j, &members)
                && !members.iter().any(|&m| needs(st, m, &[j]));
            if fits {
                members.push(j);
            }
        }
        if members.len() < 2 {
            continue;
        }
        st.claim(Group {
            kind: StepKind::Batched {
                nodes: members.clone(),
            },
            writes: members,
            internal: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{DType, Graph, HeadLayout, RopeStyle};

    fn rope(heads_dim: usize) -> Op {
        Op::Rope {
            head_dim: heads_dim,
            rotary_dims: heads_dim,
            theta: 10_000.0,
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bshd,
            position_offset: 0,
            has_offset_input: true,
        }
    }

    fn groups(g: &Graph) -> Vec<Group> {
        crate::fusion::groups_after(g, &[run])
    }

    #[test]
    fn q_and_k_ropes_and_the_two_cache_updates_batch() {
        let mut g = Graph::new();
        let pos = g.input("pos", DType::I32, [1]).unwrap();
        let q = g.input("q", DType::F32, [1, 1, 9, 64]).unwrap();
        let k = g.input("k", DType::F32, [1, 1, 3, 64]).unwrap();
        let v = g.input("v", DType::F32, [1, 1, 3, 64]).unwrap();
        let kc = g.input("kc", DType::F32, [1, 16, 3, 64]).unwrap();
        let vc = g.input("vc", DType::F32, [1, 16, 3, 64]).unwrap();
        let rq = g.add(rope(64), &[q, pos]).unwrap();
        let rk = g.add(rope(64), &[k, pos]).unwrap();
        let uk = g.update_rows(kc, rk, pos, 1).unwrap();
        let uv = g.update_rows(vc, v, pos, 1).unwrap();
        for n in [rq, uk, uv] {
            g.output(n).unwrap();
        }
        let gs = groups(&g);
        let kinds: Vec<&StepKind> = gs.iter().map(|g| &g.kind).collect();
        assert_eq!(
            kinds,
            [
                &StepKind::Batched {
                    nodes: vec![rq.0, rk.0]
                },
                &StepKind::Batched {
                    nodes: vec![uk.0, uv.0]
                }
            ]
        );
    }

    #[test]
    fn not_across_positions_attributes_or_dependencies() {
        let mut g = Graph::new();
        let p1 = g.input("p1", DType::I32, [1]).unwrap();
        let p2 = g.input("p2", DType::I32, [1]).unwrap();
        let x = g.input("x", DType::F32, [1, 1, 2, 8]).unwrap();
        let a = g.add(rope(8), &[x, p1]).unwrap();
        let b = g.add(rope(8), &[x, p2]).unwrap(); // another position input
        let c = g.add(rope(8), &[a, p1]).unwrap(); // reads a
        let mut other = rope(8);
        if let Op::Rope { theta, .. } = &mut other {
            *theta = 500.0;
        }
        let d = g.add(other, &[x, p1]).unwrap(); // another theta
        for n in [b, c, d] {
            g.output(n).unwrap();
        }
        assert!(groups(&g).is_empty());
    }

    #[test]
    fn not_when_one_depends_on_the_other_through_other_nodes() {
        let mut g = Graph::new();
        let pos = g.input("pos", DType::I32, [1]).unwrap();
        let c1 = g.input("c1", DType::F32, [1, 8, 2, 4]).unwrap();
        let c2 = g.input("c2", DType::F32, [1, 8, 2, 4]).unwrap();
        let k = g.input("k", DType::F32, [1, 1, 2, 4]).unwrap();
        let u1 = g.update_rows(c1, k, pos, 1).unwrap();
        // The second update's rows come from the first's result (like a next layer's keys).
        let r = g.narrow(u1, 1, 0, 1).unwrap();
        let k2 = g.activation(kiln_ir::Activation::Neg, r).unwrap();
        let u2 = g.update_rows(c2, k2, pos, 1).unwrap();
        g.output(u2).unwrap();
        assert!(groups(&g).is_empty());
    }

    /// Paths through other fused steps count: here through the other batch
    /// (`{A1, B1}` and `{A2, B2}` would each need the other), and through a residual-norm step
    /// whose norm reads the first update while the second update reads its sum.
    #[test]
    fn not_when_a_path_runs_through_another_fused_step() {
        let mut g = Graph::new();
        let pos = g.input("pos", DType::I32, [1]).unwrap();
        let k = g.input("k", DType::F32, [1, 1, 2, 8]).unwrap();
        let v = g.input("v", DType::F32, [1, 1, 2, 8]).unwrap();
        let kc = g.input("kc", DType::F32, [1, 4, 2, 8]).unwrap();
        let vc = g.input("vc", DType::F32, [1, 4, 2, 8]).unwrap();
        let a1 = g.add(rope(8), &[k, pos]).unwrap();
        let a2 = g.update_rows(kc, a1, pos, 1).unwrap();
        let b2 = g.update_rows(vc, v, pos, 1).unwrap();
        let row = g.narrow(b2, 1, 0, 1).unwrap();
        let b1 = g.add(rope(8), &[row, pos]).unwrap();
        for n in [a2, b1] {
            g.output(n).unwrap();
        }
        // The ropes are independent and batch; the updates then may not (the first needs the
        // rope batch, which needs the second).
        let batches: Vec<Vec<usize>> = groups(&g).into_iter().map(|gr| gr.writes).collect();
        assert_eq!(batches, [vec![a1.0, b1.0]]);

        let mut g = Graph::new();
        let pos = g.input("pos", DType::I32, [1]).unwrap();
        let x = g.input("x", DType::F32, [1, 1, 2, 8]).unwrap();
        let r = g.input("r", DType::F32, [1, 1, 2, 8]).unwrap();
        let c1 = g.input("c1", DType::F32, [1, 4, 2, 8]).unwrap();
        let c2 = g.input("c2", DType::F32, [1, 4, 2, 8]).unwrap();
        let a = g.update_rows(c1, x, pos, 1).unwrap();
        let gamma = g
            .reduce(kiln_ir::ReduceOp::Sum, a, &[0, 1, 2], false)
            .unwrap();
        let s = g.add_op(x, r).unwrap();
        let b = g.update_rows(c2, s, pos, 1).unwrap();
        let y = g.rms_norm(s, Some(gamma), 1e-6).unwrap();
        for n in [b, y] {
            g.output(n).unwrap();
        }
        let mut st = FusionState::new(&g);
        crate::fusion::residual::run(&mut st);
        run(&mut st);
        assert!(
            !st.groups
                .iter()
                .any(|gr| matches!(gr.kind, StepKind::Batched { .. })),
            "{:?}",
            st.groups
        );
        // And the whole plan schedules.
        crate::plan(&g, &crate::PlanOptions::default()).unwrap();
    }
}
