//! The command-line interface: `status` and `rollout` for everynode and apps/v1 sets.

pub mod rollout;
pub mod sets;
pub mod status;
pub mod style;
