// SPDX-License-Identifier: Apache-2.0

//! Services through the REST API: Cilium's `ServiceSpec` model (`PUT /v1/service/{id}`,
//! `GET /v1/service`) and its translation to and from cilium-lb's [`Service`].
//!
//! The JSON is Cilium's: `frontend-address {ip, port, protocol, scope}`,
//! `backend-addresses [{ip, port, protocol, weight, state, nodeName}]` and `flags {type,
//! name, namespace, trafficPolicy, extTrafficPolicy, intTrafficPolicy, ...}`. Two flags are
//! this project's: `sessionAffinityTimeout` (seconds, ClientIP affinity) and `lbAlgorithm`
//! (`random` | `maglev`, Cilium's `service.cilium.io/lb-algorithm` annotation). Unknown
//! fields are errors, so a typo never passes silently.

use std::net::IpAddr;

use cilium_lb::maglev::L4Proto;
use cilium_lb::service::{
    Backend, BackendState, L3n4Addr, LbAlgorithm, Service, ServiceType, TrafficPolicy,
};
use serde::{Deserialize, Serialize};

/// Where the API's services are kept in the cluster store: `<prefix>/<frontend>`, the value
/// being cilium-lb's [`Service`] JSON.
pub const SERVICES_PREFIX: &str = "cilium/state/frontends/v1";

/// A service as the REST API carries it (Cilium's `models.ServiceSpec`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// The service (rev-NAT) id; 0 in a request: chosen by the agent.
    #[serde(default)]
    pub id: u32,
    /// The frontend.
    #[serde(rename = "frontend-address")]
    pub frontend_address: FrontendAddress,
    /// The backends.
    #[serde(rename = "backend-addresses", default)]
    pub backend_addresses: Vec<BackendAddress>,
    /// Type, name and traffic policies.
    #[serde(default)]
    pub flags: ServiceFlags,
    /// Accepted for compatibility; has no effect.
    #[serde(rename = "updateServices", default, skip_serializing)]
    pub update_services: bool,
}

/// A frontend (Cilium's `models.FrontendAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendAddress {
    /// The address.
    pub ip: String,
    /// The port.
    #[serde(default)]
    pub port: u16,
    /// `TCP`, `UDP`, `SCTP` or `ANY`.
    #[serde(default = "tcp")]
    pub protocol: String,
    /// `external` (the only one a request may give; internal-scope entries follow from
    /// `intTrafficPolicy`).
    #[serde(default = "external")]
    pub scope: String,
}

/// A backend (Cilium's `models.BackendAddress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendAddress {
    /// The address.
    pub ip: String,
    /// The port.
    #[serde(default)]
    pub port: u16,
    /// The protocol (the frontend's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Maglev weight (100 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u16>,
    /// `active`, `terminating`, `quarantined` or `maintenance` (`active` when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The node the backend runs on.
    #[serde(rename = "nodeName", default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Topology zone: only the empty zone is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Accepted for compatibility (ClusterMesh preferred backends); must be false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preferred: bool,
}

/// The service's flags (Cilium's `models.ServiceSpecFlags`, plus two of this project's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceFlags {
    /// `ClusterIP`, `NodePort`, `ExternalIPs`, `HostPort`, `LoadBalancer`, `LocalRedirect`.
    #[serde(rename = "type", default = "cluster_ip")]
    pub svc_type: String,
    /// The Kubernetes service's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Its cluster (accepted, shown as given).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster: String,
    /// Older name of `extTrafficPolicy`.
    #[serde(
        rename = "trafficPolicy",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub traffic_policy: String,
    /// `Cluster` or `Local`.
    #[serde(rename = "extTrafficPolicy", default)]
    pub ext_traffic_policy: String,
    /// `Cluster` or `Local`.
    #[serde(rename = "intTrafficPolicy", default)]
    pub int_traffic_policy: String,
    /// Only empty (no NAT46/64) is supported.
    #[serde(
        rename = "natPolicy",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub nat_policy: String,
    /// Accepted for compatibility; must be 0.
    #[serde(rename = "healthCheckNodePort", default)]
    pub health_check_node_port: u16,
    /// ClientIP session affinity timeout in seconds (this project's flag).
    #[serde(
        rename = "sessionAffinityTimeout",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub session_affinity_timeout: Option<u32>,
    /// `random` or `maglev` (this project's flag; `bpf-lb-algorithm` when absent).
    #[serde(
        rename = "lbAlgorithm",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lb_algorithm: Option<String>,
}

fn tcp() -> String {
    "TCP".into()
}

fn external() -> String {
    "external".into()
}

fn cluster_ip() -> String {
    "ClusterIP".into()
}

fn ip(s: &str, what: &str) -> Result<IpAddr, String> {
    s.parse()
        .map_err(|_| format!("{what} {s:?} is not an IP address"))
}

