//! The device path works end to end: a WGSL compute shader is compiled and dispatched on the
//! Vulkan adapter and its result checked.

mod common;

use kiln::runtime::wgpu;
use wgpu::util::DeviceExt;

#[test]
fn wgsl_dispatch_on_vulkan() {
    let dev = common::device();
    assert_eq!(
        dev.info().adapter.backend,
        wgpu::Backend::Vulkan,
        "not the GL fallback"
    );
    let d = dev.wgpu_device();
    const SRC: &str = "@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x < arrayLength(&data)) { data[gid.x] = data[gid.x] * 3u + gid.x; }
}";
    let input: Vec<u32> = (0..1000).collect();
    let buf = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
        label: None,
        contents: bytemuck::cast_slice(&input),
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
    });
    let staging = d.create_buffer(&wgpu::BufferDescriptor {
        label: None,
        size: 4000,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let module = d.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: None,
        source: wgpu::ShaderSource::Wgsl(SRC.into()),
    });
    let pipeline = d.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: None,
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind = d.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[wgpu::BindGroupEntry {
            binding: 0,
            resource: buf.as_entire_binding(),
        }],
    });
    let mut enc = d.create_command_encoder(&Default::default());
    {
        let mut pass = enc.begin_compute_pass(&Default::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(1000u32.div_ceil(64), 1, 1);
    }
    enc.copy_buffer_to_buffer(&buf, 0, &staging, 0, 4000);
    dev.queue().submit([enc.finish()]);
    let bytes = kiln::runtime::readback::map_read(&dev, &staging).unwrap();
    for (i, c) in bytes.chunks_exact(4).enumerate() {
        let v = u32::from_le_bytes(c.try_into().unwrap());
        assert_eq!(v, i as u32 * 4, "element {i}");
    }
}

#[test]
fn every_kernel_pipeline_builds_on_the_device() {
    let dev = common::device();
    let features = dev.info().features;
    for k in kiln::kernels::all_kernels() {
        let coop = kiln::runtime::wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
        if k.needs.cooperative_matrix && !features.contains(coop) {
            // Refused with a typed error naming the kernel and the feature, never built.
            match dev.pipelines().get(k) {
                Err(kiln::kernels::PipelineError::MissingFeature { kernel, feature }) => {
                    assert_eq!(
                        (kernel, feature),
                        (k.name, "EXPERIMENTAL_COOPERATIVE_MATRIX")
                    );
                }
                other => panic!("{}: expected MissingFeature, got {other:?}", k.name),
            }
            continue;
        }
        dev.pipelines().get(k).unwrap_or_else(|e| panic!("{e}"));
    }
    // A second request is served from the cache.
    let before = dev.pipelines().len();
    dev.pipelines()
        .get(kiln::kernels::all_kernels()[0])
        .unwrap();
    assert_eq!(dev.pipelines().len(), before);
}
