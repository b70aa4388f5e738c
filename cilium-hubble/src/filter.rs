// SPDX-License-Identifier: Apache-2.0

//! Hubble's flow filters (`flow.FlowFilter`): within one filter every field that is set
//! must match (each field matching any of its values); a flow passes a request when it
//! matches any filter of the allowlist (or the allowlist is empty) and none of the
//! denylist.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::flow::{Endpoint, Flow, Service, TrafficDirection, Verdict};

/// One filter (the fields of `flow.FlowFilter` this implementation knows).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "snake_case")]
pub struct FlowFilter {
    /// Source addresses.
    pub source_ip: Vec<Ipv4Addr>,
    /// Destination addresses.
    pub destination_ip: Vec<Ipv4Addr>,
    /// Source pods: `namespace/name-prefix`, or a name prefix in any namespace.
    pub source_pod: Vec<String>,
    /// Destination pods.
    pub destination_pod: Vec<String>,
    /// Source Services: `namespace/name-prefix`, or a name prefix in any namespace.
    pub source_service: Vec<String>,
    /// Destination Services.
    pub destination_service: Vec<String>,
    /// Source labels (`key=value` or `source:key=value`; a key alone: the key is set).
    pub source_label: Vec<String>,
    /// Destination labels.
    pub destination_label: Vec<String>,
    /// Source identities.
    pub source_identity: Vec<u32>,
    /// Destination identities.
    pub destination_identity: Vec<u32>,
    /// Verdicts.
    pub verdict: Vec<Verdict>,
    /// Event types (1 drop, 4 trace, 5 policy verdict).
    pub event_type: Vec<u8>,
    /// Protocols: `tcp`, `udp`, `icmp` (`icmpv4`).
    pub protocol: Vec<String>,
    /// Source ports.
    pub source_port: Vec<u16>,
    /// Destination ports.
    pub destination_port: Vec<u16>,
    /// Replies only (true) or non-replies only (false).
    pub reply: Vec<bool>,
    /// Nodes.
    pub node_name: Vec<String>,
    /// Traffic directions.
    pub traffic_direction: Vec<TrafficDirection>,
    /// Drop reasons by name (`POLICY_DENIED`).
    pub drop_reason_desc: Vec<String>,
}

fn pod_matches(ep: &Endpoint, wanted: &str) -> bool {
    if ep.pod_name.is_empty() {
        return false;
    }
    match wanted.split_once('/') {
        Some((ns, prefix)) => ep.namespace == ns && ep.pod_name.starts_with(prefix),
        None => ep.pod_name.starts_with(wanted),
    }
}

fn service_matches(svc: Option<&Service>, wanted: &str) -> bool {
    let Some(svc) = svc else { return false };
    match wanted.split_once('/') {
        Some((ns, prefix)) => svc.namespace == ns && svc.name.starts_with(prefix),
        None => svc.name.starts_with(wanted),
    }
}

fn label_matches(ep: &Endpoint, wanted: &str) -> bool {
    let strip = |l: &str| {
        l.split_once(':')
            .map_or(l.to_owned(), |(_, rest)| rest.to_owned())
    };
    let (key, value) = match wanted.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (wanted, None),
    };
    ep.labels.iter().any(|l| {
        let (has_source, l_plain) = (wanted.contains(':'), strip(l));
        let candidate = if has_source { l.clone() } else { l_plain };
        let (lk, lv) = candidate
            .split_once('=')
            .map_or((candidate.as_str(), ""), |(k, v)| (k, v));
        lk == key && value.is_none_or(|v| v == lv)
    })
}

fn any<T>(values: &[T], f: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(f)
}

impl FlowFilter {
    /// Whether the flow matches every field this filter sets.
    pub fn matches(&self, flow: &Flow) -> bool {
        let ports = flow.l4.as_ref().and_then(|l| l.ports());
        let protocol = flow.l4.as_ref().map(|l| l.protocol());
        any(&self.source_ip, |ip| Some(*ip) == flow.source_ip())
            && any(&self.destination_ip, |ip| {
                Some(*ip) == flow.destination_ip()
            })
            && any(&self.source_pod, |p| pod_matches(&flow.source, p))
            && any(&self.destination_pod, |p| pod_matches(&flow.destination, p))
            && any(&self.source_service, |s| {
                service_matches(flow.source_service.as_ref(), s)
            })
            && any(&self.destination_service, |s| {
                service_matches(flow.destination_service.as_ref(), s)
            })
            && any(&self.source_label, |l| label_matches(&flow.source, l))
            && any(&self.destination_label, |l| {
                label_matches(&flow.destination, l)
            })
            && any(&self.source_identity, |i| *i == flow.source.identity)
            && any(&self.destination_identity, |i| {
                *i == flow.destination.identity
            })
            && any(&self.verdict, |v| *v == flow.verdict)
            && any(&self.event_type, |t| *t == flow.event_type.kind)
            && any(&self.protocol, |p| {
                let p = p.to_ascii_lowercase();
                Some(if p == "icmpv4" { "icmp" } else { p.as_str() }) == protocol
            })
            && any(&self.source_port, |p| ports.is_some_and(|(s, _)| s == *p))
            && any(&self.destination_port, |p| {
                ports.is_some_and(|(_, d)| d == *p)
            })
            && any(&self.reply, |r| *r == flow.is_reply)
            && any(&self.node_name, |n| *n == flow.node_name)
            && any(&self.traffic_direction, |d| *d == flow.traffic_direction)
            && any(&self.drop_reason_desc, |d| {
                flow.drop_reason_desc.as_deref() == Some(d.as_str())
            })
    }
}

/// Whether a flow passes a request's allowlist and denylist.
pub fn passes(flow: &Flow, allow: &[FlowFilter], deny: &[FlowFilter]) -> bool {
    (allow.is_empty() || allow.iter().any(|f| f.matches(flow)))
        && !deny.iter().any(|f| f.matches(flow))
}
