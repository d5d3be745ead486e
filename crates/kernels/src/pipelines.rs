//! Compute pipelines, created once per device and cached by kernel name.

use crate::desc::{Binding, KernelDesc};
use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum PipelineError {
    #[error("kernel `{kernel}` needs {feature}, which the device does not have")]
    MissingFeature {
        kernel: &'static str,
        feature: &'static str,
    },
    #[error("the driver rejected kernel `{kernel}`: {message}")]
    Driver {
        kernel: &'static str,
        message: String,
    },
}

/// A kernel's pipeline and the explicit layout its bind groups must use.
#[derive(Debug)]
pub struct Compiled {
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group_layout: wgpu::BindGroupLayout,
}

/// Pipelines for one device. Explicit layouts (not `layout: None`) keep bindings that a shader
/// does not use from being dropped, so bind groups always match the descriptor.
#[derive(Debug)]
pub struct PipelineCache {
    device: wgpu::Device,
    /// Whether shaders are built with wgpu's bounds checks (index clamping).
    bounds_checks: bool,
    compiled: Mutex<HashMap<&'static str, Arc<Compiled>>>,
}

impl PipelineCache {
    /// Pipelines for `device`; `bounds_checks` keeps wgpu's index clamping in the kernels
    /// (see `kiln_runtime::DeviceOptions::kernel_bounds_checks`).
    pub fn new(device: wgpu::Device, bounds_checks: bool) -> Self {
        PipelineCache {
            device,
            bounds_checks,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    /// How many pipelines have been created so far.
    pub fn len(&self) -> usize {
        self.compiled.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The pipeline of `kernel`, compiling it on first use. Driver and validation errors come
    /// back as [`PipelineError::Driver`] (compilation runs inside wgpu error scopes).
    pub fn get(&self, kernel: &'static KernelDesc) -> Result<Arc<Compiled>, PipelineError> {
        if let Some(c) = self.lock().get(kernel.name) {
            return Ok(c.clone());
        }
        let features = self.device.features();
        if kernel.needs.f16 && !features.contains(wgpu::Features::SHADER_F16) {
            return Err(PipelineError::MissingFeature {
                kernel: kernel.name,
                feature: "SHADER_F16",
            });
        }
        if kernel.needs.subgroups && !features.contains(wgpu::Features::SUBGROUP) {
            return Err(PipelineError::MissingFeature {
                kernel: kernel.name,
                feature: "SUBGROUP",
            });
        }
        if kernel.needs.cooperative_matrix
            && !features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            return Err(PipelineError::MissingFeature {
                kernel: kernel.name,
                feature: "EXPERIMENTAL_COOPERATIVE_MATRIX",
            });
        }
        let compiled = Arc::new(self.compile(kernel)?);
        self.lock().insert(kernel.name, compiled.clone());
        Ok(compiled)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, Arc<Compiled>>> {
        // A poisoned lock only means another thread panicked mid-insert; the map is still valid.
        self.compiled.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn compile(&self, k: &'static KernelDesc) -> Result<Compiled, PipelineError> {
        // A replaced source must keep the kernel's entry point, bindings and params: wgpu
        // validates it when the pipeline is built, with errors reported like the shipped ones.
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = k
            .bindings
            .iter()
            .enumerate()
            .map(|(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match b {
                    Binding::StorageRead => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    Binding::StorageReadWrite | Binding::ArenaVec4 => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    // A dynamic offset, so that every dispatch of a kernel over the same
                    // storage window shares one bind group (its params at their own offset).
                    Binding::Uniform => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: NonZeroU64::new(k.params.size as u64),
                    },
                },
                count: None,
            })
            .collect();
        let bind_group_layout =
            self.device
                .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                    label: Some(k.name),
                    entries: &entries,
                });
        let layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(k.name),
                bind_group_layouts: &[Some(&bind_group_layout)],
                immediate_size: 0,
            });
        let (source, replaced) = kernel_source(k);
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(k.file),
            source: wgpu::ShaderSource::Wgsl(source),
        };
        // A source from outside the binary is built like the shipped ones (so experiments
        // measure what shipping would) only if its loops pass the same structural check;
        // otherwise it gets every runtime check wgpu offers.
        let trusted = !replaced || counted_loops_only(&desc);
        let module = if !trusted {
            self.device.create_shader_module(desc)
        } else {
            // SAFETY: the shaders are kiln's own, validated by naga in CI and tested against
            // the reference on random inputs. `force_loop_bounding` only guards against
            // infinite loops, and every loop in shaders/ terminates: each is a `for` counting
            // to a bound from constants or params, or halving a constant stride to zero.
            // `validate_kernel` refuses loops without a step (`while`, a `for` without an
            // update, a `loop` without `continuing`); that check is structural, so a new loop
            // still needs the same review. The guard costs a 64-bit
            // counter per iteration and keeps drivers from unrolling counted loops: on the
            // H200 the f32 4096^3 matmul took 9.44 ms with it, 7.66 without. Bounds checks
            // are the caller's choice (off by default: every index comes from params that
            // lowering computed from validated shapes; see `DeviceOptions`).
            let mut checks = wgpu::ShaderRuntimeChecks::checked();
            checks.force_loop_bounding = false;
            checks.bounds_checks = self.bounds_checks;
            unsafe { self.device.create_shader_module_trusted(desc, checks) }
        };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(k.name),
                layout: Some(&layout),
                module: &module,
                entry_point: Some(k.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: k.constants,
                    ..Default::default()
                },
                cache: None,
            });
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(validation.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(PipelineError::Driver {
                kernel: k.name,
                message: e.to_string(),
            });
        }
        Ok(Compiled {
            pipeline,
            bind_group_layout,
        })
    }
}

