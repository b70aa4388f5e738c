// SPDX-License-Identifier: Apache-2.0

//! The policy documents as users write them: `cilium.io/v2` CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy, and `networking.k8s.io/v1` NetworkPolicy. Every struct
//! rejects unknown fields, so a typo is an error with its path, never a silently ignored
//! rule.

use serde::{Deserialize, Serialize};

use crate::selector::Selector;

/// Object metadata (the fields policies use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (namespaced kinds).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// A port, as a number or a string: a number (`"80"`) or a container port's name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PortValue {
    /// A number.
    Number(u32),
    /// A string: a number or a port name.
    Text(String),
}

/// `toPorts[].ports[]` of a Cilium rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumPort {
    /// The port (`"0"` or absent: any).
    #[serde(default)]
    pub port: Option<PortValue>,
    /// The last port of a range.
    #[serde(default)]
    pub end_port: Option<u32>,
    /// TCP, UDP, SCTP or ANY (default ANY).
    #[serde(default)]
    pub protocol: Option<String>,
}

/// One `toPorts` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortRule {
    /// The ports.
    #[serde(default)]
    pub ports: Vec<CiliumPort>,
}

/// A CIDR with exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CidrRule {
    /// The CIDR.
    pub cidr: String,
    /// CIDRs inside it that do not match.
    #[serde(default)]
    pub except: Vec<String>,
}

/// An ingress (or ingressDeny) section of a Cilium rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumIngress {
    /// Peers selected by labels.
    #[serde(default)]
    pub from_endpoints: Option<Vec<Selector>>,
    /// Peers by entity (host, world, cluster, all, ...).
    #[serde(default)]
    pub from_entities: Option<Vec<String>>,
    /// Peers by CIDR.
    #[serde(default, rename = "fromCIDR")]
    pub from_cidr: Option<Vec<String>>,
    /// Peers by CIDR with exceptions.
    #[serde(default, rename = "fromCIDRSet")]
    pub from_cidr_set: Option<Vec<CidrRule>>,
    /// L4 restrictions.
    #[serde(default)]
    pub to_ports: Option<Vec<PortRule>>,
}

/// An egress (or egressDeny) section of a Cilium rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumEgress {
    /// Peers selected by labels.
    #[serde(default)]
    pub to_endpoints: Option<Vec<Selector>>,
    /// Peers by entity.
    #[serde(default)]
    pub to_entities: Option<Vec<String>>,
    /// Peers by CIDR.
    #[serde(default, rename = "toCIDR")]
    pub to_cidr: Option<Vec<String>>,
    /// Peers by CIDR with exceptions.
    #[serde(default, rename = "toCIDRSet")]
    pub to_cidr_set: Option<Vec<CidrRule>>,
    /// L4 restrictions.
    #[serde(default)]
    pub to_ports: Option<Vec<PortRule>>,
}

/// One rule of a CiliumNetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumRule {
    /// The endpoints the rule applies to.
    #[serde(default)]
    pub endpoint_selector: Option<Selector>,
    /// Allowed ingress.
    #[serde(default)]
    pub ingress: Option<Vec<CiliumIngress>>,
    /// Denied ingress.
    #[serde(default)]
    pub ingress_deny: Option<Vec<CiliumIngress>>,
    /// Allowed egress.
    #[serde(default)]
    pub egress: Option<Vec<CiliumEgress>>,
    /// Denied egress.
    #[serde(default)]
    pub egress_deny: Option<Vec<CiliumEgress>>,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CiliumNetworkPolicy {
    /// `cilium.io/v2`.
    pub api_version: String,
    /// `CiliumNetworkPolicy` or `CiliumClusterwideNetworkPolicy`.
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// One rule.
    #[serde(default)]
    pub spec: Option<CiliumRule>,
    /// Several rules.
    #[serde(default)]
    pub specs: Option<Vec<CiliumRule>>,
}

/// `ipBlock` of a Kubernetes NetworkPolicy peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpBlock {
    /// The CIDR.
    pub cidr: String,
    /// CIDRs inside it that do not match.
    #[serde(default)]
    pub except: Vec<String>,
}

/// A peer of a Kubernetes NetworkPolicy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sPeer {
    /// Pods (in the policy's namespace unless a namespaceSelector is given).
    #[serde(default)]
    pub pod_selector: Option<Selector>,
    /// Namespaces.
    #[serde(default)]
    pub namespace_selector: Option<Selector>,
    /// Addresses.
    #[serde(default)]
    pub ip_block: Option<IpBlock>,
}

/// A port of a Kubernetes NetworkPolicy rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sPort {
    /// TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Option<String>,
    /// The port (absent: all ports).
    #[serde(default)]
    pub port: Option<PortValue>,
    /// The last port of a range.
    #[serde(default)]
    pub end_port: Option<u32>,
}

/// An ingress rule of a Kubernetes NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sIngress {
    /// Peers (absent or empty: everyone).
    #[serde(default)]
    pub from: Vec<K8sPeer>,
    /// Ports (absent or empty: all).
    #[serde(default)]
    pub ports: Vec<K8sPort>,
}

/// An egress rule of a Kubernetes NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sEgress {
    /// Peers (absent or empty: everyone).
    #[serde(default)]
    pub to: Vec<K8sPeer>,
    /// Ports (absent or empty: all).
    #[serde(default)]
    pub ports: Vec<K8sPort>,
}

/// The spec of a Kubernetes NetworkPolicy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sSpec {
    /// The pods it applies to (in its namespace).
    #[serde(default)]
    pub pod_selector: Selector,
    /// `Ingress`, `Egress` (default: Ingress, plus Egress when egress rules exist).
    #[serde(default)]
    pub policy_types: Option<Vec<String>>,
    /// Ingress rules.
    #[serde(default)]
    pub ingress: Option<Vec<K8sIngress>>,
    /// Egress rules.
    #[serde(default)]
    pub egress: Option<Vec<K8sEgress>>,
}

/// A Kubernetes NetworkPolicy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct K8sNetworkPolicy {
    /// `networking.k8s.io/v1`.
    pub api_version: String,
    /// `NetworkPolicy`.
    pub kind: String,
    /// Metadata.
    pub metadata: Metadata,
    /// The spec.
    #[serde(default)]
    pub spec: K8sSpec,
}
