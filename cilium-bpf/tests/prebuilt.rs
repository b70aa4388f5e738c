// SPDX-License-Identifier: Apache-2.0

//! The committed objects in bpf/prebuilt/ must be what the sources compile to, so that a
//! build without clang runs the same datapath. When clang-19 is missing this reports
//! "skipped" (and fails under CI, where clang-19 is always installed).

#[test]
fn prebuilt_objects_match_the_sources() {
    if !cilium_bpf::objects::FRESH {
        assert!(
            std::env::var_os("CI").is_none(),
            "clang-19 is not installed, but CI must check the prebuilt objects"
        );
        eprintln!("skipped: clang-19 not installed, objects came from bpf/prebuilt/");
        return;
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bpf/prebuilt");
    for name in cilium_bpf::objects::NAMES {
        let committed = std::fs::read(dir.join(format!("{name}.o"))).expect("prebuilt object");
        let fresh = cilium_bpf::objects::by_name(name).expect("known object");
        assert!(
            committed == fresh,
            "bpf/prebuilt/{name}.o is stale: run `cargo xtask build-bpf` and commit the result"
        );
    }
}
