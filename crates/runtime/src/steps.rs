//! From planned steps to kernel dispatches: operands are resolved to word offsets inside the
//! step's binding (an arena window, or scratch when staged).

use kiln_ir::{Activation, Affine, DimBinding, NormKind, Op, Shape};
use kiln_kernels::families::{matmul, norm, quant};
use kiln_kernels::{Dispatch, LowerError, Operand};
use kiln_plan::{Binding, ExecutionPlan, Step, StepKind};

/// The dims of `shape` at the active extent: bound symbols take their value, others their
/// upper bound. Tensors are stored contiguously at these dims, at the start of slots sized for
/// the bound.
pub fn dims_at(shape: &Shape, extent: &DimBinding) -> Vec<usize> {
    shape
        .dims()
        .iter()
        .map(|d| d.resolve(extent).or(d.upper_bound()).unwrap_or(0))
        .collect()
}

/// Word offset and active dims of `node` as seen from `step`'s binding.
pub fn operand(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    node: usize,
) -> Result<Operand, LowerError> {
    let n = &plan.graph.nodes()[node];
    let dims = dims_at(&n.shape, extent);
    // The planner gave every read or written node a slot, or a view of one.
    let abs = plan.offset(node).unwrap_or(0);
    let outside = || {
        LowerError::unsupported(
            &n.op,
            format!("node %{node} lies outside its step's binding (a planner bug)"),
        )
    };
    let rel = match step.binding {
        Binding::Arena { offset, .. } => abs.checked_sub(offset).ok_or_else(outside)?,
        Binding::Scratch { .. } => {
            let root = plan.root(node);
            let root_abs = plan.offset(root).unwrap_or(0);
            let staged = step.staged.iter().find(|s| s.node == root);
            staged.map_or(0, |s| s.scratch_offset) + (abs - root_abs)
        }
    };
    Ok(Operand {
        offset: u32::try_from(rel / 4).map_err(|_| outside())?,
        dims,
        dtype: n.dtype,
    })
}

fn inputs_of(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    node: usize,
) -> Result<Vec<Operand>, LowerError> {
    plan.graph.nodes()[node]
        .inputs
        .iter()
        .map(|i| operand(plan, step, extent, i.0))
        .collect()
}

