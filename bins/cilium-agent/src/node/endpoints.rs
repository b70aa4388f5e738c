// SPDX-License-Identifier: Apache-2.0

//! Endpoints: their creation (labels from the pod record, IP and id, identity, datapath
//! state, state file), deletion, restore after a restart and the CNI's delete queue; the
//! node's IPAM; `cilium_lxc`, the endpoint programs' links and the endpoints' routes.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use cilium_bpf::Datapath;
use cilium_bpf::link::Netlink;
use cilium_bpf::maps::EndpointMap;
use cilium_bpf::types::{EndpointInfo, RemoteEndpointInfo, mac_to_u64};
use cilium_core::cluster::NamedPort;
use cilium_core::kvstore::KvStore;
use cilium_core::{IdPool, Label, LabelSet, NumericIdentity};
use cilium_identity::IdentityBackend;
use cilium_ipam::{Family, NodeAllocator, Owner};
use serde_json::{Value, json};

use super::ipcache::IpCache;
use super::{ApiError, Node, NodeState, PODS_PREFIX, RestoreReport, internal};
use crate::endpoint::{self, EndpointChangeRequest, EndpointRecord, EndpointState};
use crate::metrics::Metrics;

/// Endpoint ids are 1..=4095, as in Cilium.
const MAX_ENDPOINT_ID: u32 = 4095;

/// What endpoints hold of the datapath: the loaded programs they attach to their devices,
/// and `cilium_lxc`.
#[derive(Debug)]
pub(super) struct EndpointDatapath {
    programs: Datapath,
    lxc: EndpointMap,
}

impl EndpointDatapath {
    /// The endpoints' part of a loaded datapath.
    pub(super) fn new(programs: Datapath, lxc: EndpointMap) -> Self {
        EndpointDatapath { programs, lxc }
    }

    /// Attaches the endpoint programs to the endpoint's device and writes its `cilium_lxc`
    /// entry.
    fn attach(&mut self, ep: &EndpointRecord) -> Result<(), ApiError> {
        self.programs
            .attach_endpoint(&ep.interface_name)
            .map_err(internal("attaching the datapath"))?;
        let info = EndpointInfo {
            ifindex: ep.interface_index,
            lxc_id: ep.id,
            mac: mac_to_u64(ep.mac),
            node_mac: mac_to_u64(ep.host_mac),
            sec_id: ep.identity,
            ..EndpointInfo::default()
        };
        self.lxc
            .upsert_ipv4(ep.ipv4, &info)
            .map_err(internal("writing cilium_lxc"))
    }
}

/// The endpoints, the ids and IPs they hold, and their datapath (none without one).
#[derive(Debug)]
pub(super) struct EndpointTable {
    ipam: NodeAllocator,
    ids: IdPool,
    records: BTreeMap<u16, EndpointRecord>,
    dp: Option<EndpointDatapath>,
}

impl EndpointTable {
    /// No endpoints yet; `ipam` has the router IP reserved.
    pub(super) fn new(ipam: NodeAllocator, dp: Option<EndpointDatapath>) -> Self {
        EndpointTable {
            ipam,
            ids: IdPool::new(MAX_ENDPOINT_ID),
            records: BTreeMap::new(),
            dp,
        }
    }

    /// Whether the datapath is loaded.
    pub(super) fn has_datapath(&self) -> bool {
        self.dp.is_some()
    }

    /// Every endpoint, by id.
    pub(super) fn iter(&self) -> impl Iterator<Item = &EndpointRecord> {
        self.records.values()
    }

    /// Claims `ip` for `owner_name` (reserved for it by `POST /ipam`, or free) and the next
    /// endpoint id; an IP claimed here is released again when no id is free.
    fn claim(&mut self, ip: Ipv4Addr, owner_name: &str) -> Result<u16, ApiError> {
        let owner = Owner::new(owner_name).map_err(|e| ApiError::bad_request(e.to_string()))?;
        // The IP: reserved for this pod by POST /ipam, or free.
        let claimed_here = match self.ipam.owner_of(IpAddr::V4(ip)) {
            Some(o) if o.as_str() == owner_name => false,
            Some(o) => {
                return Err(ApiError::conflict(format!(
                    "{ip} is already allocated to {}",
                    o.as_str()
                )));
            }
            None => {
                self.ipam
                    .allocate(IpAddr::V4(ip), owner)
                    .map_err(|e| ApiError::conflict(e.to_string()))?;
                true
            }
        };
        let Some(idx) = self.ids.allocate_next() else {
            if claimed_here {
                let _ = self.ipam.release(IpAddr::V4(ip));
            }
            return Err(ApiError::unavailable("no free endpoint id"));
        };
        Ok((idx + 1) as u16)
    }

