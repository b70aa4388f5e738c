// SPDX-License-Identifier: Apache-2.0

//! Helm values for Cilium's chart, as `cilium install --set ... --values FILE` and
//! `helm install --set` take them, turned into the `cilium-config` ConfigMap the way the
//! chart's `cilium-configmap.yaml` template renders it.
//!
//! [`Values`] holds what the user gave, as a JSON tree: `--values` files merged deep in
//! the order given (later wins, lists replaced whole, as Helm merges them), then `--set` and
//! `--set-string` written into the tree with Helm's `strvals` syntax and typing.
//! [`Values::resolve`] checks every value against [`KNOWN_VALUES`] (the one table that
//! lists each value this crate knows, its type, the chart's default and the ConfigMap key it
//! feeds), applies the chart's defaults and the chart's and agent's cross-value rules, and
//! returns typed [`Settings`]; [`Settings::config_map`] is the ConfigMap data.
//!
//! What differs from the chart, on purpose:
//! - Only keys this project's agent reads are written (the chart also writes dozens that
//!   cilium-rs's agent would only warn about, such as `enable-ipv4`); a resolved
//!   configuration is loaded through the agent's own parser before it is returned, so a
//!   ConfigMap that `resolve` accepts is one the agent accepts.
//! - A value the chart has but cilium-rs does not implement (Geneve, IPv6, other IPAM
//!   modes, encryption, ...) is an error naming it, not silently ignored; such a value set
//!   to what cilium-rs does anyway (`ipv6.enabled=false`) is accepted.
//! - An unknown value is an error (Helm ignores it), with the closest known name.
//! - `null` resets a value to the chart's default.
//! - `k8sServiceHost`/`k8sServicePort` go to the agent's environment
//!   (`KUBERNETES_SERVICE_HOST`/`PORT`, as the chart's DaemonSet sets them), not the
//!   ConfigMap: they are [`Settings`] fields for the installer.
//!
//! ```
//! use cilium_cli::values::{RoutingMode, Values};
//!
//! let mut values = Values::new();
//! values.merge_yaml("hubble:\n  relay:\n    enabled: true\n").unwrap();
//! values.set("routingMode=native,ipv4NativeRoutingCIDR=10.0.0.0/8").unwrap();
//! values.set("ipam.operator.clusterPoolIPv4PodCIDRList={10.1.0.0/16}").unwrap();
//! let settings = values.resolve().unwrap();
//! assert_eq!(settings.routing_mode, RoutingMode::Native);
//! assert!(settings.hubble_relay_enabled);
//! let data = settings.config_map();
//! assert_eq!(data["cluster-pool-ipv4-cidr"], "10.1.0.0/16");
//! assert_eq!(data["tunnel-protocol"], "vxlan");
//!
//! let err = values.set("ipam.operater.clusterPoolIPv4MaskSize=26").and_then(|()| values.resolve());
//! assert_eq!(
//!     err.unwrap_err().to_string(),
//!     r#"unknown value "ipam.operater.clusterPoolIPv4MaskSize" (did you mean "ipam.operator.clusterPoolIPv4MaskSize"?)"#
//! );
//! ```

use std::collections::BTreeMap;

use cilium_core::config::{AgentConfig, ConfigError, ConfigSources, KEYS, MAGLEV_TABLE_SIZES};
pub use cilium_core::config::{
    IdentityAllocationMode, LbAlgorithm, PolicyEnforcement, RoutingMode,
};
use ipnet::Ipv4Net;
use serde_json::{Map, Value};

// ---------------------------------------------------------------------------------------
// The table of known values.
// ---------------------------------------------------------------------------------------

/// What a value holds, and how it is checked.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// `true`/`false` (also as the strings `"true"`/`"false"`).
    Bool,
    /// An integer in `min..=max` (also as a string of digits); `""` is unset.
    Int { min: i64, max: i64 },
    /// A string (a number is taken as its text).
    Str,
    /// One of `choices` (compared without case); `""` is the default. Those also in
    /// `unsupported` are upstream's but not cilium-rs's, for the reason `why`.
    Choice {
        choices: &'static [&'static str],
        unsupported: &'static [&'static str],
        why: &'static str,
    },
    /// An IPv4 CIDR; `""` is unset.
    Cidr,
    /// IPv4 CIDRs: a list, or one string of them separated by commas or spaces.
    CidrList,
    /// Strings: a list of scalars (rendered as text), or one string as a list of one.
    StrList,
    /// A map of string keys to scalars (rendered as text).
    StrMap,
    /// An upstream value cilium-rs accepts only at `only`, which is what it does anyway.
    Fixed {
        only: &'static str,
        why: &'static str,
    },
}

/// One chart value this crate knows: an entry of [`KNOWN_VALUES`].
#[derive(Debug)]
pub struct KnownValue {
    /// The value's path, as `--set` names it (`ipam.operator.clusterPoolIPv4MaskSize`).
    pub path: &'static str,
    /// The chart's default as `--set` would write it; `None` when the chart leaves it
    /// unset.
    pub default: Option<&'static str>,
    /// The `cilium-config` key it is written to (`""`: none, it shapes the installed
    /// objects or is only checked).
    pub config_key: &'static str,
    /// What it does.
    pub help: &'static str,
    kind: Kind,
}

const fn known(
    path: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    config_key: &'static str,
    help: &'static str,
) -> KnownValue {
    KnownValue {
        path,
        default,
        config_key,
        help,
        kind,
    }
}

/// Where the agent reads its Hubble TLS files (the chart's projected `hubble-tls` volume
/// of Secret `hubble-server-certs`), by their `cilium-config` keys.
pub const HUBBLE_TLS_FILES: [(&str, &str); 3] = [
    (
        "hubble-tls-cert-file",
        "/var/lib/cilium/tls/hubble/server.crt",
    ),
    (
        "hubble-tls-key-file",
        "/var/lib/cilium/tls/hubble/server.key",
    ),
    (
        "hubble-tls-client-ca-files",
        "/var/lib/cilium/tls/hubble/client-ca.crt",
    ),
];

const BOOL: Kind = Kind::Bool;
const STR: Kind = Kind::Str;
const fn int(min: i64, max: i64) -> Kind {
    Kind::Int { min, max }
}
const fn choice(choices: &'static [&'static str]) -> Kind {
    Kind::Choice {
        choices,
        unsupported: &[],
        why: "",
    }
}
const fn fixed(only: &'static str, why: &'static str) -> Kind {
    Kind::Fixed { only, why }
}

const NO_IPV6: &str = "the datapath is IPv4-only";
const IPAM_MODES: &[&str] = &[
    "cluster-pool",
    "kubernetes",
    "multi-pool",
    "crd",
    "eni",
    "azure",
    "alibabacloud",
    "delegated-plugin",
];