/// The dispatches of one step; its f32 matmul may split k where `workspace` is given (the
/// split changes the dispatch count with the shape: the executable keeps a step's count
/// across extents with `fill_slots`).
pub fn lower_step(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    workspace: Option<matmul::SplitWorkspace>,
) -> Result<Vec<Dispatch>, LowerError> {
    let nodes = plan.graph.nodes();
    match &step.kind {
        &StepKind::Op { node } => {
            let ins = inputs_of(plan, step, extent, node)?;
            let out = operand(plan, step, extent, node)?;
            let op = &nodes[node].op;
            let d = match op {
                Op::MatMul { .. } | Op::FusedMatMulBiasAct { .. } => {
                    matmul::lower_with(op, &ins, &out, workspace)?
                }
                _ => kiln_kernels::lower(op, &ins, &out)?,
            };
            // A view op the planner gave its own slot (its input was not aliasable) is a copy.
            match ins.first() {
                Some(src) if d.is_empty() && src.offset != out.offset => {
                    let words = crate::transfer::words(
                        out.dtype,
                        out.numel(),
                        out.dims.last().copied().unwrap_or(1),
                    )
                    .unwrap_or(0);
                    Ok(vec![kiln_kernels::families::movement::copy_words(
                        op, src.offset, out.offset, words,
                    )?])
                }
                _ => Ok(d),
            }
        }
        &StepKind::MatmulEpilogue {
            matmul: m,
            bias_add,
            act,
        } => {
            let last = act.or(bias_add).unwrap_or(m);
            let (a, b, transpose_b) = matmul_operands(plan, step, extent, m)?;
            let bias = bias_add
                .map(|add| bias_operand(plan, step, extent, add, m))
                .transpose()?;
            let act = act.and_then(|n| activation_of(&nodes[n].op));
            let op = &nodes[m].op;
            let out = operand(plan, step, extent, last)?;
            matmul::lower_split_k(
                op,
                &a,
                &b,
                transpose_b,
                matmul::Epilogue {
                    bias: bias.as_ref(),
                    act,
                },
                &[&out],
                workspace,
            )
        }
        &StepKind::QkvSplit {
            matmul: m,
            bias_add,
            outputs,
        } => {
            let (a, b, transpose_b) = matmul_operands(plan, step, extent, m)?;
            let bias = matmul_bias(plan, step, extent, m, bias_add)?;
            let outs: Vec<Operand> = outputs
                .iter()
                .map(|&o| operand(plan, step, extent, o))
                .collect::<Result<_, _>>()?;
            matmul::lower_split_k(
                &nodes[m].op,
                &a,
                &b,
                transpose_b,
                matmul::Epilogue {
                    bias: bias.as_ref(),
                    act: None,
                },
                &[&outs[0], &outs[1], &outs[2]],
                workspace,
            )
        }
        &StepKind::ResidualNorm { add, norm: n, tee } => {
            let x = operand(plan, step, extent, nodes[add].inputs[0].0)?;
            let residual = operand(plan, step, extent, nodes[add].inputs[1].0)?;
            let sum = ResidualSum {
                add,
                tee,
                x: &x,
                x_chunks: None,
                residual: &residual,
                bias: None,
            };
            residual_norm(plan, step, extent, n, &sum)
        }
        &StepKind::MatmulResidualNorm {
            matmul: m,
            bias_add,
            add,
            norm: n,
            tee,
        } => {
            let product_node = bias_add.unwrap_or(m);
            let product = operand(plan, step, extent, product_node)?;
            let (a, b, transpose_b) = matmul_operands(plan, step, extent, m)?;
            let bias = matmul_bias(plan, step, extent, m, bias_add)?;
            let mut ds = matmul::lower_split_k(
                &nodes[m].op,
                &a,
                &b,
                transpose_b,
                matmul::Epilogue {
                    bias: bias.as_ref(),
                    act: None,
                },
                &[&product],
                // The norm adds the chunks where they cover the product.
                workspace.map(|w| matmul::SplitWorkspace {
                    sum_absorbed: true,
                    ..w
                }),
            )?;
            let add_ins = &nodes[add].inputs;
            let residual_node = if add_ins[0].0 == product_node {
                add_ins[1].0
            } else {
                add_ins[0].0
            };
            let residual = operand(plan, step, extent, residual_node)?;
            // Where the matmul split k over its whole product, the norm adds the chunks and
            // the bias instead of the sum dispatch; else it reads the product.
            let parts = matmul::take_split_sum(&mut ds, &product);
            let chunks = parts.map(|p| Operand::new(p.offset, &product.dims, product.dtype));
            let sum = ResidualSum {
                add,
                tee,
                x: chunks.as_ref().unwrap_or(&product),
                x_chunks: parts.map(|p| norm::XChunks {
                    count: p.count,
                    stride: p.stride,
                }),
                residual: &residual,
                bias: bias.as_ref().filter(|_| parts.is_some()),
            };
            ds.extend(residual_norm(plan, step, extent, n, &sum)?);
            Ok(ds)
        }
        &StepKind::ActBinary { act, binary, swap } => {
            let Some(kind) = activation_of(&nodes[act].op) else {
                return Err(LowerError::unsupported(&nodes[act].op, "not an activation"));
            };
            let ins = &nodes[binary].inputs;
            let (a, b) = if swap {
                (ins[1].0, ins[0].0)
            } else {
                (ins[0].0, ins[1].0)
            };
            // `a` is the activation node (absent); it has the shape of its input.
            let src = operand(plan, step, extent, nodes[act].inputs[0].0)?;
            debug_assert_eq!(a, act);
            let other = operand(plan, step, extent, b)?;
            let out = operand(plan, step, extent, binary)?;
            kiln_kernels::families::elementwise::lower_act_binary(
                &nodes[binary].op,
                kind,
                &src,
                &other,
                &out,
            )
        }
        StepKind::SiblingMatmuls {
            matmuls,
            glu,
            prologue,
        } => {
            let first = matmuls.first().copied().unwrap_or(0);
            let mut weights = Vec::with_capacity(matmuls.len());
            for &m in matmuls {
                weights.push(input_operand(plan, step, extent, m, 1)?);
            }
            // The input rows: the matmuls' input, or with a norm prologue the norm's source
            // (with the rest of the norm as arguments).
            let (a, norm_ops) = match prologue {
                None => (input_operand(plan, step, extent, first, 0)?, None),
                Some(p) => {
                    let ops = prologue_operands(plan, step, extent, p)?;
                    (ops.x.clone(), Some(ops))
                }
            };
            let norm_args = norm_ops.as_ref().map(|o| quant::NormPrologueArgs {
                eps: o.eps,
                residual: o.residual.as_ref(),
                gamma: o.gamma.as_ref(),
                sum: o.sum.as_ref(),
            });
            if let Some(glu) = glu {
                let [gate, up] = weights.as_slice() else {
                    return Err(LowerError::unsupported(
                        &nodes[first].op,
                        "a gated product takes exactly two matmuls",
                    ));
                };
                let Some(act) = activation_of(&nodes[glu.act].op) else {
                    return Err(LowerError::unsupported(
                        &nodes[glu.act].op,
                        "not an activation",
                    ));
                };
                let out = operand(plan, step, extent, glu.binary)?;
                return quant::lower_glu(
                    &nodes[first].op,
                    &a,
                    gate,
                    up,
                    act,
                    &out,
                    norm_args.as_ref(),
                );
            }
            let mut outs = Vec::with_capacity(matmuls.len());
            for &m in matmuls {
                outs.push(operand(plan, step, extent, m)?);
            }
            quant::lower_siblings(
                &nodes[first].op,
                &a,
                &weights.iter().collect::<Vec<_>>(),
                &outs.iter().collect::<Vec<_>>(),
                norm_args.as_ref(),
            )
        }
        StepKind::Batched { nodes: members } => {
            let mut ins = Vec::with_capacity(members.len());
            for &n in members {
                ins.push((
                    inputs_of(plan, step, extent, n)?,
                    operand(plan, step, extent, n)?,
                ));
            }
            let jobs: Vec<(&[Operand], &Operand)> =
                ins.iter().map(|(i, o)| (i.as_slice(), o)).collect();
            let first = members.first().map(|&n| &nodes[n].op);
            match (first, jobs.as_slice()) {
                (Some(op @ Op::Rope { .. }), &[a, b]) => {
                    kiln_kernels::families::rope::lower_pair(op, a, b)
                }
                (Some(op @ Op::UpdateRows { axis }), _) => {
                    kiln_kernels::families::movement::lower_update_rows(op, *axis, &jobs)
                }
                (Some(op), _) => Err(LowerError::unsupported(op, "cannot be batched")),
                (None, _) => Ok(Vec::new()),
            }
        }
        &StepKind::PackedAttention {
            attention,
            packed,
            columns,
        } => {
            // Q, K and V are read through the packed tensor; only their dims matter here.
            let ins: Vec<Operand> = nodes[attention]
                .inputs
                .iter()
                .enumerate()
                .map(|(k, i)| {
                    if k < 3 {
                        let n = &nodes[i.0];
                        Ok(Operand {
                            offset: 0,
                            dims: dims_at(&n.shape, extent),
                            dtype: n.dtype,
                        })
                    } else {
                        operand(plan, step, extent, i.0)
                    }
                })
                .collect::<Result<_, _>>()?;
            let p = operand(plan, step, extent, packed)?;
            let out = operand(plan, step, extent, attention)?;
            kiln_kernels::families::attention::lower_packed(
                &nodes[attention].op,
                &p,
                columns,
                &ins,
                &out,
            )
        }
    }
}

