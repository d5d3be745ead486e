//! Packed QKV attention: when Q, K and V are reshaped last-axis narrows of one projection
//! `[B, S, C]`, attention reads them in place through strides (row stride C, column offsets),
//! so neither the narrows nor the reshapes are copied.

use super::{FusionState, Group};
use crate::step::StepKind;
use kiln_ir::{HeadLayout, Op};

/// `(packed, column, [narrow, reshape])` if input `k` of `attn` is Reshape(Narrow(packed)) along
/// the packed tensor's last axis, each read only by the next.
fn packed_operand(
    st: &FusionState<'_>,
    attn: usize,
    k: usize,
) -> Option<(usize, usize, [usize; 2])> {
    let reshape = st.input(attn, k);
    if !matches!(st.node(reshape).op, Op::Reshape { .. }) || st.sole_consumer(reshape) != Some(attn)
    {
        return None;
    }
    let narrow = st.input(reshape, 0);
    let Op::Narrow { axis, start, .. } = st.node(narrow).op else {
        return None;
    };
    let packed = st.input(narrow, 0);
    let rank = st.node(packed).shape.rank();
    if rank != 3 || axis != 2 || st.sole_consumer(narrow) != Some(reshape) {
        return None;
    }
    (st.is_free(narrow) && st.is_free(reshape)).then_some((packed, start, [narrow, reshape]))
}

pub fn run(st: &mut FusionState<'_>) {
    for attn in 0..st.graph.len() {
        let Op::Attention {
            layout: HeadLayout::Bshd,
            ..
        } = st.node(attn).op
        else {
            continue;
        };
        if !st.is_free(attn) {
            continue;
        }
        let parts: Option<Vec<_>> = (0..3).map(|k| packed_operand(st, attn, k)).collect();
        let Some(parts) = parts else {
            continue;
        };
        if parts.iter().any(|p| p.0 != parts[0].0) {
            continue;
        }
        // The packed tensor must be materialized: not absorbed into another step.
        let packed = parts[0].0;
        if st.claimed[packed].is_some_and(|g| !st.groups[g].writes.contains(&packed)) {
            continue;
        }
        let internal = parts.iter().flat_map(|p| p.2).collect();
        st.claim(Group {
            kind: StepKind::PackedAttention {
                attention: attn,
                packed,
                columns: [parts[0].1, parts[1].1, parts[2].1],
            },
            writes: vec![attn],
            internal,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::{AttentionMask, DType, Graph};

    fn graph(extra_reader: bool, layout: HeadLayout) -> Graph {
        let (b, s, h, d) = (2, 5, 2, 4);
        let mut g = Graph::new();
        let p = g.input("qkv", DType::F32, [b, s, 3 * h * d]).unwrap();
        let mut qkv = Vec::new();
        for i in 0..3 {
            let n = g.narrow(p, 2, i * h * d, h * d).unwrap();
            let shape = match layout {
                HeadLayout::Bshd => [b, s, h, d],
                HeadLayout::Bhsd => [b, h, s, d],
            };
            qkv.push(g.reshape(n, shape).unwrap());
        }
        let op = Op::Attention {
            num_heads: h,
            num_kv_heads: h,
            head_dim: d,
            scale: 0.5,
            mask: AttentionMask::None,
            layout,
            has_past_len: false,
        };
        let a = g.add(op, &qkv).unwrap();
        g.output(a).unwrap();
        if extra_reader {
            g.output(qkv[1]).unwrap();
        }
        g
    }

    fn groups(g: &Graph) -> Vec<Group> {
        crate::fusion::groups_after(g, &[run])
    }

    #[test]
    fn fires_on_reshaped_narrows_of_one_projection() {
        let gs = groups(&graph(false, HeadLayout::Bshd));
        assert_eq!(gs.len(), 1);
        assert!(matches!(
            gs[0].kind,
            StepKind::PackedAttention {
                packed: 0,
                columns: [0, 8, 16],
                ..
            }
        ));
        assert_eq!(gs[0].internal.len(), 6);
    }

    #[test]
    fn not_when_a_part_is_read_elsewhere_or_the_layout_is_bhsd() {
        assert!(groups(&graph(true, HeadLayout::Bshd)).is_empty());
        assert!(groups(&graph(false, HeadLayout::Bhsd)).is_empty());
    }
}
