// SPDX-License-Identifier: Apache-2.0

//! The service model: a frontend, its backends, and how traffic is spread over them.
//!
//! As in Cilium's datapath, a [`Service`] is one frontend (address, port, protocol): a
//! Kubernetes Service with a ClusterIP and a NodePort is two of them, sharing backends.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::LbError;
use crate::maglev::{L4Proto, backend_hash_string};

/// How a frontend is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ServiceType {
    /// A cluster-internal virtual IP.
    ClusterIP,
    /// A port on every node's addresses.
    NodePort,
    /// An external IP routed to the nodes.
    ExternalIPs,
    /// A load balancer's address.
    LoadBalancer,
    /// A pod's `hostPort`.
    HostPort,
    /// A Cilium local redirect policy.
    LocalRedirect,
}

impl ServiceType {
    /// Whether traffic from outside the cluster uses this frontend (Cilium builds Maglev
    /// tables for these when `bpf-lb-algorithm=maglev`).
    pub fn is_external(self) -> bool {
        matches!(
            self,
            ServiceType::NodePort
                | ServiceType::ExternalIPs
                | ServiceType::LoadBalancer
                | ServiceType::HostPort
        )
    }
}

/// Prints the type as `cilium-dbg service list` does (`ClusterIP`, `NodePort`, ...).
impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::ExternalIPs => "ExternalIPs",
            ServiceType::LoadBalancer => "LoadBalancer",
            ServiceType::HostPort => "HostPort",
            ServiceType::LocalRedirect => "LocalRedirect",
        })
    }
}

/// Which backends a class of traffic may use (`externalTrafficPolicy` /
/// `internalTrafficPolicy`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum TrafficPolicy {
    /// Backends on any node.
    #[default]
    Cluster,
    /// Only backends on this node.
    Local,
}

/// The backend selection algorithm (`bpf-lb-algorithm`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgorithm {
    /// A random active slot per new flow (Cilium's default).
    #[default]
    Random,
    /// Maglev consistent hashing on the flow's source.
    Maglev,
}

impl LbAlgorithm {
    /// The value Cilium keeps in the top byte of the master entry (`LB_SELECTION_*`).
    pub fn code(self) -> u8 {
        match self {
            LbAlgorithm::Random => 1,
            LbAlgorithm::Maglev => 2,
        }
    }
}

impl FromStr for LbAlgorithm {
    type Err = LbError;
    fn from_str(s: &str) -> Result<Self, LbError> {
        match s {
            "random" => Ok(LbAlgorithm::Random),
            "maglev" => Ok(LbAlgorithm::Maglev),
            _ => Err(LbError::InvalidAlgorithm {
                input: s.to_owned(),
            }),
        }
    }
}

/// A backend's state, with Cilium's numbers (`BE_STATE_*`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// Takes new flows.
    #[default]
    Active,
    /// Going away: keeps its flows, takes new ones only when no backend is active.
    Terminating,
    /// Failed health checks: no new flows.
    Quarantined,
    /// Taken out by the operator: in no slot at all.
    Maintenance,
}

impl BackendState {
    /// Cilium's number for the state (written into the backend map's `flags`).
    pub fn code(self) -> u8 {
        match self {
            BackendState::Active => 0,
            BackendState::Terminating => 1,
            BackendState::Quarantined => 2,
            BackendState::Maintenance => 3,
        }
    }

    /// The state for a number.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(BackendState::Active),
            1 => Some(BackendState::Terminating),
            2 => Some(BackendState::Quarantined),
            3 => Some(BackendState::Maintenance),
            _ => None,
        }
    }

    /// Whether Cilium allows moving from `self` to `to`: active to terminating, quarantined
    /// or maintenance; quarantined to active or terminating; maintenance to active. Staying
    /// in the same state is always allowed.
    pub fn can_become(self, to: BackendState) -> bool {
        use BackendState::*;
        self == to
            || matches!(
                (self, to),
                (Active, Terminating | Quarantined | Maintenance)
                    | (Quarantined, Active | Terminating)
                    | (Maintenance, Active)
            )
    }
}

/// Prints `active`, `terminating`, `quarantined` or `maintenance`.
impl fmt::Display for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendState::Active => "active",
            BackendState::Terminating => "terminating",
            BackendState::Quarantined => "quarantined",
            BackendState::Maintenance => "maintenance",
        })
    }
}

