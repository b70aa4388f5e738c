// SPDX-License-Identifier: Apache-2.0

//! Kubernetes objects as the agent's cluster-sync consumers take them (the shapes the
//! cluster store holds): a CiliumNode as a [`NodeRegistration`], a CiliumEndpoint as an
//! [`IpIdentityPair`], a Service's EndpointSlices merged into one `Endpoints` object, and
//! Services and policies as JSON documents without the API server's bookkeeping. Pure
//! functions: no I/O, nothing kept.
//!
//! ```
//! use cilium_core::cluster::CiliumNode;
//! let mut node = CiliumNode::new("k8s-w1", "192.168.10.101".parse().unwrap());
//! node.spec.ipam.pod_cidrs = vec!["172.20.1.0/24".parse().unwrap()];
//! let reg = cilium_k8s::convert::node_registration(&node, "default");
//! assert_eq!(reg.internal_ip(), Some("192.168.10.101".parse().unwrap()));
//! assert_eq!(reg.ipv4_alloc_cidr, Some("172.20.1.0/24".parse().unwrap()));
//! ```

use std::net::Ipv4Addr;

use cilium_core::cluster::{CiliumNode, IpIdentityPair, NodeAddress, NodeRegistration};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::DynamicObject;
use serde_json::{Map, Value, json};

/// The label naming the Service an EndpointSlice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The label by which a Service, or one of its EndpointSlices, asks service proxies to
/// leave it alone.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

/// The label naming the service proxy that serves a Service or EndpointSlice (Cilium's
/// `k8s-service-proxy-name` is empty: any name is another proxy's).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Whether an object's labels leave it to no service proxy or to another one
/// ([`HEADLESS_LABEL`], [`SERVICE_PROXY_NAME_LABEL`]), as kube-proxy's and Cilium's
/// watches select them away.
pub fn left_to_other_proxies(labels: Option<&std::collections::BTreeMap<String, String>>) -> bool {
    labels
        .is_some_and(|l| l.contains_key(HEADLESS_LABEL) || l.contains_key(SERVICE_PROXY_NAME_LABEL))
}

/// The annotation `kubectl apply` keeps its last input in (left out of documents).
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A CiliumNode as the node registration other nodes route by: its name, `cluster`, its
/// `spec.addresses` (the `InternalIP` among them) and the first of `spec.ipam.podCIDRs`.
pub fn node_registration(node: &CiliumNode, cluster: &str) -> NodeRegistration {
    NodeRegistration {
        name: node.metadata.name.clone(),
        cluster: cluster.to_owned(),
        addresses: node
            .spec
            .addresses
            .iter()
            .map(|a| NodeAddress {
                kind: a.kind.clone(),
                ip: a.ip,
            })
            .collect(),
        ipv4_alloc_cidr: node.spec.ipam.pod_cidrs.first().copied(),
        ipv4_health_ip: None,
    }
}

/// A CiliumEndpoint as the ipcache entry of its pod: `status.networking.addressing[0].ipv4`,
/// the node's IPv4 address `status.networking.node`, the identity `status.identity.id`
/// (refused when 0 or missing: no identity yet), `status.encryption.key` (0 when absent),
/// and the object's namespace and name as the pod's.
pub fn ip_identity_pair(cep: &DynamicObject) -> Result<IpIdentityPair, String> {
    let status = &cep.data["status"];
    let ipv4 = |v: &Value, field: &str| -> Result<Ipv4Addr, String> {
        let text = v
            .as_str()
            .ok_or_else(|| format!("no {field} (not an endpoint with an IPv4 address yet)"))?;
        text.parse()
            .map_err(|_| format!("{field} {text:?} is not an IPv4 address"))
    };
    let ip = ipv4(
        &status["networking"]["addressing"][0]["ipv4"],
        "status.networking.addressing[0].ipv4",
    )?;
    let host_ip = ipv4(&status["networking"]["node"], "status.networking.node")?;
    let id = &status["identity"]["id"];
    let id = id
        .as_u64()
        .and_then(|n| u32::try_from(n).ok())
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("status.identity.id {id} is not an identity"))?;
    let key = status["encryption"]["key"]
        .as_u64()
        .and_then(|k| u8::try_from(k).ok())
        .unwrap_or(0);
    Ok(IpIdentityPair {
        ip,
        host_ip,
        id,
        key,
        namespace: cep.metadata.namespace.clone().unwrap_or_default(),
        pod: cep.metadata.name.clone().unwrap_or_default(),
        named_ports: named_ports(&status["named-ports"]),
    })
}

