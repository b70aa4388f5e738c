// SPDX-License-Identifier: Apache-2.0

//! The Kubernetes network-policy conformance model (namespaces x, y, z; pods a, b, c; ports
//! 80 and 81; TCP and UDP) as table tests on the engine, plus Cilium-specific cases and
//! properties. Loopback (a pod to itself) is ignored, as in the upstream suite.

use cilium_core::{LabelSet, NumericIdentity};
use proptest::prelude::*;

use crate::*;

const NAMESPACES: [&str; 3] = ["x", "y", "z"];
const PODS: [&str; 3] = ["a", "b", "c"];
const TCP: u8 = 6;
const UDP: u8 = 17;

fn pod_id(ns: usize, pod: usize) -> NumericIdentity {
    NumericIdentity::new(1000 + (ns * 3 + pod) as u32)
}

fn pod_labels(ns: &str, pod: &str) -> LabelSet {
    LabelSet::parse_list(&[
        format!("k8s:pod={pod}"),
        format!("k8s:io.kubernetes.pod.namespace={ns}"),
        format!("k8s:io.cilium.k8s.namespace.labels.ns={ns}"),
        format!("k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name={ns}"),
    ])
    .unwrap()
}

fn repo(yaml: &str, mode: EnforcementMode) -> Repository {
    let mut r = Repository::new(mode);
    for (n, ns) in NAMESPACES.iter().enumerate() {
        for (p, pod) in PODS.iter().enumerate() {
            r.upsert_identity(pod_id(n, p), pod_labels(ns, pod));
        }
    }
    r.upsert_identity(
        NumericIdentity::WORLD,
        LabelSet::parse_list(&["reserved:world"]).unwrap(),
    );
    for (doc, rules) in parse(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")) {
        // Every document survives the JSON round trip the agent stores it in, and names
        // the origin its rules carry.
        let again = parse(&doc.to_json().to_string()).expect("stored form parses");
        assert_eq!(again, vec![(doc.clone(), rules.clone())]);
        assert!(rules.iter().all(|rule| rule.origin == doc.origin()));
        r.add(rules);
    }
    r
}

