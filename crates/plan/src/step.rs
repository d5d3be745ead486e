//! Planned steps: what each one computes, reads and binds.

use serde::Serialize;

/// What a step does. Node ids index the planned graph.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// One IR op, lowered as it is.
    Op { node: usize },
    /// `matmul` (plain or fused with bias) followed by the bias `add` and the activation `act`
    /// (each optional), as one matmul with an epilogue writing the last of them.
    MatmulEpilogue {
        matmul: usize,
        bias_add: Option<usize>,
        act: Option<usize>,
    },
    /// A matmul step (`matmul`, with its epilogue nodes) whose three last-axis narrows are
    /// written directly, one output each.
    QkvSplit {
        matmul: usize,
        bias_add: Option<usize>,
        outputs: [usize; 3],
    },
    /// `norm(add)` in one step; with `tee` the sum `add` is written as well.
    ResidualNorm { add: usize, norm: usize, tee: bool },
    /// A matmul step without activation (`matmul` and its optional `bias_add`) whose product
    /// only the `add` of a residual norm reads, joined with that norm: where the matmul splits
    /// k, the norm adds the chunks' partial products and the bias itself, instead of a sum
    /// dispatch writing the product for it to read again. The product keeps its slot for
    /// extents at which the matmul does not split.
    MatmulResidualNorm {
        matmul: usize,
        bias_add: Option<usize>,
        add: usize,
        norm: usize,
        tee: bool,
    },
    /// `binary(act(a), b)` as one elementwise step; with `swap` the node is `binary(b, act(a))`
    /// of a commutative op.
    ActBinary {
        act: usize,
        binary: usize,
        swap: bool,
    },
    /// Plain matmuls reading the same input against their own quantized weights, as one
    /// dispatch writing each product; or, with `glu`, two of them (gate, up) whose only use is
    /// `binary = act(gate) * up`, which the dispatch writes instead (SwiGLU). With `prologue`
    /// their common input is an RMSNorm (of a residual sum) that the dispatch computes itself.
    SiblingMatmuls {
        matmuls: Vec<usize>,
        glu: Option<Glu>,
        prologue: Option<NormPrologue>,
    },
    /// Independent ops of one kind run as jobs of one dispatch: two ropes with the same
    /// attributes and positions, or up to four row updates with the same start and shapes.
    Batched { nodes: Vec<usize> },
    /// `attention` reading Q, K and V by strides from `packed`, whose last axis holds them at
    /// the given column offsets.
    PackedAttention {
        attention: usize,
        packed: usize,
        columns: [usize; 3],
    },
}

impl Default for StepKind {
    fn default() -> Self {
        StepKind::Op { node: 0 }
    }
}

impl StepKind {
    /// A short name for printing.
    pub fn name(&self) -> &'static str {
        match self {
            StepKind::Op { .. } => "op",
            StepKind::MatmulEpilogue { .. } => "matmul_epilogue",
            StepKind::QkvSplit { .. } => "qkv_split",
            StepKind::ResidualNorm { .. } => "residual_norm",
            StepKind::MatmulResidualNorm { .. } => "matmul_residual_norm",
            StepKind::PackedAttention { .. } => "packed_attention",
            StepKind::ActBinary { .. } => "act_binary",
            StepKind::SiblingMatmuls { .. } => "sibling_matmuls",
            StepKind::Batched { .. } => "batched",
        }
    }
}

/// The gated product a [`StepKind::SiblingMatmuls`] step writes: `binary = act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Glu {
    pub act: usize,
    pub binary: usize,
}

/// The RMSNorm a [`StepKind::SiblingMatmuls`] step applies to its input rows while reading
/// them: `norm` (absent) is `rms_norm(x, gamma)` with `x` either a graph tensor or, with `add`,
/// the sum `add = a + b`, which the step also writes when `tee` (it has other readers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NormPrologue {
    pub norm: usize,
    pub add: Option<usize>,
    pub tee: bool,
}

/// The buffer range a step binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "buffer", rename_all = "snake_case")]
pub enum Binding {
    /// A window of the arena (the whole arena when it fits one binding).
    Arena { offset: u64, size: u64 },
    /// The scratch buffer, into which the step's operands are staged.
    Scratch { size: u64 },
}

/// An operand copied into scratch before its step (and, if written, back after).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Staged {
    pub node: usize,
    pub arena_offset: u64,
    pub scratch_offset: u64,
    pub bytes: u64,
    pub copy_in: bool,
    pub copy_back: bool,
}

/// A dim of an operand that follows a symbol: at run time it takes the symbol's actual value
/// (≤ its bound) while strides stay at the bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtentDep {
    pub node: usize,
    pub axis: usize,
    pub symbol: String,
}

/// One step of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    #[serde(flatten)]
    pub kind: StepKind,
    /// Tensors read (by the root slot's node id; views are resolved to what they alias).
    pub reads: Vec<usize>,
    /// Tensors written.
    pub writes: Vec<usize>,
    pub binding: Binding,
    /// Operands staged through scratch (empty unless the arena exceeds one binding and this
    /// step's operands do not fit one window).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub staged: Vec<Staged>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extent: Vec<ExtentDep>,
}
