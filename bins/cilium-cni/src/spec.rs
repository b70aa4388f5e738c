// SPDX-License-Identifier: Apache-2.0

//! The CNI protocol as the spec (1.1.0) writes it: commands, environment, netconf, version
//! negotiation, results and errors.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The spec versions this plugin speaks, oldest first.
pub const SUPPORTED_VERSIONS: [&str; 5] = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest spec version.
pub const CURRENT_VERSION: &str = "1.1.0";

/// Error codes of the spec (and libcni's), and this plugin's own from 100 up.
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content.
    pub const DECODE: u32 = 6;
    /// Invalid network config.
    pub const INVALID_NETCONF: u32 = 7;
    /// Try again later.
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// STATUS: the plugin cannot serve ADD requests.
    pub const UNAVAILABLE: u32 = 50;
    /// STATUS: the plugin cannot serve ADD requests, and is degraded.
    pub const UNAVAILABLE_DEGRADED: u32 = 51;
    /// The Cilium agent could not be reached.
    pub const AGENT_UNREACHABLE: u32 = 100;
    /// The Cilium agent refused the request (its message is in `details`).
    pub const AGENT_REFUSED: u32 = 101;
    /// The interface to create already exists (in the host or the container).
    pub const INTERFACE_EXISTS: u32 = 102;
}

/// A failure, printed to stdout as the spec's error JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} (code {code}{})", if details.is_empty() { String::new() } else { format!(": {details}") })]
pub struct CniError {
    /// The spec's error code.
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// Longer details (omitted when empty).
    pub details: String,
}

impl CniError {
    /// An error with a code and message.
    pub fn new(code: u32, msg: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// The error JSON: `{cniVersion, code, msg, details}`.
    pub fn to_json(&self, cni_version: &str) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(cni_version));
        m.insert("code".into(), json!(self.code));
        m.insert("msg".into(), json!(self.msg));
        if !self.details.is_empty() {
            m.insert("details".into(), json!(self.details));
        }
        Value::Object(m)
    }
}

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Attach a container to the network.
    Add,
    /// Detach it (idempotent).
    Del,
    /// Check an attachment.
    Check,
    /// Report the versions supported.
    Version,
    /// Remove stale resources.
    Gc,
    /// Whether ADD can be served.
    Status,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Self, CniError> {
        Ok(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "GC" => Command::Gc,
            "STATUS" => Command::Status,
            other => {
                return Err(CniError::new(
                    code::INVALID_ENV,
                    format!("unknown CNI_COMMAND {other:?}"),
                ));
            }
        })
    }

    /// The environment variables the command requires (besides `CNI_COMMAND`).
    pub fn required(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"],
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME"],
            Command::Gc => &["CNI_PATH"],
            Command::Version | Command::Status => &[],
        }
    }
}

