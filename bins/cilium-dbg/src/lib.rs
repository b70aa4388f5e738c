// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg`, as a library: Cilium's debug views of the pinned datapath maps, formatted
//! as Cilium prints them (Go tabwriter columns: minimum width 5, padding 3) or as JSON.
//! Rows are sorted (Cilium prints them in map order).
//!
//! ```
//! use cilium_dbg::table;
//! let rows = vec![("10.0.0.1/32".to_owned(), vec!["identity=256".to_owned()])];
//! let out = table(&["IP PREFIX/ADDRESS", "IDENTITY"], &rows);
//! assert_eq!(out, "IP PREFIX/ADDRESS   IDENTITY\n10.0.0.1/32         identity=256   \n");
//! ```
#![forbid(unsafe_code)]

pub mod agent;
pub mod cleanup;
pub mod client;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Ipv4Addr;

use cilium_bpf::DatapathError;
pub use cilium_bpf::dump::{ct_key, ct_value, ipcache_value, nat_line, proto_name};
use cilium_bpf::maps::Maps;

/// Key/value rows: each key with one or more values (continuation lines).
pub type Rows = Vec<(String, Vec<String>)>;

/// A two-column table as Cilium's `TablePrinter` writes it: header `A\tB`, each value
/// `key\tvalue\t`, further values of a key with an empty key.
pub fn table(header: &[&str; 2], rows: &Rows) -> String {
    // Go's minwidth 5 includes the padding of 3; this crate's excludes it.
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(2).padding(3);
    let _ = writeln!(tw, "{}\t{}", header[0], header[1]);
    for (key, values) in rows {
        for (i, v) in values.iter().enumerate() {
            let k = if i == 0 { key.as_str() } else { "" };
            let _ = writeln!(tw, "{k}\t{v}\t");
        }
    }
    let bytes = tw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Rows as JSON: key -> list of values (what `-o json` prints for these views).
pub fn rows_json(rows: &Rows) -> serde_json::Value {
    let map: BTreeMap<&str, &Vec<String>> = rows.iter().map(|(k, v)| (k.as_str(), v)).collect();
    serde_json::json!(map)
}

/// Which `bpf lb list` view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LbView {
    /// Frontend slots and their backends.
    Services,
    /// Raw service values.
    Frontends,
    /// Backends by id.
    Backends,
    /// Reverse NAT entries by id.
    RevNat,
}