/// The named ports of a CiliumEndpoint's `status.named-ports` (`[{name, port, protocol}]`)
/// or of a pod's `spec.containers[].ports` (`[{name, containerPort, protocol}]`): those
/// with a name and a port number; the protocol defaults to TCP.
pub fn named_ports(list: &Value) -> Vec<cilium_core::cluster::NamedPort> {
    let mut out: Vec<_> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let name = p["name"].as_str().filter(|n| !n.is_empty())?;
            let port = p["port"]
                .as_u64()
                .or_else(|| p["containerPort"].as_u64())
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n != 0)?;
            Some(cilium_core::cluster::NamedPort {
                name: name.to_owned(),
                port,
                protocol: p["protocol"].as_str().unwrap_or("TCP").to_owned(),
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The named ports of a pod's spec (every container's).
pub fn pod_named_ports(spec: &Value) -> Vec<cilium_core::cluster::NamedPort> {
    let ports: Vec<Value> = spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
        .collect();
    named_ports(&Value::Array(ports))
}

/// The `<namespace>/<name>` of the Service an EndpointSlice belongs to (its
/// [`SERVICE_NAME_LABEL`]); `None` for a slice of no Service.
pub fn slice_service(slice: &EndpointSlice) -> Option<String> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    let namespace = slice.metadata.namespace.as_deref().unwrap_or("default");
    Some(format!("{namespace}/{name}"))
}

/// The `Endpoints` (v1) object of Service `namespace/service` merged from its
/// EndpointSlices, the shape the cluster store's Endpoints have: one subset per distinct
/// port list, its `addresses` (`ip`, `nodeName`) the endpoints whose `conditions.ready` is
/// not `false`, its `ports` (`name`, `port`, `protocol`) the slice's ports that have a
/// number. Slices of other Services, and FQDN slices, are ignored; `None` when no slice is
/// the Service's. Subsets without ready addresses are left out, addresses appear once.
/// Slices labelled for no proxy or another one ([`left_to_other_proxies`]) count as
/// absent.
pub fn endpoints_from_slices<'a>(
    namespace: &str,
    service: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Option<Value> {
    let key = format!("{namespace}/{service}");
    let mut mine: Vec<&EndpointSlice> = slices
        .into_iter()
        .filter(|s| slice_service(s).as_deref() == Some(key.as_str()))
        .filter(|s| !left_to_other_proxies(s.metadata.labels.as_ref()))
        .collect();
    if mine.is_empty() {
        return None;
    }
    mine.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let mut subsets: Vec<(Vec<Value>, Vec<Value>)> = Vec::new();
    for slice in mine
        .into_iter()
        .filter(|s| matches!(s.address_type.as_str(), "IPv4" | "IPv6"))
    {
        let ports: Vec<Value> = slice
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                let mut port = Map::new();
                if let Some(name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                    port.insert("name".into(), name.into());
                }
                port.insert("port".into(), p.port?.into());
                port.insert(
                    "protocol".into(),
                    p.protocol.as_deref().unwrap_or("TCP").into(),
                );
                Some(Value::Object(port))
            })
            .collect();
        let index = match subsets.iter().position(|(p, _)| *p == ports) {
            Some(i) => i,
            None => {
                subsets.push((ports, Vec::new()));
                subsets.len() - 1
            }
        };
        let addresses = &mut subsets[index].1;
        for endpoint in slice.endpoints.iter().flatten() {
            let ready = endpoint.conditions.as_ref().and_then(|c| c.ready);
            if ready == Some(false) {
                continue;
            }
            for ip in &endpoint.addresses {
                let mut address = Map::new();
                address.insert("ip".into(), ip.as_str().into());
                if let Some(node) = &endpoint.node_name {
                    address.insert("nodeName".into(), node.as_str().into());
                }
                let address = Value::Object(address);
                if !addresses.contains(&address) {
                    addresses.push(address);
                }
            }
        }
    }
    let subsets: Vec<Value> = subsets
        .into_iter()
        .filter(|(_, addresses)| !addresses.is_empty())
        .map(|(ports, addresses)| json!({"addresses": addresses, "ports": ports}))
        .collect();
    Some(json!({
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": service, "namespace": namespace},
        "subsets": subsets,
    }))
}