/// The operands of a [`kiln_plan::NormPrologue`]: the rows `x` (the residual sum's first term,
/// or the norm's input), the sum's second term, gamma, and the sum's own slot when other steps
/// read it.
struct PrologueOperands {
    x: Operand,
    residual: Option<Operand>,
    gamma: Option<Operand>,
    sum: Option<Operand>,
    eps: f32,
}

fn prologue_operands(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    p: &kiln_plan::NormPrologue,
) -> Result<PrologueOperands, LowerError> {
    let norm = &plan.graph.nodes()[p.norm];
    let Op::Norm {
        kind: NormKind::Rms,
        eps,
        affine: Affine::None | Affine::Scale,
    } = norm.op
    else {
        return Err(LowerError::unsupported(
            &norm.op,
            "a norm prologue is an RMSNorm with at most a gamma",
        ));
    };
    let (x, residual) = match p.add {
        Some(add) => (
            input_operand(plan, step, extent, add, 0)?,
            Some(input_operand(plan, step, extent, add, 1)?),
        ),
        None => (input_operand(plan, step, extent, p.norm, 0)?, None),
    };
    let gamma = match norm.inputs.get(1) {
        Some(g) => Some(operand(plan, step, extent, g.0)?),
        None => None,
    };
    let sum = match (p.add, p.tee) {
        (Some(add), true) => Some(operand(plan, step, extent, add)?),
        _ => None,
    };
    Ok(PrologueOperands {
        x,
        residual,
        gamma,
        sum,
        eps,
    })
}