/// `bpf lb list`: the header and rows of a view.
pub fn lb_list(maps: &Maps, view: LbView) -> Result<([&'static str; 2], Rows), DatapathError> {
    let mut rows: Rows = Vec::new();
    let header = match view {
        LbView::Services => ["SERVICE ADDRESS", "BACKEND ADDRESS (REVNAT_ID) (SLOT)"],
        LbView::Frontends => ["SERVICE ADDRESS", "BACKEND ID"],
        LbView::Backends | LbView::RevNat => ["ID", "BACKEND ADDRESS (REVNAT_ID) (SLOT)"],
    };
    match view {
        LbView::Services | LbView::Frontends => {
            let backends: BTreeMap<u32, _> = maps.lb4_backends.entries()?.into_iter().collect();
            let mut entries = maps.lb4_services.entries()?;
            entries.sort_by_key(|(k, _)| {
                (
                    k.address,
                    u16::from_be(k.dport),
                    k.proto,
                    k.scope,
                    k.backend_slot,
                )
            });
            for (k, v) in entries {
                let mut key = format!(
                    "{}:{}/{}",
                    Ipv4Addr::from(k.address),
                    u16::from_be(k.dport),
                    proto_name(k.proto)
                );
                if k.scope == cilium_lb::maps::SCOPE_INTERNAL {
                    key.push_str("/i");
                }
                let key = format!("{key} ({})", k.backend_slot);
                let rev_nat = u16::from_be(v.rev_nat_index);
                let value = if view == LbView::Frontends {
                    format!(
                        "{} {}[{}] ({}) [{:#x} {:#x}]",
                        v.backend_id, v.count, v.qcount, rev_nat, v.flags, v.flags2
                    )
                } else if k.backend_slot == 0 {
                    format!(
                        "0.0.0.0:0 ({rev_nat}) (0) [{}] ",
                        cilium_lb::maps::describe_flags(v.flags, v.flags2)
                    )
                } else {
                    match backends.get(&v.backend_id) {
                        Some(b) => format!(
                            "{}:{}/{} ({rev_nat}) ({})",
                            Ipv4Addr::from(b.address),
                            u16::from_be(b.port),
                            proto_name(b.proto),
                            k.backend_slot
                        ),
                        None => format!("backend {} not found", v.backend_id),
                    }
                };
                rows.push((key, vec![value]));
            }
        }
        LbView::Backends => {
            let mut entries = maps.lb4_backends.entries()?;
            entries.sort_by_key(|(id, _)| *id);
            for (id, b) in entries {
                let mut addr = Ipv4Addr::from(b.address).to_string();
                if b.cluster_id != 0 {
                    addr = format!("{addr}@{}", b.cluster_id);
                }
                rows.push((
                    id.to_string(),
                    vec![format!("{}://{addr}", proto_name(b.proto))],
                ));
            }
        }
        LbView::RevNat => {
            let mut entries = maps.lb4_reverse_nat.entries()?;
            entries.sort_by_key(|(id, _)| u16::from_be(*id));
            for (id, r) in entries {
                rows.push((
                    u16::from_be(id).to_string(),
                    vec![format!(
                        "{}:{}",
                        Ipv4Addr::from(r.address),
                        u16::from_be(r.port)
                    )],
                ));
            }
        }
    }
    Ok((header, rows))
}

/// `bpf ipcache list`.
pub fn ipcache_list(maps: &Maps) -> Result<Rows, DatapathError> {
    let mut entries = maps.ipcache.entries()?;
    entries.sort_by_key(|(ip, len, _)| (*ip, *len));
    Ok(entries
        .into_iter()
        .map(|(ip, len, v)| (format!("{ip}/{len}"), vec![ipcache_value(&v)]))
        .collect())
}

/// `bpf ct list global`: one line per entry, TCP map then the other protocols.
pub fn ct_list(maps: &Maps) -> Result<Vec<String>, DatapathError> {
    let mut out = Vec::new();
    for map in [&maps.ct4_tcp, &maps.ct4_any] {
        let mut entries = map.entries()?;
        entries.sort_by_key(|(k, _)| (k.daddr, k.saddr, k.sport, k.dport, k.nexthdr, k.flags));
        out.extend(
            entries
                .iter()
                .map(|(k, v)| format!("{}{}", ct_key(k), ct_value(v))),
        );
    }
    Ok(out)
}

/// `bpf nat list`.
pub fn nat_list(maps: &Maps, now_secs: u64) -> Result<Vec<String>, DatapathError> {
    let mut entries = maps.snat4.entries()?;
    entries.sort_by_key(|(k, _)| (k.flags, k.saddr, k.sport, k.daddr, k.dport, k.nexthdr));
    Ok(entries
        .iter()
        .map(|(k, v)| nat_line(k, v, now_secs))
        .collect())
}

/// `bpf policy get`: an endpoint's policy entries in Cilium's columns (identities are
/// numeric: labels come from the agent; 0 is `ANY` unless `numeric`, as upstream's `-n`
/// prints it), with what each allowed (`stats`, one per entry: packets and bytes, `-`
/// where nothing was counted) and the entry's protocol + port prefix length.
pub fn policy_table(
    entries: &[cilium_bpf::policy::LpmEntry],
    stats: &[Option<(u64, u64)>],
    numeric: bool,
) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(2).padding(3);
    let _ = writeln!(
        tw,
        "POLICY\tDIRECTION\tIDENTITY\tPORT/PROTO\tPROXY PORT\tAUTH TYPE\tBYTES\tPACKETS\tPREFIX\t"
    );
    for (i, e) in entries.iter().enumerate() {
        let (packets, bytes) = match stats.get(i).copied().flatten() {
            Some((p, b)) => (p.to_string(), b.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        let _ = writeln!(
            tw,
            "{}\t{}\t{}\t{}\tNONE\tdisabled\t{bytes}\t{packets}\t{}\t",
            if e.deny { "Deny" } else { "Allow" },
            if e.egress { "Egress" } else { "Ingress" },
            if e.identity == 0 && !numeric {
                "ANY".to_owned()
            } else {
                e.identity.to_string()
            },
            e.port_proto(),
            e.prefixlen
                .saturating_sub(cilium_bpf::policy::STATIC_PREFIX_BITS)
        );
    }
    let bytes = tw.into_inner().unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_like_go_tabwriter() {
        let rows: Rows = vec![
            (
                "10.96.0.10:53/UDP (0)".into(),
                vec!["0.0.0.0:0 (3) (0) [ClusterIP, non-routable] ".into()],
            ),
            (
                "10.96.0.10:53/UDP (1)".into(),
                vec!["10.244.0.104:53/UDP (3) (1)".into()],
            ),
        ];
        let out = table(
            &["SERVICE ADDRESS", "BACKEND ADDRESS (REVNAT_ID) (SLOT)"],
            &rows,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE ADDRESS         BACKEND ADDRESS (REVNAT_ID) (SLOT)"
        );
        assert!(
            lines[1].starts_with(
                "10.96.0.10:53/UDP (0)   0.0.0.0:0 (3) (0) [ClusterIP, non-routable] "
            )
        );
        assert!(lines[2].starts_with("10.96.0.10:53/UDP (1)   10.244.0.104:53/UDP (3) (1)"));
        let two = table(
            &["ID", "X"],
            &vec![("1".into(), vec!["a".into(), "b".into()])],
        );
        assert_eq!(two, "ID   X\n1    a    \n     b    \n");
        assert_eq!(
            rows_json(&rows)["10.96.0.10:53/UDP (1)"][0],
            "10.244.0.104:53/UDP (3) (1)"
        );
    }
}