/// An object's metadata as documents carry it: name, namespace, labels and annotations
/// (without kubectl's copy of its input); no uid, resourceVersion, managed fields or
/// times, so that only a change of the object itself changes the document.
fn document_metadata(meta: &ObjectMeta) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), meta.name.clone().unwrap_or_default().into());
    if let Some(ns) = meta.namespace.as_deref().filter(|n| !n.is_empty()) {
        out.insert("namespace".into(), ns.into());
    }
    if let Some(labels) = meta.labels.as_ref().filter(|l| !l.is_empty()) {
        out.insert("labels".into(), json!(labels));
    }
    let annotations: Map<String, Value> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.as_str().into()))
        .collect();
    if !annotations.is_empty() {
        out.insert("annotations".into(), Value::Object(annotations));
    }
    Value::Object(out)
}

/// A Service as the cluster store holds Service objects: `apiVersion`, `kind`, the
/// document metadata (name, namespace, labels, annotations) and `spec`; no status.
pub fn service_object(service: &Service) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": document_metadata(&service.metadata),
        "spec": service.spec,
    })
}

/// A `cilium.io/v2` policy object as a policy document: `apiVersion`, `kind`
/// (`CiliumNetworkPolicy` when it has a namespace, `CiliumClusterwideNetworkPolicy` when it
/// is cluster-scoped: the API serves each kind at one scope only), the document metadata
/// and its `spec` and/or `specs`; no status. Refused when it has neither.
pub fn cilium_policy_document(policy: &DynamicObject) -> Result<Value, String> {
    let kind = match policy.metadata.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => "CiliumNetworkPolicy",
        _ => "CiliumClusterwideNetworkPolicy",
    };
    let mut doc = Map::new();
    doc.insert("apiVersion".into(), "cilium.io/v2".into());
    doc.insert("kind".into(), kind.into());
    doc.insert("metadata".into(), document_metadata(&policy.metadata));
    for field in ["spec", "specs"] {
        if let Some(v) = policy.data.get(field).filter(|v| !v.is_null()) {
            doc.insert(field.into(), v.clone());
        }
    }
    if !doc.contains_key("spec") && !doc.contains_key("specs") {
        return Err("neither spec nor specs".into());
    }
    Ok(Value::Object(doc))
}

/// A `networking.k8s.io/v1` NetworkPolicy as a policy document: `apiVersion`, `kind`, the
/// document metadata and `spec`.
pub fn network_policy_document(policy: &NetworkPolicy) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": document_metadata(&policy.metadata),
        "spec": policy.spec,
    })
}

