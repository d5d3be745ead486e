//! A kernel's bind group entries, from its binding list.

use kiln_kernels::{Binding, KernelDesc};

/// The entries of `kernel`'s bind group: each storage binding sees `storage` (the arena window;
/// `ArenaVec4` sees it again as vec4s), the uniform sees `uniform`.
pub(crate) fn entries<'a>(
    kernel: &KernelDesc,
    storage: wgpu::BufferBinding<'a>,
    uniform: wgpu::BufferBinding<'a>,
) -> Vec<wgpu::BindGroupEntry<'a>> {
    kernel
        .bindings
        .iter()
        .enumerate()
        .map(|(i, b)| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: wgpu::BindingResource::Buffer(match b {
                Binding::StorageRead | Binding::StorageReadWrite | Binding::ArenaVec4 => {
                    storage.clone()
                }
                Binding::Uniform => uniform.clone(),
            }),
        })
        .collect()
}