    /// Gives an endpoint id and its IP back.
    fn free(&mut self, id: u16, ip: Ipv4Addr) {
        self.ids.put(u32::from(id) - 1);
        let _ = self.ipam.release(IpAddr::V4(ip));
    }

    /// Removes datapath state no endpoint owns (endpoints that crashed half-made):
    /// `cilium_lxc` entries with their ipcache entries, and link pins.
    fn remove_orphans(&mut self, ipcache: &mut IpCache) {
        let known: BTreeSet<Ipv4Addr> = self.records.values().map(|e| e.ipv4).collect();
        let ifnames: BTreeSet<String> = self
            .records
            .values()
            .map(|e| e.interface_name.clone())
            .collect();
        if let Some(dp) = self.dp.as_mut() {
            if let Ok(entries) = dp.lxc.entries() {
                for (key, _) in entries {
                    let Some(ip) = key.ipv4_addr() else { continue };
                    if !known.contains(&ip) {
                        let _ = dp.lxc.remove_ipv4(ip);
                        ipcache.remove(ip, 32);
                    }
                }
            }
            if let Err(e) = dp.lxc.prune_slots() {
                eprintln!(
                    "level=warning msg=\"could not check cilium_lxc_ifindex against cilium_lxc\" error=\"{e}\""
                );
            }
            let links = dp
                .programs
                .config()
                .bpf_root
                .join("cilium")
                .join("endpoints");
            if let Ok(dirs) = std::fs::read_dir(&links) {
                for d in dirs.flatten() {
                    let name = d.file_name().to_string_lossy().into_owned();
                    if !ifnames.contains(&name) {
                        let _ = dp.programs.detach_endpoint(&name);
                    }
                }
            }
        }
    }

    /// Sets the gauges (from a state the caller holds: no second lock, so a response never
    /// waits behind queued endpoint creations).
    fn set_gauges(&self, metrics: &Metrics) {
        let ready = self
            .records
            .values()
            .filter(|e| e.state == EndpointState::Ready)
            .count();
        metrics.set_endpoints(ready as i64);
        let (used, total) = self.ipam.usage(Family::V4).unwrap_or((0, 0));
        metrics.set_ipam(i64::from(used), i64::from(total));
        let ids: BTreeSet<u32> = self.records.values().map(|e| e.identity).collect();
        metrics.set_identities(ids.len() as i64);
    }

    /// Finds an endpoint by Cilium's id forms (see [`Node::find_endpoint`]).
    fn find(&self, id: &str) -> Result<&EndpointRecord, ApiError> {
        let endpoints = &self.records;
        let found = if let Some(c) = id.strip_prefix("container-id:") {
            endpoints.values().find(|e| e.container_id == c)
        } else if let Some(p) = id.strip_prefix("pod-name:") {
            let (ns, pod) = p.split_once([':', '/']).ok_or_else(|| {
                ApiError::bad_request(format!("{id:?}: expected pod-name:<ns>:<pod>"))
            })?;
            endpoints
                .values()
                .find(|e| e.k8s_namespace == ns && e.k8s_pod_name == pod)
        } else {
            let n = id.strip_prefix("cilium-local:").unwrap_or(id);
            let n: u16 = n
                .parse()
                .map_err(|_| ApiError::bad_request(format!("{id:?} is not an endpoint id")))?;
            endpoints.get(&n)
        };
        found.ok_or_else(|| ApiError::not_found(format!("endpoint {id} not found")))
    }
}

