// SPDX-License-Identifier: Apache-2.0

//! Views of what the agent's API returns: endpoints, identities, IPs, nodes and metrics,
//! with Cilium's columns.

use std::io::Write;

use serde_json::Value;

/// A table whose cells may hold several lines (Cilium prints an endpoint's labels one per
/// line): columns separated by tabs, Go tabwriter minimum width 5 and padding 3.
pub fn grid(header: &[&str], rows: &[Vec<Vec<String>>]) -> String {
    let mut tw = tabwriter::TabWriter::new(Vec::new()).minwidth(2).padding(3);
    let _ = writeln!(tw, "{}", header.join("\t"));
    for row in rows {
        let height = row.iter().map(Vec::len).max().unwrap_or(1).max(1);
        for line in 0..height {
            let cells: Vec<&str> = row
                .iter()
                .map(|c| c.get(line).map_or("", String::as_str))
                .collect();
            let _ = writeln!(tw, "{}\t", cells.join("\t"));
        }
    }
    let _ = tw.flush();
    String::from_utf8(tw.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

/// The `endpoint list` header.
pub const ENDPOINT_HEADER: [&str; 8] = [
    "ENDPOINT",
    "POLICY (ingress)",
    "POLICY (egress)",
    "IDENTITY",
    "LABELS (source:key[=value])",
    "IPv6",
    "IPv4",
    "STATUS",
];

/// `endpoint list` rows from `GET /endpoint` (the header's second line, `ENFORCEMENT`, is
/// the first row).
pub fn endpoint_rows(list: &Value) -> Vec<Vec<Vec<String>>> {
    let one = |s: &str| vec![s.to_owned()];
    let mut rows = vec![vec![
        one(""),
        one("ENFORCEMENT"),
        one("ENFORCEMENT"),
        one(""),
        one(""),
        one(""),
        one(""),
        one(""),
    ]];
    let mut eps: Vec<&Value> = list
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    eps.sort_by_key(|e| e["id"].as_u64());
    for ep in eps {
        let st = &ep["status"];
        let enabled = st["policy"]["realized"]["policy-enabled"]
            .as_str()
            .unwrap_or("none");
        let on = |dir: &str| {
            if enabled == "both" || enabled == dir {
                "Enabled"
            } else {
                "Disabled"
            }
        };
        let mut labels = strings(&st["labels"]["security-relevant"]);
        if labels.is_empty() {
            labels.push("no labels".into());
        }
        rows.push(vec![
            one(&text(&ep["id"])),
            one(on("ingress")),
            one(on("egress")),
            one(&text(&st["identity"]["id"])),
            labels,
            one(""),
            one(&text(&st["networking"]["addressing"][0]["ipv4"])),
            one(&text(&st["state"])),
        ]);
    }
    rows
}

/// `identity list` rows (`ID`, `LABELS`) from `GET /identity`; with `in_use`, only the
/// identities of these endpoints, with their endpoint counts.
pub fn identity_rows(list: &Value, in_use: Option<&Value>) -> Vec<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for id in list.as_array().into_iter().flatten() {
        let n = id["id"].as_u64().unwrap_or_default();
        let mut row = vec![vec![n.to_string()], strings(&id["labels"])];
        if let Some(eps) = in_use {
            let users = eps
                .as_array()
                .into_iter()
                .flatten()
                .filter(|e| e["status"]["identity"]["id"].as_u64() == Some(n))
                .count();
            if users == 0 {
                continue;
            }
            row.push(vec![users.to_string()]);
        }
        rows.push(row);
    }
    rows
}

/// `ip list` rows (`IP`, `IDENTITY`, `SOURCE`) from `GET /ip`.
pub fn ip_rows(list: &Value) -> Vec<Vec<Vec<String>>> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let id = e["identity"].as_u64().unwrap_or_default();
            let named = match id {
                1 => "reserved:host".to_owned(),
                2 => "reserved:world".to_owned(),
                n => n.to_string(),
            };
            vec![
                vec![text(&e["cidr"])],
                vec![named],
                vec![text(&e["source"])],
            ]
        })
        .collect()
}

