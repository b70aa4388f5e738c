// SPDX-License-Identifier: Apache-2.0

//! The operator on the Kubernetes API (no cluster store): leader election on the Lease
//! `cilium-operator-resource-lock` in the operator's namespace, cluster-pool IPAM on
//! CiliumNode objects, garbage collection of CiliumIdentities that no CiliumEndpoint
//! references for `identity-heartbeat-timeout` (identity-allocation-mode=crd), and of
//! CiliumEndpoints whose pod is gone. Services' endpoints are not the operator's job here:
//! Kubernetes' own EndpointSlice controller keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use cilium_k8s::lease::{LeaderElector, OPERATOR_LEASE};
use cilium_k8s::types::CiliumIdentity;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Preconditions,
};

use crate::{OperatorConfig, ipam_loop_k8s, log};

fn endpoint_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        cilium_k8s::crds::GROUP,
        cilium_k8s::crds::VERSION,
        "CiliumEndpoint",
    ))
}

/// The CiliumEndpoint API (every namespace).
fn endpoints_api(client: kube::Client) -> Api<DynamicObject> {
    Api::all_with(client, &endpoint_resource())
}

/// A delete that only happens to the object as it was read (same uid and
/// resourceVersion): one changed or re-created meanwhile stays.
fn exactly(meta: &kube::api::ObjectMeta) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

/// The identities CiliumEndpoints reference (`status.identity.id`).
async fn referenced_identities(client: &kube::Client) -> Result<BTreeSet<u64>, kube::Error> {
    Ok(endpoints_api(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter_map(|cep| cep.data["status"]["identity"]["id"].as_u64())
        .collect())
}

/// One identity GC round: identities unreferenced since `unused_since` for `timeout` are
/// deleted; returns the numbers deleted.
pub async fn identity_gc_round(
    client: &kube::Client,
    unused_since: &mut BTreeMap<String, Instant>,
    timeout: Duration,
) -> Result<Vec<String>, kube::Error> {
    let identities: Api<CiliumIdentity> = Api::all(client.clone());
    let listed = identities.list(&ListParams::default()).await?.items;
    let used = referenced_identities(client).await?;
    let now = Instant::now();
    let unused: Vec<&CiliumIdentity> = listed
        .iter()
        .filter(|i| {
            let id = i
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.parse::<u64>().ok());
            id.is_none_or(|id| !used.contains(&id))
        })
        .collect();
    let names: BTreeSet<String> = unused
        .iter()
        .filter_map(|i| i.metadata.name.clone())
        .collect();
    unused_since.retain(|name, _| names.contains(name));
    let mut deleted = Vec::new();
    for identity in unused {
        let Some(name) = identity.metadata.name.clone() else {
            continue;
        };
        let since = *unused_since.entry(name.clone()).or_insert(now);
        if now.duration_since(since) < timeout {
            continue;
        }
        match identities.delete(&name, &exactly(&identity.metadata)).await {
            Ok(_) => {
                log(
                    "info",
                    "garbage-collected an unused identity",
                    &format!("identity={name}"),
                );
                unused_since.remove(&name);
                deleted.push(name);
            }
            // Changed or gone since the list: judged again next round.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(deleted)
}

/// Runs [`identity_gc_round`] every `interval`; API errors wait for the next round.
pub async fn identity_gc_loop_k8s(
    client: kube::Client,
    interval: Duration,
    timeout: Duration,
) -> Result<(), String> {
    let mut unused_since = BTreeMap::new();
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = identity_gc_round(&client, &mut unused_since, timeout).await {
            log(
                "warning",
                "identity garbage collection failed; retrying next round",
                &format!("error=\"{e}\""),
            );
        }
    }
}

/// One CiliumEndpoint GC round: a CiliumEndpoint whose pod is gone (no pod of its
/// namespace and name, or one with another uid than its owner reference) is deleted when
/// it was so in the previous round as well (`marked`), so that an endpoint written while
/// its pod is being made is never taken. Returns the `namespace/name`s deleted.
pub async fn endpoint_gc_round(
    client: &kube::Client,
    marked: &mut BTreeSet<String>,
) -> Result<Vec<String>, kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let pods: BTreeMap<String, Option<String>> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|p| {
            (
                format!(
                    "{}/{}",
                    p.metadata.namespace.unwrap_or_default(),
                    p.metadata.name.unwrap_or_default()
                ),
                p.metadata.uid,
            )
        })
        .collect();
    let endpoints = endpoints_api(client.clone());
    let mut orphans = BTreeSet::new();
    let mut deleted = Vec::new();
    for cep in endpoints.list(&ListParams::default()).await?.items {
        let ns = cep.metadata.namespace.clone().unwrap_or_default();
        let name = cep.metadata.name.clone().unwrap_or_default();
        let key = format!("{ns}/{name}");
        let owner = cep
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "Pod")
            .map(|o| o.uid.clone());
        let alive = match (pods.get(&key), owner) {
            (None, _) => false,
            (Some(pod_uid), Some(owner)) => pod_uid.as_deref() == Some(owner.as_str()),
            (Some(_), None) => true,
        };
        if alive {
            continue;
        }
        if !marked.contains(&key) {
            orphans.insert(key);
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &endpoint_resource());
        match api.delete(&name, &exactly(&cep.metadata)).await {
            Ok(_) => {
                log(
                    "info",
                    "garbage-collected a CiliumEndpoint whose pod is gone",
                    &format!("ciliumendpoint={key}"),
                );
                deleted.push(key);
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    *marked = orphans;
    Ok(deleted)
}

/// Runs [`endpoint_gc_round`] every `interval`; API errors wait for the next round.
pub async fn endpoint_gc_loop(client: kube::Client, interval: Duration) -> Result<(), String> {
    let mut marked = BTreeSet::new();
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = endpoint_gc_round(&client, &mut marked).await {
            log(
                "warning",
                "CiliumEndpoint garbage collection failed; retrying next round",
                &format!("error=\"{e}\""),
            );
        }
    }
}

/// Leads (after winning the Lease in `namespace`) until `shutdown` completes or the lead
/// is lost (an error: the operator exits to be restarted, as Cilium's does). On shutdown
/// the Lease is released so a standby takes over at once.
pub async fn run_k8s(
    client: kube::Client,
    config: OperatorConfig,
    namespace: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), String> {
    let mut elector = LeaderElector::new(client.clone(), namespace, OPERATOR_LEASE, &config.id);
    elector.lease_duration = config.lease_duration;
    tokio::pin!(shutdown);
    tokio::select! {
        () = elector.acquire() => {}
        () = &mut shutdown => return Ok(()),
    }
    log(
        "info",
        "leading",
        &format!("id={} lease={namespace}/{OPERATOR_LEASE}", config.id),
    );
    let result = tokio::select! {
        r = ipam_loop_k8s(client.clone(), config.cluster_pool.clone()) => r,
        r = identity_gc_loop_k8s(client.clone(), config.identity_gc_interval, config.identity_heartbeat_timeout) => r,
        r = endpoint_gc_loop(client.clone(), config.endpoint_gc_interval) => r,
        why = elector.hold() => Err(format!("lost leadership: {why}")),
        () = &mut shutdown => Ok(()),
    };
    if result.is_ok() {
        elector.release().await;
    }
    result
}
