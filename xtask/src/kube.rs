// SPDX-License-Identifier: Apache-2.0

//! `cargo xtask kube-build`: the upstream Kubernetes control plane, kube-proxy and kubectl,
//! built from the `k8s.io/kubernetes` module pinned in `k8s/controlplane/go.mod`.
//!
//! One multi-call binary, `target/kube/kube`, with a link per command
//! (`kube-apiserver`, `kube-controller-manager`, `kube-scheduler`, `kube-proxy` (the
//! pre-Cilium cluster's service proxy), `kubectl`, and `etcd`
//! from `go.etcd.io/etcd/server/v3` at the version the apiserver's client is: Debian's
//! etcd 3.4 lacks the watch progress requests the apiserver's cache relies on). The module's
//! go.sum pins every module it builds from; `-mod=readonly` refuses to change it. Go's
//! build cache makes a second build cost seconds, and Go does not relink a binary that is
//! up to date. The version that upstream's own build stamps (`kubectl version`, the
//! apiserver's `/version`) is stamped here the same way, from go.mod. Built with
//! `CGO_ENABLED=0`, as upstream releases these commands: nothing of the system but Go.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The commands the multi-call binary runs, each a link to it in `target/kube/`.
pub(crate) const COMMANDS: [&str; 6] = [
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kube-proxy",
    "kubectl",
    "etcd",
];

/// The oldest Go that builds the module (its `go` directive).
pub(crate) const GO_NEEDED: (u32, u32) = (1, 26);

/// The `k8s.io/kubernetes` version a go.mod requires (`v1.37.2`).
pub(crate) fn kubernetes_version(go_mod: &str) -> Option<String> {
    module_version(go_mod, "k8s.io/kubernetes")
}

/// The version of `module` a go.mod requires (directly or `// indirect`).
pub(crate) fn module_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.trim().trim_start_matches("require").split_whitespace();
        (words.next()? == module)
            .then(|| words.next())
            .flatten()
            .filter(|v| v.starts_with('v'))
            .map(str::to_owned)
    })
}

/// Major and minor of `go version` output (`go version go1.26.8 linux/amd64`).
pub(crate) fn go_version(output: &str) -> Option<(u32, u32)> {
    let v = output.split_whitespace().nth(2)?.strip_prefix("go")?;
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// The `-ldflags` that stamp the version as upstream's `hack/lib/version.sh` does.
pub(crate) fn ldflags(version: &str) -> String {
    let core = version.trim_start_matches('v');
    let mut parts = core.split('.');
    let major = parts.next().unwrap_or("0");
    let minor = parts.next().unwrap_or("0");
    let mut flags = String::from("-s -w");
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        for (var, value) in [
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
        ] {
            flags.push_str(&format!(" -X {pkg}.{var}={value}"));
        }
    }
    flags
}

/// Checks that a Go new enough for the module `go_mod` names is on the PATH.
pub(crate) fn require_go(go_mod: &str) -> Result<(), String> {
    let out = Command::new("go").arg("version").output().map_err(|e| {
        format!(
            "cannot run go ({e}): Go {}.{} or newer is needed to build {go_mod}'s programs \
             (scripts/deps.sh checks for it)",
            GO_NEEDED.0, GO_NEEDED.1
        )
    })?;
    let have = String::from_utf8_lossy(&out.stdout);
    match go_version(&have) {
        Some(v) if v >= GO_NEEDED => Ok(()),
        _ => Err(format!(
            "{}: Go {}.{} or newer is needed ({go_mod})",
            have.trim(),
            GO_NEEDED.0,
            GO_NEEDED.1
        )),
    }
}

/// `go build` of `packages` in the module at `module` into `output` (a file, or a
/// directory with a trailing slash for one binary per package), pinned by its go.sum.
pub(crate) fn go_build(
    module: &Path,
    ldflags: &str,
    output: &std::ffi::OsStr,
    packages: &[&str],
) -> Result<(), String> {
    go(module, &["build"], ldflags, output, packages)
}

