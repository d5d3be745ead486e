//! Node-by-node execution of graphs whose ops all have kernels.
//!
//! It runs a whole graph in one compute pass and one submit over a bump-allocated arena, so the
//! device path is exercised end to end (the README demo, the kernel tests). The planned executor
//! (liveness arena, bind windows, active extent) supersedes it.

use crate::device::Device;
use crate::error::RunError;
use crate::transfer::{from_arena, to_arena, words};
use kiln_ir::{HostTensor, Op};
use kiln_kernels::lower::{is_view, lower, Dispatch, Operand};
use std::collections::HashMap;
use wgpu::util::DeviceExt;

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
        let lowered = lower(&node.op, &ins, &out).map_err(|e| RunError::Unsupported {
            node: id,
            op: node.op.name(),
            detail: e.to_string(),
        })?;
        dispatches.extend(lowered);
        operands.push(out);
    }
    let arena_bytes = (next_word.max(4) * 4) as u64;
    let limit = device.info().limits.max_storage_buffer_binding_size;
    if arena_bytes > limit {
        return Err(RunError::TooLarge {
            bytes: arena_bytes,
            limit,
        });
    }

    let wdev = device.wgpu_device();
    let arena = wdev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln eager arena"),
        size: arena_bytes,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    for (id, node) in bound.nodes().iter().enumerate() {
        let at = operands[id].offset as u64 * 4;
        let bytes = match &node.op {
            Op::Input { name } | Op::Param { name } => {
                let t = sources.get(name.as_str()).ok_or_else(|| match node.op {
                    Op::Input { .. } => RunError::MissingInput { name: name.clone() },
                    _ => RunError::MissingParam { name: name.clone() },
                })?;
                if t.dtype != node.dtype || t.shape != operands[id].dims {
                    return Err(RunError::Mismatch {
                        name: name.clone(),
                        expected: format!("{}{:?}", node.dtype, operands[id].dims),
                        got: format!("{}{:?}", t.dtype, t.shape),
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
        if !bytes.is_empty() {
            device.queue().write_buffer(&arena, at, &bytes);
        }
    }

    // All params in one uniform buffer, each at an aligned offset.
    let align = device.info().limits.min_uniform_buffer_offset_alignment as usize;
    let mut uniform = Vec::new();
    let mut uniform_at = Vec::with_capacity(dispatches.len());
    for d in &dispatches {
        uniform.resize(uniform.len().next_multiple_of(align), 0);
        uniform_at.push(uniform.len() as u64);
        uniform.extend_from_slice(&d.params);
    }
    uniform.resize(uniform.len().max(16), 0);
    let uniform_buf = wdev.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("kiln eager params"),
        contents: &uniform,
        usage: wgpu::BufferUsages::UNIFORM,
    });

    let mut encoder = wdev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("kiln eager"),
    });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kiln eager"),
            timestamp_writes: None,
        });
        for (d, &u) in dispatches.iter().zip(&uniform_at) {
            let compiled = device.pipelines().get(d.kernel)?;
            let bind = wdev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.kernel.name),
                layout: &compiled.bind_group_layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: arena.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &uniform_buf,
                            offset: u,
                            size: wgpu::BufferSize::new(d.params.len() as u64),
                        }),
                    },
                ],
            });
            pass.set_pipeline(&compiled.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    // Outputs are copied into one staging buffer in the same submit.
    let mut out_at = Vec::new();
    let mut staging_bytes = 0u64;
    for o in bound.outputs() {
        let op = &operands[o.0];
        let n = words(op.dtype, op.numel(), op.dims.last().copied().unwrap_or(1)).unwrap_or(0);
        let bytes = n as u64 * 4;
        out_at.push((staging_bytes, bytes));
        staging_bytes += bytes;
    }
    let staging = wdev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln eager readback"),
        size: staging_bytes.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    for (o, &(at, bytes)) in bound.outputs().iter().zip(&out_at) {
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(
                &arena,
                operands[o.0].offset as u64 * 4,
                &staging,
                at,
                bytes,
            );
        }
    }
    device.queue().submit([encoder.finish()]);
    let data = crate::readback::map_read(device, &staging)?;
    Ok(bound
        .outputs()
        .iter()
        .zip(&out_at)
        .map(|(o, &(at, bytes))| {
            let op = &operands[o.0];
            from_arena(
                op.dtype,
                &op.dims,
                &data[at as usize..(at + bytes) as usize],
            )
        })
        .collect())
}
