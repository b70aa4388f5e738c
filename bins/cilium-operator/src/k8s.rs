// SPDX-License-Identifier: Apache-2.0

//! The operator on the Kubernetes API (no cluster store): leader election on the Lease
//! `cilium-operator-resource-lock` in the operator's namespace, cluster-pool IPAM on
//! CiliumNode objects, garbage collection of CiliumIdentities that no CiliumEndpoint
//! references for `identity-heartbeat-timeout` (identity-allocation-mode=crd), of
//! CiliumEndpoints whose pod is gone, and of CiliumNodes whose Node is gone (which frees
//! their pod CIDRs). Services' endpoints are not the operator's job here: Kubernetes' own
//! EndpointSlice controller keeps them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use cilium_k8s::lease::{LeaderElector, OPERATOR_LEASE};
use cilium_k8s::types::CiliumIdentity;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, ObjectMeta,
    Preconditions,
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
fn exactly(meta: &ObjectMeta) -> DeleteParams {
    DeleteParams {
        preconditions: Some(Preconditions {
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
        }),
        ..DeleteParams::default()
    }
}

/// Deletes `name` as it was read ([`exactly`]): `Ok(false)` when it changed or went
/// meanwhile (it is judged again next round).
async fn delete_exactly<K>(api: &Api<K>, name: &str, meta: &ObjectMeta) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    match api.delete(name, &exactly(meta)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}

/// An object a GC round found orphaned: its key (in marks and logs), the API it is
/// deleted through, and its metadata as listed.
struct Orphan {
    key: String,
    api: Api<DynamicObject>,
    meta: ObjectMeta,
}

/// Two-round marking: of this round's orphans (`keys`), returns those `marked` by the
/// previous round as well, due for deletion; the others become the marks for the next
/// round, and a mark whose object is no longer found orphaned is forgotten. So an object
/// written just before what it belongs to (a CiliumEndpoint before its pod, a CiliumNode
/// before its Node) is never taken.
fn two_rounds(
    marked: &mut BTreeSet<String>,
    keys: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let (due, next) = keys.into_iter().partition(|k| marked.contains(k));
    *marked = next;
    due
}

/// The end of a two-round GC round: the `orphans` due ([`two_rounds`]) are deleted as
/// listed ([`delete_exactly`]) and logged as `message` with `<field>=<key>`. Returns the
/// keys deleted.
async fn collect_orphans(
    marked: &mut BTreeSet<String>,
    orphans: Vec<Orphan>,
    message: &str,
    field: &str,
) -> Result<Vec<String>, kube::Error> {
    let due = two_rounds(marked, orphans.iter().map(|o| o.key.clone()));
    let mut deleted = Vec::new();
    for Orphan { key, api, meta } in orphans {
        if !due.contains(&key) {
            continue;
        }
        let name = meta.name.clone().unwrap_or_default();
        if delete_exactly(&api, &name, &meta).await? {
            log("info", message, &format!("{field}={key}"));
            deleted.push(key);
        }
    }
    Ok(deleted)
}

/// Runs a GC `round` ([`identity_gc_round`], [`endpoint_gc_round`],
/// [`ciliumnode_gc_round`]) every `interval`, with its state kept from round to round; an
/// API error is logged and waits for the next round. Never returns (the type fits
/// [`run_k8s`]'s select).
async fn gc_every<S: Default>(
    interval: Duration,
    what: &str,
    mut round: impl AsyncFnMut(&mut S) -> Result<Vec<String>, kube::Error>,
) -> Result<(), String> {
    let mut state = S::default();
    loop {
        tokio::time::sleep(interval).await;
        if let Err(e) = round(&mut state).await {
            log(
                "warning",
                &format!("{what} garbage collection failed; retrying next round"),
                &format!("error=\"{e}\""),
            );
        }
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
        if delete_exactly(&identities, &name, &identity.metadata).await? {
            log(
                "info",
                "garbage-collected an unused identity",
                &format!("identity={name}"),
            );
            unused_since.remove(&name);
            deleted.push(name);
        }
    }
    Ok(deleted)
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
    let mut orphans = Vec::new();
    for cep in endpoints_api(client.clone())
        .list(&ListParams::default())
        .await?
        .items
    {
        let ns = cep.metadata.namespace.clone().unwrap_or_default();
        let key = format!("{ns}/{}", cep.metadata.name.as_deref().unwrap_or_default());
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
        if !alive {
            orphans.push(Orphan {
                key,
                api: Api::namespaced_with(client.clone(), &ns, &endpoint_resource()),
                meta: cep.metadata,
            });
        }
    }
    collect_orphans(
        marked,
        orphans,
        "garbage-collected a CiliumEndpoint whose pod is gone",
        "ciliumendpoint",
    )
    .await
}

/// One CiliumNode GC round (Cilium's `nodes-gc-interval`): a CiliumNode whose Node (the
/// core/v1 Node of the same name) is gone is deleted when it was so in the previous round
/// as well (`marked`), so that a node registering its CiliumNode before its Node object
/// appears is not taken. The IPAM loop then frees its pod CIDR for a waiting node. Returns
/// the names deleted.
pub async fn ciliumnode_gc_round(
    client: &kube::Client,
    marked: &mut BTreeSet<String>,
) -> Result<Vec<String>, kube::Error> {
    // CiliumNodes first: a Node that existed when its CiliumNode was listed is in the
    // Node list that follows (unless it was deleted meanwhile).
    let ciliumnodes = cilium_k8s::nodes::api(client.clone());
    let listed = ciliumnodes.list(&ListParams::default()).await?.items;
    let nodes: BTreeSet<String> = Api::<Node>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let orphans = listed
        .into_iter()
        .filter_map(|cn| {
            let name = cn.metadata.name.clone()?;
            (!nodes.contains(&name)).then(|| Orphan {
                key: name,
                api: ciliumnodes.clone(),
                meta: cn.metadata,
            })
        })
        .collect();
    collect_orphans(
        marked,
        orphans,
        "garbage-collected a CiliumNode whose node is gone",
        "ciliumnode",
    )
    .await
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
        r = gc_every(config.identity_gc_interval, "identity", async |unused_since| {
            identity_gc_round(&client, unused_since, config.identity_heartbeat_timeout).await
        }) => r,
        r = gc_every(config.endpoint_gc_interval, "CiliumEndpoint", async |marked| {
            endpoint_gc_round(&client, marked).await
        }) => r,
        r = gc_every(config.nodes_gc_interval, "CiliumNode", async |marked| {
            ciliumnode_gc_round(&client, marked).await
        }) => r,
        why = elector.hold() => Err(format!("lost leadership: {why}")),
        () = &mut shutdown => Ok(()),
    };
    if result.is_ok() {
        elector.release().await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn an_orphan_is_due_in_its_second_round_in_a_row() {
        let mut marked = BTreeSet::new();
        assert!(two_rounds(&mut marked, keys(&["a", "b"])).is_empty());
        // b has found its owner meanwhile: its mark goes; c is new.
        let due = two_rounds(&mut marked, keys(&["a", "c"]));
        assert_eq!(due, BTreeSet::from(["a".to_owned()]));
        assert_eq!(marked, BTreeSet::from(["c".to_owned()]));
        // b orphaned again starts over; c is due.
        let due = two_rounds(&mut marked, keys(&["b", "c"]));
        assert_eq!(due, BTreeSet::from(["c".to_owned()]));
        assert_eq!(marked, BTreeSet::from(["b".to_owned()]));
        assert!(two_rounds(&mut marked, []).is_empty());
        assert!(marked.is_empty());
    }
}
