// SPDX-License-Identifier: Apache-2.0

//! The agent's configuration with Cilium's key names (the `cilium-config` ConfigMap keys,
//! which are also the agent's flags).
//!
//! Values come from, lowest precedence first: defaults, a config directory with one file
//! per key (as Kubernetes mounts the ConfigMap; unknown keys there are reported and
//! ignored, as Cilium does), environment variables `CILIUM_<KEY>` (upper case, `-` as
//! `_`), and flags. An invalid value is an error naming the key and where it came from;
//! an unknown flag is an error.
//!
//! ```
//! use cilium_core::config::{AgentConfig, ConfigSources, RoutingMode};
//!
//! let mut sources = ConfigSources::default();
//! sources.set_flag("routing-mode", "native").unwrap();
//! sources.set_flag("ipv4-native-routing-cidr", "172.20.0.0/16").unwrap();
//! sources.set_flag("cluster-pool-ipv4-cidr", "172.20.0.0/16").unwrap();
//! let config = AgentConfig::from_sources(&sources).unwrap();
//! assert_eq!(config.routing_mode, RoutingMode::Native);
//! assert_eq!(config.cluster_pool_ipv4_mask_size, 24);
//!
//! sources.set_flag("bpf-lb-maglev-table-size", "1000").unwrap();
//! let err = AgentConfig::from_sources(&sources).unwrap_err();
//! assert!(err.to_string().contains("bpf-lb-maglev-table-size"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use base64::Engine;
use ipnet::Ipv4Net;
use serde::Serialize;

/// Every key the agent understands, its default and what it means.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("debug", "false", "debug logging"),
    ("cluster-name", "default", "name of the cluster"),
    ("cluster-id", "0", "unique id of the cluster (0-255)"),
    ("routing-mode", "tunnel", "native or tunnel"),
    ("tunnel-protocol", "vxlan", "vxlan or geneve"),
    (
        "kube-proxy-replacement",
        "false",
        "replace kube-proxy with BPF service handling",
    ),
    ("ipam", "cluster-pool", "IPAM mode (cluster-pool)"),
    (
        "cluster-pool-ipv4-cidr",
        "10.0.0.0/8",
        "cluster pod CIDRs (comma or space separated)",
    ),
    (
        "cluster-pool-ipv4-mask-size",
        "24",
        "prefix length of each node's pod CIDR",
    ),
    (
        "ipv4-native-routing-cidr",
        "",
        "CIDR reachable without masquerading",
    ),
    (
        "auto-direct-node-routes",
        "false",
        "install routes to other nodes' pod CIDRs",
    ),
    (
        "enable-endpoint-routes",
        "false",
        "one route per endpoint instead of cilium_host",
    ),
    (
        "enable-ipv4-masquerade",
        "true",
        "masquerade traffic leaving the native CIDR",
    ),
    (
        "enable-bpf-masquerade",
        "false",
        "masquerade in BPF instead of iptables",
    ),
    (
        "install-no-conntrack-iptables-rules",
        "false",
        "accepted; no iptables rules are used",
    ),
    ("bpf-lb-algorithm", "random", "random or maglev"),
    (
        "service-no-backend-response",
        "reject",
        "a packet for a service without backends: reject (an ICMP port unreachable) or drop",
    ),
    (
        "bpf-lb-maglev-table-size",
        "16381",
        "Maglev table size (a listed prime)",
    ),
    (
        "bpf-lb-maglev-hash-seed",
        "JLfvgnHc2kaSUFaI",
        "Maglev seed (base64 of 12 bytes)",
    ),
    (
        "enable-policy",
        "default",
        "policy enforcement: default, always or never",
    ),
    ("kvstore", "", "cluster store: empty (embedded) or etcd"),
    (
        "kvstore-opt",
        "",
        "store options, k=v pairs separated by commas",
    ),
    ("enable-hubble", "false", "flow observability"),
    (
        "hubble-socket-path",
        "/var/run/cilium/hubble.sock",
        "unix socket of the Hubble Observer API",
    ),
    (
        "hubble-event-buffer-capacity",
        "4095",
        "flows each node keeps (2^n - 1)",
    ),
    (
        "hubble-listen-address",
        "",
        "Hubble observer TCP address, e.g. :4244 (empty: the unix socket only)",
    ),
    (
        "hubble-disable-tls",
        "false",
        "serve hubble-listen-address in plain text (anyone reaching it reads every flow)",
    ),
    (
        "hubble-tls-cert-file",
        "",
        "the Hubble server's certificate (PEM), for hubble-listen-address",
    ),
    ("hubble-tls-key-file", "", "its private key (PEM)"),
    (
        "hubble-tls-client-ca-files",
        "",
        "CAs whose client certificates the Hubble server accepts (mTLS; comma-separated)",
    ),
    ("prometheus-serve-addr", "", "metrics address (empty: off)"),
    (
        "socket-path",
        "/var/run/cilium/cilium.sock",
        "REST API socket",
    ),
    ("state-dir", "/var/run/cilium", "state directory"),
    ("bpf-root", "/sys/fs/bpf", "BPF file system root"),
    (
        "bpf-lb-sock",
        "false",
        "socket LB: connections of cgroup-root's processes go straight to a service's backend",
    ),
    (
        "cgroup-root",
        "/run/cilium/cgroupv2",
        "cgroup v2 directory socket LB attaches to (never mounted by the agent)",
    ),
    (
        "local-router-ipv4",
        "",
        "router IP on cilium_host (empty: allocate)",
    ),
    ("mtu", "0", "device MTU (0: detect)"),
    (
        "kvstore-lease-ttl",
        "15m",
        "lifetime of the agent's session keys after it stops renewing them",
    ),
    (
        "k8s-node-name",
        "",
        "this node's name (empty: $K8S_NODE_NAME, then the host name)",
    ),
    (
        "k8s-kubeconfig-path",
        "",
        "kubeconfig of the Kubernetes API (empty: in-cluster when KUBERNETES_SERVICE_HOST is set, else none)",
    ),
    (
        "k8s-api-server",
        "",
        "Kubernetes API server URL (overrides the kubeconfig's or the in-cluster one)",
    ),
    (
        "write-cni-conf-when-ready",
        "",
        "write the CNI configuration (a conflist naming cilium-cni) to this file once the agent is ready",
    ),
    (
        "cni-exclusive",
        "false",
        "with write-cni-conf-when-ready: rename the other CNI configurations of its directory to *.cilium_bak",
    ),
    (
        "identity-allocation-mode",
        "crd",
        "crd (CiliumIdentity objects; needs the Kubernetes API) or kvstore",
    ),
    (
        "ipv4-node",
        "auto",
        "this node's IPv4 address (auto: the first global address)",
    ),
    (
        "ipv4-range",
        "auto",
        "this node's pod CIDR (auto: the first block of cluster-pool-ipv4-cidr)",
    ),
    (
        "monitor-aggregation",
        "None",
        "trace event aggregation: none, lowest, low, medium or maximum (drops and policy verdicts are always reported)",
    ),
    (
        "monitor-aggregation-interval",
        "5s",
        "with monitor-aggregation medium or maximum: report an active connection at most this often",
    ),
    (
        "monitor-aggregation-flags",
        "syn,fin,rst",
        "TCP flags whose first appearance in a direction is reported (syn, fin, rst, psh, ack, urg, ece, cwr, all, none)",
    ),
    (
        "bpf-conntrack-accounting",
        "false",
        "count packets and bytes in each conntrack entry",
    ),
];

