// SPDX-License-Identifier: Apache-2.0

//! Service sync: services from the API (`PUT /v1/service`, kept in the store) and
//! Kubernetes Services with their Endpoints (cluster mode) turned into frontends by
//! `LbManager`, and the load-balancing maps (`cilium_lb4_*`) written with `ServiceWriter`;
//! at start, the maps read back so ids survive a restart.

use std::collections::BTreeMap;

use cilium_bpf::DatapathError;
use cilium_bpf::lb::{MAGLEV_LUT_SIZE, ServiceWriter};
use cilium_core::config::AgentConfig;
use cilium_core::kvstore::{AnyStore, KvStore};
use cilium_lb::maglev::MaglevConfig;
use cilium_lb::manager::{LbConfig, LbManager, MapOp};
use cilium_lb::service::{L3n4Addr, Service};
use serde_json::Value;

use super::{ApiError, Node, internal};
use crate::service::{SERVICES_PREFIX, ServiceSpec};

/// The load-balancer's state and the maps it writes (none without a datapath).
#[derive(Debug)]
pub(super) struct ServiceTable {
    lb: LbManager,
    /// Frontends programmed for each Kubernetes service (`<ns>/<name>`).
    k8s_frontends: BTreeMap<String, Vec<L3n4Addr>>,
    writer: Option<ServiceWriter>,
}

impl ServiceTable {
    /// No services yet.
    pub(super) fn new(config: LbConfig, writer: Option<ServiceWriter>) -> Self {
        ServiceTable {
            lb: LbManager::new(config),
            k8s_frontends: BTreeMap::new(),
            writer,
        }
    }

    /// Applies map operations in order (a no-op without a datapath).
    fn write(&mut self, ops: &[MapOp]) -> Result<(), DatapathError> {
        match self.writer.as_mut() {
            Some(writer) => writer.apply(ops),
            None => Ok(()),
        }
    }

    /// The services, by id.
    fn list(&self) -> Vec<(u16, Service)> {
        let mut out: Vec<(u16, Service)> = self
            .lb
            .services()
            .into_iter()
            .map(|(i, s)| (i, s.clone()))
            .collect();
        out.sort_by_key(|(i, _)| *i);
        out
    }