/// The plugin's environment (`CNI_*` variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniEnv {
    /// `CNI_COMMAND`.
    pub command: Command,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME`.
    pub ifname: Option<String>,
    /// `CNI_ARGS`, in order.
    pub args: Vec<(String, String)>,
    /// `CNI_PATH`, split on `:`.
    pub path: Vec<PathBuf>,
}

fn invalid_env(msg: impl Into<String>) -> CniError {
    CniError::new(code::INVALID_ENV, msg)
}

/// Checks a container id as libcni does: alphanumeric first, then alphanumerics, `_.-`.
pub fn validate_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        return Err(invalid_env(format!(
            "invalid characters in container id {id:?}"
        )));
    }
    Ok(())
}

/// Checks an interface name as the kernel and libcni do: 1-15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace.
pub fn validate_ifname(name: &str) -> Result<(), CniError> {
    if name.is_empty() || name.len() > 15 || name == "." || name == ".." {
        return Err(invalid_env(format!(
            "interface name {name:?} must be 1-15 bytes and not . or .."
        )));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(invalid_env(format!(
            "interface name {name:?} contains / : or whitespace"
        )));
    }
    Ok(())
}

/// Parses `CNI_ARGS` (`K=V;K2=V2`; empty is fine).
pub fn parse_cni_args(s: &str) -> Result<Vec<(String, String)>, CniError> {
    let mut out = Vec::new();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(invalid_env(format!("CNI_ARGS: {pair:?} is not KEY=VALUE")));
        };
        if k.is_empty() {
            return Err(invalid_env(format!("CNI_ARGS: {pair:?} has an empty key")));
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
}

impl CniEnv {
    /// Reads and checks the environment through `get` (e.g. `|k| std::env::var(k).ok()`).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, CniError> {
        let command = Command::parse(
            &get("CNI_COMMAND").ok_or_else(|| invalid_env("CNI_COMMAND is not set"))?,
        )?;
        let nonempty = |k: &str| get(k).filter(|v| !v.is_empty());
        for var in command.required() {
            if nonempty(var).is_none() {
                return Err(invalid_env(format!("{var} is required for this command")));
            }
        }
        let container_id = nonempty("CNI_CONTAINERID");
        if let Some(id) = &container_id {
            validate_container_id(id)?;
        }
        let ifname = nonempty("CNI_IFNAME");
        if let Some(name) = &ifname {
            validate_ifname(name)?;
        }
        Ok(CniEnv {
            command,
            container_id,
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname,
            args: parse_cni_args(&get("CNI_ARGS").unwrap_or_default())?,
            path: get("CNI_PATH")
                .unwrap_or_default()
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect(),
        })
    }

    /// The value of a `CNI_ARGS` key.
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The pod (`K8S_POD_NAMESPACE`, `K8S_POD_NAME`), when the runtime gave both.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.arg("K8S_POD_NAMESPACE")?, self.arg("K8S_POD_NAME")?))
    }
}

/// The network configuration on stdin (the fields this plugin reads; others are kept).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NetConf {
    /// The config's spec version.
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// Versions the config supports (1.1.0).
    #[serde(rename = "cniVersions", default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    /// The network name.
    #[serde(default)]
    pub name: String,
    /// The plugin type (`cilium-cni`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// MTU override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Cilium's `enable-debug`.
    #[serde(rename = "enable-debug", default)]
    pub enable_debug: bool,
    /// The previous plugin's result.
    #[serde(
        rename = "prevResult",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prev_result: Option<Value>,
    /// Runtime-provided settings.
    #[serde(
        rename = "runtimeConfig",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_config: Option<Value>,
    /// Everything else, passed through.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl NetConf {
    /// Parses stdin: bad JSON is a decode error (6), a missing or invalid field an invalid
    /// netconf (7).
    pub fn parse(bytes: &[u8]) -> Result<Self, CniError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "failed to decode the network configuration")
                .with_details(e.to_string())
        })?;
        let conf: NetConf = serde_json::from_value(value).map_err(|e| {
            CniError::new(code::INVALID_NETCONF, "invalid network configuration")
                .with_details(e.to_string())
        })?;
        if conf.plugin_type.is_empty() {
            return Err(
                CniError::new(code::INVALID_NETCONF, "invalid network configuration")
                    .with_details("type is empty"),
            );
        }
        if conf.cni_version.is_empty() {
            return Err(
                CniError::new(code::INVALID_NETCONF, "invalid network configuration")
                    .with_details("cniVersion is empty"),
            );
        }
        Ok(conf)
    }

    /// The version to speak: the highest of `cniVersions` this plugin supports, else
    /// `cniVersion` if supported.
    pub fn negotiate(&self) -> Result<&'static str, CniError> {
        let pick = |v: &str| SUPPORTED_VERSIONS.iter().copied().find(|s| *s == v);
        let best = if self.cni_versions.is_empty() {
            pick(&self.cni_version)
        } else {
            SUPPORTED_VERSIONS
                .iter()
                .rev()
                .copied()
                .find(|s| self.cni_versions.iter().any(|v| v == s))
        };
        best.ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!(
                    "incompatible CNI versions: config is {:?}, plugin supports [{}]",
                    if self.cni_versions.is_empty() {
                        vec![self.cni_version.clone()]
                    } else {
                        self.cni_versions.clone()
                    },
                    SUPPORTED_VERSIONS.join(" ")
                ),
            )
        })
    }
}

/// `VERSION`'s output.
pub fn version_json() -> Value {
    json!({"cniVersion": CURRENT_VERSION, "supportedVersions": SUPPORTED_VERSIONS})
}

/// An interface of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name.
    pub name: String,
    /// MAC address (`aa:bb:..`).
    pub mac: String,
    /// MTU (1.1.0 results only).
    pub mtu: Option<u32>,
    /// The netns path, for interfaces inside the container.
    pub sandbox: Option<String>,
}

/// An address of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// The address with its prefix.
    pub address: IpNet,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

/// A route of a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination.
    pub dst: IpNet,
    /// Next hop.
    pub gw: Option<IpAddr>,
    /// Route MTU (1.1.0 results only).
    pub mtu: Option<u32>,
}

/// An ADD result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniResult {
    /// Interfaces.
    pub interfaces: Vec<Interface>,
    /// Addresses.
    pub ips: Vec<IpConfig>,
    /// Routes.
    pub routes: Vec<Route>,
}

fn version_at_least(v: &str, major: u32, minor: u32) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

impl CniResult {
    /// The result JSON in the layout of `cni_version` (0.3.x/0.4.0 give each IP a
    /// `version`; MTUs on interfaces and routes exist from 1.1.0).
    pub fn to_json(&self, cni_version: &str) -> Value {
        let v1 = version_at_least(cni_version, 1, 0);
        let v11 = version_at_least(cni_version, 1, 1);
        let interfaces: Vec<Value> = self
            .interfaces
            .iter()
            .map(|i| {
                let mut m = Map::new();
                m.insert("name".into(), json!(i.name));
                m.insert("mac".into(), json!(i.mac));
                if let (true, Some(mtu)) = (v11, i.mtu) {
                    m.insert("mtu".into(), json!(mtu));
                }
                if let Some(s) = &i.sandbox {
                    m.insert("sandbox".into(), json!(s));
                }
                Value::Object(m)
            })
            .collect();
        let ips: Vec<Value> = self
            .ips
            .iter()
            .map(|ip| {
                let mut m = Map::new();
                if !v1 {
                    let family = if ip.address.addr().is_ipv4() {
                        "4"
                    } else {
                        "6"
                    };
                    m.insert("version".into(), json!(family));
                }
                m.insert("address".into(), json!(ip.address.to_string()));
                if let Some(gw) = ip.gateway {
                    m.insert("gateway".into(), json!(gw.to_string()));
                }
                if let Some(i) = ip.interface {
                    m.insert("interface".into(), json!(i));
                }
                Value::Object(m)
            })
            .collect();
        let routes: Vec<Value> = self
            .routes
            .iter()
            .map(|r| {
                let mut m = Map::new();
                m.insert("dst".into(), json!(r.dst.to_string()));
                if let Some(gw) = r.gw {
                    m.insert("gw".into(), json!(gw.to_string()));
                }
                if let (true, Some(mtu)) = (v11, r.mtu) {
                    m.insert("mtu".into(), json!(mtu));
                }
                Value::Object(m)
            })
            .collect();
        let mut m = Map::new();
        m.insert("cniVersion".into(), json!(cni_version));
        if !interfaces.is_empty() {
            m.insert("interfaces".into(), Value::Array(interfaces));
        }
        if !ips.is_empty() {
            m.insert("ips".into(), Value::Array(ips));
        }
        if !routes.is_empty() {
            m.insert("routes".into(), Value::Array(routes));
        }
        m.insert("dns".into(), json!({}));
        Value::Object(m)
    }
}
