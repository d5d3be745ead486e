//! Planner invariants on random graphs (proptest) and a transformer-sized plan.

use kiln_ir::{Activation, AttentionMask, DType, Dim, Graph, HeadLayout, NodeId, Op, Shape};
use kiln_plan::{
    plan, Binding, DeviceLimits, ExecutionPlan, FusionOptions, Placement, PlanOptions, StepKind,
};
use proptest::prelude::*;

/// A random graph over `[2, seq<=8, 16]` f32 activations: each step applies one of a few op
/// kinds to earlier nodes, among them a decoder's RMSNorm (of a residual sum or not) feeding
/// quantized sibling projections or SwiGLU over 32-wide rows.
fn random_graph(choices: &[(u8, usize, usize)]) -> Graph {
    let mut g = Graph::new();
    let seq = Dim::bounded("seq", 8);
    let x = g
        .input(
            "x",
            DType::F32,
            Shape(vec![Dim::Static(2), seq.clone(), Dim::Static(16)]),
        )
        .unwrap();
    let w = g.param("w", DType::F32, [16, 16]).unwrap();
    let w3 = g.param("w3", DType::F32, [48, 16]).unwrap();
    let b = g.param("b", DType::F32, [16]).unwrap();
    let b3 = g.param("b3", DType::F32, [48]).unwrap();
    // 32-wide rows for quantized weights (blocks of 32 along K).
    let up = g.param("up", DType::F32, [32, 16]).unwrap();
    let down = g.param("down", DType::F32, [16, 32]).unwrap();
    let g32 = g.param("g32", DType::F32, [32]).unwrap();
    let q: Vec<NodeId> = [DType::Q4_0, DType::Q4_1, DType::Q8_0]
        .iter()
        .enumerate()
        .map(|(i, &dt)| g.param(format!("q{i}"), dt, [16, 32]).unwrap())
        .collect();
    let mut acts: Vec<NodeId> = vec![x];
    for &(kind, i, j) in choices {
        let a = acts[i % acts.len()];
        let c = acts[j % acts.len()];
        let new: Vec<NodeId> = match kind % 10 {
            0 => vec![g.matmul(a, w).unwrap()],
            1 => {
                let m = g.matmul(a, w).unwrap();
                let y = g.add_op(m, b).unwrap();
                vec![g.activation(Activation::Gelu, y).unwrap()]
            }
            2 => vec![g.add_op(a, c).unwrap()],
            3 => {
                let s = g.add_op(a, c).unwrap();
                vec![g.layer_norm(s, Some(b), Some(b), 1e-5).unwrap(), s]
            }
            4 => vec![g.softmax(a, 2).unwrap()],
            5 => {
                let y = g
                    .fused_matmul_bias_act(a, w3, Some(b3), None, true)
                    .unwrap();
                (0..3)
                    .map(|k| g.narrow(y, 2, 16 * k, 16).unwrap())
                    .collect()
            }
            8 => {
                // rms_norm(u + v) read by three quantized projections; the sum read elsewhere
                // too (the tee).
                let u = g.matmul_t(a, up).unwrap();
                let v = g.matmul_t(c, up).unwrap();
                let s = g.add_op(u, v).unwrap();
                let n = g.rms_norm(s, Some(g32), 1e-5).unwrap();
                let mut out: Vec<NodeId> = q.iter().map(|&w| g.matmul_t(n, w).unwrap()).collect();
                out.push(g.matmul_t(s, down).unwrap());
                out
            }
            9 => {
                // SwiGLU over quantized gate/up of rms_norm(u) without gamma.
                let u = g.matmul_t(a, up).unwrap();
                let n = g.rms_norm(u, None, 1e-5).unwrap();
                let gate = g.matmul_t(n, q[0]).unwrap();
                let upq = g.matmul_t(n, q[2]).unwrap();
                let act = g.activation(Activation::Silu, gate).unwrap();
                vec![g.mul(act, upq).unwrap()]
            }
            6 => {
                let t = g.transpose(a, &[1, 0, 2]).unwrap();
                vec![g.transpose(t, &[1, 0, 2]).unwrap()]
            }
            _ => {
                let r = g
                    .reshape(
                        a,
                        Shape(vec![
                            Dim::Static(2),
                            seq.clone(),
                            Dim::Static(4),
                            Dim::Static(4),
                        ]),
                    )
                    .unwrap();
                vec![g
                    .reshape(r, Shape(vec![Dim::Static(2), seq.clone(), Dim::Static(16)]))
                    .unwrap()]
            }
        };
        acts.extend(new);
    }
    let last = *acts.last().unwrap();
    g.output(last).unwrap();
    if acts.len() > 3 {
        g.output(acts[acts.len() / 2]).unwrap();
    }
    g
}