/// The Maglev table sizes Cilium accepts.
pub const MAGLEV_TABLE_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
];

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A file of the config directory.
    ConfigDir(PathBuf),
    /// An environment variable.
    Env(String),
    /// A command-line flag.
    Flag,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::ConfigDir(p) => write!(f, "config file {}", p.display()),
            Source::Env(v) => write!(f, "environment variable {v}"),
            Source::Flag => write!(f, "flag"),
        }
    }
}

/// A configuration error, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A flag the agent does not know.
    #[error("unknown flag --{0}")]
    UnknownFlag(String),
    /// A bad value.
    #[error("invalid value {value:?} for {key} (from {origin}): {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Where it came from.
        origin: String,
        /// Why.
        reason: String,
    },
    /// Settings that contradict each other.
    #[error("{0}")]
    Conflict(String),
    /// The config directory could not be read.
    #[error("reading config directory {path}: {reason}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Raw values by key, each with its source; later sources override earlier ones.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    values: BTreeMap<String, (String, Source)>,
    ignored: Vec<String>,
}

fn known(key: &str) -> bool {
    KEYS.iter().any(|(k, _, _)| *k == key)
}

impl ConfigSources {
    /// Reads a config directory: one file per key, the value its trimmed content. Hidden
    /// files (Kubernetes' `..data` links) are skipped; unknown keys are recorded in
    /// [`ConfigSources::ignored`].
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let io = |e: std::io::Error| ConfigError::Io {
            path: dir.to_owned(),
            reason: e.to_string(),
        };
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(io)?
            .collect::<Result<_, _>>()
            .map_err(io)?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') || !path.is_file() {
                continue;
            }
            if !known(&name) {
                self.ignored.push(name);
                continue;
            }
            let value = std::fs::read_to_string(&path).map_err(io)?;
            self.values
                .insert(name, (value.trim().to_owned(), Source::ConfigDir(path)));
        }
        Ok(())
    }

    /// Takes `CILIUM_<KEY>` variables through `get` (e.g. `|k| std::env::var(k).ok()`).
    pub fn load_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        for (key, _, _) in KEYS {
            let var = format!("CILIUM_{}", key.to_ascii_uppercase().replace('-', "_"));
            if let Some(v) = get(&var) {
                self.values.insert((*key).to_owned(), (v, Source::Env(var)));
            }
        }
    }

    /// Sets a flag (`--key=value`); an unknown key is an error.
    pub fn set_flag(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        if !known(key) {
            return Err(ConfigError::UnknownFlag(key.to_owned()));
        }
        self.values
            .insert(key.to_owned(), (value.to_owned(), Source::Flag));
        Ok(())
    }

    /// Keys of the config directory that the agent does not know.
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    fn get(&self, key: &str) -> (String, Source) {
        match self.values.get(key) {
            Some(v) => v.clone(),
            None => (
                KEYS.iter()
                    .find(|(k, _, _)| *k == key)
                    .map(|(_, d, _)| (*d).to_owned())
                    .unwrap_or_default(),
                Source::Default,
            ),
        }
    }
}

/// `routing-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    /// Pods' addresses routed by the network.
    Native,
    /// Encapsulation between nodes.
    Tunnel,
}

/// `bpf-lb-algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LbAlgorithm {
    /// A random backend per new flow.
    Random,
    /// Maglev consistent hashing.
    Maglev,
}

/// `enable-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyEnforcement {
    /// Enforced once a rule selects the endpoint.
    Default,
    /// Always enforced.
    Always,
    /// Never enforced.
    Never,
}

/// `service-no-backend-response`: what a packet for a service without backends gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoBackendResponse {
    /// An ICMP port unreachable (the client's connection is refused at once).
    Reject,
    /// Nothing (the client times out).
    Drop,
}

