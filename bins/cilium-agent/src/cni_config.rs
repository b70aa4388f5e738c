// SPDX-License-Identifier: Apache-2.0

//! The CNI configuration the agent writes once it is ready (`write-cni-conf-when-ready`),
//! as Cilium's agent does: a conflist naming `cilium-cni`, written atomically, so that the
//! container runtime starts using Cilium only when the agent can answer the plugin. With
//! `cni-exclusive` the other configurations of the directory are renamed to
//! `*.cilium_bak` (a runtime picks the first configuration by name; Cilium's must be the
//! only one).

use std::path::{Path, PathBuf};

/// The socket cilium-cni asks by default (it is not written into the configuration).
pub const DEFAULT_SOCKET: &str = "/var/run/cilium/cilium.sock";

/// The conflist for an agent serving its API on `socket`.
pub fn conflist(socket: &Path) -> serde_json::Value {
    let mut plugin = serde_json::json!({"type": "cilium-cni", "enable-debug": false});
    if socket != Path::new(DEFAULT_SOCKET) {
        plugin["agent-socket"] = socket.display().to_string().into();
    }
    serde_json::json!({"cniVersion": "0.3.1", "name": "cilium", "plugins": [plugin]})
}

/// Whether a file of a CNI configuration directory is a configuration a runtime reads.
pub fn is_config(name: &str) -> bool {
    [".conflist", ".conf", ".json"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// Writes the configuration to `path` (through a temporary file and a rename); with
/// `exclusive`, renames the directory's other configurations to `*.cilium_bak`. Returns
/// the files renamed.
pub fn write(path: &Path, socket: &Path, exclusive: bool) -> Result<Vec<PathBuf>, String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("write-cni-conf-when-ready {}: no directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(&conflist(socket)).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut renamed = Vec::new();
    if exclusive {
        let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let other = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if other != path && is_config(&name) {
                let bak = dir.join(format!("{name}.cilium_bak"));
                std::fs::rename(&other, &bak).map_err(|e| format!("{}: {e}", other.display()))?;
                renamed.push(bak);
            }
        }
    }
    Ok(renamed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_is_written_and_others_set_aside() {
        let dir = std::env::temp_dir().join(format!("crs-cniconf-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("10-flannel.conflist"), "{}").unwrap();
        std::fs::write(dir.join("README"), "x").unwrap();
        let path = dir.join("05-cilium.conflist");
        let renamed = write(&path, Path::new("/lab/n1/cilium.sock"), true).unwrap();
        assert_eq!(renamed, [dir.join("10-flannel.conflist.cilium_bak")]);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["plugins"][0]["type"], "cilium-cni");
        assert_eq!(v["plugins"][0]["agent-socket"], "/lab/n1/cilium.sock");
        assert!(dir.join("README").exists());
        // Again: nothing more to rename, the default socket is not written.
        assert!(
            write(&path, Path::new(DEFAULT_SOCKET), true)
                .unwrap()
                .is_empty()
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert!(v["plugins"][0].get("agent-socket").is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
