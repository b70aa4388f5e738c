// SPDX-License-Identifier: Apache-2.0

//! Parsing policy documents and normalising them into rules over identities.

use std::str::FromStr;

use cilium_core::NumericIdentity;
use cilium_core::labels::keys;
use ipnet::IpNet;
use serde::Deserialize;

use crate::PolicyError;
use crate::model::*;
use crate::selector::{Operator, Requirement, Selector};

/// Traffic direction, seen from the endpoint the rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Direction {
    /// Into the endpoint.
    Ingress,
    /// Out of the endpoint.
    Egress,
}

/// A protocol and port range (`proto` 0: any protocol; `0..=65535`: any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct PortRange {
    /// IP protocol (6 TCP, 17 UDP, 132 SCTP, 0 any).
    pub proto: u8,
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Any protocol, any port.
    pub const ANY: PortRange = PortRange {
        proto: 0,
        lo: 0,
        hi: u16::MAX,
    };

    /// Whether `proto`/`port` falls in the range.
    pub fn contains(&self, proto: u8, port: u16) -> bool {
        (self.proto == 0 || self.proto == proto) && self.lo <= port && port <= self.hi
    }
}

/// A port given by its name (a container port's `name`), for a protocol (0: any). It
/// stands for the port numbers that name has: on the endpoint the rule applies to for
/// ingress, on the peers for egress (see [`crate::PolicyEngine::set_endpoint_ports`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct NamedPort {
    /// IP protocol (6 TCP, 17 UDP, 132 SCTP, 0 any).
    pub proto: u8,
    /// The name (an IANA service name: up to 15 lower-case letters, digits and inner
    /// hyphens, with at least one letter).
    pub name: String,
}

/// Named ports by name: the protocol and number each name stands for (a pod's container
/// ports, or all the cluster's).
pub type NamedPorts = std::collections::BTreeMap<String, std::collections::BTreeSet<(u8, u16)>>;

/// A Cilium entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Entity {
    /// Everything (identity 0 in the policy map).
    All,
    /// Everything but the world.
    Cluster,
    /// A reserved identity (`host`, `world`, `remote-node`, ...).
    Reserved(NumericIdentity),
}

/// Who a rule lets in (or out to).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Peer {
    /// Endpoints whose identity labels match.
    Endpoints(Selector),
    /// An entity.
    Entity(Entity),
    /// Addresses in a CIDR but not in its exceptions.
    Cidr {
        /// The CIDR.
        net: IpNet,
        /// Exceptions.
        except: Vec<IpNet>,
    },
}

/// A rule in normal form: who it applies to, in which direction, allow or deny, which
/// peers (none: no peer; `[Entity(All)]`: all), which ports (empty: all).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rule {
    /// `<kind>/<namespace>/<name>` of the source document.
    pub origin: String,
    /// The endpoints it applies to.
    pub subject: Selector,
    /// Direction.
    pub direction: Direction,
    /// A deny rule.
    pub deny: bool,
    /// Peers.
    pub peers: Vec<Peer>,
    /// Ports (empty, with no named ports either: all).
    pub ports: Vec<PortRange>,
    /// Ports by name, resolved per endpoint (see [`NamedPort`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<NamedPort>,
}

impl Rule {
    /// Whether the rule names no port at all (it then applies to every port).
    pub fn all_ports(&self) -> bool {
        self.ports.is_empty() && self.named_ports.is_empty()
    }
}

fn proto_number(p: &str, path: &str) -> Result<u8, PolicyError> {
    match p.to_ascii_uppercase().as_str() {
        "TCP" => Ok(6),
        "UDP" => Ok(17),
        "SCTP" => Ok(132),
        "ANY" => Ok(0),
        _ => Err(invalid(path, format!("unknown protocol {p:?}"))),
    }
}

