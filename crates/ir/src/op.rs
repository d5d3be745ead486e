//! The operations of the IR and their attributes.
//!
//! Every op documents its inputs (in order) and its semantics; `kiln-reference` implements exactly
//! these semantics and every backend must match it.

use crate::dtype::DType;
use crate::shape::Shape;
use serde::{Deserialize, Serialize};

/// Elementwise binary arithmetic (numpy broadcasting).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    Pow,
}

/// Elementwise comparison (numpy broadcasting); the result is `bool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Elementwise unary functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Neg,
    Abs,
    /// `x * Φ(x)` with the exact normal CDF (erf).
    Gelu,
    /// The tanh approximation of GELU.
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
    /// Round half to even.
    Round,
    Sin,
    Cos,
    Tan,
    Atan,
}

/// All activations, in declaration order.
pub const ALL_ACTIVATIONS: [Activation; 17] = [
    Activation::Relu,
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::Exp,
    Activation::Log,
    Activation::Sqrt,
    Activation::Rsqrt,
    Activation::Neg,
    Activation::Abs,
    Activation::Gelu,
    Activation::GeluTanh,
    Activation::Silu,
    Activation::Round,
    Activation::Sin,
    Activation::Cos,
    Activation::Tan,
    Activation::Atan,
];

/// Reductions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReduceOp {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
}

/// Which learned parameters a norm applies after normalising.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Affine {
    /// No parameters.
    None,
    /// Multiply by `gamma` (one input, shaped like the last axis).
    Scale,
    /// Multiply by `gamma`, then add `beta` (two inputs, shaped like the last axis).
    ScaleShift,
}

impl Affine {
    /// How many parameter inputs this affine form takes.
    pub const fn num_inputs(self) -> usize {
        match self {
            Affine::None => 0,
            Affine::Scale => 1,
            Affine::ScaleShift => 2,
        }
    }
}

/// The normalisations over the last axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormKind {
    /// `(x - mean) / sqrt(var + eps)` (biased variance).
    Layer,
    /// `x / sqrt(mean(x²) + eps)`.
    Rms,
    /// `x / max(sqrt(sum(x²)), eps)`: unit Euclidean length (PyTorch's
    /// `F.normalize(x, dim=-1, eps=eps)`, which sentence embeddings end with).
    L2,
}

/// The memory layout of rank-4 attention and RoPE operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HeadLayout {
    /// `[batch, seq, heads, head_dim]`.
    Bshd,
    /// `[batch, heads, seq, head_dim]`.
    Bhsd,
}

impl HeadLayout {
    /// The axes of (batch, seq, heads, head_dim) in a rank-4 tensor of this layout.
    pub const fn axes(self) -> (usize, usize, usize, usize) {
        match self {
            HeadLayout::Bshd => (0, 1, 2, 3),
            HeadLayout::Bhsd => (0, 2, 1, 3),
        }
    }
}

/// How attention masks scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionMask {
    None,
    /// Query `i` sees key `j` iff `j <= i + past`, where `past` is the past length (0 without).
    Causal,
    /// An extra input, broadcastable to `[batch, heads, seq_q, seq_k]`, added to the scores.
    Bias,
    /// An extra input `[batch, seq_k]`: key `j` of batch `b` is attended iff the value is nonzero.
    KeyPadding,
}

/// The two pairings of rotary embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RopeStyle {
    /// Element `i` pairs with `i + rotary_dims/2` (GPT-NeoX / Hugging Face Llama).
    RotateHalf,
    /// Element `2i` pairs with `2i + 1` (GPT-J / the original Llama, GGUF's layout).
    Interleaved,
}

/// What a TopK node outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopKOutput {
    /// The `k` largest values, in descending order.
    Values,
    /// Their indices along the last axis (`i32`).
    Indices,
}