/// Checks every pair (from, to) of the 9 pods against `expect`, for one protocol and port.
fn check(yaml: &str, proto: u8, port: u16, expect: impl Fn(&str, &str) -> bool) {
    let r = repo(yaml, EnforcementMode::Default);
    let mut wrong = Vec::new();
    for (fi, fns) in NAMESPACES.iter().enumerate() {
        for (fp, fpod) in PODS.iter().enumerate() {
            for (ti, tns) in NAMESPACES.iter().enumerate() {
                for (tp, tpod) in PODS.iter().enumerate() {
                    if (fi, fp) == (ti, tp) {
                        continue;
                    }
                    let from = format!("{fns}/{fpod}");
                    let to = format!("{tns}/{tpod}");
                    let got = r.allowed(pod_id(fi, fp), pod_id(ti, tp), proto, port);
                    if got != expect(&from, &to) {
                        wrong.push(format!("{from} -> {to}: got {got}"));
                    }
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "proto {proto} port {port}:\n{}\n{yaml}",
        wrong.join("\n")
    );
}

fn ns_of(p: &str) -> &str {
    &p[..1]
}

fn k8s(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

#[test]
fn k01_no_policy_allows_everything() {
    check("", TCP, 80, |_, _| true);
}

#[test]
fn k02_default_deny_ingress_in_x() {
    let y = k8s("deny", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n");
    for port in [80, 81] {
        check(&y, TCP, port, |_, to| ns_of(to) != "x");
        check(&y, UDP, port, |_, to| ns_of(to) != "x");
    }
}

#[test]
fn k03_default_deny_egress_in_x() {
    let y = k8s("deny", "x", "  podSelector: {}\n  policyTypes: [Egress]\n");
    check(&y, TCP, 80, |from, _| ns_of(from) != "x");
}

#[test]
fn k04_allow_from_same_namespace() {
    let y = k8s(
        "same-ns",
        "x",
        "  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n",
    );
    check(&y, TCP, 80, |from, to| {
        ns_of(to) != "x" || ns_of(from) == "x"
    });
}

#[test]
fn k05_allow_to_xa_from_namespace_y() {
    let y = k8s(
        "from-y",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    );
    check(&y, TCP, 81, |from, to| to != "x/a" || ns_of(from) == "y");
}

#[test]
fn k06_allow_from_one_pod_of_another_namespace() {
    let y = k8s(
        "from-yb",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n      podSelector: {matchLabels: {pod: b}}\n",
    );
    check(&y, TCP, 80, |from, to| to != "x/a" || from == "y/b");
}

#[test]
fn k07_namespace_or_pod_peers_are_ored() {
    let y = k8s(
        "y-or-b",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n    - podSelector: {matchLabels: {pod: b}}\n",
    );
    check(&y, TCP, 80, |from, to| {
        to != "x/a" || ns_of(from) == "y" || from == "x/b"
    });
}

#[test]
fn k08_allow_only_port_80() {
    let y = k8s(
        "port-80",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, protocol: TCP}]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, TCP, 81, |_, to| to != "x/a");
    check(&y, UDP, 80, |_, to| to != "x/a");
}

#[test]
fn k09_port_range() {
    let y = k8s(
        "range",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, endPort: 81, protocol: TCP}]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, TCP, 81, |_, _| true);
    check(&y, TCP, 82, |_, to| to != "x/a");
}

#[test]
fn k10_udp_only() {
    let y = k8s(
        "udp",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - ports: [{port: 80, protocol: UDP}]\n",
    );
    check(&y, UDP, 80, |_, _| true);
    check(&y, TCP, 80, |_, to| to != "x/a");
}

#[test]
fn k11_egress_deny_with_dns_allowed() {
    let y = k8s(
        "egress-dns",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n",
    );
    check(&y, UDP, 53, |_, _| true);
    check(&y, TCP, 80, |from, _| from != "x/a");
    check(&y, UDP, 80, |from, _| from != "x/a");
}

#[test]
fn k12_egress_to_namespace_y_only() {
    let y = k8s(
        "egress-y",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n",
    );
    check(&y, TCP, 80, |from, to| from != "x/a" || ns_of(to) == "y");
}

#[test]
fn k13_match_expressions_not_in() {
    let y = k8s(
        "not-a",
        "x",
        "  podSelector: {matchLabels: {pod: c}}\n  ingress:\n  - from:\n    - podSelector:\n        matchExpressions: [{key: pod, operator: NotIn, values: [a]}]\n",
    );
    check(&y, TCP, 80, |from, to| {
        to != "x/c" || (ns_of(from) == "x" && from != "x/a")
    });
}

#[test]
fn k14_policies_are_additive() {
    let y = [
        k8s("from-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"),
        k8s("from-z", "x", "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: z}}\n"),
    ]
    .join("---\n");
    check(&y, TCP, 80, |from, to| to != "x/a" || ns_of(from) != "x");
}

#[test]
fn k15_allow_all_ingress_overrides_default_deny() {
    let y = [
        k8s("deny", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n"),
        k8s("allow-all", "x", "  podSelector: {}\n  ingress:\n  - {}\n"),
    ]
    .join("---\n");
    check(&y, TCP, 80, |_, _| true);
}

#[test]
fn k16_all_namespaces_selector() {
    let y = k8s(
        "any-ns",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  ingress:\n  - from:\n    - namespaceSelector: {}\n      podSelector: {matchLabels: {pod: b}}\n",
    );
    check(&y, TCP, 80, |from, to| to != "x/a" || from.ends_with("/b"));
}

#[test]
fn k17_egress_and_ingress_must_both_allow() {
    let y = [
        k8s("xa-to-y", "x", "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {ns: y}}\n"),
        k8s("y-from-x", "y", "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n"),
    ]
    .join("---\n");
    check(&y, TCP, 80, |from, to| {
        let egress = from != "x/a" || ns_of(to) == "y";
        let ingress = ns_of(to) != "y" || ns_of(from) == "x";
        egress && ingress
    });
}

#[test]
fn k18_namespace_selector_match_expressions_in() {
    let y = k8s(
        "from-y-z",
        "x",
        "  podSelector: {}\n  ingress:\n  - from:\n    - namespaceSelector:\n        matchExpressions: [{key: ns, operator: In, values: [y, z]}]\n",
    );
    check(&y, UDP, 81, |from, to| {
        ns_of(to) != "x" || ns_of(from) != "x"
    });
}

#[test]
fn k19_pod_selector_exists() {
    let y = k8s(
        "has-pod",
        "y",
        "  podSelector: {matchExpressions: [{key: pod, operator: Exists}]}\n  ingress:\n  - from:\n    - podSelector: {matchExpressions: [{key: pod, operator: In, values: [c]}]}\n",
    );
    check(&y, TCP, 80, |from, to| ns_of(to) != "y" || from == "y/c");
}

#[test]
fn k20_deny_all_in_two_namespaces() {
    let y = [
        k8s(
            "deny-egress",
            "y",
            "  podSelector: {}\n  policyTypes: [Egress]\n",
        ),
        k8s(
            "deny-ingress",
            "z",
            "  podSelector: {}\n  policyTypes: [Ingress]\n",
        ),
    ]
    .join("---\n");
    check(&y, TCP, 81, |from, to| {
        ns_of(from) != "y" && ns_of(to) != "z"
    });
}

#[test]
fn k21_egress_port_range() {
    let y = k8s(
        "egress-range",
        "x",
        "  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Egress]\n  egress:\n  - ports: [{port: 80, endPort: 81, protocol: TCP}]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, TCP, 81, |_, _| true);
    check(&y, UDP, 80, |from, _| from != "x/a");
}

#[test]
fn k22_policy_in_y_from_pod_a_of_x() {
    let y = k8s(
        "yb-from-xa",
        "y",
        "  podSelector: {matchLabels: {pod: b}}\n  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {ns: x}}\n      podSelector: {matchLabels: {pod: a}}\n    ports: [{port: 81}]\n",
    );
    check(&y, TCP, 81, |from, to| to != "y/b" || from == "x/a");
    check(&y, TCP, 80, |_, to| to != "y/b");
}

#[test]
fn k23_empty_ingress_list_denies_selected_pods() {
    let y = k8s(
        "deny-c",
        "z",
        "  podSelector: {matchLabels: {pod: c}}\n  policyTypes: [Ingress]\n  ingress: []\n",
    );
    check(&y, UDP, 80, |_, to| to != "z/c");
}

#[test]
fn k24_default_protocol_is_tcp() {
    let y = k8s(
        "tcp-80",
        "x",
        "  podSelector: {}\n  ingress:\n  - ports: [{port: 80}]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, UDP, 80, |_, to| ns_of(to) != "x");
}

fn cnp(name: &str, ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{spec}"
    )
}

#[test]
fn c01_cnp_from_endpoints_is_namespace_scoped() {
    let y = cnp(
        "same-ns",
        "x",
        "  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n",
    );
    check(&y, TCP, 80, |from, to| {
        ns_of(to) != "x" || ns_of(from) == "x"
    });
}

#[test]
fn c02_cnp_ingress_default_deny_idiom() {
    let y = cnp("deny", "y", "  endpointSelector: {}\n  ingress:\n  - {}\n");
    check(&y, TCP, 80, |_, to| ns_of(to) != "y");
}

#[test]
fn c03_deny_beats_allow() {
    let y = cnp(
        "deny-y",
        "x",
        "  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEntities: [cluster]\n  ingressDeny:\n  - fromEndpoints:\n    - matchLabels: {k8s:io.kubernetes.pod.namespace: y}\n",
    );
    check(&y, TCP, 80, |from, to| to != "x/a" || ns_of(from) != "y");
}

#[test]
fn c04_clusterwide_policy_has_no_namespace() {
    let y = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: b-only}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {pod: b}}]\n";
    check(y, TCP, 80, |from, to| {
        !to.ends_with("/a") || from.ends_with("/b")
    });
}