fn invalid(path: &str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Whether `name` is a valid port name (Kubernetes' IANA_SVC_NAME rule).
pub(crate) fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// A port: a number, or a name (`Err` carries the name).
fn port_number(v: &PortValue, path: &str) -> Result<Result<u16, String>, PolicyError> {
    let n = match v {
        PortValue::Number(n) => *n,
        PortValue::Text(s) => match s.parse::<u32>() {
            Ok(n) => n,
            Err(_) if is_port_name(s) => return Ok(Err(s.clone())),
            Err(_) => {
                return Err(invalid(
                    path,
                    format!(
                        "{s:?} is neither a port number nor a port name (up to 15 lower-case \
                         letters, digits and inner hyphens, with a letter)"
                    ),
                ));
            }
        },
    };
    u16::try_from(n)
        .map(Ok)
        .map_err(|_| invalid(path, format!("port {n} is out of range")))
}

/// A port entry: a range of numbers, or a port name.
enum PortSpec {
    Range(PortRange),
    Named(NamedPort),
}

/// Splits port entries into ranges and named ports.
fn split_ports(specs: Vec<PortSpec>) -> (Vec<PortRange>, Vec<NamedPort>) {
    let mut ranges = Vec::new();
    let mut named = Vec::new();
    for s in specs {
        match s {
            PortSpec::Range(r) => ranges.push(r),
            PortSpec::Named(n) => named.push(n),
        }
    }
    (ranges, named)
}

fn range(
    port: Option<&PortValue>,
    end: Option<u32>,
    proto: u8,
    path: &str,
) -> Result<PortSpec, PolicyError> {
    let lo = match port {
        Some(p) => match port_number(p, &format!("{path}.port"))? {
            Ok(n) => n,
            Err(name) => {
                if end.is_some() {
                    return Err(invalid(
                        &format!("{path}.endPort"),
                        "endPort needs a numeric port",
                    ));
                }
                return Ok(PortSpec::Named(NamedPort { proto, name }));
            }
        },
        None => 0,
    };
    if lo == 0 {
        if end.is_some() {
            return Err(invalid(path, "endPort needs a port"));
        }
        return Ok(PortSpec::Range(PortRange {
            proto,
            lo: 0,
            hi: u16::MAX,
        }));
    }
    let hi = match end {
        Some(e) => u16::try_from(e)
            .map_err(|_| invalid(&format!("{path}.endPort"), format!("{e} is out of range")))?,
        None => lo,
    };
    if hi < lo {
        return Err(invalid(
            &format!("{path}.endPort"),
            format!("endPort {hi} is below port {lo}"),
        ));
    }
    Ok(PortSpec::Range(PortRange { proto, lo, hi }))
}

fn cidr(text: &str, path: &str) -> Result<IpNet, PolicyError> {
    IpNet::from_str(text)
        .or_else(|_| {
            std::net::IpAddr::from_str(text)
                .map(|ip| IpNet::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full length"))
        })
        .map(|n| n.trunc())
        .map_err(|_| invalid(path, format!("{text:?} is not a CIDR")))
}

fn cidr_peer(c: &str, except: &[String], path: &str) -> Result<Peer, PolicyError> {
    let net = cidr(c, &format!("{path}.cidr"))?;
    let mut ex = Vec::new();
    for (i, e) in except.iter().enumerate() {
        let n = cidr(e, &format!("{path}.except[{i}]"))?;
        if !net.contains(&n) {
            return Err(invalid(
                &format!("{path}.except[{i}]"),
                format!("{n} is not inside {net}"),
            ));
        }
        ex.push(n);
    }
    Ok(Peer::Cidr { net, except: ex })
}

fn entity(name: &str, path: &str) -> Result<Peer, PolicyError> {
    let e = match name {
        "all" => Entity::All,
        "cluster" => Entity::Cluster,
        other => Entity::Reserved(
            NumericIdentity::from_reserved_name(other)
                .filter(|id| *id != NumericIdentity::UNKNOWN)
                .ok_or_else(|| invalid(path, format!("unknown entity {other:?}")))?,
        ),
    };
    Ok(Peer::Entity(e))
}

fn check_selector(s: &Selector, path: &str) -> Result<(), PolicyError> {
    s.validate().map_err(|e| invalid(path, e))
}

/// Scopes a peer selector of a namespaced policy to the policy's namespace, unless it
/// names a namespace itself.
fn scope(sel: &Selector, ns: Option<&str>) -> Selector {
    match ns {
        Some(ns) if !sel.mentions(keys::POD_NAMESPACE) => sel
            .clone()
            .with(&format!("k8s:{}", keys::POD_NAMESPACE), ns),
        _ => sel.clone(),
    }
}

/// Ports of a Cilium `toPorts` list (empty: all).
fn cilium_ports(
    rules: Option<&Vec<PortRule>>,
    path: &str,
) -> Result<(Vec<PortRange>, Vec<NamedPort>), PolicyError> {
    let mut out = Vec::new();
    for (i, pr) in rules.into_iter().flatten().enumerate() {
        for (j, p) in pr.ports.iter().enumerate() {
            let at = format!("{path}.toPorts[{i}].ports[{j}]");
            let proto = match &p.protocol {
                Some(s) => proto_number(s, &format!("{at}.protocol"))?,
                None => 0,
            };
            out.push(range(p.port.as_ref(), p.end_port, proto, &at)?);
        }
    }
    Ok(split_ports(out))
}

struct Section<'a> {
    endpoints: Option<&'a Vec<Selector>>,
    entities: Option<&'a Vec<String>>,
    cidrs: Option<&'a Vec<String>>,
    cidr_sets: Option<&'a Vec<CidrRule>>,
    ports: Option<&'a Vec<PortRule>>,
}

fn ingress_sections(list: Option<&Vec<CiliumIngress>>) -> Option<Vec<Section<'_>>> {
    list.map(|l| {
        l.iter()
            .map(|r| Section {
                endpoints: r.from_endpoints.as_ref(),
                entities: r.from_entities.as_ref(),
                cidrs: r.from_cidr.as_ref(),
                cidr_sets: r.from_cidr_set.as_ref(),
                ports: r.to_ports.as_ref(),
            })
            .collect()
    })
}

fn egress_sections(list: Option<&Vec<CiliumEgress>>) -> Option<Vec<Section<'_>>> {
    list.map(|l| {
        l.iter()
            .map(|r| Section {
                endpoints: r.to_endpoints.as_ref(),
                entities: r.to_entities.as_ref(),
                cidrs: r.to_cidr.as_ref(),
                cidr_sets: r.to_cidr_set.as_ref(),
                ports: r.to_ports.as_ref(),
            })
            .collect()
    })
}