/// The agent's typed configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AgentConfig {
    /// `debug`.
    pub debug: bool,
    /// `cluster-name`.
    pub cluster_name: String,
    /// `cluster-id`.
    pub cluster_id: u8,
    /// `routing-mode`.
    pub routing_mode: RoutingMode,
    /// `tunnel-protocol` (`vxlan` or `geneve`).
    pub tunnel_protocol: String,
    /// `kube-proxy-replacement`.
    pub kube_proxy_replacement: bool,
    /// `ipam`.
    pub ipam: String,
    /// `cluster-pool-ipv4-cidr`.
    pub cluster_pool_ipv4_cidr: Vec<Ipv4Net>,
    /// `cluster-pool-ipv4-mask-size`.
    pub cluster_pool_ipv4_mask_size: u8,
    /// `ipv4-native-routing-cidr`.
    pub ipv4_native_routing_cidr: Option<Ipv4Net>,
    /// `auto-direct-node-routes`.
    pub auto_direct_node_routes: bool,
    /// `enable-endpoint-routes`.
    pub enable_endpoint_routes: bool,
    /// `enable-ipv4-masquerade`.
    pub enable_ipv4_masquerade: bool,
    /// `enable-bpf-masquerade`.
    pub enable_bpf_masquerade: bool,
    /// `service-no-backend-response`.
    pub service_no_backend_response: NoBackendResponse,
    /// `install-no-conntrack-iptables-rules` (accepted for compatibility).
    pub install_no_conntrack_iptables_rules: bool,
    /// `bpf-lb-algorithm`.
    pub bpf_lb_algorithm: LbAlgorithm,
    /// `bpf-lb-maglev-table-size`.
    pub bpf_lb_maglev_table_size: u32,
    /// `bpf-lb-maglev-hash-seed`.
    pub bpf_lb_maglev_hash_seed: String,
    /// `enable-policy`.
    pub enable_policy: PolicyEnforcement,
    /// `kvstore` (empty: the embedded store).
    pub kvstore: String,
    /// `kvstore-opt`.
    pub kvstore_opt: BTreeMap<String, String>,
    /// `enable-hubble`.
    pub enable_hubble: bool,
    /// `hubble-socket-path`.
    #[serde(rename = "hubble-socket-path")]
    pub hubble_socket_path: PathBuf,
    /// `hubble-event-buffer-capacity`.
    #[serde(rename = "hubble-event-buffer-capacity")]
    pub hubble_event_buffer_capacity: usize,
    /// `hubble-listen-address`.
    pub hubble_listen_address: String,
    /// `hubble-disable-tls`.
    pub hubble_disable_tls: bool,
    /// `hubble-tls-cert-file` (empty: unset).
    pub hubble_tls_cert_file: PathBuf,
    /// `hubble-tls-key-file` (empty: unset).
    pub hubble_tls_key_file: PathBuf,
    /// `hubble-tls-client-ca-files`.
    pub hubble_tls_client_ca_files: Vec<PathBuf>,
    /// `prometheus-serve-addr` (empty: off).
    pub prometheus_serve_addr: String,
    /// `socket-path`.
    pub socket_path: PathBuf,
    /// `state-dir`.
    pub state_dir: PathBuf,
    /// `bpf-root`.
    pub bpf_root: PathBuf,
    /// `bpf-lb-sock`: socket LB on the processes of `cgroup-root`. Unlike Cilium,
    /// `kube-proxy-replacement` does not turn it on: attaching to a cgroup reaches every
    /// process in it, which only an explicit setting may do.
    pub bpf_lb_sock: bool,
    /// `cgroup-root`.
    pub cgroup_root: PathBuf,
    /// `local-router-ipv4`.
    pub local_router_ipv4: Option<Ipv4Addr>,
    /// `mtu` (0: detect).
    pub mtu: u32,
    /// `k8s-node-name` (empty: `$K8S_NODE_NAME`, then the host name).
    #[serde(rename = "k8s-node-name")]
    pub node_name: String,
    /// `ipv4-node` (None: auto).
    #[serde(rename = "ipv4-node")]
    pub ipv4_node: Option<Ipv4Addr>,
    /// `ipv4-range` (None: auto).
    #[serde(rename = "ipv4-range")]
    pub ipv4_range: Option<Ipv4Net>,
    /// `kvstore-lease-ttl`, in seconds.
    #[serde(rename = "kvstore-lease-ttl")]
    pub kvstore_lease_ttl: u64,
    /// `k8s-kubeconfig-path` (None: in-cluster or no Kubernetes API).
    #[serde(rename = "k8s-kubeconfig-path")]
    pub k8s_kubeconfig_path: Option<PathBuf>,
    /// `k8s-api-server` (empty: the kubeconfig's or the in-cluster one).
    #[serde(rename = "k8s-api-server")]
    pub k8s_api_server: String,
    /// `identity-allocation-mode`.
    #[serde(rename = "identity-allocation-mode")]
    pub identity_allocation_mode: IdentityAllocationMode,
    /// `write-cni-conf-when-ready` (None: the agent writes no CNI configuration).
    #[serde(rename = "write-cni-conf-when-ready")]
    pub write_cni_conf_when_ready: Option<PathBuf>,
    /// `cni-exclusive`.
    #[serde(rename = "cni-exclusive")]
    pub cni_exclusive: bool,
    /// `monitor-aggregation`.
    #[serde(rename = "monitor-aggregation")]
    pub monitor_aggregation: MonitorAggregation,
    /// `monitor-aggregation-interval`, in seconds.
    #[serde(rename = "monitor-aggregation-interval")]
    pub monitor_aggregation_interval: u64,
    /// `monitor-aggregation-flags`: the TCP flag bits (FIN 0x01, SYN 0x02, RST 0x04, ...).
    #[serde(rename = "monitor-aggregation-flags")]
    pub monitor_aggregation_flags: u8,
    /// `bpf-conntrack-accounting`.
    #[serde(rename = "bpf-conntrack-accounting")]
    pub bpf_conntrack_accounting: bool,
}

/// `monitor-aggregation`: how much of the forwarded traffic the datapath reports (Cilium's
/// `MonitorAggregationLevel`). Drops and policy verdicts are reported at every level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum MonitorAggregation {
    /// Every packet at every observation point (`none`, `disabled`).
    None = 0,
    /// No traces at the receiving observation points (`from-*`).
    Lowest = 1,
    /// As `Lowest`.
    Low = 2,
    /// Also only a connection's first packet, a packet with a TCP flag not seen before in
    /// its direction, and at most one per `monitor-aggregation-interval`.
    Medium = 3,
    /// As `Medium`.
    Max = 4,
}

