// SPDX-License-Identifier: Apache-2.0

//! Shared by the cilium-dbg tests: running the binary.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `cilium-dbg` with `args`; returns (success, stdout, stderr). (Not every test file
/// that shares this module runs this project's binary.)
#[allow(dead_code)]
pub(crate) fn run_dbg<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    run_binary(env!("CARGO_BIN_EXE_cilium-dbg").as_ref(), args)
}

/// Runs `binary` with `args`; returns (success, stdout, stderr).
pub(crate) fn run_binary<S: AsRef<OsStr>>(
    binary: &std::path::Path,
    args: &[S],
) -> (bool, String, String) {
    let out = Command::new(binary)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", binary.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
