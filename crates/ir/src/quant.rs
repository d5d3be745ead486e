//! Decoding of the block-quantized GGUF formats (the definition of their values).

use crate::dtype::DType;
use half::f16;

fn f16_at(bytes: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]]).to_f32()
}

/// Decodes one block of `dtype` into 32 values. `block` must hold exactly one block.
///
/// Returns `None` for a non-quantized dtype or a slice of the wrong length.
pub fn dequantize_block(dtype: DType, block: &[u8], out: &mut [f32; 32]) -> Option<()> {
    match dtype {
        // Q4_0: d (f16), then 16 bytes; low nibbles are elements 0..16, high nibbles 16..32;
        // value = d * (q - 8).
        DType::Q4_0 if block.len() == 18 => {
            let d = f16_at(block, 0);
            for (i, &b) in block[2..18].iter().enumerate() {
                out[i] = d * ((b & 0x0f) as f32 - 8.0);
                out[i + 16] = d * ((b >> 4) as f32 - 8.0);
            }
            Some(())
        }
        // Q4_1: d (f16), m (f16), then 16 bytes laid out as Q4_0; value = d * q + m.
        DType::Q4_1 if block.len() == 20 => {
            let d = f16_at(block, 0);
            let m = f16_at(block, 2);
            for (i, &b) in block[4..20].iter().enumerate() {
                out[i] = d * (b & 0x0f) as f32 + m;
                out[i + 16] = d * (b >> 4) as f32 + m;
            }
            Some(())
        }
        // Q8_0: d (f16), then 32 signed bytes; value = d * q.
        DType::Q8_0 if block.len() == 34 => {
            let d = f16_at(block, 0);
            for (i, &b) in block[2..34].iter().enumerate() {
                out[i] = d * (b as i8) as f32;
            }
            Some(())
        }
        _ => None,
    }
}

/// Decodes a whole packed tensor, or `None` when `bytes` is not a whole number of blocks.
pub fn dequantize(dtype: DType, bytes: &[u8]) -> Option<Vec<f32>> {
    let crate::dtype::StorageLayout::Block { block_bytes, .. } = dtype.layout() else {
        return None;
    };
    if !bytes.len().is_multiple_of(block_bytes) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / block_bytes * 32);
    let mut buf = [0f32; 32];
    for block in bytes.chunks_exact(block_bytes) {
        dequantize_block(dtype, block, &mut buf)?;
        out.extend_from_slice(&buf);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q4_1_hand_block() {
        // d = 0.5, m = -1.0; byte i holds low nibble i%16 and high nibble 15 - i%16.
        let mut block = Vec::new();
        block.extend_from_slice(&f16::from_f32(0.5).to_le_bytes());
        block.extend_from_slice(&f16::from_f32(-1.0).to_le_bytes());
        for i in 0..16u8 {
            block.push(i | ((15 - i) << 4));
        }
        let v = dequantize(DType::Q4_1, &block).unwrap();
        assert_eq!(v[0], -1.0);
        assert_eq!(v[3], 0.5);
        assert_eq!(v[16], 6.5); // 0.5 * 15 - 1
        assert_eq!(v[31], -1.0 + 0.5 * 0.0);
    }

    #[test]
    fn q4_0_and_q8_0_hand_blocks() {
        let mut q4 = f16::from_f32(2.0).to_le_bytes().to_vec();
        q4.extend(std::iter::repeat_n(0x9f, 16)); // low 15, high 9
        let v = dequantize(DType::Q4_0, &q4).unwrap();
        assert_eq!((v[0], v[16]), (14.0, 2.0));

        let mut q8 = f16::from_f32(0.25).to_le_bytes().to_vec();
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let v = dequantize(DType::Q8_0, &q8).unwrap();
        assert_eq!((v[0], v[16], v[31]), (-4.0, 0.0, 3.75));
    }

    #[test]
    fn rejects_partial_blocks() {
        assert!(dequantize(DType::Q8_0, &[0u8; 33]).is_none());
        assert!(dequantize(DType::F32, &[0u8; 4]).is_none());
    }
}
