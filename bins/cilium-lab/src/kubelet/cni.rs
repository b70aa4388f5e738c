// SPDX-License-Identifier: Apache-2.0

//! The kubelet's network plugin as a container runtime runs it (libcni's rules): the
//! network configuration is the first file by name of the node's CNI configuration
//! directory (`/etc/cni/net.d` under the node's root) ending in `.conflist`, `.conf` or
//! `.json`; its plugins are found by `type` in the binary directories (the node's
//! `/opt/cni/bin`, this project's binaries, Debian's `/usr/lib/cni`); ADD runs them in
//! order, each given the previous one's result as `prevResult`, and DEL in reverse order
//! with the ADD's result. A node without a configuration is not ready for pods (the
//! kubelet's `NetworkReady=false`), as with a real runtime before a network plugin is
//! installed.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// What a node without a network configuration says (as a kubelet with containerd does).
pub const NOT_READY: &str = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized";

/// Whether a file name is a network configuration a runtime reads (the agent's rule,
/// which sets the others aside).
pub use cilium_agent::cni_config::is_config;

/// A configuration as a list: a `.conf` (one plugin) becomes a list of one; the result
/// has `name`, `cniVersion` and a non-empty `plugins`, or an error says what is missing.
pub fn as_list(config: Value) -> Result<Value, String> {
    let mut list = if config.get("plugins").is_some() {
        config
    } else if config.get("type").is_some() {
        serde_json::json!({
            "cniVersion": config.get("cniVersion").cloned().unwrap_or(Value::Null),
            "name": config.get("name").cloned().unwrap_or(Value::Null),
            "plugins": [config],
        })
    } else {
        return Err("neither plugins nor type".into());
    };
    if !list["name"].is_string() {
        return Err("no network name".into());
    }
    if !list["cniVersion"].is_string() {
        list["cniVersion"] = "0.3.1".into();
    }
    let plugins = list["plugins"].as_array().ok_or("plugins is not a list")?;
    if plugins.is_empty() || plugins.iter().any(|p| !p["type"].is_string()) {
        return Err("a plugin without a type".into());
    }
    Ok(list)
}

/// The network configuration of `dir`: its first configuration file by name, as a list;
/// `None` when there is none. A file that does not parse is an error naming it.
pub fn load(dir: &Path) -> Result<Option<(PathBuf, Value)>, String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| is_config(n))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    names.sort();
    let Some(first) = names.first() else {
        return Ok(None);
    };
    let path = dir.join(first);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    as_list(value)
        .map(|l| Some((path.clone(), l)))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// A plugin's binary: `type` in the first directory that has it.
pub fn find_plugin(dirs: &[PathBuf], kind: &str) -> Result<PathBuf, String> {
    if kind.is_empty() || kind.contains('/') {
        return Err(format!("plugin type {kind:?} is not a file name"));
    }
    dirs.iter()
        .map(|d| d.join(kind))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            let path: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
            format!("failed to find plugin {kind:?} in path {path:?}")
        })
}

/// The configuration one plugin of the list is given: its own, with the list's name and
/// version and the previous result (libcni's `buildOneConfig`).
pub fn plugin_config(list: &Value, plugin: &Value, prev: Option<&Value>) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    if let Some(prev) = prev.filter(|p| !p.is_null()) {
        conf["prevResult"] = prev.clone();
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_first_configuration_by_name_is_the_network() {
        let dir = std::env::temp_dir().join(format!("crs-cnidir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(load(&dir).unwrap(), None);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("README"), "x").unwrap();
        assert_eq!(load(&dir).unwrap(), None);
        std::fs::write(
            dir.join("10-bridge.conf"),
            r#"{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","ipam":{"type":"host-local"}}"#,
        )
        .unwrap();
        let (path, list) = load(&dir).unwrap().unwrap();
        assert!(path.ends_with("10-bridge.conf"));
        assert_eq!(list["plugins"][0]["type"], "bridge");
        assert_eq!(list["name"], "cbr0");
        std::fs::write(
            dir.join("05-cilium.conflist"),
            r#"{"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]}"#,
        )
        .unwrap();
        assert!(
            load(&dir)
                .unwrap()
                .unwrap()
                .0
                .ends_with("05-cilium.conflist")
        );
        std::fs::write(dir.join("01-bad.json"), "{").unwrap();
        assert!(load(&dir).unwrap_err().contains("01-bad.json"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_lists_are_refused_and_plugins_get_the_previous_result() {
        assert!(as_list(json!({"name": "x"})).is_err());
        assert!(as_list(json!({"name": "x", "plugins": []})).is_err());
        assert!(as_list(json!({"plugins": [{"type": "a"}]})).is_err());
        assert!(as_list(json!({"name": "x", "plugins": [{"kind": "a"}]})).is_err());
        let list =
            as_list(json!({"name": "x", "plugins": [{"type": "a"}, {"type": "portmap"}]})).unwrap();
        assert_eq!(list["cniVersion"], "0.3.1");
        let prev = json!({"ips": [{"address": "10.244.1.2/24"}]});
        let conf = plugin_config(&list, &list["plugins"][1], Some(&prev));
        assert_eq!(conf["name"], "x");
        assert_eq!(conf["prevResult"], prev);
        assert!(
            plugin_config(&list, &list["plugins"][0], None)
                .get("prevResult")
                .is_none()
        );
        assert!(find_plugin(&[PathBuf::from("/nonexistent")], "../sh").is_err());
        assert!(
            find_plugin(&[PathBuf::from("/nonexistent")], "bridge")
                .unwrap_err()
                .contains("failed to find plugin \"bridge\"")
        );
    }
}
