//! Matrix products with f64 accumulation.

use crate::value::{broadcast_strides, for_each_index, offset, strides, Value};

/// `a × b` (or `a × bᵀ`), with `b` 2-D or batched with leading dims broadcast against `a`'s.
/// `out_shape` is the inferred output shape.
pub fn matmul(a: &Value, b: &Value, transpose_b: bool, out_shape: &[usize]) -> Vec<f32> {
    let (ar, br) = (a.shape.len(), b.shape.len());
    let (m, k) = (a.shape[ar - 2], a.shape[ar - 1]);
    let n = if transpose_b {
        b.shape[br - 2]
    } else {
        b.shape[br - 1]
    };
    // Element (kk, j) of the logical [K, N] matrix, within one matrix of b.
    let b_at = |base: usize, kk: usize, j: usize| {
        if transpose_b {
            b.data[base + j * k + kk]
        } else {
            b.data[base + kk * n + j]
        }
    };
    let mut out = vec![0f32; out_shape.iter().product()];
    // Batch dims of the output (all but the last two), and where each operand's matrix starts.
    let batch_shape = &out_shape[..out_shape.len() - 2];
    let (a_batch, b_batch) = if br == 2 {
        // b is one matrix: every leading dim of a is a batch of rows.
        (strides(&a.shape[..ar - 2]), vec![0; batch_shape.len()])
    } else {
        (
            broadcast_strides(&a.shape[..ar - 2], batch_shape),
            broadcast_strides(&b.shape[..br - 2], batch_shape),
        )
    };
    let (a_mat, b_mat) = (m * k, k * n);
    for_each_index(batch_shape, |bi, idx| {
        let a0 = offset(idx, &a_batch) * a_mat;
        let b0 = offset(idx, &b_batch) * b_mat;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f64;
                for kk in 0..k {
                    acc += a.data[a0 + i * k + kk] as f64 * b_at(b0, kk, j) as f64;
                }
                out[(bi * m + i) * n + j] = acc as f32;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_by_hand() {
        let a = Value::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = Value::new(vec![2, 2], vec![5.0, 6.0, 7.0, 8.0]);
        assert_eq!(matmul(&a, &b, false, &[2, 2]), [19.0, 22.0, 43.0, 50.0]);
        // bᵀ = [[5, 7], [6, 8]]
        assert_eq!(matmul(&a, &b, true, &[2, 2]), [17.0, 23.0, 39.0, 53.0]);
    }

    #[test]
    fn batched_broadcast_by_hand() {
        // a: two 1x2 matrices; b: one batch of a 2x1 matrix, broadcast over a's batch.
        let a = Value::new(vec![2, 1, 2], vec![1.0, 2.0, 3.0, 4.0]);
        let b = Value::new(vec![1, 2, 1], vec![10.0, 100.0]);
        assert_eq!(matmul(&a, &b, false, &[2, 1, 1]), [210.0, 430.0]);
        // Rank-3 a against a 2-D b folds the batch into rows.
        let b2 = Value::new(vec![2, 1], vec![10.0, 100.0]);
        assert_eq!(matmul(&a, &b2, false, &[2, 1, 1]), [210.0, 430.0]);
    }
}
