//! Running a list of dispatches over one arena buffer: one compute pass, one submit, readback
//! in the same submit.

use crate::device::Device;
use crate::error::RunError;
use kiln_kernels::Dispatch;

/// Uploads `arena` (its initial bytes, a multiple of 4), runs `dispatches` in order in one
/// compute pass, and returns the bytes of each `(word offset, word count)` range in `reads`.
pub fn run_dispatches(
    device: &Device,
    arena: &[u8],
    dispatches: &[Dispatch],
    reads: &[(u64, u64)],
) -> Result<Vec<Vec<u8>>, RunError> {
    let limit = device.info().limits.max_storage_buffer_binding_size;
    let arena_bytes = (arena.len() as u64).max(16).next_multiple_of(4);
    if arena_bytes > limit {
        return Err(RunError::TooLarge {
            bytes: arena_bytes,
            limit,
        });
    }
    let wdev = device.wgpu_device();
    let mut init = arena.to_vec();
    init.resize(arena_bytes as usize, 0);
    let buffer = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("kiln arena"),
        contents: &init,
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
    });

    // All params in one uniform buffer, each at an aligned offset.
    let align = device.info().limits.min_uniform_buffer_offset_alignment as usize;
    let mut uniform = Vec::new();
    let mut uniform_at = Vec::with_capacity(dispatches.len());
    for d in dispatches {
        uniform.resize(uniform.len().next_multiple_of(align), 0);
        uniform_at.push(uniform.len() as u64);
        uniform.extend_from_slice(&d.params);
    }
    uniform.resize(uniform.len().max(16), 0);
    let uniform_buf = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: Some("kiln params"),
        contents: &uniform,
        usage: wgpu::BufferUsages::UNIFORM,
    });

    let mut encoder = wdev.create_command_encoder(&wgpu::CommandEncoderDescriptor {
        label: Some("kiln run"),
    });
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some("kiln run"),
            timestamp_writes: None,
        });
        for (d, &u) in dispatches.iter().zip(&uniform_at) {
            let compiled = device.pipelines().get(d.kernel)?;
            let params = wgpu::BufferBinding {
                buffer: &uniform_buf,
                offset: u,
                size: wgpu::BufferSize::new(d.params.len() as u64),
            };
            let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some(d.kernel.name),
                layout: &compiled.bind_group_layout,
                entries: &crate::bind::entries(d.kernel, buffer.as_entire_buffer_binding(), params),
            });
            pass.set_pipeline(&compiled.pipeline);
            // The params sit at `u` through the binding's own offset; no dynamic offset.
            pass.set_bind_group(0, &bind, &[0]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    let total: u64 = reads.iter().map(|r| r.1 * 4).sum();
    let staging = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("kiln readback"),
        size: total.max(4),
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut at = 0u64;
    for &(offset, words) in reads {
        if words > 0 {
            encoder.copy_buffer_to_buffer(&buffer, offset * 4, &staging, at, words * 4);
        }
        at += words * 4;
    }
    device.submit([encoder.finish()]);
    let data = crate::readback::map_read(device, &staging)?;
    let mut out = Vec::with_capacity(reads.len());
    let mut at = 0usize;
    for &(_, words) in reads {
        out.push(data[at..at + words as usize * 4].to_vec());
        at += words as usize * 4;
    }
    Ok(out)
}
