// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg status` and `config` against a running agent API (in-process, on a socket in
//! a temporary directory), and the one-line error when no agent answers.

use std::path::{Path, PathBuf};

mod support;

use support::run_dbg;

use cilium_core::config::{AgentConfig, ConfigSources};

fn dbg(socket: &Path, args: &[&str]) -> (bool, String, String) {
    let host = format!("unix://{}", socket.display());
    let mut all = vec!["-H", host.as_str()];
    all.extend_from_slice(args);
    run_dbg(&all)
}

#[test]
fn status_and_config_through_the_api() {
    let dir: PathBuf = std::env::temp_dir().join(format!("crs-dbg-agent-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("cilium.sock");

    let (ok, out, err) = dbg(&socket, &["status"]);
    assert!(!ok && out.is_empty(), "{out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("cannot reach the cilium agent") && err.contains("cilium.sock"),
        "{err}"
    );

    let agent =
        cilium_agent::Agent::new(AgentConfig::from_sources(&ConfigSources::default()).unwrap());
    let api = cilium_agent::BackgroundApi::start(agent, &socket).expect("serve");

    let (ok, out, _) = dbg(&socket, &["status", "--brief"]);
    assert!(ok);
    assert_eq!(out, "OK\n");
    let (_, out, _) = dbg(&socket, &["status"]);
    assert!(
        out.lines()
            .any(|l| l.starts_with("KVStore:") && l.contains("Ok   Embedded")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("Cilium:") && l.contains("Ok   cilium-rs")),
        "{out}"
    );
    let (_, out, _) = dbg(&socket, &["status", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["cilium"]["state"], "Ok");

    let (_, out, _) = dbg(&socket, &["config"]);
    assert!(
        out.contains("Debug                             : Disabled"),
        "{out}"
    );
    let (ok, out, _) = dbg(
        &socket,
        &["config", "Debug=Enabled", "PolicyEnforcement=always"],
    );
    assert!(ok, "{out}");
    assert!(
        out.contains("Debug                             : Enabled"),
        "{out}"
    );
    assert!(
        out.contains("PolicyEnforcement                 : always"),
        "{out}"
    );
    let (ok, _, err) = dbg(&socket, &["config", "Conntrack=Enabled"]);
    assert!(!ok && err.contains("[400 /config]"), "{err}");
    let (ok, _, err) = dbg(&socket, &["config", "Debug"]);
    assert!(!ok && err.contains("KEY=VALUE"), "{err}");
    let (_, out, _) = dbg(&socket, &["config"]);
    assert!(
        out.contains("Debug                             : Enabled"),
        "unchanged by the bad calls"
    );
    drop(api);
    let (ok, out, _) = dbg(&socket, &["version"]);
    assert!(ok && out.starts_with("Client: cilium-rs "), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