fn policy(s: &str, what: &str) -> Result<TrafficPolicy, String> {
    match s {
        "" | "Cluster" => Ok(TrafficPolicy::Cluster),
        "Local" => Ok(TrafficPolicy::Local),
        _ => Err(format!("{what} {s:?}: expected Cluster or Local")),
    }
}

fn policy_name(p: TrafficPolicy) -> String {
    match p {
        TrafficPolicy::Cluster => "Cluster",
        TrafficPolicy::Local => "Local",
    }
    .into()
}

/// The display name of a service type, as Cilium prints it.
pub fn type_name(t: ServiceType) -> String {
    serde_json::to_value(t)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

impl ServiceSpec {
    /// The frontend, parsed.
    pub fn frontend(&self) -> Result<L3n4Addr, String> {
        let fe = &self.frontend_address;
        let protocol: L4Proto = fe
            .protocol
            .parse()
            .map_err(|_| format!("frontend protocol {:?}", fe.protocol))?;
        Ok(L3n4Addr::new(ip(&fe.ip, "frontend")?, fe.port, protocol))
    }

    /// The cilium-lb service this spec describes, validated.
    pub fn to_service(&self) -> Result<Service, String> {
        let frontend = self.frontend()?;
        if !matches!(self.frontend_address.scope.as_str(), "" | "external") {
            return Err(format!(
                "frontend scope {:?}: only external can be given (internal entries follow \
                 from intTrafficPolicy)",
                self.frontend_address.scope
            ));
        }
        let flags = &self.flags;
        let svc_type: ServiceType =
            serde_json::from_value(serde_json::Value::String(if flags.svc_type.is_empty() {
                cluster_ip()
            } else {
                flags.svc_type.clone()
            }))
            .map_err(|_| {
                format!(
                    "service type {:?}: expected ClusterIP, NodePort, ExternalIPs, \
                         HostPort, LoadBalancer or LocalRedirect",
                    flags.svc_type
                )
            })?;
        if !flags.nat_policy.is_empty() {
            return Err(format!(
                "natPolicy {:?}: NAT46/64 is not supported",
                flags.nat_policy
            ));
        }
        if flags.health_check_node_port != 0 {
            return Err("healthCheckNodePort is not supported".into());
        }
        let name = match (flags.namespace.as_str(), flags.name.as_str()) {
            ("", "") => String::new(),
            ("", n) => format!("default/{n}"),
            (ns, n) => format!("{ns}/{n}"),
        };
        let mut svc = Service::new(name, frontend, svc_type);
        let ext = if flags.ext_traffic_policy.is_empty() {
            &flags.traffic_policy
        } else {
            &flags.ext_traffic_policy
        };
        policy(&flags.traffic_policy, "trafficPolicy")?;
        svc.external_traffic_policy = policy(ext, "extTrafficPolicy")?;
        svc.internal_traffic_policy = policy(&flags.int_traffic_policy, "intTrafficPolicy")?;
        svc.session_affinity_timeout = flags.session_affinity_timeout;
        svc.algorithm = match &flags.lb_algorithm {
            None => None,
            Some(a) => Some(
                a.parse::<LbAlgorithm>()
                    .map_err(|_| format!("lbAlgorithm {a:?}: expected random or maglev"))?,
            ),
        };
        for (i, b) in self.backend_addresses.iter().enumerate() {
            let what = format!("backend {i}");
            let protocol = match &b.protocol {
                Some(p) => p.parse().map_err(|_| format!("{what}: protocol {p:?}"))?,
                None => frontend.protocol,
            };
            let mut backend = Backend::new(L3n4Addr::new(ip(&b.ip, &what)?, b.port, protocol));
            if let Some(w) = b.weight {
                backend.weight = w;
            }
            if let Some(s) = &b.state {
                backend.state =
                    serde_json::from_value::<BackendState>(serde_json::Value::String(s.clone()))
                        .map_err(|_| {
                            format!(
                                "{what}: state {s:?}: expected active, terminating, \
                                 quarantined or maintenance"
                            )
                        })?;
            }
            if b.zone.as_deref().is_some_and(|z| !z.is_empty()) {
                return Err(format!("{what}: topology zones are not supported"));
            }
            if b.preferred {
                return Err(format!("{what}: preferred backends are not supported"));
            }
            backend.node_name = b.node_name.clone().filter(|n| !n.is_empty());
            svc.backends.push(backend);
        }
        svc.validate().map_err(|e| e.to_string())?;
        Ok(svc)
    }

    /// The spec of a service the agent holds under `id`.
    pub fn from_service(id: u16, svc: &Service) -> ServiceSpec {
        let (namespace, name) = svc.name.split_once('/').unwrap_or(("", &svc.name));
        ServiceSpec {
            id: u32::from(id),
            frontend_address: FrontendAddress {
                ip: svc.frontend.address.to_string(),
                port: svc.frontend.port,
                protocol: svc.frontend.protocol.to_string(),
                scope: external(),
            },
            backend_addresses: svc
                .backends
                .iter()
                .map(|b| BackendAddress {
                    ip: b.address.address.to_string(),
                    port: b.address.port,
                    protocol: Some(b.address.protocol.to_string()),
                    weight: Some(b.weight),
                    state: Some(b.state.to_string()),
                    node_name: b.node_name.clone(),
                    zone: None,
                    preferred: false,
                })
                .collect(),
            flags: ServiceFlags {
                svc_type: type_name(svc.svc_type),
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                cluster: String::new(),
                traffic_policy: String::new(),
                ext_traffic_policy: policy_name(svc.external_traffic_policy),
                int_traffic_policy: policy_name(svc.internal_traffic_policy),
                nat_policy: String::new(),
                health_check_node_port: 0,
                session_affinity_timeout: svc.session_affinity_timeout,
                lb_algorithm: svc.algorithm.map(|a| {
                    match a {
                        LbAlgorithm::Random => "random",
                        LbAlgorithm::Maglev => "maglev",
                    }
                    .to_owned()
                }),
            },
            update_services: false,
        }
    }

    /// Parses a request body, naming the field that is wrong.
    pub fn parse(body: &[u8]) -> Result<ServiceSpec, String> {
        let mut value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("service: {e}"))?;
        crate::integral_numbers(&mut value);
        let spec: ServiceSpec = serde_path_to_error::deserialize(&value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                format!("service: {}", e.inner())
            } else {
                format!("service: {path}: {}", e.inner())
            }
        })?;
        let parsed = serde_json::to_value(&spec).map_err(|e| format!("service: {e}"))?;
        match crate::array_for_object(&value, &parsed) {
            Some(path) => Err(format!("service: {}: expected an object", path)),
            None => Ok(spec),
        }
    }
}

