// SPDX-License-Identifier: Apache-2.0

//! `cargo xtask conformance [SUITE...] [--focus REGEX]`: Kubernetes' own sig-network e2e
//! tests against the lab.
//!
//! [`e2e_build`] compiles, from the `k8s.io/kubernetes` module pinned in `k8s/e2e/go.mod`,
//! upstream's test binary (`go test -c` of `k8s/e2e`, which links sig-network's specs)
//! into `target/kube/e2e.test`, and upstream's `agnhost` (the program of the
//! `registry.k8s.io/e2e-test-images/agnhost` image those tests run, mapped to it by the
//! lab's kubelet) into `target/kube/agnhost`. Then a lab of its own comes up
//! (`$CILIUM_LAB_DIR` = `target/conformance/lab`, namespaces `crsc-*`), each suite runs
//! with its focus and skip expressions, its JUnit report and log go to
//! `target/conformance/<suite>/`, and a summary (passed / failed / skipped per suite, the
//! failed specs by name) is printed and written to `target/conformance/summary.md`. The
//! lab is taken down at the end (`--keep` leaves it up).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// A suite: its name, what it selects and what it leaves out, and why.
pub(crate) struct Suite {
    /// Its name on the command line and in the summary.
    pub name: &'static str,
    /// The `--ginkgo.focus` expression.
    pub focus: &'static str,
    /// The `--ginkgo.skip` expression.
    pub skip: &'static str,
    /// Why the skipped specs are left out.
    pub why_skipped: &'static str,
}

/// The suites the issue names: the NetworkPolicy suite and the Services tests.
pub(crate) const SUITES: [Suite; 2] = [
    Suite {
        name: "netpol",
        focus: r"\[sig-network\] Netpol",
        skip: r"\[Feature:SCTPConnectivity\]|should allow egress access to server in CIDR block|should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed|should enforce except clause while egress access to server in CIDR block",
        why_skipped: "SCTP connectivity: the datapath carries TCP, UDP and ICMP only; the three \
                      ipBlock specs whose CIDRs hold pod addresses: as in Cilium, a CIDR \
                      selects addresses outside the cluster, not pods (cilium/cilium#9209; \
                      Cilium's own CI skips the same three)",
    },
    Suite {
        name: "services",
        focus: r"\[sig-network\] Services",
        skip: r"\[Disruptive\]|\[Serial\]",
        why_skipped: "[Disruptive] (restart the apiserver or kube-proxy on nodes through ssh) and \
                      [Serial] (SCTP)",
    },
];

/// What one suite gave: spec names by outcome.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub passed: Vec<String>,
    pub failed: Vec<String>,
    pub skipped: Vec<String>,
}

