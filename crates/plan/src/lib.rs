//! kiln's planner: pure functions from a kiln-ir graph, device limits, capabilities and options
//! to an [`ExecutionPlan`] — legalization, fusion passes, a schedule, an arena laid out by
//! tensor liveness, bind windows (or staging) for arenas larger than one storage binding, and
//! the dims of each step that follow a symbolic extent.
//!
//! Like kiln-ir it has no GPU dependency, so other backends can use it crate by crate.

pub mod arena;
mod error;
pub mod fusion;
pub mod legalize;
mod options;
mod plan;
pub mod step;
pub mod svg;

pub use error::PlanError;
pub use options::{Capabilities, DeviceLimits, FusionOptions, PlanOptions, StoragePolicy};
pub use plan::{plan, ExecutionPlan, Placement, TensorSlot};
pub use step::{Binding, ExtentDep, Glu, NormPrologue, Staged, Step, StepKind};