impl MonitorAggregation {
    /// The level from its name or number, as Cilium reads it (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, String> {
        Ok(match text.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "disabled" | "0" => MonitorAggregation::None,
            "lowest" | "1" => MonitorAggregation::Lowest,
            "low" | "2" => MonitorAggregation::Low,
            "medium" | "3" => MonitorAggregation::Medium,
            "max" | "maximum" | "4" => MonitorAggregation::Max,
            _ => {
                return Err("expected none, lowest, low, medium or maximum (or 0 to 4)".to_owned());
            }
        })
    }

    /// Cilium's name for it (`cilium-dbg config`'s `MonitorAggregationLevel`).
    pub fn name(self) -> &'static str {
        match self {
            MonitorAggregation::None => "None",
            MonitorAggregation::Lowest => "Lowest",
            MonitorAggregation::Low => "Low",
            MonitorAggregation::Medium => "Medium",
            MonitorAggregation::Max => "Max",
        }
    }
}

/// `monitor-aggregation-flags`: TCP flag names separated by commas, as Cilium reads them.
pub fn parse_tcp_flags(text: &str) -> Result<u8, String> {
    let mut bits = 0u8;
    for name in text.split(',').map(|n| n.trim().to_ascii_lowercase()) {
        bits |= match name.as_str() {
            "" | "none" => 0,
            "all" => 0xff,
            "fin" => 0x01,
            "syn" => 0x02,
            "rst" => 0x04,
            "psh" => 0x08,
            "ack" => 0x10,
            "urg" => 0x20,
            "ece" => 0x40,
            "cwr" => 0x80,
            other => {
                return Err(format!(
                    "unknown TCP flag {other:?} (syn, fin, rst, psh, ack, urg, ece, cwr, all, none)"
                ));
            }
        };
    }
    Ok(bits)
}

/// `identity-allocation-mode`: where security identities are allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentityAllocationMode {
    /// CiliumIdentity objects in the Kubernetes API (Cilium's default). Without a
    /// Kubernetes API the agent keeps them in its cluster store instead, and says so.
    Crd,
    /// The cluster store's `cilium/state/identities/v1` keys.
    Kvstore,
}

/// A duration as Cilium writes them (`15m`, `30s`, `1h`, `1m30s`; a plain number is
/// seconds), in seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => {
                return Err(format!(
                    "{text:?}: expected a duration such as 30s, 15m or 1h"
                ));
            }
        };
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("{text:?}: expected a duration such as 30s, 15m or 1h"))?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{text:?}: too long"))?;
        digits.clear();
    }
    if !digits.is_empty() || t.is_empty() {
        return Err(format!(
            "{text:?}: expected a duration such as 30s, 15m or 1h"
        ));
    }
    Ok(total)
}

struct Reader<'a> {
    sources: &'a ConfigSources,
}

impl Reader<'_> {
    fn parse<T>(
        &self,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, source) = self.sources.get(key);
        f(value.trim()).map_err(|reason| ConfigError::Invalid {
            key: key.to_owned(),
            value,
            origin: source.to_string(),
            reason,
        })
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        self.parse(key, |v| match v.to_ascii_lowercase().as_str() {
            "true" | "1" | "t" => Ok(true),
            "false" | "0" | "f" | "" => Ok(false),
            _ => Err("expected true or false".into()),
        })
    }

    fn string(&self, key: &str) -> Result<String, ConfigError> {
        self.parse(key, |v| Ok(v.to_owned()))
    }

    fn choice<T: Copy>(&self, key: &str, options: &[(&str, T)]) -> Result<T, ConfigError> {
        self.parse(key, |v| {
            options
                .iter()
                .find(|(name, _)| *name == v)
                .map(|(_, t)| *t)
                .ok_or_else(|| {
                    let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                    format!("expected one of {}", names.join(", "))
                })
        })
    }

    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<T, ConfigError> {
        self.parse(key, |v| {
            v.parse::<T>().map_err(|_| "not a valid number".into())
        })
    }
}

