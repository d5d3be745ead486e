//! kiln's planner: pure functions from a kiln-ir graph, device limits and options to an
//! execution plan (liveness arena, bind windows, fusion passes, schedule with symbolic extents).
//!
//! Like kiln-ir it has no GPU dependency, so other backends can use it crate by crate. The
//! planner itself is built in the planner issue; until then this crate only re-exports the IR it
//! plans over.

pub use kiln_ir as ir;