impl CiliumNetworkPolicy {
    /// The rules of this policy in normal form.
    pub fn rules(&self) -> Result<Vec<Rule>, PolicyError> {
        let clusterwide = match (self.api_version.as_str(), self.kind.as_str()) {
            ("cilium.io/v2", "CiliumNetworkPolicy") => false,
            ("cilium.io/v2", "CiliumClusterwideNetworkPolicy") => true,
            (v, k) => return Err(invalid("kind", format!("{v} {k} is not a Cilium policy"))),
        };
        let ns = if clusterwide {
            None
        } else {
            Some(self.metadata.namespace.as_deref().unwrap_or("default"))
        };
        let origin = format!("{}/{}/{}", self.kind, ns.unwrap_or(""), self.metadata.name);
        let specs: Vec<(String, &CiliumRule)> = match (&self.spec, &self.specs) {
            (Some(s), None) => vec![("spec".to_owned(), s)],
            (None, Some(list)) => list
                .iter()
                .enumerate()
                .map(|(i, s)| (format!("specs[{i}]"), s))
                .collect(),
            (Some(_), Some(_)) => return Err(invalid("spec", "give spec or specs, not both")),
            (None, None) => return Err(invalid("spec", "a policy needs spec or specs")),
        };
        let mut out = Vec::new();
        for (path, spec) in specs {
            let selector = spec
                .endpoint_selector
                .as_ref()
                .ok_or_else(|| invalid(&format!("{path}.endpointSelector"), "missing"))?;
            check_selector(selector, &format!("{path}.endpointSelector"))?;
            let subject = scope(selector, ns);
            let groups = [
                (
                    "ingress",
                    Direction::Ingress,
                    false,
                    ingress_sections(spec.ingress.as_ref()),
                ),
                (
                    "ingressDeny",
                    Direction::Ingress,
                    true,
                    ingress_sections(spec.ingress_deny.as_ref()),
                ),
                (
                    "egress",
                    Direction::Egress,
                    false,
                    egress_sections(spec.egress.as_ref()),
                ),
                (
                    "egressDeny",
                    Direction::Egress,
                    true,
                    egress_sections(spec.egress_deny.as_ref()),
                ),
            ];
            for (name, direction, deny, sections) in groups {
                let Some(sections) = sections else { continue };
                if sections.is_empty() {
                    // An empty list still selects the endpoint for enforcement.
                    out.push(Rule {
                        origin: origin.clone(),
                        subject: subject.clone(),
                        direction,
                        deny,
                        peers: Vec::new(),
                        ports: Vec::new(),
                        named_ports: Vec::new(),
                    });
                }
                for (i, sec) in sections.iter().enumerate() {
                    let at = format!("{path}.{name}[{i}]");
                    let mut peers = Vec::new();
                    let l3_field = if direction == Direction::Ingress {
                        "from"
                    } else {
                        "to"
                    };
                    for (j, s) in sec.endpoints.into_iter().flatten().enumerate() {
                        check_selector(s, &format!("{at}.{l3_field}Endpoints[{j}]"))?;
                        peers.push(Peer::Endpoints(scope(s, ns)));
                    }
                    for (j, e) in sec.entities.into_iter().flatten().enumerate() {
                        peers.push(entity(e, &format!("{at}.{l3_field}Entities[{j}]"))?);
                    }
                    for (j, c) in sec.cidrs.into_iter().flatten().enumerate() {
                        peers.push(cidr_peer(c, &[], &format!("{at}.{l3_field}CIDR[{j}]"))?);
                    }
                    for (j, c) in sec.cidr_sets.into_iter().flatten().enumerate() {
                        peers.push(cidr_peer(
                            &c.cidr,
                            &c.except,
                            &format!("{at}.{l3_field}CIDRSet[{j}]"),
                        )?);
                    }
                    let (ports, named_ports) = cilium_ports(sec.ports, &at)?;
                    let has_l3 = sec.endpoints.is_some()
                        || sec.entities.is_some()
                        || sec.cidrs.is_some()
                        || sec.cidr_sets.is_some();
                    // A rule with ports but no L3 peers applies to every peer; a rule with
                    // neither allows nothing (Cilium's default-deny idiom `- {}`).
                    if !has_l3 && (!ports.is_empty() || !named_ports.is_empty()) {
                        peers.push(Peer::Entity(Entity::All));
                    }
                    out.push(Rule {
                        origin: origin.clone(),
                        subject: subject.clone(),
                        direction,
                        deny,
                        peers,
                        ports,
                        named_ports,
                    });
                }
            }
        }
        Ok(out)
    }
}