#[test]
fn c05_entities_all_and_l4() {
    let y = cnp(
        "l4",
        "z",
        "  endpointSelector: {matchLabels: {pod: c}}\n  ingress:\n  - fromEntities: [all]\n    toPorts: [{ports: [{port: \"81\", protocol: ANY}]}]\n",
    );
    check(&y, TCP, 81, |_, _| true);
    check(&y, UDP, 81, |_, _| true);
    check(&y, TCP, 80, |_, to| to != "z/c");
}

#[test]
fn c06_egress_deny_to_port() {
    let y = cnp(
        "no-81",
        "x",
        "  endpointSelector: {}\n  egressDeny:\n  - toEntities: [all]\n    toPorts: [{ports: [{port: \"81\", protocol: TCP}]}]\n  egress:\n  - toEntities: [all]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, TCP, 81, |from, _| ns_of(from) != "x");
}

#[test]
fn c07_cidr_with_except() {
    let yaml = cnp(
        "cidr",
        "x",
        "  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromCIDRSet:\n    - cidr: 192.0.2.0/24\n      except: [192.0.2.8/29]\n",
    );
    let mut r = repo(&yaml, EnforcementMode::Default);
    let inside = NumericIdentity::local(1).unwrap();
    let excepted = NumericIdentity::local(2).unwrap();
    r.upsert_identity(
        inside,
        LabelSet::parse_list(&["cidr:192.0.2.1/32", "reserved:world"]).unwrap(),
    );
    r.upsert_identity(
        excepted,
        LabelSet::parse_list(&["cidr:192.0.2.9/32", "reserved:world"]).unwrap(),
    );
    let xa = pod_id(0, 0);
    assert!(r.allowed(inside, xa, TCP, 80));
    assert!(!r.allowed(excepted, xa, TCP, 80));
    assert!(!r.allowed(pod_id(1, 0), xa, TCP, 80));
    assert!(!r.allowed(NumericIdentity::WORLD, xa, TCP, 80));
}

#[test]
fn c08_clusterwide_from_all_endpoints() {
    let y = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: cluster}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n";
    check(y, TCP, 80, |_, _| true);
    let r = repo(y, EnforcementMode::Default);
    // A wildcard peer selector is Cilium's `reserved:all`: it selects the world too.
    assert!(r.allowed(NumericIdentity::WORLD, pod_id(0, 0), TCP, 80));
}

