//! Benchmark workloads with synthetic weights of the real architectures: the same graphs the
//! models run, so `kiln bench`, the criterion benches and the GPU recipe measure one thing.

use crate::error::ModelError;
use crate::llama::{self, LlamaConfig, Sampling, WeightInfo};
use crate::minilm::{self, BertConfig};
use kiln_ir::{AttentionMask, DType, Dim, Graph, HeadLayout, HostTensor, NodeId, Op};
use std::collections::HashMap;

/// A graph with its params and one set of inputs, plus the arithmetic it performs.
pub struct Workload {
    pub name: String,
    pub graph: Graph,
    pub params: Vec<(String, HostTensor)>,
    pub inputs: Vec<(String, HostTensor)>,
    /// Floating-point operations of one run (multiply-add = 2), for GFLOP/s.
    pub flops: f64,
}

/// Deterministic values in [-scale, scale).
pub fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

fn f32_tensor(shape: &[usize], seed: u64, scale: f32) -> HostTensor {
    let n = shape.iter().product();
    // The shape and the value count agree by construction.
    HostTensor::from_f32(shape, &values(n, seed, scale)).expect("values match the shape")
}

/// Packed blocks with small f16 scales and random quants, as a quantized weight would have.
fn quantized_tensor(dtype: DType, shape: &[usize], seed: u64) -> Result<HostTensor, ModelError> {
    let numel: usize = shape.iter().product();
    let bytes = dtype
        .storage_bytes(numel, shape.last().copied().unwrap_or(1))
        .ok_or_else(|| ModelError::Invalid(format!("{dtype}{shape:?} is not whole blocks")))?;
    let kiln_ir::StorageLayout::Block { block_bytes, .. } = dtype.layout() else {
        return Err(ModelError::Invalid(format!("{dtype} is not quantized")));
    };
    let noise = values(bytes, seed, 1.0);
    let mut data: Vec<u8> = noise.iter().map(|v| ((v + 1.0) * 127.5) as u8).collect();
    let d = half_bits(0.01);
    let m = half_bits(-0.04);
    for block in data.chunks_exact_mut(block_bytes) {
        block[..2].copy_from_slice(&d);
        if dtype == DType::Q4_1 {
            block[2..4].copy_from_slice(&m);
        }
    }
    HostTensor::from_bytes(dtype, shape, data).map_err(|e| ModelError::Invalid(e.to_string()))
}

/// The f16 bits of a small normal value (enough for scales).
fn half_bits(v: f32) -> [u8; 2] {
    let t = HostTensor::from_values(DType::F16, &[1], &[v]).expect("one value");
    [t.bytes[0], t.bytes[1]]
}

/// `[n, n] x [n, n]` in f32.
pub fn matmul(n: usize) -> Result<Workload, ModelError> {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [n, n])?;
    let b = g.param("b", DType::F32, [n, n])?;
    let y = g.matmul(a, b)?;
    g.output(y)?;
    Ok(Workload {
        name: format!("matmul f32 {n}^3"),
        graph: g,
        params: vec![("b".into(), f32_tensor(&[n, n], 2, 1.0))],
        inputs: vec![("a".into(), f32_tensor(&[n, n], 1, 1.0))],
        flops: 2.0 * (n as f64).powi(3),
    })
}

/// `[m, k] x [n, k]ᵀ + bias` (a linear layer, as models run them).
pub fn linear(m: usize, k: usize, n: usize) -> Result<Workload, ModelError> {
    let mut g = Graph::new();
    let a = g.input("a", DType::F32, [m, k])?;
    let w = g.param("w", DType::F32, [n, k])?;
    let b = g.param("b", DType::F32, [n])?;
    let y = g.fused_matmul_bias_act(a, w, Some(b), None, true)?;
    g.output(y)?;
    Ok(Workload {
        name: format!("linear f32 {m}x{k} -> {n}"),
        graph: g,
        params: vec![
            ("w".into(), f32_tensor(&[n, k], 2, 0.1)),
            ("b".into(), f32_tensor(&[n], 3, 0.1)),
        ],
        inputs: vec![("a".into(), f32_tensor(&[m, k], 1, 1.0))],
        flops: 2.0 * (m * k * n) as f64,
    })
}

