// SPDX-License-Identifier: Apache-2.0

//! Builds the datapath benchmark's BPF objects (bpf/bench_lxc.c, bpf/bench_host.c: the
//! datapath's handlers under a harness, a reference program and a pass program) with
//! clang-19 and cilium-bpf's flags. Without clang the `datapath` bench says it is skipped
//! (cfg `bench_bpf_missing`); nothing else here needs them.

use std::path::PathBuf;
use std::process::Command;

const OBJECTS: &[&str] = &["bench_lxc", "bench_host"];

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    let bpf = manifest.join("bpf");
    let datapath = manifest.join("..").join("cilium-bpf").join("bpf");
    println!("cargo:rerun-if-changed=bpf");
    println!("cargo:rerun-if-changed=../cilium-bpf/bpf");
    println!("cargo:rerun-if-env-changed=CILIUM_BPF_CLANG");
    println!("cargo:rustc-check-cfg=cfg(bench_bpf_missing)");
    let clang = std::env::var("CILIUM_BPF_CLANG").unwrap_or_else(|_| "clang-19".to_owned());
    let have_clang = Command::new(&clang)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_clang {
        println!("cargo:rustc-cfg=bench_bpf_missing");
        for name in OBJECTS {
            // Empty files keep include_bytes! working; the bench does not load them.
            std::fs::write(out.join(format!("{name}.o")), b"").expect("write");
        }
        return;
    }
    let flags = std::fs::read_to_string(datapath.join("clang.flags"))
        .expect("../cilium-bpf/bpf/clang.flags");
    for name in OBJECTS {
        let status = Command::new(&clang)
            .args(flags.split_whitespace())
            .arg("-c")
            .arg(format!("{name}.c"))
            .arg("-o")
            .arg(out.join(format!("{name}.o")))
            .current_dir(&bpf)
            .status()
            .unwrap_or_else(|e| panic!("running {clang}: {e}"));
        assert!(status.success(), "{clang} failed on benches/bpf/{name}.c");
    }
}
