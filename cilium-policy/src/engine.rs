// SPDX-License-Identifier: Apache-2.0

//! Resolving rules against identities: each endpoint's policy as (peer identity, direction,
//! protocol, port range) -> allow or deny.

use std::collections::BTreeMap;

use cilium_core::{LabelSet, NumericIdentity};
use serde::Serialize;

use crate::rules::{Direction, Entity, Peer, PortRange, Rule};

/// When policy is enforced on an endpoint (`enable-policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub enum EnforcementMode {
    /// A direction is enforced once a rule with that direction selects the endpoint.
    #[default]
    Default,
    /// Always enforced: no rule means nothing is allowed.
    Always,
    /// Never enforced.
    Never,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Verdict {
    /// Allowed.
    Allow,
    /// Denied (wins over any allow).
    Deny,
}

/// A policy map entry in the making: peer identity (0: any), direction, ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct PolicyKey {
    /// Direction.
    pub direction: Direction,
    /// Peer identity (0 = any peer).
    pub peer: NumericIdentity,
    /// Protocol and port range.
    pub ports: PortRange,
}

/// One endpoint's resolved policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    /// Whether ingress is enforced.
    pub ingress_enforced: bool,
    /// Whether egress is enforced.
    pub egress_enforced: bool,
    /// The entries.
    pub entries: BTreeMap<PolicyKey, Verdict>,
}

impl EndpointPolicy {
    /// Whether traffic with `peer` in `direction` on `proto`/`port` is allowed: not enforced,
    /// or no matching deny and some matching allow.
    pub fn allows(
        &self,
        direction: Direction,
        peer: NumericIdentity,
        proto: u8,
        port: u16,
    ) -> bool {
        let enforced = match direction {
            Direction::Ingress => self.ingress_enforced,
            Direction::Egress => self.egress_enforced,
        };
        if !enforced {
            return true;
        }
        let mut allowed = false;
        for (k, v) in &self.entries {
            if k.direction != direction
                || (k.peer != peer && k.peer != NumericIdentity::UNKNOWN)
                || !k.ports.contains(proto, port)
            {
                continue;
            }
            match v {
                Verdict::Deny => return false,
                Verdict::Allow => allowed = true,
            }
        }
        allowed
    }
}

/// Rules and the identities they are resolved against.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    mode: EnforcementMode,
    rules: Vec<Rule>,
    identities: BTreeMap<NumericIdentity, LabelSet>,
}

fn is_world(id: NumericIdentity) -> bool {
    id == NumericIdentity::WORLD
        || id == NumericIdentity::WORLD_IPV4
        || id == NumericIdentity::WORLD_IPV6
}

/// The identities a peer stands for whatever identities exist: 0 for `all`, the world
/// identities for `world` and `0.0.0.0/0`, a reserved entity's own id.
pub(crate) fn static_identities(peer: &Peer) -> Vec<NumericIdentity> {
    const WORLDS: [NumericIdentity; 3] = [
        NumericIdentity::WORLD,
        NumericIdentity::WORLD_IPV4,
        NumericIdentity::WORLD_IPV6,
    ];
    match peer {
        Peer::Entity(Entity::All) => vec![NumericIdentity::UNKNOWN],
        Peer::Entity(Entity::Reserved(id)) if is_world(*id) => WORLDS.to_vec(),
        Peer::Entity(Entity::Reserved(id)) => vec![*id],
        Peer::Cidr { net, except } if net.prefix_len() == 0 && except.is_empty() => WORLDS.to_vec(),
        _ => Vec::new(),
    }
}

/// Whether a peer selects the identity `id` with these labels (beyond its static ids).
pub(crate) fn selects(peer: &Peer, id: NumericIdentity, labels: &LabelSet) -> bool {
    match peer {
        Peer::Entity(Entity::Cluster) => !is_world(id) && !id.is_local(),
        Peer::Entity(_) => false,
        Peer::Endpoints(sel) => sel.matches(labels),
        Peer::Cidr { net, except } => labels.iter().any(|l| {
            l.source() == "cidr"
                && l.key()
                    .parse::<ipnet::IpNet>()
                    .is_ok_and(|c| net.contains(&c) && !except.iter().any(|e| e.contains(&c)))
        }),
    }
}