/// Every chart value cilium-rs knows, in the chart's terms. A value not listed here is an
/// error (`unknown value`).
pub const KNOWN_VALUES: &[KnownValue] = &[
    // The Kubernetes API.
    known(
        "k8sServiceHost",
        STR,
        Some(""),
        "",
        "API server host the agent and operator reach (KUBERNETES_SERVICE_HOST); empty: the in-cluster service",
    ),
    known(
        "k8sServicePort",
        int(1, 65535),
        None,
        "",
        "API server port (KUBERNETES_SERVICE_PORT)",
    ),
    known(
        "kubeConfigPath",
        STR,
        Some(""),
        "k8s-kubeconfig-path",
        "kubeconfig the agent reads (empty: in-cluster)",
    ),
    // The agent.
    known(
        "debug.enabled",
        BOOL,
        Some("false"),
        "debug",
        "debug logging",
    ),
    known(
        "cluster.name",
        STR,
        Some("default"),
        "cluster-name",
        "cluster name: 1-32 lower-case letters, digits or '-', starting and ending alphanumeric",
    ),
    known(
        "cluster.id",
        int(0, 255),
        Some("0"),
        "cluster-id",
        "cluster id (0-255)",
    ),
    known(
        "identityAllocationMode",
        Kind::Choice {
            choices: &[
                "crd",
                "kvstore",
                "doublewrite-readkvstore",
                "doublewrite-readcrd",
            ],
            unsupported: &["doublewrite-readkvstore", "doublewrite-readcrd"],
            why: "identities live in CRDs or in the kvstore, not both",
        },
        Some("crd"),
        "identity-allocation-mode",
        "where identities are allocated: crd or kvstore",
    ),
    known(
        "policyEnforcementMode",
        choice(&["default", "always", "never"]),
        Some("default"),
        "enable-policy",
        "policy enforcement: default, always or never",
    ),
    known(
        "MTU",
        int(0, 65535),
        Some("0"),
        "mtu",
        "device MTU (0: detect; else 1280-65535)",
    ),
    known(
        "extraArgs",
        Kind::StrList,
        Some(""),
        "",
        "more cilium-agent arguments",
    ),
    known(
        "extraConfig",
        Kind::StrMap,
        None,
        "",
        "more cilium-config keys, each written as given, last (overriding the chart's)",
    ),
    // Routing.
    known(
        "routingMode",
        choice(&["native", "tunnel"]),
        Some("tunnel"),
        "routing-mode",
        "native or tunnel",
    ),
    known(
        "tunnelProtocol",
        Kind::Choice {
            choices: &["vxlan", "geneve"],
            unsupported: &["geneve"],
            why: "the datapath tunnels with VXLAN only",
        },
        Some("vxlan"),
        "tunnel-protocol",
        "tunnel encapsulation: vxlan",
    ),
    known(
        "autoDirectNodeRoutes",
        BOOL,
        Some("false"),
        "auto-direct-node-routes",
        "routes to other nodes' pod CIDRs (native routing on one L2 segment)",
    ),
    known(
        "ipv4NativeRoutingCIDR",
        Kind::Cidr,
        None,
        "ipv4-native-routing-cidr",
        "CIDR routed natively, without masquerading (required for native routing)",
    ),
    known(
        "endpointRoutes.enabled",
        BOOL,
        Some("false"),
        "enable-endpoint-routes",
        "one route per endpoint instead of via cilium_host",
    ),
    known(
        "ipv4.enabled",
        fixed("true", NO_IPV6),
        Some("true"),
        "",
        "IPv4 addressing (always on)",
    ),
    known(
        "ipv6.enabled",
        fixed("false", NO_IPV6),
        Some("false"),
        "",
        "IPv6 addressing (not implemented)",
    ),
    known(
        "ipv6NativeRoutingCIDR",
        fixed("", NO_IPV6),
        Some(""),
        "",
        "IPv6 native-routing CIDR (not implemented)",
    ),
    // Masquerading and kube-proxy replacement.
    known(
        "enableIPv4Masquerade",
        BOOL,
        Some("true"),
        "enable-ipv4-masquerade",
        "masquerade pod traffic leaving the native-routing CIDR",
    ),
    known(
        "bpf.masquerade",
        BOOL,
        None,
        "enable-bpf-masquerade",
        "masquerade in BPF instead of iptables",
    ),
    known(
        "bpf.monitorAggregation",
        choice(&[
            "none", "disabled", "lowest", "low", "medium", "max", "maximum",
        ]),
        Some("medium"),
        "monitor-aggregation",
        "how much forwarded traffic is reported to Hubble: none, low, medium, maximum",
    ),
    known(
        "bpf.monitorInterval",
        STR,
        Some("5s"),
        "monitor-aggregation-interval",
        "with medium or maximum aggregation, an active connection's report interval",
    ),
    known(
        "bpf.monitorFlags",
        STR,
        Some("all"),
        "monitor-aggregation-flags",
        "TCP flags whose first appearance in a direction is reported",
    ),
    known(
        "kubeProxyReplacement",
        choice(&["true", "false"]),
        Some("false"),
        "kube-proxy-replacement",
        "services in BPF instead of kube-proxy",
    ),
    known(
        "socketLB.enabled",
        BOOL,
        None,
        "bpf-lb-sock",
        "socket LB for the node's own processes (written as kubeProxyReplacement when unset, as Cilium turns it on with it)",
    ),
    known(
        "installNoConntrackIptablesRules",
        BOOL,
        Some("false"),
        "install-no-conntrack-iptables-rules",
        "skip netfilter conntrack for pod traffic (needs kubeProxyReplacement and bpf.masquerade)",
    ),
    known(
        "cni.exclusive",
        BOOL,
        Some("true"),
        "cni-exclusive",
        "the agent's CNI configuration is the only one (others renamed to *.cilium_bak)",
    ),
    known(
        "loadBalancer.algorithm",
        choice(&["random", "maglev"]),
        None,
        "bpf-lb-algorithm",
        "backend selection: random or maglev",
    ),
    known(
        "loadBalancer.mode",
        fixed("snat", "remote backends are reached with SNAT only"),
        None,
        "",
        "forwarding to remote backends: snat",
    ),
    known(
        "loadBalancer.acceleration",
        fixed("disabled", "there is no XDP acceleration"),
        Some("disabled"),
        "",
        "XDP acceleration: disabled",
    ),
    known(
        "maglev.tableSize",
        int(251, 131_071),
        None,
        "bpf-lb-maglev-table-size",
        "Maglev table size, one of Cilium's primes (251 ... 131071)",
    ),
    known(
        "maglev.hashSeed",
        STR,
        None,
        "bpf-lb-maglev-hash-seed",
        "Maglev seed, the base64 of 12 bytes",
    ),
    // IPAM.
    known(
        "ipam.mode",
        Kind::Choice {
            choices: IPAM_MODES,
            unsupported: &[
                "kubernetes",
                "multi-pool",
                "crd",
                "eni",
                "azure",
                "alibabacloud",
                "delegated-plugin",
            ],
            why: "only cluster-pool IPAM is implemented",
        },
        Some("cluster-pool"),
        "ipam",
        "IPAM mode: cluster-pool",
    ),
    known(
        "ipam.operator.clusterPoolIPv4PodCIDRList",
        Kind::CidrList,
        Some("10.0.0.0/8"),
        "cluster-pool-ipv4-cidr",
        "the pools nodes' pod CIDRs are carved from",
    ),
    known(
        "ipam.operator.clusterPoolIPv4MaskSize",
        int(1, 30),
        Some("24"),
        "cluster-pool-ipv4-mask-size",
        "prefix length of each node's pod CIDR",
    ),
    // Hubble.
    known(
        "hubble.enabled",
        BOOL,
        Some("true"),
        "enable-hubble",
        "flow observability",
    ),
    known(
        "hubble.socketPath",
        STR,
        Some("/var/run/cilium/hubble.sock"),
        "hubble-socket-path",
        "unix socket of the agent's Hubble API",
    ),
    known(
        "hubble.listenAddress",
        STR,
        Some(":4244"),
        "hubble-listen-address",
        "TCP address of the agent's Hubble API (Hubble Relay connects to it; empty: none)",
    ),
    known(
        "hubble.eventBufferCapacity",
        int(1, 65535),
        None,
        "hubble-event-buffer-capacity",
        "flows each agent keeps (2^n - 1)",
    ),
    known(
        "hubble.tls.enabled",
        BOOL,
        Some("true"),
        "hubble-disable-tls",
        "mutual TLS on the agents' hubble.listenAddress (false: plain text)",
    ),
    known(
        "hubble.tls.auto.enabled",
        BOOL,
        Some("true"),
        "",
        "make the CA and certificates (Secrets cilium-ca, hubble-server-certs, hubble-relay-client-certs)",
    ),
    known(
        "hubble.tls.auto.method",
        Kind::Choice {
            choices: &["helm", "cronJob", "certmanager"],
            unsupported: &["cronJob", "certmanager"],
            why: "the certificates are made by the CLI at install and upgrade, the chart's helm method",
        },
        Some("helm"),
        "",
        "how the certificates are made: helm (at every install and upgrade, the CA kept)",
    ),
    known(
        "hubble.tls.auto.certValidityDuration",
        int(1, 36_500),
        Some("365"),
        "",
        "days the generated certificates are valid",
    ),
    known(
        "hubble.relay.enabled",
        BOOL,
        Some("false"),
        "",
        "install Hubble Relay (needs hubble.enabled)",
    ),
    known(
        "hubble.relay.tls.server.enabled",
        fixed(
            "false",
            "the relay serves its clients in plain text here (hubble-relay has --tls-server-cert-file for a hand-made setup)",
        ),
        Some("false"),
        "",
        "TLS on the relay's own listener: false",
    ),
    known(
        "hubble.ui.enabled",
        BOOL,
        Some("false"),
        "",
        "install the Hubble UI (needs hubble.relay.enabled)",
    ),
    // Metrics.
    known(
        "prometheus.enabled",
        BOOL,
        Some("false"),
        "prometheus-serve-addr",
        "agent metrics",
    ),
    known(
        "prometheus.port",
        int(1, 65535),
        Some("9962"),
        "prometheus-serve-addr",
        "agent metrics port",
    ),
    // What gets installed.
    known(
        "operator.replicas",
        int(1, i32::MAX as i64),
        Some("2"),
        "",
        "cilium-operator replicas",
    ),
    known(
        "operator.extraArgs",
        Kind::StrList,
        Some(""),
        "",
        "more cilium-operator arguments",
    ),
    known(
        "image.repository",
        STR,
        Some("quay.io/cilium/cilium"),
        "",
        "agent image repository",
    ),
    known(
        "image.tag",
        STR,
        None,
        "",
        "agent image tag (unset: the CLI's version)",
    ),
    known(
        "image.pullPolicy",
        choice(&["Always", "IfNotPresent", "Never"]),
        Some("IfNotPresent"),
        "",
        "agent image pull policy",
    ),
    // Upstream features cilium-rs does not have: accepted only as off.
    known(
        "encryption.enabled",
        fixed("false", "there is no IPsec or WireGuard encryption"),
        Some("false"),
        "",
        "transparent encryption (not implemented)",
    ),
    known(
        "bandwidthManager.enabled",
        fixed("false", "there is no bandwidth manager"),
        Some("false"),
        "",
        "bandwidth manager (not implemented)",
    ),
    known(
        "hostFirewall.enabled",
        fixed("false", "there are no host policies"),
        Some("false"),
        "",
        "host firewall (not implemented)",
    ),
    known(
        "egressGateway.enabled",
        fixed("false", "there is no egress gateway"),
        Some("false"),
        "",
        "egress gateway (not implemented)",
    ),
    known(
        "l2announcements.enabled",
        fixed("false", "there are no L2 announcements"),
        Some("false"),
        "",
        "L2 announcements (not implemented)",
    ),
    known(
        "bgpControlPlane.enabled",
        fixed("false", "there is no BGP control plane"),
        Some("false"),
        "",
        "BGP control plane (not implemented)",
    ),
    known(
        "ingressController.enabled",
        fixed("false", "there is no ingress controller"),
        Some("false"),
        "",
        "ingress controller (not implemented)",
    ),
    known(
        "gatewayAPI.enabled",
        fixed("false", "there is no Gateway API support"),
        Some("false"),
        "",
        "Gateway API (not implemented)",
    ),
    known(
        "l7Proxy",
        fixed("false", "there is no L7 proxy"),
        None,
        "",
        "L7 policy proxy (not implemented)",
    ),
    known(
        "etcd.enabled",
        fixed(
            "false",
            "the installer runs no etcd; set extraConfig.kvstore=etcd and extraConfig.kvstore-opt=etcd.address=<url>",
        ),
        Some("false"),
        "",
        "an external etcd as the kvstore (use extraConfig)",
    ),
];

fn find(path: &str) -> Option<&'static KnownValue> {
    KNOWN_VALUES.iter().find(|k| k.path == path)
}

/// Whether `path` is a map of known values (`ipam`, `ipam.operator`).
fn is_map_node(path: &str) -> bool {
    KNOWN_VALUES.iter().any(|k| {
        k.path
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('.'))
    })
}

// ---------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------

/// Why values could not be read or resolved; each names the value or `--set` key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValuesError {
    /// A `--set`/`--set-string` expression that is not Helm's syntax.
    #[error("{flag} {key:?}: {reason}")]
    Syntax {
        /// `--set` or `--set-string`.
        flag: &'static str,
        /// The key path read so far.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A `--values` document that is not YAML.
    #[error("--values: not YAML: {reason}")]
    Yaml {
        /// The parser's message.
        reason: String,
    },
    /// A `--values` document whose top is not a map.
    #[error("--values: expected a map of values, got {got}")]
    NotAMap {
        /// What it is instead.
        got: String,
    },
    /// A value the chart (as cilium-rs knows it) does not have.
    #[error("unknown value {path:?}{}", did_you_mean(.suggestion.as_deref()))]
    Unknown {
        /// The value's path.
        path: String,
        /// The closest known path, when one is a few edits away.
        suggestion: Option<String>,
    },
    /// A value of the wrong type.
    #[error("value {path:?}: expected {expected}, got {got}")]
    Type {
        /// The value's path.
        path: String,
        /// The type it needs.
        expected: &'static str,
        /// What it is.
        got: String,
    },
    /// A value outside its set of words.
    #[error("value {path:?}: {value:?} is not one of {choices}")]
    NotOneOf {
        /// The value's path.
        path: String,
        /// The value.
        value: String,
        /// The words it may be.
        choices: String,
    },
    /// A value upstream Cilium has that cilium-rs does not implement.
    #[error("value {path:?}={value} is not supported by cilium-rs ({why})")]
    Unsupported {
        /// The value's path.
        path: String,
        /// The value as given.
        value: String,
        /// What cilium-rs lacks.
        why: String,
    },
    /// A value of the right type that is still wrong (out of range, not a CIDR, refused by
    /// the agent).
    #[error("value {path:?}: {reason}")]
    Invalid {
        /// The value's path.
        path: String,
        /// What is wrong, quoting the value.
        reason: String,
    },
    /// Values that contradict each other.
    #[error("{0}")]
    Conflict(String),
}

fn did_you_mean(suggestion: Option<&str>) -> String {
    suggestion.map_or_else(String::new, |s| format!(" (did you mean {s:?}?)"))
}

/// A value as error messages quote it: strings quoted, other scalars bare.
fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
        other => other.to_string(),
    }
}