    /// See [`Node::apply_k8s_service`].
    fn apply_k8s_service(&mut self, owner: &str, services: &[Service]) -> Result<(), String> {
        let previous = self.k8s_frontends.remove(owner).unwrap_or_default();
        let mut ops = Vec::new();
        let mut now = Vec::new();
        for svc in services {
            match self.lb.upsert(svc) {
                Ok(o) => {
                    ops.extend(o);
                    now.push(svc.frontend);
                }
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a service frontend\" service={owner} frontend={} error=\"{e}\"",
                    svc.frontend
                ),
            }
        }
        for fe in previous.iter().filter(|f| !now.contains(f)) {
            ops.extend(self.lb.delete(fe));
        }
        if !now.is_empty() {
            self.k8s_frontends.insert(owner.to_owned(), now);
        }
        self.write(&ops).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Restores the load-balancer at start: ids and Maglev tables from the maps (with the
    /// datapath), then writes what differs from `desired` (the stored services and `k8s`).
    fn restore(
        &mut self,
        config: LbConfig,
        k8s: &[(String, Vec<Service>)],
        desired: &[Service],
    ) -> Result<(), String> {
        self.k8s_frontends = k8s
            .iter()
            .map(|(owner, svcs)| (owner.clone(), svcs.iter().map(|s| s.frontend).collect()))
            .collect();
        if let Some(writer) = self.writer.as_mut() {
            let maps = writer.read_back().map_err(|e| e.to_string())?;
            self.lb = LbManager::restore(config.clone(), maps).unwrap_or_else(|e| {
                eprintln!(
                    "level=warning msg=\"the load-balancing maps do not restore; rewriting them\" error=\"{e}\""
                );
                LbManager::new(config)
            });
        }
        let ops = self
            .lb
            .apply(desired)
            .map_err(|e| format!("restoring the services: {e}"))?;
        self.write(&ops)
            .map_err(|e| format!("writing the service maps: {e}"))
    }
}

/// The load-balancing settings from the agent's keys. With the datapath, the Maglev table
/// size must be the one its programs are built for.
pub(super) fn lb_config(
    config: &AgentConfig,
    node: &str,
    datapath: bool,
) -> Result<LbConfig, String> {
    let maglev = MaglevConfig::new(
        config.bpf_lb_maglev_table_size,
        &config.bpf_lb_maglev_hash_seed,
    )
    .map_err(|e| format!("bpf-lb-maglev-table-size / bpf-lb-maglev-hash-seed: {e}"))?;
    if datapath && maglev.table_size() as usize != MAGLEV_LUT_SIZE {
        return Err(format!(
            "bpf-lb-maglev-table-size: the datapath is built for {MAGLEV_LUT_SIZE}, not {}",
            maglev.table_size()
        ));
    }
    Ok(LbConfig {
        algorithm: match config.bpf_lb_algorithm {
            cilium_core::config::LbAlgorithm::Random => cilium_lb::service::LbAlgorithm::Random,
            cilium_core::config::LbAlgorithm::Maglev => cilium_lb::service::LbAlgorithm::Maglev,
        },
        maglev,
        node_name: node.to_owned(),
        ..LbConfig::default()
    })
}

impl Node {
    /// Creates or updates a service (`PUT /v1/service/{id}`): `id` is 0 or the id the
    /// frontend already has. Stored, then written to the maps in an order that never shows
    /// a packet a missing backend. Returns the service's id and whether it is new.
    pub async fn upsert_service(
        &self,
        id: u32,
        spec: &ServiceSpec,
    ) -> Result<(u16, bool), ApiError> {
        let svc = spec.to_service().map_err(ApiError::bad_request)?;
        let mut st = self.state.lock().await;
        let existing = st.services.lb.service_id(&svc.frontend);
        // A path id names an existing service (ids are chosen by the agent: PUT 0 creates);
        // its frontend is the service's identity and does not change.
        if id != 0 && existing.map(u32::from) != Some(id) {
            let held = st
                .services
                .lb
                .services()
                .into_iter()
                .find(|(i, _)| u32::from(*i) == id)
                .map(|(_, s)| s.frontend);
            return Err(match held {
                None => ApiError::not_found(format!(
                    "service {id} not found (the agent chooses ids: PUT /service/0 creates)"
                )),
                Some(fe) => ApiError::conflict(format!(
                    "service {id} has frontend {fe}, not {} (a service's frontend does not change)",
                    svc.frontend
                )),
            });
        }
        let key = format!("{SERVICES_PREFIX}/{}", svc.frontend);
        let previous = self
            .store
            .get(&key)
            .await
            .map_err(internal("reading the service"))?;
        let value = serde_json::to_vec(&svc).map_err(internal("encoding the service"))?;
        self.store
            .put(&key, &value)
            .await
            .map_err(internal("storing the service"))?;
        let ops = match st.services.lb.upsert(&svc) {
            Ok(ops) => ops,
            Err(e) => {
                let undo = match &previous {
                    Some(v) => self.store.put(&key, v).await,
                    None => self.store.delete(&key).await.map(|_| ()),
                };
                if let Err(u) = undo {
                    eprintln!(
                        "level=error msg=\"undoing a service write\" key={key} error=\"{u}\""
                    );
                }
                return Err(match e {
                    cilium_lb::LbError::IdsExhausted { .. } => ApiError::conflict(e.to_string()),
                    _ => ApiError::bad_request(e.to_string()),
                });
            }
        };
        st.services
            .write(&ops)
            .map_err(internal("writing the service maps"))?;
        let id = st
            .services
            .lb
            .service_id(&svc.frontend)
            .ok_or_else(|| ApiError::internal("the service has no id after its update"))?;
        Ok((id, existing.is_none()))
    }

