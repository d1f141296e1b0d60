//! The command-line interface: `status`, `explain`, `plan`, `rollout`, `set image` and `migrate` for everynode and apps/v1 sets.

pub mod abort;
pub mod completion;
pub mod duration;
pub mod gate;
pub mod migrate;
pub mod plan;
pub mod promote;
pub mod rollout;
pub mod set_image;
pub mod sets;
pub mod status;
pub mod style;
