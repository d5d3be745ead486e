//! Element types, including block-quantized storage formats.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor.
///
/// Plain types store one value per element. Block-quantized types (the GGUF formats) store
/// fixed-size blocks of elements along the tensor's last axis; [`DType::layout`] says how many
/// elements and bytes a block has, so that a planner can size a packed tensor exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    U32,
    I64,
    U8,
    I8,
    Bool,
    /// GGUF Q4_0: blocks of 32 elements, an f16 scale and 16 bytes of 4-bit values (18 bytes).
    #[serde(rename = "q4_0")]
    Q4_0,
    /// GGUF Q4_1: blocks of 32 elements, f16 scale and f16 minimum, 16 bytes of nibbles (20 bytes).
    #[serde(rename = "q4_1")]
    Q4_1,
    /// GGUF Q8_0: blocks of 32 elements, an f16 scale and 32 signed bytes (34 bytes).
    #[serde(rename = "q8_0")]
    Q8_0,
}

/// How a dtype lays out its elements in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageLayout {
    /// One element takes `bytes` bytes.
    Scalar { bytes: usize },
    /// Elements are packed `block_elems` at a time into `block_bytes` bytes, along the last axis.
    Block {
        block_elems: usize,
        block_bytes: usize,
    },
}

/// Every dtype, in declaration order (handy for tests and tools).
pub const ALL_DTYPES: [DType; 12] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::I32,
    DType::U32,
    DType::I64,
    DType::U8,
    DType::I8,
    DType::Bool,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q8_0,
];

impl DType {
    /// The memory layout of this dtype.
    pub const fn layout(self) -> StorageLayout {
        use StorageLayout::*;
        match self {
            DType::F32 | DType::I32 | DType::U32 => Scalar { bytes: 4 },
            DType::F16 | DType::BF16 => Scalar { bytes: 2 },
            DType::I64 => Scalar { bytes: 8 },
            DType::U8 | DType::I8 | DType::Bool => Scalar { bytes: 1 },
            DType::Q4_0 => Block {
                block_elems: 32,
                block_bytes: 18,
            },
            DType::Q4_1 => Block {
                block_elems: 32,
                block_bytes: 20,
            },
            DType::Q8_0 => Block {
                block_elems: 32,
                block_bytes: 34,
            },
        }
    }

    /// True for the block-quantized storage types.
    pub const fn is_quantized(self) -> bool {
        matches!(self.layout(), StorageLayout::Block { .. })
    }

    /// True for f32, f16 and bf16.
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16)
    }

    /// True for the integer types (signed or not), not bool.
    pub const fn is_integer(self) -> bool {
        matches!(
            self,
            DType::I32 | DType::U32 | DType::I64 | DType::U8 | DType::I8
        )
    }

    /// Bytes taken by a tensor of `last_dim`-long rows and `numel` elements in total, or `None`
    /// when a quantized tensor's last axis is not a whole number of blocks (or on overflow).
    pub fn storage_bytes(self, numel: usize, last_dim: usize) -> Option<usize> {
        match self.layout() {
            StorageLayout::Scalar { bytes } => numel.checked_mul(bytes),
            StorageLayout::Block {
                block_elems,
                block_bytes,
            } => {
                if !last_dim.is_multiple_of(block_elems) {
                    return None;
                }
                (numel / block_elems).checked_mul(block_bytes)
            }
        }
    }

    /// The lowercase name used in JSON and in printed graphs.
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::Bool => "bool",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q8_0 => "q8_0",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantized_sizes_are_exact() {
        // A 64 x 64 Q4_1 matrix: 128 blocks of 20 bytes.
        assert_eq!(DType::Q4_1.storage_bytes(64 * 64, 64), Some(128 * 20));
        assert_eq!(DType::Q4_0.storage_bytes(32, 32), Some(18));
        assert_eq!(DType::Q8_0.storage_bytes(96, 96), Some(3 * 34));
        // A row that is not a whole number of blocks cannot be stored.
        assert_eq!(DType::Q8_0.storage_bytes(48, 48), None);
    }

    #[test]
    fn scalar_sizes() {
        assert_eq!(DType::F16.storage_bytes(10, 5), Some(20));
        assert_eq!(DType::I64.storage_bytes(3, 3), Some(24));
        assert_eq!(DType::Bool.storage_bytes(7, 7), Some(7));
        assert_eq!(DType::F32.storage_bytes(usize::MAX, 1), None);
    }

    #[test]
    fn json_names_match_display() {
        for dt in ALL_DTYPES {
            let json = serde_json::to_string(&dt).unwrap();
            assert_eq!(json, format!("\"{dt}\""));
        }
    }
}
