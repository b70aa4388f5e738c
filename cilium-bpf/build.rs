// SPDX-License-Identifier: Apache-2.0

//! Builds the BPF objects with clang-19 when it is installed, else uses the committed
//! objects in bpf/prebuilt/, so `cargo build` works without clang. The flags come from
//! bpf/clang.flags (shared with `cargo xtask build-bpf`); paths are mapped so that the
//! output does not depend on where the checkout lives.

use std::path::{Path, PathBuf};
use std::process::Command;

const OBJECTS: &[&str] = &["bpf_lxc", "bpf_host", "bpf_sock", "types", "bpf_bench"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let bpf = manifest.join("bpf");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-env-changed=CILIUM_BPF_CLANG");
    let clang = std::env::var("CILIUM_BPF_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    let have_clang = Command::new(&clang)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let flags = std::fs::read_to_string(bpf.join("clang.flags")).expect("bpf/clang.flags");
    for name in OBJECTS {
        let dest = out.join(format!("{name}.o"));
        if have_clang {
            compile(&clang, &flags, &bpf, name, &dest);
            println!("cargo:rustc-cfg=bpf_fresh");
        } else {
            let prebuilt = bpf.join("prebuilt").join(format!("{name}.o"));
            std::fs::copy(&prebuilt, &dest)
                .unwrap_or_else(|e| panic!("copying {}: {e}", prebuilt.display()));
        }
    }
    println!("cargo:rustc-check-cfg=cfg(bpf_fresh)");
}

fn compile(clang: &str, flags: &str, bpf: &Path, name: &str, dest: &Path) {
    let status = Command::new(clang)
        .args(flags.split_whitespace())
        .arg(format!("-fdebug-prefix-map={}=.", bpf.display()))
        .arg("-c")
        .arg(format!("{name}.c"))
        .arg("-o")
        .arg(dest)
        .current_dir(bpf)
        .status()
        .unwrap_or_else(|e| panic!("running {clang}: {e}"));
    assert!(status.success(), "{clang} failed on bpf/{name}.c");
}