/// An address, port and protocol: `10.96.0.10:53/UDP` (`[fd00::1]:80/TCP` for IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct L3n4Addr {
    /// The address.
    pub address: IpAddr,
    /// The L4 port (0 with protocol ANY for a wildcard).
    pub port: u16,
    /// The protocol.
    pub protocol: L4Proto,
}

impl L3n4Addr {
    /// An address from its parts.
    pub fn new(address: IpAddr, port: u16, protocol: L4Proto) -> Self {
        L3n4Addr {
            address,
            port,
            protocol,
        }
    }
}

impl fmt::Display for L3n4Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            SocketAddr::new(self.address, self.port),
            self.protocol
        )
    }
}

impl FromStr for L3n4Addr {
    type Err = LbError;
    fn from_str(s: &str) -> Result<Self, LbError> {
        let bad = |reason: &str| LbError::InvalidAddress {
            input: s.to_owned(),
            reason: reason.to_owned(),
        };
        let (sock, proto) = s.rsplit_once('/').unwrap_or((s, "TCP"));
        let sock: SocketAddr = sock
            .parse()
            .map_err(|_| bad("expected ADDR:PORT, [ADDR6]:PORT, optionally /PROTO"))?;
        let protocol: L4Proto = proto.parse().map_err(|_| bad("unknown protocol"))?;
        Ok(L3n4Addr::new(sock.ip(), sock.port(), protocol))
    }
}

impl Serialize for L3n4Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for L3n4Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn default_weight() -> u16 {
    crate::maglev::DEFAULT_BACKEND_WEIGHT
}

/// One backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Backend {
    /// Where traffic goes.
    pub address: L3n4Addr,
    /// Maglev weight (default 100).
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// The state.
    #[serde(default)]
    pub state: BackendState,
    /// The cluster the backend lives in (0: this one).
    #[serde(default)]
    pub cluster_id: u16,
    /// The node the backend runs on, when known (for `Local` traffic policies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Topology zone id (0: unknown).
    #[serde(default)]
    pub zone: u8,
}

impl Backend {
    /// An active backend of weight 100 in this cluster.
    pub fn new(address: L3n4Addr) -> Self {
        Backend {
            address,
            weight: default_weight(),
            state: BackendState::Active,
            cluster_id: 0,
            node_name: None,
            zone: 0,
        }
    }

