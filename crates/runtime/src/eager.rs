//! Node-by-node execution of graphs whose ops all have kernels today (elementwise families).
//!
//! It runs a whole graph in one compute pass and one submit over a bump-allocated arena, so the
//! device path is exercised end to end (the README demo, the smoke tests). The planned
//! executor (liveness arena, bind windows, active extent) supersedes it.

use crate::device::Device;
use crate::error::RunError;
use kiln_ir::{DType, Graph, HostTensor, Node, Op};
use kiln_kernels::dispatch::grid_1d;
use kiln_kernels::families::elementwise::{
    activation_id, binary_op_id, compare_op_id, pack_dims, BinaryParams, UnaryParams, BINARY, UNARY,
};
use kiln_kernels::KernelDesc;
use std::collections::HashMap;
use wgpu::util::DeviceExt;

/// One dispatch: its kernel, params bytes and grid.
struct Step {
    kernel: &'static KernelDesc,
    params: Vec<u8>,
    groups: [u32; 3],
}

/// Runs `graph` on `device` with the given params and inputs; returns the outputs in order.
pub fn run_eager(
    device: &Device,
    graph: &Graph,
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

    // Element offsets into the arena; reshapes alias their input.
    let mut offsets = Vec::with_capacity(bound.len());
    let mut dims = Vec::with_capacity(bound.len());
    let mut next = 0usize;
    for (id, node) in bound.nodes().iter().enumerate() {
        let shape = node
            .shape
            .as_static()
            .ok_or_else(|| RunError::Unsupported {
                node: id,
                op: node.op.name(),
                detail: format!("shape {} is not bound", node.shape),
            })?;
        check_supported(id, node)?;
        let numel: usize = shape.iter().product();
        if let Op::Reshape { .. } = node.op {
            offsets.push(offsets[node.inputs[0].0]);
        } else {
            offsets.push(next);
            next += numel;
        }
        dims.push(shape);
    }
    let arena_bytes = (next.max(1) * 4) as u64;
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

    let mut steps = Vec::new();
    for (id, node) in bound.nodes().iter().enumerate() {
        let at = |i: usize| offsets[node.inputs[i].0] as u32;
        match &node.op {
            Op::Input { name } | Op::Param { name } => {
                let t = sources.get(name.as_str()).ok_or_else(|| match node.op {
                    Op::Input { .. } => RunError::MissingInput { name: name.clone() },
                    _ => RunError::MissingParam { name: name.clone() },
                })?;
                if t.dtype != node.dtype || t.shape != dims[id] {
                    return Err(RunError::Mismatch {
                        name: name.clone(),
                        expected: format!("{}{:?}", node.dtype, dims[id]),
                        got: format!("{}{:?}", t.dtype, t.shape),
                    });
                }
                device
                    .queue()
                    .write_buffer(&arena, offsets[id] as u64 * 4, &t.bytes);
            }
            Op::Constant { data } => {
                if !data.is_empty() {
                    device
                        .queue()
                        .write_buffer(&arena, offsets[id] as u64 * 4, data);
                }
            }
            Op::Reshape { .. } => {}
            Op::Binary { .. } | Op::Compare { .. } => {
                let out = &dims[id];
                let strides = |i: usize| broadcast_strides(&dims[node.inputs[i].0], out);
                let too_big = || RunError::Unsupported {
                    node: id,
                    op: node.op.name(),
                    detail: format!("rank {} exceeds the kernel's 8 dims", out.len()),
                };
                let numel = out.iter().product::<usize>();
                let grid = grid_1d(numel as u64, 64).ok_or_else(too_big)?;
                let op = match node.op {
                    Op::Binary { kind } => binary_op_id(kind),
                    Op::Compare { kind } => compare_op_id(kind),
                    _ => unreachable!("matched above"),
                };
                let p = BinaryParams {
                    numel: numel as u32,
                    op,
                    rank: out.len() as u32,
                    a_offset: at(0),
                    b_offset: at(1),
                    out_offset: offsets[id] as u32,
                    grid_width: grid.grid_width,
                    _pad: 0,
                    out_shape: pack_dims(out).ok_or_else(too_big)?,
                    a_strides: pack_dims(&strides(0)).ok_or_else(too_big)?,
                    b_strides: pack_dims(&strides(1)).ok_or_else(too_big)?,
                };
                steps.push(Step {
                    kernel: &BINARY,
                    params: bytemuck::bytes_of(&p).to_vec(),
                    groups: grid.groups,
                });
            }
            Op::Activation { kind } => {
                let numel = dims[id].iter().product::<usize>();
                let grid = grid_1d(numel as u64, 64).ok_or(RunError::TooLarge {
                    bytes: numel as u64 * 4,
                    limit,
                })?;
                let p = UnaryParams {
                    numel: numel as u32,
                    op: activation_id(*kind),
                    in_offset: at(0),
                    out_offset: offsets[id] as u32,
                    grid_width: grid.grid_width,
                    ..Default::default()
                };
                steps.push(Step {
                    kernel: &UNARY,
                    params: bytemuck::bytes_of(&p).to_vec(),
                    groups: grid.groups,
                });
            }
            _ => unreachable!("check_supported rejected every other op"),
        }
    }

    // All params in one uniform buffer, each at an aligned offset.
    let align = device.info().limits.min_uniform_buffer_offset_alignment as usize;
    let mut uniform = Vec::new();
    let mut uniform_at = Vec::with_capacity(steps.len());
    for s in &steps {
        uniform.resize(uniform.len().next_multiple_of(align), 0);
        uniform_at.push(uniform.len() as u64);
        uniform.extend_from_slice(&s.params);
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
        for (s, &u) in steps.iter().zip(&uniform_at) {
            let compiled = device.pipelines().get(s.kernel)?;
            let bind = wdev.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(s.kernel.name),
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
                            size: wgpu::BufferSize::new(s.params.len() as u64),
                        }),
                    },
                ],
            });
            pass.set_pipeline(&compiled.pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(s.groups[0], s.groups[1], s.groups[2]);
        }
    }

    // Outputs are copied into one staging buffer in the same submit.
    let mut out_at = Vec::new();
    let mut staging_bytes = 0u64;
    for o in bound.outputs() {
        let bytes = dims[o.0].iter().product::<usize>() as u64 * 4;
        out_at.push((staging_bytes, bytes));
        staging_bytes += bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
    }
    let staging = wdev.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln eager readback"),
        size: staging_bytes.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    for (o, &(at, bytes)) in bound.outputs().iter().zip(&out_at) {
        if bytes > 0 {
            encoder.copy_buffer_to_buffer(&arena, offsets[o.0] as u64 * 4, &staging, at, bytes);
        }
    }
    device.queue().submit([encoder.finish()]);
    let data = crate::readback::map_read(device, &staging)?;

    bound
        .outputs()
        .iter()
        .zip(&out_at)
        .map(|(o, &(at, bytes))| {
            let node = &bound.nodes()[o.0];
            let raw = &data[at as usize..(at + bytes) as usize];
            let values = kiln_ir::tensor::decode(DType::F32, raw);
            HostTensor::from_values(node.dtype, &dims[o.0], &values).map_err(|e| {
                RunError::Unsupported {
                    node: o.0,
                    op: node.op.name(),
                    detail: e.to_string(),
                }
            })
        })
        .collect()
}

