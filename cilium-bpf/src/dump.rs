// SPDX-License-Identifier: Apache-2.0

//! The datapath's maps as text: every pinned map's kind, size and entry count
//! ([`summaries`]), and any map's entries as key/value strings ([`map_entries`]) in the
//! forms Cilium prints them (`cilium-dbg bpf ...`, `cilium-dbg map get`).

use std::net::Ipv4Addr;
use std::path::Path;

use aya::maps::{HashOfMaps, MapData, MapInfo};
use serde::Serialize;

use crate::DatapathError;
use crate::error::map_err;
use crate::lb::ServiceWriter;
use crate::maps::{BpfHashMap, EndpointMap, IpcacheMap, MetricsMap, globals_dir, names};
use crate::types::*;

/// `TCP`, `UDP`, `SCTP`, `ICMP`, `ANY`, or the protocol number.
pub fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => "ICMP".into(),
        0 => "ANY".into(),
        other => other.to_string(),
    }
}

/// An ipcache value as Cilium prints it.
pub fn ipcache_value(v: &RemoteEndpointInfo) -> String {
    let tunnel = Ipv4Addr::new(
        v.tunnel_endpoint[0],
        v.tunnel_endpoint[1],
        v.tunnel_endpoint[2],
        v.tunnel_endpoint[3],
    );
    let names = [
        (1u8, "skiptunnel"),
        (2, "hastunnel"),
        (4, "ipv6tunnel"),
        (8, "remotecluster"),
    ];
    let flags: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| v.flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    format!(
        "identity={} encryptkey={} tunnelendpoint={tunnel} flags={}",
        v.sec_identity,
        v.key,
        if flags.is_empty() {
            "<none>".to_owned()
        } else {
            flags.join(",")
        }
    )
}

/// A conntrack key as Cilium's `bpf ct list` prints it. The datapath stores a flow from
/// `A:a` to `B:b` as Cilium does: `daddr` = A, `saddr` = B (the address fields reversed),
/// `sport` = a, `dport` = b; so `A:a -> B:b`, and a service entry `VIP:port -> client:port`
/// (`SVC`).
pub fn ct_key(k: &Ipv4CtTuple) -> String {
    let (from, to) = (Ipv4Addr::from(k.daddr), Ipv4Addr::from(k.saddr));
    let (sport, dport) = (u16::from_be(k.sport), u16::from_be(k.dport));
    let proto = proto_name(k.nexthdr);
    let mut s = if k.flags & 4 != 0 {
        format!("{proto} SVC {to}:{dport} -> {from}:{sport} ")
    } else {
        let dir = if k.flags & 1 != 0 { "IN" } else { "OUT" };
        format!("{proto} {dir} {from}:{sport} -> {to}:{dport} ")
    };
    if k.flags & 2 != 0 {
        s.push_str("related ");
    }
    s
}

/// A NAT key as Cilium's `bpf nat list` prints it (NAT tuples are in the packet's order).
pub fn nat_key(k: &Ipv4CtTuple) -> String {
    let dir = if k.flags & 1 != 0 { "IN" } else { "OUT" };
    format!(
        "{} {dir} {}:{} -> {}:{} ",
        proto_name(k.nexthdr),
        Ipv4Addr::from(k.saddr),
        u16::from_be(k.sport),
        Ipv4Addr::from(k.daddr),
        u16::from_be(k.dport)
    )
}