#[test]
fn c09_explicit_namespace_label_lifts_the_scoping() {
    let y = cnp(
        "from-y",
        "z",
        "  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]\n    toPorts: [{ports: [{port: \"80\", endPort: 81, protocol: ANY}]}]\n",
    );
    for port in [80, 81] {
        check(&y, UDP, port, |from, to| {
            ns_of(to) != "z" || ns_of(from) == "y"
        });
    }
    check(&y, TCP, 82, |_, to| ns_of(to) != "z");
}

#[test]
fn c10_deny_cluster_on_one_port_beats_allow_all() {
    let y = cnp(
        "deny-81",
        "z",
        "  endpointSelector: {}\n  ingress:\n  - fromEntities: [all]\n  ingressDeny:\n  - fromEntities: [cluster]\n    toPorts: [{ports: [{port: \"81\"}]}]\n",
    );
    check(&y, TCP, 80, |_, _| true);
    check(&y, TCP, 81, |_, to| ns_of(to) != "z");
    // A CNP port without a protocol means ANY (a NetworkPolicy port means TCP).
    check(&y, UDP, 81, |_, to| ns_of(to) != "z");
}

#[test]
fn modes() {
    let y = k8s("deny", "x", "  podSelector: {}\n  policyTypes: [Ingress]\n");
    let always = repo("", EnforcementMode::Always);
    assert!(!always.allowed(pod_id(1, 0), pod_id(2, 0), TCP, 80));
    let never = repo(&y, EnforcementMode::Never);
    assert!(never.allowed(pod_id(1, 0), pod_id(0, 0), TCP, 80));
}

#[test]
fn bad_input_is_rejected_with_a_path() {
    let cases = [
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - fromEndpoint: [{}]\n",
            ),
            "fromEndpoint",
        ),
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - fromEntities: [moon]\n",
            ),
            "spec.ingress[0].fromEntities[0]",
        ),
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"Http_1\"}]}]\n",
            ),
            "neither a port number nor a port name",
        ),
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"http\", endPort: 90}]}]\n",
            ),
            "endPort needs a numeric port",
        ),
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - toPorts: [{ports: [{port: \"90\", endPort: 80}]}]\n",
            ),
            "endPort",
        ),
        (
            cnp(
                "t",
                "x",
                "  endpointSelector: {}\n  ingress:\n  - fromCIDRSet: [{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}]\n",
            ),
            "not inside",
        ),
        (cnp("t", "x", "  ingress: []\n"), "endpointSelector"),
        (
            k8s("t", "x", "  podSelector: {}\n  policyTypes: [Sideways]\n"),
            "policyTypes",
        ),
        (
            k8s(
                "t",
                "x",
                "  podSelector: {}\n  ingress:\n  - ports: [{port: 80, protocol: ICMP}]\n",
            ),
            "protocol",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n".to_owned(),
            "kind",
        ),
        ("{not yaml: [".to_owned(), ""),
    ];
    for (yaml, want) in cases {
        let err = parse(&yaml).expect_err(&yaml).to_string();
        assert!(err.contains(want), "{err} should mention {want:?}");
    }
    // One bad document rejects the whole input.
    let two = format!(
        "{}---\n{}",
        k8s("ok", "x", "  podSelector: {}\n"),
        cnp(
            "bad",
            "x",
            "  endpointSelector: {}\n  egress:\n  - toEntities: [moon]\n"
        )
    );
    assert!(matches!(
        parse(&two),
        Err(PolicyError::InvalidDocument { document: 1, .. })
    ));
}