/// Whether a WGSL source parses and has only loops with a step (`validate.rs`).
fn counted_loops_only(desc: &wgpu::ShaderModuleDescriptor<'_>) -> bool {
    let wgpu::ShaderSource::Wgsl(text) = &desc.source else {
        return false;
    };
    naga::front::wgsl::parse_str(text)
        .map(|module| crate::validate::check_loops_step(&module).is_ok())
        .unwrap_or(false)
}

/// The WGSL of `k` and whether it was replaced: its embedded source, or, when the environment
/// variable `KILN_SHADER_DIR` names a directory holding `NAME.wgsl` (the kernel's whole
/// concatenated source), that file. This is for kernel experiments on a GPU machine without
/// rebuilding the binary (pipelines and `kiln kernel-stats` both read it).
pub fn kernel_source(k: &KernelDesc) -> (std::borrow::Cow<'static, str>, bool) {
    let replaced = std::env::var_os("KILN_SHADER_DIR")
        .map(|dir| std::path::Path::new(&dir).join(format!("{}.wgsl", k.name)))
        .and_then(|path| std::fs::read_to_string(&path).ok().map(|s| (path, s)));
    match replaced {
        Some((path, text)) => {
            tracing::warn!(kernel = k.name, path = %path.display(), "kernel source replaced");
            (text.into(), true)
        }
        None => (k.source.into(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wgsl(text: &'static str) -> wgpu::ShaderModuleDescriptor<'static> {
        wgpu::ShaderModuleDescriptor {
            label: None,
            source: wgpu::ShaderSource::Wgsl(text.into()),
        }
    }

    #[test]
    fn replaced_sources_are_trusted_only_with_counted_loops() {
        let counted = "@compute @workgroup_size(1) fn main() { for (var i = 0u; i < 4u; i++) {} }";
        let unbounded = "@compute @workgroup_size(1) fn main() { loop { break; } }";
        assert!(counted_loops_only(&wgsl(counted)));
        assert!(!counted_loops_only(&wgsl(unbounded)));
        assert!(!counted_loops_only(&wgsl("fn (")));
    }
}
