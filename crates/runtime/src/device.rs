//! The wgpu device: adapter choice, real limits, the features kernels use.

use kiln_kernels::PipelineCache;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum DeviceError {
    #[error("no GPU adapter found for backends {backends}{hint}")]
    NoAdapter {
        backends: String,
        hint: &'static str,
    },
    #[error("no adapter name contains `{wanted}`; available: {available}")]
    NoMatchingAdapter { wanted: String, available: String },
    #[error("the adapter refused the device: {0}")]
    RequestDevice(String),
}

/// How to choose and configure the device.
#[derive(Debug, Clone, Default)]
pub struct DeviceOptions {
    /// Backends to consider; `None` reads `WGPU_BACKEND` (e.g. `vulkan`), else all.
    pub backends: Option<wgpu::Backends>,
    /// A case-insensitive substring of the adapter name; `None` reads `WGPU_ADAPTER_NAME`.
    pub adapter_name: Option<String>,
    /// Caps `max_storage_buffer_binding_size` below the adapter's (tests use this to force bind
    /// windows and staging on small arenas).
    pub max_storage_binding: Option<u64>,
    /// Caps the invocations of one workgroup (`max_compute_invocations_per_workgroup` and
    /// `max_compute_workgroup_size_x`) below the adapter's: kernels that need more are then
    /// replaced by smaller ones (tests use this to run the fallbacks; WebGPU guarantees 256).
    pub max_workgroup_invocations: Option<u32>,
    /// Compiles kiln's kernels with wgpu's bounds checks: every index into a workgroup, local
    /// or storage array clamped to the array. `None` reads `KILN_KERNEL_BOUNDS_CHECKS` (`1` or
    /// `true` turns them on), else off. Off, the kernels' indices are trusted: each comes from
    /// params that lowering computed from validated shapes (the few loads that may run past a
    /// tensor, then discarded, clamp themselves to the binding), and every kernel is tested
    /// against the reference (the test suite runs both ways). Storage buffers stay protected
    /// where the driver has robust buffer access (Vulkan's `robustBufferAccess2`, as on
    /// NVIDIA). The clamps cost: SmolLM2 prefill 9.98 ms with them off, 11.5 ms on (H200,
    /// docs/PERFORMANCE.md).
    pub kernel_bounds_checks: Option<bool>,
    /// How long a run waits for the GPU by polling in a busy loop before it blocks in the
    /// driver: `None` is [`DEFAULT_SPIN_WAIT`]. A blocking wait wakes up late (on the H200,
    /// 0.3–0.4 ms after a 0.4–2.4 ms run), so short runs spin; a run still busy after this long
    /// blocks and leaves the CPU free. `Some(Duration::ZERO)` always blocks.
    pub spin_wait: Option<std::time::Duration>,
}

/// The default of [`DeviceOptions::spin_wait`]: long enough for a decode step or a small
/// batch, short enough that long runs do not hold a CPU core.
pub const DEFAULT_SPIN_WAIT: std::time::Duration = std::time::Duration::from_millis(10);

/// The most invocations one of kiln's workgroups may have under `limits`: every kernel's
/// workgroup is one-dimensional, so the x extent bounds it as well as the total.
pub(crate) fn max_invocations(limits: &wgpu::Limits) -> u32 {
    limits
        .max_compute_invocations_per_workgroup
        .min(limits.max_compute_workgroup_size_x)
}

/// What kiln knows about the chosen device.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    pub adapter: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    pub features: wgpu::Features,
    /// Whether the cooperative-matrix matmul (`matmul_coop`) can run here: see
    /// [`cooperative_f16_supported`].
    pub cooperative_f16: bool,
}

/// Whether an adapter can run kiln's cooperative-matrix matmul: the experimental feature and
/// f16 are enabled, a 16x16x16 configuration with f16 inputs and an f32 accumulator is listed,
/// and subgroups are exactly 32 wide (the kernel assigns fragments to subgroups by invocation
/// index).
pub fn cooperative_f16_supported(
    features: wgpu::Features,
    configs: &[wgpu::CooperativeMatrixProperties],
    subgroup_sizes: (u32, u32),
) -> bool {
    features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX | wgpu::Features::SHADER_F16)
        && subgroup_sizes == (32, 32)
        && configs.iter().any(|c| {
            (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
                && c.ab_type == wgpu::CooperativeScalarType::F16
                && c.cr_type == wgpu::CooperativeScalarType::F32
        })
}

