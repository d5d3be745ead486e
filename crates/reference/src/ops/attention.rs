//! Scaled dot-product attention and rotary position embedding.

use crate::ops::reduce::softmax_line;
use crate::value::{broadcast_strides, offset, Value};
use kiln_ir::{AttentionMask, HeadLayout, RopeStyle};

/// Reads element (b, s, h, d) of a rank-4 tensor in `layout`.
fn at(x: &Value, layout: HeadLayout, b: usize, s: usize, h: usize, d: usize) -> f32 {
    let sh = &x.shape;
    let idx = match layout {
        HeadLayout::Bshd => ((b * sh[1] + s) * sh[2] + h) * sh[3] + d,
        HeadLayout::Bhsd => ((b * sh[1] + h) * sh[2] + s) * sh[3] + d,
    };
    x.data[idx]
}

/// The geometry of one attention call.
pub struct AttentionSpec {
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub scale: f32,
    pub mask: AttentionMask,
    pub layout: HeadLayout,
    /// Cached keys before these queries (0 when the op has no past length).
    pub past: usize,
    /// Whether keys at and after `past + seq_q` are ignored (only with a past length).
    pub limit_keys: bool,
}

/// Attention as specified by [`kiln_ir::Op::Attention`]; the output is shaped like `q`.
pub fn attention(
    spec: &AttentionSpec,
    q: &Value,
    k: &Value,
    v: &Value,
    mask: Option<&Value>,
) -> Vec<f32> {
    let (ba, sa, _, _) = spec.layout.axes();
    let (batch, seq_q, seq_k) = (q.shape[ba], q.shape[sa], k.shape[sa]);
    let group = spec.num_heads / spec.num_kv_heads;
    let n_keys = if spec.limit_keys {
        (spec.past + seq_q).min(seq_k)
    } else {
        seq_k
    };
    let scores_shape = [batch, spec.num_heads, seq_q, seq_k];
    let bias_strides = match (spec.mask, mask) {
        (AttentionMask::Bias, Some(m)) => Some(broadcast_strides(&m.shape, &scores_shape)),
        _ => None,
    };
    let mut out = vec![0f32; q.numel()];
    let mut scores = vec![f64::NEG_INFINITY; seq_k];
    for b in 0..batch {
        for h in 0..spec.num_heads {
            let hk = h / group;
            for i in 0..seq_q {
                for (j, score) in scores.iter_mut().enumerate() {
                    *score = f64::NEG_INFINITY;
                    let visible = j < n_keys
                        && match spec.mask {
                            AttentionMask::Causal => j <= spec.past + i,
                            AttentionMask::KeyPadding => {
                                mask.is_some_and(|m| m.data[b * seq_k + j] != 0.0)
                            }
                            AttentionMask::None | AttentionMask::Bias => true,
                        };
                    if !visible {
                        continue;
                    }
                    let mut dot = 0f64;
                    for d in 0..spec.head_dim {
                        dot += at(q, spec.layout, b, i, h, d) as f64
                            * at(k, spec.layout, b, j, hk, d) as f64;
                    }
                    let mut s = dot * spec.scale as f64;
                    if let (Some(st), Some(m)) = (&bias_strides, mask) {
                        s += m.data[offset(&[b, h, i, j], st)] as f64;
                    }
                    *score = s;
                }
                let p = softmax_line(&scores);
                for d in 0..spec.head_dim {
                    let mut acc = 0f64;
                    for (j, pj) in p.iter().enumerate() {
                        if *pj != 0.0 {
                            acc += pj * at(v, spec.layout, b, j, hk, d) as f64;
                        }
                    }
                    let (oa, ob) = match spec.layout {
                        HeadLayout::Bshd => ((b * seq_q + i) * spec.num_heads + h, d),
                        HeadLayout::Bhsd => ((b * spec.num_heads + h) * seq_q + i, d),
                    };
                    out[oa * spec.head_dim + ob] = acc as f32;
                }
            }
        }
    }
    out
}

