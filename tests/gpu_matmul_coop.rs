//! f32 matmuls compiled with `MatmulInputs::F16WhereFaster` against kiln-reference: on a device
//! with cooperative matrices they run `matmul_coop` (f16 inputs, f32 accumulation); elsewhere
//! (Mesa's software driver in CI) the option must fall back to the exact f32 kernels.
//!
//! Tolerance, per output: rounding an input to f16 changes it by at most 2^-11 of itself, so a
//! product a*b by at most (2^-10 + 2^-22)|a*b|, and the output by 2^-10 * sum_k |a_k * b_k|,
//! plus f32 accumulation (1e-5 * sqrt(K), as in gpu_matmul.rs) and the f16 subnormal spacing
//! 2^-24 per term. The f32 fallback must meet the f32 bound alone.

mod common;

use kiln::ir::{Activation, DType, Dim, Graph, HostTensor, Shape};
use kiln::reference::evaluate;
use kiln::runtime::{CompileOptions, Executable, MatmulInputs};

fn options() -> CompileOptions {
    CompileOptions {
        matmul_inputs: MatmulInputs::F16WhereFaster,
        ..Default::default()
    }
}

/// One matmul case: `a` [batch.., m, k] times `b` ([k, n] or, transposed, [n, k]), with an
/// optional bias + activation epilogue.
struct Case {
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    transpose_b: bool,
    epilogue: Option<Activation>,
}

impl Case {
    fn name(&self) -> String {
        format!(
            "{}x{}x{}x{} t={} {:?}",
            self.batch, self.m, self.k, self.n, self.transpose_b, self.epilogue
        )
    }

    fn b_shape(&self) -> [usize; 2] {
        if self.transpose_b {
            [self.n, self.k]
        } else {
            [self.k, self.n]
        }
    }

    fn graph(&self, rows: Dim) -> Graph {
        let mut g = Graph::new();
        let shape = Shape(vec![Dim::Static(self.batch), rows, Dim::Static(self.k)]);
        let a = g.input("a", DType::F32, shape).unwrap();
        let b = g.param("b", DType::F32, self.b_shape()).unwrap();
        let y = match self.epilogue {
            Some(act) => {
                let bias = g.param("bias", DType::F32, [self.n]).unwrap();
                g.fused_matmul_bias_act(a, b, Some(bias), Some(act), self.transpose_b)
                    .unwrap()
            }
            None if self.transpose_b => g.matmul_t(a, b).unwrap(),
            None => g.matmul(a, b).unwrap(),
        };
        g.output(y).unwrap();
        g
    }

    fn params(&self) -> Vec<(&'static str, HostTensor)> {
        let mut p = vec![("b", common::signed_unit_tensor(&self.b_shape(), 7))];
        if self.epilogue.is_some() {
            p.push(("bias", common::signed_unit_tensor(&[self.n], 8)));
        }
        p
    }

    /// The error bound of every output at `m` rows: the product's, times 1.2 with an epilogue
    /// (GELU's and SiLU's slopes stay below 1.13 and 1.1).
    fn bounds(&self, a: &[f32], b: &[f32], m: usize, f16: bool) -> Vec<f32> {
        let (k, n) = (self.k, self.n);
        let mut out = Vec::with_capacity(self.batch * m * n);
        for z in 0..self.batch {
            for i in 0..m {
                for j in 0..n {
                    let mut sum_abs = 0f64;
                    for kk in 0..k {
                        let bv = if self.transpose_b {
                            b[j * k + kk]
                        } else {
                            b[kk * n + j]
                        };
                        sum_abs += (a[(z * m + i) * k + kk] * bv).abs() as f64;
                    }
                    let exact = 1e-5 * (k as f64).sqrt();
                    let rounding = if f16 {
                        sum_abs * (2f64.powi(-10) + 2f64.powi(-22)) + k as f64 * 2f64.powi(-24)
                    } else {
                        0.0
                    };
                    let slope = if self.epilogue.is_some() { 1.2 } else { 1.0 };
                    out.push(((exact + rounding) * slope) as f32);
                }
            }
        }
        out
    }

    /// Runs `rows_seq` row counts through one executable compiled for the largest.
    fn check(&self, rows_seq: &[usize]) {
        let dev = common::device();
        let max = *rows_seq.iter().max().unwrap();
        let g = self.graph(Dim::bounded("rows", max));
        let mut exe = Executable::compile(&dev, &g, &options())
            .unwrap_or_else(|e| panic!("{}: {e}", self.name()));
        let coop = exe.uses_cooperative_matrix();
        assert_eq!(coop, dev.info().cooperative_f16, "{}", self.name());
        let params = self.params();
        for (name, t) in &params {
            exe.set_param(name, t).unwrap();
        }
        let refs: Vec<(&str, HostTensor)> = params.iter().map(|(n, t)| (*n, t.clone())).collect();
        for &m in rows_seq {
            let a = common::signed_unit_tensor(&[self.batch, m, self.k], m as u64);
            let got = exe.run(&[("a", &a)]).unwrap()[0].to_f32();
            let fixed = self.graph(Dim::Static(m));
            let want = evaluate(&fixed, &refs, &[("a", a.clone())]).unwrap()[0].to_f32();
            // Up to SKINNY_MAX_ROWS rows (all leading dims folded) against [N, K] weights run
            // the f32 skinny variant on either kernel: they get the f32 bound.
            let skinny = self.transpose_b
                && self.batch * m <= kiln::kernels::families::matmul::SKINNY_MAX_ROWS;
            let bounds = self.bounds(&a.to_f32(), &params[0].1.to_f32(), m, coop && !skinny);
            assert_eq!(got.len(), want.len());
            for (i, ((g, w), tol)) in got.iter().zip(&want).zip(&bounds).enumerate() {
                assert!(
                    (g - w).abs() <= *tol,
                    "{} at {m} rows, element {i}: got {g}, want {w}, bound {tol} (coop: {coop})",
                    self.name()
                );
            }
        }
    }
}

#[test]
fn ragged_tiles_plain_b() {
    Case {
        batch: 1,
        m: 300,
        k: 40,
        n: 70,
        transpose_b: false,
        epilogue: None,
    }
    .check(&[300]);
}

#[test]
fn transposed_b_with_bias_and_gelu() {
    Case {
        batch: 1,
        m: 200,
        k: 130,
        n: 96,
        transpose_b: true,
        epilogue: Some(Activation::Gelu),
    }
    .check(&[200]);
}

#[test]
fn batched_and_exact_tiles() {
    Case {
        batch: 3,
        m: 128,
        k: 64,
        n: 64,
        transpose_b: false,
        epilogue: None,
    }
    .check(&[128]);
}

#[test]
fn skinny_and_cooperative_variants_across_extents() {
    // Up to 16 rows of [N, K] weights take the (f32) skinny kernel, more the cooperative one
    // (where the device has it): one executable switching kernels with the extent.
    Case {
        batch: 2,
        m: 70,
        k: 96,
        n: 40,
        transpose_b: true,
        epilogue: Some(Activation::Silu),
    }
    .check(&[70, 1, 8, 9, 33, 70]);
}
