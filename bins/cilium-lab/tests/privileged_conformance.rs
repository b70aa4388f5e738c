// SPDX-License-Identifier: Apache-2.0

//! Kubernetes' own e2e tests against the lab, a small sample of what `cargo xtask
//! conformance` runs whole: upstream's `e2e.test` (built from the pinned Kubernetes module
//! by `cargo xtask e2e-build`) runs four specs of the NetworkPolicy suite (its pods are
//! upstream's agnhost `porter`, its probes `/agnhost connect` through `kubectl exec`, so
//! the kubelet's mapping of the agnhost image and of the programs an exec names is
//! exercised; others resolve a named port on pods of other nodes and follow a pod's and a
//! namespace's new labels) and one of the Services tests, and all must pass. Needs root; the lab uses
//! its own directory and prefix and is taken down on drop.

use std::path::Path;
use std::process::Command;

use cilium_bpf::testing::is_root_or_skip;

struct Guard {
    lab: cilium_lab::lab::Lab,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.lab.dir.exists() {
            let _ = self.lab.down();
        }
    }
}

/// The specs run: (the name in the JUnit report, after `[It] `).
const SPECS: [&str; 5] = [
    "[sig-network] Netpol NetworkPolicy between server and client should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]",
    // Named ports of pods on other nodes, through their CiliumEndpoints.
    "[sig-network] Netpol NetworkPolicy between server and client should allow egress access on one named port [Feature:NetworkPolicy]",
    // A pod's and a namespace's labels changed: the endpoints get new identities.
    "[sig-network] Netpol NetworkPolicy between server and client should deny ingress access to updated pod [Feature:NetworkPolicy]",
    "[sig-network] Netpol NetworkPolicy between server and client should allow ingress access from updated namespace [Feature:NetworkPolicy]",
    "[sig-network] Services should serve a basic endpoint from pods [Conformance]",
];

/// A `--ginkgo.focus` expression selecting `SPECS` (each name quoted whole; Ginkgo
/// matches it anywhere in a spec's text, which may carry its labels after the name).
fn focus() -> String {
    SPECS
        .iter()
        .map(|s| {
            let mut out = String::new();
            for c in s.chars() {
                match c {
                    '[' | ']' | '(' | ')' | '.' | '|' | '*' | '+' | '?' | '\\' | '^' | '$' => {
                        out.push('\\');
                        out.push(c);
                    }
                    _ => out.push(c),
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// The status of `spec` in a Ginkgo JUnit report.
fn status(xml: &str, spec: &str) -> Option<String> {
    let name = format!("name=\"[It] {}\"", spec.replace('\'', "&#39;"));
    let at = xml.find(&name)?;
    let rest = &xml[at..];
    let head = &rest[..rest.find('>')?];
    let s = head.split("status=\"").nth(1)?;
    Some(s[..s.find('"')?].to_owned())
}

#[test]
fn privileged_conformance_sample_passes() {
    if !is_root_or_skip("privileged_conformance_sample_passes") {
        return;
    }
    let kube = cilium_k8s::testing::kube_dir().expect("target/kube (cargo xtask kube-build)");
    let e2e = kube.join("e2e.test");
    let built = |p: &Path| cilium_k8s::testing::built_or_skip(p, "cargo xtask e2e-build");
    if !built(&e2e) || !built(&kube.join("agnhost")) {
        return;
    }
    let guard = Guard {
        lab: cilium_lab::lab::Lab::for_test("e2e", Path::new(env!("CARGO_BIN_EXE_cilium-lab"))),
    };
    let up = Command::new(env!("CARGO_BIN_EXE_cilium-lab"))
        .arg("up")
        .env("CILIUM_LAB_DIR", &guard.lab.dir)
        .env("CILIUM_LAB_PREFIX", &guard.lab.prefix)
        .output()
        .expect("run cilium-lab up");
    assert!(
        up.status.success(),
        "up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let report = guard.lab.dir.join("e2e");
    std::fs::create_dir_all(&report).expect("report dir");
    let out = Command::new(&e2e)
        .arg(format!(
            "--kubeconfig={}",
            guard.lab.dir.join("kubeconfig").display()
        ))
        .arg("--provider=skeleton")
        .arg(format!("--kubectl-path={}", kube.join("kubectl").display()))
        .arg(format!("--report-dir={}", report.display()))
        .arg(format!("--ginkgo.focus={}", focus()))
        .args(["--ginkgo.no-color", "--ginkgo.timeout=15m"])
        .output()
        .expect("run e2e.test");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = std::fs::read_to_string(report.join("junit_01.xml"))
        .unwrap_or_else(|e| panic!("no JUnit report ({e}): {log}"));
    for spec in SPECS {
        assert_eq!(
            status(&xml, spec).as_deref(),
            Some("passed"),
            "{spec}:\n{log}"
        );
    }
    assert!(out.status.success(), "e2e.test: {log}");
}

#[test]
fn the_focus_selects_the_specs_by_their_whole_names() {
    let f = focus();
    assert!(
        f.starts_with(r"\[sig-network\] Netpol NetworkPolicy"),
        "{f}"
    );
    assert!(f.contains(r"'default-deny-ingress' policy \[Feature:NetworkPolicy\]|\[sig-network\]"));
    // Read as literals (the escapes removed): each spec is selected, not its UDP variant.
    let selects = |name: &str| {
        f.split('|')
            .any(|alt| name.contains(&alt.replace('\\', "")))
    };
    assert!(SPECS.iter().all(|s| selects(s)));
    assert!(!selects(
        "[sig-network] Netpol [LinuxOnly] NetworkPolicy between server and client using UDP should support a 'default-deny-ingress' policy [Feature:NetworkPolicy]"
    ));
    let xml = r#"<testcase name="[It] [sig-network] Netpol NetworkPolicy between server and client should support a &#39;default-deny-ingress&#39; policy [Feature:NetworkPolicy]" classname="Kubernetes e2e suite" status="passed" time="65.4">"#;
    assert_eq!(status(xml, SPECS[0]).as_deref(), Some("passed"));
    assert_eq!(status(xml, SPECS[1]), None);
}
