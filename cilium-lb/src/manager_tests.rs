// SPDX-License-Identifier: Apache-2.0

use std::collections::HashMap;
use std::sync::Arc;

use proptest::prelude::*;

use crate::LbError;
use crate::manager::{LbConfig, LbManager, MapOp, RestoredMaps};
use crate::maps::{
    Lb4Backend, Lb4Key, Lb4RevNat, Lb4Service, SCOPE_EXTERNAL, SCOPE_INTERNAL, flags,
};
use crate::service::{
    Backend, BackendState, L3n4Addr, LbAlgorithm, Service, ServiceType, TrafficPolicy,
};

fn addr(s: &str) -> L3n4Addr {
    s.parse().unwrap()
}

fn backend(s: &str, state: BackendState) -> Backend {
    let mut b = Backend::new(addr(s));
    b.state = state;
    b
}

fn webpod() -> Service {
    Service::new(
        "default/webpod",
        addr("10.96.0.10:80/TCP"),
        ServiceType::ClusterIP,
    )
    .with_backend(Backend::new(addr("172.20.1.10:80/TCP")))
    .with_backend(Backend::new(addr("172.20.2.10:80/TCP")))
}

/// The maps as the datapath would hold them, fed with `MapOp`s.
#[derive(Debug, Default, Clone)]
struct SimMaps {
    services: HashMap<Lb4Key, Lb4Service>,
    backends: HashMap<u32, Lb4Backend>,
    rev_nat: HashMap<u16, Lb4RevNat>,
    maglev: HashMap<u16, Arc<[u32]>>,
    affinity: std::collections::HashSet<(u32, u16)>,
}

impl SimMaps {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match op {
                MapOp::UpsertBackend { id, value } => {
                    self.backends.insert(*id, *value);
                }
                MapOp::UpsertRevNat { index, value } => {
                    self.rev_nat.insert(*index, *value);
                }
                MapOp::UpsertMaglev { index, table } => {
                    self.maglev.insert(*index, table.clone());
                }
                MapOp::UpsertService { key, value } => {
                    self.services.insert(*key, *value);
                }
                MapOp::DeleteService { key } => {
                    assert!(
                        self.services.remove(key).is_some(),
                        "delete of missing {key:?}"
                    );
                }
                MapOp::DeleteMaglev { index } => {
                    assert!(self.maglev.remove(index).is_some());
                }
                MapOp::DeleteRevNat { index } => {
                    assert!(self.rev_nat.remove(index).is_some());
                }
                MapOp::UpsertAffinityMatch {
                    backend_id,
                    rev_nat_index,
                } => {
                    self.affinity.insert((*backend_id, *rev_nat_index));
                }
                MapOp::DeleteAffinityMatch {
                    backend_id,
                    rev_nat_index,
                } => {
                    assert!(self.affinity.remove(&(*backend_id, *rev_nat_index)));
                }
                MapOp::DeleteBackend { id } => {
                    assert!(
                        self.backends.remove(id).is_some(),
                        "delete of missing backend {id}"
                    );
                }
            }
            self.check_consistent();
        }
    }

    /// What a packet may see at any moment: every slot a master entry covers exists and
    /// names an existing backend; every Maglev table names existing backends.
    fn check_consistent(&self) {
        for (k, v) in &self.services {
            if k.backend_slot != 0 {
                continue;
            }
            for slot in 1..=(v.count + v.qcount) {
                let sk = Lb4Key {
                    backend_slot: slot,
                    ..*k
                };
                let s = self
                    .services
                    .get(&sk)
                    .unwrap_or_else(|| panic!("master {k:?} covers missing slot {slot}"));
                assert!(
                    self.backends.contains_key(&s.backend_id),
                    "slot {sk:?} names missing backend {}",
                    s.backend_id
                );
            }
            assert!(self.rev_nat.contains_key(&v.rev_nat_index));
        }
        for t in self.maglev.values() {
            for id in t.iter() {
                assert!(
                    self.backends.contains_key(id),
                    "maglev names missing backend {id}"
                );
            }
        }
    }

    fn restored(&self) -> RestoredMaps {
        RestoredMaps {
            services: self.services.iter().map(|(k, v)| (*k, *v)).collect(),
            backends: self.backends.iter().map(|(k, v)| (*k, *v)).collect(),
            rev_nat: self.rev_nat.iter().map(|(k, v)| (*k, *v)).collect(),
            maglev: self.maglev.iter().map(|(k, v)| (*k, v.to_vec())).collect(),
            affinity_match: self.affinity.iter().copied().collect(),
        }
    }
}

