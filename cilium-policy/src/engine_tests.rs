// SPDX-License-Identifier: Apache-2.0

//! The incremental engine against the full resolution: after any sequence of changes,
//! every endpoint's policy equals `Repository::resolve`, and replaying the diffs onto an
//! empty table gives the same entries.

use std::collections::BTreeMap;

use cilium_core::{LabelSet, NumericIdentity};
use proptest::prelude::*;

use crate::*;

fn labels(ns: &str, pod: &str) -> LabelSet {
    LabelSet::parse_list(&[
        format!("k8s:pod={pod}"),
        format!("k8s:io.kubernetes.pod.namespace={ns}"),
        format!("k8s:io.cilium.k8s.namespace.labels.ns={ns}"),
    ])
    .unwrap()
}

/// The label sets identities and endpoints are drawn from.
fn label_pool() -> Vec<LabelSet> {
    let mut pool = Vec::new();
    for ns in ["x", "y"] {
        for pod in ["a", "b", "c"] {
            pool.push(labels(ns, pod));
        }
    }
    pool.push(LabelSet::parse_list(&["cidr:192.0.2.1/32", "reserved:world"]).unwrap());
    pool.push(LabelSet::parse_list(&["cidr:192.0.2.9/32", "reserved:world"]).unwrap());
    pool
}