/// A conntrack entry as Cilium prints it (newest format).
pub fn ct_value(e: &CtEntry) -> String {
    let names = [
        (1u16, "RxClosing"),
        (2, "TxClosing"),
        (4, "Nat64"),
        (8, "LBLoopback"),
        (16, "SeenNonSyn"),
        (32, "NodePort"),
        (64, "ProxyRedirect"),
        (128, "DSR"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(bit, _)| e.flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    format!(
        "expires={} Packets={} Bytes={} RxFlagsSeen={:#04x} LastRxReport={} TxFlagsSeen={:#04x} LastTxReport={} Flags={:#06x} {} RevNAT={} SourceSecurityID={} BackendID={} ",
        e.lifetime,
        e.packets,
        e.bytes,
        e.rx_flags_seen,
        e.last_rx_report,
        e.tx_flags_seen,
        e.last_tx_report,
        e.flags,
        if set.is_empty() {
            "[ ]".to_owned()
        } else {
            format!("[ {} ]", set.join(" "))
        },
        // Network byte order in the entry, as in every map.
        u16::from_be(e.rev_nat_index),
        e.src_sec_id,
        e.backend_id
    )
}

/// A NAT entry as Cilium prints it.
pub fn nat_line(k: &Ipv4CtTuple, v: &Ipv4NatEntry, now_secs: u64) -> String {
    let ingress = k.flags & 1 != 0;
    format!(
        "{}{} {}:{} Created={}sec ago NeedsCT={}",
        nat_key(k),
        if ingress { "XLATE_DST" } else { "XLATE_SRC" },
        Ipv4Addr::from(v.to_addr),
        u16::from_be(v.to_port),
        now_secs.saturating_sub(v.created),
        v.needs_ct
    )
}

/// One pinned map, as `cilium-dbg map list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MapSummary {
    /// The map's name (its pin's file name).
    pub name: String,
    /// The pin.
    pub path: String,
    /// The kernel's map type, e.g. `LruHash`.
    #[serde(rename = "type")]
    pub map_type: String,
    /// Key size in bytes.
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// Entries now (for a map of maps: inner maps); `None` for the event ring buffer.
    pub entries: Option<usize>,
}

/// Every map the datapath pins under `<bpf_root>/tc/globals`, sorted by name.
pub fn summaries(bpf_root: &Path) -> Result<Vec<MapSummary>, DatapathError> {
    let mut out = Vec::new();
    let mut all = names::ALL.to_vec();
    all.sort_unstable();
    for name in all {
        let path = globals_dir(bpf_root).join(name);
        let info = MapInfo::from_pin(&path).map_err(map_err("open pinned", name))?;
        let map_type = info
            .map_type()
            .map(|t| format!("{t:?}"))
            .unwrap_or_else(|_| "Unknown".to_owned());
        let entries = if name == names::EVENTS {
            None
        } else {
            Some(map_entries(bpf_root, name)?.len())
        };
        out.push(MapSummary {
            name: name.to_owned(),
            path: path.display().to_string(),
            map_type,
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
            entries,
        });
    }
    Ok(out)
}

/// The name under which a datapath map is known, or an error naming the known ones.
pub fn known_map(name: &str) -> Result<&'static str, DatapathError> {
    names::ALL
        .iter()
        .find(|n| **n == name)
        .copied()
        .ok_or_else(|| DatapathError::InvalidValue {
            map: "map",
            reason: format!(
                "unknown map {name:?}; the datapath's maps are {}",
                names::ALL.join(", ")
            ),
        })
}

fn sorted(mut rows: Vec<(String, String)>) -> Vec<(String, String)> {
    rows.sort();
    rows
}

