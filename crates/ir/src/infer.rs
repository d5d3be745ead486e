//! Shape and dtype inference: one pure function per op family.

use crate::dtype::DType;
use crate::error::InferError;
use crate::op::*;
use crate::shape::{broadcast_shapes, Dim, Shape};

/// What inference sees of one input.
#[derive(Debug, Clone, Copy)]
pub struct Operand<'a> {
    pub shape: &'a Shape,
    pub dtype: DType,
}

type Inferred = Result<(Shape, DType), InferError>;

/// Infers the output shape and dtype of `op` applied to `inputs`.
///
/// Source ops (input, param, constant) carry their own shape and are not handled here.
pub fn infer(op: &Op, inputs: &[Operand<'_>]) -> Inferred {
    match op {
        Op::Input { .. } | Op::Param { .. } | Op::Constant { .. } => {
            Err(InferError::Attr("source ops carry their own shape".into()))
        }
        Op::Reshape { shape } => reshape(inputs, shape),
        Op::Transpose { perm } => transpose(inputs, perm),
        Op::Narrow { axis, start, len } => narrow(inputs, *axis, *start, *len),
        Op::Concat { axis } => concat(inputs, *axis),
        Op::Expand { shape } => expand(inputs, shape),
        Op::Gather { axis } => gather(inputs, *axis),
        Op::UpdateRows { axis } => update_rows(inputs, *axis),
        Op::Cast { to } => cast(inputs, *to),
        Op::Binary { .. } => binary(inputs),
        Op::Compare { .. } => binary(inputs).map(|(s, _)| (s, DType::Bool)),
        Op::Where => where_(inputs),
        Op::Activation { .. } => {
            arity(inputs, 1)?;
            float(inputs, 0)?;
            Ok((inputs[0].shape.clone(), inputs[0].dtype))
        }
        Op::Reduce {
            kind,
            axes,
            keep_dim,
        } => reduce(inputs, *kind, axes, *keep_dim),
        Op::Softmax { axis } => {
            arity(inputs, 1)?;
            float(inputs, 0)?;
            check_axis(*axis, inputs[0].shape.rank())?;
            Ok((inputs[0].shape.clone(), inputs[0].dtype))
        }
        Op::Norm { eps, affine, .. } => norm(inputs, *eps, *affine, 1, false),
        Op::FusedResidualNorm {
            eps,
            affine,
            has_bias,
            ..
        } => norm(inputs, *eps, *affine, 2, *has_bias),
        Op::MatMul { transpose_b } => matmul(inputs, *transpose_b, false),
        Op::FusedMatMulBiasAct {
            transpose_b,
            has_bias,
            ..
        } => matmul(inputs, *transpose_b, *has_bias),
        Op::Attention {
            num_heads,
            num_kv_heads,
            head_dim,
            scale,
            mask,
            layout,
            has_past_len,
        } => attention(
            inputs,
            *num_heads,
            *num_kv_heads,
            *head_dim,
            *scale,
            *mask,
            *layout,
            *has_past_len,
        ),
        Op::Rope {
            head_dim,
            rotary_dims,
            theta,
            layout,
            has_offset_input,
            ..
        } => rope(
            inputs,
            *head_dim,
            *rotary_dims,
            *theta,
            *layout,
            *has_offset_input,
        ),
        Op::Cumsum { axis, .. } => {
            arity(inputs, 1)?;
            numeric(inputs, 0)?;
            check_axis(*axis, inputs[0].shape.rank())?;
            Ok((inputs[0].shape.clone(), inputs[0].dtype))
        }
        Op::Argmax => {
            arity(inputs, 1)?;
            numeric(inputs, 0)?;
            let last = nonempty_last(inputs[0].shape)?;
            let _ = last;
            Ok((drop_last(inputs[0].shape), DType::I32))
        }
        Op::TopK { k, output } => {
            arity(inputs, 1)?;
            numeric(inputs, 0)?;
            let last = nonempty_last(inputs[0].shape)?;
            match last.upper_bound() {
                Some(n) if *k >= 1 && *k <= n && last.as_static().is_some() => {}
                _ => {
                    return Err(InferError::Attr(format!(
                        "k = {k} must be in 1..={last} and the last axis static"
                    )))
                }
            }
            let mut dims = inputs[0].shape.0.clone();
            *dims.last_mut().expect("nonempty_last proved rank >= 1") = Dim::Static(*k);
            let dt = match output {
                TopKOutput::Values => inputs[0].dtype,
                TopKOutput::Indices => DType::I32,
            };
            Ok((Shape(dims), dt))
        }
        Op::Sample {
            top_p,
            temperature,
            has_counter,
            ..
        } => {
            arity(inputs, 1 + usize::from(*has_counter))?;
            float(inputs, 0)?;
            nonempty_last(inputs[0].shape)?;
            if !(*top_p > 0.0 && *top_p <= 1.0) {
                return Err(InferError::Attr(format!(
                    "top_p = {top_p} must be in (0, 1]"
                )));
            }
            if !(temperature.is_finite() && *temperature >= 0.0) {
                return Err(InferError::Attr(format!(
                    "temperature = {temperature} must be finite and >= 0"
                )));
            }
            if *has_counter {
                one_integer(inputs, 1)?;
            }
            Ok((drop_last(inputs[0].shape), DType::I32))
        }
    }
}

fn arity(inputs: &[Operand<'_>], n: usize) -> Result<(), InferError> {
    if inputs.len() != n {
        return Err(InferError::Arity {
            expected: n.to_string(),
            got: inputs.len(),
        });
    }
    Ok(())
}

fn check_axis(axis: usize, rank: usize) -> Result<(), InferError> {
    if axis >= rank {
        return Err(InferError::Axis { axis, rank });
    }
    Ok(())
}

fn dtype_err(inputs: &[Operand<'_>], i: usize, expected: &str) -> InferError {
    InferError::DType {
        input: i,
        expected: expected.into(),
        got: inputs[i].dtype,
    }
}

fn float(inputs: &[Operand<'_>], i: usize) -> Result<(), InferError> {
    if !inputs[i].dtype.is_float() {
        return Err(dtype_err(inputs, i, "f32, f16 or bf16"));
    }
    Ok(())
}

fn numeric(inputs: &[Operand<'_>], i: usize) -> Result<(), InferError> {
    let dt = inputs[i].dtype;
    if !(dt.is_float() || dt.is_integer()) {
        return Err(dtype_err(inputs, i, "a float or integer type"));
    }
    Ok(())
}

fn not_quantized(inputs: &[Operand<'_>], i: usize) -> Result<(), InferError> {
    if inputs[i].dtype.is_quantized() {
        return Err(dtype_err(inputs, i, "a non-quantized type"));
    }
    Ok(())
}

fn same_dtype(inputs: &[Operand<'_>], i: usize, j: usize) -> Result<(), InferError> {
    if inputs[i].dtype != inputs[j].dtype {
        return Err(dtype_err(inputs, j, inputs[i].dtype.name()));
    }
    Ok(())
}

fn rank_at_least(inputs: &[Operand<'_>], i: usize, r: usize) -> Result<(), InferError> {
    let got = inputs[i].shape.rank();
    if got < r {
        return Err(InferError::Rank {
            input: i,
            expected: format!(">= {r}"),
            got,
        });
    }
    Ok(())
}

fn rank_exactly(inputs: &[Operand<'_>], i: usize, r: usize) -> Result<(), InferError> {
    let got = inputs[i].shape.rank();
    if got != r {
        return Err(InferError::Rank {
            input: i,
            expected: r.to_string(),
            got,
        });
    }
    Ok(())
}

/// An integer tensor of exactly one element (a runtime scalar such as a position).
fn one_integer(inputs: &[Operand<'_>], i: usize) -> Result<(), InferError> {
    if !inputs[i].dtype.is_integer() {
        return Err(dtype_err(inputs, i, "an integer type"));
    }
    // One element iff every dim is 1 (a product could overflow on huge dims).
    if !inputs[i]
        .shape
        .as_static()
        .is_some_and(|d| d.iter().all(|&n| n == 1))
    {
        return Err(InferError::Shape(format!(
            "input {i} must hold exactly one element, got shape {}",
            inputs[i].shape
        )));
    }
    Ok(())
}

fn nonempty_last(shape: &Shape) -> Result<&Dim, InferError> {
    match shape.0.last() {
        None => Err(InferError::Rank {
            input: 0,
            expected: ">= 1".into(),
            got: 0,
        }),
        Some(Dim::Static(0)) => Err(InferError::Shape("the last axis is empty".into())),
        Some(d) => Ok(d),
    }
}

fn drop_last(shape: &Shape) -> Shape {
    Shape(shape.0[..shape.rank().saturating_sub(1)].to_vec())
}

fn reshape(inputs: &[Operand<'_>], target: &Shape) -> Inferred {
    arity(inputs, 1)?;
    let src = inputs[0].shape;
    let ok = match (src.volume_signature(), target.volume_signature()) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    if !ok {
        return Err(InferError::Shape(format!(
            "cannot reshape {src} to {target}: element counts differ"
        )));
    }
    if inputs[0].dtype.is_quantized() {
        let same_rows = match (src.0.last(), target.0.last()) {
            (Some(a), Some(b)) => a.same_extent(b),
            _ => false,
        };
        if !same_rows {
            return Err(InferError::Shape(
                "a quantized tensor can only be reshaped keeping its last axis (its blocks)".into(),
            ));
        }
    }
    Ok((target.clone(), inputs[0].dtype))
}

fn transpose(inputs: &[Operand<'_>], perm: &[usize]) -> Inferred {
    arity(inputs, 1)?;
    not_quantized(inputs, 0)?;
    let rank = inputs[0].shape.rank();
    let mut seen = vec![false; rank];
    if perm.len() != rank {
        return Err(InferError::Attr(format!(
            "perm {perm:?} has {} entries for a rank-{rank} input",
            perm.len()
        )));
    }
    for &p in perm {
        if p >= rank || seen[p] {
            return Err(InferError::Attr(format!(
                "perm {perm:?} is not a permutation of 0..{rank}"
            )));
        }
        seen[p] = true;
    }
    let dims = perm.iter().map(|&p| inputs[0].shape.0[p].clone()).collect();
    Ok((Shape(dims), inputs[0].dtype))
}

fn narrow(inputs: &[Operand<'_>], axis: usize, start: usize, len: usize) -> Inferred {
    arity(inputs, 1)?;
    let shape = inputs[0].shape;
    check_axis(axis, shape.rank())?;
    if inputs[0].dtype.is_quantized() && axis + 1 == shape.rank() {
        return Err(InferError::Attr(
            "a quantized tensor cannot be narrowed along its last axis (its blocks)".into(),
        ));
    }
    let Some(size) = shape.0[axis].as_static() else {
        return Err(InferError::Shape(format!(
            "narrow needs a static axis, axis {axis} is {}",
            shape.0[axis]
        )));
    };
    match start.checked_add(len) {
        Some(end) if end <= size => {}
        _ => {
            return Err(InferError::Shape(format!(
                "range {start}..{start}+{len} exceeds axis {axis} of size {size}"
            )))
        }
    }
    let mut dims = shape.0.clone();
    dims[axis] = Dim::Static(len);
    Ok((Shape(dims), inputs[0].dtype))
}

fn concat(inputs: &[Operand<'_>], axis: usize) -> Inferred {
    if inputs.is_empty() {
        return Err(InferError::Arity {
            expected: ">= 1".into(),
            got: 0,
        });
    }
    let first = inputs[0].shape;
    check_axis(axis, first.rank())?;
    not_quantized(inputs, 0)?;
    let mut total = 0usize;
    for (i, inp) in inputs.iter().enumerate() {
        same_dtype(inputs, 0, i)?;
        rank_exactly(inputs, i, first.rank())?;
        for (d, (a, b)) in first.0.iter().zip(&inp.shape.0).enumerate() {
            if d != axis && !a.same_extent(b) {
                return Err(InferError::Shape(format!(
                    "input {i} has shape {}, which differs from {first} outside axis {axis}",
                    inp.shape
                )));
            }
        }
        let Some(n) = inp.shape.0[axis].as_static() else {
            return Err(InferError::Shape(format!(
                "concat needs static sizes along axis {axis}; input {i} has {}",
                inp.shape.0[axis]
            )));
        };
        total = total
            .checked_add(n)
            .ok_or_else(|| InferError::Shape(format!("the sizes along axis {axis} overflow")))?;
    }
    let mut dims = first.0.clone();
    dims[axis] = Dim::Static(total);
    Ok((Shape(dims), inputs[0].dtype))
}

fn expand(inputs: &[Operand<'_>], target: &Shape) -> Inferred {
    arity(inputs, 1)?;
    not_quantized(inputs, 0)?;
    match broadcast_shapes(inputs[0].shape, target) {
        Some(s) if s == *target => Ok((target.clone(), inputs[0].dtype)),
        _ => Err(InferError::Shape(format!(
            "{} cannot be broadcast to {target}",
            inputs[0].shape
        ))),
    }
}

fn gather(inputs: &[Operand<'_>], axis: usize) -> Inferred {
    arity(inputs, 2)?;
    let table = inputs[0].shape;
    check_axis(axis, table.rank())?;
    if !inputs[1].dtype.is_integer() {
        return Err(dtype_err(inputs, 1, "an integer type"));
    }
    let mut dt = inputs[0].dtype;
    if dt.is_quantized() {
        if axis != 0 || table.rank() != 2 {
            return Err(InferError::Attr(
                "a quantized table must be 2-D and gathered along axis 0".into(),
            ));
        }
        dt = DType::F32;
    }
    let mut dims = table.0[..axis].to_vec();
    dims.extend(inputs[1].shape.0.iter().cloned());
    dims.extend(table.0[axis + 1..].iter().cloned());
    Ok((Shape(dims), dt))
}

fn update_rows(inputs: &[Operand<'_>], axis: usize) -> Inferred {
    arity(inputs, 3)?;
    not_quantized(inputs, 0)?;
    let (dest, update) = (inputs[0].shape, inputs[1].shape);
    check_axis(axis, dest.rank())?;
    same_dtype(inputs, 0, 1)?;
    rank_exactly(inputs, 1, dest.rank())?;
    let agree = dest
        .0
        .iter()
        .zip(&update.0)
        .enumerate()
        .all(|(d, (a, b))| d == axis || a.same_extent(b));
    if !agree {
        return Err(InferError::Shape(format!(
            "update {update} must match dest {dest} in every dim but axis {axis}"
        )));
    }
    one_integer(inputs, 2)?;
    Ok((dest.clone(), inputs[0].dtype))
}

fn cast(inputs: &[Operand<'_>], to: DType) -> Inferred {
    arity(inputs, 1)?;
    not_quantized(inputs, 0)?;
    if to.is_quantized() {
        return Err(InferError::Attr(format!(
            "cannot cast to the quantized type {to}"
        )));
    }
    Ok((inputs[0].shape.clone(), to))
}

fn broadcast_all(inputs: &[Operand<'_>]) -> Result<Shape, InferError> {
    let mut out = inputs[0].shape.clone();
    for inp in &inputs[1..] {
        out = broadcast_shapes(&out, inp.shape).ok_or_else(|| {
            InferError::Shape(format!("{out} and {} do not broadcast", inp.shape))
        })?;
    }
    Ok(out)
}

fn binary(inputs: &[Operand<'_>]) -> Inferred {
    arity(inputs, 2)?;
    numeric(inputs, 0)?;
    same_dtype(inputs, 0, 1)?;
    Ok((broadcast_all(inputs)?, inputs[0].dtype))
}

fn where_(inputs: &[Operand<'_>]) -> Inferred {
    arity(inputs, 3)?;
    not_quantized(inputs, 0)?;
    not_quantized(inputs, 1)?;
    same_dtype(inputs, 1, 2)?;
    Ok((broadcast_all(inputs)?, inputs[1].dtype))
}

fn reduce(inputs: &[Operand<'_>], kind: ReduceOp, axes: &[usize], keep_dim: bool) -> Inferred {
    arity(inputs, 1)?;
    numeric(inputs, 0)?;
    if kind == ReduceOp::Mean {
        float(inputs, 0)?;
    }
    let shape = inputs[0].shape;
    if axes.is_empty() {
        return Err(InferError::Attr("reduce needs at least one axis".into()));
    }
    let mut seen = vec![false; shape.rank()];
    for &a in axes {
        check_axis(a, shape.rank())?;
        if seen[a] {
            return Err(InferError::Attr(format!("axis {a} is listed twice")));
        }
        seen[a] = true;
    }
    let dims = shape
        .0
        .iter()
        .zip(&seen)
        .filter_map(|(d, &r)| match (r, keep_dim) {
            (false, _) => Some(d.clone()),
            (true, true) => Some(Dim::Static(1)),
            (true, false) => None,
        })
        .collect();
    Ok((Shape(dims), inputs[0].dtype))
}

/// A vector input shaped like `last` (gamma, beta or a bias).
fn vector_like(inputs: &[Operand<'_>], i: usize, last: &Dim) -> Result<(), InferError> {
    same_dtype(inputs, 0, i)?;
    let s = inputs[i].shape;
    if s.rank() != 1 || !s.0[0].same_extent(last) {
        return Err(InferError::Shape(format!(
            "input {i} must be [{last}], got {s}"
        )));
    }
    Ok(())
}

fn norm(
    inputs: &[Operand<'_>],
    eps: f32,
    affine: Affine,
    leading: usize,
    has_bias: bool,
) -> Inferred {
    let n = leading + usize::from(has_bias) + affine.num_inputs();
    arity(inputs, n)?;
    float(inputs, 0)?;
    rank_at_least(inputs, 0, 1)?;
    if !(eps.is_finite() && eps >= 0.0) {
        return Err(InferError::Attr(format!(
            "eps = {eps} must be finite and >= 0"
        )));
    }
    let x = inputs[0].shape;
    if leading == 2 {
        same_dtype(inputs, 0, 1)?;
        if !x.same_extents(inputs[1].shape) {
            return Err(InferError::Shape(format!(
                "the residual {} must have the shape of x {x}",
                inputs[1].shape
            )));
        }
    }
    let last = x.0.last().expect("rank checked >= 1");
    for i in leading..n {
        vector_like(inputs, i, last)?;
    }
    Ok((x.clone(), inputs[0].dtype))
}

fn matmul(inputs: &[Operand<'_>], transpose_b: bool, has_bias: bool) -> Inferred {
    arity(inputs, 2 + usize::from(has_bias))?;
    float(inputs, 0)?;
    rank_at_least(inputs, 0, 2)?;
    rank_at_least(inputs, 1, 2)?;
    let (a, b) = (inputs[0].shape, inputs[1].shape);
    if inputs[1].dtype.is_quantized() {
        if b.rank() != 2 || !transpose_b {
            return Err(InferError::Attr(
                "a quantized right operand must be 2-D [N, K] with transpose_b".into(),
            ));
        }
    } else {
        same_dtype(inputs, 0, 1)?;
    }
    let (ar, br) = (a.rank(), b.rank());
    let k = &a.0[ar - 1];
    let (kb, n) = if transpose_b {
        (&b.0[br - 1], &b.0[br - 2])
    } else {
        (&b.0[br - 2], &b.0[br - 1])
    };
    if !k.same_extent(kb) {
        return Err(InferError::Shape(format!(
            "inner dims differ: a is {a}, b is {b}{}",
            if transpose_b { " (transposed)" } else { "" }
        )));
    }
    let mut dims = if br == 2 {
        a.0[..ar - 1].to_vec()
    } else {
        let lead = broadcast_shapes(
            &Shape(a.0[..ar - 2].to_vec()),
            &Shape(b.0[..br - 2].to_vec()),
        )
        .ok_or_else(|| InferError::Shape(format!("batch dims of {a} and {b} do not broadcast")))?;
        let mut d = lead.0;
        d.push(a.0[ar - 2].clone());
        d
    };
    dims.push(n.clone());
    if has_bias {
        vector_like(inputs, 2, n)?;
    }
    Ok((Shape(dims), inputs[0].dtype))
}

#[allow(clippy::too_many_arguments)]
fn attention(
    inputs: &[Operand<'_>],
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    scale: f32,
    mask: AttentionMask,
    layout: HeadLayout,
    has_past_len: bool,
) -> Inferred {
    let has_mask = matches!(mask, AttentionMask::Bias | AttentionMask::KeyPadding);
    arity(
        inputs,
        3 + usize::from(has_mask) + usize::from(has_past_len),
    )?;
    if num_heads == 0
        || num_kv_heads == 0
        || !num_heads.is_multiple_of(num_kv_heads)
        || head_dim == 0
    {
        return Err(InferError::Attr(format!(
            "num_heads = {num_heads} must be a positive multiple of num_kv_heads = {num_kv_heads}, head_dim = {head_dim} positive"
        )));
    }
    if !scale.is_finite() {
        return Err(InferError::Attr(format!("scale = {scale} must be finite")));
    }
    let (ba, sa, ha, da) = layout.axes();
    for i in 0..3 {
        float(inputs, i)?;
        same_dtype(inputs, 0, i)?;
        rank_exactly(inputs, i, 4)?;
        let s = inputs[i].shape;
        let heads = if i == 0 { num_heads } else { num_kv_heads };
        if s.0[ha] != Dim::Static(heads) || s.0[da] != Dim::Static(head_dim) {
            return Err(InferError::Shape(format!(
                "input {i} {s} must have {heads} heads of {head_dim} in layout {layout:?}"
            )));
        }
        if !s.0[ba].same_extent(&inputs[0].shape.0[ba]) {
            return Err(InferError::Shape(format!(
                "input {i} {s} has another batch than q {}",
                inputs[0].shape
            )));
        }
    }
    let (q, k) = (inputs[0].shape, inputs[1].shape);
    if !k.0[sa].same_extent(&inputs[2].shape.0[sa]) {
        return Err(InferError::Shape(format!(
            "k {k} and v {} have different key lengths",
            inputs[2].shape
        )));
    }
    let scores = Shape(vec![
        q.0[ba].clone(),
        Dim::Static(num_heads),
        q.0[sa].clone(),
        k.0[sa].clone(),
    ]);
    match mask {
        AttentionMask::Bias => {
            same_dtype(inputs, 0, 3)?;
            if broadcast_shapes(inputs[3].shape, &scores).as_ref() != Some(&scores) {
                return Err(InferError::Shape(format!(
                    "the bias mask {} does not broadcast to the scores {scores}",
                    inputs[3].shape
                )));
            }
        }
        AttentionMask::KeyPadding => {
            not_quantized(inputs, 3)?;
            let m = inputs[3].shape;
            if m.rank() != 2 || !m.0[0].same_extent(&q.0[ba]) || !m.0[1].same_extent(&k.0[sa]) {
                return Err(InferError::Shape(format!(
                    "the key-padding mask must be [batch, seq_k] = [{}, {}], got {m}",
                    q.0[ba], k.0[sa]
                )));
            }
        }
        AttentionMask::None | AttentionMask::Causal => {}
    }
    if has_past_len {
        one_integer(inputs, inputs.len() - 1)?;
    }
    Ok((q.clone(), inputs[0].dtype))
}

fn rope(
    inputs: &[Operand<'_>],
    head_dim: usize,
    rotary_dims: usize,
    theta: f32,
    layout: HeadLayout,
    has_offset_input: bool,
) -> Inferred {
    arity(inputs, 1 + usize::from(has_offset_input))?;
    float(inputs, 0)?;
    rank_exactly(inputs, 0, 4)?;
    let (_, _, _, da) = layout.axes();
    let x = inputs[0].shape;
    if x.0[da] != Dim::Static(head_dim) {
        return Err(InferError::Shape(format!(
            "x {x} must have head_dim {head_dim} in layout {layout:?}"
        )));
    }
    if rotary_dims == 0 || !rotary_dims.is_multiple_of(2) || rotary_dims > head_dim {
        return Err(InferError::Attr(format!(
            "rotary_dims = {rotary_dims} must be even and in 2..={head_dim}"
        )));
    }
    if !(theta.is_finite() && theta > 0.0) {
        return Err(InferError::Attr(format!(
            "theta = {theta} must be positive"
        )));
    }
    if has_offset_input {
        one_integer(inputs, 1)?;
    }
    Ok((x.clone(), inputs[0].dtype))
}