impl Node {
    /// The labels of a pod as the agent derives them: the pod's labels from its record,
    /// `io.kubernetes.pod.namespace`, `io.cilium.k8s.policy.cluster` and
    /// `io.cilium.k8s.policy.serviceaccount`, and `extra`; then the identity-relevant ones.
    /// Also the pod's named container ports.
    async fn pod_labels(
        &self,
        namespace: &str,
        pod: &str,
        extra: &[String],
    ) -> Result<(LabelSet, Vec<NamedPort>), ApiError> {
        let mut labels = LabelSet::new();
        let mut account = "default".to_owned();
        let mut named_ports = Vec::new();
        if let Some(k8s) = &self.k8s
            && !namespace.is_empty()
            && !pod.is_empty()
        {
            let (pod_labels, sa, ns_labels, ports) = k8s_pod_labels(&k8s.0, namespace, pod).await?;
            named_ports = ports;
            for (k, v) in pod_labels {
                let label = Label::k8s(k.clone(), v)
                    .map_err(|e| ApiError::bad_request(format!("pod label {k}: {e}")))?;
                labels.insert(label);
            }
            for (k, v) in ns_labels {
                let key = format!(
                    "{}.{k}",
                    cilium_core::labels::keys::POD_NAMESPACE_META_LABELS
                );
                let label = Label::k8s(key, v)
                    .map_err(|e| ApiError::bad_request(format!("namespace label {k}: {e}")))?;
                labels.insert(label);
            }
            if let Some(sa) = sa {
                account = sa;
            }
        } else if !namespace.is_empty() && !pod.is_empty() {
            let key = format!("{PODS_PREFIX}/{namespace}/{pod}");
            if let Some(raw) = self
                .store
                .get(&key)
                .await
                .map_err(internal("reading the pod"))?
            {
                let record: Value =
                    serde_json::from_slice(&raw).map_err(internal("decoding the pod"))?;
                if let Some(map) = record["metadata"]["labels"].as_object() {
                    for (k, v) in map {
                        let label = Label::k8s(k.clone(), v.as_str().unwrap_or_default())
                            .map_err(|e| ApiError::bad_request(format!("pod label {k}: {e}")))?;
                        labels.insert(label);
                    }
                }
                if let Some(sa) = record["spec"]["serviceAccountName"].as_str() {
                    account = sa.to_owned();
                }
                named_ports = cilium_k8s::convert::pod_named_ports(&record["spec"]);
            }
        }
        let ns = if namespace.is_empty() {
            "default"
        } else {
            namespace
        };
        let fixed = [
            ("io.kubernetes.pod.namespace", ns.to_owned()),
            ("io.cilium.k8s.policy.cluster", self.cluster.clone()),
            ("io.cilium.k8s.policy.serviceaccount", account),
        ];
        for (k, v) in fixed {
            labels.insert(Label::k8s(k, v).map_err(|e| ApiError::internal(e.to_string()))?);
        }
        for item in extra {
            let label: Label = item
                .parse()
                .map_err(|e| ApiError::bad_request(format!("label {item:?}: {e}")))?;
            labels.insert(label);
        }
        Ok((self.filter.filter(&labels).0, named_ports))
    }