impl AgentConfig {
    /// The configuration the sources describe, or the first invalid key.
    pub fn from_sources(sources: &ConfigSources) -> Result<Self, ConfigError> {
        let r = Reader { sources };
        let config = AgentConfig {
            debug: r.bool("debug")?,
            cluster_name: r.parse("cluster-name", |v| {
                if v.is_empty()
                    || v.len() > 32
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                {
                    Err("1-32 lower-case letters, digits or '-'".into())
                } else {
                    Ok(v.to_owned())
                }
            })?,
            cluster_id: r.number("cluster-id")?,
            routing_mode: r.choice(
                "routing-mode",
                &[
                    ("native", RoutingMode::Native),
                    ("tunnel", RoutingMode::Tunnel),
                ],
            )?,
            tunnel_protocol: r
                .choice(
                    "tunnel-protocol",
                    &[("vxlan", "vxlan"), ("geneve", "geneve")],
                )?
                .to_owned(),
            kube_proxy_replacement: r.bool("kube-proxy-replacement")?,
            ipam: r
                .choice("ipam", &[("cluster-pool", "cluster-pool")])?
                .to_owned(),
            cluster_pool_ipv4_cidr: r.parse("cluster-pool-ipv4-cidr", |v| {
                let cidrs: Result<Vec<Ipv4Net>, String> = v
                    .split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse::<Ipv4Net>().map_err(|e| format!("{s:?}: {e}")))
                    .collect();
                match cidrs {
                    Ok(c) if c.is_empty() => Err("at least one CIDR is required".into()),
                    other => other,
                }
            })?,
            cluster_pool_ipv4_mask_size: r.parse("cluster-pool-ipv4-mask-size", |v| {
                match v.parse::<u8>() {
                    Ok(n) if (1..=32).contains(&n) => Ok(n),
                    _ => Err("expected a prefix length 1-32".into()),
                }
            })?,
            ipv4_native_routing_cidr: r.parse("ipv4-native-routing-cidr", |v| {
                if v.is_empty() {
                    Ok(None)
                } else {
                    v.parse::<Ipv4Net>().map(Some).map_err(|e| e.to_string())
                }
            })?,
            auto_direct_node_routes: r.bool("auto-direct-node-routes")?,
            enable_endpoint_routes: r.bool("enable-endpoint-routes")?,
            enable_ipv4_masquerade: r.bool("enable-ipv4-masquerade")?,
            enable_bpf_masquerade: r.bool("enable-bpf-masquerade")?,
            install_no_conntrack_iptables_rules: r.bool("install-no-conntrack-iptables-rules")?,
            service_no_backend_response: r.choice(
                "service-no-backend-response",
                &[
                    ("reject", NoBackendResponse::Reject),
                    ("drop", NoBackendResponse::Drop),
                ],
            )?,
            bpf_lb_algorithm: r.choice(
                "bpf-lb-algorithm",
                &[
                    ("random", LbAlgorithm::Random),
                    ("maglev", LbAlgorithm::Maglev),
                ],
            )?,
            bpf_lb_maglev_table_size: r.parse("bpf-lb-maglev-table-size", |v| {
                match v.parse::<u32>() {
                    Ok(n) if MAGLEV_TABLE_SIZES.contains(&n) => Ok(n),
                    _ => Err(format!("must be one of {MAGLEV_TABLE_SIZES:?}")),
                }
            })?,
            bpf_lb_maglev_hash_seed: r.parse("bpf-lb-maglev-hash-seed", |v| {
                match base64::engine::general_purpose::STANDARD.decode(v) {
                    Ok(b) if b.len() == 12 => Ok(v.to_owned()),
                    _ => Err("must be the base64 encoding of 12 bytes (16 characters)".into()),
                }
            })?,
            enable_policy: r.choice(
                "enable-policy",
                &[
                    ("default", PolicyEnforcement::Default),
                    ("always", PolicyEnforcement::Always),
                    ("never", PolicyEnforcement::Never),
                ],
            )?,
            kvstore: r
                .choice("kvstore", &[("", ""), ("etcd", "etcd")])?
                .to_owned(),
            kvstore_opt: r.parse("kvstore-opt", parse_kvstore_opt)?,
            enable_hubble: r.bool("enable-hubble")?,
            hubble_socket_path: r.parse("hubble-socket-path", nonempty_path)?,
            hubble_event_buffer_capacity: r.parse("hubble-event-buffer-capacity", |v| {
                match v.parse::<usize>() {
                    Ok(n) if n > 0 && n < (1 << 24) && (n + 1).is_power_of_two() => Ok(n),
                    _ => Err("expected 2^n - 1 (1, 3, 7, ..., 4095, ..., 65535)".into()),
                }
            })?,
            hubble_listen_address: r.string("hubble-listen-address")?,
            hubble_disable_tls: r.bool("hubble-disable-tls")?,
            hubble_tls_cert_file: r.string("hubble-tls-cert-file")?.into(),
            hubble_tls_key_file: r.string("hubble-tls-key-file")?.into(),
            hubble_tls_client_ca_files: r.parse("hubble-tls-client-ca-files", |v| {
                Ok(v.split([',', ' ', '\n'])
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from)
                    .collect())
            })?,
            prometheus_serve_addr: r.string("prometheus-serve-addr")?,
            socket_path: r.parse("socket-path", nonempty_path)?,
            state_dir: r.parse("state-dir", nonempty_path)?,
            bpf_root: r.parse("bpf-root", nonempty_path)?,
            bpf_lb_sock: r.bool("bpf-lb-sock")?,
            cgroup_root: r.parse("cgroup-root", nonempty_path)?,
            local_router_ipv4: r.parse("local-router-ipv4", |v| {
                if v.is_empty() {
                    Ok(None)
                } else {
                    v.parse::<Ipv4Addr>().map(Some).map_err(|e| e.to_string())
                }
            })?,
            mtu: r.parse("mtu", |v| match v.parse::<u32>() {
                Ok(0) => Ok(0),
                Ok(n) if (1280..=65535).contains(&n) => Ok(n),
                _ => Err("expected 0 (detect) or 1280-65535".into()),
            })?,
            node_name: r.string("k8s-node-name")?,
            ipv4_node: r.parse("ipv4-node", |v| match v {
                "auto" | "" => Ok(None),
                v => v.parse::<Ipv4Addr>().map(Some).map_err(|e| e.to_string()),
            })?,
            ipv4_range: r.parse("ipv4-range", |v| match v {
                "auto" | "" => Ok(None),
                v => v.parse::<Ipv4Net>().map(Some).map_err(|e| e.to_string()),
            })?,
            kvstore_lease_ttl: r.parse("kvstore-lease-ttl", |v| match parse_duration(v)? {
                0 => Err("must be at least 1s".to_owned()),
                n => Ok(n),
            })?,
            k8s_kubeconfig_path: r.parse("k8s-kubeconfig-path", |v| {
                Ok::<_, String>((!v.is_empty()).then(|| PathBuf::from(v)))
            })?,
            k8s_api_server: r.parse("k8s-api-server", |v| {
                if v.is_empty() || v.starts_with("https://") || v.starts_with("http://") {
                    Ok(v.to_owned())
                } else {
                    Err("expected a URL such as https://192.168.10.100:6443".into())
                }
            })?,
            write_cni_conf_when_ready: r.parse("write-cni-conf-when-ready", |v| {
                Ok::<_, String>((!v.is_empty()).then(|| PathBuf::from(v)))
            })?,
            cni_exclusive: r.bool("cni-exclusive")?,
            monitor_aggregation: r.parse("monitor-aggregation", MonitorAggregation::parse)?,
            monitor_aggregation_interval: r.parse("monitor-aggregation-interval", |v| {
                match parse_duration(v)? {
                    0 => Err("must be at least 1s".to_owned()),
                    n if n > u64::from(u32::MAX) => Err("too long".to_owned()),
                    n => Ok(n),
                }
            })?,
            monitor_aggregation_flags: r.parse("monitor-aggregation-flags", parse_tcp_flags)?,
            bpf_conntrack_accounting: r.bool("bpf-conntrack-accounting")?,
            identity_allocation_mode: r.choice(
                "identity-allocation-mode",
                &[
                    ("crd", IdentityAllocationMode::Crd),
                    ("kvstore", IdentityAllocationMode::Kvstore),
                ],
            )?,
        };
        config.check()?;
        Ok(config)
    }

    /// The etcd endpoints of `kvstore-opt`: `etcd.address=<url>` (several separated by
    /// `;`), or `etcd.config=<file>`, a YAML file with an `endpoints:` list as Cilium
    /// mounts it.
    pub fn etcd_endpoints(&self) -> Result<Vec<String>, ConfigError> {
        self.etcd_config().map(|c| c.endpoints)
    }

    /// How to reach etcd ([`etcd_config_of`] of `kvstore-opt`): the endpoints, and the TLS
    /// files of an `etcd.config` file.
    pub fn etcd_config(&self) -> Result<EtcdConfig, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            key: "kvstore-opt".into(),
            value: self
                .kvstore_opt
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(","),
            origin: "the effective configuration".into(),
            reason,
        };
        etcd_config_of(&self.kvstore_opt).map_err(bad)
    }

    /// Cross-key rules, with Cilium's wording where it has one.
    fn check(&self) -> Result<(), ConfigError> {
        if self.kvstore == "etcd"
            && !self.kvstore_opt.contains_key("etcd.address")
            && !self.kvstore_opt.contains_key("etcd.config")
        {
            return Err(ConfigError::Conflict(
                "kvstore=etcd needs kvstore-opt etcd.address=<url> or etcd.config=<file>".into(),
            ));
        }
        if self.routing_mode == RoutingMode::Tunnel && self.auto_direct_node_routes {
            return Err(ConfigError::Conflict(
                "auto-direct-node-routes cannot be used with routing-mode=tunnel".into(),
            ));
        }
        if self.routing_mode == RoutingMode::Native
            && self.enable_ipv4_masquerade
            && self.ipv4_native_routing_cidr.is_none()
        {
            return Err(ConfigError::Conflict(
                "native routing cidr must be configured with option --ipv4-native-routing-cidr in combination with --enable-ipv4-masquerade --routing-mode=native".into(),
            ));
        }
        if self.enable_bpf_masquerade && !self.enable_ipv4_masquerade {
            return Err(ConfigError::Conflict(
                "enable-bpf-masquerade needs enable-ipv4-masquerade".into(),
            ));
        }
        if let Some(cidr) = self
            .cluster_pool_ipv4_cidr
            .iter()
            .find(|c| c.prefix_len() > self.cluster_pool_ipv4_mask_size)
        {
            return Err(ConfigError::Conflict(format!(
                "cluster-pool-ipv4-mask-size /{} is wider than the cluster CIDR {cidr}",
                self.cluster_pool_ipv4_mask_size
            )));
        }
        Ok(())
    }

    /// The effective configuration as `key value` lines in key order (what the agent prints
    /// at start, and `cilium-dbg config` shows).
    pub fn effective(&self) -> Vec<(String, String)> {
        let value = serde_json::to_value(self).unwrap_or_default();
        let mut out = Vec::new();
        if let serde_json::Value::Object(m) = value {
            for (k, v) in m {
                let text = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::Array(a) => a
                        .iter()
                        .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
                        .collect::<Vec<_>>()
                        .join(","),
                    serde_json::Value::Object(o) => o
                        .iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(","),
                    other => other.to_string(),
                };
                out.push((k, text));
            }
        }
        out
    }
}