/// Turns a namespace selector into a selector over pods' namespace labels
/// (`io.cilium.k8s.namespace.labels.<key>`).
fn namespace_labels(sel: &Selector) -> Selector {
    let prefix = format!("k8s:{}.", keys::POD_NAMESPACE_META_LABELS);
    Selector {
        match_labels: sel
            .match_labels
            .iter()
            .map(|(k, v)| (format!("{prefix}{k}"), v.clone()))
            .collect(),
        match_expressions: sel
            .match_expressions
            .iter()
            .map(|r| Requirement {
                key: format!("{prefix}{}", r.key),
                operator: r.operator,
                values: r.values.clone(),
            })
            .collect(),
    }
}

fn k8s_peer(p: &K8sPeer, ns: &str, path: &str) -> Result<Peer, PolicyError> {
    if p.ip_block.is_some() && (p.pod_selector.is_some() || p.namespace_selector.is_some()) {
        return Err(invalid(path, "ipBlock cannot be combined with selectors"));
    }
    match (&p.pod_selector, &p.namespace_selector, &p.ip_block) {
        (_, _, Some(b)) => cidr_peer(&b.cidr, &b.except, &format!("{path}.ipBlock")),
        (None, None, None) => Err(invalid(
            path,
            "a peer needs podSelector, namespaceSelector or ipBlock",
        )),
        (pods, namespaces, None) => {
            let mut sel = pods.clone().unwrap_or_default();
            check_selector(&sel, &format!("{path}.podSelector"))?;
            match namespaces {
                None => sel = sel.with(&format!("k8s:{}", keys::POD_NAMESPACE), ns),
                Some(n) => {
                    check_selector(n, &format!("{path}.namespaceSelector"))?;
                    let nl = namespace_labels(n);
                    sel.match_labels.extend(nl.match_labels);
                    sel.match_expressions.extend(nl.match_expressions);
                    if n.is_empty() {
                        // Every namespace: still only pods (not host or world).
                        sel.match_expressions.push(Requirement {
                            key: format!("k8s:{}", keys::POD_NAMESPACE),
                            operator: Operator::Exists,
                            values: Vec::new(),
                        });
                    }
                }
            }
            Ok(Peer::Endpoints(sel))
        }
    }
}