/// A value's type, with an article.
fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

// ---------------------------------------------------------------------------------------
// Values: the user's tree.
// ---------------------------------------------------------------------------------------

/// Helm's limit on the value an index may have (`a[65536]`).
const MAX_INDEX: i64 = 65_536;
/// Helm's limit on a key's nesting (`a.b.c...`), applied here to indices too.
const MAX_DEPTH: usize = 30;

/// The user's Helm values (not the chart's defaults): `--values` files and `--set` flags
/// applied in the order they are given, as a JSON tree.
#[derive(Debug, Clone, PartialEq)]
pub struct Values {
    tree: Value,
}

impl Default for Values {
    fn default() -> Self {
        Self::new()
    }
}

impl Values {
    /// No values: every value at the chart's default.
    pub fn new() -> Self {
        Values {
            tree: Value::Object(Map::new()),
        }
    }

    /// Applies a `--set` expression with Helm's syntax: `a.b=c,d=e`; lists `{x,y}`;
    /// indices `a[0]=x` and `a[0].b=y`; `\` escapes the next character (`\,` `\.` `\=`).
    /// Values are typed as Helm types them: `true`/`false` (any case) are booleans,
    /// `null` is null, integers without a leading zero are numbers, the rest strings.
    /// On error the values are unchanged.
    pub fn set(&mut self, expr: &str) -> Result<(), ValuesError> {
        self.apply(expr, false)
    }

    /// Applies a `--set-string` expression: as [`Values::set`], but every value is a
    /// string.
    pub fn set_string(&mut self, expr: &str) -> Result<(), ValuesError> {
        self.apply(expr, true)
    }

    fn apply(&mut self, expr: &str, strings: bool) -> Result<(), ValuesError> {
        let mut root = match &self.tree {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        SetParser {
            rest: expr.chars().peekable(),
            strings,
            flag: if strings { "--set-string" } else { "--set" },
        }
        .parse(&mut root)?;
        self.tree = Value::Object(root);
        Ok(())
    }

    /// Merges a `--values` file's contents (a YAML map) into the values, deep as Helm
    /// merges values files: maps merge key by key, anything else (lists too) is replaced.
    /// An empty document changes nothing. On error the values are unchanged.
    pub fn merge_yaml(&mut self, yaml: &str) -> Result<(), ValuesError> {
        let parsed: Value = match serde_norway::from_str(yaml) {
            Ok(v) => v,
            Err(_) if is_blank_yaml(yaml) => Value::Null,
            Err(e) => {
                return Err(ValuesError::Yaml {
                    reason: e.to_string(),
                });
            }
        };
        match parsed {
            Value::Null => Ok(()),
            Value::Object(src) => {
                if let Value::Object(dst) = &mut self.tree {
                    merge_into(dst, src);
                }
                Ok(())
            }
            other => Err(ValuesError::NotAMap {
                got: kind_of(&other).to_owned(),
            }),
        }
    }

    /// The values as given (always a map), e.g. to print them.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// Checks every value against [`KNOWN_VALUES`] (name, type, range), applies the
    /// chart's defaults and the cross-value rules of the chart and the agent, and returns
    /// the settings; the first problem found is the error.
    pub fn resolve(&self) -> Result<Settings, ValuesError> {
        check_node(&self.tree, "")?;
        let settings = Reader { tree: &self.tree }.settings()?;
        settings.check()?;
        settings.check_with_agent()?;
        Ok(settings)
    }
}

/// Whether a YAML text holds nothing but blank lines, comments and document markers.
fn is_blank_yaml(yaml: &str) -> bool {
    yaml.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}

fn merge_into(dst: &mut Map<String, Value>, src: Map<String, Value>) {
    for (k, v) in src {
        match (dst.get_mut(&k), v) {
            (Some(Value::Object(d)), Value::Object(s)) => merge_into(d, s),
            (_, v) => {
                dst.insert(k, v);
            }
        }
    }
}

/// Helm's `strvals` parser over one expression.
struct SetParser<'a> {
    rest: std::iter::Peekable<std::str::Chars<'a>>,
    strings: bool,
    flag: &'static str,
}

impl SetParser<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ValuesError {
        ValuesError::Syntax {
            flag: self.flag,
            key: key.to_owned(),
            reason: reason.into(),
        }
    }

    /// The text up to (not including) the first unescaped `stops` character, and that
    /// character (`None` at the end).
    fn until(&mut self, stops: &[char]) -> (String, Option<char>) {
        let mut out = String::new();
        while let Some(c) = self.rest.next() {
            if stops.contains(&c) {
                return (out, Some(c));
            }
            if c == '\\' {
                match self.rest.next() {
                    Some(next) => out.push(next),
                    None => return (out, None),
                }
            } else {
                out.push(c);
            }
        }
        (out, None)
    }

    fn parse(&mut self, root: &mut Map<String, Value>) -> Result<(), ValuesError> {
        while self.rest.peek().is_some() {
            self.key(root, "", 0)?;
        }
        Ok(())
    }

    /// One `key...=value` into `data`, `prefix` being the path so far (for messages).
    fn key(
        &mut self,
        data: &mut Map<String, Value>,
        prefix: &str,
        depth: usize,
    ) -> Result<(), ValuesError> {
        let (k, last) = self.until(&['=', '[', ',', '.']);
        let path = format!("{prefix}{k}");
        match last {
            None | Some(',') => Err(self.err(&path, "missing \"=\"")),
            Some(_) if k.is_empty() => Err(self.err(&path, "empty key")),
            Some('.') => {
                if depth >= MAX_DEPTH {
                    return Err(self.err(&path, format!("nested deeper than {MAX_DEPTH} levels")));
                }
                let child = data.entry(k).or_insert(Value::Null);
                if child.is_null() {
                    *child = Value::Object(Map::new());
                }
                let Value::Object(inner) = child else {
                    let what = kind_of(child);
                    return Err(self.err(&path, format!("{path:?} is {what}, not a map")));
                };
                self.key(inner, &format!("{path}."), depth + 1)
            }
            Some('[') => {
                let i = self.index(&path)?;
                let slot = data.entry(k).or_insert(Value::Null);
                if slot.is_null() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(list) = slot else {
                    let what = kind_of(slot);
                    return Err(self.err(&path, format!("{path:?} is {what}, not a list")));
                };
                self.list_item(list, i, &format!("{path}[{i}]"), depth + 1)
            }
            Some(_) => {
                let v = self.value(&path)?;
                data.insert(k, v);
                Ok(())
            }
        }
    }

    /// The index of `[i]`, the `[` read already.
    fn index(&mut self, path: &str) -> Result<usize, ValuesError> {
        let (text, last) = self.until(&[']']);
        if last.is_none() {
            return Err(self.err(path, "missing \"]\""));
        }
        let i: i64 = text
            .parse()
            .map_err(|_| self.err(path, format!("index {text:?} is not a number")))?;
        if i < 0 {
            return Err(self.err(path, format!("negative index {i}")));
        }
        if i > MAX_INDEX {
            return Err(self.err(
                path,
                format!("index {i} is over Helm's limit of {MAX_INDEX}"),
            ));
        }
        usize::try_from(i).map_err(|_| self.err(path, format!("index {i} is too large")))
    }

    /// What follows `[i]`: `=value`, `[j]...` or `.key...`.
    fn list_item(
        &mut self,
        list: &mut Vec<Value>,
        i: usize,
        path: &str,
        depth: usize,
    ) -> Result<(), ValuesError> {
        if depth > MAX_DEPTH {
            return Err(self.err(path, format!("nested deeper than {MAX_DEPTH} levels")));
        }
        let (k, last) = self.until(&['[', '.', '=']);
        if !k.is_empty() {
            return Err(self.err(path, format!("unexpected {k:?} after \"]\"")));
        }
        if list.len() <= i {
            list.resize(i + 1, Value::Null);
        }
        let slot = &mut list[i];
        match last {
            None => Err(self.err(path, "missing \"=\"")),
            Some('[') => {
                let j = self.index(path)?;
                if slot.is_null() {
                    *slot = Value::Array(Vec::new());
                }
                let Value::Array(inner) = slot else {
                    let what = kind_of(slot);
                    return Err(self.err(path, format!("{path:?} is {what}, not a list")));
                };
                self.list_item(inner, j, &format!("{path}[{j}]"), depth + 1)
            }
            Some('.') => {
                if slot.is_null() {
                    *slot = Value::Object(Map::new());
                }
                let Value::Object(inner) = slot else {
                    let what = kind_of(slot);
                    return Err(self.err(path, format!("{path:?} is {what}, not a map")));
                };
                self.key(inner, &format!("{path}."), depth + 1)
            }
            Some(_) => {
                *slot = self.value(path)?;
                Ok(())
            }
        }
    }

    /// The value after `=`: a `{x,y}` list or a scalar up to the next `,`.
    fn value(&mut self, path: &str) -> Result<Value, ValuesError> {
        if self.rest.peek() != Some(&'{') {
            let (text, _) = self.until(&[',']);
            return Ok(self.typed(text));
        }
        self.rest.next();
        let mut items = Vec::new();
        loop {
            match self.until(&[',', '}']) {
                (_, None) => return Err(self.err(path, "list must end with \"}\"")),
                (text, Some(',')) => items.push(self.typed(text)),
                (text, Some(_)) => {
                    items.push(self.typed(text));
                    break;
                }
            }
        }
        match self.rest.next() {
            None | Some(',') => Ok(Value::Array(items)),
            Some(c) => Err(self.err(path, format!("unexpected {c:?} after \"}}\""))),
        }
    }

    /// Helm's typing of a `--set` value.
    fn typed(&self, text: String) -> Value {
        if self.strings {
            return Value::String(text);
        }
        if text.eq_ignore_ascii_case("true") {
            return Value::Bool(true);
        }
        if text.eq_ignore_ascii_case("false") {
            return Value::Bool(false);
        }
        if text.eq_ignore_ascii_case("null") {
            return Value::Null;
        }
        if text == "0" {
            return Value::from(0);
        }
        if !text.is_empty()
            && !text.starts_with('0')
            && let Ok(n) = text.parse::<i64>()
        {
            return Value::from(n);
        }
        Value::String(text)
    }
}

// ---------------------------------------------------------------------------------------
// Checking values against the table.
// ---------------------------------------------------------------------------------------

/// A value read by its kind.
enum Typed {
    Bool(bool),
    Int(i64),
    Str(String),
    Cidr(Ipv4Net),
    Cidrs(Vec<Ipv4Net>),
    Strs(Vec<String>),
    Map(BTreeMap<String, String>),
}

/// A path segment as `--set` would write it (dots escaped).
fn segment(key: &str) -> String {
    key.replace('.', "\\.")
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        segment(key)
    } else {
        format!("{path}.{}", segment(key))
    }
}

