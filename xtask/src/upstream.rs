// SPDX-License-Identifier: Apache-2.0

//! `cargo xtask upstream-build`: upstream's own clients, the test oracles of this project's
//! formats, built from the modules pinned in `upstream/go.mod` into `target/upstream/`:
//! Cilium's `hubble` CLI and `cilium-dbg` (module `github.com/cilium/cilium`) and the CNI
//! project's `cnitool` (`github.com/containernetworking/cni`). They are `tool` directives
//! of that module, so its go.sum pins everything they build from and `-mod=readonly`
//! refuses to change it. Static (`CGO_ENABLED=0`), versions stamped as upstream's Makefiles
//! do; Go's build cache makes a second build cost seconds.
//!
//! Also the Python side of the oracles: `target/schemathesis-venv`, schemathesis from PyPI
//! at the versions `tests/schemathesis/requirements.txt` pins ([`schemathesis_venv`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The programs built, and their packages.
pub(crate) const PROGRAMS: [(&str, &str); 3] = [
    ("hubble", "github.com/cilium/cilium/hubble"),
    ("cilium-dbg", "github.com/cilium/cilium/cilium-dbg"),
    ("cnitool", "github.com/containernetworking/cni/cnitool"),
];

/// The `-ldflags` stamping Cilium's version as its Makefiles do (`hubble version`,
/// `cilium-dbg version`).
pub(crate) fn ldflags(cilium: &str) -> String {
    let bare = cilium.trim_start_matches('v');
    format!(
        "-s -w -X github.com/cilium/cilium/pkg/version.ciliumVersion={bare} \
         -X github.com/cilium/cilium/hubble/pkg.Version=v{bare}"
    )
}

/// Builds the programs into `target/upstream/` and returns that directory.
pub(crate) fn upstream_build(root: &Path) -> Result<PathBuf, String> {
    let module = root.join("upstream");
    let go_mod = std::fs::read_to_string(module.join("go.mod"))
        .map_err(|e| format!("reading {}: {e}", module.join("go.mod").display()))?;
    let cilium = crate::kube::module_version(&go_mod, "github.com/cilium/cilium")
        .ok_or("upstream/go.mod requires no github.com/cilium/cilium version")?;
    crate::kube::require_go("upstream/go.mod")?;
    let dir = crate::target_dir(root).join("upstream");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let started = Instant::now();
    let packages: Vec<&str> = PROGRAMS.iter().map(|(_, p)| *p).collect();
    eprintln!(
        "+ go build -trimpath -mod=readonly -o {}/ {} (Cilium {cilium})",
        dir.display(),
        packages.join(" ")
    );
    // A directory (trailing slash): one binary per main package, named after it.
    let output = format!("{}/", dir.display());
    crate::kube::go_build(&module, &ldflags(&cilium), output.as_ref(), &packages)?;
    eprintln!(
        "upstream-build: {} ({} in {:.1} s)",
        dir.display(),
        PROGRAMS.map(|(n, _)| n).join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// The requirements file pinning schemathesis (and what it installs).
pub(crate) const SCHEMATHESIS_REQUIREMENTS: &str = "tests/schemathesis/requirements.txt";

/// Makes `target/schemathesis-venv`, the Python environment the agent's schemathesis test
/// runs (`bins/cilium-agent/tests/schemathesis.rs`), when it is missing, and installs the
/// pinned requirements into it when they are not what it last installed (a copy of the
/// file is kept in the venv). Needs Debian's `python3-venv` and PyPI.
pub(crate) fn schemathesis_venv(root: &Path) -> Result<PathBuf, String> {
    let venv = crate::target_dir(root).join("schemathesis-venv");
    let requirements = root.join(SCHEMATHESIS_REQUIREMENTS);
    let wanted = std::fs::read_to_string(&requirements)
        .map_err(|e| format!("reading {}: {e}", requirements.display()))?;
    let stamp = venv.join("requirements.installed");
    let pip = venv.join("bin").join("pip");
    if pip.exists() && std::fs::read_to_string(&stamp).is_ok_and(|had| had == wanted) {
        return Ok(venv);
    }
    let run = |cmd: &mut Command, what: &str| -> Result<(), String> {
        eprintln!("+ {what}");
        let status = cmd
            .current_dir(root)
            .status()
            .map_err(|e| format!("cannot run {what}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{what} failed ({status})"))
        }
    };
    if !pip.exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            &format!(
                "python3 -m venv {} (Debian: apt-get install python3-venv)",
                venv.display()
            ),
        )?;
    }
    let started = Instant::now();
    run(
        Command::new(&pip)
            .args(["install", "--disable-pip-version-check", "--quiet", "-r"])
            .arg(&requirements),
        &format!("{} install -r {SCHEMATHESIS_REQUIREMENTS}", pip.display()),
    )?;
    std::fs::write(&stamp, &wanted).map_err(|e| format!("writing {}: {e}", stamp.display()))?;
    eprintln!(
        "schemathesis-venv: {} ({:.1} s)",
        venv.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(venv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_module_pins_cilium_and_names_every_program() {
        let root = crate::workspace_root();
        let go_mod = std::fs::read_to_string(root.join("upstream/go.mod")).unwrap();
        let v = crate::kube::module_version(&go_mod, "github.com/cilium/cilium").unwrap();
        assert!(v.starts_with("v1."), "{v}");
        for (_, package) in PROGRAMS {
            assert!(
                go_mod.contains(&format!("\t{package}\n")),
                "{package} is no tool"
            );
        }
        assert!(ldflags("v1.18.11").contains("pkg/version.ciliumVersion=1.18.11"));
    }

    #[test]
    fn schemathesis_is_pinned_to_one_version() {
        let root = crate::workspace_root();
        let text = std::fs::read_to_string(root.join(SCHEMATHESIS_REQUIREMENTS)).unwrap();
        let pins: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        assert!(
            pins.iter().any(|l| l.starts_with("schemathesis==")),
            "{text}"
        );
        for pin in pins {
            assert!(pin.contains("=="), "{pin} is not pinned");
        }
    }
}