fn k8s_ports(
    ports: &[K8sPort],
    path: &str,
) -> Result<(Vec<PortRange>, Vec<NamedPort>), PolicyError> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let at = format!("{path}.ports[{i}]");
            let proto = proto_number(
                p.protocol.as_deref().unwrap_or("TCP"),
                &format!("{at}.protocol"),
            )?;
            if proto == 0 {
                return Err(invalid(
                    &format!("{at}.protocol"),
                    "must be TCP, UDP or SCTP",
                ));
            }
            range(p.port.as_ref(), p.end_port, proto, &at)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(split_ports)
}

/// One NetworkPolicy rule flattened: its peers and its ports.
type PeersAndPorts = (Vec<K8sPeer>, Vec<K8sPort>);

impl K8sNetworkPolicy {
    /// The rules of this policy in normal form.
    pub fn rules(&self) -> Result<Vec<Rule>, PolicyError> {
        if self.api_version != "networking.k8s.io/v1" || self.kind != "NetworkPolicy" {
            return Err(invalid(
                "kind",
                format!("{} {} is not a NetworkPolicy", self.api_version, self.kind),
            ));
        }
        let ns = self.metadata.namespace.as_deref().unwrap_or("default");
        let origin = format!("NetworkPolicy/{ns}/{}", self.metadata.name);
        check_selector(&self.spec.pod_selector, "spec.podSelector")?;
        let subject = self
            .spec
            .pod_selector
            .clone()
            .with(&format!("k8s:{}", keys::POD_NAMESPACE), ns);
        let types: Vec<String> = match &self.spec.policy_types {
            Some(t) => t.clone(),
            None => {
                let mut t = vec!["Ingress".to_owned()];
                if self.spec.egress.is_some() {
                    t.push("Egress".to_owned());
                }
                t
            }
        };
        let mut out = Vec::new();
        for (i, t) in types.iter().enumerate() {
            let (direction, peers_ports): (Direction, Vec<PeersAndPorts>) = match t.as_str() {
                "Ingress" => (
                    Direction::Ingress,
                    self.spec
                        .ingress
                        .iter()
                        .flatten()
                        .map(|r| (r.from.clone(), r.ports.clone()))
                        .collect(),
                ),
                "Egress" => (
                    Direction::Egress,
                    self.spec
                        .egress
                        .iter()
                        .flatten()
                        .map(|r| (r.to.clone(), r.ports.clone()))
                        .collect(),
                ),
                other => {
                    return Err(invalid(
                        &format!("spec.policyTypes[{i}]"),
                        format!("unknown policy type {other:?}"),
                    ));
                }
            };
            // Selected for enforcement even with no rules: default deny.
            out.push(Rule {
                origin: origin.clone(),
                subject: subject.clone(),
                direction,
                deny: false,
                peers: Vec::new(),
                ports: Vec::new(),
                named_ports: Vec::new(),
            });
            let field = if direction == Direction::Ingress {
                "ingress"
            } else {
                "egress"
            };
            for (j, (peers, ports)) in peers_ports.iter().enumerate() {
                let at = format!("spec.{field}[{j}]");
                let peer_field = if direction == Direction::Ingress {
                    "from"
                } else {
                    "to"
                };
                let mut resolved = Vec::new();
                for (k, p) in peers.iter().enumerate() {
                    resolved.push(k8s_peer(p, ns, &format!("{at}.{peer_field}[{k}]"))?);
                }
                if peers.is_empty() {
                    resolved.push(Peer::Entity(Entity::All));
                }
                let (ports, named_ports) = k8s_ports(ports, &at)?;
                out.push(Rule {
                    origin: origin.clone(),
                    subject: subject.clone(),
                    direction,
                    deny: false,
                    peers: resolved,
                    ports,
                    named_ports,
                });
            }
        }
        Ok(out)
    }
}

