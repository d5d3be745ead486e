// @file activations.wgsl
// Shared elementwise functions, prepended to every kernel family that applies activations
// (elementwise, matmul epilogues), so there is one definition of each.

fn nan() -> f32 {
    return bitcast<f32>(0x7fc00000u);
}

// erf by Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7, under f32 resolution near 1).
fn erf_approx(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.3275911 * abs(x));
    let y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * exp(-x * x);
    return select(-y, y, x >= 0.0);
}

fn sigmoid(x: f32) -> f32 {
    return 1.0 / (1.0 + exp(-x));
}

// Op ids follow kiln_ir::Activation's declaration order.
fn apply_unary(op: u32, x: f32) -> f32 {
    switch op {
        case 0u: { return max(x, 0.0); }
        case 1u: { return sigmoid(x); }
        // tanh saturates long before |x| = 15; clamping avoids inf/inf in naive tanh lowerings.
        case 2u: { return tanh(clamp(x, -15.0, 15.0)); }
        case 3u: { return exp(x); }
        case 4u: { return log(x); }
        case 5u: { return sqrt(x); }
        case 6u: { return inverseSqrt(x); }
        case 7u: { return -x; }
        case 8u: { return abs(x); }
        case 9u: { return 0.5 * x * (1.0 + erf_approx(x * 0.70710678118654752)); }
        case 10u: {
            let inner = 0.7978845608028654 * (x + 0.044715 * x * x * x);
            return 0.5 * x * (1.0 + tanh(clamp(inner, -15.0, 15.0)));
        }
        case 11u: { return x * sigmoid(x); }
        case 12u: { return round(x); }
        case 13u: { return sin(x); }
        case 14u: { return cos(x); }
        case 15u: { return tan(x); }
        case 16u: { return atan(x); }
        default: { return nan(); }
    }
}