/// The verdict of a rule.
pub(crate) fn verdict_of(rule: &Rule) -> Verdict {
    if rule.deny {
        Verdict::Deny
    } else {
        Verdict::Allow
    }
}

/// The port ranges of a rule's entries (ANY when it names no port at all): its numbered
/// ports, and its named ports as `named` gives each name's (protocol, number) pairs. A
/// name that stands for nothing gives no entry.
pub(crate) fn ranges_of(rule: &Rule, named: impl Fn(&str) -> Vec<(u8, u16)>) -> Vec<PortRange> {
    if rule.all_ports() {
        return vec![PortRange::ANY];
    }
    let mut out = rule.ports.clone();
    for np in &rule.named_ports {
        for (proto, port) in named(&np.name) {
            if np.proto == 0 || np.proto == proto {
                out.push(PortRange {
                    proto,
                    lo: port,
                    hi: port,
                });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

impl Repository {
    /// An empty repository.
    pub fn new(mode: EnforcementMode) -> Self {
        Repository {
            mode,
            ..Self::default()
        }
    }

    /// Adds rules.
    pub fn add(&mut self, rules: impl IntoIterator<Item = Rule>) {
        self.rules.extend(rules);
    }

    /// Removes the rules of one origin (`<kind>/<namespace>/<name>`); returns how many.
    pub fn remove(&mut self, origin: &str) -> usize {
        let before = self.rules.len();
        self.rules.retain(|r| r.origin != origin);
        before - self.rules.len()
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Records (or updates) an identity and its labels.
    pub fn upsert_identity(&mut self, id: NumericIdentity, labels: LabelSet) {
        self.identities.insert(id, labels);
    }

    /// Forgets an identity.
    pub fn remove_identity(&mut self, id: NumericIdentity) {
        self.identities.remove(&id);
    }

    /// The identities a peer stands for (0 for every peer).
    pub fn peer_identities(&self, peer: &Peer) -> Vec<NumericIdentity> {
        let mut ids: std::collections::BTreeSet<NumericIdentity> =
            static_identities(peer).into_iter().collect();
        ids.extend(
            self.identities
                .iter()
                .filter(|(id, labels)| selects(peer, **id, labels))
                .map(|(id, _)| *id),
        );
        ids.into_iter().collect()
    }

    /// The policy of an endpoint with these identity labels.
    pub fn resolve(&self, labels: &LabelSet) -> EndpointPolicy {
        let mut p = EndpointPolicy {
            ingress_enforced: self.mode == EnforcementMode::Always,
            egress_enforced: self.mode == EnforcementMode::Always,
            entries: BTreeMap::new(),
        };
        if self.mode == EnforcementMode::Never {
            return p;
        }
        for rule in self.rules.iter().filter(|r| r.subject.matches(labels)) {
            match rule.direction {
                Direction::Ingress => p.ingress_enforced = true,
                Direction::Egress => p.egress_enforced = true,
            }
            // Named ports need the endpoints' container ports, which only the
            // PolicyEngine knows: here they stand for nothing.
            let ports = ranges_of(rule, |_| Vec::new());
            for peer in &rule.peers {
                for id in self.peer_identities(peer) {
                    for range in &ports {
                        let key = PolicyKey {
                            direction: rule.direction,
                            peer: id,
                            ports: *range,
                        };
                        let v = verdict_of(rule);
                        let slot = p.entries.entry(key).or_insert(v);
                        if v == Verdict::Deny {
                            *slot = Verdict::Deny;
                        }
                    }
                }
            }
        }
        p
    }

    /// Whether `src` may reach `dst` on `proto`/`port`: the source's egress policy and the
    /// destination's ingress policy both allow it. Identities must be known.
    pub fn allowed(
        &self,
        src: NumericIdentity,
        dst: NumericIdentity,
        proto: u8,
        port: u16,
    ) -> bool {
        let empty = LabelSet::new();
        let src_labels = self.identities.get(&src).unwrap_or(&empty);
        let dst_labels = self.identities.get(&dst).unwrap_or(&empty);
        self.resolve(src_labels)
            .allows(Direction::Egress, dst, proto, port)
            && self
                .resolve(dst_labels)
                .allows(Direction::Ingress, src, proto, port)
    }
}
