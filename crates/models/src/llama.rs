//! The Llama decoder (RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU, tied
//! output head) as one kiln graph that serves both prefill and decode.
//!
//! Inputs: `tokens` i32 `[1, seq]` (seq bounded by the prefill bucket; decode runs it at 1 by
//! active extent), `past` i32 `[1]` (tokens already in the cache), `last` i32 `[1]` (= seq − 1),
//! `counter` i32 `[1]` (the sampler's counter), and per layer `k_cache.L` / `v_cache.L`
//! f32 `[1, ctx, kv_heads, head_dim]`. Outputs: 0 the next token (i32 `[1]`), 1 the logits of
//! the last position (`[1, vocab]`), then `k_cache.L` / `v_cache.L` updated (fed back into the
//! inputs on the GPU).
//!
//! The cache update writes this call's keys and values at rows `past..past + seq` of each
//! cache ([`Op::UpdateRows`]); the planner does it in place, since nothing else reads the old
//! cache, so a decode step writes one row per cache and feeding the caches back copies nothing.

use kiln_ir::{
    Activation, AttentionMask, DType, Dim, Graph, HeadLayout, IrError, NodeId, Op, RopeStyle, Shape,
};

/// The hyperparameters the graph needs.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub vocab: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    pub rope_theta: f32,
    pub rope_dims: usize,
    pub rms_eps: f32,
}

/// How the next token is chosen (compiled into the graph's Sample op).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    pub top_k: usize,
    pub top_p: f32,
    pub seed: u64,
}

impl Sampling {
    pub const GREEDY: Sampling = Sampling {
        temperature: 0.0,
        top_k: 0,
        top_p: 1.0,
        seed: 0,
    };
}

/// Where a weight comes from: its GGUF name, dtype and row-major shape.
pub trait WeightInfo {
    fn weight(&self, name: &str) -> Option<(DType, Vec<usize>)>;
}

/// The name of the param of layer `l` for GGUF tensor `blk.l.NAME.weight`.
pub fn layer_weight(l: usize, name: &str) -> String {
    format!("blk.{l}.{name}.weight")
}

/// Builds the decoder graph for a bounded sequence and a cache of `ctx` rows.
pub fn build_graph(
    c: &LlamaConfig,
    weights: &dyn WeightInfo,
    seq: Dim,
    ctx: usize,
    sampling: Sampling,
) -> Result<Graph, IrError> {
    let mut g = Graph::new();
    let param = |g: &mut Graph, name: &str| -> Result<NodeId, IrError> {
        let (dtype, shape) = weights.weight(name).ok_or_else(|| IrError::UnknownInput {
            name: name.to_string(),
        })?;
        g.param(name, dtype, shape.as_slice())
    };
    let s1 = |dims: &[usize]| {
        let mut v = vec![Dim::Static(1), seq.clone()];
        v.extend(dims.iter().map(|&d| Dim::Static(d)));
        Shape(v)
    };
    let tokens = g.input("tokens", DType::I32, s1(&[]))?;
    let past = g.input("past", DType::I32, [1])?;
    let last = g.input("last", DType::I32, [1])?;
    let counter = g.input("counter", DType::I32, [1])?;
    let embd = param(&mut g, "token_embd.weight")?;
    let mut x = g.gather(embd, tokens, 0)?;

    let (hd, kvh) = (c.head_dim, c.kv_heads);
    let mut cache_outputs = Vec::new();
    for l in 0..c.layers {
        let w = |g: &mut Graph, name: &str| param(g, &layer_weight(l, name));
        let norm = w(&mut g, "attn_norm")?;
        let h = g.rms_norm(x, Some(norm), c.rms_eps)?;
        let w_attn_q = w(&mut g, "attn_q")?;
        let q = g.matmul_t(h, w_attn_q)?;
        let w_attn_k = w(&mut g, "attn_k")?;
        let k = g.matmul_t(h, w_attn_k)?;
        let w_attn_v = w(&mut g, "attn_v")?;
        let v = g.matmul_t(h, w_attn_v)?;
        let q = g.reshape(q, s1(&[c.heads, hd]))?;
        let k = g.reshape(k, s1(&[kvh, hd]))?;
        let v = g.reshape(v, s1(&[kvh, hd]))?;
        let rope = Op::Rope {
            head_dim: hd,
            rotary_dims: c.rope_dims,
            theta: c.rope_theta,
            // GGUF stores Q and K for rotation of adjacent pairs.
            style: RopeStyle::Interleaved,
            layout: HeadLayout::Bshd,
            position_offset: 0,
            has_offset_input: true,
        };
        let q = g.add(rope.clone(), &[q, past])?;
        let k = g.add(rope, &[k, past])?;
        let mut caches = Vec::new();
        for (name, new) in [("k_cache", k), ("v_cache", v)] {
            let cache = g.input(format!("{name}.{l}"), DType::F32, [1, ctx, kvh, hd])?;
            caches.push(g.update_rows(cache, new, past, 1)?);
        }
        let attn = g.add(
            Op::Attention {
                num_heads: c.heads,
                num_kv_heads: kvh,
                head_dim: hd,
                scale: 1.0 / (hd as f32).sqrt(),
                mask: AttentionMask::Causal,
                layout: HeadLayout::Bshd,
                has_past_len: true,
            },
            &[q, caches[0], caches[1], past],
        )?;
        let attn = g.reshape(attn, s1(&[c.heads * hd]))?;
        let w_attn_output = w(&mut g, "attn_output")?;
        let o = g.matmul_t(attn, w_attn_output)?;
        x = g.add_op(x, o)?;
        let norm = w(&mut g, "ffn_norm")?;
        let h = g.rms_norm(x, Some(norm), c.rms_eps)?;
        let w_ffn_gate = w(&mut g, "ffn_gate")?;
        let gate = g.matmul_t(h, w_ffn_gate)?;
        let w_ffn_up = w(&mut g, "ffn_up")?;
        let up = g.matmul_t(h, w_ffn_up)?;
        let gate = g.activation(Activation::Silu, gate)?;
        let a = g.mul(gate, up)?;
        let w_ffn_down = w(&mut g, "ffn_down")?;
        let down = g.matmul_t(a, w_ffn_down)?;
        x = g.add_op(x, down)?;
        cache_outputs.extend(caches);
    }
    let norm = param(&mut g, "output_norm.weight")?;
    let x = g.rms_norm(x, Some(norm), c.rms_eps)?;
    let x_last = g.gather(x, last, 1)?;
    // The output head is tied to the embedding table.
    let logits = g.matmul_t(x_last, embd)?;
    let logits = g.reshape(logits, [1, c.vocab])?;
    let token = g.add(
        Op::Sample {
            top_k: sampling.top_k,
            top_p: sampling.top_p,
            temperature: sampling.temperature,
            seed: sampling.seed,
            has_counter: true,
        },
        &[logits, counter],
    )?;
    g.output(token)?;
    g.output(logits)?;
    for c in cache_outputs {
        g.output(c)?;
    }
    Ok(g)
}
