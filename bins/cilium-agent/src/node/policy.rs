// SPDX-License-Identifier: Apache-2.0

//! Policy: the policy engine with the node's rules and the cluster's identities, policies
//! imported through the API, stored or written by other agents, the enforcement mode, and
//! the endpoints' policy maps (`cilium_policy_v2`).

use cilium_bpf::policy::PolicyWriter;
use cilium_core::cluster::{IpIdentityPair, NamedPort};
use cilium_core::config::PolicyEnforcement;
use cilium_core::kvstore::KvStore;
use cilium_core::{LabelSet, NumericIdentity};
use cilium_identity::IdentityBackend;
use cilium_policy::{
    EnforcementMode, NamedPorts, PolicyDiff, PolicyDocument, PolicyEngine, PolicyError, Rule,
};
use serde_json::Value;

use super::{ApiError, Node, POLICIES_PREFIX, internal};

/// Policy documents: one document as JSON, or YAML text of one or more. JSON is read as
/// JSON, not through YAML, whose reader refuses some JSON (escaped surrogate pairs, raw
/// DEL and C1 characters, keys over 1024 characters).
pub(crate) fn parse_documents(text: &str) -> Result<Vec<(PolicyDocument, Vec<Rule>)>, PolicyError> {
    match serde_json::from_str::<Value>(text) {
        Ok(value) => json_document(value),
        Err(_) => cilium_policy::parse(text),
    }
}

/// The store key of a policy origin (`<kind>/<namespace>/<name>`): a clusterwide policy's
/// empty namespace is `_` there (keys have no empty segments; `_` is no namespace name).
fn policy_key(origin: &str) -> String {
    let mut parts: Vec<&str> = origin.splitn(3, '/').collect();
    if parts.len() == 3 && parts[1].is_empty() {
        parts[1] = "_";
    }
    format!("{POLICIES_PREFIX}/{}", parts.join("/"))
}

/// The origin of a stored policy, from its key without the prefix ([`policy_key`]
/// reversed).
pub(crate) fn stored_origin(owner: &str) -> String {
    let mut parts: Vec<&str> = owner.splitn(3, '/').collect();
    if parts.len() == 3 && parts[1] == "_" {
        parts[1] = "";
    }
    parts.join("/")
}

