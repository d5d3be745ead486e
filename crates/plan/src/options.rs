//! What the planner is told about the device and what it may do.

use kiln_ir::{DType, StorageLayout};
use serde::{Deserialize, Serialize};

/// Device limits that shape the arena and its bind windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLimits {
    /// The largest range one storage binding may cover (`max_storage_buffer_binding_size`).
    pub max_storage_binding: u64,
    /// The largest buffer (`max_buffer_size`).
    pub max_buffer: u64,
    /// Alignment of a binding's offset. 256 is a multiple of every adapter's
    /// `min_storage_buffer_offset_alignment` (WebGPU caps it at 256).
    pub binding_alignment: u64,
}

impl Default for DeviceLimits {
    /// WebGPU's guaranteed minimums.
    fn default() -> Self {
        DeviceLimits {
            max_storage_binding: 128 << 20,
            max_buffer: 256 << 20,
            binding_alignment: 256,
        }
    }
}

/// Optional device features the planner can take into account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub f16: bool,
    pub subgroups: bool,
    /// Cooperative-matrix shapes (M, N, K) with f16 inputs and f32 accumulation.
    pub cooperative_matrix: Vec<[u32; 3]>,
}

/// Which fusion passes run. Each can be switched off on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FusionOptions {
    /// MatMul → Add(bias) → Activation becomes one matmul step with an epilogue.
    pub matmul_epilogue: bool,
    /// A bias matmul read only by three equal last-axis narrows writes Q, K and V itself.
    pub qkv_split: bool,
    /// Add → LayerNorm/RMSNorm becomes one step (also writing the sum when it has other readers).
    pub residual_norm: bool,
    /// A matmul without activation read only by a residual norm joins the norm's step,
    /// so that a split-k matmul's chunks are added by the norm.
    pub matmul_norm: bool,
    /// Attention reads Q, K and V through strides from one packed projection.
    pub packed_attention: bool,
    /// `binary(act(a), b)` applies the activation while reading `a` (e.g. SwiGLU).
    pub activation_binary: bool,
    /// Plain matmuls of one input against their own quantized weights run as one dispatch.
    pub sibling_matmuls: bool,
    /// An RMSNorm (of a residual sum) read only by sibling matmuls is computed by their
    /// dispatch as it reads its input rows.
    pub norm_prologue: bool,
    /// Independent ropes (or row updates) with the same attributes and positions run as one
    /// dispatch.
    pub batch: bool,
}

impl Default for FusionOptions {
    fn default() -> Self {
        FusionOptions {
            matmul_epilogue: true,
            qkv_split: true,
            residual_norm: true,
            matmul_norm: true,
            packed_attention: true,
            activation_binary: true,
            sibling_matmuls: true,
            norm_prologue: true,
            batch: true,
        }
    }
}

impl FusionOptions {
    /// Every pass off.
    pub fn none() -> Self {
        FusionOptions {
            matmul_epilogue: false,
            qkv_split: false,
            residual_norm: false,
            matmul_norm: false,
            packed_attention: false,
            activation_binary: false,
            sibling_matmuls: false,
            norm_prologue: false,
            batch: false,
        }
    }
}

/// How many bytes an element takes in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StoragePolicy {
    /// Every non-quantized element takes one 4-byte word (f16/bf16 widened, bools and small
    /// integers as words), quantized tensors stay packed: what kiln's WGSL kernels read today.
    #[default]
    Words,
    /// Every dtype at its own width.
    Native,
}

impl StoragePolicy {
    /// Bytes of a tensor of `dtype` with `numel` elements in rows of `last`, or `None` for a
    /// quantized row that is not whole blocks (or on overflow).
    pub fn bytes(self, dtype: DType, numel: usize, last: usize) -> Option<u64> {
        let b = match (self, dtype.layout()) {
            (StoragePolicy::Words, StorageLayout::Scalar { .. }) => numel.checked_mul(4),
            _ => dtype.storage_bytes(numel, last),
        }?;
        Some(b as u64)
    }
}

/// Everything the planner is given besides the graph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanOptions {
    pub limits: DeviceLimits,
    pub capabilities: Capabilities,
    pub fusion: FusionOptions,
    pub storage: StoragePolicy,
}

/// Alignment of every tensor slot in the arena (room for 16-byte vector loads).
pub const SLOT_ALIGN: u64 = 16;
