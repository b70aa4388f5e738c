// SPDX-License-Identifier: Apache-2.0

//! Shared by the cilium-dbg tests: running the binary.

use std::ffi::OsStr;
use std::process::Command;

/// Runs `cilium-dbg` with `args`; returns (success, stdout, stderr).
pub(crate) fn run_dbg<S: AsRef<OsStr>>(args: &[S]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cilium-dbg"))
        .args(args)
        .output()
        .expect("run cilium-dbg");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
