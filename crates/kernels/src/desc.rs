//! Kernel descriptors: everything needed to validate, build and bind one compute entry point.

use crate::params::ParamsLayout;

/// One binding of a kernel's bind group (group 0), in binding-index order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binding {
    /// A storage buffer the kernel only reads.
    StorageRead,
    /// A storage buffer the kernel writes (and may read).
    StorageReadWrite,
    /// The params uniform.
    Uniform,
    /// Binding 0's buffer range again, declared `array<vec4<f32>>`: 16-byte loads of operands
    /// the kernel is told are 16-byte aligned. Read-write like binding 0, so that the two views
    /// of one buffer have one usage (WebGPU refuses a buffer bound read-only and read-write in
    /// one dispatch).
    ArenaVec4,
}

/// Device capabilities a kernel needs beyond baseline WGSL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    pub f16: bool,
    pub subgroups: bool,
    /// `EXPERIMENTAL_COOPERATIVE_MATRIX` (WGSL `enable wgpu_cooperative_matrix`).
    pub cooperative_matrix: bool,
}

impl Needs {
    /// Core WGSL only.
    pub const BASELINE: Needs = Needs {
        f16: false,
        subgroups: false,
        cooperative_matrix: false,
    };
}

/// A compute kernel: source, entry point, workgroup size, bindings and params layout.
#[derive(Debug, Clone, Copy)]
pub struct KernelDesc {
    /// A unique name, e.g. `binary`.
    pub name: &'static str,
    /// The shader file under `shaders/`, for messages.
    pub file: &'static str,
    /// The WGSL source (embedded with `include_str!`).
    pub source: &'static str,
    pub entry: &'static str,
    pub workgroup_size: [u32; 3],
    pub bindings: &'static [Binding],
    pub params: ParamsLayout,
    pub needs: Needs,
    /// Values of the source's pipeline-overridable constants (`override` in WGSL): one source,
    /// specialised pipelines (e.g. the matmuls whose rows load as vec4s).
    pub constants: &'static [(&'static str, f64)],
}

impl KernelDesc {
    /// Invocations per workgroup.
    pub const fn invocations(&self) -> u32 {
        self.workgroup_size[0] * self.workgroup_size[1] * self.workgroup_size[2]
    }

    /// Whether a bind group made for `self` also binds `other`: the same bindings and params
    /// size give equal bind group layouts, which WebGPU treats as interchangeable. A planned
    /// step may move between such kernels when its extent changes (e.g. a matmul whose rows
    /// shrink to the skinny kernel's range).
    pub fn binds_like(&self, other: &KernelDesc) -> bool {
        self.bindings == other.bindings && self.params.size == other.params.size
    }
}
