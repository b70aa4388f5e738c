// SPDX-License-Identifier: Apache-2.0

//! The incremental policy engine: endpoints, rules and identities come and go, and each
//! change returns only the policy entries it changed, per endpoint.
//!
//! Every entry keeps a count of the (rule, peer) pairs that allow it and of those that deny
//! it; its verdict is deny while any deny remains, else allow while any allow remains.
//! A change touches only the endpoints selected by the rules involved, and for an identity
//! change only the (peer, identity) pairs whose selection actually changed.

use std::collections::{BTreeMap, BTreeSet};

use cilium_core::{LabelSet, NumericIdentity};
use serde::Serialize;

use crate::cache::SelectorCache;
use crate::engine::{EndpointPolicy, EnforcementMode, PolicyKey, Verdict, ranges_of, verdict_of};
use crate::rules::{Direction, NamedPorts, Peer, Rule};

/// An endpoint's id (Cilium's endpoint id, the policy map's name suffix).
pub type EndpointId = u16;

/// One changed entry of one endpoint's policy (`verdict` None: the entry is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PolicyChange {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// The entry.
    pub key: PolicyKey,
    /// Its new verdict, or None when removed.
    pub verdict: Option<Verdict>,
}

/// A changed enforcement state of one endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct EnforcementChange {
    /// The endpoint.
    pub endpoint: EndpointId,
    /// Whether ingress is now enforced.
    pub ingress: bool,
    /// Whether egress is now enforced.
    pub egress: bool,
}

/// What one operation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    /// Changed entries, sorted by endpoint and key.
    pub entries: Vec<PolicyChange>,
    /// Changed enforcement states.
    pub enforcement: Vec<EnforcementChange>,
}

impl PolicyDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.enforcement.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    allow: u32,
    deny: u32,
}

impl Counts {
    fn verdict(self) -> Option<Verdict> {
        if self.deny > 0 {
            Some(Verdict::Deny)
        } else if self.allow > 0 {
            Some(Verdict::Allow)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone)]
struct EndpointState {
    labels: LabelSet,
    rules: BTreeSet<u64>,
    ingress_rules: usize,
    egress_rules: usize,
    counts: BTreeMap<PolicyKey, Counts>,
    /// Its own named ports (its ingress rules' named ports resolve against them).
    ports: NamedPorts,
}

/// Values before an operation, for the entries and endpoints it touched.
#[derive(Default)]
struct Before {
    entries: BTreeMap<(EndpointId, PolicyKey), Option<Verdict>>,
    enforcement: BTreeMap<EndpointId, (bool, bool)>,
}

/// Rules, identities and endpoints, with each endpoint's policy kept up to date.
///
/// ```
/// use cilium_core::{LabelSet, NumericIdentity};
/// use cilium_policy::{parse, EnforcementMode, PolicyEngine, Verdict};
///
/// let mut engine = PolicyEngine::new(EnforcementMode::Default);
/// let web = LabelSet::parse_list(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]).unwrap();
/// engine.upsert_endpoint(7, web);
/// let rules = parse("apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n\
///     metadata: {name: p, namespace: default}\nspec:\n  endpointSelector: {matchLabels: {app: web}}\n\
///     \x20 ingress:\n  - fromEndpoints: [{matchLabels: {app: curl}}]\n").unwrap();
/// let diff = engine.add_rules(rules.into_iter().flat_map(|(_, r)| r));
/// assert!(diff.entries.is_empty()); // no curl identity yet
/// assert!(diff.enforcement[0].ingress); // but ingress is now enforced
/// let curl = LabelSet::parse_list(&["k8s:app=curl", "k8s:io.kubernetes.pod.namespace=default"]).unwrap();
/// let diff = engine.upsert_identity(NumericIdentity::new(300), curl);
/// assert_eq!(diff.entries.len(), 1);
/// assert_eq!(diff.entries[0].verdict, Some(Verdict::Allow));
/// ```
#[derive(Debug, Clone, Default)]
pub struct PolicyEngine {
    mode: EnforcementMode,
    cache: SelectorCache,
    rules: BTreeMap<u64, Rule>,
    next_rule: u64,
    /// Rules using each peer (once per use).
    peer_rules: BTreeMap<Peer, Vec<u64>>,
    /// Endpoints each rule selects.
    rule_endpoints: BTreeMap<u64, BTreeSet<EndpointId>>,
    endpoints: BTreeMap<EndpointId, EndpointState>,
    /// Named ports of every pod known, by owner (a local endpoint, or a key the caller
    /// gives a pod elsewhere).
    port_owners: BTreeMap<PortOwner, NamedPorts>,
    /// Their union, counted: egress rules' named ports resolve against it.
    cluster_ports: BTreeMap<String, BTreeMap<(u8, u16), u32>>,
}

/// Who a set of named ports belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum PortOwner {
    Endpoint(EndpointId),
    Peer(String),
}

