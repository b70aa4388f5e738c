// SPDX-License-Identifier: Apache-2.0

//! The Rust mirrors in `cilium_bpf::types` against the C definitions, through the BTF of
//! the compiled `types.o`: same size, same offset for every field. Needs no privileges.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use cilium_bpf::types::*;

/// A struct as BTF describes it: size and (member name, byte offset) in order.
#[derive(Debug)]
struct BtfStruct {
    size: u32,
    members: Vec<(String, u32)>,
}

/// Reads every struct of an object's BTF (aya-obj finds and fixes up the section; the type
/// records are decoded here, following the kernel's `btf.h`).
fn structs(object: &[u8]) -> HashMap<String, BtfStruct> {
    let obj = aya_obj::Object::parse(object).expect("object parses");
    let btf = obj.btf.expect("object has BTF").to_bytes();
    let u16_at = |o: usize| u16::from_le_bytes([btf[o], btf[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(btf[o..o + 4].try_into().unwrap());
    assert_eq!(u16_at(0), 0xeb9f, "BTF magic");
    let hdr_len = u32_at(4) as usize;
    let (type_off, type_len) = (u32_at(8) as usize, u32_at(12) as usize);
    let str_off = u32_at(16) as usize;
    let types = hdr_len + type_off;
    let strings = hdr_len + str_off;
    let name = |off: u32| {
        let start = strings + off as usize;
        let end = btf[start..].iter().position(|&b| b == 0).unwrap() + start;
        String::from_utf8_lossy(&btf[start..end]).into_owned()
    };
    let mut out = HashMap::new();
    let mut at = types;
    while at < types + type_len {
        let name_off = u32_at(at);
        let info = u32_at(at + 4);
        let size = u32_at(at + 8);
        let vlen = (info & 0xffff) as usize;
        let kind = (info >> 24) & 0x1f;
        let kind_flag = info >> 31 == 1;
        at += 12;
        let extra = match kind {
            1 => 4,             // INT
            3 => 12,            // ARRAY
            4 | 5 => 12 * vlen, // STRUCT, UNION
            6 => 8 * vlen,      // ENUM
            13 => 8 * vlen,     // FUNC_PROTO
            14 => 4,            // VAR
            15 => 12 * vlen,    // DATASEC
            17 => 4,            // DECL_TAG
            19 => 12 * vlen,    // ENUM64
            _ => 0,
        };
        if kind == 4 {
            let members = (0..vlen)
                .map(|i| {
                    let m = at + 12 * i;
                    let raw = u32_at(m + 8);
                    let bits = if kind_flag { raw & 0x00ff_ffff } else { raw };
                    (name(u32_at(m)), bits / 8)
                })
                .collect();
            out.insert(name(name_off), BtfStruct { size, members });
        }
        at += extra;
    }
    out
}

/// Checks one struct: its size (plus `shift` bytes the Rust type leaves out at the front)
/// and each named member's offset. `""` names an anonymous union member.
fn check(
    all: &HashMap<String, BtfStruct>,
    c_name: &str,
    rust_size: usize,
    shift: u32,
    fields: &[(&str, usize)],
) {
    let s = all
        .get(c_name)
        .unwrap_or_else(|| panic!("struct {c_name} not in BTF"));
    assert_eq!(
        s.size as usize,
        rust_size + shift as usize,
        "size of {c_name}"
    );
    assert_eq!(
        s.members.len() - usize::from(shift > 0),
        fields.len(),
        "member count of {c_name}: {:?}",
        s.members
    );
    for (field, rust_off) in fields {
        let (_, c_off) = s
            .members
            .iter()
            .find(|(n, _)| n == field)
            .unwrap_or_else(|| panic!("{c_name} has no member {field:?}"));
        assert_eq!(
            *c_off,
            *rust_off as u32 + shift,
            "offset of {c_name}.{field}"
        );
    }
}

#[test]
fn rust_types_match_c_layouts() {
    let all = structs(cilium_bpf::objects::TYPES);
    check(
        &all,
        "endpoint_key",
        size_of::<EndpointKey>(),
        0,
        &[
            ("", offset_of!(EndpointKey, ip)),
            ("family", offset_of!(EndpointKey, family)),
            ("key", offset_of!(EndpointKey, key)),
            ("cluster_id", offset_of!(EndpointKey, cluster_id)),
        ],
    );
    check(
        &all,
        "endpoint_info",
        size_of::<EndpointInfo>(),
        0,
        &[
            ("ifindex", offset_of!(EndpointInfo, ifindex)),
            ("unused", offset_of!(EndpointInfo, unused)),
            ("lxc_id", offset_of!(EndpointInfo, lxc_id)),
            ("flags", offset_of!(EndpointInfo, flags)),
            ("pad", offset_of!(EndpointInfo, pad)),
            ("mac", offset_of!(EndpointInfo, mac)),
            ("node_mac", offset_of!(EndpointInfo, node_mac)),
            ("sec_id", offset_of!(EndpointInfo, sec_id)),
            ("parent_ifindex", offset_of!(EndpointInfo, parent_ifindex)),
            ("pad2", offset_of!(EndpointInfo, pad2)),
        ],
    );
    check(
        &all,
        "lxc_ifindex_entry",
        size_of::<LxcIfindexEntry>(),
        0,
        &[
            ("ip4", offset_of!(LxcIfindexEntry, ip4)),
            ("pad", offset_of!(LxcIfindexEntry, pad)),
            ("info", offset_of!(LxcIfindexEntry, info)),
        ],
    );
    // The Rust key leaves out the LPM prefix length (aya's lpm_trie::Key adds it).
    check(
        &all,
        "ipcache_key",
        size_of::<IpcacheKey>(),
        4,
        &[
            ("cluster_id", offset_of!(IpcacheKey, cluster_id)),
            ("pad1", offset_of!(IpcacheKey, pad1)),
            ("family", offset_of!(IpcacheKey, family)),
            ("", offset_of!(IpcacheKey, ip)),
        ],
    );
    check(
        &all,
        "remote_endpoint_info",
        size_of::<RemoteEndpointInfo>(),
        0,
        &[
            ("sec_identity", offset_of!(RemoteEndpointInfo, sec_identity)),
            (
                "tunnel_endpoint",
                offset_of!(RemoteEndpointInfo, tunnel_endpoint),
            ),
            ("pad", offset_of!(RemoteEndpointInfo, pad)),
            ("key", offset_of!(RemoteEndpointInfo, key)),
            ("flags", offset_of!(RemoteEndpointInfo, flags)),
        ],
    );
    check(
        &all,
        "metrics_key",
        size_of::<MetricsKey>(),
        0,
        &[
            ("reason", offset_of!(MetricsKey, reason)),
            ("dir", offset_of!(MetricsKey, dir)),
            ("line", offset_of!(MetricsKey, line)),
            ("file", offset_of!(MetricsKey, file)),
            ("reserved", offset_of!(MetricsKey, reserved)),
        ],
    );
    check(
        &all,
        "metrics_value",
        size_of::<MetricsValue>(),
        0,
        &[
            ("count", offset_of!(MetricsValue, count)),
            ("bytes", offset_of!(MetricsValue, bytes)),
        ],
    );
    check(
        &all,
        "lb4_key",
        size_of::<Lb4Key>(),
        0,
        &[
            ("address", offset_of!(Lb4Key, address)),
            ("dport", offset_of!(Lb4Key, dport)),
            ("backend_slot", offset_of!(Lb4Key, backend_slot)),
            ("proto", offset_of!(Lb4Key, proto)),
            ("scope", offset_of!(Lb4Key, scope)),
            ("pad", offset_of!(Lb4Key, pad)),
        ],
    );
    check(
        &all,
        "lb4_service",
        size_of::<Lb4Service>(),
        0,
        &[
            ("", offset_of!(Lb4Service, backend_id)),
            ("count", offset_of!(Lb4Service, count)),
            ("rev_nat_index", offset_of!(Lb4Service, rev_nat_index)),
            ("flags", offset_of!(Lb4Service, flags)),
            ("flags2", offset_of!(Lb4Service, flags2)),
            ("qcount", offset_of!(Lb4Service, qcount)),
        ],
    );
    check(
        &all,
        "lb4_backend",
        size_of::<Lb4Backend>(),
        0,
        &[
            ("address", offset_of!(Lb4Backend, address)),
            ("port", offset_of!(Lb4Backend, port)),
            ("proto", offset_of!(Lb4Backend, proto)),
            ("flags", offset_of!(Lb4Backend, flags)),
            ("cluster_id", offset_of!(Lb4Backend, cluster_id)),
            ("zone", offset_of!(Lb4Backend, zone)),
            ("pad", offset_of!(Lb4Backend, pad)),
        ],
    );
    check(
        &all,
        "lb4_reverse_nat",
        size_of::<Lb4ReverseNat>(),
        0,
        &[
            ("address", offset_of!(Lb4ReverseNat, address)),
            ("port", offset_of!(Lb4ReverseNat, port)),
        ],
    );
    check(
        &all,
        "ipv4_ct_tuple",
        size_of::<Ipv4CtTuple>(),
        0,
        &[
            ("daddr", offset_of!(Ipv4CtTuple, daddr)),
            ("saddr", offset_of!(Ipv4CtTuple, saddr)),
            ("dport", offset_of!(Ipv4CtTuple, dport)),
            ("sport", offset_of!(Ipv4CtTuple, sport)),
            ("nexthdr", offset_of!(Ipv4CtTuple, nexthdr)),
            ("flags", offset_of!(Ipv4CtTuple, flags)),
        ],
    );
    check(
        &all,
        "ct_entry",
        size_of::<CtEntry>(),
        0,
        &[
            ("policy_rev", offset_of!(CtEntry, policy_rev)),
            ("reply_ifindex", offset_of!(CtEntry, reply_ifindex)),
            ("backend_id", offset_of!(CtEntry, backend_id)),
            ("packets", offset_of!(CtEntry, packets)),
            ("bytes", offset_of!(CtEntry, bytes)),
            ("lifetime", offset_of!(CtEntry, lifetime)),
            ("flags", offset_of!(CtEntry, flags)),
            ("rev_nat_index", offset_of!(CtEntry, rev_nat_index)),
            ("ifindex", offset_of!(CtEntry, ifindex)),
            ("tx_flags_seen", offset_of!(CtEntry, tx_flags_seen)),
            ("rx_flags_seen", offset_of!(CtEntry, rx_flags_seen)),
            ("src_sec_id", offset_of!(CtEntry, src_sec_id)),
            ("last_tx_report", offset_of!(CtEntry, last_tx_report)),
            ("last_rx_report", offset_of!(CtEntry, last_rx_report)),
        ],
    );
    check(
        &all,
        "ipv4_nat_entry",
        size_of::<Ipv4NatEntry>(),
        0,
        &[
            ("created", offset_of!(Ipv4NatEntry, created)),
            ("needs_ct", offset_of!(Ipv4NatEntry, needs_ct)),
            ("pad1", offset_of!(Ipv4NatEntry, pad1)),
            ("pad2", offset_of!(Ipv4NatEntry, pad2)),
            ("to_addr", offset_of!(Ipv4NatEntry, to_addr)),
            ("to_port", offset_of!(Ipv4NatEntry, to_port)),
            ("pad3", offset_of!(Ipv4NatEntry, pad3)),
        ],
    );
    check(
        &all,
        "policy_key",
        size_of::<PolicyKey>(),
        0,
        &[
            ("prefixlen", offset_of!(PolicyKey, prefixlen)),
            ("sec_label", offset_of!(PolicyKey, sec_label)),
            ("egress", offset_of!(PolicyKey, egress)),
            ("protocol", offset_of!(PolicyKey, protocol)),
            ("dport", offset_of!(PolicyKey, dport)),
        ],
    );
    check(
        &all,
        "policy_entry",
        size_of::<PolicyEntry>(),
        0,
        &[
            ("proxy_port", offset_of!(PolicyEntry, proxy_port)),
            ("flags", offset_of!(PolicyEntry, flags)),
            ("auth_type", offset_of!(PolicyEntry, auth_type)),
            (
                "proxy_port_priority",
                offset_of!(PolicyEntry, proxy_port_priority),
            ),
            ("pad1", offset_of!(PolicyEntry, pad1)),
            ("pad2", offset_of!(PolicyEntry, pad2)),
        ],
    );
    check(
        &all,
        "policy_stats_key",
        size_of::<PolicyStatsKey>(),
        0,
        &[
            ("endpoint_id", offset_of!(PolicyStatsKey, endpoint_id)),
            ("pad1", offset_of!(PolicyStatsKey, pad1)),
            ("prefix_len", offset_of!(PolicyStatsKey, prefix_len)),
            ("sec_label", offset_of!(PolicyStatsKey, sec_label)),
            ("egress", offset_of!(PolicyStatsKey, egress)),
            ("protocol", offset_of!(PolicyStatsKey, protocol)),
            ("dport", offset_of!(PolicyStatsKey, dport)),
        ],
    );
    check(
        &all,
        "policy_stats_value",
        size_of::<PolicyStatsValue>(),
        0,
        &[
            ("packets", offset_of!(PolicyStatsValue, packets)),
            ("bytes", offset_of!(PolicyStatsValue, bytes)),
        ],
    );
    check(
        &all,
        "datapath_event",
        size_of::<RawEvent>(),
        0,
        &[
            ("type", offset_of!(RawEvent, event_type)),
            ("subtype", offset_of!(RawEvent, subtype)),
            ("source", offset_of!(RawEvent, source)),
            ("hash", offset_of!(RawEvent, hash)),
            ("len_orig", offset_of!(RawEvent, len_orig)),
            ("version", offset_of!(RawEvent, version)),
            ("ethertype", offset_of!(RawEvent, ethertype)),
            ("src_label", offset_of!(RawEvent, src_label)),
            ("dst_label", offset_of!(RawEvent, dst_label)),
            ("src_id", offset_of!(RawEvent, src_id)),
            ("dst_id", offset_of!(RawEvent, dst_id)),
            ("ifindex", offset_of!(RawEvent, ifindex)),
            ("saddr", offset_of!(RawEvent, saddr)),
            ("daddr", offset_of!(RawEvent, daddr)),
            ("sport", offset_of!(RawEvent, sport)),
            ("dport", offset_of!(RawEvent, dport)),
            ("proto", offset_of!(RawEvent, proto)),
            ("tcp_flags", offset_of!(RawEvent, tcp_flags)),
            ("icmp_type", offset_of!(RawEvent, icmp_type)),
            ("reply", offset_of!(RawEvent, reply)),
            ("ktime", offset_of!(RawEvent, ktime)),
        ],
    );
}

#[test]
fn the_loaded_object_uses_the_same_types() {
    // The program object's map definitions carry the same struct sizes as types.o.
    let lxc = structs(cilium_bpf::objects::BPF_LXC);
    let types = structs(cilium_bpf::objects::TYPES);
    for name in [
        "endpoint_key",
        "endpoint_info",
        "lxc_ifindex_entry",
        "ipcache_key",
        "remote_endpoint_info",
        "lb4_key",
        "lb4_service",
        "ct_entry",
        "ipv4_nat_entry",
    ] {
        assert_eq!(lxc[name].size, types[name].size, "{name}");
        assert_eq!(lxc[name].members, types[name].members, "{name}");
    }
}
