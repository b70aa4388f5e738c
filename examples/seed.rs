// SPDX-License-Identifier: Apache-2.0

//! The seed's cluster, control plane only: three nodes get their pod CIDRs from the cluster
//! pool, each node's pods get IPs and identities, and each node's endpoints are printed as
//! `cilium-dbg endpoint list` prints them.
//!
//! `cargo run -p cilium-examples --example seed [-- --policy FILE]`: with a policy file
//! (CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy YAML), the POLICY
//! ENFORCEMENT columns show which endpoints it selects.

use cilium_core::{LabelFilter, LabelSet};
use cilium_identity::{AllocatorConfig, IdentityAllocator, MemoryBackend};
use cilium_ipam::{ClusterPool, ClusterPoolConfig, Family, NodeAllocator, Owner};
use cilium_policy::{EnforcementMode, PolicyEngine, parse};

struct Endpoint {
    id: u32,
    identity: u32,
    labels: Vec<String>,
    ipv4: String,
    ingress_enforced: bool,
    egress_enforced: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = LabelFilter::default();
    // One identity store for the whole cluster, so every node agrees on the numbers.
    let identities = IdentityAllocator::new(MemoryBackend::new(0), AllocatorConfig::default());
    let mut pool = ClusterPool::new(&ClusterPoolConfig::ipv4("172.20.0.0/16", 24)?)?;

    // The seed's workloads: webpod (2 replicas, one per worker) and curl-pod on k8s-ctr.
    let pods: [(&str, &str, &[&str]); 3] = [
        ("k8s-ctr", "curl-pod", &["app=curl"]),
        (
            "k8s-w1",
            "webpod-84755789dd-j9xr8",
            &["app=webpod", "pod-template-hash=84755789dd"],
        ),
        (
            "k8s-w2",
            "webpod-84755789dd-stlss",
            &["app=webpod", "pod-template-hash=84755789dd"],
        ),
    ];
    // The seed applies no policy; `-- --policy FILE` loads CNP/CCNP/NetworkPolicy YAML.
    let mut policy = PolicyEngine::new(EnforcementMode::Default);
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => {}
        [flag, file] if flag == "--policy" => {
            let docs = parse(&std::fs::read_to_string(file)?)?;
            policy.add_rules(docs.into_iter().flat_map(|(_, rules)| rules));
        }
        _ => return Err("usage: seed [--policy FILE]".into()),
    }
    let mut next_endpoint_id = 100;
    for node in ["k8s-ctr", "k8s-w1", "k8s-w2"] {
        let cidrs = pool.allocate(node)?;
        let mut ipam = NodeAllocator::new(&cidrs.to_vec())?;
        ipam.allocate_next(Family::V4, Owner::new(Owner::ROUTER)?)?;
        let mut endpoints = Vec::new();

        let host = LabelSet::parse_list(&["reserved:host"])?;
        endpoints.push(Endpoint {
            id: next_endpoint_id,
            identity: identities.acquire(&host).await?.identity.id.get(),
            labels: host.to_strings(),
            ipv4: String::new(),
            ingress_enforced: false,
            egress_enforced: false,
        });
        let health = LabelSet::parse_list(&["reserved:health"])?;
        endpoints.push(Endpoint {
            id: next_endpoint_id + 1,
            identity: identities.acquire(&health).await?.identity.id.get(),
            labels: health.to_strings(),
            ipv4: ipam
                .allocate_next(Family::V4, Owner::new(Owner::HEALTH)?)?
                .to_string(),
            ingress_enforced: false,
            egress_enforced: false,
        });
        next_endpoint_id += 2;

        for (_, pod, own) in pods.iter().filter(|(n, _, _)| *n == node) {
            let mut labels =
                LabelSet::from_pairs("k8s", own.iter().filter_map(|kv| kv.split_once('=')))?;
            for extra in [
                "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
                "k8s:io.kubernetes.pod.namespace=default",
            ] {
                labels.insert(extra.parse()?);
            }
            let (identity_labels, _info) = filter.filter(&labels);
            let identity = identities
                .acquire(&identity_labels)
                .await?
                .identity
                .id
                .get();
            let ip = ipam.allocate_next(Family::V4, Owner::pod("default", pod))?;
            endpoints.push(Endpoint {
                id: next_endpoint_id,
                identity,
                labels: identity_labels.to_strings(),
                ipv4: ip.to_string(),
                ingress_enforced: false,
                egress_enforced: false,
            });
            next_endpoint_id += 1;
        }

        // Policy enforcement as the policy engine resolves it (enable-policy=default: a
        // direction is enforced once a rule selects the endpoint).
        for ep in &mut endpoints {
            let labels = LabelSet::parse_list(&ep.labels)?;
            policy.upsert_endpoint(ep.id as u16, labels);
            if let Some(p) = policy.policy(ep.id as u16) {
                ep.ingress_enforced = p.ingress_enforced;
                ep.egress_enforced = p.egress_enforced;
            }
        }
        println!("=== {node} (podCIDR {}) ===", cidrs.to_vec()[0]);
        println!(
            "IPAM:   IPv4: {}",
            ipam.status(Family::V4).unwrap_or_default()
        );
        print_endpoint_list(&endpoints);
        println!();
    }
    Ok(())
}

fn enabled(on: bool) -> &'static str {
    if on { "Enabled" } else { "Disabled" }
}

/// Prints endpoints in the layout of `cilium-dbg endpoint list`.
fn print_endpoint_list(endpoints: &[Endpoint]) {
    let label_w = endpoints
        .iter()
        .flat_map(|e| e.labels.iter().map(String::len))
        .max()
        .unwrap_or(0)
        .max("LABELS (source:key[=value])".len());
    let row = |a: &str, b: &str, c: &str, d: &str, e: &str, f: &str, g: &str, h: &str| {
        let line = format!("{a:<10} {b:<18} {c:<17} {d:<10} {e:<label_w$}   {f:<6} {g:<15} {h}");
        println!("{}", line.trim_end());
    };
    row(
        "ENDPOINT",
        "POLICY (ingress)",
        "POLICY (egress)",
        "IDENTITY",
        "LABELS (source:key[=value])",
        "IPv6",
        "IPv4",
        "STATUS",
    );
    row("", "ENFORCEMENT", "ENFORCEMENT", "", "", "", "", "");
    for ep in endpoints {
        let first = ep.labels.first().map(String::as_str).unwrap_or("");
        row(
            &ep.id.to_string(),
            enabled(ep.ingress_enforced),
            enabled(ep.egress_enforced),
            &ep.identity.to_string(),
            first,
            "",
            &ep.ipv4,
            "ready",
        );
        for more in ep.labels.iter().skip(1) {
            row("", "", "", "", more, "", "", "");
        }
    }
}
