//! A CPU interpreter of kiln's IR: the oracle every GPU kernel and fusion is tested against.
//!
//! It favours being obviously right over being fast: values are held as f32, reductions,
//! matmuls, norms and attention accumulate in f64, and each node's result is rounded to the
//! node's dtype (so f16 and integer semantics hold). Integers are carried in f32, so integer
//! values beyond 2^24 lose precision here.

mod error;
pub mod ops;
pub mod value;

pub use error::RefError;
pub use value::Value;

use kiln_ir::tensor::round_to;
use kiln_ir::{DType, Graph, HostTensor, Node, Op};
use ops::attention::{attention, rope, AttentionSpec};
use ops::elementwise::{activation, binary, broadcast_map, compare};
use ops::matmul::matmul;
use ops::movement::{concat, expand, gather, narrow, transpose, update_rows};
use ops::reduce::{cumsum, norm, reduce, softmax};
use ops::select::{argmax, order_desc, sample, SampleSpec};
use std::collections::HashMap;

/// Evaluates one graph on the CPU. Params are set once; inputs are given per run.
#[derive(Debug, Clone)]
pub struct Interpreter<'g> {
    graph: &'g Graph,
    params: HashMap<String, HostTensor>,
}

impl<'g> Interpreter<'g> {
    pub fn new(graph: &'g Graph) -> Self {
        Interpreter {
            graph,
            params: HashMap::new(),
        }
    }

    /// Sets a param's value. Its dtype must be the param's; its shape is checked at run time
    /// (after symbols are bound).
    pub fn set_param(&mut self, name: &str, value: HostTensor) -> Result<(), RefError> {
        let id = self
            .graph
            .params()
            .find(|(_, n)| n.source_name() == Some(name))
            .map(|(id, _)| id)
            .ok_or_else(|| RefError::UnknownName { name: name.into() })?;
        let node = self.graph.node(id)?;
        if node.dtype != value.dtype {
            return Err(mismatch(name, node, &value.shape, &value));
        }
        self.params.insert(name.to_string(), value);
        Ok(())
    }

    /// Runs the graph and returns its outputs in order.
    pub fn run(&self, inputs: &[(&str, HostTensor)]) -> Result<Vec<HostTensor>, RefError> {
        for (name, _) in inputs {
            if !self
                .graph
                .inputs()
                .any(|(_, n)| n.source_name() == Some(name))
            {
                return Err(RefError::UnknownName {
                    name: name.to_string(),
                });
            }
        }
        let given: HashMap<&str, &HostTensor> = inputs.iter().map(|(n, t)| (*n, t)).collect();
        for (_, node) in self.graph.inputs() {
            let name = node.source_name().unwrap_or_default();
            if !given.contains_key(name) {
                return Err(RefError::MissingInput { name: name.into() });
            }
        }
        let shapes: Vec<(&str, &[usize])> = inputs
            .iter()
            .map(|(n, t)| (*n, t.shape.as_slice()))
            .collect();
        let binding = self.graph.infer_binding(&shapes)?;
        let bound = self.graph.bind(&binding)?;

        let mut values: Vec<Value> = Vec::with_capacity(bound.len());
        for (id, node) in bound.nodes().iter().enumerate() {
            let shape = node.shape.as_static().ok_or_else(|| {
                let symbol = node.shape.symbols().first().map(|s| s.to_string());
                RefError::Graph(kiln_ir::IrError::Unbound {
                    symbol: symbol.unwrap_or_default(),
                })
            })?;
            let args: Vec<&Value> = node.inputs.iter().map(|i| &values[i.0]).collect();
            let mut data = self.eval(id, node, &shape, &args, &given)?;
            if !matches!(node.dtype, DType::F32) && !node.dtype.is_quantized() {
                data.iter_mut().for_each(|v| *v = round_to(node.dtype, *v));
            }
            values.push(Value::new(shape, data));
        }
        bound
            .outputs()
            .iter()
            .map(|o| {
                let node = &bound.nodes()[o.0];
                let v = &values[o.0];
                HostTensor::from_values(node.dtype, &v.shape, &v.data).map_err(|_| {
                    RefError::Unsupported {
                        node: o.0,
                        op: node.op.name(),
                        detail: format!("a {} tensor cannot be returned as an output", node.dtype),
                    }
                })
            })
            .collect()
    }