/// A map's entries as (key, value) text, sorted by key. The event ring buffer has none
/// to show; a map of maps shows each inner map's size.
pub fn map_entries(bpf_root: &Path, name: &str) -> Result<Vec<(String, String)>, DatapathError> {
    let name = known_map(name)?;
    let rows = match name {
        names::LXC => BpfHashMap::<EndpointKey, EndpointInfo>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(k, v)| {
                let ip = Ipv4Addr::new(k.ip[0], k.ip[1], k.ip[2], k.ip[3]);
                (
                    format!("{ip}:0"),
                    format!(
                        "id={:<5} sec_id={:<5} flags={:#06x} ifindex={:<3} mac={} nodemac={}",
                        v.lxc_id,
                        v.sec_id,
                        v.flags,
                        v.ifindex,
                        mac_text(u64_to_mac(v.mac)),
                        mac_text(u64_to_mac(v.node_mac))
                    ),
                )
            })
            .collect(),
        names::IPCACHE => IpcacheMap::open(bpf_root)?
            .entries()?
            .into_iter()
            .map(|(ip, len, v)| (format!("{ip}/{len}"), ipcache_value(&v)))
            .collect(),
        names::METRICS => MetricsMap::open(bpf_root)?
            .totals()?
            .into_iter()
            .map(|(k, v)| {
                (
                    format!("reason={} dir={}", k.reason, k.dir),
                    format!("packets={} bytes={}", v.count, v.bytes),
                )
            })
            .collect(),
        names::EVENTS => Vec::new(),
        names::LB4_SERVICES => BpfHashMap::<Lb4Key, Lb4Service>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(k, v)| {
                (
                    format!(
                        "{}:{}/{} ({})",
                        Ipv4Addr::from(k.address),
                        u16::from_be(k.dport),
                        proto_name(k.proto),
                        k.backend_slot
                    ),
                    format!(
                        "backend={} count={} revnat={} flags={:#x}/{:#x}",
                        v.backend_id,
                        v.count,
                        u16::from_be(v.rev_nat_index),
                        v.flags,
                        v.flags2
                    ),
                )
            })
            .collect(),
        names::LB4_BACKENDS => BpfHashMap::<u32, Lb4Backend>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(id, b)| {
                (
                    id.to_string(),
                    format!(
                        "{}:{}/{} flags={:#x} cluster={}",
                        Ipv4Addr::from(b.address),
                        u16::from_be(b.port),
                        proto_name(b.proto),
                        b.flags,
                        b.cluster_id
                    ),
                )
            })
            .collect(),
        names::LB4_REVERSE_NAT => BpfHashMap::<u16, Lb4ReverseNat>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(id, r)| {
                (
                    u16::from_be(id).to_string(),
                    format!("{}:{}", Ipv4Addr::from(r.address), u16::from_be(r.port)),
                )
            })
            .collect(),
        names::LB4_MAGLEV => ServiceWriter::open(bpf_root)?
            .maglev_tables()?
            .into_iter()
            .map(|(id, t)| (id.to_string(), format!("table of {} backend ids", t.len())))
            .collect(),
        names::CT4_TCP | names::CT4_ANY => {
            BpfHashMap::<Ipv4CtTuple, CtEntry>::open(bpf_root, name)?
                .entries()?
                .into_iter()
                .map(|(k, v)| {
                    (
                        ct_key(&k).trim_end().to_owned(),
                        ct_value(&v).trim_end().to_owned(),
                    )
                })
                .collect()
        }
        names::SNAT4 => {
            let now = u64::from(crate::conntrack::monotonic_seconds());
            BpfHashMap::<Ipv4CtTuple, Ipv4NatEntry>::open(bpf_root, name)?
                .entries()?
                .into_iter()
                .map(|(k, v)| {
                    let key = nat_key(&k);
                    let line = nat_line(&k, &v, now);
                    (key.trim_end().to_owned(), line[key.len()..].to_owned())
                })
                .collect()
        }
        names::POLICY => {
            let path = globals_dir(bpf_root).join(name);
            let data = MapData::from_pin(&path).map_err(map_err("open pinned", name))?;
            let map = aya::maps::Map::from_map_data(data).map_err(map_err("open pinned", name))?;
            let outer: HashOfMaps<MapData, u32, crate::policy::PolicyTrie> =
                HashOfMaps::try_from(map).map_err(map_err("open pinned", name))?;
            let mut rows = Vec::new();
            for key in outer.keys() {
                let ep = key.map_err(map_err("iterate", name))?;
                let Ok(ep16) = u16::try_from(ep) else {
                    continue;
                };
                let n = crate::policy::read_endpoint_policy(bpf_root, ep16)?.map_or(0, |e| e.len());
                rows.push((format!("endpoint {ep}"), format!("{n} policy entries")));
            }
            rows
        }
        names::LB4_REVERSE_SK => BpfHashMap::<Lb4ReverseSkKey, Lb4ReverseSk>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(k, v)| {
                (
                    format!(
                        "cookie={} {}:{}",
                        k.cookie,
                        Ipv4Addr::from(k.address),
                        u16::from_be(k.port)
                    ),
                    format!(
                        "{}:{} revnat={}",
                        Ipv4Addr::from(v.address),
                        u16::from_be(v.port),
                        u16::from_be(v.rev_nat_index)
                    ),
                )
            })
            .collect(),
        names::LB4_AFFINITY => BpfHashMap::<Lb4AffinityKey, LbAffinityVal>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(k, v)| {
                (
                    format!(
                        "client={} revnat={}",
                        Ipv4Addr::from((k.client_id as u32).to_ne_bytes()),
                        u16::from_be(k.rev_nat_id)
                    ),
                    format!("backend={} last_used={}", v.backend_id, v.last_used),
                )
            })
            .collect(),
        names::LB_AFFINITY_MATCH => BpfHashMap::<LbAffinityMatch, u8>::open(bpf_root, name)?
            .entries()?
            .into_iter()
            .map(|(k, _)| {
                (
                    format!(
                        "backend={} revnat={}",
                        k.backend_id,
                        u16::from_be(k.rev_nat_id)
                    ),
                    "1".to_owned(),
                )
            })
            .collect(),
        names::LXC_IFINDEX => {
            let map = EndpointMap::open(bpf_root)?;
            let mut rows = Vec::new();
            for ifindex in 1..crate::maps::LXC_IFINDEX_MAX {
                if let Some((ip, v)) = map.by_ifindex(ifindex)? {
                    rows.push((
                        format!("{ifindex}"),
                        format!("{ip} id={} sec_id={}", v.lxc_id, v.sec_id),
                    ));
                }
            }
            rows
        }
        names::POLICY_REV => {
            let path = globals_dir(bpf_root).join(name);
            let data = MapData::from_pin(&path).map_err(map_err("open pinned", name))?;
            let rev: aya::maps::Array<MapData, u32> =
                aya::maps::Array::try_from(aya::maps::Map::Array(data))
                    .map_err(map_err("open pinned", name))?;
            let v = rev.get(&0, 0).map_err(map_err("read", name))?;
            vec![("0".to_owned(), format!("revision {v}"))]
        }
        other => {
            return Err(DatapathError::InvalidValue {
                map: "map",
                reason: format!("no view of {other}"),
            });
        }
    };
    Ok(sorted(rows))
}

