//! The command-line interface: `status`, `explain`, `plan` and `rollout` for everynode and apps/v1 sets.

pub mod completion;
pub mod plan;
pub mod rollout;
pub mod sets;
pub mod status;
pub mod style;