/// The API's JSON for a service: `{spec, status: {realized}}`.
pub fn service_json(id: u16, svc: &Service) -> serde_json::Value {
    let spec = ServiceSpec::from_service(id, svc);
    serde_json::json!({"spec": spec, "status": {"realized": spec}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Result<Service, String> {
        ServiceSpec::parse(json.as_bytes())?.to_service()
    }

    #[test]
    fn a_cilium_service_spec_becomes_a_service_and_back() {
        let svc = spec(
            r#"{"id": 0,
                "frontend-address": {"ip": "10.96.0.10", "port": 80, "protocol": "TCP", "scope": "external"},
                "backend-addresses": [
                    {"ip": "172.20.1.10", "port": 8080, "weight": 50, "nodeName": "k8s-w1"},
                    {"ip": "172.20.2.10", "port": 8080, "state": "terminating"}],
                "flags": {"type": "ClusterIP", "name": "webpod", "namespace": "default",
                          "intTrafficPolicy": "Local", "lbAlgorithm": "maglev"}}"#,
        )
        .expect("valid");
        assert_eq!(svc.name, "default/webpod");
        assert_eq!(svc.frontend.to_string(), "10.96.0.10:80/TCP");
        assert_eq!(svc.backends[0].weight, 50);
        assert_eq!(svc.backends[0].node_name.as_deref(), Some("k8s-w1"));
        assert_eq!(svc.backends[1].state, BackendState::Terminating);
        assert_eq!(svc.backends[1].address.protocol, L4Proto::Tcp);
        assert_eq!(svc.internal_traffic_policy, TrafficPolicy::Local);
        assert_eq!(svc.algorithm, Some(LbAlgorithm::Maglev));
        let back = ServiceSpec::from_service(7, &svc);
        assert_eq!(back.id, 7);
        let json = serde_json::to_vec(&back).expect("json");
        assert_eq!(
            ServiceSpec::parse(&json).and_then(|s| s.to_service()),
            Ok(svc)
        );
    }

    #[test]
    fn bad_specs_name_what_is_wrong() {
        let cases = [
            (r#"{}"#, "frontend-address"),
            (
                r#"{"frontend-address": {"ip": "nope", "port": 80}}"#,
                "not an IP",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80, "protocol": "ICMP"}}"#,
                "protocol",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "flags": {"type": "Bogus"}}"#,
                "service type",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80, "scope": "internal"}}"#,
                "scope",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "flags": {"typo": 1}}"#,
                "flags",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "backend-addresses": [{"ip": "10.1.0.1", "port": 1, "state": "gone"}]}"#,
                "backend 0: state",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "backend-addresses": [{"ip": "10.1.0.1", "port": 1}, {"ip": "10.1.0.1", "port": 1}]}"#,
                "",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "flags": {"extTrafficPolicy": "Nearby"}}"#,
                "extTrafficPolicy",
            ),
            (
                r#"{"frontend-address": {"ip": "10.0.0.1", "port": 80}, "flags": {"sessionAffinityTimeout": 99999999}}"#,
                "",
            ),
        ];
        for (json, want) in cases {
            let err = spec(json).expect_err(json);
            assert!(err.contains(want), "{json}: {err}");
        }
    }
}