fn nonempty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("a path is required".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

/// `kvstore-opt` as key=value pairs separated by commas.
pub fn parse_kvstore_opt(v: &str) -> Result<BTreeMap<String, String>, String> {
    let mut m = BTreeMap::new();
    for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
        let (k, val) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        m.insert(k.trim().to_owned(), val.trim().to_owned());
    }
    Ok(m)
}

/// How to reach etcd, from `kvstore-opt`: its endpoints and, from an `etcd.config` file as
/// Cilium reads it, the TLS files (`trusted-ca-file`, `cert-file`, `key-file`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EtcdConfig {
    /// The client URLs (`http://` or `https://`).
    pub endpoints: Vec<String>,
    /// The CA that signs etcd's server certificate (`trusted-ca-file`).
    pub trusted_ca_file: Option<PathBuf>,
    /// The client certificate (`cert-file`), for an etcd with `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    /// Its private key (`key-file`).
    pub key_file: Option<PathBuf>,
}

impl EtcdConfig {
    /// Parses an `etcd.config` file's YAML (`endpoints`, `trusted-ca-file`, `cert-file`,
    /// `key-file`; other keys of etcd's client configuration are ignored) and checks that
    /// its TLS files go together (see [`etcd_config_of`]).
    pub fn from_yaml(text: &str) -> Result<EtcdConfig, String> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct File {
            endpoints: Vec<String>,
            trusted_ca_file: Option<PathBuf>,
            cert_file: Option<PathBuf>,
            key_file: Option<PathBuf>,
        }
        let file: File = serde_norway::from_str(text).map_err(|e| e.to_string())?;
        if file.endpoints.is_empty() {
            return Err("no endpoints listed".into());
        }
        let https = file
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        let config = EtcdConfig {
            endpoints: file.endpoints,
            trusted_ca_file: file.trusted_ca_file,
            cert_file: file.cert_file,
            key_file: file.key_file,
        };
        let files = config.trusted_ca_file.is_some()
            || config.cert_file.is_some()
            || config.key_file.is_some();
        if https > 0 && https < config.endpoints.len() {
            return Err("endpoints mix http:// and https://".into());
        }
        if https > 0 && config.trusted_ca_file.is_none() {
            return Err("https:// endpoints need trusted-ca-file".into());
        }
        if https == 0 && files {
            return Err("TLS files with http:// endpoints (use https://)".into());
        }
        if config.cert_file.is_some() != config.key_file.is_some() {
            return Err("cert-file and key-file go together".into());
        }
        Ok(config)
    }

    /// Whether the endpoints are reached over TLS.
    pub fn tls(&self) -> bool {
        self.trusted_ca_file.is_some()
    }
}