    /// Moves to a new state if Cilium allows the transition.
    pub fn set_state(&mut self, to: BackendState) -> Result<(), LbError> {
        if !self.state.can_become(to) {
            return Err(LbError::InvalidStateTransition {
                backend: self.address.to_string(),
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }

    /// The Maglev hash string of this backend (a cross-node contract; see
    /// [`backend_hash_string`]).
    pub fn hash_string(&self, internal: bool) -> String {
        backend_hash_string(
            self.address.address,
            u32::from(self.cluster_id),
            self.address.port,
            self.address.protocol,
            internal,
        )
    }
}

/// One frontend and its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Service {
    /// `<namespace>/<name>` of the Kubernetes Service, for display.
    #[serde(default)]
    pub name: String,
    /// The frontend.
    pub frontend: L3n4Addr,
    /// How the frontend is reached.
    #[serde(rename = "type")]
    pub svc_type: ServiceType,
    /// The backends.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// ClientIP session affinity timeout in seconds (`None`: no affinity); at most
    /// 16,777,215 (24 bits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_affinity_timeout: Option<u32>,
    /// The algorithm this service asks for (Cilium's `service.cilium.io/lb-algorithm`);
    /// `None` uses the node's `bpf-lb-algorithm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<LbAlgorithm>,
    /// `externalTrafficPolicy`.
    #[serde(default)]
    pub external_traffic_policy: TrafficPolicy,
    /// `internalTrafficPolicy`.
    #[serde(default)]
    pub internal_traffic_policy: TrafficPolicy,
}

impl Service {
    /// A service of this type with no backends and default policies.
    pub fn new(name: impl Into<String>, frontend: L3n4Addr, svc_type: ServiceType) -> Self {
        Service {
            name: name.into(),
            frontend,
            svc_type,
            backends: Vec::new(),
            session_affinity_timeout: None,
            algorithm: None,
            external_traffic_policy: TrafficPolicy::Cluster,
            internal_traffic_policy: TrafficPolicy::Cluster,
        }
    }

    /// Adds a backend (builder style).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.backends.push(backend);
        self
    }

    /// Checks what serde cannot: the affinity timeout fits 24 bits, backends are unique and
    /// of the frontend's address family, a wildcard frontend has no backends.
    pub fn validate(&self) -> Result<(), LbError> {
        let bad = |reason: String| LbError::InvalidService {
            service: self.frontend.to_string(),
            reason,
        };
        if let Some(t) = self.session_affinity_timeout
            && t > MAX_AFFINITY_TIMEOUT
        {
            return Err(bad(format!(
                "session affinity timeout {t}s exceeds {MAX_AFFINITY_TIMEOUT}s"
            )));
        }
        let mut seen =
            std::collections::HashSet::with_hasher(foldhash::fast::RandomState::default());
        for b in &self.backends {
            if b.address.address.is_ipv4() != self.frontend.address.is_ipv4() {
                return Err(bad(format!(
                    "backend {} is not of the frontend's address family",
                    b.address
                )));
            }
            if !seen.insert((b.address, b.cluster_id)) {
                return Err(bad(format!("backend {} is listed twice", b.address)));
            }
        }
        if self.frontend.port == 0 && !self.backends.is_empty() {
            return Err(bad(
                "a wildcard frontend (port 0) cannot have backends".into()
            ));
        }
        Ok(())
    }
}

/// The largest session affinity timeout the master entry can hold (24 bits, seconds).
pub const MAX_AFFINITY_TIMEOUT: u32 = 0x00FF_FFFF;

/// Random backend selection as the datapath does it: `slot = rand % count + 1` (slot 0 is the
/// master entry). With `count == 0` there is nothing to select: the datapath drops the
/// packet with `DROP_NO_SERVICE`, and this returns `None`.
///
/// ```
/// use cilium_lb::service::random_slot;
/// assert_eq!(random_slot(3, 7), Some(2));
/// assert_eq!(random_slot(0, 7), None);
/// ```
pub fn random_slot(count: u16, rand: u32) -> Option<u16> {
    if count == 0 {
        return None;
    }
    Some((rand % u32::from(count)) as u16 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_transitions_as_cilium() {
        use BackendState::*;
        let all = [Active, Terminating, Quarantined, Maintenance];
        let allowed = [
            (Active, Terminating),
            (Active, Quarantined),
            (Active, Maintenance),
            (Quarantined, Active),
            (Quarantined, Terminating),
            (Maintenance, Active),
        ];
        for from in all {
            for to in all {
                let want = from == to || allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from} -> {to}");
            }
        }
        let mut b = Backend::new("10.0.0.1:80/TCP".parse().unwrap());
        b.set_state(Terminating).unwrap();
        assert!(b.set_state(Active).is_err());
        assert_eq!(b.state, Terminating);
    }

    #[test]
    fn addresses_parse_and_print() {
        for s in ["10.96.0.10:53/UDP", "[fd00::1]:80/TCP", "0.0.0.0:0/ANY"] {
            assert_eq!(s.parse::<L3n4Addr>().unwrap().to_string(), s);
        }
        assert_eq!(
            "10.0.0.1:80".parse::<L3n4Addr>().unwrap().to_string(),
            "10.0.0.1:80/TCP"
        );
        for bad in ["10.0.0.1", "10.0.0.1:80/XYZ", "10.0.0.1:99999/TCP", ""] {
            assert!(bad.parse::<L3n4Addr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn service_json_and_validation() {
        let json = r#"{"name":"default/webpod","frontend":"10.96.1.1:80/TCP","type":"ClusterIP",
            "backends":[{"address":"172.20.1.10:80/TCP"},{"address":"172.20.2.10:80/TCP","state":"terminating"}],
            "sessionAffinityTimeout":10800}"#;
        let svc: Service = serde_json::from_str(json).unwrap();
        svc.validate().unwrap();
        assert_eq!(svc.backends[0].weight, 100);
        assert_eq!(svc.backends[1].state, BackendState::Terminating);
        assert!(serde_json::from_str::<Service>(&json.replace("\"name\"", "\"nmae\"")).is_err());
        let mut bad = svc.clone();
        bad.session_affinity_timeout = Some(1 << 24);
        assert!(bad.validate().is_err());
        let mut dup = svc.clone();
        dup.backends.push(dup.backends[0].clone());
        assert!(dup.validate().is_err());
        let mut fam = svc;
        fam.backends[0].address = "[fd00::1]:80/TCP".parse().unwrap();
        assert!(fam.validate().is_err());
    }

    #[test]
    fn random_slot_semantics() {
        for count in 1..20u16 {
            for r in [0u32, 1, 17, u32::MAX] {
                let s = random_slot(count, r).unwrap();
                assert!((1..=count).contains(&s));
            }
        }
        assert_eq!(random_slot(0, 0), None);
    }
}