fn options(max_binding: u64, fusion: FusionOptions) -> PlanOptions {
    PlanOptions {
        limits: DeviceLimits {
            max_storage_binding: max_binding,
            max_buffer: 1 << 30,
            binding_alignment: 256,
        },
        fusion,
        ..Default::default()
    }
}

/// The invariants every plan must satisfy.
fn check_invariants(p: &ExecutionPlan, opts: &PlanOptions) {
    // No two slots live at the same time overlap in memory.
    let slots: Vec<_> = p
        .tensors
        .iter()
        .filter_map(|t| match (t.placement, t.live) {
            (Placement::Slot { offset }, Some(live)) => Some((t.node, offset, t.bytes, live)),
            _ => None,
        })
        .collect();
    for (i, a) in slots.iter().enumerate() {
        assert!(a.1 + a.2 <= p.arena_bytes, "slot %{} past the arena", a.0);
        assert_eq!(a.1 % 16, 0, "slot %{} misaligned", a.0);
        for b in &slots[..i] {
            let time = a.3 .0 <= b.3 .1 && b.3 .0 <= a.3 .1;
            let space = a.1 < b.1 + b.2 && b.1 < a.1 + a.2;
            assert!(
                !(time && space && a.2 > 0 && b.2 > 0),
                "%{} and %{} overlap",
                a.0,
                b.0
            );
        }
    }
    assert!(p.arena_bytes >= p.lower_bound_bytes);
    // Every step's operands lie in its window, or are staged; windows are aligned and within
    // the binding limit.
    let mut written = vec![false; p.tensors.len()];
    for t in &p.tensors {
        if p.graph.nodes()[t.node].op.is_source() {
            written[t.node] = true;
        }
    }
    for (s, step) in p.steps.iter().enumerate() {
        for &r in &step.reads {
            assert!(written[r], "step {s} reads %{r} before it is written");
            let live = p.tensors[r].live.expect("read slots are live");
            assert!(
                live.0 <= s && s <= live.1,
                "step {s} reads %{r} outside its life {live:?}"
            );
        }
        for &w in &step.writes {
            written[w] = true;
        }
        match step.binding {
            Binding::Arena { offset, size } => {
                assert_eq!(offset % opts.limits.binding_alignment, 0);
                assert!(size <= opts.limits.max_storage_binding);
                for &n in step.reads.iter().chain(&step.writes) {
                    let (o, b) = (p.offset(n).unwrap(), p.tensors[n].bytes);
                    assert!(
                        o >= offset && o + b <= offset + size,
                        "step {s}: %{n} outside its window"
                    );
                }
            }
            Binding::Scratch { size } => {
                assert!(size <= opts.limits.max_storage_binding && size <= p.scratch_bytes);
                for &n in step.reads.iter().chain(&step.writes) {
                    let staged = step
                        .staged
                        .iter()
                        .find(|st| st.node == n)
                        .expect("operand staged");
                    assert!(staged.scratch_offset + staged.bytes <= size);
                    assert_eq!(staged.copy_in, step.reads.contains(&n));
                    assert_eq!(staged.copy_back, step.writes.contains(&n));
                }
            }
        }
    }
}