/// `node list` rows from `GET /cluster/nodes`.
pub fn node_rows(nodes: &Value) -> Vec<Vec<Vec<String>>> {
    nodes["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            vec![
                vec![text(&n["name"])],
                vec![text(&n["primary-address"]["ipv4"]["ip"])],
                vec![text(&n["ipv4-alloc-cidr"])],
                vec![String::new()],
                vec![String::new()],
                vec![text(&n["source"])],
            ]
        })
        .collect()
}

/// `metrics list` rows (`Metric`, `Labels`, `Value`) from the Prometheus text format.
pub fn metric_rows(exposition: &str) -> Vec<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or((line, ""));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}').replace('"', "")),
            None => (series, String::new()),
        };
        rows.push(vec![
            vec![name.to_owned()],
            vec![labels],
            vec![value.to_owned()],
        ]);
    }
    rows
}

/// The `service list` header.
pub const SERVICE_HEADER: [&str; 4] = ["ID", "Frontend", "Service Type", "Backend"];

fn address(a: &Value) -> String {
    let ip = text(&a["ip"]);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip
    };
    let proto = a["protocol"].as_str().unwrap_or("TCP");
    format!("{host}:{}/{proto}", a["port"].as_u64().unwrap_or_default())
}

/// `service list` rows from `GET /service`: one backend per line, numbered, with its state
/// (`1 => 172.20.1.10:80/TCP (active)`), sorted by id.
pub fn service_rows(list: &Value) -> Vec<Vec<Vec<String>>> {
    let mut specs: Vec<&Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| &s["spec"])
        .collect();
    specs.sort_by_key(|s| s["id"].as_u64());
    specs
        .into_iter()
        .map(|spec| {
            let backends = spec["backend-addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, b)| {
                    let state = b["state"].as_str().unwrap_or("active");
                    format!("{} => {} ({state})", i + 1, address(b))
                })
                .collect();
            vec![
                vec![text(&spec["id"])],
                vec![address(&spec["frontend-address"])],
                vec![text(&spec["flags"]["type"])],
                backends,
            ]
        })
        .collect()
}

/// `bpf lb maglev list` rows: `[<id>]/v4` and the table as Go prints a slice
/// (`[1 2 1 ...]`).
pub fn maglev_rows(tables: &[(u16, Vec<u32>)]) -> Vec<Vec<Vec<String>>> {
    tables
        .iter()
        .map(|(id, table)| {
            let ids: Vec<String> = table.iter().map(u32::to_string).collect();
            vec![
                vec![format!("[{id}]/v4")],
                vec![format!("[{}]", ids.join(" "))],
            ]
        })
        .collect()
}

/// `map list` rows from `GET /map`, counted as Cilium's cilium-dbg counts them: name,
/// entries and entries with an error of the map's `cache` (0 for the event ring buffer,
/// which has none), and whether it has one.
pub fn map_rows(list: &Value) -> Vec<Vec<Vec<String>>> {
    list["maps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            // As Cilium's cilium-dbg counts: the entries of the map's cache, those with an
            // error, and whether it has a cache at all.
            let cache = m["cache"].as_array();
            let errors = cache.map_or(0, |c| {
                c.iter()
                    .filter(|e| e["last-error"].as_str().is_some_and(|s| !s.is_empty()))
                    .count()
            });
            vec![
                vec![text(&m["name"])],
                vec![cache.map_or(0, Vec::len).to_string()],
                vec![errors.to_string()],
                vec![cache.is_some().to_string()],
            ]
        })
        .collect()
}

/// `map get` rows (`Key`, `Value`, `State`, `Error`) from `GET /map/{name}`.
pub fn map_entry_rows(map: &Value) -> Vec<Vec<Vec<String>>> {
    map["cache"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            vec![
                vec![text(&e["key"])],
                vec![text(&e["value"])],
                vec![text(&e["desired-action"])],
                vec![text(&e["last-error"])],
            ]
        })
        .collect()
}