/// A parsed policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PolicyDocument {
    /// `cilium.io/v2` CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
    Cilium(CiliumNetworkPolicy),
    /// `networking.k8s.io/v1` NetworkPolicy.
    Kubernetes(K8sNetworkPolicy),
}

impl PolicyDocument {
    /// `<kind>/<namespace>/<name>`: the origin its rules carry (the namespace is empty for
    /// clusterwide policies, `default` when not given).
    pub fn origin(&self) -> String {
        match self {
            PolicyDocument::Cilium(p) => {
                let ns = if p.kind == "CiliumClusterwideNetworkPolicy" {
                    ""
                } else {
                    p.metadata.namespace.as_deref().unwrap_or("default")
                };
                format!("{}/{ns}/{}", p.kind, p.metadata.name)
            }
            PolicyDocument::Kubernetes(p) => format!(
                "NetworkPolicy/{}/{}",
                p.metadata.namespace.as_deref().unwrap_or("default"),
                p.metadata.name
            ),
        }
    }

    /// The document as JSON; [`parse`] reads it back to the same document.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            PolicyDocument::Cilium(p) => serde_json::to_value(p),
            PolicyDocument::Kubernetes(p) => serde_json::to_value(p),
        }
        .unwrap_or(serde_json::Value::Null)
    }

    /// The document's rules in normal form.
    pub fn rules(&self) -> Result<Vec<Rule>, PolicyError> {
        match self {
            PolicyDocument::Cilium(p) => p.rules(),
            PolicyDocument::Kubernetes(p) => p.rules(),
        }
    }
}

/// Parses YAML (one or more `---`-separated documents) or JSON. Every document is parsed
/// and checked before anything is returned: one bad document rejects the whole input,
/// with the document's index and the path of the offending field. JSON is read as JSON
/// (YAML's reader refuses some JSON: escaped surrogate pairs, DEL and C1 characters, keys
/// over 1024 characters).
pub fn parse(text: &str) -> Result<Vec<(PolicyDocument, Vec<Rule>)>, PolicyError> {
    if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
        return Ok(parse_value(value)?.into_iter().collect());
    }
    let mut out = Vec::new();
    for (index, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let value = serde_norway::Value::deserialize(doc).map_err(|e| PolicyError::Parse {
            document: index,
            path: String::new(),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("")
            .to_owned();
        out.push(document_of(index, &kind, value)?);
    }
    Ok(out)
}

/// One policy document already read as JSON (`None` for `null`), checked as [`parse`]
/// checks each.
pub fn parse_value(
    value: serde_json::Value,
) -> Result<Option<(PolicyDocument, Vec<Rule>)>, PolicyError> {
    if value.is_null() {
        return Ok(None);
    }
    let kind = value
        .get("kind")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("")
        .to_owned();
    document_of(0, &kind, value).map(Some)
}

/// Document `index` of kind `kind` from `value`, and its rules.
fn document_of<'de, D>(
    index: usize,
    kind: &str,
    value: D,
) -> Result<(PolicyDocument, Vec<Rule>), PolicyError>
where
    D: serde::Deserializer<'de>,
{
    let at = |e: serde_path_to_error::Error<D::Error>| PolicyError::Parse {
        document: index,
        path: e.path().to_string(),
        message: e.inner().to_string(),
    };
    let parsed = match kind {
        "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy" => {
            PolicyDocument::Cilium(serde_path_to_error::deserialize(value).map_err(at)?)
        }
        "NetworkPolicy" => {
            PolicyDocument::Kubernetes(serde_path_to_error::deserialize(value).map_err(at)?)
        }
        other => {
            return Err(PolicyError::Parse {
                document: index,
                path: "kind".into(),
                message: format!("unsupported kind {other:?}"),
            });
        }
    };
    let rules = parsed.rules().map_err(|e| match e {
        PolicyError::Invalid { path, reason } => PolicyError::InvalidDocument {
            document: index,
            path,
            reason,
        },
        other => other,
    })?;
    Ok((parsed, rules))
}