/// A wgpu device and queue with kiln's pipeline cache. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Device {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    pipelines: PipelineCache,
    counts: Counters,
    spin_wait: std::time::Duration,
}

/// How many resources kiln has created and how many submits it made on a device: the runtime
/// creates buffers and bind groups and submits only through [`Device`], so tests can check that
/// a run creates nothing and submits once.
#[derive(Debug, Default)]
struct Counters {
    buffers: AtomicU64,
    bind_groups: AtomicU64,
    submits: AtomicU64,
}

/// A snapshot of [`Device::counts`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceCounts {
    pub buffers: u64,
    pub bind_groups: u64,
    pub pipelines: u64,
    pub submits: u64,
}

/// Features kiln uses where the adapter has them.
fn wanted_features() -> wgpu::Features {
    wgpu::Features::SHADER_F16
        | wgpu::Features::SUBGROUP
        | wgpu::Features::TIMESTAMP_QUERY
        | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
        | wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX
}

fn instance(backends: Option<wgpu::Backends>) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    if let Some(b) = backends {
        desc.backends = b;
    }
    wgpu::Instance::new(desc)
}

/// Every adapter visible with `options`' backends.
pub fn list_adapters(options: &DeviceOptions) -> Vec<wgpu::AdapterInfo> {
    let inst = instance(options.backends);
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
        .iter()
        .map(|a| a.get_info())
        .collect()
}

impl Device {
    /// Chooses an adapter and opens a device with its real limits (not wgpu's low defaults).
    pub fn new(options: &DeviceOptions) -> Result<Device, DeviceError> {
        let inst = instance(options.backends);
        let wanted = options
            .adapter_name
            .clone()
            .or_else(|| std::env::var("WGPU_ADAPTER_NAME").ok())
            .filter(|s| !s.is_empty());
        let adapter = match wanted {
            Some(name) => {
                let adapters = pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()));
                let lower = name.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&lower))
                    .ok_or_else(|| DeviceError::NoMatchingAdapter {
                        wanted: name,
                        available: if names.is_empty() {
                            "none".into()
                        } else {
                            names.join(", ")
                        },
                    })?
            }
            None => pollster::block_on(inst.request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            }))
            .map_err(|_| DeviceError::NoAdapter {
                backends: format!("{:?}", options.backends.unwrap_or(wgpu::Backends::all())),
                hint: " (on Debian/Ubuntu install mesa-vulkan-drivers and libvulkan1)",
            })?,
        };
        let mut limits = adapter.limits();
        if let Some(cap) = options.max_storage_binding {
            limits.max_storage_buffer_binding_size =
                limits.max_storage_buffer_binding_size.min(cap);
        }
        if let Some(cap) = options.max_workgroup_invocations {
            limits.max_compute_invocations_per_workgroup =
                limits.max_compute_invocations_per_workgroup.min(cap);
            limits.max_compute_workgroup_size_x = limits.max_compute_workgroup_size_x.min(cap);
        }
        let features = adapter.features() & wanted_features();
        let experimental = if features.contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX) {
            // SAFETY: wgpu asks callers of experimental features to accept that they may be
            // incomplete. kiln uses exactly one (cooperative matrices), only in `matmul_coop`,
            // only when the adapter lists the configuration it needs, and only when a compile
            // asks for f16 matmul inputs; its results are tested against the f32 kernels.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("kiln"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: experimental,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| DeviceError::RequestDevice(e.to_string()))?;
        let adapter_info = adapter.get_info();
        let cooperative_f16 = cooperative_f16_supported(
            features,
            &adapter.cooperative_matrix_properties(),
            (
                adapter_info.subgroup_min_size,
                adapter_info.subgroup_max_size,
            ),
        );
        let info = DeviceInfo {
            adapter: adapter_info,
            limits,
            features,
            cooperative_f16,
        };
        tracing::info!(adapter = %info.adapter.name, backend = ?info.adapter.backend, "device opened");
        Ok(Device {
            inner: Arc::new(Inner {
                pipelines: PipelineCache::new(
                    device.clone(),
                    options.kernel_bounds_checks.unwrap_or_else(|| {
                        std::env::var("KILN_KERNEL_BOUNDS_CHECKS")
                            .is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                    }),
                ),
                device,
                queue,
                info,
                counts: Counters::default(),
                spin_wait: options.spin_wait.unwrap_or(DEFAULT_SPIN_WAIT),
            }),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.inner.info
    }

    pub fn wgpu_device(&self) -> &wgpu::Device {
        &self.inner.device
    }

    pub fn queue(&self) -> &wgpu::Queue {
        &self.inner.queue
    }

    pub fn pipelines(&self) -> &PipelineCache {
        &self.inner.pipelines
    }

    /// Resources created and submits made through this device so far.
    pub fn counts(&self) -> ResourceCounts {
        let c = &self.inner.counts;
        ResourceCounts {
            buffers: c.buffers.load(Ordering::Relaxed),
            bind_groups: c.bind_groups.load(Ordering::Relaxed),
            pipelines: self.inner.pipelines.len() as u64,
            submits: c.submits.load(Ordering::Relaxed),
        }
    }

    /// Waits until the GPU has finished everything submitted so far (and fired its
    /// callbacks, e.g. buffer mappings): polls in a busy loop for up to
    /// [`DeviceOptions::spin_wait`], then blocks.
    pub fn wait_idle(&self) -> Result<(), wgpu::PollError> {
        let device = &self.inner.device;
        let spin = self.inner.spin_wait;
        if !spin.is_zero() {
            let started = std::time::Instant::now();
            while started.elapsed() < spin {
                if device.poll(wgpu::PollType::Poll)?.is_queue_empty() {
                    return Ok(());
                }
                std::hint::spin_loop();
            }
        }
        device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ())
    }

    /// Creates a buffer (counted).
    pub fn create_buffer(&self, desc: &wgpu::BufferDescriptor<'_>) -> wgpu::Buffer {
        self.inner.counts.buffers.fetch_add(1, Ordering::Relaxed);
        self.inner.device.create_buffer(desc)
    }

    /// Creates a buffer with contents (counted).
    pub fn create_buffer_init(&self, desc: &wgpu::util::BufferInitDescriptor<'_>) -> wgpu::Buffer {
        use wgpu::util::DeviceExt;
        self.inner.counts.buffers.fetch_add(1, Ordering::Relaxed);
        self.inner.device.create_buffer_init(desc)
    }

    /// Creates a bind group (counted).
    pub fn create_bind_group(&self, desc: &wgpu::BindGroupDescriptor<'_>) -> wgpu::BindGroup {
        self.inner
            .counts
            .bind_groups
            .fetch_add(1, Ordering::Relaxed);
        self.inner.device.create_bind_group(desc)
    }

    /// Submits command buffers (counted).
    pub fn submit(&self, commands: impl IntoIterator<Item = wgpu::CommandBuffer>) {
        self.inner.counts.submits.fetch_add(1, Ordering::Relaxed);
        self.inner.queue.submit(commands);
    }
}

