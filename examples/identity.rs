// SPDX-License-Identifier: Apache-2.0

//! Allocate identities for the seed's curl-pod and webpod labels and print them.
//!
//! `cargo run -p cilium-examples --example identity`

use cilium_core::{LabelFilter, LabelSet};
use cilium_identity::{AllocatorConfig, IdentityAllocator, MemoryBackend};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let filter = LabelFilter::default();
    let alloc = IdentityAllocator::new(MemoryBackend::new(0), AllocatorConfig::default());
    // Labels as the agent sees them: the pod's own, plus those Cilium adds.
    let pods: [(&str, &[&str]); 4] = [
        ("curl-pod", &["k8s:app=curl"]),
        (
            "webpod-84755789dd-j9xr8",
            &["k8s:app=webpod", "k8s:pod-template-hash=84755789dd"],
        ),
        (
            "webpod-84755789dd-stlss",
            &["k8s:app=webpod", "k8s:pod-template-hash=84755789dd"],
        ),
        ("health", &["reserved:health"]),
    ];
    for (name, own) in pods {
        let mut all = LabelSet::parse_list(own)?;
        if !all.has_source("reserved") {
            for extra in [
                "k8s:io.kubernetes.pod.namespace=default",
                "k8s:io.cilium.k8s.policy.cluster=default",
                "k8s:io.cilium.k8s.policy.serviceaccount=default",
            ] {
                all.insert(extra.parse()?);
            }
        }
        let (identity_labels, info) = filter.filter(&all);
        let got = alloc.acquire(&identity_labels).await?;
        println!(
            "{name:<26} identity {:<6} {}",
            got.identity.id.get(),
            if got.is_new { "(new)" } else { "" }
        );
        for l in identity_labels.iter() {
            println!("    {l}");
        }
        for l in info.iter() {
            println!("    {l} (not identity-relevant)");
        }
    }
    println!("\nidentity list:");
    for ident in alloc.list().await? {
        println!(
            "{:<8} {}",
            ident.id.get(),
            ident.labels.to_strings().join(" ")
        );
    }
    Ok(())
}