#[test]
fn seed_clusterip_entries() {
    let mut lb = LbManager::new(LbConfig::default());
    let svc = webpod();
    let mut maps = SimMaps::default();
    maps.apply(&lb.upsert(&svc).unwrap());
    let id = lb.service_id(&svc.frontend).unwrap();
    assert_eq!(id, 1);
    let master = maps.services[&Lb4Key {
        address: "10.96.0.10".parse().unwrap(),
        dport: 80,
        backend_slot: 0,
        proto: 6,
        scope: SCOPE_EXTERNAL,
    }];
    assert_eq!(master.count, 2);
    assert_eq!(master.qcount, 0);
    assert_eq!(master.rev_nat_index, 1);
    assert_eq!(master.flags, 0, "a ClusterIP is not routable");
    assert_eq!(maps.backends.len(), 2);
    assert_eq!(maps.rev_nat[&1].port, 80);
    assert!(maps.maglev.is_empty(), "random is the default algorithm");
}

#[test]
fn slots_ordered_by_state() {
    let mut lb = LbManager::new(LbConfig::default());
    let svc = Service::new("x", addr("10.96.0.1:443/TCP"), ServiceType::ClusterIP)
        .with_backend(backend("10.0.0.1:1/TCP", BackendState::Quarantined))
        .with_backend(backend("10.0.0.2:1/TCP", BackendState::Terminating))
        .with_backend(backend("10.0.0.3:1/TCP", BackendState::Maintenance))
        .with_backend(backend("10.0.0.4:1/TCP", BackendState::Active));
    lb.upsert(&svc).unwrap();
    let e = lb.entries(&svc.frontend);
    let master = e[0].1;
    assert_eq!((master.count, master.qcount), (1, 2));
    let ids: Vec<u32> = e[1..].iter().map(|(_, v)| v.backend_id).collect();
    let id = |s| lb.backend_id(&addr(s)).unwrap();
    assert_eq!(
        ids,
        [
            id("10.0.0.4:1/TCP"),
            id("10.0.0.2:1/TCP"),
            id("10.0.0.1:1/TCP")
        ]
    );
    assert_eq!(e[3].1.flags2, flags::QUARANTINED);

    // No active backend: terminating ones take new flows.
    let mut svc2 = svc.clone();
    svc2.backends.retain(|b| b.state != BackendState::Active);
    lb.upsert(&svc2).unwrap();
    let m = lb.entries(&svc.frontend)[0].1;
    assert_eq!((m.count, m.qcount), (1, 1));
}

#[test]
fn maglev_only_where_cilium_builds_it() {
    let cfg = LbConfig {
        algorithm: LbAlgorithm::Maglev,
        ..LbConfig::default()
    };
    let mut lb = LbManager::new(cfg.clone());
    let cip = webpod();
    let mut np = webpod();
    np.frontend = addr("192.168.10.100:30080/TCP");
    np.svc_type = ServiceType::NodePort;
    np.backends[1].state = BackendState::Terminating;
    lb.upsert(&cip).unwrap();
    lb.upsert(&np).unwrap();
    assert!(lb.maglev_table(&cip.frontend).is_none());
    let table = lb.maglev_table(&np.frontend).unwrap();
    let active = lb.backend_id(&np.backends[0].address).unwrap();
    assert_eq!(table.len(), 16381);
    assert!(table.iter().all(|&id| id == active), "only active backends");
    let master = lb.entries(&np.frontend)[0].1;
    assert_eq!(master.flags, flags::NODEPORT | flags::ROUTABLE);

    // bpf-lb-external-clusterip gives ClusterIPs a table too.
    let mut lb = LbManager::new(LbConfig {
        external_clusterip: true,
        ..cfg
    });
    lb.upsert(&cip).unwrap();
    assert!(lb.maglev_table(&cip.frontend).is_some());

    // A service asking for Maglev gets it under a random node default, and its algorithm
    // lands in the master entry with bpf-lb-algorithm-annotation.
    let mut lb = LbManager::new(LbConfig {
        algorithm_annotation: true,
        ..LbConfig::default()
    });
    let mut asks = webpod();
    asks.algorithm = Some(LbAlgorithm::Maglev);
    asks.session_affinity_timeout = Some(10800);
    lb.upsert(&asks).unwrap();
    assert!(lb.maglev_table(&asks.frontend).is_some());
    let m = lb.entries(&asks.frontend)[0].1;
    assert_eq!(m.backend_id, (2 << 24) | 10800);
    assert_ne!(m.flags & flags::AFFINITY, 0);
}