    /// Creates an endpoint (`PUT /v1/endpoint/{id}`): claims its IP, gives it an id, labels
    /// and an identity, writes its datapath state and policy, and persists it. Returns it
    /// once it is ready, with its (ingress, egress) enforcement. All or nothing.
    pub async fn create_endpoint(
        &self,
        req: EndpointChangeRequest,
    ) -> Result<(EndpointRecord, (bool, bool)), ApiError> {
        let started = Instant::now();
        let ip: Ipv4Addr = req
            .addressing
            .ipv4
            .as_deref()
            .ok_or_else(|| ApiError::bad_request("addressing.ipv4 is required"))?
            .parse()
            .map_err(|e| ApiError::bad_request(format!("addressing.ipv4: {e}")))?;
        if req.container_id.is_empty() || req.interface_name.is_empty() {
            return Err(ApiError::bad_request(
                "container-id and interface-name are required",
            ));
        }
        for item in &req.labels {
            item.parse::<Label>()
                .map_err(|e| ApiError::bad_request(format!("label {item:?}: {e}")))?;
        }
        let mac = match req.mac.as_deref() {
            None => None,
            Some(m) => Some(parse_mac(m).ok_or_else(|| {
                ApiError::bad_request(format!("mac {m:?}: expected aa:bb:cc:dd:ee:ff"))
            })?),
        };
        // The request is well-formed: what follows depends on the node.
        if !self.has_datapath().await {
            return Err(ApiError::unavailable(
                "this agent runs without a datapath: endpoints cannot be created",
            ));
        }
        if !self.cidr.contains(&ip) {
            return Err(ApiError::bad_request(format!(
                "{ip} is not in this node's pod CIDR {}",
                self.cidr
            )));
        }
        let (labels, named_ports) = self
            .pod_labels(&req.k8s_namespace, &req.k8s_pod_name, &req.labels)
            .await?;
        let t_labels = started.elapsed();
        let nl = Netlink::open().map_err(internal("netlink"))?;
        let host = nl
            .get(&req.interface_name)
            .await
            .map_err(internal("looking up the interface"))?
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "no interface {:?} on this node",
                    req.interface_name
                ))
            })?;
        let t_link = started.elapsed();
        let mut st = self.state.lock().await;
        let t_locked = started.elapsed();
        if !st.endpoints.has_datapath() {
            return Err(ApiError::unavailable(
                "this agent runs without a datapath: endpoints cannot be created",
            ));
        }
        if let Some(e) = st.endpoints.iter().find(|e| {
            e.container_id == req.container_id
                && e.container_interface_name == req.container_interface_name
        }) {
            return Err(ApiError::conflict(format!(
                "container {} already has endpoint {}",
                req.container_id, e.id
            )));
        }
        let owner_name =
            endpoint::ipam_owner(&req.k8s_namespace, &req.k8s_pod_name, &req.container_id);
        let id = st.endpoints.claim(ip, &owner_name)?;
        let mut ep = EndpointRecord {
            id,
            container_id: req.container_id.clone(),
            container_interface_name: req.container_interface_name.clone(),
            interface_name: req.interface_name.clone(),
            interface_index: host.index,
            mac: [0; 6],
            host_mac: host.mac,
            ipv4: ip,
            k8s_namespace: req.k8s_namespace.clone(),
            k8s_pod_name: req.k8s_pod_name.clone(),
            netns: req.netns.clone(),
            labels: labels.to_strings(),
            identity: 0,
            state: EndpointState::WaitingForIdentity,
            regenerations: 0,
            named_ports,
        };
        ep.mac = match mac {
            Some(mac) => mac,
            None => pod_mac(&req.netns, &req.container_interface_name)
                .await
                .unwrap_or(host.mac),
        };
        let t_mac = started.elapsed();
        let result = self.bring_up(&mut st, &mut ep, &labels, &nl).await;
        if let Err(e) = result {
            st.endpoints.free(id, ip);
            return Err(e);
        }
        st.endpoints.records.insert(ep.id, ep.clone());
        st.endpoints.set_gauges(&self.metrics);
        let enforced = st.policy.enforcement(ep.id);
        drop(st);
        self.publish_endpoint(&ep).await;
        let total = started.elapsed();
        self.metrics.regeneration_time.observe(total.as_secs_f64());
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "level=info msg=\"endpoint ready\" endpoint={} ipv4={} identity={} total-ms={:.2} labels-ms={:.2} link-ms={:.2} lock-wait-ms={:.2} mac-ms={:.2} bring-up-ms={:.2}",
            ep.id,
            ep.ipv4,
            ep.identity,
            ms(total),
            ms(t_labels),
            ms(t_link - t_labels),
            ms(t_locked - t_link),
            ms(t_mac - t_locked),
            ms(total - t_mac),
        );
        Ok((ep, enforced))
    }

    /// Identity, datapath, policy, state file; undoes what it did when a step fails.
    async fn bring_up(
        &self,
        st: &mut NodeState,
        ep: &mut EndpointRecord,
        labels: &LabelSet,
        nl: &Netlink,
    ) -> Result<(), ApiError> {
        let acquired = self
            .identities
            .acquire(labels)
            .await
            .map_err(|e| ApiError::internal(format!("allocating an identity: {e}")))?;
        let id = acquired.identity.id;
        ep.identity = id.get();
        ep.state = EndpointState::Regenerating;
        let written = self.write_datapath(st, ep, labels, nl).await;
        let persisted = written.and_then(|()| {
            ep.state = EndpointState::Ready;
            ep.regenerations += 1;
            endpoint::persist(&self.state_dir, ep).map_err(internal("writing the endpoint state"))
        });
        if let Err(e) = persisted {
            self.metrics.regenerations_failure.inc();
            self.clear_datapath(st, ep, nl).await;
            let _ = self.identities.release(id);
            return Err(e);
        }
        self.metrics.regenerations_success.inc();
        Ok(())
    }

    /// The endpoint's policy, programs, `cilium_lxc` and ipcache entries, policy map and
    /// route.
    async fn write_datapath(
        &self,
        st: &mut NodeState,
        ep: &EndpointRecord,
        labels: &LabelSet,
        nl: &Netlink,
    ) -> Result<(), ApiError> {
        let id = NumericIdentity::new(ep.identity);
        let diff = st
            .policy
            .upsert_endpoint(ep.id, id, labels, &ep.named_ports);
        let Some(dp) = st.endpoints.dp.as_mut() else {
            return Err(ApiError::unavailable("no datapath"));
        };
        dp.attach(ep)?;
        st.ipcache
            .upsert(
                ep.ipv4,
                32,
                &RemoteEndpointInfo {
                    sec_identity: ep.identity,
                    ..RemoteEndpointInfo::default()
                },
            )
            .map_err(internal("writing cilium_ipcache"))?;
        st.policy.apply(&diff)?;
        if self.endpoint_routes {
            nl.agent_route_dev(ep.ipv4, 32, ep.interface_index)
                .await
                .map_err(internal("adding the endpoint route"))?;
        }
        Ok(())
    }

    /// Removes an endpoint's datapath state (best effort: every step is attempted).
    async fn clear_datapath(&self, st: &mut NodeState, ep: &EndpointRecord, nl: &Netlink) {
        st.policy.remove_endpoint(ep.id);
        if let Some(dp) = st.endpoints.dp.as_mut() {
            let _ = dp.lxc.remove_ipv4(ep.ipv4);
            st.ipcache.remove(ep.ipv4, 32);
            let _ = dp.programs.detach_endpoint(&ep.interface_name);
        }
        if self.endpoint_routes {
            let _ = nl.route_del(ep.ipv4, 32).await;
        }
    }

    /// Finds an endpoint by Cilium's id forms: `<id>`, `cilium-local:<id>`,
    /// `container-id:<id>`, `pod-name:<ns>:<pod>` (or `<ns>/<pod>`).
    pub async fn find_endpoint(&self, id: &str) -> Result<EndpointRecord, ApiError> {
        let st = self.state.lock().await;
        st.endpoints.find(id).cloned()
    }

    /// Every endpoint, by id.
    pub async fn endpoints(&self) -> Vec<EndpointRecord> {
        self.state.lock().await.endpoints.iter().cloned().collect()
    }

    /// Gives the endpoints of a pod (`pod` None: of every pod of `namespace`) the labels
    /// and named ports their pod has now (its labels, its namespace's, its service
    /// account), as Cilium does when a pod or namespace is relabelled: where the
    /// identity-relevant labels changed, a new identity, and the datapath, policy and
    /// state that depend on it; the old identity is released. Returns how many changed.
    pub async fn relabel_pods(&self, namespace: &str, pod: Option<&str>) -> usize {
        let targets: Vec<(u16, String)> = {
            let st = self.state.lock().await;
            st.endpoints
                .iter()
                .filter(|e| {
                    e.k8s_namespace == namespace
                        && pod.is_none_or(|p| e.k8s_pod_name == p)
                        && !e.k8s_pod_name.is_empty()
                })
                .map(|e| (e.id, e.k8s_pod_name.clone()))
                .collect()
        };
        let mut changed = 0;
        for (id, name) in targets {
            match self.relabel_endpoint(id, namespace, &name).await {
                Ok(true) => changed += 1,
                Ok(false) => {}
                Err(e) => eprintln!(
                    "level=warning msg=\"relabelling an endpoint failed\" endpoint={id} pod={namespace}/{name} error=\"{}\"",
                    e.message
                ),
            }
        }
        changed
    }

    async fn relabel_endpoint(
        &self,
        id: u16,
        namespace: &str,
        pod: &str,
    ) -> Result<bool, ApiError> {
        let (labels, named_ports) = self.pod_labels(namespace, pod, &[]).await?;
        {
            let st = self.state.lock().await;
            match st.endpoints.records.get(&id) {
                Some(ep) if ep.labels != labels.to_strings() || ep.named_ports != named_ports => {}
                _ => return Ok(false),
            }
        }
        let nl = Netlink::open().map_err(internal("netlink"))?;
        let acquired = self
            .identities
            .acquire(&labels)
            .await
            .map_err(|e| ApiError::internal(format!("allocating an identity: {e}")))?;
        let new_id = acquired.identity.id;
        let mut st = self.state.lock().await;
        // Gone (or another pod's) meanwhile: nothing to relabel.
        let Some(mut ep) = st
            .endpoints
            .records
            .get(&id)
            .filter(|e| e.k8s_namespace == namespace && e.k8s_pod_name == pod)
            .cloned()
        else {
            let _ = self.identities.release(new_id);
            return Ok(false);
        };
        let old_id = ep.identity;
        ep.identity = new_id.get();
        ep.labels = labels.to_strings();
        ep.named_ports = named_ports;
        ep.regenerations += 1;
        if let Err(e) = self.write_datapath(&mut st, &ep, &labels, &nl).await {
            let _ = self.identities.release(new_id);
            return Err(e);
        }
        endpoint::persist(&self.state_dir, &ep).map_err(internal("writing the endpoint state"))?;
        st.endpoints.records.insert(id, ep.clone());
        drop(st);
        if old_id != ep.identity {
            let _ = self.identities.release(NumericIdentity::new(old_id));
        }
        self.publish_endpoint(&ep).await;
        Ok(true)
    }

    /// Deletes an endpoint (`DELETE /v1/endpoint/{id}`): policy, maps, links, identity,
    /// IP, state file. Returns the deleted endpoint.
    pub async fn delete_endpoint(&self, id: &str) -> Result<EndpointRecord, ApiError> {
        let nl = Netlink::open().map_err(internal("netlink"))?;
        let mut st = self.state.lock().await;
        let mut ep = st.endpoints.find(id)?.clone();
        ep.state = EndpointState::Disconnecting;
        self.clear_datapath(&mut st, &ep, &nl).await;
        endpoint::forget(&self.state_dir, ep.id).map_err(internal("removing the state file"))?;
        st.endpoints.records.remove(&ep.id);
        st.endpoints.free(ep.id, ep.ipv4);
        let _ = self.identities.release(NumericIdentity::new(ep.identity));
        st.endpoints.set_gauges(&self.metrics);
        drop(st);
        self.unpublish_endpoint(&ep).await;
        Ok(ep)
    }

    /// Deletes every endpoint of a container (the CNI's DEL); returns how many there were.
    pub async fn delete_container(&self, container_id: &str) -> Result<usize, ApiError> {
        let ids: Vec<u16> = {
            let st = self.state.lock().await;
            st.endpoints
                .iter()
                .filter(|e| e.container_id == container_id)
                .map(|e| e.id)
                .collect()
        };
        for id in &ids {
            self.delete_endpoint(&id.to_string()).await?;
        }
        Ok(ids.len())
    }

    /// `POST /v1/ipam`: the next free IP for `owner` (held until an endpoint claims it or
    /// it is released; a restart frees it if no endpoint did).
    pub async fn ipam_allocate(&self, owner: &str) -> Result<Value, ApiError> {
        let owner = Owner::new(owner).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let mut st = self.state.lock().await;
        let ip = st
            .endpoints
            .ipam
            .allocate_next(Family::V4, owner)
            .map_err(|e| ApiError::unavailable(e.to_string()))?;
        st.endpoints.set_gauges(&self.metrics);
        drop(st);
        Ok(json!({
            "ipv4": {
                "ip": ip.to_string(),
                "gateway": self.router.to_string(),
                "cidrs": [self.cidr.to_string()],
            },
            "host-addressing": {"ipv4": {"ip": self.router.to_string(), "enabled": true}},
        }))
    }

    /// `DELETE /v1/ipam/{ip}`: releases an IP no endpoint uses.
    pub async fn ipam_release(&self, ip: &str) -> Result<(), ApiError> {
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|e| ApiError::bad_request(format!("{ip:?}: {e}")))?;
        let mut st = self.state.lock().await;
        if st.endpoints.iter().any(|e| e.ipv4 == ip) {
            return Err(ApiError::conflict(format!("{ip} is used by an endpoint")));
        }
        if ip == self.router {
            return Err(ApiError::conflict(format!("{ip} is the router IP")));
        }
        st.endpoints
            .ipam
            .release(IpAddr::V4(ip))
            .map_err(|e| ApiError::not_found(e.to_string()))?;
        st.endpoints.set_gauges(&self.metrics);
        drop(st);
        Ok(())
    }

    /// The IPAM status line and the allocated addresses with their owners.
    pub async fn ipam_status(&self) -> (String, Vec<(String, String)>) {
        let st = self.state.lock().await;
        let line = st.endpoints.ipam.status(Family::V4).unwrap_or_default();
        let list = st
            .endpoints
            .ipam
            .list()
            .into_iter()
            .map(|(ip, o)| (ip.to_string(), o.as_str().to_owned()))
            .collect();
        (line, list)
    }

    /// Registers a pod record (`PUT /v1/pod/{namespace}/{name}`), as Kubernetes would hold
    /// it: its labels and service account become the endpoint's labels.
    pub async fn put_pod(&self, namespace: &str, name: &str, pod: &Value) -> Result<(), ApiError> {
        for (field, value) in [("metadata", &pod["metadata"]), ("spec", &pod["spec"])] {
            if pod.get(field).is_some() && !value.is_object() {
                return Err(ApiError::bad_request(format!("{field} must be an object")));
            }
        }
        if let Some(sa) = pod["spec"].get("serviceAccountName") {
            match sa.as_str() {
                Some(sa) if is_dns_subdomain(sa) => {}
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "spec.serviceAccountName {sa}: not a valid Kubernetes name"
                    )));
                }
            }
        }
        if let Some(map) = pod["metadata"]["labels"].as_object() {
            for (k, v) in map {
                let Some(v) = v.as_str() else {
                    return Err(ApiError::bad_request(format!("label {k}: not a string")));
                };
                Label::k8s(k.clone(), v)
                    .map_err(|e| ApiError::bad_request(format!("label {k}: {e}")))?;
            }
        } else if !pod["metadata"]["labels"].is_null() {
            return Err(ApiError::bad_request("metadata.labels must be an object"));
        }
        if !is_dns_label(namespace) {
            return Err(ApiError::bad_request(format!(
                "namespace {namespace:?} is not a valid Kubernetes namespace (a DNS-1123 label)"
            )));
        }
        if !is_dns_subdomain(name) {
            return Err(ApiError::bad_request(format!(
                "{name:?} is not a valid Kubernetes name (a DNS-1123 subdomain)"
            )));
        }
        self.store
            .put(
                &format!("{PODS_PREFIX}/{namespace}/{name}"),
                pod.to_string().as_bytes(),
            )
            .await
            .map_err(internal("storing the pod"))
    }

    /// Restores the endpoints of the last run from their state files: an endpoint whose
    /// interface still exists gets its IP, id and identity back and its datapath state
    /// rewritten (links are swapped, maps kept: traffic does not stop); one whose interface
    /// is gone is removed. Datapath entries of endpoints that were never persisted are
    /// removed, identities no endpoint claims are released, and queued deletions replayed.
    pub(super) async fn restore_endpoints(&self) -> Result<RestoreReport, String> {
        let mut report = RestoreReport::default();
        let (records, bad) = endpoint::load_all(&self.state_dir);
        for (path, why) in bad {
            eprintln!(
                "level=warning msg=\"removing an unreadable endpoint state file\" file={} error=\"{why}\"",
                path.display()
            );
            let _ = std::fs::remove_file(&path);
            report.bad_files.push(path.display().to_string());
        }
        let nl = Netlink::open().map_err(|e| e.to_string())?;
        let mut st = self.state.lock().await;
        let has_dp = st.endpoints.has_datapath();
        for mut ep in records {
            let link = nl
                .get(&ep.interface_name)
                .await
                .map_err(|e| e.to_string())?;
            let alive = has_dp && link.is_some_and(|l| l.index == ep.interface_index);
            let claimed = alive
                && st.endpoints.ids.take(u32::from(ep.id) - 1)
                && st
                    .endpoints
                    .ipam
                    .allocate(
                        IpAddr::V4(ep.ipv4),
                        Owner::new(ep.owner()).map_err(|e| e.to_string())?,
                    )
                    .is_ok();
            if !claimed {
                if alive {
                    st.endpoints.ids.put(u32::from(ep.id) - 1);
                }
                self.clear_datapath(&mut st, &ep, &nl).await;
                let _ = endpoint::forget(&self.state_dir, ep.id);
                report.removed.push(ep.id);
                continue;
            }
            let labels = LabelSet::parse_list(&ep.labels).map_err(|e| e.to_string())?;
            ep.state = EndpointState::Restoring;
            let previous = ep.identity;
            let brought = self.bring_up(&mut st, &mut ep, &labels, &nl).await;
            match brought {
                Ok(()) => {
                    if ep.identity != previous {
                        eprintln!(
                            "level=warning msg=\"restored endpoint got a new identity\" endpoint={} old={previous} new={}",
                            ep.id, ep.identity
                        );
                    }
                    report.restored.push(ep.id);
                    st.endpoints.records.insert(ep.id, ep);
                }
                Err(e) => {
                    eprintln!(
                        "level=warning msg=\"could not restore endpoint\" endpoint={} error=\"{e}\"",
                        ep.id
                    );
                    st.endpoints.free(ep.id, ep.ipv4);
                    let _ = endpoint::forget(&self.state_dir, ep.id);
                    report.removed.push(ep.id);
                }
            }
        }
        // Datapath entries no restored endpoint owns: endpoints that crashed half-made.
        let NodeState {
            endpoints, ipcache, ..
        } = &mut *st;
        endpoints.remove_orphans(ipcache);
        // Identities this node registered that no endpoint claims any more.
        let claimed: BTreeSet<u32> = st.endpoints.iter().map(|e| e.identity).collect();
        drop(st);
        if let Ok(regs) = self.identities.backend().registrations().await {
            for (labels, id) in regs {
                if !claimed.contains(&id.get()) {
                    let _ = self.identities.backend().release(&labels, id).await;
                }
            }
        }
        // With the embedded store this node is the only user: identities that no restored
        // endpoint re-registered (their registrations went with the last session) are
        // garbage. (With a shared store the operator collects them, after a grace period.)
        if let Ok(unused) = self.identities.backend().unused().await {
            for (id, labels) in unused {
                if !claimed.contains(&id.get()) {
                    let _ = self
                        .identities
                        .backend()
                        .remove_if_unused(id, &labels)
                        .await;
                }
            }
        }
        report.replayed_deletes = self.replay_delete_queue().await;
        Ok(report)
    }

    /// Deletes the endpoints of containers the CNI queued for deletion while the agent was
    /// down (one file per container id in the delete queue), then the files.
    pub async fn replay_delete_queue(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.delete_queue) else {
            return 0;
        };
        let mut n = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let container = text.trim();
            if !container.is_empty() && self.delete_container(container).await.is_ok() {
                n += 1;
            }
            let _ = std::fs::remove_file(&path);
        }
        n
    }

    /// Sets the gauges from the current state.
    pub(super) async fn update_gauges(&self) {
        let st = self.state.lock().await;
        st.endpoints.set_gauges(&self.metrics);
    }
}