/// Checks the user's value at `path` and everything below it.
fn check_node(node: &Value, path: &str) -> Result<(), ValuesError> {
    if let Some(spec) = find(path) {
        return parse(spec, node).map(drop);
    }
    match node {
        Value::Null => Ok(()),
        Value::Object(map) if path.is_empty() || is_map_node(path) => {
            for (k, v) in map {
                check_node(v, &join(path, k))?;
            }
            Ok(())
        }
        other if is_map_node(path) => Err(ValuesError::Type {
            path: path.to_owned(),
            expected: "a map",
            got: describe(other),
        }),
        other => Err(unknown(&first_leaf(other, path))),
    }
}

/// The path of the first leaf at or under `node` (for naming an unknown subtree).
fn first_leaf(mut node: &Value, path: &str) -> String {
    let mut path = path.to_owned();
    while let Value::Object(m) = node {
        let Some((k, v)) = m.iter().next() else { break };
        path = join(&path, k);
        node = v;
    }
    path
}

fn unknown(path: &str) -> ValuesError {
    ValuesError::Unknown {
        path: path.to_owned(),
        suggestion: closest(path).map(str::to_owned),
    }
}

/// The known path closest to `path` in edits (ignoring case), if at most three away.
fn closest(path: &str) -> Option<&'static str> {
    const MAX_EDITS: usize = 3;
    let lower: Vec<char> = path.to_lowercase().chars().collect();
    KNOWN_VALUES
        .iter()
        .filter(|k| k.path.chars().count().abs_diff(lower.len()) <= MAX_EDITS)
        .map(|k| (edit_distance(&lower, k.path), k.path))
        .filter(|(d, _)| *d <= MAX_EDITS)
        .min_by_key(|(d, _)| *d)
        .map(|(_, p)| p)
}

