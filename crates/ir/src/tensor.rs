//! Host tensors: the typed bytes that go into and come out of an executable.

use crate::dtype::DType;
use half::{bf16, f16};
use thiserror::Error;

/// A tensor in host memory: its dtype, concrete shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum TensorError {
    #[error("{got} bytes do not make a {dtype} tensor of shape {shape:?} ({expected:?} bytes)")]
    Size {
        dtype: DType,
        shape: Vec<usize>,
        got: usize,
        expected: Option<usize>,
    },
    #[error("{got} values for shape {shape:?} ({expected} elements)")]
    Count {
        shape: Vec<usize>,
        got: usize,
        expected: usize,
    },
}

impl HostTensor {
    /// The bytes a `dtype` tensor of `shape` takes, or `None` if the shape cannot hold one
    /// (its size overflows, or a quantized last dim is not whole blocks).
    pub fn expected_bytes(dtype: DType, shape: &[usize]) -> Option<usize> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
        dtype.storage_bytes(numel, shape.last().copied().unwrap_or(1))
    }

    /// Whether the bytes are exactly what the dtype and shape call for (the fields are public,
    /// so a tensor built by hand may not be).
    pub fn is_consistent(&self) -> bool {
        Self::expected_bytes(self.dtype, &self.shape) == Some(self.bytes.len())
    }

    /// Wraps bytes, checking their length against the dtype and shape.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: Vec<u8>) -> Result<Self, TensorError> {
        let expected = Self::expected_bytes(dtype, shape);
        if expected != Some(bytes.len()) {
            return Err(TensorError::Size {
                dtype,
                shape: shape.to_vec(),
                got: bytes.len(),
                expected,
            });
        }
        Ok(HostTensor {
            dtype,
            shape: shape.to_vec(),
            bytes,
        })
    }

    /// Converts `values` to `dtype` (see [`encode`]) and checks the count against the shape.
    pub fn from_values(dtype: DType, shape: &[usize], values: &[f32]) -> Result<Self, TensorError> {
        let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel != Some(values.len()) || dtype.is_quantized() {
            return Err(TensorError::Count {
                shape: shape.to_vec(),
                got: values.len(),
                expected: numel.unwrap_or(usize::MAX),
            });
        }
        HostTensor::from_bytes(dtype, shape, encode(dtype, values))
    }

    pub fn from_f32(shape: &[usize], values: &[f32]) -> Result<Self, TensorError> {
        HostTensor::from_values(DType::F32, shape, values)
    }

    pub fn from_i32(shape: &[usize], values: &[i32]) -> Result<Self, TensorError> {
        HostTensor::from_bytes(
            DType::I32,
            shape,
            bytemuck::cast_slice::<i32, u8>(values).to_vec(),
        )
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The elements as f32 (integers converted, bools as 0/1, quantized blocks decoded).
    pub fn to_f32(&self) -> Vec<f32> {
        if self.dtype.is_quantized() {
            // from_bytes checked the length, so decoding cannot fail.
            return crate::quant::dequantize(self.dtype, &self.bytes)
                .expect("length checked at construction");
        }
        decode(self.dtype, &self.bytes)
    }
}

/// Decodes little-endian elements of a non-quantized `dtype` to f32. Trailing bytes that do
/// not make a whole element are ignored; quantized dtypes decode to nothing.
pub fn decode(dtype: DType, bytes: &[u8]) -> Vec<f32> {
    fn each<const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> f32) -> Vec<f32> {
        bytes
            .chunks_exact(N)
            .map(|c| f(c.try_into().expect("chunks_exact yields N bytes")))
            .collect()
    }
    match dtype {
        DType::F32 => each(bytes, f32::from_le_bytes),
        DType::F16 => each(bytes, |b| f16::from_le_bytes(b).to_f32()),
        DType::BF16 => each(bytes, |b| bf16::from_le_bytes(b).to_f32()),
        DType::I32 => each(bytes, |b| i32::from_le_bytes(b) as f32),
        DType::U32 => each(bytes, |b| u32::from_le_bytes(b) as f32),
        DType::I64 => each(bytes, |b| i64::from_le_bytes(b) as f32),
        DType::U8 => each(bytes, |b: [u8; 1]| b[0] as f32),
        DType::I8 => each(bytes, |b: [u8; 1]| b[0] as i8 as f32),
        DType::Bool => each(bytes, |b: [u8; 1]| f32::from(b[0] != 0)),
        DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => Vec::new(),
    }
}