/// `[a-z0-9-]+`, alphanumeric at both ends (the parts of Kubernetes' DNS-1123 names).
fn is_dns_part(s: &str) -> bool {
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    s.bytes().all(|c| alnum(c) || c == b'-')
        && s.bytes().next().is_some_and(alnum)
        && s.bytes().last().is_some_and(alnum)
}

/// A Kubernetes DNS-1123 label (a namespace): at most 63 characters.
pub(crate) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_dns_part(s)
}

/// A Kubernetes DNS-1123 subdomain (a pod name), as Kubernetes checks it: at most 253
/// characters, parts joined by dots.
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_part)
}

/// `aa:bb:cc:dd:ee:ff`: six octets of two hex digits each.
fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let part = parts.next()?;
        if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *b = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// The MAC of `ifname` inside the pod's namespace.
async fn pod_mac(netns: &str, ifname: &str) -> Option<[u8; 6]> {
    let file = std::fs::File::open(netns).ok()?;
    let nl = Netlink::open_in(&file).ok()?;
    nl.get(ifname).await.ok().flatten().map(|l| l.mac)
}

/// A pod's labels, its service account and its namespace's labels, from the Kubernetes
/// API. A pod the API does not know is an error: its endpoint would get no identity of its
/// own.
async fn k8s_pod_labels(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
) -> Result<
    (
        BTreeMap<String, String>,
        Option<String>,
        BTreeMap<String, String>,
        Vec<NamedPort>,
    ),
    ApiError,
> {
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    let unavailable =
        |what: String| move |e: kube::Error| ApiError::unavailable(format!("{what}: {e}"));
    let found = kube::Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(pod)
        .await
        .map_err(unavailable(format!("reading pod {namespace}/{pod}")))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "pod {namespace}/{pod} does not exist in the Kubernetes API"
            ))
        })?;
    let ns = kube::Api::<Namespace>::all(client.clone())
        .get_opt(namespace)
        .await
        .map_err(unavailable(format!("reading namespace {namespace}")))?;
    let spec = serde_json::to_value(&found.spec).unwrap_or_default();
    Ok((
        found.metadata.labels.unwrap_or_default(),
        found.spec.and_then(|s| s.service_account_name),
        ns.and_then(|n| n.metadata.labels).unwrap_or_default(),
        cilium_k8s::convert::pod_named_ports(&spec),
    ))
}
