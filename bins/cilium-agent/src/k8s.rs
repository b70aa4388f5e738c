// SPDX-License-Identifier: Apache-2.0

//! Kubernetes Services and Endpoints (as the cluster store holds them) in cilium-lb's
//! terms: one frontend per service port (the ClusterIP, and each node's IP at the
//! `nodePort` for NodePort and LoadBalancer services), with the endpoints' addresses as
//! backends.

use std::net::{IpAddr, Ipv4Addr};

use cilium_k8s::convert::{HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL};
use cilium_lb::maglev::L4Proto;
use cilium_lb::service::{Backend, L3n4Addr, Service, ServiceType, TrafficPolicy};
use serde_json::Value;

fn proto(v: &Value) -> Option<L4Proto> {
    v.as_str().unwrap_or("TCP").parse().ok()
}

fn policy(v: &Value) -> TrafficPolicy {
    if v.as_str() == Some("Local") {
        TrafficPolicy::Local
    } else {
        TrafficPolicy::Cluster
    }
}

/// The backends of one service port: the addresses of the endpoint subsets whose port has
/// the service port's name (or of every subset when the port has no name).
fn backends(port: &Value, endpoints: Option<&Value>, protocol: L4Proto) -> Vec<Backend> {
    let mut out = Vec::new();
    let Some(eps) = endpoints else {
        return out;
    };
    let name = port["name"].as_str();
    for subset in eps["subsets"].as_array().into_iter().flatten() {
        let Some(sp) = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| name.is_none() || p["name"].as_str() == name)
        else {
            continue;
        };
        let Some(target) = sp["port"].as_u64().and_then(|p| u16::try_from(p).ok()) else {
            continue;
        };
        for addr in subset["addresses"].as_array().into_iter().flatten() {
            let Some(ip) = addr["ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
                continue;
            };
            let mut b = Backend::new(L3n4Addr::new(ip, target, protocol));
            b.node_name = addr["nodeName"].as_str().map(str::to_owned);
            if !out.contains(&b) {
                out.push(b);
            }
        }
    }
    out
}

/// The frontends of a Service object (with the backends its Endpoints give), for a node
/// whose IP is `node_ip`. Headless services (`clusterIP: None`, or labelled
/// `service.kubernetes.io/headless`) and those labelled with a `service-proxy-name` have
/// none, as Cilium leaves them to no proxy or to the one they name.
pub fn services_from_k8s(
    svc: &Value,
    endpoints: Option<&Value>,
    node_ip: Ipv4Addr,
) -> Vec<Service> {
    let meta = &svc["metadata"];
    let labels = &meta["labels"];
    if labels.get(HEADLESS_LABEL).is_some() || labels.get(SERVICE_PROXY_NAME_LABEL).is_some() {
        return Vec::new();
    }
    let name = format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().unwrap_or_default()
    );
    let spec = &svc["spec"];
    let Some(cluster_ip) = spec["clusterIP"]
        .as_str()
        .and_then(|s| s.parse::<IpAddr>().ok())
    else {
        return Vec::new();
    };
    let kind = spec["type"].as_str().unwrap_or("ClusterIP");
    let mut out = Vec::new();
    for port in spec["ports"].as_array().into_iter().flatten() {
        let (Some(number), Some(protocol)) = (
            port["port"].as_u64().and_then(|p| u16::try_from(p).ok()),
            proto(&port["protocol"]),
        ) else {
            continue;
        };
        let bes = backends(port, endpoints, protocol);
        let mut frontends = vec![(
            L3n4Addr::new(cluster_ip, number, protocol),
            ServiceType::ClusterIP,
        )];
        if matches!(kind, "NodePort" | "LoadBalancer")
            && let Some(np) = port["nodePort"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
        {
            frontends.push((
                L3n4Addr::new(IpAddr::V4(node_ip), np, protocol),
                ServiceType::NodePort,
            ));
        }
        for (frontend, svc_type) in frontends {
            let mut s = Service::new(name.clone(), frontend, svc_type);
            s.backends = bes.clone();
            s.external_traffic_policy = policy(&spec["externalTrafficPolicy"]);
            s.internal_traffic_policy = policy(&spec["internalTrafficPolicy"]);
            if spec["sessionAffinity"] == "ClientIP" {
                s.session_affinity_timeout = Some(
                    spec["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"]
                        .as_u64()
                        .and_then(|t| u32::try_from(t).ok())
                        .unwrap_or(10800),
                );
            }
            if s.validate().is_ok() {
                out.push(s);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_clusterip_service_and_its_endpoints() {
        let svc = json!({
            "metadata": {"name": "webpod", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
        });
        let eps = json!({"subsets": [{
            "addresses": [{"ip": "172.20.1.5", "nodeName": "k8s-w1"}, {"ip": "172.20.2.5", "nodeName": "k8s-w2"}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }]});
        let out = services_from_k8s(&svc, Some(&eps), Ipv4Addr::new(192, 168, 10, 101));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].frontend.to_string(), "10.96.0.10:80/TCP");
        assert_eq!(out[0].name, "default/webpod");
        assert_eq!(out[0].backends.len(), 2);
        assert_eq!(out[0].backends[1].node_name.as_deref(), Some("k8s-w2"));
        // No endpoints yet: the frontend exists without backends.
        assert!(
            services_from_k8s(&svc, None, Ipv4Addr::LOCALHOST)[0]
                .backends
                .is_empty()
        );
        // Headless: nothing.
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}});
        assert!(services_from_k8s(&headless, None, Ipv4Addr::LOCALHOST).is_empty());
        // Labelled headless, or for another service proxy: nothing either.
        for label in [HEADLESS_LABEL, SERVICE_PROXY_NAME_LABEL] {
            let mut labelled = svc.clone();
            labelled["metadata"]["labels"] = json!({label: "foo-bar"});
            assert!(
                services_from_k8s(&labelled, Some(&eps), Ipv4Addr::LOCALHOST).is_empty(),
                "{label}"
            );
        }
        // NodePort: also the node's IP at the node port.
        let np = json!({"metadata": {"name": "n"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.11",
            "ports": [{"port": 80, "nodePort": 30080}]}});
        let out = services_from_k8s(&np, None, Ipv4Addr::new(192, 168, 10, 101));
        assert_eq!(out[1].frontend.to_string(), "192.168.10.101:30080/TCP");
    }
}
