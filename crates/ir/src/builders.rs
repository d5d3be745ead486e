//! Convenience constructors, one per op, on top of [`Graph::add`].

use crate::dtype::DType;
use crate::error::IrError;
use crate::graph::{Graph, NodeId};
use crate::op::*;
use crate::shape::Shape;

type R = Result<NodeId, IrError>;

impl Graph {
    pub fn reshape(&mut self, x: NodeId, shape: impl Into<Shape>) -> R {
        self.add(
            Op::Reshape {
                shape: shape.into(),
            },
            &[x],
        )
    }
    pub fn transpose(&mut self, x: NodeId, perm: &[usize]) -> R {
        self.add(
            Op::Transpose {
                perm: perm.to_vec(),
            },
            &[x],
        )
    }
    pub fn narrow(&mut self, x: NodeId, axis: usize, start: usize, len: usize) -> R {
        self.add(Op::Narrow { axis, start, len }, &[x])
    }
    pub fn concat(&mut self, xs: &[NodeId], axis: usize) -> R {
        self.add(Op::Concat { axis }, xs)
    }
    pub fn expand(&mut self, x: NodeId, shape: impl Into<Shape>) -> R {
        self.add(
            Op::Expand {
                shape: shape.into(),
            },
            &[x],
        )
    }
    pub fn gather(&mut self, table: NodeId, indices: NodeId, axis: usize) -> R {
        self.add(Op::Gather { axis }, &[table, indices])
    }
    /// `dest` with `update` written at rows `start..` along `axis` (see [`Op::UpdateRows`]).
    pub fn update_rows(&mut self, dest: NodeId, update: NodeId, start: NodeId, axis: usize) -> R {
        self.add(Op::UpdateRows { axis }, &[dest, update, start])
    }
    pub fn cast(&mut self, x: NodeId, to: DType) -> R {
        self.add(Op::Cast { to }, &[x])
    }
    pub fn binary(&mut self, kind: BinaryOp, a: NodeId, b: NodeId) -> R {
        self.add(Op::Binary { kind }, &[a, b])
    }
    pub fn add_op(&mut self, a: NodeId, b: NodeId) -> R {
        self.binary(BinaryOp::Add, a, b)
    }
    pub fn mul(&mut self, a: NodeId, b: NodeId) -> R {
        self.binary(BinaryOp::Mul, a, b)
    }
    pub fn compare(&mut self, kind: CompareOp, a: NodeId, b: NodeId) -> R {
        self.add(Op::Compare { kind }, &[a, b])
    }
    pub fn where_(&mut self, cond: NodeId, a: NodeId, b: NodeId) -> R {
        self.add(Op::Where, &[cond, a, b])
    }
    pub fn activation(&mut self, kind: Activation, x: NodeId) -> R {
        self.add(Op::Activation { kind }, &[x])
    }
    pub fn reduce(&mut self, kind: ReduceOp, x: NodeId, axes: &[usize], keep_dim: bool) -> R {
        self.add(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keep_dim,
            },
            &[x],
        )
    }
    pub fn softmax(&mut self, x: NodeId, axis: usize) -> R {
        self.add(Op::Softmax { axis }, &[x])
    }
    /// LayerNorm over the last axis with optional `gamma` and `beta`.
    pub fn layer_norm(
        &mut self,
        x: NodeId,
        gamma: Option<NodeId>,
        beta: Option<NodeId>,
        eps: f32,
    ) -> R {
        self.norm(NormKind::Layer, x, gamma, beta, eps)
    }
    /// RMSNorm over the last axis with an optional `gamma`.
    pub fn rms_norm(&mut self, x: NodeId, gamma: Option<NodeId>, eps: f32) -> R {
        self.norm(NormKind::Rms, x, gamma, None, eps)
    }
    /// `x / max(||x||, eps)` over the last axis (unit length; [`NormKind::L2`]).
    pub fn l2_normalize(&mut self, x: NodeId, eps: f32) -> R {
        self.norm(NormKind::L2, x, None, None, eps)
    }
    fn norm(
        &mut self,
        kind: NormKind,
        x: NodeId,
        gamma: Option<NodeId>,
        beta: Option<NodeId>,
        eps: f32,
    ) -> R {
        let (affine, extra) = affine_inputs(gamma, beta);
        let mut inputs = vec![x];
        inputs.extend(extra);
        self.add(Op::Norm { kind, eps, affine }, &inputs)
    }
    /// `norm(x + residual + bias)` over the last axis.
    #[allow(clippy::too_many_arguments)]
    pub fn fused_residual_norm(
        &mut self,
        kind: NormKind,
        x: NodeId,
        residual: NodeId,
        bias: Option<NodeId>,
        gamma: Option<NodeId>,
        beta: Option<NodeId>,
        eps: f32,
    ) -> R {
        let (affine, extra) = affine_inputs(gamma, beta);
        let mut inputs = vec![x, residual];
        inputs.extend(bias);
        inputs.extend(extra);
        self.add(
            Op::FusedResidualNorm {
                kind,
                eps,
                affine,
                has_bias: bias.is_some(),
            },
            &inputs,
        )
    }
    pub fn matmul(&mut self, a: NodeId, b: NodeId) -> R {
        self.add(Op::MatMul { transpose_b: false }, &[a, b])
    }
    /// `a × bᵀ` with `b` stored `[N, K]` (the layout of linear-layer weights).
    pub fn matmul_t(&mut self, a: NodeId, b: NodeId) -> R {
        self.add(Op::MatMul { transpose_b: true }, &[a, b])
    }
    pub fn fused_matmul_bias_act(
        &mut self,
        a: NodeId,
        b: NodeId,
        bias: Option<NodeId>,
        act: Option<Activation>,
        transpose_b: bool,
    ) -> R {
        let mut inputs = vec![a, b];
        inputs.extend(bias);
        self.add(
            Op::FusedMatMulBiasAct {
                transpose_b,
                has_bias: bias.is_some(),
                act,
            },
            &inputs,
        )
    }
    pub fn cumsum(&mut self, x: NodeId, axis: usize, exclusive: bool) -> R {
        self.add(Op::Cumsum { axis, exclusive }, &[x])
    }
    pub fn argmax(&mut self, x: NodeId) -> R {
        self.add(Op::Argmax, &[x])
    }
    pub fn topk(&mut self, x: NodeId, k: usize, output: TopKOutput) -> R {
        self.add(Op::TopK { k, output }, &[x])
    }
}

fn affine_inputs(gamma: Option<NodeId>, beta: Option<NodeId>) -> (Affine, Vec<NodeId>) {
    match (gamma, beta) {
        (Some(g), Some(b)) => (Affine::ScaleShift, vec![g, b]),
        (Some(g), None) => (Affine::Scale, vec![g]),
        // A shift without a scale has no `Affine` form: the extra input makes shape inference
        // report an arity error naming the node.
        (None, Some(b)) => (Affine::None, vec![b]),
        (None, None) => (Affine::None, vec![]),
    }
}
