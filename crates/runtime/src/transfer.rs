//! Host tensors to arena words and back (see [`kiln_kernels::Repr`]).

use kiln_ir::{DType, HostTensor};
use kiln_kernels::lower::{repr, Repr};

/// How many 4-byte arena words a tensor of `dtype` and `numel` elements (in rows of `last`)
/// takes, or `None` for a quantized tensor whose rows are not whole blocks.
pub fn words(dtype: DType, numel: usize, last: usize) -> Option<usize> {
    match repr(dtype) {
        Repr::F32 | Repr::I32 => Some(numel),
        Repr::Packed => dtype.storage_bytes(numel, last).map(|b| b.div_ceil(4)),
    }
}

/// The arena bytes of a host tensor. Integers outside the i32 range saturate.
pub fn to_arena(t: &HostTensor) -> Vec<u8> {
    match (repr(t.dtype), t.dtype) {
        (Repr::F32, DType::F32) | (Repr::I32, DType::I32 | DType::U32) => t.bytes.clone(),
        (Repr::F32, _) => kiln_ir::tensor::encode(DType::F32, &t.to_f32()),
        (Repr::I32, DType::I64) => t
            .bytes
            .chunks_exact(8)
            .flat_map(|c| {
                let v = i64::from_le_bytes(c.try_into().expect("chunks of 8"));
                (v.clamp(i32::MIN as i64, i32::MAX as i64) as i32).to_le_bytes()
            })
            .collect(),
        (Repr::I32, _) => t
            .to_f32()
            .iter()
            .flat_map(|&v| (v as i32).to_le_bytes())
            .collect(),
        (Repr::Packed, _) => {
            let mut b = t.bytes.clone();
            b.resize(b.len().next_multiple_of(4), 0);
            b
        }
    }
}

/// A host tensor of `dtype` from its arena bytes (exactly `words * 4` of them).
pub fn from_arena(dtype: DType, shape: &[usize], bytes: &[u8]) -> HostTensor {
    let numel: usize = shape.iter().product();
    let out = match (repr(dtype), dtype) {
        (Repr::F32, DType::F32) | (Repr::I32, DType::I32 | DType::U32) => bytes.to_vec(),
        (Repr::F32, _) => {
            kiln_ir::tensor::encode(dtype, &kiln_ir::tensor::decode(DType::F32, bytes))
        }
        (Repr::I32, DType::I64) => bytes
            .chunks_exact(4)
            .flat_map(|c| {
                (i32::from_le_bytes(c.try_into().expect("chunks of 4")) as i64).to_le_bytes()
            })
            .collect(),
        (Repr::I32, _) => {
            kiln_ir::tensor::encode(dtype, &kiln_ir::tensor::decode(DType::I32, bytes))
        }
        (Repr::Packed, _) => {
            let n = dtype
                .storage_bytes(numel, shape.last().copied().unwrap_or(1))
                .unwrap_or(bytes.len());
            bytes[..n.min(bytes.len())].to_vec()
        }
    };
    HostTensor {
        dtype,
        shape: shape.to_vec(),
        bytes: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrips() {
        for (dt, vals) in [
            (DType::F32, vec![1.5f32, -2.0]),
            (DType::Bool, vec![1.0, 0.0]),
            (DType::I32, vec![-7.0, 9.0]),
            (DType::I64, vec![-3.0, 40.0]),
            (DType::U8, vec![3.0, 250.0]),
            (DType::F16, vec![0.5, -1.0]),
        ] {
            let t = HostTensor::from_values(dt, &[2], &vals).unwrap();
            let arena = to_arena(&t);
            assert_eq!(arena.len(), 8, "{dt}");
            assert_eq!(from_arena(dt, &[2], &arena), t, "{dt}");
        }
    }
}
