// SPDX-License-Identifier: Apache-2.0

//! `cargo xtask <task>`: the project's developer tasks, with no dependencies beyond std.
//!
//! - `test`: `kube-build`, `e2e-build`, `upstream-build` and the schemathesis venv
//!   (`target/schemathesis-venv`, see `upstream.rs`), then every test of the workspace
//!   (privileged ones run when root, else report "skipped: needs root");
//! - `demo`: the main job, `cilium-lab demo` (the seed's cluster in network namespaces);
//! - `bench [FILTER]`: builds the release binaries the pod-creation and k8s benches run,
//!   then the benches (FILTER: a bench target such as `pod_creation`, or a criterion
//!   filter), then a table of ratios against each group's same-run `baseline`;
//! - `fuzz [TARGET] [--time S]`: runs every fuzz target (or one) S seconds under libFuzzer
//!   on the stable toolchain, keeps the minimised corpus under `fuzz/seeds/` (see `fuzz.rs`);
//! - `fuzz-check`: builds every fuzz target (fuzz/ is its own workspace) and replays the kept
//!   seeds once;
//! - `build-bpf`: recompiles `cilium-bpf/bpf/*.c` into `cilium-bpf/bpf/prebuilt/` with
//!   clang-19 and the flags of `bpf/clang.flags` (commit the result);
//! - `ci`: test, clippy, fmt, docs and fuzz-check, as `.ci/run` runs them (`.ci/run` also
//!   runs `fresh-check --test`, which needs root);
//! - `kube-build`: builds the upstream Kubernetes control plane, kube-proxy and kubectl from
//!   the pinned module in `k8s/controlplane/` into `target/kube/` (see `kube.rs`);
//! - `e2e-build`: builds upstream's e2e test binary (sig-network's specs) and agnhost from
//!   the pinned module in `k8s/e2e/` into `target/kube/` (see `conformance.rs`);
//! - `conformance [netpol] [services] [--focus REGEX] [--keep]`: runs Kubernetes' own
//!   NetworkPolicy and Services e2e tests against a lab of its own, as root, and
//!   summarises them in `target/conformance/summary.md` (see `conformance.rs`);
//! - `upstream-build`: builds upstream's clients (Cilium's `hubble` and `cilium-dbg`, CNI's
//!   `cnitool`) from the pinned module in `upstream/` into `target/upstream/` (see
//!   `upstream.rs`);
//! - `schemathesis-venv`: makes `target/schemathesis-venv` and installs the pinned
//!   `tests/schemathesis/requirements.txt` into it (see `upstream.rs`);
//! - `fresh-check [--test] [--demo]`: runs `scripts/deps.sh` and the build of every target
//!   in a minimal Debian root made by debootstrap (see `fresh.rs`), as root.

mod conformance;
mod fresh;
mod fuzz;
mod kube;
mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&root),
        Some("demo") => demo(&root),
        Some("bench") => bench(&root, args.get(1).map(String::as_str)),
        Some("fuzz") => fuzz::fuzz(&root, &args[1..]),
        Some("fuzz-check") => fuzz::check(&root),
        Some("build-bpf") => build_bpf(&root),
        Some("ci") => ci(&root),
        Some("kube-build") => kube::kube_build(&root).map(|_| ()),
        Some("e2e-build") => conformance::e2e_build(&root).map(|_| ()),
        Some("conformance") => conformance::conformance(&root, &args[1..]),
        Some("upstream-build") => upstream::upstream_build(&root).map(|_| ()),
        Some("schemathesis-venv") => upstream::schemathesis_venv(&root).map(|_| ()),
        Some("fresh-check") => fresh::fresh_check(&root, &args[1..]),
        Some("fresh-check-inner") => return fresh::fresh_check_inner(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|demo|bench [FILTER]|build-bpf|fuzz [TARGET] [--time S]|fuzz-check|ci|kube-build|e2e-build|conformance [SUITE...]|upstream-build|schemathesis-venv|fresh-check>"
            );
            return ExitCode::from(64);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set (the fresh-machine check builds in
/// its own), else `target/` of the workspace.
fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

fn cargo(root: &Path, args: &[&str]) -> Result<(), String> {
    cargo_env(root, args, &[])
}

fn cargo_env(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<(), String> {
    let vars: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("+ {}cargo {}", vars.concat(), args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}

fn test(root: &Path) -> Result<(), String> {
    // The Kubernetes tests run upstream's control plane, the format tests upstream's
    // clients: build them (seconds when cached).
    kube::kube_build(root)?;
    conformance::e2e_build(root)?;
    upstream::upstream_build(root)?;
    upstream::schemathesis_venv(root)?;
    cargo(root, &["test", "--workspace", "--all-targets"])?;
    cargo(root, &["test", "--workspace", "--doc"])
}

fn demo(root: &Path) -> Result<(), String> {
    // The lab runs the binaries (agent, operator, CNI, dbg) next to cilium-lab.
    cargo(root, &["build", "--workspace", "--bins"])?;
    let lab = target_dir(root).join("debug").join("cilium-lab");
    eprintln!("+ {} demo", lab.display());
    let status = Command::new(&lab)
        .arg("demo")
        .current_dir(root)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", lab.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "cilium-lab demo failed ({status}); it needs root (network namespaces, bpffs)"
        ))
    }
}