#[test]
fn two_scopes_for_local_external_policy() {
    let mut lb = LbManager::new(LbConfig {
        node_name: "k8s-w1".into(),
        ..LbConfig::default()
    });
    let mut np = webpod();
    np.frontend = addr("192.168.10.101:30080/TCP");
    np.svc_type = ServiceType::NodePort;
    np.external_traffic_policy = TrafficPolicy::Local;
    np.backends[0].node_name = Some("k8s-w1".into());
    np.backends[1].node_name = Some("k8s-w2".into());
    lb.upsert(&np).unwrap();
    let e = lb.entries(&np.frontend);
    let masters: Vec<_> = e.iter().filter(|(k, _)| k.backend_slot == 0).collect();
    assert_eq!(masters.len(), 2);
    let ext = masters
        .iter()
        .find(|(k, _)| k.scope == SCOPE_EXTERNAL)
        .unwrap()
        .1;
    let int = masters
        .iter()
        .find(|(k, _)| k.scope == SCOPE_INTERNAL)
        .unwrap()
        .1;
    assert_eq!(ext.count, 1, "external traffic: local backends only");
    assert_eq!(int.count, 2);
    assert_ne!(ext.flags2 & flags::TWO_SCOPES, 0);
    assert_ne!(ext.flags & flags::EXT_LOCAL_SCOPE, 0);
}

