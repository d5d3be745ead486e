//! Node-by-node execution of graphs whose ops all have kernels.
//!
//! It runs a whole graph in one compute pass and one submit over a bump-allocated arena, so the
//! device path is exercised end to end (the README demo, the kernel tests). The planned executor
//! (liveness arena, bind windows, active extent) supersedes it.

use crate::device::Device;
use crate::error::RunError;
use crate::exec::run_dispatches;
use crate::transfer::{from_arena, to_arena, words};
use kiln_ir::{HostTensor, Op};
use kiln_kernels::lower::{is_view, lower, Dispatch, Operand};
use std::collections::HashMap;

/// Runs `graph` on `device` with the given params and inputs; returns the outputs in order.
pub fn run_eager(
    device: &Device,
    graph: &kiln_ir::Graph,
    params: &[(&str, HostTensor)],
    inputs: &[(&str, HostTensor)],
) -> Result<Vec<HostTensor>, RunError> {
    let shapes: Vec<(&str, &[usize])> = inputs
        .iter()
        .map(|(n, t)| (*n, t.shape.as_slice()))
        .collect();
    let bound = graph.bind(&graph.infer_binding(&shapes)?)?;
    let sources: HashMap<&str, &HostTensor> =
        params.iter().chain(inputs).map(|(n, t)| (*n, t)).collect();

    // Lay out every tensor (views alias their input) and lower every op.
    let mut operands: Vec<Operand> = Vec::with_capacity(bound.len());
    let mut dispatches: Vec<Dispatch> = Vec::new();
    let mut next_word = 0usize;
    for (id, node) in bound.nodes().iter().enumerate() {
        let dims = node
            .shape
            .as_static()
            .ok_or_else(|| RunError::Unsupported {
                node: id,
                op: node.op.name(),
                detail: format!("shape {} is not bound", node.shape),
            })?;
        let ins: Vec<Operand> = node.inputs.iter().map(|i| operands[i.0].clone()).collect();
        let offset = if is_view(&node.op, &ins) {
            ins[0].offset as usize
        } else {
            let numel: usize = dims.iter().product();
            let n = words(node.dtype, numel, dims.last().copied().unwrap_or(1)).unwrap_or(numel);
            let at = next_word;
            // Keep every tensor 16-byte aligned for vector loads.
            next_word = (next_word + n).next_multiple_of(4);
            at
        };
        let out = Operand {
            offset: u32::try_from(offset).map_err(|_| RunError::TooLarge {
                bytes: offset as u64 * 4,
                limit: u32::MAX as u64,
            })?,
            dims,
            dtype: node.dtype,
        };
        let mut lowered = lower(&node.op, &ins, &out).map_err(|e| RunError::Unsupported {
            node: id,
            op: node.op.name(),
            detail: e.to_string(),
        })?;
        kiln_kernels::families::matmul::fit_invocation_limit(
            &mut lowered,
            crate::device::max_invocations(&device.info().limits),
        );
        dispatches.extend(lowered);
        operands.push(out);
    }
    let mut arena = vec![0u8; next_word.max(4) * 4];
    for (id, node) in bound.nodes().iter().enumerate() {
        let at = operands[id].offset as usize * 4;
        let bytes = match &node.op {
            Op::Input { name } | Op::Param { name } => {
                let t = sources.get(name.as_str()).ok_or_else(|| match node.op {
                    Op::Input { .. } => RunError::MissingInput { name: name.clone() },
                    _ => RunError::MissingParam { name: name.clone() },
                })?;
                if t.dtype != node.dtype || t.shape != operands[id].dims || !t.is_consistent() {
                    return Err(RunError::Mismatch {
                        name: name.clone(),
                        expected: format!("{}{:?}", node.dtype, operands[id].dims),
                        got: format!("{}{:?} ({} bytes)", t.dtype, t.shape, t.bytes.len()),
                    });
                }
                to_arena(t)
            }
            Op::Constant { data } => to_arena(&HostTensor {
                dtype: node.dtype,
                shape: operands[id].dims.clone(),
                bytes: data.clone(),
            }),
            _ => continue,
        };
        arena[at..at + bytes.len()].copy_from_slice(&bytes);
    }
    let reads: Vec<(u64, u64)> = bound
        .outputs()
        .iter()
        .map(|o| {
            let op = &operands[o.0];
            let n = words(op.dtype, op.numel(), op.dims.last().copied().unwrap_or(1)).unwrap_or(0);
            (op.offset as u64, n as u64)
        })
        .collect();
    let data = run_dispatches(device, &arena, &dispatches, &reads)?;
    Ok(bound
        .outputs()
        .iter()
        .zip(&data)
        .map(|(o, bytes)| {
            let op = &operands[o.0];
            from_arena(op.dtype, &op.dims, bytes)
        })
        .collect())
}