/// Encodes f32 values as `dtype`: floats round to nearest, integers truncate toward zero and
/// saturate (NaN becomes 0), bool is `v != 0`. Quantized dtypes encode to nothing.
pub fn encode(dtype: DType, values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for &v in values {
        match dtype {
            DType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            DType::F16 => out.extend_from_slice(&f16::from_f32(v).to_le_bytes()),
            DType::BF16 => out.extend_from_slice(&bf16::from_f32(v).to_le_bytes()),
            DType::I32 => out.extend_from_slice(&(v as i32).to_le_bytes()),
            DType::U32 => out.extend_from_slice(&(v as u32).to_le_bytes()),
            DType::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
            DType::U8 => out.push(v as u8),
            DType::I8 => out.push(v as i8 as u8),
            DType::Bool => out.push(u8::from(v != 0.0)),
            DType::Q4_0 | DType::Q4_1 | DType::Q8_0 => {}
        }
    }
    out
}

/// Rounds `v` to the nearest value representable in `dtype` (the effect of storing it).
pub fn round_to(dtype: DType, v: f32) -> f32 {
    decode(dtype, &encode(dtype, &[v]))
        .first()
        .copied()
        .unwrap_or(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_or_inconsistent_shapes_are_errors_not_overflows() {
        let huge = [usize::MAX, 2];
        assert!(HostTensor::from_values(DType::F32, &huge, &[1.0]).is_err());
        assert!(HostTensor::from_bytes(DType::F32, &huge, vec![0; 8]).is_err());
        assert_eq!(HostTensor::expected_bytes(DType::F32, &huge), None);
        // Public fields: a tensor assembled by hand can disagree with itself.
        let t = HostTensor {
            dtype: DType::F32,
            shape: vec![3],
            bytes: vec![0; 8],
        };
        assert!(!t.is_consistent());
        assert!(HostTensor::from_f32(&[2], &[1.0, 2.0])
            .unwrap()
            .is_consistent());
    }

    #[test]
    fn roundtrip_each_dtype() {
        let vals = [0.0f32, 1.0, -2.0, 3.0, 100.0];
        for dt in [
            DType::F32,
            DType::F16,
            DType::BF16,
            DType::I32,
            DType::I64,
            DType::I8,
        ] {
            let t = HostTensor::from_values(dt, &[5], &vals).unwrap();
            assert_eq!(t.to_f32(), vals, "{dt}");
        }
        let t = HostTensor::from_values(DType::Bool, &[5], &vals).unwrap();
        assert_eq!(t.to_f32(), [0.0, 1.0, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn conversions_truncate_and_saturate() {
        assert_eq!(round_to(DType::I32, -2.7), -2.0);
        assert_eq!(round_to(DType::U8, 300.0), 255.0);
        assert_eq!(round_to(DType::U32, -5.0), 0.0);
        assert_eq!(round_to(DType::I8, f32::NAN), 0.0);
        assert_eq!(round_to(DType::F16, 1.0 + 1e-4), 1.0);
    }

    #[test]
    fn size_is_checked() {
        assert!(HostTensor::from_bytes(DType::F32, &[2, 2], vec![0; 15]).is_err());
        assert!(HostTensor::from_bytes(DType::Q8_0, &[2, 32], vec![0; 68]).is_ok());
        assert!(HostTensor::from_f32(&[3], &[1.0, 2.0]).is_err());
    }
}