fn arb_rule() -> impl Strategy<Value = String> {
    (0usize..3, 0usize..3, 0usize..3, any::<bool>(), prop_oneof![Just(80u16), Just(81u16), Just(0u16)]).prop_map(
        |(target, peer_ns, peer_pod, deny, port)| {
            let section = if deny { "ingressDeny" } else { "ingress" };
            let ports = if port == 0 {
                String::new()
            } else {
                format!("\n    toPorts: [{{ports: [{{port: \"{port}\", protocol: TCP}}]}}]")
            };
            format!(
                "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {{name: r}}\nspec:\n  endpointSelector: {{matchLabels: {{pod: {}}}}}\n  {section}:\n  - fromEndpoints:\n    - matchLabels: {{k8s:io.kubernetes.pod.namespace: {}, pod: {}}}{ports}\n",
                PODS[target], NAMESPACES[peer_ns], PODS[peer_pod]
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A flow a deny rule covers is never allowed, whatever else allows it.
    #[test]
    fn deny_always_wins(rules in proptest::collection::vec(arb_rule(), 1..6)) {
        let yaml = rules.join("---\n");
        let r = repo(&yaml, EnforcementMode::Default);
        for (fi, fp, ti, tp) in (0..81).map(|i| (i / 27, (i / 9) % 3, (i / 3) % 3, i % 3)) {
            for port in [80u16, 81] {
                let covered = r.rules().iter().any(|rule| {
                    rule.deny
                        && rule.subject.matches(&pod_labels(NAMESPACES[ti], PODS[tp]))
                        && rule.peers.iter().any(|p| r.peer_identities(p).contains(&pod_id(fi, fp)))
                        && (rule.ports.is_empty() || rule.ports.iter().any(|pr| pr.contains(TCP, port)))
                });
                if covered {
                    prop_assert!(!r.allowed(pod_id(fi, fp), pod_id(ti, tp), TCP, port));
                }
            }
        }
    }

    /// Removing an allow rule never takes away what the other rules allow, and endpoints no
    /// rule selects stay unenforced.
    #[test]
    fn removing_a_rule_never_narrows_the_others(rules in proptest::collection::vec(arb_rule(), 2..6)) {
        let allows_only: Vec<String> = rules.iter().map(|r| r.replace("ingressDeny", "ingress")).collect();
        let full = repo(&allows_only.join("---\n"), EnforcementMode::Default);
        let fewer = repo(&allows_only[1..].join("---\n"), EnforcementMode::Default);
        for (fi, fp, ti, tp) in (0..81).map(|i| (i / 27, (i / 9) % 3, (i / 3) % 3, i % 3)) {
            for port in [80u16, 81] {
                let (s, d) = (pod_id(fi, fp), pod_id(ti, tp));
                let by_others = fewer.rules().iter().any(|rule| {
                    rule.subject.matches(&pod_labels(NAMESPACES[ti], PODS[tp]))
                        && rule.peers.iter().any(|p| fewer.peer_identities(p).contains(&s))
                        && (rule.ports.is_empty() || rule.ports.iter().any(|pr| pr.contains(TCP, port)))
                });
                if by_others {
                    prop_assert!(fewer.allowed(s, d, TCP, port));
                    prop_assert!(full.allowed(s, d, TCP, port));
                }
                let selected = full.rules().iter().any(|rule| rule.subject.matches(&pod_labels(NAMESPACES[ti], PODS[tp])));
                if !selected {
                    prop_assert!(full.allowed(s, d, TCP, port));
                }
            }
        }
    }
}