/// The origin of a policy of `kind` whose informer key is `key` (`namespace/name`, or
/// `name` when cluster-scoped): `<kind>/<namespace>/<name>`, the namespace empty for a
/// clusterwide policy, as the policy engine names a document's rules
/// (`cilium_policy::PolicyDocument::origin`).
pub fn policy_origin(kind: &str, key: &str) -> String {
    if key.contains('/') {
        format!("{kind}/{key}")
    } else {
        format!("{kind}//{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_core::cluster::CiliumNodeAddress;
    use cilium_core::cluster::NamedPort;

    fn slice(name: &str, service: Option<&str>, body: Value) -> EndpointSlice {
        let mut s: EndpointSlice = serde_json::from_value(body).unwrap();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        if let Some(service) = service {
            s.metadata.labels = Some([(SERVICE_NAME_LABEL.to_owned(), service.to_owned())].into());
        }
        s
    }

    #[test]
    fn a_ciliumnode_is_a_registration_with_its_first_pod_cidr() {
        let mut node = CiliumNode::new("k8s-w2", Ipv4Addr::new(192, 168, 10, 102));
        node.spec.addresses.push(CiliumNodeAddress {
            kind: "CiliumInternalIP".into(),
            ip: Ipv4Addr::new(172, 20, 2, 1),
        });
        node.spec.ipam.pod_cidrs = vec![
            "172.20.2.0/24".parse().unwrap(),
            "172.20.9.0/24".parse().unwrap(),
        ];
        let reg = node_registration(&node, "c1");
        assert_eq!(reg.name, "k8s-w2");
        assert_eq!(reg.cluster, "c1");
        assert_eq!(reg.key(), "cilium/state/nodes/v1/c1/k8s-w2");
        assert_eq!(reg.internal_ip(), Some(Ipv4Addr::new(192, 168, 10, 102)));
        assert_eq!(reg.addresses.len(), 2);
        assert_eq!(reg.ipv4_alloc_cidr, Some("172.20.2.0/24".parse().unwrap()));
        // No pod CIDR yet (the operator has not written one).
        let bare = CiliumNode::new("k8s-w3", Ipv4Addr::new(192, 168, 10, 103));
        assert_eq!(node_registration(&bare, "c1").ipv4_alloc_cidr, None);
    }

    fn cep(status: &Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumEndpoint",
            "metadata": {"name": "curl-pod", "namespace": "team-a"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_ciliumendpoint_is_an_ipcache_entry_or_refused() {
        let good = json!({
            "id": 1234, "identity": {"id": 21894, "labels": ["k8s:app=curl"]},
            "networking": {"node": "192.168.10.100", "addressing": [{"ipv4": "172.20.0.87"}]},
            "encryption": {"key": 3},
            "named-ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                            {"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "", "port": 9}, {"name": "bad", "port": 70000}],
        });
        let pair = ip_identity_pair(&cep(&good)).unwrap();
        assert_eq!(
            pair,
            IpIdentityPair {
                ip: Ipv4Addr::new(172, 20, 0, 87),
                host_ip: Ipv4Addr::new(192, 168, 10, 100),
                id: 21894,
                key: 3,
                namespace: "team-a".into(),
                pod: "curl-pod".into(),
                named_ports: vec![
                    NamedPort {
                        name: "dns".into(),
                        port: 53,
                        protocol: "UDP".into()
                    },
                    NamedPort {
                        name: "http".into(),
                        port: 8080,
                        protocol: "TCP".into()
                    },
                ],
            }
        );
        // The store's ipcache JSON, field for field.
        let stored = serde_json::to_value(&pair).unwrap();
        assert_eq!(stored["K8sPodName"], "curl-pod");
        assert_eq!(stored["NamedPorts"][1]["Name"], "http");
        assert_eq!(stored["NamedPorts"][1]["Port"], 8080);
        // A pod's container ports, as the spec has them.
        let spec = json!({"containers": [
            {"name": "a", "ports": [{"name": "serve-80-tcp", "containerPort": 80},
                                    {"containerPort": 81}]},
            {"name": "b", "ports": [{"name": "serve-81-udp", "containerPort": 81, "protocol": "UDP"}]},
        ]});
        let ports = pod_named_ports(&spec);
        assert_eq!(ports.len(), 2);
        assert_eq!(
            (
                ports[0].name.as_str(),
                ports[0].port,
                ports[0].protocol.as_str()
            ),
            ("serve-80-tcp", 80, "TCP")
        );
        assert_eq!(ports[1].proto_number(), Some(17));
        assert_eq!(stored["HostIP"], "192.168.10.100");

        let refused = |path: &[&str], with: Value| {
            let mut status = good.clone();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut status;
            for p in parents {
                at = &mut at[*p];
            }
            at[*last] = with;
            ip_identity_pair(&cep(&status)).unwrap_err()
        };
        let e = refused(&["identity", "id"], Value::Null);
        assert!(e.contains("status.identity.id"), "{e}");
        assert!(refused(&["identity", "id"], json!(0)).contains("identity"));
        assert!(refused(&["identity", "id"], json!(1u64 << 33)).contains("identity"));
        let e = refused(&["networking", "node"], json!("fd00::1"));
        assert!(e.contains("status.networking.node"), "{e}");
        let e = refused(&["networking", "addressing"], json!([{"ipv6": "fd00::5"}]));
        assert!(e.contains("addressing[0].ipv4"), "{e}");
        assert!(ip_identity_pair(&cep(&Value::Null)).is_err());
    }

    #[test]
    fn slices_of_a_service_merge_into_its_endpoints() {
        let a = slice(
            "web-a",
            Some("web"),
            json!({"addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                      {"name": "metrics", "port": 9090}],
            "endpoints": [
                {"addresses": ["172.20.1.10"], "nodeName": "k8s-w1", "conditions": {"ready": true}},
                {"addresses": ["172.20.1.11"], "nodeName": "k8s-w1", "conditions": {"ready": false}},
                {"addresses": ["172.20.2.10"]},
            ]}),
        );
        // Same ports (another order of slices): one subset.
        let b = slice(
            "web-b",
            Some("web"),
            json!({"addressType": "IPv4",
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                          {"name": "metrics", "port": 9090}],
                "endpoints": [{"addresses": ["172.20.3.10"], "nodeName": "k8s-w3",
                               "conditions": {"ready": true, "serving": true}},
                              {"addresses": ["172.20.1.10"], "nodeName": "k8s-w1"}]}),
        );
        // Other ports (mid-rollout): a second subset.
        let c = slice(
            "web-c",
            Some("web"),
            json!({"addressType": "IPv4",
                "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}, {"name": "all"}],
                "endpoints": [{"addresses": ["172.20.4.10"], "nodeName": "k8s-w4"}]}),
        );
        // Only not-ready endpoints: no subset.
        let d = slice(
            "web-d",
            Some("web"),
            json!({"addressType": "IPv4", "ports": [{"port": 1}],
                "endpoints": [{"addresses": ["172.20.5.10"], "conditions": {"ready": false}}]}),
        );
        let fqdn = slice(
            "web-fqdn",
            Some("web"),
            json!({"addressType": "FQDN", "ports": [{"name": "http", "port": 8080}],
                "endpoints": [{"addresses": ["example.com"]}]}),
        );
        let other = slice(
            "db-a",
            Some("db"),
            json!({"addressType": "IPv4", "ports": [{"port": 5432}],
                "endpoints": [{"addresses": ["172.20.9.9"]}]}),
        );
        let orphan = slice(
            "loose",
            None,
            json!({"addressType": "IPv4", "endpoints": [{"addresses": ["172.20.9.8"]}]}),
        );
        let all = [&other, &c, &b, &orphan, &a, &d, &fqdn];
        let eps = endpoints_from_slices("default", "web", all).unwrap();
        assert_eq!(
            eps,
            json!({
                "apiVersion": "v1", "kind": "Endpoints",
                "metadata": {"name": "web", "namespace": "default"},
                "subsets": [
                    {"addresses": [
                        {"ip": "172.20.1.10", "nodeName": "k8s-w1"},
                        {"ip": "172.20.2.10"},
                        {"ip": "172.20.3.10", "nodeName": "k8s-w3"}],
                     "ports": [{"name": "http", "port": 8080, "protocol": "TCP"},
                               {"name": "metrics", "port": 9090, "protocol": "TCP"}]},
                    {"addresses": [{"ip": "172.20.4.10", "nodeName": "k8s-w4"}],
                     "ports": [{"name": "http", "port": 8081, "protocol": "TCP"}]},
                ],
            })
        );
        // Another namespace's service of the same name, and a service with no slices.
        assert!(endpoints_from_slices("other", "web", all).is_none());
        assert!(endpoints_from_slices("default", "nothing", all).is_none());
        // A service whose endpoints are all not ready: there, with no subsets.
        let only_d = slice(
            "x",
            Some("lonely"),
            json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["172.20.5.10"], "conditions": {"ready": false}}]}),
        );
        assert_eq!(
            endpoints_from_slices("default", "lonely", [&only_d]).unwrap()["subsets"],
            json!([])
        );
        assert_eq!(slice_service(&a).as_deref(), Some("default/web"));
        assert_eq!(slice_service(&orphan), None);
        // A slice labelled headless, or for another proxy, is no one's endpoints here.
        for label in [HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL] {
            let mut hidden = a.clone();
            if let Some(l) = hidden.metadata.labels.as_mut() {
                l.insert(label.to_owned(), String::new());
            }
            assert!(endpoints_from_slices("default", "web", [&hidden]).is_none());
            let eps = endpoints_from_slices("default", "web", [&hidden, &c]).unwrap();
            assert_eq!(eps["subsets"].as_array().map(Vec::len), Some(1), "{eps}");
        }
    }

    #[test]
    fn documents_leave_out_the_api_servers_bookkeeping() {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                "resourceVersion": "42", "labels": {"app": "web"},
                "annotations": {LAST_APPLIED: "{}", "note": "kept"}},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]},
            "status": {"loadBalancer": {}},
        }))
        .unwrap();
        assert_eq!(
            service_object(&svc),
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                    "annotations": {"note": "kept"}},
                "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}]}})
        );

        let ccnp: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "deny-world", "generation": 3},
            "spec": {"endpointSelector": {}, "egressDeny": [{"toEntities": ["world"]}]},
            "status": {"conditions": []},
        }))
        .unwrap();
        let doc = cilium_policy_document(&ccnp).unwrap();
        assert_eq!(
            doc,
            json!({"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                "metadata": {"name": "deny-world"},
                "spec": {"endpointSelector": {}, "egressDeny": [{"toEntities": ["world"]}]}})
        );
        // The same in a namespace is a CiliumNetworkPolicy; without a spec, refused.
        let mut cnp = ccnp.clone();
        cnp.metadata.namespace = Some("team-a".into());
        let doc = cilium_policy_document(&cnp).unwrap();
        assert_eq!(doc["kind"], "CiliumNetworkPolicy");
        assert_eq!(doc["metadata"]["namespace"], "team-a");
        cnp.data = json!({"specs": null});
        assert!(cilium_policy_document(&cnp).is_err());

        let knp: NetworkPolicy = serde_json::from_value(json!({
            "metadata": {"name": "db", "namespace": "team-a", "resourceVersion": "7"},
            "spec": {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"]},
        }))
        .unwrap();
        assert_eq!(
            network_policy_document(&knp),
            json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                "metadata": {"name": "db", "namespace": "team-a"},
                "spec": {"podSelector": {"matchLabels": {"app": "db"}},
                    "policyTypes": ["Ingress"]}})
        );
        assert_eq!(
            policy_origin("NetworkPolicy", "team-a/db"),
            "NetworkPolicy/team-a/db"
        );
        assert_eq!(
            policy_origin("CiliumClusterwideNetworkPolicy", "deny-world"),
            "CiliumClusterwideNetworkPolicy//deny-world"
        );
    }
}
