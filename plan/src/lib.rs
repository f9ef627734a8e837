//! Validation and planning: turns a submitted `volley.v1.Batch` into a
//! [`Plan`] — ops by index, dependency edges (explicit `after`, implicit
//! `${ops.X…}` references, hazard ordering), countdown sizes, memory waits —
//! or into every [`Problem`] found at once, each naming the op and field.
//! An invalid batch never reaches the store.
//!
//! # Layout
//! - [`model`] — `Plan`, `PlannedOp`, `Limits`, `Problem`.
//! - `validate`: the checks, `plan()`.
//! - `hazards`: unordered ops touching the same file or key.
//! - `graph`: cycles, reachability, critical path.
//! - `liveness`: waits that could never end — keys no op writes, ops that
//!   wait for each other through keys — and [`LivenessCheck`].

mod graph;
mod hazards;
mod liveness;
pub mod model;
mod validate;

pub use liveness::{LivenessCheck, bounded_edit_distance};
pub use model::*;
pub use validate::{
    MAX_ID_LEN, MAX_MEMORY_KEY_BYTES, SECRET_LABEL_PREFIX, check_memory_key, paths_outside_root,
    plan, plan_with,
};
