//! Data movement: transpose, narrow, concat, expand, gather.

use crate::value::{broadcast_strides, for_each_index, offset, split_at_axis, strides, Value};

pub fn transpose(x: &Value, perm: &[usize]) -> Value {
    let in_strides = strides(&x.shape);
    let out_shape: Vec<usize> = perm.iter().map(|&p| x.shape[p]).collect();
    let perm_strides: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let mut out = vec![0f32; x.numel()];
    for_each_index(&out_shape, |flat, idx| {
        out[flat] = x.data[offset(idx, &perm_strides)]
    });
    Value::new(out_shape, out)
}

pub fn narrow(x: &Value, axis: usize, start: usize, len: usize) -> Value {
    let (outer, size, inner) = split_at_axis(&x.shape, axis);
    let mut out = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = o * size * inner + start * inner;
        out.extend_from_slice(&x.data[base..base + len * inner]);
    }
    let mut shape = x.shape.clone();
    shape[axis] = len;
    Value::new(shape, out)
}

pub fn concat(xs: &[&Value], axis: usize) -> Value {
    let mut shape = xs[0].shape.clone();
    shape[axis] = xs.iter().map(|x| x.shape[axis]).sum();
    let (outer, _, inner) = split_at_axis(&xs[0].shape, axis);
    let mut out = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for x in xs {
            let chunk = x.shape[axis] * inner;
            out.extend_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
        }
    }
    Value::new(shape, out)
}

pub fn expand(x: &Value, shape: &[usize]) -> Value {
    let s = broadcast_strides(&x.shape, shape);
    let mut out = vec![0f32; shape.iter().product()];
    for_each_index(shape, |flat, idx| out[flat] = x.data[offset(idx, &s)]);
    Value::new(shape.to_vec(), out)
}

/// numpy `take` along `axis`. Returns the first out-of-range index as an error.
pub fn gather(table: &Value, indices: &Value, axis: usize) -> Result<Value, i64> {
    let (outer, size, inner) = split_at_axis(&table.shape, axis);
    let mut shape: Vec<usize> = table.shape[..axis].to_vec();
    shape.extend(&indices.shape);
    shape.extend(&table.shape[axis + 1..]);
    let mut out = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for &raw in &indices.data {
            let i = raw as i64;
            if i < 0 || i as usize >= size {
                return Err(i);
            }
            let base = (o * size + i as usize) * inner;
            out.extend_from_slice(&table.data[base..base + inner]);
        }
    }
    Ok(Value::new(shape, out))
}

/// `dest` with `update`'s rows written at `start..` along `axis`; rows that fall outside
/// `dest` are dropped.
pub fn update_rows(dest: &Value, update: &Value, start: i64, axis: usize) -> Value {
    let (outer, size, inner) = split_at_axis(&dest.shape, axis);
    let rows = update.shape[axis];
    let mut out = dest.data.clone();
    for o in 0..outer {
        for r in 0..rows {
            let at = start + r as i64;
            if at < 0 || at >= size as i64 {
                continue;
            }
            let src = (o * rows + r) * inner;
            let dst = (o * size + at as usize) * inner;
            out[dst..dst + inner].copy_from_slice(&update.data[src..src + inner]);
        }
    }
    Value::new(dest.shape.clone(), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(shape: &[usize]) -> Value {
        let n = shape.iter().product::<usize>();
        Value::new(shape.to_vec(), (0..n).map(|i| i as f32).collect())
    }

    #[test]
    fn update_rows_by_hand() {
        let dest = v(&[2, 3, 2]);
        let update = Value::new(vec![2, 2, 2], vec![-1.0; 8]);
        let u = update_rows(&dest, &update, 1, 1);
        assert_eq!(
            u.data,
            [0.0, 1.0, -1.0, -1.0, -1.0, -1.0, 6.0, 7.0, -1.0, -1.0, -1.0, -1.0]
        );
        // Rows past either end are dropped.
        let u = update_rows(&dest, &update, 2, 1);
        assert_eq!(u.data[4..6], [-1.0, -1.0]);
        assert_eq!(u.data[..4], dest.data[..4]);
        let u = update_rows(&dest, &update, -1, 1);
        assert_eq!(u.data[..2], [-1.0, -1.0]);
        assert_eq!(u.data[2..6], dest.data[2..6]);
    }

    #[test]
    fn transpose_by_hand() {
        let t = transpose(&v(&[2, 3]), &[1, 0]);
        assert_eq!(t.shape, [3, 2]);
        assert_eq!(t.data, [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
    }

    #[test]
    fn narrow_concat_by_hand() {
        let x = v(&[2, 4]);
        let n = narrow(&x, 1, 1, 2);
        assert_eq!(n.data, [1.0, 2.0, 5.0, 6.0]);
        let c = concat(&[&n, &narrow(&x, 1, 0, 1)], 1);
        assert_eq!(c.shape, [2, 3]);
        assert_eq!(c.data, [1.0, 2.0, 0.0, 5.0, 6.0, 4.0]);
    }

    #[test]
    fn expand_and_gather_by_hand() {
        let e = expand(&v(&[2, 1]), &[2, 3]);
        assert_eq!(e.data, [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let idx = Value::new(vec![3], vec![2.0, 0.0, 2.0]);
        let g = gather(&v(&[3, 2]), &idx, 0).unwrap();
        assert_eq!(g.shape, [3, 2]);
        assert_eq!(g.data, [4.0, 5.0, 0.0, 1.0, 4.0, 5.0]);
        let g1 = gather(&v(&[2, 3]), &Value::new(vec![1], vec![1.0]), 1).unwrap();
        assert_eq!(g1.data, [1.0, 4.0]);
        assert_eq!(
            gather(&v(&[3, 2]), &Value::new(vec![1], vec![3.0]), 0),
            Err(3)
        );
    }
}