/// Fused attention over `[batch, seq, heads, 64]`.
pub fn attention(batch: usize, seq: usize, heads: usize) -> Result<Workload, ModelError> {
    let d = 64;
    let mut g = Graph::new();
    let shape = [batch, seq, heads, d];
    let qkv: Vec<NodeId> = ["q", "k", "v"]
        .iter()
        .map(|n| g.input(*n, DType::F32, shape))
        .collect::<Result<_, _>>()?;
    let op = Op::Attention {
        num_heads: heads,
        num_kv_heads: heads,
        head_dim: d,
        scale: 0.125,
        mask: AttentionMask::None,
        layout: HeadLayout::Bshd,
        has_past_len: false,
    };
    let y = g.add(op, &qkv)?;
    g.output(y)?;
    let inputs = ["q", "k", "v"]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.to_string(), f32_tensor(&shape, i as u64 + 1, 1.0)))
        .collect();
    Ok(Workload {
        name: format!("attention {batch}x{seq} tokens, {heads} heads of 64"),
        graph: g,
        params: Vec::new(),
        inputs,
        flops: 4.0 * (batch * heads * seq * seq * d) as f64,
    })
}

/// LayerNorm over `[rows, width]`.
pub fn layer_norm(rows: usize, width: usize) -> Result<Workload, ModelError> {
    let mut g = Graph::new();
    let x = g.input("x", DType::F32, [rows, width])?;
    let gm = g.param("g", DType::F32, [width])?;
    let bt = g.param("b", DType::F32, [width])?;
    let y = g.layer_norm(x, Some(gm), Some(bt), 1e-5)?;
    g.output(y)?;
    Ok(Workload {
        name: format!("layer norm {rows}x{width}"),
        graph: g,
        params: vec![
            ("g".into(), f32_tensor(&[width], 2, 1.0)),
            ("b".into(), f32_tensor(&[width], 3, 1.0)),
        ],
        inputs: vec![("x".into(), f32_tensor(&[rows, width], 1, 1.0))],
        flops: 8.0 * (rows * width) as f64,
    })
}

/// all-MiniLM-L6-v2's architecture.
pub fn minilm_config() -> BertConfig {
    BertConfig {
        hidden_size: 384,
        num_attention_heads: 12,
        num_hidden_layers: 6,
        intermediate_size: 1536,
        layer_norm_eps: 1e-12,
        max_position_embeddings: 512,
        type_vocab_size: 2,
        vocab_size: 30522,
        hidden_act: "gelu".into(),
    }
}

/// A MiniLM forward pass of `batch` texts of `seq` tokens, synthetic weights.
pub fn minilm(batch: usize, seq: usize) -> Result<Workload, ModelError> {
    let c = minilm_config();
    let graph = minilm::build_graph(&c, Dim::Static(batch), Dim::Static(seq))?;
    let mut params = Vec::new();
    for (i, (_, node)) in graph.params().enumerate() {
        let name = node.source_name().unwrap_or_default().to_string();
        let dims = node.shape.as_static().unwrap_or_default();
        params.push((name, f32_tensor(&dims, i as u64 + 10, 0.05)));
    }
    let ids: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..seq)
                .map(|s| ((b * 131 + s * 17) % c.vocab_size) as u32)
                .collect()
        })
        .collect();
    let inputs = minilm::batch_inputs(&ids, seq)?
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    let (h, i, l) = (
        c.hidden_size as f64,
        c.intermediate_size as f64,
        c.num_hidden_layers as f64,
    );
    let tokens = (batch * seq) as f64;
    let per_layer =
        2.0 * tokens * (4.0 * h * h + 2.0 * h * i) + 4.0 * (batch * seq * seq) as f64 * h;
    Ok(Workload {
        name: format!("MiniLM-L6 forward {batch}x{seq}"),
        graph,
        params,
        inputs,
        flops: l * per_layer,
    })
}

/// SmolLM2-135M's architecture.
pub fn smollm2_config() -> LlamaConfig {
    LlamaConfig {
        vocab: 49152,
        hidden: 576,
        layers: 30,
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
        ffn: 1536,
        rope_theta: 100_000.0,
        rope_dims: 64,
        rms_eps: 1e-5,
    }
}

