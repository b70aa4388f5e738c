// SPDX-License-Identifier: Apache-2.0

//! Talking to the agent: the API client (from `cilium_agent::client`) and the text
//! `cilium-dbg` makes of the answers.

use serde_json::Value;

pub use cilium_agent::client::{Client, ClientError, DEFAULT_SOCKET};

/// `status` lines from `GET /healthz` (the fields the agent reports).
pub fn status_lines(health: &Value) -> Vec<String> {
    let state = |v: &Value| {
        format!(
            "{}   {}",
            v["state"].as_str().unwrap_or("Failure"),
            v["msg"].as_str().unwrap_or("")
        )
        .trim_end()
        .to_owned()
    };
    let rows = [
        ("KVStore:", state(&health["kvstore"])),
        (
            "Kubernetes:",
            if health["kubernetes"].is_object() {
                state(&health["kubernetes"])
            } else {
                "Disabled".to_owned()
            },
        ),
        (
            "KubeProxyReplacement:",
            health["kube-proxy-replacement"]["mode"]
                .as_str()
                .unwrap_or("False")
                .to_owned(),
        ),
        ("Cilium:", state(&health["cilium"])),
        (
            "Hubble:",
            if health["hubble"].is_null() {
                "Disabled".to_owned()
            } else {
                state(&health["hubble"])
            },
        ),
    ];
    rows.iter().map(|(k, v)| format!("{k:<24}{v}")).collect()
}

/// The node lines of `status` (IPAM, endpoints) and, for `--verbose`, the allocated
/// addresses with their owners and what the last start restored.
pub fn verbose_lines(health: &Value) -> Vec<String> {
    let node = &health["node-state"];
    if node.is_null() {
        return Vec::new();
    }
    let mut out = vec![format!(
        "{:<24}IPv4: {}",
        "IPAM:",
        node["ipam"]["ipv4"][0].as_str().unwrap_or_default()
    )];
    out.push("Allocated addresses:".to_owned());
    if let Some(m) = node["ipam"]["allocations"].as_object() {
        for (ip, owner) in m {
            out.push(format!("  {ip} ({})", owner.as_str().unwrap_or_default()));
        }
    }
    out.push(format!(
        "{:<24}{}/{} ready",
        "Endpoints:", node["endpoints"]["ready"], node["endpoints"]["total"]
    ));
    out.push(format!(
        "{:<24}{} restored, {} removed, {} queued deletions replayed",
        "Restore:",
        node["restore"]["restored"],
        node["restore"]["removed"],
        node["restore"]["replayed-deletes"]
    ));
    out.push(format!(
        "{:<24}{} {} (router {})",
        "Node:",
        node["node"]["name"].as_str().unwrap_or_default(),
        node["node"]["ipv4"].as_str().unwrap_or_default(),
        node["node"]["router"].as_str().unwrap_or_default()
    ));
    let kpr = &health["kube-proxy-replacement"];
    if kpr.is_object() {
        let on = |v: &Value| enabled_text(v["enabled"].as_bool().unwrap_or(false));
        out.push("KubeProxyReplacement Details:".to_owned());
        for (k, v) in [
            (
                "Status:",
                kpr["mode"].as_str().unwrap_or("False").to_owned(),
            ),
            ("Socket LB:", on(&kpr["features"]["socketLB"])),
            (
                "Backend Selection:",
                kpr["features"]["nodePort"]["algorithm"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            ("Session Affinity:", on(&kpr["features"]["sessionAffinity"])),
        ] {
            out.push(format!("  {k:<22}{v}"));
        }
    }
    out
}

fn enabled_text(on: bool) -> String {
    if on { "Enabled" } else { "Disabled" }.to_owned()
}

/// `config` lines from `GET /config`: the runtime options as Cilium lists them.
pub fn config_lines(config: &Value) -> Vec<String> {
    let mut out = vec!["##### Read-write configurations #####".to_owned()];
    if let Some(options) = config["spec"]["options"].as_object() {
        for (k, v) in options {
            out.push(format!("{k:<34}: {}", v.as_str().unwrap_or_default()));
        }
    }
    out.push(format!(
        "{:<34}: {}",
        "PolicyEnforcement",
        config["status"]["policy-enforcement"]
            .as_str()
            .unwrap_or_default()
    ));
    out
}

/// The PATCH body for `config KEY=VALUE...` (`Debug=Enabled`, `PolicyEnforcement=always`).
pub fn config_patch(assignments: &[String]) -> Result<Value, ClientError> {
    let mut options = serde_json::Map::new();
    let mut patch = serde_json::Map::new();
    for a in assignments {
        let (k, v) = a
            .split_once('=')
            .ok_or_else(|| ClientError(format!("{a:?} is not KEY=VALUE")))?;
        if k.eq_ignore_ascii_case("PolicyEnforcement") {
            patch.insert(
                "policy-enforcement".into(),
                Value::String(v.to_ascii_lowercase()),
            );
        } else {
            let value = match v.to_ascii_lowercase().as_str() {
                "enabled" | "true" | "enable" => "Enabled",
                "disabled" | "false" | "disable" => "Disabled",
                _ => {
                    return Err(ClientError(format!(
                        "{k}: expected Enabled or Disabled, got {v:?}"
                    )));
                }
            };
            options.insert(k.to_owned(), Value::String(value.into()));
        }
    }
    if !options.is_empty() {
        patch.insert("options".into(), Value::Object(options));
    }
    Ok(Value::Object(patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn verbose_status_shows_the_kube_proxy_replacement_details() {
        let health = json!({
            "node-state": {"ipam": {"ipv4": ["10.0.1.0/24"]}, "node": {"name": "n1"}},
            "kube-proxy-replacement": {"mode": "True", "features": {
                "socketLB": {"enabled": true},
                "nodePort": {"algorithm": "Maglev"},
                "sessionAffinity": {"enabled": false},
            }},
        });
        let lines = verbose_lines(&health);
        let at = lines
            .iter()
            .position(|l| l == "KubeProxyReplacement Details:")
            .expect("details");
        assert_eq!(
            lines[at + 1..],
            [
                "  Status:               True",
                "  Socket LB:            Enabled",
                "  Backend Selection:    Maglev",
                "  Session Affinity:     Disabled",
            ]
        );
        // An agent without the section prints none.
        let mut bare = health.clone();
        bare["kube-proxy-replacement"] = Value::Null;
        assert!(
            !verbose_lines(&bare)
                .iter()
                .any(|l| l.starts_with("KubeProxy"))
        );
    }
}
