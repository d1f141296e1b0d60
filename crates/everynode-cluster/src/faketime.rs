//! Debian's libfaketime, which the clock-skew tests preload into a controller process to move
//! its wall clock (`FAKETIME="+5m"`) while the cluster keeps the real time.

use std::path::PathBuf;

/// Where Debian's `libfaketime` package puts the library (any architecture).
const CANDIDATES: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
];

/// The Debian package that provides it.
pub const PACKAGE: &str = "libfaketime";

/// The installed library, if any (`EVERYNODE_LIBFAKETIME` overrides the search).
#[must_use]
pub fn library() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("EVERYNODE_LIBFAKETIME") {
        return Some(PathBuf::from(path)).filter(|p| p.exists());
    }
    CANDIDATES.iter().map(PathBuf::from).find(|p| p.exists())
}