/// Checks what the parser leaves: the origin is made of Kubernetes names (a DNS-1123
/// subdomain, and a DNS-1123 label for a namespace), and a NetworkPolicy's rules are valid
/// even where its policyTypes do not use them.
fn check_document(doc: &PolicyDocument) -> Result<(), ApiError> {
    let (name, namespace) = match doc {
        PolicyDocument::Cilium(p) => (&p.metadata.name, p.metadata.namespace.as_ref()),
        PolicyDocument::Kubernetes(p) => (&p.metadata.name, p.metadata.namespace.as_ref()),
        _ => return Ok(()),
    };
    if !super::endpoints::is_dns_subdomain(name) {
        return Err(ApiError::bad_request(format!(
            "metadata.name {name:?} is not a valid Kubernetes name (a DNS-1123 subdomain)"
        )));
    }
    if let Some(ns) = namespace
        && !super::endpoints::is_dns_label(ns)
    {
        return Err(ApiError::bad_request(format!(
            "metadata.namespace {ns:?} is not a valid Kubernetes namespace (a DNS-1123 label)"
        )));
    }
    // A NetworkPolicy's rules are checked whatever its policyTypes select, as Kubernetes
    // checks them.
    if let PolicyDocument::Kubernetes(p) = doc {
        let mut every = p.clone();
        every.spec.policy_types = Some(vec!["Ingress".into(), "Egress".into()]);
        every
            .rules()
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    Ok(())
}

/// A JSON policy document, checked as [`cilium_policy::parse_value`] checks it, with the
/// API's strictness on top: integral numbers written `80.0` are integers (JSON Schema's
/// view), and an array where an object belongs is refused.
fn json_document(value: Value) -> Result<Vec<(PolicyDocument, Vec<Rule>)>, PolicyError> {
    let mut value = value;
    crate::integral_numbers(&mut value);
    let original = value.clone();
    let Some((doc, rules)) = cilium_policy::parse_value(value)? else {
        return Ok(Vec::new());
    };
    if let Some(path) = crate::array_for_object(&original, &doc.to_json()) {
        return Err(PolicyError::Parse {
            document: 0,
            path,
            message: "expected an object".into(),
        });
    }
    Ok(vec![(doc, rules)])
}

/// The policy engine and the endpoints' policy maps (none without a datapath).
#[derive(Debug)]
pub(super) struct PolicyState {
    engine: PolicyEngine,
    writer: Option<PolicyWriter>,
}

impl PolicyState {
    /// An engine with no rules in `mode`.
    pub(super) fn new(mode: EnforcementMode, writer: Option<PolicyWriter>) -> Self {
        PolicyState {
            engine: PolicyEngine::new(mode),
            writer,
        }
    }

    /// Writes the policy maps of the endpoints `diff` touched (none without a datapath).
    /// Returns how many were written.
    pub(super) fn apply(&mut self, diff: &PolicyDiff) -> Result<usize, ApiError> {
        match self.writer.as_mut() {
            Some(writer) => writer
                .apply(&self.engine, diff)
                .map_err(internal("writing the policy map")),
            None => Ok(0),
        }
    }

    /// An endpoint's enforcement (ingress, egress).
    pub(super) fn enforcement(&self, id: u16) -> (bool, bool) {
        self.engine
            .policy(id)
            .map_or((false, false), |p| (p.ingress_enforced, p.egress_enforced))
    }

    /// Tells the engine about an endpoint, its identity and its named ports; the maps are
    /// not written.
    pub(super) fn upsert_endpoint(
        &mut self,
        endpoint: u16,
        id: NumericIdentity,
        labels: &LabelSet,
        ports: &[NamedPort],
    ) -> PolicyDiff {
        let mut diff = self.engine.upsert_identity(id, labels.clone());
        merge(
            &mut diff,
            self.engine.upsert_endpoint(endpoint, labels.clone()),
        );
        merge(
            &mut diff,
            self.engine.set_endpoint_ports(endpoint, port_map(ports)),
        );
        diff
    }

    /// Forgets an endpoint and removes its policy map (best effort).
    pub(super) fn remove_endpoint(&mut self, endpoint: u16) {
        let diff = self.engine.remove_endpoint(endpoint);
        if let Some(writer) = self.writer.as_mut() {
            let _ = writer.apply(&self.engine, &diff);
            let _ = writer.remove(endpoint);
        }
    }

    /// Replaces the engine and writes the policy map of each of `endpoints` from it.
    fn replace(&mut self, engine: PolicyEngine, endpoints: &[u16]) -> Result<(), ApiError> {
        self.engine = engine;
        if let Some(writer) = self.writer.as_mut() {
            for &id in endpoints {
                match self.engine.policy(id) {
                    Some(p) => writer.install(id, &p),
                    None => writer.remove(id),
                }
                .map_err(internal("writing the policy map"))?;
            }
        }
        Ok(())
    }
}

/// The engine's mode for the `enable-policy` key.
pub(super) fn enforcement(p: PolicyEnforcement) -> EnforcementMode {
    match p {
        PolicyEnforcement::Default => EnforcementMode::Default,
        PolicyEnforcement::Always => EnforcementMode::Always,
        PolicyEnforcement::Never => EnforcementMode::Never,
    }
}

/// Named ports as the policy engine takes them (name -> protocol and number); a port of
/// an unknown protocol is left out.
pub(crate) fn port_map(ports: &[NamedPort]) -> NamedPorts {
    let mut out = NamedPorts::new();
    for p in ports {
        if let Some(proto) = p.proto_number() {
            out.entry(p.name.clone())
                .or_default()
                .insert((proto, p.port));
        }
    }
    out
}

fn merge(into: &mut PolicyDiff, more: PolicyDiff) {
    into.entries.extend(more.entries);
    into.enforcement.extend(more.enforcement);
}

impl Node {
    /// The endpoint's policy enforcement (ingress, egress).
    pub async fn enforcement_of(&self, id: u16) -> (bool, bool) {
        self.state.lock().await.policy.enforcement(id)
    }

    /// Imports policy documents (`PUT /v1/policy`, YAML or JSON): all or nothing. Returns
    /// the origins imported and the endpoints whose policy changed.
    pub async fn import_policy(&self, text: &str) -> Result<(Vec<String>, usize), ApiError> {
        let docs = parse_documents(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
        if docs.is_empty() {
            return Err(ApiError::bad_request("no policy documents in the input"));
        }
        for (doc, _) in &docs {
            check_document(doc)?;
        }
        let mut st = self.state.lock().await;
        let mut origins = Vec::new();
        let mut diff = PolicyDiff::default();
        for (doc, rules) in docs {
            let origin = doc.origin();
            self.store
                .put(&policy_key(&origin), doc.to_json().to_string().as_bytes())
                .await
                .map_err(internal("storing the policy"))?;
            merge(&mut diff, st.policy.engine.remove_rules(&origin));
            merge(&mut diff, st.policy.engine.add_rules(rules));
            origins.push(origin);
        }
        let changed = st.policy.apply(&diff)?;
        Ok((origins, changed))
    }

    /// Applies a policy document the cluster store holds under `origin` (written by another
    /// agent or the lab), or removes it (`None`). Returns the endpoints whose policy
    /// changed.
    pub(crate) async fn apply_stored_policy(
        &self,
        origin: &str,
        doc: Option<&Value>,
    ) -> Result<usize, String> {
        let origin = &stored_origin(origin);
        let mut parsed = Vec::new();
        if let Some(doc) = doc {
            for (d, rules) in json_document(doc.clone()).map_err(|e| e.to_string())? {
                if d.origin() == *origin {
                    parsed.extend(rules);
                }
            }
        }
        let mut st = self.state.lock().await;
        let mut diff = PolicyDiff::default();
        merge(&mut diff, st.policy.engine.remove_rules(origin));
        if !parsed.is_empty() {
            merge(&mut diff, st.policy.engine.add_rules(parsed));
        }
        st.policy.apply(&diff).map_err(|e| e.message)
    }

    /// Deletes the policies whose origin starts with `prefix` (all with an empty prefix).
    pub async fn delete_policy(&self, prefix: &str) -> Result<Vec<String>, ApiError> {
        let mut st = self.state.lock().await;
        let stored = self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?;
        let mut deleted = Vec::new();
        let mut diff = PolicyDiff::default();
        for (key, _) in stored {
            let origin = stored_origin(&key[POLICIES_PREFIX.len() + 1..]);
            if !origin.starts_with(prefix) {
                continue;
            }
            self.store
                .delete(&key)
                .await
                .map_err(internal("deleting the policy"))?;
            merge(&mut diff, st.policy.engine.remove_rules(&origin));
            deleted.push(origin);
        }
        if deleted.is_empty() && !prefix.is_empty() {
            return Err(ApiError::not_found(format!("no policy matches {prefix:?}")));
        }
        st.policy.apply(&diff)?;
        Ok(deleted)
    }

    /// The stored policy documents.
    pub async fn policies(&self) -> Result<Vec<Value>, ApiError> {
        Ok(self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_slice(&v).ok())
            .collect())
    }

    /// Tells the policy engine about a cluster identity (another node's pods) and rewrites
    /// the policy maps it changes.
    pub(crate) async fn policy_identity_upsert(
        &self,
        id: u32,
        labels: LabelSet,
    ) -> Result<usize, String> {
        let mut st = self.state.lock().await;
        let diff = st
            .policy
            .engine
            .upsert_identity(NumericIdentity::new(id), labels);
        st.policy.apply(&diff).map_err(|e| e.message)
    }

    /// Records the named ports of a pod on another node (`ports` empty: it is gone), and
    /// writes the policy entries they change.
    pub(crate) async fn policy_peer_ports(
        &self,
        ip: std::net::Ipv4Addr,
        ports: &[NamedPort],
    ) -> Result<usize, String> {
        let mut st = self.state.lock().await;
        let diff = st
            .policy
            .engine
            .set_peer_ports(&ip.to_string(), port_map(ports));
        st.policy.apply(&diff).map_err(|e| e.message)
    }

    /// Forgets a cluster identity that was deleted.
    pub(crate) async fn policy_identity_remove(&self, id: u32) -> Result<usize, String> {
        let mut st = self.state.lock().await;
        if st.endpoints.iter().any(|e| e.identity == id) {
            return Ok(0); // Still used here.
        }
        let diff = st.policy.engine.remove_identity(NumericIdentity::new(id));
        st.policy.apply(&diff).map_err(|e| e.message)
    }

    /// Sets the enforcement mode at run time.
    pub async fn set_enforcement(&self, mode: PolicyEnforcement) -> Result<(), ApiError> {
        let mut st = self.state.lock().await;
        if st.policy.engine.mode() == enforcement(mode) {
            return Ok(());
        }
        // The engine's mode is fixed at creation: rebuild it with the same rules and
        // endpoints, then write every endpoint's map.
        let mut engine = PolicyEngine::new(enforcement(mode));
        for (key, value) in self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(internal("listing policies"))?
        {
            let text = String::from_utf8_lossy(&value).into_owned();
            for (_, rules) in parse_documents(&text)
                .map_err(|e| ApiError::internal(format!("stored policy {key}: {e}")))?
            {
                engine.add_rules(rules);
            }
        }
        let mut diff = PolicyDiff::default();
        // Every identity of the cluster (other nodes' pods too), then the local endpoints.
        if let Ok(all) = self.identities.backend().list().await {
            for (id, labels) in all {
                merge(&mut diff, engine.upsert_identity(id, labels));
            }
        }
        for ep in st.endpoints.iter() {
            let labels = LabelSet::parse_list(&ep.labels).unwrap_or_default();
            merge(
                &mut diff,
                engine.upsert_identity(NumericIdentity::new(ep.identity), labels.clone()),
            );
            merge(&mut diff, engine.upsert_endpoint(ep.id, labels));
            merge(
                &mut diff,
                engine.set_endpoint_ports(ep.id, port_map(&ep.named_ports)),
            );
        }
        // Other nodes' pods' named ports (egress rules' named ports resolve against them).
        let remote: Vec<IpIdentityPair> = self
            .remote_endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        for pair in remote {
            merge(
                &mut diff,
                engine.set_peer_ports(&pair.ip.to_string(), port_map(&pair.named_ports)),
            );
        }
        let ids: Vec<u16> = st.endpoints.iter().map(|e| e.id).collect();
        st.policy.replace(engine, &ids)
    }

    /// Gives the engine the policies of the store (at start).
    pub(super) async fn load_policies(&self) -> Result<(), String> {
        let mut st = self.state.lock().await;
        for (key, value) in self
            .store
            .list_prefix(&format!("{POLICIES_PREFIX}/"))
            .await
            .map_err(|e| e.to_string())?
        {
            let text = String::from_utf8_lossy(&value).into_owned();
            match parse_documents(&text) {
                Ok(docs) => {
                    for (_, rules) in docs {
                        st.policy.engine.add_rules(rules);
                    }
                }
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a stored policy\" key={key} error=\"{e}\""
                ),
            }
        }
        Ok(())
    }
}
