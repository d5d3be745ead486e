//! kiln's runtime: the wgpu device, and execution of graphs on it.

mod bind;
pub mod device;
pub mod eager;
mod error;
pub mod exec;
mod executable;
pub mod readback;
mod steps;
pub mod transfer;

pub use device::{
    cooperative_f16_supported, list_adapters, Device, DeviceError, DeviceInfo, DeviceOptions,
    ResourceCounts, DEFAULT_SPIN_WAIT,
};
pub use eager::run_eager;
pub use error::RunError;
pub use exec::run_dispatches;
pub use executable::{CompileError, CompileOptions, Executable, MatmulInputs, StepTime};
pub use wgpu;