/// Rotary embedding as specified by [`kiln_ir::Op::Rope`]; `offset` is the full position
/// offset (static plus input).
pub fn rope(
    x: &Value,
    layout: HeadLayout,
    rotary_dims: usize,
    theta: f32,
    style: RopeStyle,
    pos_offset: usize,
) -> Vec<f32> {
    let (_, sa, _, _) = layout.axes();
    let sh = &x.shape;
    let head_dim = sh[3];
    let mut out = x.data.clone();
    let half = rotary_dims / 2;
    // Every (b, ·, ·) row of head_dim values is rotated with the position of its seq index.
    for row in 0..x.numel() / head_dim {
        let s = match sa {
            1 => (row / sh[2]) % sh[1],
            _ => row % sh[2],
        };
        let pos = (pos_offset + s) as f64;
        let base = row * head_dim;
        for i in 0..half {
            let freq = (theta as f64).powf(-2.0 * i as f64 / rotary_dims as f64);
            let (sin, cos) = (pos * freq).sin_cos();
            let (a, b) = match style {
                RopeStyle::RotateHalf => (base + i, base + i + half),
                RopeStyle::Interleaved => (base + 2 * i, base + 2 * i + 1),
            };
            let (x1, x2) = (x.data[a] as f64, x.data[b] as f64);
            out[a] = (x1 * cos - x2 * sin) as f32;
            out[b] = (x1 * sin + x2 * cos) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mask: AttentionMask) -> AttentionSpec {
        AttentionSpec {
            num_heads: 1,
            num_kv_heads: 1,
            head_dim: 1,
            scale: 1.0,
            mask,
            layout: HeadLayout::Bshd,
            past: 0,
            limit_keys: false,
        }
    }

    #[test]
    fn attention_by_hand() {
        // One query scoring keys 0 and ln 3: weights 1/4 and 3/4 over values 4 and 8.
        let q = Value::new(vec![1, 1, 1, 1], vec![1.0]);
        let k = Value::new(vec![1, 2, 1, 1], vec![0.0, 3f32.ln()]);
        let v = Value::new(vec![1, 2, 1, 1], vec![4.0, 8.0]);
        let o = attention(&spec(AttentionMask::None), &q, &k, &v, None);
        assert!((o[0] - 7.0).abs() < 1e-6);
        // Padding out the second key leaves the first value.
        let pad = Value::new(vec![1, 2], vec![1.0, 0.0]);
        let o = attention(&spec(AttentionMask::KeyPadding), &q, &k, &v, Some(&pad));
        assert_eq!(o[0], 4.0);
    }

    #[test]
    fn causal_with_past() {
        // Two queries after one cached key, a cache of 4 rows: query 0 sees keys 0..=1.
        let q = Value::new(vec![1, 2, 1, 1], vec![0.0, 0.0]);
        let k = Value::new(vec![1, 4, 1, 1], vec![0.0; 4]);
        let v = Value::new(vec![1, 4, 1, 1], vec![1.0, 3.0, 5.0, 100.0]);
        let mut s = spec(AttentionMask::Causal);
        s.past = 1;
        s.limit_keys = true;
        let o = attention(&s, &q, &k, &v, None);
        assert_eq!(o, [2.0, 3.0]);
    }

    #[test]
    fn rope_by_hand() {
        // Position 1, theta irrelevant for pair 0 (frequency 1): rotate (1, 0) by 1 radian.
        let x = Value::new(vec![1, 2, 1, 2], vec![1.0, 0.0, 1.0, 0.0]);
        let o = rope(&x, HeadLayout::Bshd, 2, 10000.0, RopeStyle::RotateHalf, 0);
        assert_eq!(&o[..2], &[1.0, 0.0]);
        assert!((o[2] - 1f32.cos()).abs() < 1e-7 && (o[3] - 1f32.sin()).abs() < 1e-7);
    }
}