/// An operation. Inputs are listed per variant, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// A graph input, supplied at every run.
    Input { name: String },
    /// A parameter (weight), set once and kept on the device.
    Param { name: String },
    /// A constant embedded in the graph: little-endian bytes of the node's dtype.
    Constant { data: Vec<u8> },

    /// `x` → same elements, new shape (the element count must be unchanged).
    Reshape { shape: Shape },
    /// `x` → axes permuted: output axis `i` is input axis `perm[i]`.
    Transpose { perm: Vec<usize> },
    /// `x` → the slice `start..start+len` along `axis`.
    Narrow {
        axis: usize,
        start: usize,
        len: usize,
    },
    /// `x0, x1, ...` → joined along `axis` (all other dims equal).
    Concat { axis: usize },
    /// `x` → broadcast to `shape` (numpy rules; size-1 dims stretch).
    Expand { shape: Shape },
    /// `table, indices` → `table` indexed along `axis` by integer `indices` (numpy `take`): the
    /// output shape is `table.shape[..axis] ++ indices.shape ++ table.shape[axis+1..]`. A
    /// quantized table is dequantized to f32 (axis 0 only, the embedding lookup).
    Gather { axis: usize },
    /// `dest, update, start` → `dest` with `update` written over rows `start..start + len`
    /// along `axis`, where `len` is `update`'s size on that axis and `start` is the value of a
    /// one-element integer tensor (e.g. a KV cache taking this step's keys at the current
    /// position). All other dims must agree; rows that fall outside `dest` are dropped. The
    /// planner updates `dest` in place when it is a graph input read by nothing else.
    UpdateRows { axis: usize },
    /// `x` → converted to `to`. Floats to integers truncate toward zero and saturate; anything
    /// to bool is `x != 0`; bool to numbers is 0 or 1.
    Cast { to: DType },

    /// `a, b` → elementwise arithmetic with numpy broadcasting.
    Binary { kind: BinaryOp },
    /// `a, b` → elementwise comparison with numpy broadcasting, as `bool`.
    Compare { kind: CompareOp },
    /// `cond, a, b` → `a` where `cond` is nonzero, else `b` (all three broadcast).
    Where,
    /// `x` → an elementwise function.
    Activation { kind: Activation },

    /// `x` → reduced over `axes` (distinct, any order); `keep_dim` keeps them as size 1.
    Reduce {
        kind: ReduceOp,
        axes: Vec<usize>,
        keep_dim: bool,
    },
    /// `x` → softmax along `axis` (numerically stable).
    Softmax { axis: usize },
    /// `x, [gamma], [beta]` → normalised over the last axis.
    Norm {
        kind: NormKind,
        eps: f32,
        affine: Affine,
    },
    /// `x, residual, [bias], [gamma], [beta]` → `norm(x + residual + bias)` over the last axis.
    /// The bias (shaped like the last axis) is the one of the projection that produced `x`.
    FusedResidualNorm {
        kind: NormKind,
        eps: f32,
        affine: Affine,
        has_bias: bool,
    },

    /// `a, b` → matrix product. `a` is `[.., M, K]`; `b` is `[K, N]` (or `[N, K]` with
    /// `transpose_b`), or batched `[.., K, N]` with leading dims broadcast against `a`'s.
    /// A quantized `b` must be 2-D with `transpose_b` (blocks run along K).
    MatMul { transpose_b: bool },
    /// `a, b, [bias]` → `act(a × b + bias)`; `bias` is `[N]`.
    FusedMatMulBiasAct {
        transpose_b: bool,
        has_bias: bool,
        act: Option<Activation>,
    },
    /// `q, k, v, [mask], [past_len]` → scaled dot-product attention, output shaped like `q`.
    ///
    /// `q` is rank 4 in `layout` with `num_heads` heads; `k` and `v` have `num_kv_heads` heads
    /// (query head `h` reads kv head `h / (num_heads / num_kv_heads)`). `mask` is present for
    /// [`AttentionMask::Bias`] and [`AttentionMask::KeyPadding`]. With `has_past_len`, the last
    /// input is an integer tensor of one element: the number of cached keys before this call's
    /// queries. Query `i` is then at position `past + i` and only keys `j < past + seq_q` exist;
    /// the remaining rows of `k`/`v` (cache capacity) are ignored. A query that can see no key
    /// outputs zeros.
    Attention {
        num_heads: usize,
        num_kv_heads: usize,
        head_dim: usize,
        scale: f32,
        mask: AttentionMask,
        layout: HeadLayout,
        has_past_len: bool,
    },
    /// `x, [offset]` → rotary position embedding of a rank-4 `x` in `layout`.
    ///
    /// The first `rotary_dims` of each head are rotated (the rest pass through); the position
    /// of sequence index `s` is `offset + s`, where `offset` is the static `position_offset`
    /// plus, with `has_offset_input`, the value of a one-element integer input. Pair `i` turns
    /// by `pos * theta^(-2i / rotary_dims)`.
    Rope {
        head_dim: usize,
        rotary_dims: usize,
        theta: f32,
        style: RopeStyle,
        layout: HeadLayout,
        position_offset: usize,
        has_offset_input: bool,
    },
    /// `x` → running sum along `axis`; `exclusive` starts from 0 instead of the first element.
    Cumsum { axis: usize, exclusive: bool },
    /// `x` → index (`i32`) of the largest value along the last axis (first on ties); the last
    /// axis is dropped.
    Argmax,
    /// `x` → the `k` largest along the last axis (descending; equal values by lower index).
    TopK { k: usize, output: TopKOutput },
    /// `logits, [counter]` → one sampled index (`i32`) per row of the last axis.
    ///
    /// `temperature == 0` is greedy (argmax). Otherwise logits are divided by the temperature,
    /// restricted to the `top_k` largest (0 = no limit), turned into probabilities, restricted
    /// to the smallest prefix whose mass reaches `top_p`, and one index is drawn with
    /// [`crate::rng::sample_uniform`] keyed by `seed`, the optional `u32` counter input (e.g.
    /// the decode step) and the row.
    Sample {
        top_k: usize,
        top_p: f32,
        temperature: f32,
        seed: u64,
        has_counter: bool,
    },
}

impl Op {
    /// A short name for messages and printing.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Param { .. } => "param",
            Op::Constant { .. } => "constant",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Narrow { .. } => "narrow",
            Op::Concat { .. } => "concat",
            Op::Expand { .. } => "expand",
            Op::Gather { .. } => "gather",
            Op::UpdateRows { .. } => "update_rows",
            Op::Cast { .. } => "cast",
            Op::Binary { .. } => "binary",
            Op::Compare { .. } => "compare",
            Op::Where => "where",
            Op::Activation { .. } => "activation",
            Op::Reduce { .. } => "reduce",
            Op::Softmax { .. } => "softmax",
            Op::Norm { .. } => "norm",
            Op::FusedResidualNorm { .. } => "fused_residual_norm",
            Op::MatMul { .. } => "matmul",
            Op::FusedMatMulBiasAct { .. } => "fused_matmul_bias_act",
            Op::Attention { .. } => "attention",
            Op::Rope { .. } => "rope",
            Op::Cumsum { .. } => "cumsum",
            Op::Argmax => "argmax",
            Op::TopK { .. } => "topk",
            Op::Sample { .. } => "sample",
        }
    }

    /// True for the ops that take no inputs and introduce a tensor.
    pub fn is_source(&self) -> bool {
        matches!(
            self,
            Op::Input { .. } | Op::Param { .. } | Op::Constant { .. }
        )
    }
}