/// Levenshtein distance between `a` (lower-case already) and `b` ignoring case.
fn edit_distance(a: &[char], b: &str) -> usize {
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let swap = prev[j] + usize::from(ca != cb);
            cur[j + 1] = swap.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The text of a scalar (`None` for lists, maps and null).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn parse_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

fn parse_cidr(path: &str, text: &str) -> Result<Ipv4Net, ValuesError> {
    text.trim().parse().map_err(|_| {
        let hint = if text.starts_with('"') || text.starts_with('\'') {
            " (Helm keeps quotes inside values; the shell removes them)"
        } else {
            ""
        };
        ValuesError::Invalid {
            path: path.to_owned(),
            reason: format!("{text:?} is not an IPv4 CIDR such as 10.0.0.0/8{hint}"),
        }
    })
}

/// Checks a user value (or a default, given as a string) against its kind. `Ok(None)`:
/// the value sets nothing (null, an empty string where that means unset, or a value
/// cilium-rs accepts only as what it does anyway).
fn parse(spec: &KnownValue, v: &Value) -> Result<Option<Typed>, ValuesError> {
    let path = spec.path;
    if v.is_null() {
        return Ok(None);
    }
    let wrong = |expected: &'static str| ValuesError::Type {
        path: path.to_owned(),
        expected,
        got: describe(v),
    };
    let unsupported = |why: &str| ValuesError::Unsupported {
        path: path.to_owned(),
        value: describe(v),
        why: why.to_owned(),
    };
    Ok(Some(match spec.kind {
        Kind::Bool => match v {
            Value::Bool(b) => Typed::Bool(*b),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Typed::Bool(true),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Typed::Bool(false),
            _ => return Err(wrong("a boolean")),
        },
        Kind::Int { min, max } => {
            if v.as_str() == Some("") {
                return Ok(None);
            }
            let n = parse_int(v).ok_or_else(|| wrong("an integer"))?;
            if !(min..=max).contains(&n) {
                return Err(ValuesError::Invalid {
                    path: path.to_owned(),
                    reason: format!("{n} is out of range {min}-{max}"),
                });
            }
            Typed::Int(n)
        }
        Kind::Str => match v {
            Value::String(s) => Typed::Str(s.clone()),
            Value::Number(n) => Typed::Str(n.to_string()),
            _ => return Err(wrong("a string")),
        },
        Kind::Choice {
            choices,
            unsupported: not_here,
            why,
        } => {
            let text = match v {
                Value::String(_) | Value::Bool(_) | Value::Number(_) => {
                    scalar_text(v).unwrap_or_default()
                }
                _ => return Err(wrong("a string")),
            };
            if text.is_empty() {
                return Ok(None);
            }
            let Some(word) = choices.iter().find(|c| c.eq_ignore_ascii_case(&text)) else {
                return Err(ValuesError::NotOneOf {
                    path: path.to_owned(),
                    value: text,
                    choices: choices.join(", "),
                });
            };
            if not_here.contains(word) {
                return Err(unsupported(why));
            }
            Typed::Str((*word).to_owned())
        }
        Kind::Cidr => {
            let Value::String(s) = v else {
                return Err(wrong("a CIDR"));
            };
            if s.is_empty() {
                return Ok(None);
            }
            Typed::Cidr(parse_cidr(path, s)?)
        }
        Kind::CidrList => {
            let cidrs = match v {
                Value::String(s) => s
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|p| !p.is_empty())
                    .map(|p| parse_cidr(path, p))
                    .collect::<Result<Vec<_>, _>>()?,
                Value::Array(items) => items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| match item {
                        Value::String(s) => parse_cidr(&format!("{path}[{i}]"), s),
                        other => Err(ValuesError::Type {
                            path: format!("{path}[{i}]"),
                            expected: "a CIDR",
                            got: describe(other),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                _ => return Err(wrong("a list of CIDRs")),
            };
            if cidrs.is_empty() {
                return Err(ValuesError::Invalid {
                    path: path.to_owned(),
                    reason: "at least one CIDR is required".into(),
                });
            }
            Typed::Cidrs(cidrs)
        }
        Kind::StrList => match v {
            Value::String(s) if s.is_empty() => Typed::Strs(Vec::new()),
            Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                Typed::Strs(scalar_text(v).into_iter().collect())
            }
            Value::Array(items) => Typed::Strs(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        scalar_text(item).ok_or_else(|| ValuesError::Type {
                            path: format!("{path}[{i}]"),
                            expected: "a string",
                            got: describe(item),
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(wrong("a list of strings")),
        },
        Kind::StrMap => {
            let Value::Object(m) = v else {
                return Err(wrong("a map"));
            };
            let mut out = BTreeMap::new();
            for (k, item) in m {
                if item.is_null() {
                    continue;
                }
                let text = scalar_text(item).ok_or_else(|| ValuesError::Type {
                    path: join(path, k),
                    expected: "a string",
                    got: describe(item),
                })?;
                out.insert(k.clone(), text);
            }
            Typed::Map(out)
        }
        Kind::Fixed { only, why } => {
            let text = scalar_text(v).ok_or_else(|| unsupported(why))?;
            if !text.eq_ignore_ascii_case(only) {
                return Err(unsupported(why));
            }
            return Ok(None);
        }
    }))
}

/// Reads typed values from the user's tree, falling back to the chart's defaults.
struct Reader<'a> {
    tree: &'a Value,
}

impl Reader<'_> {
    fn get(&self, path: &str) -> Result<Option<Typed>, ValuesError> {
        let spec = find(path).ok_or_else(|| unknown(path))?;
        let user = path
            .split('.')
            .try_fold(self.tree, |node, key| node.get(key))
            .filter(|v| !v.is_null());
        if let Some(v) = user
            && let Some(t) = parse(spec, v)?
        {
            return Ok(Some(t));
        }
        match spec.default {
            Some(d) => parse(spec, &Value::String(d.to_owned())),
            None => Ok(None),
        }
    }

    fn bool(&self, path: &str) -> Result<Option<bool>, ValuesError> {
        Ok(match self.get(path)? {
            Some(Typed::Bool(b)) => Some(b),
            _ => None,
        })
    }

    fn flag(&self, path: &str) -> Result<bool, ValuesError> {
        Ok(self.bool(path)?.unwrap_or(false))
    }

    fn int(&self, path: &str) -> Result<Option<i64>, ValuesError> {
        Ok(match self.get(path)? {
            Some(Typed::Int(n)) => Some(n),
            _ => None,
        })
    }

    /// An integer the table bounds to `T`'s range.
    fn number<T: TryFrom<i64>>(&self, path: &str) -> Result<Option<T>, ValuesError> {
        self.int(path)?
            .map(|n| {
                T::try_from(n).map_err(|_| ValuesError::Invalid {
                    path: path.to_owned(),
                    reason: format!("{n} is out of range"),
                })
            })
            .transpose()
    }

    fn string(&self, path: &str) -> Result<Option<String>, ValuesError> {
        Ok(match self.get(path)? {
            Some(Typed::Str(s)) => Some(s),
            _ => None,
        })
    }

    fn strings(&self, path: &str) -> Result<Vec<String>, ValuesError> {
        Ok(match self.get(path)? {
            Some(Typed::Strs(v)) => v,
            _ => Vec::new(),
        })
    }

    fn settings(&self) -> Result<Settings, ValuesError> {
        let nonempty = |s: Option<String>| s.filter(|s| !s.is_empty());
        Ok(Settings {
            k8s_service_host: nonempty(self.string("k8sServiceHost")?),
            k8s_service_port: self.number("k8sServicePort")?,
            kube_config_path: nonempty(self.string("kubeConfigPath")?),
            debug: self.flag("debug.enabled")?,
            cluster_name: self.string("cluster.name")?.unwrap_or_default(),
            cluster_id: self.number("cluster.id")?.unwrap_or_default(),
            identity_allocation_mode: match self.string("identityAllocationMode")?.as_deref() {
                Some("kvstore") => IdentityAllocationMode::Kvstore,
                _ => IdentityAllocationMode::Crd,
            },
            policy_enforcement: match self.string("policyEnforcementMode")?.as_deref() {
                Some("always") => PolicyEnforcement::Always,
                Some("never") => PolicyEnforcement::Never,
                _ => PolicyEnforcement::Default,
            },
            mtu: self.number("MTU")?.unwrap_or_default(),
            routing_mode: match self.string("routingMode")?.as_deref() {
                Some("native") => RoutingMode::Native,
                _ => RoutingMode::Tunnel,
            },
            auto_direct_node_routes: self.flag("autoDirectNodeRoutes")?,
            ipv4_native_routing_cidr: match self.get("ipv4NativeRoutingCIDR")? {
                Some(Typed::Cidr(c)) => Some(c),
                _ => None,
            },
            endpoint_routes: self.flag("endpointRoutes.enabled")?,
            enable_ipv4_masquerade: self.flag("enableIPv4Masquerade")?,
            bpf_masquerade: self.bool("bpf.masquerade")?,
            kube_proxy_replacement: self.string("kubeProxyReplacement")?.as_deref() == Some("true"),
            socket_lb: self.bool("socketLB.enabled")?,
            install_no_conntrack_iptables_rules: self.flag("installNoConntrackIptablesRules")?,
            cni_exclusive: self.flag("cni.exclusive")?,
            lb_algorithm: match self.string("loadBalancer.algorithm")?.as_deref() {
                Some("maglev") => Some(LbAlgorithm::Maglev),
                Some(_) => Some(LbAlgorithm::Random),
                None => None,
            },
            maglev_table_size: self.number("maglev.tableSize")?,
            maglev_hash_seed: self.string("maglev.hashSeed")?,
            pod_cidrs: match self.get("ipam.operator.clusterPoolIPv4PodCIDRList")? {
                Some(Typed::Cidrs(c)) => c,
                _ => Vec::new(),
            },
            mask_size: self
                .number("ipam.operator.clusterPoolIPv4MaskSize")?
                .unwrap_or_default(),
            hubble_enabled: self.flag("hubble.enabled")?,
            hubble_socket_path: self.string("hubble.socketPath")?.unwrap_or_default(),
            hubble_listen_address: self.string("hubble.listenAddress")?.unwrap_or_default(),
            hubble_event_buffer_capacity: self.number("hubble.eventBufferCapacity")?,
            monitor_aggregation: self.string("bpf.monitorAggregation")?.unwrap_or_default(),
            monitor_interval: self.string("bpf.monitorInterval")?.unwrap_or_default(),
            monitor_flags: self.string("bpf.monitorFlags")?.unwrap_or_default(),
            hubble_relay_enabled: self.flag("hubble.relay.enabled")?,
            hubble_ui_enabled: self.flag("hubble.ui.enabled")?,
            hubble_tls: self.flag("hubble.tls.enabled")?,
            hubble_tls_auto: self.flag("hubble.tls.auto.enabled")?,
            hubble_tls_validity_days: self
                .number("hubble.tls.auto.certValidityDuration")?
                .unwrap_or(365),
            prometheus_enabled: self.flag("prometheus.enabled")?,
            prometheus_port: self.number("prometheus.port")?.unwrap_or_default(),
            operator_replicas: self.number("operator.replicas")?.unwrap_or_default(),
            image_repository: self.string("image.repository")?.unwrap_or_default(),
            image_tag: nonempty(self.string("image.tag")?),
            image_pull_policy: self.string("image.pullPolicy")?.unwrap_or_default(),
            extra_args: self.strings("extraArgs")?,
            operator_extra_args: self.strings("operator.extraArgs")?,
            extra_config: match self.get("extraConfig")? {
                Some(Typed::Map(m)) => m,
                _ => BTreeMap::new(),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------
// Settings.
// ---------------------------------------------------------------------------------------

/// The values resolved: typed, the chart's defaults applied, checked. What
/// [`Settings::config_map`] writes, plus what the installer needs for the DaemonSet and
/// Deployments. Each field names the chart value it comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// `k8sServiceHost`: the API server host the agent and operator reach, for their
    /// `KUBERNETES_SERVICE_HOST` (`None`: the in-cluster service; `"auto"` is passed
    /// through for the installer to look up).
    pub k8s_service_host: Option<String>,
    /// `k8sServicePort`: the API server port, for `KUBERNETES_SERVICE_PORT`.
    pub k8s_service_port: Option<u16>,
    /// `kubeConfigPath` (`k8s-kubeconfig-path`): a kubeconfig file on the node for the
    /// agent (`None`: in-cluster).
    pub kube_config_path: Option<String>,
    /// `debug.enabled` (`debug`).
    pub debug: bool,
    /// `cluster.name` (`cluster-name`).
    pub cluster_name: String,
    /// `cluster.id` (`cluster-id`).
    pub cluster_id: u32,
    /// `identityAllocationMode` (`identity-allocation-mode`).
    pub identity_allocation_mode: IdentityAllocationMode,
    /// `policyEnforcementMode` (`enable-policy`).
    pub policy_enforcement: PolicyEnforcement,
    /// `MTU` (`mtu`, written when not 0): 0 detects it.
    pub mtu: u32,
    /// `routingMode` (`routing-mode`); the tunnel is always VXLAN (`tunnel-protocol`).
    pub routing_mode: RoutingMode,
    /// `autoDirectNodeRoutes` (`auto-direct-node-routes`).
    pub auto_direct_node_routes: bool,
    /// `ipv4NativeRoutingCIDR` (`ipv4-native-routing-cidr`).
    pub ipv4_native_routing_cidr: Option<Ipv4Net>,
    /// `endpointRoutes.enabled` (`enable-endpoint-routes`, written when true).
    pub endpoint_routes: bool,
    /// `enableIPv4Masquerade` (`enable-ipv4-masquerade`).
    pub enable_ipv4_masquerade: bool,
    /// `bpf.masquerade` (`enable-bpf-masquerade`, written when set).
    pub bpf_masquerade: Option<bool>,
    /// `kubeProxyReplacement` (`kube-proxy-replacement`).
    pub kube_proxy_replacement: bool,
    /// `socketLB.enabled` (`bpf-lb-sock`; unset: as `kubeProxyReplacement`).
    pub socket_lb: Option<bool>,
    /// `installNoConntrackIptablesRules` (`install-no-conntrack-iptables-rules`).
    pub install_no_conntrack_iptables_rules: bool,
    /// `cni.exclusive` (`cni-exclusive`).
    pub cni_exclusive: bool,
    /// `loadBalancer.algorithm` (`bpf-lb-algorithm`, written when set).
    pub lb_algorithm: Option<LbAlgorithm>,
    /// `maglev.tableSize` (`bpf-lb-maglev-table-size`, written when set).
    pub maglev_table_size: Option<u32>,
    /// `maglev.hashSeed` (`bpf-lb-maglev-hash-seed`, written when set).
    pub maglev_hash_seed: Option<String>,
    /// `ipam.operator.clusterPoolIPv4PodCIDRList` (`cluster-pool-ipv4-cidr`): the pools
    /// of the cluster-pool IPAM (the only mode, `ipam: cluster-pool`).
    pub pod_cidrs: Vec<Ipv4Net>,
    /// `ipam.operator.clusterPoolIPv4MaskSize` (`cluster-pool-ipv4-mask-size`).
    pub mask_size: u8,
    /// `hubble.enabled` (`enable-hubble`).
    pub hubble_enabled: bool,
    /// `hubble.socketPath` (`hubble-socket-path`, written when Hubble is on).
    pub hubble_socket_path: String,
    /// `hubble.listenAddress` (`hubble-listen-address`, written when Hubble is on; empty:
    /// no TCP listener).
    pub hubble_listen_address: String,
    /// `hubble.eventBufferCapacity` (`hubble-event-buffer-capacity`, written when set).
    pub hubble_event_buffer_capacity: Option<u32>,
    /// `bpf.monitorAggregation` (`monitor-aggregation`).
    pub monitor_aggregation: String,
    /// `bpf.monitorInterval` (`monitor-aggregation-interval`).
    pub monitor_interval: String,
    /// `bpf.monitorFlags` (`monitor-aggregation-flags`).
    pub monitor_flags: String,
    /// `hubble.relay.enabled`: install Hubble Relay.
    pub hubble_relay_enabled: bool,
    /// `hubble.ui.enabled`: install the Hubble UI.
    pub hubble_ui_enabled: bool,
    /// `hubble.tls.enabled`: mutual TLS between the agents' Hubble servers and the relay.
    pub hubble_tls: bool,
    /// `hubble.tls.auto.enabled`: the CLI makes the CA and the certificates.
    pub hubble_tls_auto: bool,
    /// `hubble.tls.auto.certValidityDuration`: days the certificates made are valid.
    pub hubble_tls_validity_days: u32,
    /// `prometheus.enabled` (`prometheus-serve-addr` set to `:<port>`).
    pub prometheus_enabled: bool,
    /// `prometheus.port`.
    pub prometheus_port: u16,
    /// `operator.replicas`: cilium-operator's replicas.
    pub operator_replicas: u32,
    /// `image.repository`: the agent image without its tag.
    pub image_repository: String,
    /// `image.tag` (`None`: the caller's version, as `--version` gives it).
    pub image_tag: Option<String>,
    /// `image.pullPolicy`.
    pub image_pull_policy: String,
    /// `extraArgs`: more arguments for the cilium-agent container.
    pub extra_args: Vec<String>,
    /// `operator.extraArgs`: more arguments for the cilium-operator container.
    pub operator_extra_args: Vec<String>,
    /// `extraConfig`: more ConfigMap keys, written last (overriding the chart's).
    pub extra_config: BTreeMap<String, String>,
}

fn routing_mode_name(m: RoutingMode) -> &'static str {
    match m {
        RoutingMode::Native => "native",
        RoutingMode::Tunnel => "tunnel",
    }
}

impl Settings {
    /// The `cilium-config` ConfigMap data: the keys the chart writes for these values
    /// that cilium-rs's agent reads, values as strings, `extraConfig` last.
    pub fn config_map(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_owned(), v);
        };
        put(
            "identity-allocation-mode",
            match self.identity_allocation_mode {
                IdentityAllocationMode::Crd => "crd",
                IdentityAllocationMode::Kvstore => "kvstore",
            }
            .into(),
        );
        put("debug", self.debug.to_string());
        put(
            "enable-policy",
            match self.policy_enforcement {
                PolicyEnforcement::Default => "default",
                PolicyEnforcement::Always => "always",
                PolicyEnforcement::Never => "never",
            }
            .into(),
        );
        if self.prometheus_enabled {
            put(
                "prometheus-serve-addr",
                format!(":{}", self.prometheus_port),
            );
        }
        put("cluster-name", self.cluster_name.clone());
        put("cluster-id", self.cluster_id.to_string());
        put("routing-mode", routing_mode_name(self.routing_mode).into());
        put("tunnel-protocol", "vxlan".into());
        if self.mtu != 0 {
            put("mtu", self.mtu.to_string());
        }
        put(
            "enable-ipv4-masquerade",
            self.enable_ipv4_masquerade.to_string(),
        );
        if let Some(b) = self.bpf_masquerade {
            put("enable-bpf-masquerade", b.to_string());
        }
        put(
            "install-no-conntrack-iptables-rules",
            self.install_no_conntrack_iptables_rules.to_string(),
        );
        put("cni-exclusive", self.cni_exclusive.to_string());
        put("monitor-aggregation", self.monitor_aggregation.clone());
        put(
            "monitor-aggregation-interval",
            self.monitor_interval.clone(),
        );
        put("monitor-aggregation-flags", self.monitor_flags.clone());
        put(
            "auto-direct-node-routes",
            self.auto_direct_node_routes.to_string(),
        );
        if let Some(cidr) = self.ipv4_native_routing_cidr {
            put("ipv4-native-routing-cidr", cidr.to_string());
        }
        put(
            "kube-proxy-replacement",
            self.kube_proxy_replacement.to_string(),
        );
        put(
            "bpf-lb-sock",
            self.socket_lb
                .unwrap_or(self.kube_proxy_replacement)
                .to_string(),
        );
        if let Some(a) = self.lb_algorithm {
            let name = match a {
                LbAlgorithm::Random => "random",
                LbAlgorithm::Maglev => "maglev",
            };
            put("bpf-lb-algorithm", name.into());
        }
        if let Some(n) = self.maglev_table_size {
            put("bpf-lb-maglev-table-size", n.to_string());
        }
        if let Some(seed) = &self.maglev_hash_seed {
            put("bpf-lb-maglev-hash-seed", seed.clone());
        }
        if let Some(path) = &self.kube_config_path {
            put("k8s-kubeconfig-path", path.clone());
        }
        if self.endpoint_routes {
            put("enable-endpoint-routes", "true".into());
        }
        put("enable-hubble", self.hubble_enabled.to_string());
        if self.hubble_enabled {
            put("hubble-socket-path", self.hubble_socket_path.clone());
            if let Some(n) = self.hubble_event_buffer_capacity {
                put("hubble-event-buffer-capacity", n.to_string());
            }
            put("hubble-listen-address", self.hubble_listen_address.clone());
            if !self.hubble_listen_address.is_empty() {
                if self.hubble_tls {
                    put("hubble-disable-tls", "false".into());
                    for (k, v) in HUBBLE_TLS_FILES {
                        put(k, (*v).into());
                    }
                } else {
                    put("hubble-disable-tls", "true".into());
                }
            }
        }
        put("ipam", "cluster-pool".into());
        let pools: Vec<String> = self.pod_cidrs.iter().map(ToString::to_string).collect();
        put("cluster-pool-ipv4-cidr", pools.join(" "));
        put("cluster-pool-ipv4-mask-size", self.mask_size.to_string());
        for (k, v) in &self.extra_config {
            put(k, v.clone());
        }
        m
    }

    /// The rules across values that the chart's templates, the operator or the agent
    /// enforce, in the chart's terms.
    fn check(&self) -> Result<(), ValuesError> {
        let conflict = |msg: String| Err(ValuesError::Conflict(msg));
        let name = &self.cluster_name;
        let name_ok = (1..=32).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !name_ok {
            return Err(ValuesError::Invalid {
                path: "cluster.name".into(),
                reason: format!(
                    "{name:?} is not 1-32 lower-case letters, digits or '-', starting and ending with a letter or digit"
                ),
            });
        }
        if name == "default" && self.cluster_id != 0 {
            return conflict(format!(
                "cluster.name \"default\" cannot be used with cluster.id {}: name the cluster",
                self.cluster_id
            ));
        }
        if self.routing_mode == RoutingMode::Native
            && self.enable_ipv4_masquerade
            && self.ipv4_native_routing_cidr.is_none()
        {
            return conflict(
                "ipv4NativeRoutingCIDR must be set when routingMode is native (the CIDR pods reach without masquerading; or set enableIPv4Masquerade=false)".into(),
            );
        }
        if self.routing_mode == RoutingMode::Tunnel && self.auto_direct_node_routes {
            return conflict("autoDirectNodeRoutes=true needs routingMode=native".into());
        }
        if self.bpf_masquerade == Some(true) && !self.enable_ipv4_masquerade {
            return conflict("bpf.masquerade=true needs enableIPv4Masquerade=true".into());
        }
        if self.install_no_conntrack_iptables_rules {
            if !self.kube_proxy_replacement {
                return conflict(
                    "installNoConntrackIptablesRules=true needs kubeProxyReplacement=true".into(),
                );
            }
            if self.enable_ipv4_masquerade && self.bpf_masquerade != Some(true) {
                return conflict(
                    "installNoConntrackIptablesRules=true needs bpf.masquerade=true (or enableIPv4Masquerade=false)".into(),
                );
            }
        }
        let mask_path = "ipam.operator.clusterPoolIPv4MaskSize";
        if let Some(pool) = self
            .pod_cidrs
            .iter()
            .find(|c| c.prefix_len() > self.mask_size)
        {
            return Err(ValuesError::Invalid {
                path: mask_path.into(),
                reason: format!(
                    "/{} is wider than the pool {pool} (clusterPoolIPv4PodCIDRList)",
                    self.mask_size
                ),
            });
        }
        if let Some(n) = self.maglev_table_size
            && !MAGLEV_TABLE_SIZES.contains(&n)
        {
            return Err(ValuesError::Invalid {
                path: "maglev.tableSize".into(),
                reason: format!("{n} is not one of {MAGLEV_TABLE_SIZES:?}"),
            });
        }
        if let Some(n) = self.hubble_event_buffer_capacity
            && !(n + 1).is_power_of_two()
        {
            return Err(ValuesError::Invalid {
                path: "hubble.eventBufferCapacity".into(),
                reason: format!("{n} is not 2^n - 1 (1, 3, 7, ..., 4095, ..., 65535)"),
            });
        }
        if self.hubble_relay_enabled && !self.hubble_enabled {
            return conflict("Hubble Relay requires hubble.enabled=true".into());
        }
        if self.hubble_relay_enabled && self.hubble_listen_address.is_empty() {
            return conflict(
                "Hubble Relay connects to each agent's hubble.listenAddress, which is empty".into(),
            );
        }
        if self.hubble_ui_enabled && !self.hubble_relay_enabled {
            return conflict("Hubble UI requires hubble.relay.enabled=true".into());
        }
        Ok(())
    }

    /// Loads the ConfigMap through the agent's own parser (keys it does not know are
    /// skipped, as the agent skips them), naming the value behind a refused key.
    fn check_with_agent(&self) -> Result<(), ValuesError> {
        let data = self.config_map();
        let mut sources = ConfigSources::default();
        for (k, v) in &data {
            if KEYS.iter().any(|(key, _, _)| key == k) {
                sources
                    .set_flag(k, v)
                    .map_err(|e| ValuesError::Conflict(e.to_string()))?;
            }
        }
        match AgentConfig::from_sources(&sources) {
            Ok(_) => Ok(()),
            Err(ConfigError::Invalid {
                key, value, reason, ..
            }) => Err(ValuesError::Invalid {
                path: self.path_of_key(&key),
                reason: format!("{value:?} is refused by the agent ({key}: {reason})"),
            }),
            Err(e) => Err(ValuesError::Conflict(format!(
                "the agent refuses this configuration: {e}"
            ))),
        }
    }

    /// The value that writes ConfigMap key `key`.
    fn path_of_key(&self, key: &str) -> String {
        if self.extra_config.contains_key(key) {
            return join("extraConfig", key);
        }
        KNOWN_VALUES
            .iter()
            .find(|k| k.config_key == key)
            .map_or_else(|| key.to_owned(), |k| k.path.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// The seed document's `cilium install` flags, as the shell hands them over.
    const SEED: &[&str] = &[
        "k8sServiceHost=192.168.10.100",
        "k8sServicePort=6443",
        "kubeProxyReplacement=true",
        "routingMode=native",
        "autoDirectNodeRoutes=true",
        "ipam.mode=cluster-pool",
        "ipam.operator.clusterPoolIPv4PodCIDRList={172.20.0.0/16}",
        "ipv4NativeRoutingCIDR=172.20.0.0/16",
        "endpointRoutes.enabled=true",
        "installNoConntrackIptablesRules=true",
        "bpf.masquerade=true",
        "ipv6.enabled=false",
    ];

    fn values(sets: &[&str]) -> Values {
        let mut v = Values::new();
        for s in sets {
            v.set(s).unwrap();
        }
        v
    }

    fn resolve(sets: &[&str]) -> Result<Settings, ValuesError> {
        let mut v = Values::new();
        for s in sets {
            v.set(s)?;
        }
        v.resolve()
    }

    fn err(sets: &[&str]) -> String {
        resolve(sets).unwrap_err().to_string()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// Every key is one the agent knows, and the agent loads the map.
    #[track_caller]
    fn assert_agent_loads(data: &BTreeMap<String, String>) {
        let mut sources = ConfigSources::default();
        for (k, v) in data {
            sources
                .set_flag(k, v)
                .unwrap_or_else(|e| panic!("{k}: {e}"));
        }
        AgentConfig::from_sources(&sources).unwrap();
    }

    #[test]
    fn the_seed_install_gives_the_expected_config_map() {
        let settings = resolve(SEED).unwrap();
        let data = settings.config_map();
        assert_eq!(
            data,
            map(&[
                ("auto-direct-node-routes", "true"),
                // kubeProxyReplacement=true turns socket LB on, as in Cilium.
                ("bpf-lb-sock", "true"),
                ("cluster-id", "0"),
                ("cni-exclusive", "true"),
                ("cluster-name", "default"),
                ("cluster-pool-ipv4-cidr", "172.20.0.0/16"),
                ("cluster-pool-ipv4-mask-size", "24"),
                ("debug", "false"),
                ("enable-bpf-masquerade", "true"),
                ("enable-endpoint-routes", "true"),
                ("enable-hubble", "true"),
                ("enable-ipv4-masquerade", "true"),
                ("enable-policy", "default"),
                ("hubble-disable-tls", "false"),
                ("hubble-listen-address", ":4244"),
                (
                    "hubble-tls-cert-file",
                    "/var/lib/cilium/tls/hubble/server.crt"
                ),
                (
                    "hubble-tls-client-ca-files",
                    "/var/lib/cilium/tls/hubble/client-ca.crt"
                ),
                (
                    "hubble-tls-key-file",
                    "/var/lib/cilium/tls/hubble/server.key"
                ),
                ("hubble-socket-path", "/var/run/cilium/hubble.sock"),
                ("identity-allocation-mode", "crd"),
                ("install-no-conntrack-iptables-rules", "true"),
                ("ipam", "cluster-pool"),
                ("ipv4-native-routing-cidr", "172.20.0.0/16"),
                ("kube-proxy-replacement", "true"),
                ("monitor-aggregation", "medium"),
                ("monitor-aggregation-flags", "all"),
                ("monitor-aggregation-interval", "5s"),
                ("routing-mode", "native"),
                ("tunnel-protocol", "vxlan"),
            ])
        );
        assert_agent_loads(&data);
        assert_eq!(settings.k8s_service_host.as_deref(), Some("192.168.10.100"));
        assert_eq!(settings.k8s_service_port, Some(6443));
        assert_eq!(settings.pod_cidrs, ["172.20.0.0/16".parse().unwrap()]);
        assert_eq!(settings.mask_size, 24);
        assert_eq!(settings.routing_mode, RoutingMode::Native);
        assert!(settings.kube_proxy_replacement);
        // The same flags with the quotes the seed's shell removed stay Helm's literal text.
        let quoted = err(&[r#"ipam.operator.clusterPoolIPv4PodCIDRList={"172.20.0.0/16"}"#]);
        assert!(quoted.contains("the shell removes them"), "{quoted}");
    }

    #[test]
    fn defaults_follow_the_chart() {
        let s = Values::new().resolve().unwrap();
        let data = s.config_map();
        for (k, v) in [
            ("routing-mode", "tunnel"),
            ("tunnel-protocol", "vxlan"),
            ("kube-proxy-replacement", "false"),
            ("bpf-lb-sock", "false"),
            ("ipam", "cluster-pool"),
            ("cluster-pool-ipv4-cidr", "10.0.0.0/8"),
            ("cluster-pool-ipv4-mask-size", "24"),
            ("enable-hubble", "true"),
            ("debug", "false"),
            ("cluster-name", "default"),
            ("cluster-id", "0"),
            ("auto-direct-node-routes", "false"),
            ("enable-ipv4-masquerade", "true"),
        ] {
            assert_eq!(data.get(k).map(String::as_str), Some(v), "{k}");
        }
        for absent in [
            "enable-bpf-masquerade",
            "enable-endpoint-routes",
            "ipv4-native-routing-cidr",
            "mtu",
            "bpf-lb-algorithm",
            "prometheus-serve-addr",
            "k8s-kubeconfig-path",
        ] {
            assert!(!data.contains_key(absent), "{absent}");
        }
        assert_agent_loads(&data);
        assert_eq!(s.operator_replicas, 2);
        assert_eq!(s.k8s_service_host, None);
        assert_eq!(s.k8s_service_port, None);
        assert_eq!(s.image_tag, None);
        assert_eq!(s.image_repository, "quay.io/cilium/cilium");
        assert_eq!(s.image_pull_policy, "IfNotPresent");
        assert!(s.hubble_enabled && !s.hubble_relay_enabled && !s.hubble_ui_enabled);
    }

    /// Values that write every key of the table's `config_key` column.
    const EVERYTHING: &[&str] = &[
        "kubeConfigPath=/etc/kubernetes/admin.conf",
        "debug.enabled=true",
        "cluster.name=lab-1",
        "cluster.id=7",
        "identityAllocationMode=kvstore",
        "policyEnforcementMode=Always",
        "MTU=1450",
        "routingMode=native",
        "tunnelProtocol=vxlan",
        "autoDirectNodeRoutes=true",
        "ipv4NativeRoutingCIDR=10.0.0.0/8",
        "endpointRoutes.enabled=true",
        "enableIPv4Masquerade=true",
        "bpf.masquerade=true",
        "kubeProxyReplacement=true",
        "installNoConntrackIptablesRules=true",
        "loadBalancer.algorithm=maglev",
        "maglev.tableSize=65521",
        "maglev.hashSeed=JLfvgnHc2kaSUFaI",
        "ipam.operator.clusterPoolIPv4PodCIDRList={10.1.0.0/16,10.2.0.0/16}",
        "ipam.operator.clusterPoolIPv4MaskSize=26",
        "hubble.socketPath=/run/hubble.sock",
        "hubble.listenAddress=:4245",
        "hubble.eventBufferCapacity=8191",
        "hubble.relay.enabled=true",
        "hubble.ui.enabled=true",
        "prometheus.enabled=true",
        "prometheus.port=9090",
        "operator.replicas=1",
        "image.tag=v1.18.0",
        "image.pullPolicy=never",
        "extraConfig.k8s-node-name=node-1",
        "extraArgs={--bpf-root=/run/bpf,--mtu=1500}",
        "operator.extraArgs[0]=--debug",
    ];

    #[test]
    fn every_value_reaches_its_key_and_every_key_is_the_agents() {
        let s = resolve(EVERYTHING).unwrap();
        let data = s.config_map();
        assert_agent_loads(&data);
        for k in KNOWN_VALUES {
            if !k.config_key.is_empty() {
                assert!(data.contains_key(k.config_key), "{}", k.config_key);
            }
        }
        assert_eq!(data["enable-policy"], "always");
        assert_eq!(data["cluster-pool-ipv4-cidr"], "10.1.0.0/16 10.2.0.0/16");
        assert_eq!(data["prometheus-serve-addr"], ":9090");
        assert_eq!(data["bpf-lb-algorithm"], "maglev");
        assert_eq!(data["k8s-node-name"], "node-1");
        assert_eq!(s.image_pull_policy, "Never");
        assert_eq!(s.operator_replicas, 1);
        assert_eq!(s.image_tag.as_deref(), Some("v1.18.0"));
        assert_eq!(s.extra_args, ["--bpf-root=/run/bpf", "--mtu=1500"]);
        assert_eq!(s.operator_extra_args, ["--debug"]);
        // Every default in the table is valid for its kind.
        for k in KNOWN_VALUES {
            if let Some(d) = k.default {
                parse(k, &Value::String(d.into())).unwrap_or_else(|e| panic!("{e}"));
            }
        }
    }

    #[test]
    fn extra_config_is_written_last() {
        let s = resolve(&["extraConfig.debug=true", "extraConfig.custom-key=1"]).unwrap();
        let data = s.config_map();
        assert_eq!(data["debug"], "true");
        assert_eq!(data["custom-key"], "1");
        assert!(!s.debug);
    }

    #[test]
    fn set_syntax() {
        let v = values(&[
            "a.b.c=x,d=1",
            "t=TRUE,f=false,n=null,zero=0,lead=0123,neg=-5,plus=+7,float=1.5,word=12ab",
            "list={x,1,true},empty={},e=",
            r"esc\.aped=a\,b\=c\\d,l2={p\,q,r}",
            "idx[1]=one,idx[0]=zero,deep[0].k=v",
            "nested[0][1]=y",
            "trail=1,",
        ]);
        assert_eq!(
            v.tree(),
            &json!({
                "a": {"b": {"c": "x"}}, "d": 1,
                "t": true, "f": false, "n": null, "zero": 0, "lead": "0123", "neg": -5,
                "plus": 7, "float": "1.5", "word": "12ab",
                "list": ["x", 1, true], "empty": [""], "e": "",
                "esc.aped": "a,b=c\\d", "l2": ["p,q", "r"],
                "idx": ["zero", "one"],
                "deep": [{"k": "v"}],
                "nested": [[null, "y"]],
                "trail": 1,
            })
        );
        let mut v = Values::new();
        v.set_string("a=true,b=5,c=null,l={1,false}").unwrap();
        v.set("").unwrap();
        assert_eq!(
            v.tree(),
            &json!({"a": "true", "b": "5", "c": "null", "l": ["1", "false"]})
        );
        // A later --set replaces a scalar, list or map.
        let v = values(&["a.b=1", "a=2", "l={1,2}", "l[0]=3"]);
        assert_eq!(v.tree(), &json!({"a": 2, "l": [3, 2]}));
    }

    #[test]
    fn set_errors() {
        let set = |e: &str| {
            let mut v = values(&["x=1", "m.k=1"]);
            let before = v.clone();
            let err = v.set(e).unwrap_err().to_string();
            assert_eq!(v, before, "a failed --set changes nothing");
            err
        };
        assert_eq!(set("a.b"), r#"--set "a.b": missing "=""#);
        assert_eq!(set("a=1,b"), r#"--set "b": missing "=""#);
        assert_eq!(set("a,b=1"), r#"--set "a": missing "=""#);
        assert_eq!(set(",a=1"), r#"--set "": missing "=""#);
        assert_eq!(set("=1"), r#"--set "": empty key"#);
        assert_eq!(set("a..b=1"), r#"--set "a.": empty key"#);
        assert_eq!(set("a[x]=1"), r#"--set "a": index "x" is not a number"#);
        assert_eq!(set("a[-1]=1"), r#"--set "a": negative index -1"#);
        assert_eq!(
            set("a[70000]=1"),
            r#"--set "a": index 70000 is over Helm's limit of 65536"#
        );
        assert_eq!(set("a[0=1"), r#"--set "a": missing "]""#);
        assert_eq!(set("a[0]b=1"), r#"--set "a[0]": unexpected "b" after "]""#);
        assert_eq!(set("a={x,y"), r#"--set "a": list must end with "}""#);
        assert_eq!(set("a={x}b=1"), r#"--set "a": unexpected 'b' after "}""#);
        assert_eq!(set("x.y=1"), r#"--set "x": "x" is a number, not a map"#);
        assert_eq!(set("m[0]=1"), r#"--set "m": "m" is a map, not a list"#);
        let deep = format!("{}=1", vec!["k"; 40].join("."));
        assert!(set(&deep).contains("nested deeper than 30 levels"));
        let mut v = Values::new();
        assert_eq!(
            v.set_string("a.b").unwrap_err().to_string(),
            r#"--set-string "a.b": missing "=""#
        );
    }

    #[test]
    fn merge_order_is_helms() {
        let mut v = Values::new();
        v.merge_yaml("hubble:\n  enabled: false\n  relay: {enabled: true}\nlist: [a, b]\n")
            .unwrap();
        v.merge_yaml("# a comment\nhubble:\n  enabled: true\nlist: [c]\n")
            .unwrap();
        v.merge_yaml("").unwrap();
        v.merge_yaml("# only a comment\n---\n").unwrap();
        assert_eq!(
            v.tree(),
            &json!({"hubble": {"enabled": true, "relay": {"enabled": true}}, "list": ["c"]})
        );
        // --set after the files wins.
        v.set("hubble.enabled=false,list[1]=d").unwrap();
        assert_eq!(
            v.tree(),
            &json!({"hubble": {"enabled": false, "relay": {"enabled": true}}, "list": ["c", "d"]})
        );
        // A null in a file resets a value to the chart's default.
        let mut v = Values::new();
        v.set("debug.enabled=true").unwrap();
        v.merge_yaml("debug:\n  enabled: null\n").unwrap();
        assert!(!v.resolve().unwrap().debug);

        assert!(
            Values::new()
                .merge_yaml("a: [")
                .unwrap_err()
                .to_string()
                .starts_with("--values: not YAML: ")
        );
        assert_eq!(
            Values::new()
                .merge_yaml("- a\n- b\n")
                .unwrap_err()
                .to_string(),
            "--values: expected a map of values, got a list"
        );
        assert_eq!(
            Values::new()
                .merge_yaml("just text")
                .unwrap_err()
                .to_string(),
            "--values: expected a map of values, got a string"
        );
    }

    #[test]
    fn yaml_values_resolve_like_set_values() {
        let mut v = Values::new();
        v.merge_yaml(
            "k8sServiceHost: 192.168.10.100\nk8sServicePort: \"6443\"\nkubeProxyReplacement: true\n\
             routingMode: native\nautoDirectNodeRoutes: true\nipam:\n  mode: cluster-pool\n  operator:\n    \
             clusterPoolIPv4PodCIDRList: [\"172.20.0.0/16\"]\nipv4NativeRoutingCIDR: 172.20.0.0/16\n\
             endpointRoutes: {enabled: true}\ninstallNoConntrackIptablesRules: true\nbpf:\n  masquerade: true\n\
             ipv6:\n  enabled: false\n",
        )
        .unwrap();
        assert_eq!(v.resolve().unwrap(), resolve(SEED).unwrap());
    }

    #[test]
    fn resolve_errors_name_the_value() {
        assert_eq!(
            err(&["ipam.operater.clusterPoolIPv4PodCIDRList={10.0.0.0/8}"]),
            r#"unknown value "ipam.operater.clusterPoolIPv4PodCIDRList" (did you mean "ipam.operator.clusterPoolIPv4PodCIDRList"?)"#
        );
        assert_eq!(
            err(&["hubble.enable=true"]),
            r#"unknown value "hubble.enable" (did you mean "hubble.enabled"?)"#
        );
        assert_eq!(
            err(&["ipv4nativeroutingcidr=10.0.0.0/8"]),
            r#"unknown value "ipv4nativeroutingcidr" (did you mean "ipv4NativeRoutingCIDR"?)"#
        );
        assert_eq!(
            err(&["somethingElse.entirely=1"]),
            r#"unknown value "somethingElse.entirely""#
        );
        assert_eq!(
            err(&["bpf.masquerade=yes"]),
            r#"value "bpf.masquerade": expected a boolean, got "yes""#
        );
        assert_eq!(
            err(&["routingMode=foo"]),
            r#"value "routingMode": "foo" is not one of native, tunnel"#
        );
        assert_eq!(
            err(&["kubeProxyReplacement=strict"]),
            r#"value "kubeProxyReplacement": "strict" is not one of true, false"#
        );
        assert_eq!(
            err(&["tunnelProtocol=geneve"]),
            r#"value "tunnelProtocol"="geneve" is not supported by cilium-rs (the datapath tunnels with VXLAN only)"#
        );
        assert_eq!(
            err(&["ipam.mode=kubernetes"]),
            r#"value "ipam.mode"="kubernetes" is not supported by cilium-rs (only cluster-pool IPAM is implemented)"#
        );
        assert_eq!(
            err(&["ipv6.enabled=true"]),
            r#"value "ipv6.enabled"=true is not supported by cilium-rs (the datapath is IPv4-only)"#
        );
        assert_eq!(
            err(&["bpf.monitorAggregation=high"]),
            r#"value "bpf.monitorAggregation": "high" is not one of none, disabled, lowest, low, medium, max, maximum"#
        );
        assert!(err(&["bpf.monitorFlags=syn,bogus"]).contains("bogus"));
        assert_eq!(
            err(&["hubble.tls.auto.method=cronJob"]),
            r#"value "hubble.tls.auto.method"="cronJob" is not supported by cilium-rs (the certificates are made by the CLI at install and upgrade, the chart's helm method)"#
        );
        assert!(err(&["hubble.relay.tls.server.enabled=true"]).contains("plain text"));
        assert!(err(&["hubble.tls.auto.certValidityDuration=0"]).contains("certValidityDuration"));
        assert_eq!(
            err(&["identityAllocationMode=doublewrite-readcrd"]),
            r#"value "identityAllocationMode"="doublewrite-readcrd" is not supported by cilium-rs (identities live in CRDs or in the kvstore, not both)"#
        );
        assert!(resolve(&["encryption.enabled=false", "ipv4.enabled=true"]).is_ok());
        assert_eq!(
            err(&["routingMode=native"]),
            "ipv4NativeRoutingCIDR must be set when routingMode is native (the CIDR pods reach without masquerading; or set enableIPv4Masquerade=false)"
        );
        assert!(resolve(&["routingMode=native", "enableIPv4Masquerade=false"]).is_ok());
        assert_eq!(
            err(&["ipv4NativeRoutingCIDR=172.20.0.0/33"]),
            r#"value "ipv4NativeRoutingCIDR": "172.20.0.0/33" is not an IPv4 CIDR such as 10.0.0.0/8"#
        );
        assert_eq!(
            err(&["ipam.operator.clusterPoolIPv4PodCIDRList={10.0.0.0/8,nope}"]),
            r#"value "ipam.operator.clusterPoolIPv4PodCIDRList[1]": "nope" is not an IPv4 CIDR such as 10.0.0.0/8"#
        );
        assert_eq!(
            err(&["ipam.operator.clusterPoolIPv4PodCIDRList[1]=10.0.0.0/8"]),
            r#"value "ipam.operator.clusterPoolIPv4PodCIDRList[0]": expected a CIDR, got null"#
        );
        assert_eq!(
            err(&["ipam.operator.clusterPoolIPv4PodCIDRList="]),
            r#"value "ipam.operator.clusterPoolIPv4PodCIDRList": at least one CIDR is required"#
        );
        assert_eq!(
            err(&[
                "ipam.operator.clusterPoolIPv4PodCIDRList=172.20.0.0/16",
                "ipam.operator.clusterPoolIPv4MaskSize=8"
            ]),
            r#"value "ipam.operator.clusterPoolIPv4MaskSize": /8 is wider than the pool 172.20.0.0/16 (clusterPoolIPv4PodCIDRList)"#
        );
        assert_eq!(
            err(&["ipam.operator.clusterPoolIPv4MaskSize=31"]),
            r#"value "ipam.operator.clusterPoolIPv4MaskSize": 31 is out of range 1-30"#
        );
        assert_eq!(
            err(&["cluster.id=256"]),
            r#"value "cluster.id": 256 is out of range 0-255"#
        );
        assert_eq!(
            err(&["cluster.id=abc"]),
            r#"value "cluster.id": expected an integer, got "abc""#
        );
        assert_eq!(
            err(&["k8sServicePort=70000"]),
            r#"value "k8sServicePort": 70000 is out of range 1-65535"#
        );
        assert_eq!(
            err(&["cluster.name=Big_Cluster"]),
            r#"value "cluster.name": "Big_Cluster" is not 1-32 lower-case letters, digits or '-', starting and ending with a letter or digit"#
        );
        assert_eq!(
            err(&["cluster.id=3"]),
            r#"cluster.name "default" cannot be used with cluster.id 3: name the cluster"#
        );
        assert_eq!(
            err(&["autoDirectNodeRoutes=true"]),
            "autoDirectNodeRoutes=true needs routingMode=native"
        );
        assert_eq!(
            err(&["bpf.masquerade=true", "enableIPv4Masquerade=false"]),
            "bpf.masquerade=true needs enableIPv4Masquerade=true"
        );
        assert_eq!(
            err(&["installNoConntrackIptablesRules=true"]),
            "installNoConntrackIptablesRules=true needs kubeProxyReplacement=true"
        );
        assert_eq!(
            err(&[
                "installNoConntrackIptablesRules=true",
                "kubeProxyReplacement=true"
            ]),
            "installNoConntrackIptablesRules=true needs bpf.masquerade=true (or enableIPv4Masquerade=false)"
        );
        assert_eq!(
            err(&["maglev.tableSize=1000"]),
            r#"value "maglev.tableSize": 1000 is not one of [251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071]"#
        );
        assert_eq!(
            err(&["hubble.eventBufferCapacity=4096"]),
            r#"value "hubble.eventBufferCapacity": 4096 is not 2^n - 1 (1, 3, 7, ..., 4095, ..., 65535)"#
        );
        assert_eq!(
            err(&["hubble.enabled=false", "hubble.relay.enabled=true"]),
            "Hubble Relay requires hubble.enabled=true"
        );
        assert_eq!(
            err(&["hubble.ui.enabled=true"]),
            "Hubble UI requires hubble.relay.enabled=true"
        );
        assert_eq!(
            err(&["hubble=true"]),
            r#"value "hubble": expected a map, got true"#
        );
        assert_eq!(
            err(&["debug.enabled.really=true"]),
            r#"value "debug.enabled": expected a boolean, got a map"#
        );
        assert_eq!(
            err(&["extraConfig.foo.bar=1"]),
            r#"value "extraConfig.foo": expected a string, got a map"#
        );
        // The agent's own parser is the last word on what it reads.
        assert_eq!(
            err(&["extraConfig.mtu=12"]),
            r#"value "extraConfig.mtu": "12" is refused by the agent (mtu: expected 0 (detect) or 1280-65535)"#
        );
        assert_eq!(
            err(&["MTU=1000"]),
            r#"value "MTU": "1000" is refused by the agent (mtu: expected 0 (detect) or 1280-65535)"#
        );
        assert!(
            err(&["maglev.hashSeed=short"])
                .starts_with(r#"value "maglev.hashSeed": "short" is refused by the agent"#)
        );
        let mut v = Values::new();
        v.merge_yaml("debug.enabled: true\n").unwrap();
        assert_eq!(
            v.resolve().unwrap_err().to_string(),
            r#"unknown value "debug\\.enabled" (did you mean "debug.enabled"?)"#
        );
    }

    #[test]
    fn types_are_taken_as_the_chart_takes_them() {
        let s = resolve(&[
            "kubeProxyReplacement=TRUE",
            "policyEnforcementMode=NEVER",
            "debug.enabled=True",
            "image.tag=1",
            "routingMode=",
        ])
        .unwrap();
        assert!(s.kube_proxy_replacement && s.debug);
        assert_eq!(s.policy_enforcement, PolicyEnforcement::Never);
        assert_eq!(s.image_tag.as_deref(), Some("1"));
        assert_eq!(s.routing_mode, RoutingMode::Tunnel);
        let mut v = Values::new();
        v.set_string("cluster.id=0,k8sServicePort=6443,hubble.enabled=false")
            .unwrap();
        let s = v.resolve().unwrap();
        assert_eq!(s.k8s_service_port, Some(6443));
        assert!(!s.hubble_enabled);
        assert_eq!(s.config_map()["enable-hubble"], "false");
        assert!(!s.config_map().contains_key("hubble-listen-address"));
        // A CIDR list may be one string, as the chart's [array, string] allows.
        let s = resolve(&[r"ipam.operator.clusterPoolIPv4PodCIDRList=10.1.0.0/16 10.2.0.0/16"])
            .unwrap();
        assert_eq!(s.pod_cidrs.len(), 2);
    }

    #[test]
    fn suggestions_stay_close() {
        assert_eq!(closest("hubble.enabeld"), Some("hubble.enabled"));
        assert_eq!(closest("MTu"), Some("MTU"));
        assert_eq!(closest("completely.different.thing"), None);
        assert_eq!(edit_distance(&['a', 'b', 'c'], "abc"), 0);
        assert_eq!(edit_distance(&['a', 'b'], "ba"), 2);
        assert_eq!(edit_distance(&[], "abc"), 3);
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics(
            sets in proptest::collection::vec(".{0,40}", 0..4),
            strings in proptest::collection::vec(".{0,40}", 0..2),
            yaml in ".{0,200}",
        ) {
            let mut v = Values::new();
            let _ = v.merge_yaml(&yaml);
            for s in &sets {
                let _ = v.set(s);
            }
            for s in &strings {
                let _ = v.set_string(s);
            }
            prop_assert!(v.tree().is_object());
            if let Ok(s) = v.resolve() {
                let data = s.config_map();
                prop_assert!(data.contains_key("routing-mode"));
            }
        }

        #[test]
        fn set_syntax_like_input_never_panics(
            expr in r"[a-c.\[\]{}=,\\0-2tn]{0,30}",
        ) {
            let mut v = Values::new();
            let _ = v.set(&expr);
            let _ = v.set_string(&expr);
            let _ = v.resolve();
        }

        /// `k=v` reads back typed as Helm types it, and the tree survives a YAML round trip.
        #[test]
        fn set_values_read_back_and_round_trip(
            pairs in proptest::collection::vec(("[a-z]{1,4}(\\.[a-z]{1,4}){0,2}", "[a-z0-9:/ -]{0,8}"), 1..6),
        ) {
            let mut v = Values::new();
            for (k, val) in &pairs {
                let escaped = val.replace(',', "\\,");
                if v.set(&format!("{k}={escaped}")).is_err() {
                    return Ok(());
                }
                let got = k.split('.').try_fold(v.tree(), |n, s| n.get(s));
                let parser = SetParser { rest: "".chars().peekable(), strings: false, flag: "--set" };
                prop_assert_eq!(got, Some(&parser.typed(val.clone())));
            }
            let yaml = serde_norway::to_string(v.tree()).unwrap();
            let mut again = Values::new();
            again.merge_yaml(&yaml).unwrap();
            prop_assert_eq!(again.tree(), v.tree());
        }
    }
}