    /// Checks a host tensor against a source node's (bound) dtype and shape.
    fn source_value(
        &self,
        name: &str,
        node: &Node,
        shape: &[usize],
        t: &HostTensor,
    ) -> Result<Vec<f32>, RefError> {
        if t.dtype != node.dtype || t.shape != shape {
            return Err(mismatch(name, node, shape, t));
        }
        // HostTensor's fields are public: re-check the byte length before decoding.
        let checked = HostTensor::from_bytes(t.dtype, &t.shape, t.bytes.clone()).map_err(|e| {
            RefError::BadData {
                name: name.into(),
                detail: e.to_string(),
            }
        })?;
        Ok(checked.to_f32())
    }

    fn eval(
        &self,
        id: usize,
        node: &Node,
        shape: &[usize],
        args: &[&Value],
        given: &HashMap<&str, &HostTensor>,
    ) -> Result<Vec<f32>, RefError> {
        let scalar = |v: &Value| v.data.first().copied().unwrap_or(0.0) as i64;
        Ok(match &node.op {
            Op::Input { name } => self.source_value(name, node, shape, given[name.as_str()])?,
            Op::Param { name } => {
                let t = self
                    .params
                    .get(name)
                    .ok_or_else(|| RefError::MissingParam { name: name.clone() })?;
                self.source_value(name, node, shape, t)?
            }
            Op::Constant { data } => {
                // The graph validated the length against the dtype and shape.
                HostTensor::from_bytes(node.dtype, shape, data.clone())
                    .map_err(|e| RefError::Unsupported {
                        node: id,
                        op: "constant",
                        detail: e.to_string(),
                    })?
                    .to_f32()
            }
            Op::Reshape { .. } => args[0].data.clone(),
            Op::Transpose { perm } => transpose(args[0], perm).data,
            Op::Narrow { axis, start, len } => narrow(args[0], *axis, *start, *len).data,
            Op::Concat { axis } => concat(args, *axis).data,
            Op::Expand { .. } => expand(args[0], shape).data,
            Op::Gather { axis } => {
                gather(args[0], args[1], *axis)
                    .map_err(|index| RefError::IndexOutOfRange {
                        node: id,
                        op: "gather",
                        index,
                        size: args[0].shape[*axis],
                    })?
                    .data
            }
            Op::UpdateRows { axis } => update_rows(args[0], args[1], scalar(args[2]), *axis).data,
            Op::Cast { .. } => args[0].data.clone(),
            Op::Binary { kind } => broadcast_map(args, shape, |v| binary(*kind, v[0], v[1])),
            Op::Compare { kind } => broadcast_map(args, shape, |v| compare(*kind, v[0], v[1])),
            Op::Where => broadcast_map(args, shape, |v| if v[0] != 0.0 { v[1] } else { v[2] }),
            Op::Activation { kind } => args[0].data.iter().map(|&x| activation(*kind, x)).collect(),
            Op::Reduce {
                kind,
                axes,
                keep_dim,
            } => reduce(args[0], *kind, axes, *keep_dim).data,
            Op::Softmax { axis } => softmax(args[0], *axis).data,
            Op::Norm { kind, eps, affine } => {
                let n = affine.num_inputs();
                norm(
                    args[0],
                    *kind,
                    *eps,
                    args.get(1).filter(|_| n >= 1).copied(),
                    args.get(2).filter(|_| n == 2).copied(),
                )
                .data
            }
            Op::FusedResidualNorm {
                kind,
                eps,
                affine,
                has_bias,
            } => {
                let bias = has_bias.then(|| args[2]);
                let p = 2 + usize::from(*has_bias);
                let shape_last = [args[0].shape[args[0].shape.len() - 1]];
                let sum = broadcast_map(&[args[0], args[1]], &args[0].shape, |v| v[0] + v[1]);
                let sum = match bias {
                    Some(b) => {
                        let s = Value::new(args[0].shape.clone(), sum);
                        debug_assert_eq!(b.shape, shape_last);
                        broadcast_map(&[&s, b], &args[0].shape, |v| v[0] + v[1])
                    }
                    None => sum,
                };
                let x = Value::new(args[0].shape.clone(), sum);
                let n = affine.num_inputs();
                norm(
                    &x,
                    *kind,
                    *eps,
                    (n >= 1).then(|| args[p]),
                    (n == 2).then(|| args[p + 1]),
                )
                .data
            }
            Op::MatMul { transpose_b } => matmul(args[0], args[1], *transpose_b, shape),
            Op::FusedMatMulBiasAct {
                transpose_b,
                has_bias,
                act,
            } => {
                let mut out = matmul(args[0], args[1], *transpose_b, shape);
                let n = shape[shape.len() - 1];
                for (i, v) in out.iter_mut().enumerate() {
                    if *has_bias {
                        *v = (*v as f64 + args[2].data[i % n] as f64) as f32;
                    }
                    if let Some(a) = act {
                        *v = activation(*a, *v);
                    }
                }
                out
            }
            Op::Attention {
                num_heads,
                num_kv_heads,
                head_dim,
                scale,
                mask,
                layout,
                has_past_len,
            } => {
                let past = if *has_past_len {
                    scalar(args[args.len() - 1])
                } else {
                    0
                };
                let (_, sa, _, _) = layout.axes();
                let (seq_q, seq_k) = (args[0].shape[sa], args[1].shape[sa]);
                if past < 0 || (*has_past_len && past as usize + seq_q > seq_k) {
                    return Err(RefError::PastTooLong {
                        node: id,
                        past,
                        seq_q,
                        seq_k,
                    });
                }
                let spec = AttentionSpec {
                    num_heads: *num_heads,
                    num_kv_heads: *num_kv_heads,
                    head_dim: *head_dim,
                    scale: *scale,
                    mask: *mask,
                    layout: *layout,
                    past: past as usize,
                    limit_keys: *has_past_len,
                };
                let mask_arg = args.get(3).filter(|_| {
                    matches!(
                        mask,
                        kiln_ir::AttentionMask::Bias | kiln_ir::AttentionMask::KeyPadding
                    )
                });
                attention(&spec, args[0], args[1], args[2], mask_arg.copied())
            }
            Op::Rope {
                rotary_dims,
                theta,
                style,
                layout,
                position_offset,
                has_offset_input,
                ..
            } => {
                let extra = if *has_offset_input {
                    scalar(args[1])
                } else {
                    0
                };
                let offset = *position_offset as i64 + extra;
                if offset < 0 {
                    return Err(RefError::IndexOutOfRange {
                        node: id,
                        op: "rope",
                        index: offset,
                        size: 0,
                    });
                }
                rope(
                    args[0],
                    *layout,
                    *rotary_dims,
                    *theta,
                    *style,
                    offset as usize,
                )
            }
            Op::Cumsum { axis, exclusive } => cumsum(args[0], *axis, *exclusive).data,
            Op::Argmax => rows(args[0]).map(|r| argmax(r) as f32).collect(),
            Op::TopK { k, output } => rows(args[0])
                .flat_map(|r| {
                    order_desc(r)
                        .into_iter()
                        .take(*k)
                        .map(|i| match output {
                            kiln_ir::TopKOutput::Values => r[i],
                            kiln_ir::TopKOutput::Indices => i as f32,
                        })
                        .collect::<Vec<_>>()
                })
                .collect(),
            Op::Sample {
                top_k,
                top_p,
                temperature,
                seed,
                has_counter,
            } => {
                let counter = if *has_counter {
                    scalar(args[1]) as u32
                } else {
                    0
                };
                let spec = SampleSpec {
                    top_k: *top_k,
                    top_p: *top_p,
                    temperature: *temperature,
                    seed: *seed,
                };
                rows(args[0])
                    .enumerate()
                    .map(|(i, r)| sample(r, &spec, counter, i as u32) as f32)
                    .collect()
            }
        })
    }
}

/// The rows of the last axis.
fn rows(v: &Value) -> impl Iterator<Item = &[f32]> {
    let last = v.shape.last().copied().unwrap_or(1).max(1);
    v.data.chunks(last)
}

fn mismatch(name: &str, node: &Node, shape: &[usize], got: &HostTensor) -> RefError {
    RefError::Mismatch {
        name: name.into(),
        expected_dtype: node.dtype,
        expected_shape: shape.to_vec(),
        got_dtype: got.dtype,
        got_shape: got.shape.clone(),
    }
}

/// Runs `graph` once with the given params and inputs.
pub fn evaluate(
    graph: &Graph,
    params: &[(&str, HostTensor)],
    inputs: &[(&str, HostTensor)],
) -> Result<Vec<HostTensor>, RefError> {
    let mut it = Interpreter::new(graph);
    for (name, t) in params {
        it.set_param(name, t.clone())?;
    }
    it.run(inputs)
}