/// The etcd endpoints of parsed `kvstore-opt` pairs: `etcd.address=<url>` (several
/// separated by `;`, `http://` added where no scheme is given), or `etcd.config=<file>`, a
/// YAML file with an `endpoints:` list as Cilium mounts it.
pub fn etcd_endpoints_of(opts: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    etcd_config_of(opts).map(|c| c.endpoints)
}

/// [`EtcdConfig`] of parsed `kvstore-opt` pairs (see [`etcd_endpoints_of`]). The TLS files
/// come with the file only, and go together: `https://` endpoints need `trusted-ca-file`,
/// a certificate needs its key, and TLS files with `http://` endpoints are refused rather
/// than ignored.
pub fn etcd_config_of(opts: &BTreeMap<String, String>) -> Result<EtcdConfig, String> {
    if let Some(addr) = opts.get("etcd.address") {
        let list: Vec<String> = addr
            .split(';')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(|a| {
                if a.contains("://") {
                    a.to_owned()
                } else {
                    format!("http://{a}")
                }
            })
            .collect();
        if list.is_empty() {
            return Err("etcd.address is empty".into());
        }
        if list.iter().any(|a| a.starts_with("https://")) {
            return Err(
                "etcd.address: https:// endpoints need etcd.config=<file> with trusted-ca-file, cert-file and key-file".into(),
            );
        }
        return Ok(EtcdConfig {
            endpoints: list,
            ..EtcdConfig::default()
        });
    }
    if let Some(path) = opts.get("etcd.config") {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading etcd.config {path}: {e}"))?;
        return EtcdConfig::from_yaml(&text).map_err(|e| format!("etcd.config {path}: {e}"));
    }
    Err("kvstore=etcd needs etcd.address=<url> or etcd.config=<file>".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(pairs: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let mut s = ConfigSources::default();
        for (k, v) in pairs {
            s.set_flag(k, v)?;
        }
        AgentConfig::from_sources(&s)
    }

    #[test]
    fn durations_and_etcd_endpoints() {
        assert_eq!(parse_duration("15m"), Ok(900));
        assert_eq!(parse_duration("1m30s"), Ok(90));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("45"), Ok(45));
        for bad in ["", "m", "5x", "10m5", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let c = flags(&[]).unwrap();
        assert_eq!(c.monitor_aggregation, MonitorAggregation::None);
        assert_eq!(
            (c.monitor_aggregation_interval, c.monitor_aggregation_flags),
            (5, 0x07)
        );
        let c = flags(&[
            ("monitor-aggregation", "Medium"),
            ("monitor-aggregation-interval", "1m"),
            ("monitor-aggregation-flags", "all"),
        ])
        .unwrap();
        assert_eq!(c.monitor_aggregation, MonitorAggregation::Medium);
        assert_eq!(c.monitor_aggregation.name(), "Medium");
        assert_eq!(
            (c.monitor_aggregation_interval, c.monitor_aggregation_flags),
            (60, 0xff)
        );
        assert_eq!(
            flags(&[("monitor-aggregation", "maximum")])
                .unwrap()
                .monitor_aggregation,
            MonitorAggregation::Max
        );
        assert_eq!(parse_tcp_flags("syn, ACK").unwrap(), 0x12);
        for (k, v) in [
            ("monitor-aggregation", "high"),
            ("monitor-aggregation", "5"),
            ("monitor-aggregation-interval", "0s"),
            ("monitor-aggregation-flags", "syn,bogus"),
        ] {
            assert!(flags(&[(k, v)]).is_err(), "{k}={v}");
        }
        let c = flags(&[("kvstore-lease-ttl", "30s")]).unwrap();
        assert_eq!(c.kvstore_lease_ttl, 30);
        assert!(flags(&[("kvstore-lease-ttl", "0s")]).is_err());
        // kvstore=etcd needs to know where etcd is.
        let err = flags(&[("kvstore", "etcd")]).unwrap_err().to_string();
        assert!(err.contains("etcd.address"), "{err}");
        let c = flags(&[
            ("kvstore", "etcd"),
            (
                "kvstore-opt",
                "etcd.address=192.168.10.1:2379;http://192.168.10.2:2379",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.etcd_endpoints().unwrap(),
            ["http://192.168.10.1:2379", "http://192.168.10.2:2379"]
        );
        let dir = std::env::temp_dir().join(format!("crs-etcdconf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("etcd.config");
        std::fs::write(&file, "---\nendpoints:\n- http://192.168.10.100:2379\n").unwrap();
        let opt = format!("etcd.config={}", file.display());
        let c = flags(&[("kvstore", "etcd"), ("kvstore-opt", &opt)]).unwrap();
        assert_eq!(c.etcd_endpoints().unwrap(), ["http://192.168.10.100:2379"]);
        std::fs::write(&file, "endpoints: []\n").unwrap();
        assert!(c.etcd_endpoints().is_err());
        // TLS files, as Cilium's etcd.config has them.
        std::fs::write(
            &file,
            "endpoints:\n- https://192.168.10.1:2379\ntrusted-ca-file: /s/ca.crt\ncert-file: /s/c.crt\nkey-file: /s/c.key\n",
        )
        .unwrap();
        let conf = etcd_config_of(&c.kvstore_opt).unwrap();
        assert!(conf.tls());
        assert_eq!(conf.cert_file.as_deref(), Some(Path::new("/s/c.crt")));
        for (bad, why) in [
            ("endpoints:\n- https://a:2379\n", "need trusted-ca-file"),
            (
                "endpoints:\n- http://a:2379\ntrusted-ca-file: /ca\n",
                "TLS files with http://",
            ),
            (
                "endpoints:\n- https://a:2379\n- http://b:2379\ntrusted-ca-file: /ca\n",
                "mix",
            ),
            (
                "endpoints:\n- https://a:2379\ntrusted-ca-file: /ca\ncert-file: /c\n",
                "go together",
            ),
        ] {
            std::fs::write(&file, bad).unwrap();
            let e = etcd_config_of(&c.kvstore_opt).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let https = parse_kvstore_opt("etcd.address=https://a:2379").unwrap();
        assert!(etcd_config_of(&https).unwrap_err().contains("etcd.config"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn services_without_backends_are_rejected_unless_told_to_drop() {
        let c = flags(&[]).unwrap();
        assert_eq!(c.service_no_backend_response, NoBackendResponse::Reject);
        let c = flags(&[("service-no-backend-response", "drop")]).unwrap();
        assert_eq!(c.service_no_backend_response, NoBackendResponse::Drop);
        let e = flags(&[("service-no-backend-response", "ignore")]).unwrap_err();
        assert!(e.to_string().contains("service-no-backend-response"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_every_key_is_printed() {
        let c = flags(&[]).unwrap();
        assert_eq!(c.routing_mode, RoutingMode::Tunnel);
        assert_eq!(c.bpf_lb_maglev_table_size, 16381);
        assert_eq!(c.enable_policy, PolicyEnforcement::Default);
        let eff = c.effective();
        assert_eq!(eff.len(), KEYS.len());
        for (k, _, _) in KEYS {
            assert!(
                eff.iter().any(|(e, _)| e == k),
                "{k} missing from effective config"
            );
        }
        let cidr = eff
            .iter()
            .find(|(k, _)| k == "cluster-pool-ipv4-cidr")
            .unwrap();
        assert_eq!(cidr.1, "10.0.0.0/8");
    }

    #[test]
    fn the_seed_settings() {
        let c = flags(&[
            ("routing-mode", "native"),
            ("kube-proxy-replacement", "true"),
            ("ipam", "cluster-pool"),
            ("cluster-pool-ipv4-cidr", "172.20.0.0/16"),
            ("ipv4-native-routing-cidr", "172.20.0.0/16"),
            ("enable-endpoint-routes", "true"),
            ("enable-bpf-masquerade", "true"),
            ("auto-direct-node-routes", "true"),
            ("install-no-conntrack-iptables-rules", "true"),
        ])
        .unwrap();
        assert!(c.kube_proxy_replacement && c.enable_bpf_masquerade && c.auto_direct_node_routes);
        assert_eq!(
            c.cluster_pool_ipv4_cidr,
            vec!["172.20.0.0/16".parse::<Ipv4Net>().unwrap()]
        );
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        let table = [
            ("routing-mode", "bgp"),
            ("bpf-lb-algorithm", "roundrobin"),
            ("bpf-lb-maglev-table-size", "1000"),
            ("bpf-lb-maglev-hash-seed", "short"),
            ("cluster-pool-ipv4-cidr", "172.20.0.0/33"),
            ("cluster-pool-ipv4-cidr", ""),
            ("cluster-pool-ipv4-mask-size", "40"),
            ("cluster-id", "256"),
            ("debug", "yes please"),
            ("enable-policy", "sometimes"),
            ("kvstore", "consul"),
            ("kvstore-opt", "novalue"),
            ("mtu", "100"),
            ("ipam", "kubernetes"),
            ("cluster-name", "Big Cluster"),
            ("local-router-ipv4", "300.1.1.1"),
        ];
        for (key, value) in table {
            let err = flags(&[(key, value)]).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(key) && text.contains("flag"),
                "{key}={value}: {text}"
            );
        }
        assert_eq!(
            flags(&[("no-such-flag", "1")]).unwrap_err(),
            ConfigError::UnknownFlag("no-such-flag".into())
        );
    }

    #[test]
    fn conflicts() {
        for pairs in [
            vec![("auto-direct-node-routes", "true")],
            vec![("routing-mode", "native")],
            vec![
                ("enable-ipv4-masquerade", "false"),
                ("enable-bpf-masquerade", "true"),
            ],
            vec![
                ("cluster-pool-ipv4-cidr", "10.0.0.0/16"),
                ("cluster-pool-ipv4-mask-size", "8"),
            ],
        ] {
            assert!(
                matches!(flags(&pairs), Err(ConfigError::Conflict(_))),
                "{pairs:?}"
            );
        }
    }

    #[test]
    fn precedence_dir_then_env_then_flags() {
        let dir = std::env::temp_dir().join(format!("crs-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("debug"), "true\n").unwrap();
        std::fs::write(dir.join("bpf-lb-algorithm"), "maglev").unwrap();
        std::fs::write(dir.join("enable-policy"), "always").unwrap();
        std::fs::write(dir.join("k8s-service-host"), "192.168.10.100").unwrap();
        std::fs::write(dir.join("..data"), "ignored").unwrap();
        let mut s = ConfigSources::default();
        s.load_dir(&dir).unwrap();
        s.load_env(|k| (k == "CILIUM_ENABLE_POLICY").then(|| "never".to_owned()));
        s.set_flag("bpf-lb-algorithm", "random").unwrap();
        let c = AgentConfig::from_sources(&s).unwrap();
        assert!(c.debug, "from the directory");
        assert_eq!(
            c.enable_policy,
            PolicyEnforcement::Never,
            "env beats the directory"
        );
        assert_eq!(c.bpf_lb_algorithm, LbAlgorithm::Random, "flag beats both");
        assert_eq!(s.ignored(), ["k8s-service-host"]);
        std::fs::write(dir.join("mtu"), "12").unwrap();
        let mut s = ConfigSources::default();
        s.load_dir(&dir).unwrap();
        let err = AgentConfig::from_sources(&s).unwrap_err().to_string();
        assert!(err.contains("mtu") && err.contains("config file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(matches!(
            ConfigSources::default().load_dir(&dir),
            Err(ConfigError::Io { .. })
        ));
    }
}