/// SmolLM2-135M's weight names, dtypes and shapes: Q4_1 matrices, a Q8_0 embedding table that
/// is also the output head, f32 norms.
pub struct SmolWeights(HashMap<String, (DType, Vec<usize>)>);

impl SmolWeights {
    pub fn new(c: &LlamaConfig) -> SmolWeights {
        let mut w = HashMap::new();
        w.insert(
            "token_embd.weight".into(),
            (DType::Q8_0, vec![c.vocab, c.hidden]),
        );
        w.insert("output_norm.weight".into(), (DType::F32, vec![c.hidden]));
        let kv = c.kv_heads * c.head_dim;
        for l in 0..c.layers {
            let mut add = |n: &str, dt: DType, s: Vec<usize>| {
                w.insert(llama::layer_weight(l, n), (dt, s));
            };
            add("attn_norm", DType::F32, vec![c.hidden]);
            add("ffn_norm", DType::F32, vec![c.hidden]);
            add("attn_q", DType::Q4_1, vec![c.hidden, c.hidden]);
            add("attn_k", DType::Q4_1, vec![kv, c.hidden]);
            add("attn_v", DType::Q4_1, vec![kv, c.hidden]);
            add("attn_output", DType::Q4_1, vec![c.hidden, c.hidden]);
            add("ffn_gate", DType::Q4_1, vec![c.ffn, c.hidden]);
            add("ffn_up", DType::Q4_1, vec![c.ffn, c.hidden]);
            add("ffn_down", DType::Q4_1, vec![c.hidden, c.ffn]);
        }
        SmolWeights(w)
    }
}

impl WeightInfo for SmolWeights {
    fn weight(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        self.0.get(name).cloned()
    }
}

/// The SmolLM2 decoder with synthetic weights: a prefill of `tokens` (of a bucket of
/// `bucket`) against a cache of `ctx` rows. Decode steps are the same graph at extent 1.
pub fn smollm2(tokens: usize, bucket: usize, ctx: usize) -> Result<Workload, ModelError> {
    let c = smollm2_config();
    let w = SmolWeights::new(&c);
    let graph = llama::build_graph(&c, &w, Dim::bounded("seq", bucket), ctx, Sampling::GREEDY)?;
    let mut params = Vec::new();
    for (i, (_, node)) in graph.params().enumerate() {
        let name = node.source_name().unwrap_or_default().to_string();
        let dims = node.shape.as_static().unwrap_or_default();
        let t = if node.dtype.is_quantized() {
            quantized_tensor(node.dtype, &dims, i as u64 + 100)?
        } else {
            f32_tensor(&dims, i as u64 + 100, 1.0)
        };
        params.push((name, t));
    }
    let mut inputs = vec![(
        "tokens".to_string(),
        HostTensor::from_i32(
            &[1, tokens],
            &(0..tokens as i32)
                .map(|t| (t * 37) % 49152)
                .collect::<Vec<_>>(),
        )
        .map_err(|e| ModelError::Invalid(e.to_string()))?,
    )];
    for (name, v) in [("past", 0), ("last", tokens as i32 - 1), ("counter", 0)] {
        inputs.push((
            name.into(),
            HostTensor::from_i32(&[1], &[v]).map_err(|e| ModelError::Invalid(e.to_string()))?,
        ));
    }
    let cache = [1, ctx, c.kv_heads, c.head_dim];
    for l in 0..c.layers {
        for n in ["k_cache", "v_cache"] {
            inputs.push((format!("{n}.{l}"), f32_tensor(&cache, 0, 0.0)));
        }
    }
    let (h, f, kv) = (
        c.hidden as f64,
        c.ffn as f64,
        (c.kv_heads * c.head_dim) as f64,
    );
    let per_token = c.layers as f64 * 2.0 * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * f)
        + 2.0 * h * c.vocab as f64 / tokens as f64;
    Ok(Workload {
        name: format!("SmolLM2-135M prefill {tokens}"),
        graph,
        params,
        inputs,
        flops: per_token * tokens as f64,
    })
}