fn build_bpf(root: &Path) -> Result<(), String> {
    let bpf = root.join("cilium-bpf").join("bpf");
    let flags = std::fs::read_to_string(bpf.join("clang.flags"))
        .map_err(|e| format!("reading clang.flags: {e}"))?;
    for name in ["bpf_lxc", "bpf_host", "bpf_sock", "types", "bpf_bench"] {
        let out = format!("prebuilt/{name}.o");
        eprintln!("+ clang-19 ... -c {name}.c -o {out}");
        let status = Command::new("clang-19")
            .args(flags.split_whitespace())
            .arg(format!("-fdebug-prefix-map={}=.", bpf.display()))
            .args(["-c", &format!("{name}.c"), "-o", &out])
            .current_dir(&bpf)
            .status()
            .map_err(|e| format!("cannot run clang-19 (apt-get install clang-19): {e}"))?;
        if !status.success() {
            return Err(format!("clang-19 failed on {name}.c"));
        }
    }
    Ok(())
}

fn ci(root: &Path) -> Result<(), String> {
    test(root)?;
    cargo(
        root,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    cargo(root, &["fmt", "--all", "--check"])?;
    doc(root)?;
    fuzz::check(root)
}

fn doc(root: &Path) -> Result<(), String> {
    cargo_env(
        root,
        &["doc", "--workspace", "--no-deps"],
        &[("RUSTDOCFLAGS", "-D warnings")],
    )
}

fn bench(root: &Path, filter: Option<&str>) -> Result<(), String> {
    // The pod-creation and k8s benches run the real binaries, built like the benches
    // (release).
    cargo(
        root,
        &[
            "build",
            "--release",
            "-p",
            "cilium-agent",
            "-p",
            "cilium-cni",
            "-p",
            "cilium-operator",
        ],
    )?;
    let bins = target_dir(root).join("release");
    let bins = bins.to_str().ok_or("non-UTF-8 path")?;
    // A filter naming a bench target runs that target only; other filters go to criterion.
    let target = filter.filter(|f| {
        root.join("benches")
            .join("benches")
            .join(format!("{f}.rs"))
            .is_file()
    });
    let mut args = vec!["bench", "-p", "cilium-benches"];
    match (target, filter) {
        (Some(t), _) => args.extend(["--bench", t]),
        (None, Some(f)) => args.extend(["--", f]),
        (None, None) => {}
    }
    cargo_env(root, &args, &[("CRS_BIN_DIR", bins)])?;
    let dir = target_dir(root).join("criterion");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        // Only custom benches ran (they print their own figures).
        return Ok(());
    };
    let mut groups: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.join("ours").is_dir())
        .collect();
    groups.sort();
    println!(
        "\n{:<40} {:>14} {:>14} {:>9}",
        "group", "baseline", "ours", "ratio"
    );
    for g in groups {
        let name = g.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let ours = mean_ns(&g.join("ours"));
        let base = mean_ns(&g.join("baseline"));
        let fmt = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), human);
        let ratio = match (base, ours) {
            (Some(b), Some(o)) if o > 0.0 => format!("{:.2}x", b / o),
            _ => "-".to_owned(),
        };
        println!("{name:<40} {:>14} {:>14} {ratio:>9}", fmt(base), fmt(ours));
    }
    println!("(ratio = baseline / ours: above 1 means ours is faster)");
    Ok(())
}

/// The mean point estimate (ns) criterion wrote for one bench.
fn mean_ns(bench: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(bench.join("new").join("estimates.json")).ok()?;
    let mean = &text[text.find("\"mean\"")?..];
    let pe = &mean[mean.find("\"point_estimate\":")? + "\"point_estimate\":".len()..];
    let end = pe.find([',', '}'])?;
    pe[..end].trim().parse().ok()
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
