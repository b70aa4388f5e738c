// SPDX-License-Identifier: Apache-2.0

//! Endpoints: the API's change request, the record the agent keeps (and persists, one file
//! per endpoint, written atomically), and the JSON the API returns for it.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An endpoint's lifecycle state, with Cilium's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndpointState {
    /// Created; its identity is being allocated.
    WaitingForIdentity,
    /// Its datapath state (maps, policy) is being written.
    Regenerating,
    /// Forwarding with its identity and policy.
    Ready,
    /// Being deleted.
    Disconnecting,
    /// Restored after a restart, being regenerated.
    Restoring,
}

impl EndpointState {
    /// Cilium's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::WaitingForIdentity => "waiting-for-identity",
            EndpointState::Regenerating => "regenerating",
            EndpointState::Ready => "ready",
            EndpointState::Disconnecting => "disconnecting",
            EndpointState::Restoring => "restoring",
        }
    }
}

/// `addressing` of an [`EndpointChangeRequest`].
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Addressing {
    /// The endpoint's IPv4 address.
    #[serde(default)]
    pub ipv4: Option<String>,
}

/// The body of `PUT /v1/endpoint/{id}` (Cilium's `EndpointChangeRequest`; fields this agent
/// does not use are ignored).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointChangeRequest {
    /// Addresses.
    #[serde(default)]
    pub addressing: Addressing,
    /// The container runtime's id.
    #[serde(default)]
    pub container_id: String,
    /// The interface inside the pod (`eth0`).
    #[serde(default)]
    pub container_interface_name: String,
    /// The host-side veth.
    #[serde(default)]
    pub interface_name: String,
    /// The pod's namespace.
    #[serde(default)]
    pub k8s_namespace: String,
    /// The pod's name.
    #[serde(default)]
    pub k8s_pod_name: String,
    /// The pod's network namespace path.
    #[serde(default)]
    pub netns: String,
    /// Extra labels (`source:key=value`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// The container interface's MAC (`aa:bb:cc:dd:ee:ff`), as the CNI set it up; when
    /// absent the agent reads it from the pod's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// What the agent keeps about an endpoint, and persists in `<state-dir>/endpoints/<id>.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct EndpointRecord {
    /// Endpoint id (1-4095).
    pub id: u16,
    /// The container runtime's id.
    pub container_id: String,
    /// The interface inside the pod.
    pub container_interface_name: String,
    /// The host-side veth.
    pub interface_name: String,
    /// Its ifindex.
    pub interface_index: u32,
    /// The pod's MAC.
    pub mac: [u8; 6],
    /// The host-side veth's MAC.
    pub host_mac: [u8; 6],
    /// The pod's IPv4 address.
    pub ipv4: Ipv4Addr,
    /// The pod's namespace.
    pub k8s_namespace: String,
    /// The pod's name.
    pub k8s_pod_name: String,
    /// The pod's network namespace path.
    pub netns: String,
    /// The security-relevant labels (`source:key=value`).
    pub labels: Vec<String>,
    /// The security identity.
    pub identity: u32,
    /// Lifecycle state.
    pub state: EndpointState,
    /// Regenerations so far.
    pub regenerations: u64,
    /// The pod's named container ports (policies' named ports resolve against them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub named_ports: Vec<cilium_core::cluster::NamedPort>,
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl EndpointRecord {
    /// The IPAM owner of its IP (`<namespace>/<pod>`, or the container id).
    pub fn owner(&self) -> String {
        ipam_owner(&self.k8s_namespace, &self.k8s_pod_name, &self.container_id)
    }

    /// The API's view (Cilium's `Endpoint` model, the fields `cilium-dbg` reads).
    pub fn to_json(&self, ingress: bool, egress: bool) -> Value {
        let enforcement = match (ingress, egress) {
            (true, true) => "both",
            (true, false) => "ingress",
            (false, true) => "egress",
            (false, false) => "none",
        };
        json!({
            "id": self.id,
            "spec": {"label-configuration": {"user": self.labels}},
            "status": {
                "state": self.state.as_str(),
                "identity": {"id": self.identity, "labels": self.labels},
                "labels": {"security-relevant": self.labels},
                "networking": {
                    "addressing": [{"ipv4": self.ipv4.to_string()}],
                    "interface-name": self.interface_name,
                    "interface-index": self.interface_index,
                    "container-interface-name": self.container_interface_name,
                    "mac": mac_string(self.mac),
                    "host-mac": mac_string(self.host_mac),
                },
                "external-identifiers": {
                    "container-id": self.container_id,
                    "k8s-namespace": self.k8s_namespace,
                    "k8s-pod-name": self.k8s_pod_name,
                    "pod-name": format!("{}/{}", self.k8s_namespace, self.k8s_pod_name),
                    "netns": self.netns,
                },
                "policy": {
                    "realized": {"policy-enabled": enforcement},
                    "spec": {"policy-enabled": enforcement},
                },
                "regenerations": self.regenerations,
            },
        })
    }
}

/// The IPAM owner for a pod: `<namespace>/<pod>` (Cilium's), or the container id.
pub fn ipam_owner(namespace: &str, pod: &str, container_id: &str) -> String {
    if namespace.is_empty() || pod.is_empty() {
        container_id.to_owned()
    } else {
        format!("{namespace}/{pod}")
    }
}

/// The directory of endpoint state files.
pub fn state_dir(root: &Path) -> PathBuf {
    root.join("endpoints")
}

fn file_of(root: &Path, id: u16) -> PathBuf {
    state_dir(root).join(format!("{id}.json"))
}

/// Writes an endpoint's state file atomically: a temporary file, fsync, rename over the old
/// one, fsync of the directory. A crash leaves the old file or the new one, never a mix.
pub fn persist(root: &Path, ep: &EndpointRecord) -> std::io::Result<()> {
    let dir = state_dir(root);
    std::fs::create_dir_all(&dir)?;
    let path = file_of(root, ep.id);
    let tmp = dir.join(format!(".{}.json.tmp", ep.id));
    let body = serde_json::to_vec_pretty(ep).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(&dir)?.sync_all()
}

/// Removes an endpoint's state file (absent is fine).
pub fn forget(root: &Path, id: u16) -> std::io::Result<()> {
    match std::fs::remove_file(file_of(root, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Reads every state file. Unreadable or corrupt files (and leftover temporaries) are
/// returned as errors with their paths, so the caller can report and remove them.
pub fn load_all(root: &Path) -> (Vec<EndpointRecord>, Vec<(PathBuf, String)>) {
    let mut good = Vec::new();
    let mut bad = Vec::new();
    let Ok(entries) = std::fs::read_dir(state_dir(root)) else {
        return (good, bad);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            bad.push((path, "an unfinished write".to_owned()));
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(ep) if format!("{}.json", ep.id) == name => good.push(ep),
            Ok(_) => bad.push((path, "the file name does not match its id".to_owned())),
            Err(e) => bad.push((path, e)),
        }
    }
    good.sort_by_key(|e| e.id);
    (good, bad)
}