    /// Deletes the service with this id (`DELETE /v1/service/{id}`).
    pub async fn delete_service(&self, id: u16) -> Result<Service, ApiError> {
        let mut st = self.state.lock().await;
        let svc = st
            .services
            .lb
            .services()
            .into_iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| ApiError::not_found(format!("service {id} not found")))?;
        self.store
            .delete(&format!("{SERVICES_PREFIX}/{}", svc.frontend))
            .await
            .map_err(internal("deleting the service"))?;
        let ops = st.services.lb.delete(&svc.frontend);
        st.services
            .write(&ops)
            .map_err(internal("writing the service maps"))?;
        Ok(svc)
    }

    /// The services, by id.
    pub async fn services(&self) -> Vec<(u16, Service)> {
        self.state.lock().await.services.list()
    }

    /// Brings the services back at start: ids and Maglev tables from the maps (with the
    /// datapath), the services from the store, and writes only the difference (nothing
    /// after a plain restart). Returns how many services there are.
    pub(super) async fn restore_services(&self, config: LbConfig) -> Result<usize, String> {
        let mut desired: Vec<Service> = Vec::new();
        for (key, value) in self
            .store
            .list_prefix(&format!("{SERVICES_PREFIX}/"))
            .await
            .map_err(|e| e.to_string())?
        {
            let parsed = serde_json::from_slice::<Service>(&value)
                .map_err(|e| e.to_string())
                .and_then(|s| s.validate().map(|()| s).map_err(|e| e.to_string()));
            match parsed {
                Ok(s) => desired.push(s),
                Err(e) => eprintln!(
                    "level=warning msg=\"skipping a stored service\" key={key} error=\"{e}\""
                ),
            }
        }
        // In a cluster, the Kubernetes services are part of what the maps should hold: list
        // them now so a restart does not take them out and put them back.
        let k8s = self.k8s_services_now().await?;
        let api_count = desired.len();
        for (_, services) in &k8s {
            desired.extend(services.iter().cloned());
        }
        self.state
            .lock()
            .await
            .services
            .restore(config, &k8s, &desired)?;
        Ok(api_count)
    }

    /// The Kubernetes services of the cluster store, translated, by `<ns>/<name>` (empty
    /// with the embedded store).
    /// A store that cannot be listed is an error: an empty answer would take every
    /// Kubernetes service out of the maps.
    async fn k8s_services_now(&self) -> Result<Vec<(String, Vec<Service>)>, String> {
        use cilium_core::cluster::{ENDPOINTS_PREFIX, SERVICES_PREFIX};
        if !matches!(**self.store(), AnyStore::Etcd(_)) {
            return Ok(Vec::new());
        }
        let list = |prefix: &'static str| async move {
            let listed = self
                .store
                .list_prefix(&format!("{prefix}/"))
                .await
                .map_err(|e| format!("listing {prefix}: {e}"))?;
            // Entries that are not JSON are left out, as the informers leave them out.
            Ok::<BTreeMap<String, Value>, String>(
                listed
                    .into_iter()
                    .filter_map(|(k, v)| serde_json::from_slice(&v).ok().map(|v| (k, v)))
                    .collect(),
            )
        };
        let services = list(SERVICES_PREFIX).await?;
        let endpoints = list(ENDPOINTS_PREFIX).await?;
        Ok(services
            .iter()
            .map(|(key, svc)| {
                let owner = key
                    .strip_prefix(SERVICES_PREFIX)
                    .unwrap_or(key)
                    .trim_start_matches('/')
                    .to_owned();
                let eps = endpoints.get(&format!("{ENDPOINTS_PREFIX}/{owner}"));
                (owner, crate::k8s::services_from_k8s(svc, eps, self.ipv4))
            })
            .collect())
    }

    /// Programs the frontends of one Kubernetes service (`<ns>/<name>`): the given ones
    /// added or updated, the ones it had before and no longer has removed.
    pub(crate) async fn apply_k8s_service(
        &self,
        owner: &str,
        services: Vec<Service>,
    ) -> Result<(), String> {
        self.state
            .lock()
            .await
            .services
            .apply_k8s_service(owner, &services)
    }
}
