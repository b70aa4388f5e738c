// SPDX-License-Identifier: Apache-2.0

//! Kubernetes API objects as the watch stream delivers them (JSON of any shape the API can
//! hold): decoding into a `DynamicObject` and through the CiliumNode decoder into the
//! informer's cache never panics; an object the decoder refuses is reported as `Invalid`
//! and is not in the cache, and a deletion empties its key. The same bytes as a
//! CiliumIdentity: the identity decoder never panics, and what it accepts writes back to an
//! object that decodes to the same number and labels. The same bytes through the agent's
//! converters (`cilium_k8s::convert`): as a CiliumEndpoint (an accepted one keeps the
//! object's namespace and name, its named ports have names and numbers), as a pod's named
//! container ports, as a Cilium policy, and as an EndpointSlice merged into
//! its Service's endpoints (present exactly when the slice names a Service), which the
//! load-balancer translation then reads; none of them panics.
#![no_main]

use cilium_core::cluster::{Change, CiliumNode};
use cilium_k8s::convert;
use cilium_k8s::identity;
use cilium_k8s::nodes::decode;
use cilium_k8s::types::CiliumIdentity;
use cilium_k8s::watch::{Cache, key};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = serde_json::from_slice::<CiliumIdentity>(data)
        && let Ok((id, labels)) = identity::decode(&object)
    {
        let written = CiliumIdentity::new(id, identity::security_labels(&labels));
        assert_eq!(identity::decode(&written), Ok((id, labels)));
    }
    if let Ok(slice) = serde_json::from_slice::<EndpointSlice>(data) {
        let service = convert::slice_service(&slice);
        let (namespace, name) = service
            .as_deref()
            .and_then(|s| s.split_once('/'))
            .unwrap_or(("default", "web"));
        let endpoints = convert::endpoints_from_slices(namespace, name, [&slice]);
        assert_eq!(endpoints.is_some(), service.is_some());
        let svc = serde_json::json!({
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"clusterIP": "10.96.0.10", "type": "NodePort",
                "ports": [{"name": "http", "port": 80, "nodePort": 30080}, {"port": 81}]},
        });
        let _ = cilium_agent::k8s::services_from_k8s(
            &svc,
            endpoints.as_ref(),
            std::net::Ipv4Addr::new(192, 168, 10, 100),
        );
    }
    let Ok(object) = serde_json::from_slice::<DynamicObject>(data) else {
        return;
    };
    if let Ok(pair) = convert::ip_identity_pair(&object) {
        assert_eq!(pair.pod, object.metadata.name.clone().unwrap_or_default());
        assert_eq!(
            pair.namespace,
            object.metadata.namespace.clone().unwrap_or_default()
        );
        assert_ne!(pair.id, 0);
        assert!(pair.named_ports.iter().all(|p| !p.name.is_empty() && p.port != 0));
    }
    // As a pod: its named container ports (each with a name and a port number).
    let ports = convert::pod_named_ports(&object.data["spec"]);
    assert!(ports.iter().all(|p| !p.name.is_empty() && p.port != 0));
    let _ = convert::cilium_policy_document(&object);
    let k = key(&object);
    let mut cache: Cache<DynamicObject, CiliumNode> = Cache::new(decode);
    cache.apply(Event::Init);
    cache.apply(Event::InitApply(object.clone()));
    let listed = cache.apply(Event::InitDone);
    let changes = cache.apply(Event::Apply(object.clone()));
    for c in listed.iter().chain(&changes) {
        if let Change::Invalid { key, .. } = c {
            assert!(!cache.objects().contains_key(key));
        }
    }
    // The same object again changes nothing.
    assert!(
        cache
            .apply(Event::Apply(object.clone()))
            .iter()
            .all(|c| matches!(c, Change::Invalid { .. }))
    );
    cache.apply(Event::Delete(object));
    assert!(!cache.objects().contains_key(&k));
});
