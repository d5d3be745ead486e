//! Elementwise ops with numpy broadcasting.

use crate::value::{broadcast_strides, for_each_index, offset, Value};
use kiln_ir::{Activation, BinaryOp, CompareOp};

/// Applies `f` to the broadcast elements of `inputs`, producing `out_shape`.
pub fn broadcast_map(
    inputs: &[&Value],
    out_shape: &[usize],
    f: impl Fn(&[f32]) -> f32,
) -> Vec<f32> {
    let strides: Vec<Vec<usize>> = inputs
        .iter()
        .map(|v| broadcast_strides(&v.shape, out_shape))
        .collect();
    let mut out = vec![0f32; out_shape.iter().product()];
    let mut args = vec![0f32; inputs.len()];
    for_each_index(out_shape, |flat, idx| {
        for (k, v) in inputs.iter().enumerate() {
            args[k] = v.data[offset(idx, &strides[k])];
        }
        out[flat] = f(&args);
    });
    out
}

/// Binary arithmetic in f64, rounded to f32. Integer dtypes are rounded again by the caller
/// (so integer division truncates toward zero).
pub fn binary(kind: BinaryOp, a: f32, b: f32) -> f32 {
    let (a, b) = (a as f64, b as f64);
    (match kind {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        BinaryOp::Max => a.max(b),
        BinaryOp::Min => a.min(b),
        BinaryOp::Pow => a.powf(b),
    }) as f32
}

pub fn compare(kind: CompareOp, a: f32, b: f32) -> f32 {
    let r = match kind {
        CompareOp::Eq => a == b,
        CompareOp::Ne => a != b,
        CompareOp::Lt => a < b,
        CompareOp::Le => a <= b,
        CompareOp::Gt => a > b,
        CompareOp::Ge => a >= b,
    };
    f32::from(r)
}

/// The unary functions, evaluated in f64.
pub fn activation(kind: Activation, x: f32) -> f32 {
    let x = x as f64;
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    (match kind {
        Activation::Relu => x.max(0.0),
        Activation::Sigmoid => sigmoid(x),
        Activation::Tanh => x.tanh(),
        Activation::Exp => x.exp(),
        Activation::Log => x.ln(),
        Activation::Sqrt => x.sqrt(),
        Activation::Rsqrt => 1.0 / x.sqrt(),
        Activation::Neg => -x,
        Activation::Abs => x.abs(),
        Activation::Gelu => 0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2)),
        Activation::GeluTanh => {
            let c = (2.0 / std::f64::consts::PI).sqrt();
            0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
        }
        Activation::Silu => x * sigmoid(x),
        Activation::Round => x.round_ties_even(),
        Activation::Sin => x.sin(),
        Activation::Cos => x.cos(),
        Activation::Tan => x.tan(),
        Activation::Atan => x.atan(),
    }) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_by_hand() {
        assert_eq!(activation(Activation::Relu, -1.0), 0.0);
        assert!((activation(Activation::Sigmoid, 0.0) - 0.5).abs() < 1e-7);
        // GELU(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429
        assert!((activation(Activation::Gelu, 1.0) - 0.841_344_8).abs() < 1e-6);
        // tanh approximation at 1: 0.8411919906082768
        assert!((activation(Activation::GeluTanh, 1.0) - 0.841_192).abs() < 1e-6);
        assert!((activation(Activation::Silu, 2.0) - 1.761_594_2).abs() < 1e-6);
        assert_eq!(activation(Activation::Round, 2.5), 2.0);
        assert_eq!(activation(Activation::Round, -3.5), -4.0);
        assert_eq!(activation(Activation::Rsqrt, 4.0), 0.5);
        assert!((activation(Activation::Atan, 1.0) - std::f32::consts::FRAC_PI_4).abs() < 1e-7);
    }

    #[test]
    fn broadcasting_by_hand() {
        let a = Value::new(vec![2, 1], vec![1.0, 2.0]);
        let b = Value::new(vec![3], vec![10.0, 20.0, 30.0]);
        let out = broadcast_map(&[&a, &b], &[2, 3], |v| v[0] + v[1]);
        assert_eq!(out, [11.0, 21.0, 31.0, 12.0, 22.0, 32.0]);
    }
}
