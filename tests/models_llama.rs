//! The Llama decoder graph on tiny random f32 weights: prefill of n tokens then one decode step
//! (cache fed back on the GPU, sequence run at extent 1) equals a prefill of n + 1 tokens, and
//! the GPU matches kiln-reference. Tolerance: a few f32 ops deep through two layers with O(1)
//! values: 2e-4 absolute plus relative.

mod common;

use kiln::ir::{DType, Dim, Graph, HostTensor};
use kiln::reference::Interpreter;
use kiln::runtime::{CompileOptions, Executable};
use kiln_models::llama::{build_graph, layer_weight, LlamaConfig, Sampling, WeightInfo};
use std::collections::HashMap;

const CTX: usize = 12;
const SEQ: usize = 6;

fn config() -> LlamaConfig {
    LlamaConfig {
        vocab: 40,
        hidden: 16,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 4,
        ffn: 24,
        rope_theta: 10000.0,
        rope_dims: 4,
        rms_eps: 1e-5,
    }
}

struct Weights(HashMap<String, HostTensor>);

impl WeightInfo for Weights {
    fn weight(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.0.get(name).map(|t| (t.dtype, t.shape.clone()))
    }
}

fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    common::signed_unit(n, seed)
        .into_iter()
        .map(|x| x * scale)
        .collect()
}

fn weights(c: &LlamaConfig) -> Weights {
    let mut w = HashMap::new();
    let mut add = |name: String, shape: &[usize], scale: f32| {
        let n = shape.iter().product();
        let seed = w.len() as u64 * 31 + 7;
        w.insert(
            name,
            HostTensor::from_f32(shape, &values(n, seed, scale)).unwrap(),
        );
    };
    add("token_embd.weight".into(), &[c.vocab, c.hidden], 1.0);
    add("output_norm.weight".into(), &[c.hidden], 1.0);
    let kv = c.kv_heads * c.head_dim;
    for l in 0..c.layers {
        add(layer_weight(l, "attn_norm"), &[c.hidden], 1.0);
        add(layer_weight(l, "ffn_norm"), &[c.hidden], 1.0);
        add(layer_weight(l, "attn_q"), &[c.hidden, c.hidden], 0.5);
        add(layer_weight(l, "attn_k"), &[kv, c.hidden], 0.5);
        add(layer_weight(l, "attn_v"), &[kv, c.hidden], 0.5);
        add(layer_weight(l, "attn_output"), &[c.hidden, c.hidden], 0.5);
        add(layer_weight(l, "ffn_gate"), &[c.ffn, c.hidden], 0.5);
        add(layer_weight(l, "ffn_up"), &[c.ffn, c.hidden], 0.5);
        add(layer_weight(l, "ffn_down"), &[c.hidden, c.ffn], 0.5);
    }
    Weights(w)
}

fn step_inputs(
    c: &LlamaConfig,
    tokens: &[i32],
    past: i32,
    caches: Option<&[HostTensor]>,
) -> Vec<(String, HostTensor)> {
    let i = |v: i32| HostTensor::from_i32(&[1], &[v]).unwrap();
    let mut ins = vec![
        (
            "tokens".to_string(),
            HostTensor::from_i32(&[1, tokens.len()], tokens).unwrap(),
        ),
        ("past".to_string(), i(past)),
        ("last".to_string(), i(tokens.len() as i32 - 1)),
        ("counter".to_string(), i(past)),
    ];
    if let Some(caches) = caches {
        for l in 0..c.layers {
            ins.push((format!("k_cache.{l}"), caches[2 * l].clone()));
            ins.push((format!("v_cache.{l}"), caches[2 * l + 1].clone()));
        }
    }
    ins
}

fn zero_caches(c: &LlamaConfig) -> Vec<HostTensor> {
    let shape = [1, CTX, c.kv_heads, c.head_dim];
    (0..2 * c.layers)
        .map(|_| HostTensor::from_f32(&shape, &vec![0.0; shape.iter().product()]).unwrap())
        .collect()
}

fn reference_run(g: &Graph, w: &Weights, ins: &[(String, HostTensor)]) -> Vec<HostTensor> {
    let mut it = Interpreter::new(g);
    for (n, t) in &w.0 {
        it.set_param(n, t.clone()).unwrap();
    }
    let refs: Vec<(&str, HostTensor)> = ins.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    it.run(&refs).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn prefill_then_decode_equals_a_longer_prefill_on_cpu_and_gpu() {
    let c = config();
    let w = weights(&c);
    let g = build_graph(&c, &w, Dim::bounded("seq", SEQ), CTX, Sampling::GREEDY).unwrap();
    let prompt = [3, 17, 8, 29, 1];
    let next = 22;

    // Reference: prefill 5, decode 1 with the returned caches; and prefill 6 at once.
    let pre = reference_run(&g, &w, &step_inputs(&c, &prompt, 0, Some(&zero_caches(&c))));
    let dec = reference_run(&g, &w, &step_inputs(&c, &[next], 5, Some(&pre[2..])));
    let mut six = prompt.to_vec();
    six.push(next);
    let full = reference_run(&g, &w, &step_inputs(&c, &six, 0, Some(&zero_caches(&c))));
    common::assert_close(
        &dec[1].to_f32(),
        &full[1].to_f32(),
        1e-4,
        1e-4,
        "reference decode vs prefill",
    );

    // GPU: one executable, caches fed back, decode at extent 1.
    let mut exe = Executable::compile(&common::device(), &g, &CompileOptions::default())
        .unwrap_or_else(|e| panic!("{e}"));
    for (n, t) in &w.0 {
        exe.set_param(n, t).unwrap();
    }
    for l in 0..c.layers {
        exe.feed_back(2 + 2 * l, &format!("k_cache.{l}")).unwrap();
        exe.feed_back(3 + 2 * l, &format!("v_cache.{l}")).unwrap();
    }
    let run = |exe: &mut Executable, ins: Vec<(String, HostTensor)>| {
        let refs: Vec<(&str, &HostTensor)> = ins.iter().map(|(n, t)| (n.as_str(), t)).collect();
        exe.run_read_outputs(&refs, &[0, 1])
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let gpu_pre = run(
        &mut exe,
        step_inputs(&c, &prompt, 0, Some(&zero_caches(&c))),
    );
    common::assert_close(
        &gpu_pre[1].to_f32(),
        &pre[1].to_f32(),
        2e-4,
        2e-4,
        "prefill logits",
    );
    assert_eq!(gpu_pre[0], pre[0], "greedy token after prefill");
    let gpu_dec = run(&mut exe, step_inputs(&c, &[next], 5, None));
    common::assert_close(
        &gpu_dec[1].to_f32(),
        &dec[1].to_f32(),
        2e-4,
        2e-4,
        "decode logits",
    );
    assert_eq!(exe.active_extent().get("seq"), Some(1));
}