/// Reads a Ginkgo JUnit report: the `[It]` specs whose names contain `prefix` (the report
/// lists every spec of the binary, those outside the focus as skipped), by status.
pub(crate) fn read_junit(xml: &str, prefix: &str) -> Outcome {
    let mut out = Outcome::default();
    for tag in xml.split("<testcase ").skip(1) {
        let head = tag.split('>').next().unwrap_or("");
        let attr = |name: &str| {
            let key = format!("{name}=\"");
            head.find(&key).and_then(|i| {
                let rest = &head[i + key.len()..];
                rest.find('"').map(|j| unescape(&rest[..j]))
            })
        };
        let (Some(name), Some(status)) = (attr("name"), attr("status")) else {
            continue;
        };
        let Some(spec) = name.strip_prefix("[It] ") else {
            continue;
        };
        if !spec.contains(prefix) {
            continue;
        }
        let spec = spec.to_owned();
        match status.as_str() {
            "passed" => out.passed.push(spec),
            "skipped" | "pending" => out.skipped.push(spec),
            _ => out.failed.push(spec),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Builds `target/kube/e2e.test` and `target/kube/agnhost` from `k8s/e2e` and returns
/// `target/kube/`.
pub(crate) fn e2e_build(root: &Path) -> Result<PathBuf, String> {
    let module = root.join("k8s").join("e2e");
    let go_mod = std::fs::read_to_string(module.join("go.mod"))
        .map_err(|e| format!("reading {}: {e}", module.join("go.mod").display()))?;
    let version = crate::kube::kubernetes_version(&go_mod)
        .ok_or("k8s/e2e/go.mod requires no k8s.io/kubernetes version")?;
    crate::kube::require_go("k8s/e2e/go.mod")?;
    let dir = crate::target_dir(root).join("kube");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let started = Instant::now();
    let ldflags = crate::kube::ldflags(&version);
    let agnhost = dir.join("agnhost");
    eprintln!(
        "+ go build -o {} k8s.io/kubernetes/test/images/agnhost (Kubernetes {version})",
        agnhost.display()
    );
    crate::kube::go(
        &module,
        &["build"],
        &ldflags,
        agnhost.as_os_str(),
        &["k8s.io/kubernetes/test/images/agnhost"],
    )?;
    let e2e = dir.join("e2e.test");
    eprintln!("+ go test -c -o {} ./k8s/e2e", e2e.display());
    crate::kube::go(&module, &["test", "-c"], &ldflags, e2e.as_os_str(), &["."])?;
    eprintln!(
        "e2e-build: {} (e2e.test, agnhost in {:.1} s)",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

/// `cargo xtask conformance [SUITE...] [--focus REGEX] [--keep]`.
pub(crate) fn conformance(root: &Path, args: &[String]) -> Result<(), String> {
    let mut names = Vec::new();
    let mut focus = None;
    let mut keep = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--focus" => focus = Some(it.next().ok_or("--focus needs a regular expression")?),
            "--keep" => keep = true,
            n if SUITES.iter().any(|s| s.name == n) => names.push(n),
            other => {
                return Err(format!(
                    "conformance: unknown argument {other:?} (suites: {}; --focus REGEX, --keep)",
                    SUITES.map(|s| s.name).join(", ")
                ));
            }
        }
    }
    let suites: Vec<&Suite> = SUITES
        .iter()
        .filter(|s| names.is_empty() || names.contains(&s.name))
        .collect();
    let kube = crate::kube::kube_build(root)?;
    e2e_build(root)?;
    crate::cargo(root, &["build", "--workspace", "--bins"])?;
    let out = crate::target_dir(root).join("conformance");
    let lab_dir = out.join("lab");
    let lab = crate::target_dir(root).join("debug").join("cilium-lab");
    let lab_cmd = |verb: &str| {
        let mut c = Command::new(&lab);
        c.arg(verb)
            .env("CILIUM_LAB_DIR", &lab_dir)
            .env("CILIUM_LAB_PREFIX", "crsc");
        c
    };
    if !lab_dir.join("kubeconfig").exists() {
        eprintln!("+ cilium-lab up (CILIUM_LAB_DIR={})", lab_dir.display());
        let status = lab_cmd("up")
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {}: {e}", lab.display()))?;
        if !status.success() {
            return Err(format!(
                "cilium-lab up failed ({status}); the lab needs root (network namespaces, bpffs)"
            ));
        }
    }
    let result = run_suites(
        root,
        &kube,
        &lab_dir,
        &out,
        &suites,
        focus.map(String::as_str),
    );
    if !keep {
        eprintln!("+ cilium-lab down");
        let _ = lab_cmd("down").stdout(Stdio::null()).status();
    }
    result
}

fn run_suites(
    root: &Path,
    kube: &Path,
    lab_dir: &Path,
    out: &Path,
    suites: &[&Suite],
    focus: Option<&str>,
) -> Result<(), String> {
    let go_mod = std::fs::read_to_string(root.join("k8s/e2e/go.mod")).unwrap_or_default();
    let version = crate::kube::kubernetes_version(&go_mod).unwrap_or_default();
    let mut summary = format!(
        "# Kubernetes e2e (sig-network) against the lab\n\nKubernetes {version} e2e.test, \
         run {}.\n\n| suite | passed | failed | skipped |\n|---|---|---|---|\n",
        date()
    );
    let mut details = String::new();
    let mut any_failed = false;
    for suite in suites {
        let dir = out.join(suite.name);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let _ = std::fs::remove_file(dir.join("junit_01.xml"));
        let log = std::fs::File::create(dir.join("run.log"))
            .map_err(|e| format!("creating {}: {e}", dir.join("run.log").display()))?;
        let focus_expr = focus.unwrap_or(suite.focus);
        eprintln!(
            "+ e2e.test --ginkgo.focus='{focus_expr}' --ginkgo.skip='{}' (log: {})",
            suite.skip,
            dir.join("run.log").display()
        );
        let started = Instant::now();
        let status = Command::new(kube.join("e2e.test"))
            .arg(format!(
                "--kubeconfig={}",
                lab_dir.join("kubeconfig").display()
            ))
            .arg("--provider=skeleton")
            .arg(format!("--kubectl-path={}", kube.join("kubectl").display()))
            .arg(format!("--report-dir={}", dir.display()))
            .arg(format!("--ginkgo.focus={focus_expr}"))
            .arg(format!("--ginkgo.skip={}", suite.skip))
            .args(["--ginkgo.no-color", "--ginkgo.timeout=4h"])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .status()
            .map_err(|e| format!("cannot run e2e.test: {e}"))?;
        let xml = std::fs::read_to_string(dir.join("junit_01.xml"))
            .map_err(|e| format!("e2e.test ({status}) wrote no report: {e} (see its run.log)"))?;
        let prefix = suite.focus.replace('\\', "");
        let o = read_junit(&xml, &prefix);
        eprintln!(
            "{}: {} passed, {} failed, {} skipped ({:.0} s)",
            suite.name,
            o.passed.len(),
            o.failed.len(),
            o.skipped.len(),
            started.elapsed().as_secs_f64()
        );
        summary.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            suite.name,
            o.passed.len(),
            o.failed.len(),
            o.skipped.len()
        ));
        details.push_str(&format!(
            "\n## {}\n\nFocus `{}`, skip `{}` ({}).\n",
            suite.name, focus_expr, suite.skip, suite.why_skipped
        ));
        for (what, specs) in [("Failed", &o.failed), ("Skipped", &o.skipped)] {
            if !specs.is_empty() {
                details.push_str(&format!("\n{what}:\n"));
                for s in specs {
                    details.push_str(&format!("- {s}\n"));
                }
            }
        }
        any_failed |= !o.failed.is_empty();
    }
    summary.push_str(&details);
    let path = out.join("summary.md");
    std::fs::write(&path, &summary).map_err(|e| format!("writing {}: {e}", path.display()))?;
    eprintln!("{summary}\n(written to {})", path.display());
    if any_failed {
        Err("conformance: some specs failed (see the summary)".into())
    } else {
        Ok(())
    }
}

fn date() -> String {
    Command::new("date")
        .arg("+%Y-%m-%d")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_reports_are_read_by_status_within_the_suite() {
        let xml = r#"<testsuites><testsuite name="Kubernetes e2e suite">
<testcase name="[SynchronizedBeforeSuite]" classname="Kubernetes e2e suite" status="passed" time="0.4"></testcase>
<testcase name="[It] [sig-network] Netpol NetworkPolicy between server and client should support a &#39;default-deny-ingress&#39; policy [Feature:NetworkPolicy]" classname="Kubernetes e2e suite" status="passed" time="65.4"></testcase>
<testcase name="[It] [sig-network] Netpol API should support creating NetworkPolicy API operations" classname="Kubernetes e2e suite" status="failed" time="3.1"><failure message="x">y</failure></testcase>
<testcase name="[It] [sig-network] Netpol [Feature:SCTPConnectivity] using SCTP" classname="Kubernetes e2e suite" status="skipped" time="0"><skipped message="skipped"></skipped></testcase>
<testcase name="[It] [sig-apps] Deployment should run" classname="Kubernetes e2e suite" status="skipped" time="0"></testcase>
<testcase name="[It] [sig-network] Netpol broken" classname="Kubernetes e2e suite" status="timedout" time="0"></testcase>
</testsuite></testsuites>"#;
        let o = read_junit(xml, "[sig-network] Netpol");
        assert_eq!(
            o.passed,
            vec![
                "[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"
            ]
        );
        assert_eq!(
            o.failed,
            vec![
                "[sig-network] Netpol API should support creating NetworkPolicy API operations",
                "[sig-network] Netpol broken"
            ]
        );
        assert_eq!(
            o.skipped,
            vec!["[sig-network] Netpol [Feature:SCTPConnectivity] using SCTP"]
        );
    }

    #[test]
    fn suite_prefixes_match_their_specs() {
        for s in SUITES {
            let prefix = s.focus.replace('\\', "");
            assert!(prefix.starts_with("[sig-network] "), "{prefix}");
        }
    }
}
