//! The `everynode` command's library: the CLI's commands (`status`, `explain`, `plan`,
//! `rollout`), shared by the binary and by the fuzz targets that feed its input decoding.

#![forbid(unsafe_code)]

pub mod cli;