#[cfg(test)]
mod cooperative_tests {
    use super::cooperative_f16_supported;
    use wgpu::{CooperativeMatrixProperties as Props, CooperativeScalarType as T, Features as F};

    fn config(size: u32, ab: T, cr: T) -> Props {
        Props {
            m_size: size,
            n_size: size,
            k_size: size,
            ab_type: ab,
            cr_type: cr,
            saturating_accumulation: false,
        }
    }

    #[test]
    fn needs_the_feature_the_config_and_32_wide_subgroups() {
        let both = F::EXPERIMENTAL_COOPERATIVE_MATRIX | F::SHADER_F16;
        let good = [config(8, T::F32, T::F32), config(16, T::F16, T::F32)];
        assert!(cooperative_f16_supported(both, &good, (32, 32)));
        // Any one missing piece turns it off.
        assert!(!cooperative_f16_supported(F::SHADER_F16, &good, (32, 32)));
        assert!(!cooperative_f16_supported(
            F::EXPERIMENTAL_COOPERATIVE_MATRIX,
            &good,
            (32, 32)
        ));
        assert!(!cooperative_f16_supported(both, &good, (32, 64)));
        assert!(!cooperative_f16_supported(both, &good, (16, 16)));
        assert!(!cooperative_f16_supported(both, &good[..1], (32, 32)));
        let f16_acc = [config(16, T::F16, T::F16)];
        assert!(!cooperative_f16_supported(both, &f16_acc, (32, 32)));
        assert!(!cooperative_f16_supported(both, &[], (32, 32)));
    }
}