fn mac_text(b: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_cilium_prints_them() {
        let v = RemoteEndpointInfo {
            sec_identity: 14584,
            tunnel_endpoint: [172, 18, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            flags: 2,
            ..RemoteEndpointInfo::default()
        };
        assert_eq!(
            ipcache_value(&v),
            "identity=14584 encryptkey=0 tunnelendpoint=172.18.0.3 flags=hastunnel"
        );
        // 10.0.0.1:40000 -> 10.0.0.2:80 as conntrack stores it (addresses reversed).
        let k = Ipv4CtTuple {
            daddr: [10, 0, 0, 1],
            saddr: [10, 0, 0, 2],
            dport: 80u16.to_be(),
            sport: 40000u16.to_be(),
            nexthdr: 6,
            flags: 0,
        };
        let e = CtEntry {
            lifetime: 19466,
            flags: 16,
            rx_flags_seen: 0x18,
            tx_flags_seen: 0x1a,
            ..CtEntry::default()
        };
        assert_eq!(
            format!("{}{}", ct_key(&k), ct_value(&e)),
            "TCP OUT 10.0.0.1:40000 -> 10.0.0.2:80 expires=19466 Packets=0 Bytes=0 RxFlagsSeen=0x18 LastRxReport=0 TxFlagsSeen=0x1a LastTxReport=0 Flags=0x0010 [ SeenNonSyn ] RevNAT=0 SourceSecurityID=0 BackendID=0 "
        );
        let n = Ipv4NatEntry {
            created: 100,
            needs_ct: 1,
            to_addr: [192, 168, 10, 200],
            to_port: 41532u16.to_be(),
            ..Ipv4NatEntry::default()
        };
        let svc = Ipv4CtTuple {
            saddr: [10, 96, 0, 10],
            flags: 4,
            ..k
        };
        assert_eq!(ct_key(&svc), "TCP SVC 10.96.0.10:80 -> 10.0.0.1:40000 ");
        // The same flow as NAT stores it (the packet's order).
        let k = Ipv4CtTuple {
            daddr: [10, 0, 0, 2],
            saddr: [10, 0, 0, 1],
            ..k
        };
        assert_eq!(
            nat_line(&k, &n, 112),
            "TCP OUT 10.0.0.1:40000 -> 10.0.0.2:80 XLATE_SRC 192.168.10.200:41532 Created=12sec ago NeedsCT=1"
        );
    }
}