fn check_supported(id: usize, node: &Node) -> Result<(), RunError> {
    let supported = matches!(
        node.op,
        Op::Input { .. }
            | Op::Param { .. }
            | Op::Constant { .. }
            | Op::Reshape { .. }
            | Op::Binary { .. }
            | Op::Compare { .. }
            | Op::Activation { .. }
    );
    if !supported {
        return Err(RunError::Unsupported {
            node: id,
            op: node.op.name(),
            detail: "no GPU kernel for this op yet".into(),
        });
    }
    // Compare produces bool, held as f32 0/1 here and converted on readback.
    let dtype_ok = node.dtype == DType::F32 || matches!(node.op, Op::Compare { .. });
    if !dtype_ok {
        return Err(RunError::Unsupported {
            node: id,
            op: node.op.name(),
            detail: format!("dtype {} (only f32 runs on the GPU yet)", node.dtype),
        });
    }
    Ok(())
}

/// Strides reading `shape` broadcast to `out` (0 on broadcast axes).
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let lead = out.len() - shape.len();
    let mut own = vec![1usize; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        own[i] = own[i + 1] * shape[i + 1];
    }
    (0..out.len())
        .map(|i| {
            if i < lead || shape[i - lead] == 1 {
                0
            } else {
                own[i - lead]
            }
        })
        .collect()
}