fn fusion_strategy() -> impl Strategy<Value = FusionOptions> {
    (
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(a, b, c, d, e, f, h, n)| FusionOptions {
            matmul_epilogue: a,
            qkv_split: b,
            residual_norm: c,
            matmul_norm: c,
            packed_attention: d,
            activation_binary: e,
            sibling_matmuls: f,
            norm_prologue: n,
            batch: h,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn plans_satisfy_their_invariants(
        choices in prop::collection::vec((any::<u8>(), any::<usize>(), any::<usize>()), 1..14),
        // 12 KiB holds the largest step (sibling projections with a norm prologue and its tee)
        // but not the arena of a longer graph.
        binding in prop::sample::select(vec![1u64 << 30, 16384, 12288]),
        fusion in fusion_strategy(),
    ) {
        let g = random_graph(&choices);
        let opts = options(binding, fusion);
        let p = plan(&g, &opts).unwrap();
        check_invariants(&p, &opts);
        // Deterministic.
        prop_assert_eq!(p.to_json(), plan(&g, &opts).unwrap().to_json());
    }
}

/// A BERT-like encoder: `layers` blocks of fused QKV projection, attention, output projection
/// with residual LayerNorm, and a GELU feed-forward with residual LayerNorm.
pub fn transformer(layers: usize, batch: usize, seq: usize, hidden: usize, heads: usize) -> Graph {
    let d = hidden / heads;
    let mut g = Graph::new();
    let mut x = g.input("x", DType::F32, [batch, seq, hidden]).unwrap();
    for l in 0..layers {
        let p = |g: &mut Graph, name: &str, shape: &[usize]| {
            g.param(format!("l{l}.{name}"), DType::F32, shape).unwrap()
        };
        let wqkv = p(&mut g, "wqkv", &[3 * hidden, hidden]);
        let bqkv = p(&mut g, "bqkv", &[3 * hidden]);
        let qkv = g
            .fused_matmul_bias_act(x, wqkv, Some(bqkv), None, true)
            .unwrap();
        let parts: Vec<NodeId> = (0..3)
            .map(|i| {
                let n = g.narrow(qkv, 2, i * hidden, hidden).unwrap();
                g.reshape(n, [batch, seq, heads, d]).unwrap()
            })
            .collect();
        let attn = g
            .add(
                Op::Attention {
                    num_heads: heads,
                    num_kv_heads: heads,
                    head_dim: d,
                    scale: 1.0 / (d as f32).sqrt(),
                    mask: AttentionMask::None,
                    layout: HeadLayout::Bshd,
                    has_past_len: false,
                },
                &parts,
            )
            .unwrap();
        let attn = g.reshape(attn, [batch, seq, hidden]).unwrap();
        let wo = p(&mut g, "wo", &[hidden, hidden]);
        let bo = p(&mut g, "bo", &[hidden]);
        let o = g
            .fused_matmul_bias_act(attn, wo, Some(bo), None, true)
            .unwrap();
        let g1 = p(&mut g, "ln1.g", &[hidden]);
        let b1 = p(&mut g, "ln1.b", &[hidden]);
        let s = g.add_op(o, x).unwrap();
        let h = g.layer_norm(s, Some(g1), Some(b1), 1e-12).unwrap();
        let wi = p(&mut g, "wi", &[4 * hidden, hidden]);
        let bi = p(&mut g, "bi", &[4 * hidden]);
        let f = g
            .fused_matmul_bias_act(h, wi, Some(bi), Some(Activation::Gelu), true)
            .unwrap();
        let wf = p(&mut g, "wf", &[hidden, 4 * hidden]);
        let bf = p(&mut g, "bf", &[hidden]);
        let f = g
            .fused_matmul_bias_act(f, wf, Some(bf), None, true)
            .unwrap();
        let g2 = p(&mut g, "ln2.g", &[hidden]);
        let b2 = p(&mut g, "ln2.b", &[hidden]);
        let s2 = g.add_op(f, h).unwrap();
        x = g.layer_norm(s2, Some(g2), Some(b2), 1e-12).unwrap();
    }
    g.output(x).unwrap();
    g
}

#[test]
fn transformer_plan_is_within_ten_percent_of_the_lower_bound() {
    let g = transformer(6, 32, 128, 384, 12);
    let opts = options(1 << 30, FusionOptions::default());
    let p = plan(&g, &opts).unwrap();
    check_invariants(&p, &opts);
    assert!(
        p.ratio() <= 1.10,
        "arena {} vs lower bound {} ({:.3})",
        p.arena_bytes,
        p.lower_bound_bytes,
        p.ratio()
    );
    // The QKV split and the residual norms fired in every layer, each residual norm joined
    // with the projection it adds (the attention output's and the FFN's down projection).
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "qkv_split").count(), 6);
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "matmul_residual_norm")
            .count(),
        12
    );
    // The reshapes of the split's outputs alias them: no step computes a reshape.
    let reshape_steps = p
        .steps
        .iter()
        .filter(|s| match &s.kind {
            StepKind::Op { node } => matches!(p.graph.nodes()[*node].op, Op::Reshape { .. }),
            _ => false,
        })
        .count();
    assert_eq!(reshape_steps, 0, "{kinds:?}");
}