impl PolicyEngine {
    /// An empty engine.
    pub fn new(mode: EnforcementMode) -> Self {
        PolicyEngine {
            mode,
            ..Self::default()
        }
    }

    /// The enforcement mode.
    pub fn mode(&self) -> EnforcementMode {
        self.mode
    }

    /// The selector cache.
    pub fn selector_cache(&self) -> &SelectorCache {
        &self.cache
    }

    /// How many rules are loaded.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The endpoints, in id order.
    pub fn endpoints(&self) -> impl Iterator<Item = EndpointId> + '_ {
        self.endpoints.keys().copied()
    }

    /// The current policy of an endpoint.
    pub fn policy(&self, endpoint: EndpointId) -> Option<EndpointPolicy> {
        let ep = self.endpoints.get(&endpoint)?;
        let (ingress_enforced, egress_enforced) = self.enforced(ep);
        Some(EndpointPolicy {
            ingress_enforced,
            egress_enforced,
            entries: ep
                .counts
                .iter()
                .filter_map(|(k, c)| c.verdict().map(|v| (*k, v)))
                .collect(),
        })
    }

    fn enforced(&self, ep: &EndpointState) -> (bool, bool) {
        match self.mode {
            EnforcementMode::Always => (true, true),
            EnforcementMode::Never => (false, false),
            EnforcementMode::Default => (ep.ingress_rules > 0, ep.egress_rules > 0),
        }
    }

    /// Adds (or relabels) an endpoint.
    pub fn upsert_endpoint(&mut self, endpoint: EndpointId, labels: LabelSet) -> PolicyDiff {
        let mut before = Before::default();
        let selected: Vec<u64> = if self.mode == EnforcementMode::Never {
            Vec::new()
        } else {
            self.rules
                .iter()
                .filter(|(_, r)| r.subject.matches(&labels))
                .map(|(id, _)| *id)
                .collect()
        };
        if let Some(ep) = self.endpoints.get(&endpoint) {
            if ep.labels == labels {
                return PolicyDiff::default();
            }
            let rules: Vec<u64> = ep.rules.iter().copied().collect();
            for r in rules {
                self.detach(endpoint, r, &mut before);
            }
        } else {
            before.enforcement.insert(endpoint, (false, false));
        }
        let ep = self
            .endpoints
            .entry(endpoint)
            .or_insert_with(|| EndpointState {
                labels: LabelSet::new(),
                rules: BTreeSet::new(),
                ingress_rules: 0,
                egress_rules: 0,
                counts: BTreeMap::new(),
                ports: NamedPorts::new(),
            });
        ep.labels = labels;
        for r in selected {
            self.attach(endpoint, r, &mut before);
        }
        self.finish(before)
    }

    /// Removes an endpoint; the diff removes all its entries.
    pub fn remove_endpoint(&mut self, endpoint: EndpointId) -> PolicyDiff {
        let mut before = Before::default();
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return PolicyDiff::default();
        };
        let rules: Vec<u64> = ep.rules.iter().copied().collect();
        for r in rules {
            self.detach(endpoint, r, &mut before);
        }
        self.endpoints.remove(&endpoint);
        let mut diff = self.finish(before);
        merge_diff(
            &mut diff,
            self.set_owner_ports(PortOwner::Endpoint(endpoint), NamedPorts::new()),
        );
        diff.enforcement.retain(|e| e.endpoint != endpoint);
        diff
    }

    /// Adds rules; returns the entries they changed.
    pub fn add_rules(&mut self, rules: impl IntoIterator<Item = Rule>) -> PolicyDiff {
        let mut before = Before::default();
        for rule in rules {
            let id = self.next_rule;
            self.next_rule += 1;
            for peer in &rule.peers {
                self.cache.add_user(peer);
                self.peer_rules.entry(peer.clone()).or_default().push(id);
            }
            let selected: Vec<EndpointId> = if self.mode == EnforcementMode::Never {
                Vec::new()
            } else {
                self.endpoints
                    .iter()
                    .filter(|(_, ep)| rule.subject.matches(&ep.labels))
                    .map(|(e, _)| *e)
                    .collect()
            };
            self.rules.insert(id, rule);
            self.rule_endpoints.insert(id, BTreeSet::new());
            for ep in selected {
                self.attach(ep, id, &mut before);
            }
        }
        self.finish(before)
    }

    /// Removes the rules of one origin (`<kind>/<namespace>/<name>`).
    pub fn remove_rules(&mut self, origin: &str) -> PolicyDiff {
        let mut before = Before::default();
        let ids: Vec<u64> = self
            .rules
            .iter()
            .filter(|(_, r)| r.origin == origin)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let eps: Vec<EndpointId> = self
                .rule_endpoints
                .get(&id)
                .map(|s| s.iter().copied().collect())
                .unwrap_or_default();
            for ep in eps {
                self.detach(ep, id, &mut before);
            }
            self.rule_endpoints.remove(&id);
            if let Some(rule) = self.rules.remove(&id) {
                for peer in &rule.peers {
                    self.cache.remove_user(peer);
                    if let Some(users) = self.peer_rules.get_mut(peer) {
                        if let Some(pos) = users.iter().position(|u| *u == id) {
                            users.swap_remove(pos);
                        }
                        if users.is_empty() {
                            self.peer_rules.remove(peer);
                        }
                    }
                }
            }
        }
        self.finish(before)
    }

    /// Sets a local endpoint's named ports (its pod's container ports, name -> protocol
    /// and number): named ports of the rules that apply to it resolve against them for
    /// ingress, and they join the cluster's named ports, which egress rules' named ports
    /// resolve against (as Cilium does, by name across the cluster). An unknown endpoint
    /// is left alone. Returns the entries that changed.
    pub fn set_endpoint_ports(&mut self, endpoint: EndpointId, ports: NamedPorts) -> PolicyDiff {
        let Some(ep) = self.endpoints.get(&endpoint) else {
            return PolicyDiff::default();
        };
        if ep.ports == ports {
            return PolicyDiff::default();
        }
        let pairs: Vec<(EndpointId, u64)> = ep
            .rules
            .iter()
            .filter(|r| {
                self.rules.get(r).is_some_and(|rule| {
                    rule.direction == Direction::Ingress && !rule.named_ports.is_empty()
                })
            })
            .map(|r| (endpoint, *r))
            .collect();
        let mut diff = self.remap(&pairs, |engine| {
            if let Some(ep) = engine.endpoints.get_mut(&endpoint) {
                ep.ports = ports.clone();
            }
        });
        merge_diff(
            &mut diff,
            self.set_owner_ports(PortOwner::Endpoint(endpoint), ports),
        );
        diff
    }

    /// Sets the named ports of a pod on another node (`owner`: the caller's key for it,
    /// such as `namespace/pod`); empty forgets them. Returns the entries that changed.
    pub fn set_peer_ports(&mut self, owner: &str, ports: NamedPorts) -> PolicyDiff {
        self.set_owner_ports(PortOwner::Peer(owner.to_owned()), ports)
    }

    /// The (protocol, number) pairs `name` has on any pod known.
    fn cluster_port(&self, name: &str) -> Vec<(u8, u16)> {
        self.cluster_ports
            .get(name)
            .map(|m| m.keys().copied().collect())
            .unwrap_or_default()
    }

    fn set_owner_ports(&mut self, owner: PortOwner, ports: NamedPorts) -> PolicyDiff {
        let old = self.port_owners.get(&owner).cloned().unwrap_or_default();
        if old == ports {
            return PolicyDiff::default();
        }
        // Every egress rule naming one of these ports, on every endpoint it applies to.
        let mut pairs = Vec::new();
        {
            let names: BTreeSet<&String> = old.keys().chain(ports.keys()).collect();
            for (id, rule) in &self.rules {
                if rule.direction == Direction::Egress
                    && rule.named_ports.iter().any(|n| names.contains(&n.name))
                {
                    for ep in self.rule_endpoints.get(id).into_iter().flatten() {
                        pairs.push((*ep, *id));
                    }
                }
            }
        }
        self.remap(&pairs, move |engine| {
            for (name, set) in &old {
                for pp in set {
                    if let Some(counts) = engine.cluster_ports.get_mut(name) {
                        if let Some(n) = counts.get_mut(pp) {
                            *n -= 1;
                            if *n == 0 {
                                counts.remove(pp);
                            }
                        }
                        if counts.is_empty() {
                            engine.cluster_ports.remove(name);
                        }
                    }
                }
            }
            for (name, set) in &ports {
                for pp in set {
                    *engine
                        .cluster_ports
                        .entry(name.clone())
                        .or_default()
                        .entry(*pp)
                        .or_default() += 1;
                }
            }
            if ports.is_empty() {
                engine.port_owners.remove(&owner);
            } else {
                engine.port_owners.insert(owner, ports);
            }
        })
    }

    /// Takes the rules of `pairs` off their endpoints, applies `change` (to what their
    /// named ports resolve against), and puts them back: the entries are counted under
    /// the mapping they were made with.
    fn remap(&mut self, pairs: &[(EndpointId, u64)], change: impl FnOnce(&mut Self)) -> PolicyDiff {
        let mut before = Before::default();
        for (ep, rule) in pairs {
            self.detach(*ep, *rule, &mut before);
        }
        change(self);
        for (ep, rule) in pairs {
            self.attach(*ep, *rule, &mut before);
        }
        self.finish(before)
    }

    /// Records (or relabels) an identity; returns the entries that changed.
    pub fn upsert_identity(&mut self, id: NumericIdentity, labels: LabelSet) -> PolicyDiff {
        let changes = self.cache.upsert_identity(id, labels);
        self.apply_selection_changes(changes)
    }

    /// Forgets an identity; returns the entries that changed.
    pub fn remove_identity(&mut self, id: NumericIdentity) -> PolicyDiff {
        let changes = self.cache.remove_identity(id);
        self.apply_selection_changes(changes)
    }

    fn apply_selection_changes(&mut self, changes: Vec<crate::SelectionChange>) -> PolicyDiff {
        let mut before = Before::default();
        for change in changes {
            let users = self
                .peer_rules
                .get(&change.peer)
                .cloned()
                .unwrap_or_default();
            for rule_id in users {
                let eps: Vec<EndpointId> = self
                    .rule_endpoints
                    .get(&rule_id)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default();
                for ep in eps {
                    self.contribute(ep, rule_id, change.id, change.added, &mut before);
                }
            }
        }
        self.finish(before)
    }

    /// The rule's entries for one peer identity, added to or taken from an endpoint.
    fn contribute(
        &mut self,
        endpoint: EndpointId,
        rule_id: u64,
        peer: NumericIdentity,
        add: bool,
        before: &mut Before,
    ) {
        let (Some(rule), Some(ep)) = (self.rules.get(&rule_id), self.endpoints.get(&endpoint))
        else {
            return;
        };
        let ranges = match rule.direction {
            Direction::Ingress => ranges_of(rule, |name| {
                ep.ports
                    .get(name)
                    .map(|s| s.iter().copied().collect())
                    .unwrap_or_default()
            }),
            Direction::Egress => ranges_of(rule, |name| self.cluster_port(name)),
        };
        let deny = verdict_of(rule) == Verdict::Deny;
        let Some(ep) = self.endpoints.get_mut(&endpoint) else {
            return;
        };
        for ports in ranges {
            let key = PolicyKey {
                direction: rule.direction,
                peer,
                ports,
            };
            let counts = ep.counts.entry(key).or_default();
            before
                .entries
                .entry((endpoint, key))
                .or_insert(counts.verdict());
            let n = if deny {
                &mut counts.deny
            } else {
                &mut counts.allow
            };
            if add {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
            }
            if counts.verdict().is_none() {
                ep.counts.remove(&key);
            }
        }
    }

    fn note_enforcement(&self, endpoint: EndpointId, before: &mut Before) {
        if let Some(ep) = self.endpoints.get(&endpoint) {
            let now = self.enforced(ep);
            before.enforcement.entry(endpoint).or_insert(now);
        }
    }

    /// The identities a rule's peers select (once per peer that selects them).
    fn selected_peers(&self, rule: &Rule) -> Vec<NumericIdentity> {
        rule.peers
            .iter()
            .filter_map(|p| self.cache.selection(p))
            .flat_map(|s| s.iter().copied())
            .collect()
    }

    fn attach(&mut self, endpoint: EndpointId, rule_id: u64, before: &mut Before) {
        self.note_enforcement(endpoint, before);
        let Some(rule) = self.rules.get(&rule_id) else {
            return;
        };
        let direction = rule.direction;
        let peers = self.selected_peers(rule);
        if let Some(ep) = self.endpoints.get_mut(&endpoint) {
            if !ep.rules.insert(rule_id) {
                return;
            }
            match direction {
                Direction::Ingress => ep.ingress_rules += 1,
                Direction::Egress => ep.egress_rules += 1,
            }
        }
        self.rule_endpoints
            .entry(rule_id)
            .or_default()
            .insert(endpoint);
        for peer in peers {
            self.contribute(endpoint, rule_id, peer, true, before);
        }
    }

    fn detach(&mut self, endpoint: EndpointId, rule_id: u64, before: &mut Before) {
        self.note_enforcement(endpoint, before);
        let Some(rule) = self.rules.get(&rule_id) else {
            return;
        };
        let direction = rule.direction;
        let peers = self.selected_peers(rule);
        for peer in peers {
            self.contribute(endpoint, rule_id, peer, false, before);
        }
        if let Some(ep) = self.endpoints.get_mut(&endpoint)
            && ep.rules.remove(&rule_id)
        {
            match direction {
                Direction::Ingress => ep.ingress_rules -= 1,
                Direction::Egress => ep.egress_rules -= 1,
            }
        }
        if let Some(eps) = self.rule_endpoints.get_mut(&rule_id) {
            eps.remove(&endpoint);
        }
    }

    fn finish(&self, before: Before) -> PolicyDiff {
        let mut diff = PolicyDiff::default();
        for ((endpoint, key), was) in before.entries {
            let now = self
                .endpoints
                .get(&endpoint)
                .and_then(|ep| ep.counts.get(&key))
                .and_then(|c| c.verdict());
            if now != was {
                diff.entries.push(PolicyChange {
                    endpoint,
                    key,
                    verdict: now,
                });
            }
        }
        for (endpoint, was) in before.enforcement {
            let Some(ep) = self.endpoints.get(&endpoint) else {
                continue;
            };
            let (ingress, egress) = self.enforced(ep);
            if (ingress, egress) != was {
                diff.enforcement.push(EnforcementChange {
                    endpoint,
                    ingress,
                    egress,
                });
            }
        }
        diff
    }
}

fn merge_diff(into: &mut PolicyDiff, more: PolicyDiff) {
    into.entries.extend(more.entries);
    into.enforcement.extend(more.enforcement);
}
