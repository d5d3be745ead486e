//! Argmax, top-k and sampling along the last axis.

use kiln_ir::rng::sample_uniform;

/// The first index of the largest value.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Indices ordered by descending value, equal values by lower index (NaN sorts first).
pub fn order_desc(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx
}

/// Parameters of [`kiln_ir::Op::Sample`].
pub struct SampleSpec {
    pub top_k: usize,
    pub top_p: f32,
    pub temperature: f32,
    pub seed: u64,
}

/// Samples one index from a row of logits.
pub fn sample(row: &[f32], spec: &SampleSpec, counter: u32, row_index: u32) -> usize {
    if spec.temperature == 0.0 {
        return argmax(row);
    }
    let t = spec.temperature as f64;
    let order = order_desc(row);
    let keep = if spec.top_k == 0 {
        order.len()
    } else {
        spec.top_k.min(order.len())
    };
    let kept = &order[..keep];
    let zmax = row[kept[0]] as f64 / t;
    let w: Vec<f64> = kept
        .iter()
        .map(|&i| (row[i] as f64 / t - zmax).exp())
        .collect();
    let total: f64 = w.iter().sum();
    // The nucleus: the smallest prefix whose probability mass reaches top_p.
    let mut n = w.len();
    if spec.top_p < 1.0 {
        let mut cum = 0.0;
        for (i, wi) in w.iter().enumerate() {
            cum += wi / total;
            if cum >= spec.top_p as f64 {
                n = i + 1;
                break;
            }
        }
    }
    let mass: f64 = w[..n].iter().sum();
    let u = sample_uniform(spec.seed, counter, row_index) as f64 * mass;
    let mut acc = 0.0;
    for (i, wi) in w[..n].iter().enumerate() {
        acc += wi;
        if u < acc {
            return kept[i];
        }
    }
    kept[n - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_and_order_by_hand() {
        assert_eq!(argmax(&[1.0, 5.0, 5.0, 2.0]), 1);
        assert_eq!(order_desc(&[1.0, 5.0, 5.0, 2.0]), [1, 2, 3, 0]);
    }

    #[test]
    fn sampling_rules() {
        let row = [0.0, 10.0, 9.0, -5.0];
        let greedy = SampleSpec {
            top_k: 0,
            top_p: 1.0,
            temperature: 0.0,
            seed: 1,
        };
        assert_eq!(sample(&row, &greedy, 0, 0), 1);
        // top_k = 1 always picks the largest, whatever the random draw.
        let k1 = SampleSpec {
            top_k: 1,
            top_p: 1.0,
            temperature: 1.0,
            seed: 9,
        };
        for c in 0..50 {
            assert_eq!(sample(&row, &k1, c, 0), 1);
        }
        // With top_k = 2 only indices 1 and 2 can appear, and both do over many draws.
        let k2 = SampleSpec { top_k: 2, ..k1 };
        let picks: Vec<usize> = (0..200).map(|c| sample(&row, &k2, c, 0)).collect();
        assert!(picks.iter().all(|&p| p == 1 || p == 2));
        assert!(picks.contains(&1) && picks.contains(&2));
        // A small top_p keeps only the most likely index (mass 0.73 > 0.5).
        let p = SampleSpec {
            top_k: 0,
            top_p: 0.5,
            temperature: 1.0,
            seed: 3,
        };
        assert!((0..50).all(|c| sample(&row, &p, c, 0) == 1));
    }
}