/// `go <verb...> -trimpath -mod=readonly -ldflags LDFLAGS -o OUTPUT PACKAGES` in the module
/// at `module` (`build`, or `test -c` for a test binary), pinned by its go.sum.
pub(crate) fn go(
    module: &Path,
    verb: &[&str],
    ldflags: &str,
    output: &std::ffi::OsStr,
    packages: &[&str],
) -> Result<(), String> {
    let status = Command::new("go")
        .args(verb)
        .args(["-trimpath", "-mod=readonly", "-ldflags", ldflags, "-o"])
        .arg(output)
        .args(packages)
        .current_dir(module)
        // The module builds on its own: no workspace file of a parent directory applies.
        .env("GOWORK", "off")
        .env("GOFLAGS", "-buildvcs=false")
        // Static, as upstream's release builds of these commands are: no C toolchain or
        // header takes part, so the build depends on Go and the pinned modules alone.
        .env("CGO_ENABLED", "0")
        .status()
        .map_err(|e| format!("cannot run go {}: {e}", verb.join(" ")))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "go {} in {} failed ({status})",
            verb.join(" "),
            module.display()
        ))
    }
}

/// Builds the control plane into `target/kube/` and returns that directory.
pub(crate) fn kube_build(root: &Path) -> Result<PathBuf, String> {
    let module = root.join("k8s").join("controlplane");
    let go_mod = std::fs::read_to_string(module.join("go.mod"))
        .map_err(|e| format!("reading {}: {e}", module.join("go.mod").display()))?;
    let version = kubernetes_version(&go_mod)
        .ok_or("k8s/controlplane/go.mod requires no k8s.io/kubernetes version")?;
    require_go("k8s/controlplane/go.mod")?;
    let dir = crate::target_dir(root).join("kube");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let bin = dir.join("kube");
    let started = Instant::now();
    eprintln!(
        "+ go build -trimpath -mod=readonly -o {} ./k8s/controlplane (Kubernetes {version})",
        bin.display()
    );
    go_build(&module, &ldflags(&version), bin.as_os_str(), &["."])?;
    for name in COMMANDS {
        let link = dir.join(name);
        match std::fs::read_link(&link) {
            Ok(target) if target == Path::new("kube") => continue,
            Ok(_) => std::fs::remove_file(&link),
            Err(_) if link.exists() => std::fs::remove_file(&link),
            Err(_) => Ok(()),
        }
        .map_err(|e| format!("removing {}: {e}", link.display()))?;
        std::os::unix::fs::symlink("kube", &link)
            .map_err(|e| format!("linking {}: {e}", link.display()))?;
    }
    eprintln!(
        "kube-build: {} ({} in {:.1} s)",
        dir.display(),
        COMMANDS.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_pinned_kubernetes_version() {
        let go_mod = "module m\n\ngo 1.26.0\n\nrequire (\n\tk8s.io/component-base v0.37.2\n\
                      \tk8s.io/kubernetes v1.37.2\n)\n\nreplace k8s.io/api => k8s.io/api v0.37.2\n";
        assert_eq!(kubernetes_version(go_mod).as_deref(), Some("v1.37.2"));
        let one_line = "module m\nrequire k8s.io/kubernetes v1.36.0\n";
        assert_eq!(kubernetes_version(one_line).as_deref(), Some("v1.36.0"));
        assert_eq!(
            kubernetes_version("module m\nrequire k8s.io/api v0.37.2\n"),
            None
        );
    }

    #[test]
    fn reads_go_versions() {
        assert_eq!(go_version("go version go1.26.8 linux/amd64"), Some((1, 26)));
        assert_eq!(
            go_version("go version go1.27rc1 linux/amd64"),
            Some((1, 27))
        );
        assert_eq!(go_version("go version devel"), None);
        assert!(go_version("go version go1.19.8 linux/amd64").unwrap() < GO_NEEDED);
    }

    #[test]
    fn stamps_both_version_packages() {
        let f = ldflags("v1.37.2");
        assert!(f.contains("-X k8s.io/component-base/version.gitVersion=v1.37.2"));
        assert!(f.contains("-X k8s.io/client-go/pkg/version.gitMinor=37"));
        assert!(f.contains("-X k8s.io/client-go/pkg/version.gitMajor=1"));
    }
}