/// The operand of input `k` of `node`.
fn input_operand(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    node: usize,
    k: usize,
) -> Result<Operand, LowerError> {
    let n = &plan.graph.nodes()[node];
    match n.inputs.get(k) {
        Some(i) => operand(plan, step, extent, i.0),
        None => Err(LowerError::unsupported(&n.op, format!("has no input {k}"))),
    }
}

/// A, B and whether B is transposed, for a MatMul or FusedMatMulBiasAct node.
fn matmul_operands(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    m: usize,
) -> Result<(Operand, Operand, bool), LowerError> {
    let node = &plan.graph.nodes()[m];
    let transpose_b = match node.op {
        Op::MatMul { transpose_b } | Op::FusedMatMulBiasAct { transpose_b, .. } => transpose_b,
        ref op => return Err(LowerError::unsupported(op, "not a matmul")),
    };
    Ok((
        operand(plan, step, extent, node.inputs[0].0)?,
        operand(plan, step, extent, node.inputs[1].0)?,
        transpose_b,
    ))
}

/// The sum a residual norm normalises: node `add` (written too with `tee`) of `x` (the
/// `x_chunks` of a split-k matmul, with its `bias`, where given) and `residual`.
struct ResidualSum<'a> {
    add: usize,
    tee: bool,
    x: &'a Operand,
    x_chunks: Option<norm::XChunks>,
    residual: &'a Operand,
    bias: Option<&'a Operand>,
}

/// The dispatch of norm node `n` over `sum`.
fn residual_norm(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    n: usize,
    sum: &ResidualSum<'_>,
) -> Result<Vec<Dispatch>, LowerError> {
    let node = &plan.graph.nodes()[n];
    let Op::Norm { kind, eps, affine } = node.op else {
        return Err(LowerError::unsupported(&node.op, "not a norm"));
    };
    let params: Vec<Operand> = node.inputs[1..]
        .iter()
        .map(|i| operand(plan, step, extent, i.0))
        .collect::<Result<_, _>>()?;
    let out = operand(plan, step, extent, n)?;
    let sum_out = sum
        .tee
        .then(|| operand(plan, step, extent, sum.add))
        .transpose()?;
    let op = Op::FusedResidualNorm {
        kind,
        eps,
        affine,
        has_bias: sum.bias.is_some(),
    };
    norm::lower_args(
        &op,
        &norm::NormArgs {
            kind,
            eps,
            x: sum.x,
            x_chunks: sum.x_chunks,
            residual: Some(sum.residual),
            bias: sum.bias,
            gamma: params.first(),
            beta: params.get(1),
            out: &out,
            sum_out: sum_out.as_ref(),
        },
    )
}

/// The bias of matmul `m`: that of its bias add, or its own as a `FusedMatMulBiasAct`.
fn matmul_bias(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    m: usize,
    bias_add: Option<usize>,
) -> Result<Option<Operand>, LowerError> {
    let node = &plan.graph.nodes()[m];
    match (bias_add, &node.op) {
        (Some(add), _) => bias_operand(plan, step, extent, add, m).map(Some),
        (None, Op::FusedMatMulBiasAct { has_bias: true, .. }) => {
            operand(plan, step, extent, node.inputs[2].0).map(Some)
        }
        _ => Ok(None),
    }
}

/// The bias operand of `add = matmul + bias`.
fn bias_operand(
    plan: &ExecutionPlan,
    step: &Step,
    extent: &DimBinding,
    add: usize,
    matmul: usize,
) -> Result<Operand, LowerError> {
    let ins = &plan.graph.nodes()[add].inputs;
    let bias = if ins[0].0 == matmul {
        ins[1].0
    } else {
        ins[0].0
    };
    operand(plan, step, extent, bias)
}

fn activation_of(op: &Op) -> Option<Activation> {
    match op {
        Op::Activation { kind } => Some(*kind),
        _ => None,
    }
}