/// Rows as JSON objects keyed by the header.
pub fn grid_json(header: &[&str], rows: &[Vec<Vec<String>>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|r| {
                let mut m = serde_json::Map::new();
                for (h, cell) in header.iter().zip(r) {
                    let v = if cell.len() == 1 {
                        Value::String(cell[0].clone())
                    } else {
                        Value::Array(cell.iter().cloned().map(Value::String).collect())
                    };
                    m.insert((*h).to_owned(), v);
                }
                Value::Object(m)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoint_list_prints_labels_one_per_line() {
        let list = json!([{
            "id": 12,
            "status": {
                "state": "ready",
                "identity": {"id": 256},
                "labels": {"security-relevant": ["k8s:app=web", "k8s:io.kubernetes.pod.namespace=default"]},
                "networking": {"addressing": [{"ipv4": "172.20.1.2"}]},
                "policy": {"realized": {"policy-enabled": "ingress"}}
            }
        }]);
        let out = grid(&ENDPOINT_HEADER, &endpoint_rows(&list));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        assert!(lines[0].starts_with("ENDPOINT   POLICY (ingress)   POLICY (egress)   IDENTITY"));
        assert!(lines[1].contains("ENFORCEMENT        ENFORCEMENT"));
        let cols: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            cols,
            [
                "12",
                "Enabled",
                "Disabled",
                "256",
                "k8s:app=web",
                "172.20.1.2",
                "ready"
            ]
        );
        assert_eq!(lines[3].trim(), "k8s:io.kubernetes.pod.namespace=default");
    }

    #[test]
    fn service_list_reads_like_ciliums() {
        let list = json!([
            {"spec": {"id": 2, "frontend-address": {"ip": "10.96.0.10", "port": 53, "protocol": "UDP"},
                      "backend-addresses": [], "flags": {"type": "ClusterIP"}}},
            {"spec": {"id": 1, "frontend-address": {"ip": "10.96.0.1", "port": 443, "protocol": "TCP"},
                      "backend-addresses": [
                          {"ip": "172.18.0.2", "port": 6443, "protocol": "TCP", "state": "active"},
                          {"ip": "172.18.0.3", "port": 6443, "protocol": "TCP", "state": "terminating"}],
                      "flags": {"type": "ClusterIP"}}}
        ]);
        let out = grid(&SERVICE_HEADER, &service_rows(&list));
        let lines: Vec<Vec<&str>> = out
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[0], ["ID", "Frontend", "Service", "Type", "Backend"]);
        assert_eq!(
            lines[1],
            [
                "1",
                "10.96.0.1:443/TCP",
                "ClusterIP",
                "1",
                "=>",
                "172.18.0.2:6443/TCP",
                "(active)"
            ]
        );
        assert_eq!(
            lines[2],
            ["2", "=>", "172.18.0.3:6443/TCP", "(terminating)"]
        );
        assert_eq!(lines[3], ["2", "10.96.0.10:53/UDP", "ClusterIP"]);
        // The backend column starts where its header does.
        let col = out.lines().next().unwrap().find("Backend").unwrap();
        assert_eq!(out.lines().nth(2).unwrap().find("2 =>"), Some(col));
    }

    #[test]
    fn maglev_tables_print_as_go_slices() {
        let rows = maglev_rows(&[(3, vec![1, 2, 1])]);
        assert_eq!(
            grid(&["SVC ID", "LOOKUP TABLE"], &rows)
                .lines()
                .nth(1)
                .map(str::trim_end),
            Some("[3]/v4   [1 2 1]")
        );
    }

    #[test]
    fn metrics_rows_split_name_labels_and_value() {
        let rows = metric_rows("# HELP x\ncilium_ip_addresses{family=\"ipv4\"} 3\ncilium_up 1\n");
        assert_eq!(
            rows,
            vec![
                vec![
                    vec!["cilium_ip_addresses".to_owned()],
                    vec!["family=ipv4".to_owned()],
                    vec!["3".to_owned()]
                ],
                vec![
                    vec!["cilium_up".to_owned()],
                    vec![String::new()],
                    vec!["1".to_owned()]
                ],
            ]
        );
    }
}