#[test]
fn packed_attention_fires_when_the_split_is_off() {
    let g = transformer(2, 1, 16, 64, 4);
    let fusion = FusionOptions {
        qkv_split: false,
        ..Default::default()
    };
    let p = plan(&g, &options(1 << 30, fusion)).unwrap();
    let kinds: Vec<&str> = p.steps.iter().map(|s| s.kind.name()).collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "packed_attention").count(),
        2,
        "{kinds:?}"
    );
}

#[test]
fn a_tensor_larger_than_one_binding_is_named() {
    let mut g = Graph::new();
    let x = g.input("big", DType::F32, [64, 64]).unwrap();
    let y = g.activation(Activation::Relu, x).unwrap();
    g.output(y).unwrap();
    let err = plan(&g, &options(4096, FusionOptions::default())).unwrap_err();
    assert!(err.to_string().contains("\"big\""), "{err}");
}

#[test]
fn buffers_too_small_name_the_tensor_or_the_peak() {
    let opts = |max_buffer: u64| PlanOptions {
        limits: DeviceLimits {
            max_storage_binding: 1 << 20,
            max_buffer,
            binding_alignment: 256,
        },
        ..Default::default()
    };
    // One tensor larger than any buffer.
    let mut g = Graph::new();
    let x = g.input("huge", DType::F32, [64, 64]).unwrap();
    let y = g.activation(Activation::Relu, x).unwrap();
    g.output(y).unwrap();
    let err = plan(&g, &opts(8 << 10)).unwrap_err();
    assert!(
        matches!(
            err,
            kiln_plan::PlanError::TensorOverBuffer { bytes: 16384, .. }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("\"huge\""), "{err}");
    // Tensors of 16 KiB each, four live at the end: no 40 KiB buffer holds them.
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [64, 64]).unwrap();
    let b = g.input("b", DType::F32, [64, 64]).unwrap();
    let c = g.add_op(a, b).unwrap();
    let d = g.mul(c, a).unwrap();
    g.output(c).unwrap();
    g.output(d).unwrap();
    let err = plan(&g, &opts(40 << 10)).unwrap_err();
    match &err {
        kiln_plan::PlanError::ArenaTooLarge {
            bytes,
            peak,
            peak_tensor,
            ..
        } => {
            assert_eq!(*peak, 4 * 16384, "{err}");
            assert!(*bytes >= *peak, "{err}");
            assert!(peak_tensor.starts_with('%'), "{err}");
        }
        other => panic!("expected ArenaTooLarge, got {other}"),
    }
    assert!(plan(&g, &opts(1 << 20)).is_ok());
}

#[test]
fn symbolic_dims_are_recorded_per_step() {
    let g = random_graph(&[(4, 0, 0)]);
    let p = plan(&g, &options(1 << 30, FusionOptions::default())).unwrap();
    let softmax = p
        .steps
        .iter()
        .find(|s| !s.extent.is_empty())
        .expect("a step depends on seq");
    assert!(softmax
        .extent
        .iter()
        .all(|e| e.symbol == "seq" && e.axis == 1));
    // Planned at the bound: [2, 8, 16] f32.
    assert_eq!(p.tensors[softmax.writes[0]].bytes, 2 * 8 * 16 * 4);
}

#[test]
fn unbounded_symbols_are_rejected() {
    let mut g = Graph::new();
    let x = g
        .input("x", DType::F32, Shape(vec![Dim::sym("n")]))
        .unwrap();
    let y = g.activation(Activation::Exp, x).unwrap();
    g.output(y).unwrap();
    let err = plan(&g, &PlanOptions::default()).unwrap_err();
    assert!(
        matches!(err, kiln_plan::PlanError::Unbounded { .. }),
        "{err}"
    );
}

#[test]
fn small_bindings_use_windows_and_staging() {
    // A chain of twelve [8, 64] matmuls whose results are all outputs (so all stay live):
    // the arena outgrows a 6 KiB binding; early steps fit one window, later ones read the
    // weight, placed far from their operands, through scratch.
    let mut g = Graph::new();
    let mut x = g.input("x", DType::F32, [8, 16]).unwrap();
    let w = g.param("w", DType::F32, [16, 16]).unwrap();
    for _ in 0..12 {
        x = g.matmul(x, w).unwrap();
        g.output(x).unwrap();
    }
    let opts = options(6144, FusionOptions::default());
    let p = plan(&g, &opts).unwrap();
    check_invariants(&p, &opts);
    assert!(!p.whole_arena, "arena {}", p.arena_bytes);
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(s.binding, Binding::Arena { .. })));
    assert!(p
        .steps
        .iter()
        .any(|s| matches!(s.binding, Binding::Scratch { .. })));
    assert!(p.scratch_bytes > 0 && p.scratch_bytes <= 6144);
}