/// Policy documents, each with its own origin.
fn documents() -> Vec<Vec<Rule>> {
    let docs = [
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d0, namespace: x}\nspec:\n  endpointSelector: {matchLabels: {pod: a}}\n  ingress:\n  - fromEndpoints: [{matchLabels: {pod: b}}]\n    toPorts: [{ports: [{port: \"80\", protocol: TCP}]}]\n",
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: d1}\nspec:\n  endpointSelector: {}\n  ingressDeny:\n  - fromEndpoints: [{matchLabels: {k8s:io.kubernetes.pod.namespace: y}}]\n    toPorts: [{ports: [{port: \"80\", endPort: 90, protocol: ANY}]}]\n",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: d2, namespace: y}\nspec:\n  podSelector: {}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - from: [{namespaceSelector: {}}]\n  egress:\n  - ports: [{port: 53, protocol: UDP}]\n",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d3, namespace: x}\nspec:\n  endpointSelector: {matchExpressions: [{key: pod, operator: NotIn, values: [c]}]}\n  egress:\n  - toEntities: [cluster]\n  - toCIDRSet: [{cidr: 192.0.2.0/24, except: [192.0.2.8/29]}]\n",
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata: {name: d4}\nspec:\n  endpointSelector: {matchLabels: {pod: c}}\n  egressDeny:\n  - toEntities: [world]\n  ingress:\n  - fromEntities: [all]\n    toPorts: [{ports: [{port: \"81\", protocol: TCP}]}]\n",
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d5, namespace: x}\nspec:\n  endpointSelector: {}\n  ingress:\n  - fromEndpoints: [{}]\n  - fromEndpoints: [{matchLabels: {pod: a}}, {matchLabels: {pod: a}}]\n    toPorts: [{ports: [{port: \"81\", protocol: UDP}]}]\n",
        // A named port with no container ports known stands for nothing (as in Repository).
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: d6, namespace: y}\nspec:\n  endpointSelector: {matchLabels: {pod: b}}\n  ingress:\n  - fromEndpoints: [{}]\n    toPorts: [{ports: [{port: http, protocol: TCP}]}]\n",
    ];
    docs.iter()
        .map(|d| {
            parse(d)
                .unwrap_or_else(|e| panic!("{e}\n{d}"))
                .into_iter()
                .flat_map(|(_, r)| r)
                .collect()
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    AddDoc(usize),
    RemoveDoc(usize),
    UpsertIdentity(u32, usize),
    RemoveIdentity(u32),
    UpsertEndpoint(u16, usize),
    RemoveEndpoint(u16),
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0usize..7).prop_map(Op::AddDoc),
        (0usize..7).prop_map(Op::RemoveDoc),
        (0u32..10, 0usize..8).prop_map(|(i, l)| Op::UpsertIdentity(i, l)),
        (0u32..10).prop_map(Op::RemoveIdentity),
        (0u16..4, 0usize..6).prop_map(|(e, l)| Op::UpsertEndpoint(e, l)),
        (0u16..4).prop_map(Op::RemoveEndpoint),
    ]
}

/// Identity number `i`: ids 8 and 9 are CIDR (local) identities.
fn ident(i: u32) -> NumericIdentity {
    if i >= 8 {
        NumericIdentity::local(i).unwrap()
    } else {
        NumericIdentity::new(300 + i)
    }
}

type Table = BTreeMap<(EndpointId, PolicyKey), Verdict>;

fn replay(table: &mut Table, enforcement: &mut BTreeMap<EndpointId, (bool, bool)>, d: &PolicyDiff) {
    for c in &d.entries {
        match c.verdict {
            Some(v) => table.insert((c.endpoint, c.key), v),
            None => table.remove(&(c.endpoint, c.key)),
        };
    }
    for e in &d.enforcement {
        enforcement.insert(e.endpoint, (e.ingress, e.egress));
    }
}

fn run(mode: EnforcementMode, ops: &[Op]) -> Result<(), TestCaseError> {
    let docs = documents();
    let pool = label_pool();
    let mut engine = PolicyEngine::new(mode);
    let mut loaded: BTreeMap<usize, String> = BTreeMap::new();
    let mut identities: BTreeMap<NumericIdentity, LabelSet> = BTreeMap::new();
    let mut endpoints: BTreeMap<EndpointId, LabelSet> = BTreeMap::new();
    let mut table = Table::new();
    let mut enforcement = BTreeMap::new();
    for op in ops {
        let diff = match op {
            Op::AddDoc(i) => {
                if loaded.contains_key(i) {
                    continue;
                }
                loaded.insert(*i, docs[*i][0].origin.clone());
                engine.add_rules(docs[*i].clone())
            }
            Op::RemoveDoc(i) => match loaded.remove(i) {
                Some(origin) => engine.remove_rules(&origin),
                None => engine.remove_rules("nothing/like/this"),
            },
            Op::UpsertIdentity(i, l) => {
                identities.insert(ident(*i), pool[*l].clone());
                engine.upsert_identity(ident(*i), pool[*l].clone())
            }
            Op::RemoveIdentity(i) => {
                identities.remove(&ident(*i));
                engine.remove_identity(ident(*i))
            }
            Op::UpsertEndpoint(e, l) => {
                endpoints.insert(*e, pool[*l].clone());
                engine.upsert_endpoint(*e, pool[*l].clone())
            }
            Op::RemoveEndpoint(e) => {
                endpoints.remove(e);
                enforcement.remove(e);
                engine.remove_endpoint(*e)
            }
        };
        replay(&mut table, &mut enforcement, &diff);
        let mut repo = Repository::new(mode);
        for i in loaded.keys() {
            repo.add(docs[*i].clone());
        }
        for (id, l) in &identities {
            repo.upsert_identity(*id, l.clone());
        }
        for (e, l) in &endpoints {
            let want = repo.resolve(l);
            let got = engine.policy(*e).expect("endpoint known");
            prop_assert_eq!(&got, &want, "endpoint {} after {:?}", e, op);
            let replayed: BTreeMap<PolicyKey, Verdict> = table
                .iter()
                .filter(|((ep, _), _)| ep == e)
                .map(|((_, k), v)| (*k, *v))
                .collect();
            prop_assert_eq!(&replayed, &want.entries, "replayed diffs of endpoint {}", e);
            let enf = enforcement.get(e).copied().unwrap_or((false, false));
            prop_assert_eq!(enf, (want.ingress_enforced, want.egress_enforced));
        }
        prop_assert!(table.keys().all(|(e, _)| endpoints.contains_key(e)));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn incremental_equals_full_resolution(ops in proptest::collection::vec(arb_op(), 1..40)) {
        run(EnforcementMode::Default, &ops)?;
    }

    #[test]
    fn incremental_equals_full_resolution_always(ops in proptest::collection::vec(arb_op(), 1..25)) {
        run(EnforcementMode::Always, &ops)?;
    }
}

#[test]
fn never_mode_has_no_entries() {
    run(
        EnforcementMode::Never,
        &[
            Op::AddDoc(0),
            Op::UpsertIdentity(1, 1),
            Op::UpsertEndpoint(0, 0),
        ],
    )
    .unwrap();
}

#[test]
fn a_new_identity_touches_only_the_endpoints_whose_rules_select_it() {
    let docs = documents();
    let mut engine = PolicyEngine::new(EnforcementMode::Default);
    engine.add_rules(docs[0].clone());
    engine.upsert_endpoint(1, labels("x", "a"));
    engine.upsert_endpoint(2, labels("x", "c"));
    let diff = engine.upsert_identity(ident(0), labels("x", "b"));
    assert_eq!(diff.entries.len(), 1);
    assert_eq!(diff.entries[0].endpoint, 1);
    assert_eq!(diff.entries[0].key.peer, ident(0));
    assert_eq!(
        diff.entries[0].key.ports,
        PortRange {
            proto: 6,
            lo: 80,
            hi: 80
        }
    );
    // Not selected: another pod, and pod b of another namespace (the CNP is namespaced).
    assert!(
        engine
            .upsert_identity(ident(1), labels("x", "c"))
            .is_empty()
    );
    assert!(
        engine
            .upsert_identity(ident(2), labels("y", "b"))
            .is_empty()
    );
    assert!(
        engine
            .upsert_identity(ident(0), labels("x", "b"))
            .is_empty()
    );
    let gone = engine.remove_identity(ident(0));
    assert_eq!(gone.entries[0].verdict, None);
    assert_eq!(engine.selector_cache().len(), 1);
    engine.remove_rules(&docs[0][0].origin);
    assert!(engine.selector_cache().is_empty());
    assert_eq!(engine.rule_count(), 0);
}

fn ports(list: &[(&str, u8, u16)]) -> NamedPorts {
    let mut out = NamedPorts::new();
    for (name, proto, port) in list {
        out.entry((*name).to_owned())
            .or_default()
            .insert((*proto, *port));
    }
    out
}

fn tcp(port: u16) -> PortRange {
    PortRange {
        proto: 6,
        lo: port,
        hi: port,
    }
}

/// The port ranges an endpoint's policy has for one peer and direction.
fn ranges(
    engine: &PolicyEngine,
    ep: EndpointId,
    dir: Direction,
    peer: NumericIdentity,
) -> Vec<PortRange> {
    engine
        .policy(ep)
        .unwrap()
        .entries
        .keys()
        .filter(|k| k.direction == dir && k.peer == peer)
        .map(|k| k.ports)
        .collect()
}

#[test]
fn named_ports_resolve_on_the_endpoint_for_ingress_and_across_the_cluster_for_egress() {
    let doc = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: n, namespace: x}\nspec:\n  podSelector: {matchLabels: {pod: a}}\n  policyTypes: [Ingress, Egress]\n  ingress:\n  - ports: [{port: serve-80-tcp}]\n  egress:\n  - ports: [{port: serve-81-udp, protocol: UDP}]\n";
    let rules: Vec<Rule> = parse(doc)
        .unwrap()
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect();
    assert!(
        rules
            .iter()
            .any(|r| r.named_ports.iter().any(|n| n.name == "serve-80-tcp"))
    );
    let all = NumericIdentity::UNKNOWN;
    let mut engine = PolicyEngine::new(EnforcementMode::Default);
    engine.add_rules(rules);
    engine.upsert_endpoint(1, labels("x", "a"));
    // No ports known: the named port stands for nothing, yet both directions are enforced.
    let p = engine.policy(1).unwrap();
    assert!(p.ingress_enforced && p.egress_enforced);
    assert!(p.entries.is_empty(), "{:?}", p.entries);

    // The endpoint's own ports: ingress resolves against them; TCP only, as the rule says.
    let diff = engine.set_endpoint_ports(
        1,
        ports(&[("serve-80-tcp", 6, 80), ("serve-81-udp", 17, 81)]),
    );
    assert!(!diff.entries.is_empty());
    assert_eq!(ranges(&engine, 1, Direction::Ingress, all), vec![tcp(80)]);
    // Egress resolves across the cluster: the endpoint's own ports count too.
    let udp81 = PortRange {
        proto: 17,
        lo: 81,
        hi: 81,
    };
    assert_eq!(ranges(&engine, 1, Direction::Egress, all), vec![udp81]);

    // Another pod names the same port differently: egress allows both numbers.
    engine.set_peer_ports("y/b", ports(&[("serve-81-udp", 17, 8081)]));
    let udp8081 = PortRange {
        proto: 17,
        lo: 8081,
        hi: 8081,
    };
    assert_eq!(
        ranges(&engine, 1, Direction::Egress, all),
        vec![udp81, udp8081]
    );
    // A pod elsewhere does not change what ingress resolves against.
    assert_eq!(ranges(&engine, 1, Direction::Ingress, all), vec![tcp(80)]);

    // The endpoint's ports change: its ingress entry moves, the cluster loses 81.
    engine.set_endpoint_ports(1, ports(&[("serve-80-tcp", 6, 8080)]));
    assert_eq!(ranges(&engine, 1, Direction::Ingress, all), vec![tcp(8080)]);
    assert_eq!(ranges(&engine, 1, Direction::Egress, all), vec![udp8081]);
    // The peer goes: nothing named serve-81-udp is left.
    let diff = engine.set_peer_ports("y/b", NamedPorts::new());
    assert_eq!(diff.entries.len(), 1);
    assert_eq!(diff.entries[0].verdict, None);
    assert!(ranges(&engine, 1, Direction::Egress, all).is_empty());

    // A second endpoint whose ports are unknown gets no ingress entry from the name.
    engine.upsert_endpoint(2, labels("x", "a"));
    assert!(ranges(&engine, 2, Direction::Ingress, all).is_empty());
    // Removing the first endpoint takes its ports out of the cluster's.
    engine.set_peer_ports("y/c", ports(&[("serve-81-udp", 17, 81)]));
    engine.set_endpoint_ports(2, ports(&[("serve-80-tcp", 6, 80)]));
    assert_eq!(ranges(&engine, 2, Direction::Ingress, all), vec![tcp(80)]);
    assert_eq!(ranges(&engine, 2, Direction::Egress, all), vec![udp81]);
    engine.remove_endpoint(1);
    assert_eq!(ranges(&engine, 2, Direction::Ingress, all), vec![tcp(80)]);
    // Removing the rules leaves no entry behind.
    let diff = engine.remove_rules("NetworkPolicy/x/n");
    assert!(diff.entries.iter().all(|c| c.verdict.is_none()));
    assert!(engine.policy(2).unwrap().entries.is_empty());
}