#[test]
fn replacing_a_backend_adds_before_it_deletes() {
    let mut lb = LbManager::new(LbConfig::default());
    let mut maps = SimMaps::default();
    let mut svc = webpod();
    maps.apply(&lb.upsert(&svc).unwrap());
    svc.backends[1] = Backend::new(addr("172.20.2.77:80/TCP"));
    let ops = lb.upsert(&svc).unwrap();
    maps.apply(&ops);
    assert_eq!(ops.len(), 3, "{ops:?}");
    assert!(matches!(ops[0], MapOp::UpsertBackend { .. }));
    assert!(matches!(ops[1], MapOp::UpsertService { .. }));
    assert!(matches!(ops[2], MapOp::DeleteBackend { .. }));
    // Shrinking: the master shrinks before the slot goes.
    svc.backends.pop();
    let ops = lb.upsert(&svc).unwrap();
    maps.apply(&ops);
    let kinds: Vec<_> = ops
        .iter()
        .map(|o| match o {
            MapOp::UpsertService { key, .. } => format!("upsert-slot{}", key.backend_slot),
            MapOp::DeleteService { key } => format!("delete-slot{}", key.backend_slot),
            MapOp::DeleteBackend { .. } => "delete-backend".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(kinds, ["upsert-slot0", "delete-slot2", "delete-backend"]);
    // Deleting the service removes everything.
    maps.apply(&lb.delete(&svc.frontend));
    assert!(maps.services.is_empty() && maps.backends.is_empty() && maps.rev_nat.is_empty());
}

#[test]
fn restart_restores_ids_and_changes_nothing() {
    let cfg = LbConfig {
        algorithm: LbAlgorithm::Maglev,
        ..LbConfig::default()
    };
    let mut lb = LbManager::new(cfg.clone());
    let mut maps = SimMaps::default();
    let mut np = webpod();
    np.frontend = addr("192.168.10.100:30080/TCP");
    np.svc_type = ServiceType::NodePort;
    let desired = vec![webpod(), np];
    maps.apply(&lb.apply(&desired).unwrap());
    let ids: Vec<_> = desired.iter().map(|s| lb.service_id(&s.frontend)).collect();

    let mut again = LbManager::restore(cfg, maps.restored()).unwrap();
    assert_eq!(
        desired
            .iter()
            .map(|s| again.service_id(&s.frontend))
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(again.apply(&desired).unwrap(), vec![]);
    // A service gone while the agent was down is removed, with its backends.
    let ops = again.apply(&desired[..1]).unwrap();
    maps.apply(&ops);
    assert_eq!(maps.rev_nat.len(), 1);
    assert!(maps.maglev.is_empty());
}

#[test]
fn restore_rejects_inconsistent_maps() {
    let mut lb = LbManager::new(LbConfig::default());
    let mut maps = SimMaps::default();
    maps.apply(&lb.upsert(&webpod()).unwrap());
    let mut r = maps.restored();
    r.backends.pop();
    assert!(matches!(
        LbManager::restore(LbConfig::default(), r),
        Err(LbError::InvalidRestore { .. })
    ));
    let mut r = maps.restored();
    r.backends.push(r.backends[0]);
    assert!(LbManager::restore(LbConfig::default(), r).is_err());
}

#[test]
fn errors_change_nothing() {
    let mut lb = LbManager::new(LbConfig {
        max_backends: 2,
        ..LbConfig::default()
    });
    lb.upsert(&webpod()).unwrap();
    let before = lb.entries(&webpod().frontend);
    let mut big = webpod();
    big.frontend = addr("10.96.0.11:80/TCP");
    big.backends.push(Backend::new(addr("172.20.3.10:80/TCP")));
    assert!(matches!(
        lb.upsert(&big),
        Err(LbError::IdsExhausted {
            what: "backend",
            ..
        })
    ));
    assert!(lb.service_id(&big.frontend).is_none());
    assert!(matches!(
        lb.apply(&[webpod(), big]),
        Err(LbError::IdsExhausted { .. })
    ));
    assert_eq!(lb.entries(&webpod().frontend), before);
    let mut v6 = webpod();
    v6.frontend = addr("[fd00::10]:80/TCP");
    v6.backends = vec![Backend::new(addr("[fd00::1]:80/TCP"))];
    assert!(matches!(
        lb.upsert(&v6),
        Err(LbError::UnsupportedFamily { .. })
    ));
    assert!(lb.apply(&[webpod(), webpod()]).is_err());
}

#[test]
fn backend_state_changes_follow_cilium() {
    let mut lb = LbManager::new(LbConfig::default());
    let svc = webpod();
    let mut maps = SimMaps::default();
    maps.apply(&lb.upsert(&svc).unwrap());
    let b = svc.backends[0].address;
    maps.apply(
        &lb.set_backend_state(&b, 0, BackendState::Quarantined)
            .unwrap(),
    );
    let m = lb.entries(&svc.frontend)[0].1;
    assert_eq!((m.count, m.qcount), (1, 1));
    assert!(
        lb.set_backend_state(&b, 0, BackendState::Maintenance)
            .is_err()
    );
    maps.apply(&lb.set_backend_state(&b, 0, BackendState::Active).unwrap());
    assert_eq!(lb.entries(&svc.frontend)[0].1.count, 2);
    assert!(
        lb.set_backend_state(&addr("1.1.1.1:1/TCP"), 0, BackendState::Active)
            .is_err()
    );
}

fn arb_service() -> impl Strategy<Value = Service> {
    (
        0u8..6,
        proptest::collection::vec((0u8..12, 0u8..4), 0..6),
        prop_oneof![Just(ServiceType::ClusterIP), Just(ServiceType::NodePort)],
        any::<bool>(),
    )
        .prop_map(|(fe, backends, t, affinity)| {
            let mut svc = Service::new(
                "p",
                L3n4Addr::new(
                    format!("10.96.0.{fe}").parse().unwrap(),
                    80,
                    crate::maglev::L4Proto::Tcp,
                ),
                t,
            );
            for (b, st) in backends {
                let a = L3n4Addr::new(
                    format!("172.20.0.{b}").parse().unwrap(),
                    8080,
                    crate::maglev::L4Proto::Tcp,
                );
                if svc.backends.iter().any(|x| x.address == a) {
                    continue;
                }
                let mut be = Backend::new(a);
                be.state = BackendState::from_code(st).unwrap();
                svc.backends.push(be);
            }
            svc.session_affinity_timeout = affinity.then_some(60);
            svc
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any sequence of desired states: the ops, applied in order, never expose a missing
    /// backend, and leave the maps equal to a from-scratch restore of the same state.
    #[test]
    fn diffs_keep_maps_consistent(rounds in proptest::collection::vec(proptest::collection::vec(arb_service(), 0..5), 1..6)) {
        let cfg = LbConfig {
            algorithm: LbAlgorithm::Maglev,
            maglev: crate::maglev::MaglevConfig::new(251, crate::maglev::DEFAULT_HASH_SEED).unwrap(),
            ..LbConfig::default()
        };
        let mut lb = LbManager::new(cfg.clone());
        let mut maps = SimMaps::default();
        for round in rounds {
            let mut desired: Vec<Service> = Vec::new();
            for s in round {
                if !desired.iter().any(|d| d.frontend == s.frontend) {
                    desired.push(s);
                }
            }
            let ops = lb.apply(&desired).unwrap();
            maps.apply(&ops);
            // Entries match the manager's view.
            let mut want = 0;
            for s in &desired {
                for (k, v) in lb.entries(&s.frontend) {
                    prop_assert_eq!(maps.services.get(&k), Some(&v));
                    want += 1;
                }
            }
            prop_assert_eq!(maps.services.len(), want);
            // A restart changes nothing.
            let mut again = LbManager::restore(cfg.clone(), maps.restored()).unwrap();
            prop_assert_eq!(again.apply(&desired).unwrap(), vec![]);
        }
    }
}