/// A cache input updated at a position, then read: `extra_reader` also reads the old cache.
fn cache_update(extra_reader: bool) -> Graph {
    let mut g = Graph::new();
    let cache = g.input("cache", DType::F32, [1, 16, 2, 8]).unwrap();
    let shape = Shape(vec![
        Dim::Static(1),
        Dim::bounded("seq", 4),
        Dim::Static(2),
        Dim::Static(8),
    ]);
    let new = g.input("new", DType::F32, shape).unwrap();
    let pos = g.input("pos", DType::I32, [1]).unwrap();
    let k = g.activation(Activation::Neg, new).unwrap();
    let updated = g.update_rows(cache, k, pos, 1).unwrap();
    let y = g.activation(Activation::Abs, updated).unwrap();
    g.output(y).unwrap();
    g.output(updated).unwrap();
    if extra_reader {
        let old = g.activation(Activation::Relu, cache).unwrap();
        g.output(old).unwrap();
    }
    g
}

#[test]
fn a_row_update_of_an_input_read_by_nothing_else_is_in_place() {
    for max_binding in [1 << 30, 2048] {
        let opts = options(max_binding, FusionOptions::default());
        let p = plan(&cache_update(false), &opts).unwrap();
        check_invariants(&p, &opts);
        let (cache, updated) = (0, 4);
        assert_eq!(
            p.tensors[updated].placement,
            Placement::View {
                of: cache,
                offset: p.offset(cache).unwrap()
            }
        );
        assert_eq!(p.inputs_updated_in_place(), vec![cache]);
        let (s, step) = p
            .steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.kind == StepKind::Op { node: updated })
            .unwrap();
        assert_eq!(step.writes, vec![cache]);
        // The reader of the result runs after the update and reads the cache's slot.
        let reader = p
            .steps
            .iter()
            .position(|s| s.kind == StepKind::Op { node: 5 })
            .unwrap();
        assert!(reader > s);
        assert_eq!(p.steps[reader].reads, vec![cache]);
        assert_eq!(p.tensors[cache].live, Some((0, p.steps.len() - 1)));
        if max_binding == 2048 {
            // Staged (asserted, so the case stays covered): the cache is copied in and back
            // (the kernel writes only some rows).
            assert!(
                matches!(step.binding, Binding::Scratch { .. }),
                "{:?}",
                step.binding
            );
            let st = step.staged.iter().find(|st| st.node == cache).unwrap();
            assert!(st.copy_in && st.copy_back);
        }
    }
}

#[test]
fn a_row_update_of_an_input_read_elsewhere_gets_its_own_slot() {
    let opts = options(1 << 30, FusionOptions::default());
    let p = plan(&cache_update(true), &opts).unwrap();
    check_invariants(&p, &opts);
    assert!(matches!(p.tensors[4].placement, Placement::Slot { .. }));
    assert!(p.inputs_updated_in_place().is_empty());
}

#[test]
fn the_random_graphs_norm_sites_fold_into_their_projections() {
    // Kinds 8 (residual RMSNorm, three projections, the sum read elsewhere) and 9 (RMSNorm
    // without gamma, SwiGLU): the generator's two norm sites, each folded into its siblings.
    let g = random_graph(&[(8, 0, 0), (9, 1, 0)]);
    for binding in [1u64 << 30, 12288] {
        let opts = options(binding, FusionOptions::default());
        let p = plan(&g, &opts).unwrap();
        check_invariants(&p, &opts);
        let prologues: Vec<_> = p
            .steps
            .iter()
            .filter_map(|s| match &s.kind {
                StepKind::SiblingMatmuls {
                    prologue: Some(pr),
                    glu,
                    ..
                } => Some((pr.add.is_some(), pr.tee, glu.is_some())),
                _ => None,
            })
            .collect();
        assert_eq!(
            prologues,
            [(true, true, false), (false, false, true)],
            "binding {binding}"
        );
    }
}
