//! Reductions, softmax, cumulative sums and normalisations (f64 accumulation).

use crate::value::{for_each_index, split_at_axis, strides, Value};
use kiln_ir::{NormKind, ReduceOp};

pub fn reduce(x: &Value, kind: ReduceOp, axes: &[usize], keep_dim: bool) -> Value {
    let kept_shape: Vec<usize> = x
        .shape
        .iter()
        .enumerate()
        .map(|(i, &d)| if axes.contains(&i) { 1 } else { d })
        .collect();
    let kept_strides = strides(&kept_shape);
    let n_out: usize = kept_shape.iter().product();
    let count = (x.numel() / n_out.max(1)) as f64;
    let init = match kind {
        ReduceOp::Sum | ReduceOp::Mean => 0.0,
        ReduceOp::Prod => 1.0,
        ReduceOp::Max => f64::NEG_INFINITY,
        ReduceOp::Min => f64::INFINITY,
    };
    let mut acc = vec![init; n_out];
    for_each_index(&x.shape, |flat, idx| {
        let o: usize = idx
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if axes.contains(&i) {
                    0
                } else {
                    v * kept_strides[i]
                }
            })
            .sum();
        let v = x.data[flat] as f64;
        acc[o] = match kind {
            ReduceOp::Sum | ReduceOp::Mean => acc[o] + v,
            ReduceOp::Prod => acc[o] * v,
            ReduceOp::Max => acc[o].max(v),
            ReduceOp::Min => acc[o].min(v),
        };
    });
    if kind == ReduceOp::Mean {
        acc.iter_mut().for_each(|a| *a /= count);
    }
    let shape = if keep_dim {
        kept_shape
    } else {
        x.shape
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect()
    };
    Value::new(shape, acc.into_iter().map(|a| a as f32).collect())
}

/// Calls `f` on every 1-D line of `x` along `axis`, writing the result in place of the line.
fn map_lines(x: &Value, axis: usize, mut f: impl FnMut(&[f64]) -> Vec<f64>) -> Value {
    let (outer, size, inner) = split_at_axis(&x.shape, axis);
    let mut out = vec![0f32; x.numel()];
    let mut line = vec![0f64; size];
    for o in 0..outer {
        for i in 0..inner {
            for (k, l) in line.iter_mut().enumerate() {
                *l = x.data[(o * size + k) * inner + i] as f64;
            }
            for (k, r) in f(&line).into_iter().enumerate() {
                out[(o * size + k) * inner + i] = r as f32;
            }
        }
    }
    Value::new(x.shape.clone(), out)
}

/// Numerically stable softmax. A line of all `-inf` gives zeros.
pub fn softmax_line(line: &[f64]) -> Vec<f64> {
    let max = line.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return vec![0.0; line.len()];
    }
    let e: Vec<f64> = line.iter().map(|v| (v - max).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

pub fn softmax(x: &Value, axis: usize) -> Value {
    map_lines(x, axis, softmax_line)
}

pub fn cumsum(x: &Value, axis: usize, exclusive: bool) -> Value {
    map_lines(x, axis, |line| {
        let mut acc = 0.0;
        line.iter()
            .map(|v| {
                let before = acc;
                acc += v;
                if exclusive {
                    before
                } else {
                    acc
                }
            })
            .collect()
    })
}

/// Normalises every row of the last axis, then applies the optional scale and shift.
pub fn norm(
    x: &Value,
    kind: NormKind,
    eps: f32,
    gamma: Option<&Value>,
    beta: Option<&Value>,
) -> Value {
    let last = x.shape.len() - 1;
    map_lines(x, last, |row| {
        let n = row.len() as f64;
        let (center, denom) = match kind {
            NormKind::Layer => {
                let mean = row.iter().sum::<f64>() / n;
                let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
                (mean, (var + eps as f64).sqrt())
            }
            NormKind::Rms => {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / n;
                (0.0, (ms + eps as f64).sqrt())
            }
            NormKind::L2 => {
                let ss = row.iter().map(|v| v * v).sum::<f64>();
                (0.0, ss.sqrt().max(eps as f64))
            }
        };
        row.iter()
            .enumerate()
            .map(|(k, v)| {
                let mut y = (v - center) / denom;
                if let Some(g) = gamma {
                    y *= g.data[k] as f64;
                }
                if let Some(b) = beta {
                    y += b.data[k] as f64;
                }
                y
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reduce_by_hand() {
        let x = Value::new(vec![2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(reduce(&x, ReduceOp::Sum, &[1], false).data, [6.0, 15.0]);
        assert_eq!(reduce(&x, ReduceOp::Mean, &[0], true).shape, [1, 3]);
        assert_eq!(reduce(&x, ReduceOp::Mean, &[0], true).data, [2.5, 3.5, 4.5]);
        assert_eq!(reduce(&x, ReduceOp::Max, &[0, 1], false).data, [6.0]);
        assert_eq!(
            reduce(&x, ReduceOp::Min, &[1, 0], false).shape,
            Vec::<usize>::new()
        );
        assert_eq!(reduce(&x, ReduceOp::Prod, &[1], false).data, [6.0, 120.0]);
    }

    #[test]
    fn softmax_cumsum_by_hand() {
        let x = Value::new(vec![1, 3], vec![0.0, (2f32).ln(), f32::NEG_INFINITY]);
        let s = softmax(&x, 1);
        assert!((s.data[0] - 1.0 / 3.0).abs() < 1e-7 && (s.data[1] - 2.0 / 3.0).abs() < 1e-7);
        assert_eq!(s.data[2], 0.0);
        let x = Value::new(vec![2, 2], vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(cumsum(&x, 0, false).data, [1.0, 2.0, 4.0, 6.0]);
        assert_eq!(cumsum(&x, 1, true).data, [0.0, 1.0, 0.0, 3.0]);
    }

    #[test]
    fn norms_by_hand() {
        let x = Value::new(vec![1, 2], vec![1.0, 3.0]);
        // mean 2, var 1: (-1, 1) / sqrt(1 + 0)
        assert_eq!(norm(&x, NormKind::Layer, 0.0, None, None).data, [-1.0, 1.0]);
        let g = Value::new(vec![2], vec![2.0, 3.0]);
        let b = Value::new(vec![2], vec![0.5, 0.5]);
        assert_eq!(
            norm(&x, NormKind::Layer, 0.0, Some(&g), Some(&b)).data,
            [-1.5, 3.5]
        );
        // rms = sqrt((1 + 9) / 2) = sqrt 5
        let r = norm(&x, NormKind::Rms, 0.0, None, None);
        assert!((r.data[0] - 1.0 / 5f32.sqrt()).abs() < 1e-7);
        // L2: (3, 4) / 5; a zero row over max(0, eps) stays zero.
        let v = Value::new(vec![2, 2], vec![3.0, 4.0, 0.0, 0.0]);
        assert_eq!(
            norm(&v, NormKind::L2, 1e-12, None, None).data,
            [0.6, 0.8, 0.0, 0.0]
        );
    }
}
