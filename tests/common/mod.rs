//! Helpers shared by the GPU test files.
#![allow(dead_code)]

use kiln::runtime::{Device, DeviceOptions};
use std::sync::OnceLock;

/// The test device, opened once per test binary. Tests insist on Vulkan: wgpu would otherwise
/// fall back silently to GL, which lacks the features kiln uses.
pub fn device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let dev = Device::new(&DeviceOptions {
                backends: Some(kiln::runtime::wgpu::Backends::VULKAN),
                ..Default::default()
            })
            .unwrap_or_else(|e| {
                panic!("{e}: the GPU tests need a Vulkan driver (apt-get install mesa-vulkan-drivers libvulkan1)")
            });
            assert_eq!(dev.info().adapter.backend, kiln::runtime::wgpu::Backend::Vulkan);
            dev
        })
        .clone()
}

/// A second device whose storage bindings are capped at `TINY_BINDING` bytes, so that the
/// planner must use bind windows and staging even for small test graphs, and whose workgroups
/// are capped at WebGPU's default 256 invocations, so that kernels needing more fall back.
pub fn tiny_device() -> Device {
    static DEVICE: OnceLock<Device> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::new(&DeviceOptions {
                backends: Some(kiln::runtime::wgpu::Backends::VULKAN),
                max_storage_binding: Some(TINY_BINDING),
                max_workgroup_invocations: Some(256),
                // The tests on this device also run the kernels with wgpu's bounds checks,
                // those on `device()` without (the default, unless KILN_KERNEL_BOUNDS_CHECKS
                // says otherwise).
                kernel_bounds_checks: Some(true),
                // And its runs wait for the GPU by blocking, the others by spinning first.
                spin_wait: Some(std::time::Duration::ZERO),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}"))
        })
        .clone()
}

/// The binding cap of [`tiny_device`]: 8 KiB, 2048 f32 values.
pub const TINY_BINDING: u64 = 8192;

/// Asserts `got` is within `abs + rel * |want|` of `want`, element by element.
pub fn assert_close(got: &[f32], want: &[f32], abs: f32, rel: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let ok = (g.is_nan() && w.is_nan()) || g == w || (g - w).abs() <= abs + rel * w.abs();
        assert!(
            ok,
            "{what}: element {i}: got {g}, want {w} (abs {abs}, rel {rel})"
        );
    }
}

/// A file of `shared/reference/`, which sits beside the checkout (`../shared`); the
/// `KILN_SHARED` variable can point elsewhere.
pub fn reference_file(name: &str) -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("KILN_SHARED") {
        return std::path::PathBuf::from(dir).join("reference").join(name);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    root.ancestors()
        .map(|a| a.join("shared").join("reference").join(name))
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("shared/reference/{name} not found beside the checkout; set KILN_SHARED")
        })
}

/// Deterministic values in [-1, 1): a xorshift64 stream seeded by `seed | 1` (the generator the
/// GPU tests share, so a seed means the same data everywhere).
pub fn signed_unit(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// An f32 tensor of [`signed_unit`] values.
pub fn signed_unit_tensor(shape: &[usize], seed: u64) -> kiln::ir::HostTensor {
    let n = shape.iter().product();
    kiln::ir::HostTensor::from_f32(shape, &signed_unit(n, seed)).expect("values match the shape")
}

/// Deterministic values in [lo, hi): a 64-bit LCG keyed by `seed` (the generator of the
/// elementwise, reduce, attention and rope tests).
pub fn uniform(n: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}
