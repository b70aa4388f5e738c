// SPDX-License-Identifier: Apache-2.0

//! `cilium connectivity test`: upstream cilium-cli's connectivity check, for a curated set
//! of its tests.
//!
//! It deploys upstream's workloads in the test namespace (`cilium-test-1`): Deployments
//! `client` and `client2` (`quay.io/cilium/alpine-curl`, `kind=client`; `client2` also
//! `other=client` and on `client`'s node), `echo-same-node` (`quay.io/cilium/json-mock` on
//! 8080, hostPort 4000, on `client`'s node) and `echo-other-node` (on another node; not in
//! a single-node cluster), their NodePort Services, and the `host-netns` DaemonSet (a
//! shell in each node's network namespace). Then it runs each test: it applies the test's
//! policies, runs its actions (a `curl` or `ping` run in a client pod through the API's
//! exec, whose exit code is the verdict: 0 when the traffic must pass, a failure when the
//! policy must drop it), prints a `.` per action, removes the policies, and reports as
//! upstream does.
//!
//! The tests, with upstream's names, scenarios and expectations:
//!
//! | Test | Policies | Scenarios | Expected |
//! |---|---|---|---|
//! | `no-policies` | none | pod-to-pod, client-to-client, pod-to-service, pod-to-hostport, pod-to-host, host-to-pod | all pass |
//! | `no-policies-extra` | none | pod-to-remote-nodeport, pod-to-local-nodeport | all pass |
//! | `allow-all-except-world` | CNP: everything in the cluster | pod-to-pod, client-to-client, pod-to-service, pod-to-host | all pass |
//! | `client-ingress` | CNP: clients accept only `other=client` | client-to-client | `client` → `client2` dropped |
//! | `client-ingress-knp` | the same as a NetworkPolicy | client-to-client | the same |
//! | `all-ingress-deny` | CNP: an empty ingress rule on every pod | pod-to-pod | all dropped |
//! | `all-ingress-deny-knp` | NetworkPolicy: ingress, no rule | pod-to-pod | all dropped |
//! | `all-egress-deny` | CNP: an empty egress rule on every pod | pod-to-pod | all dropped |
//! | `all-egress-deny-knp` | NetworkPolicy: egress, no rule | pod-to-pod | all dropped |
//! | `echo-ingress` | CNP: echo pods accept only `other=client` | pod-to-pod | `client` → echo times out |
//! | `echo-ingress-knp` | the same as a NetworkPolicy | pod-to-pod | the same |
//! | `client-egress` | CNP: clients reach only echo pods on TCP 8080 (and DNS) | pod-to-pod | all pass |
//! | `client-egress-knp` | the same as a NetworkPolicy | pod-to-pod | all pass |
//! | `client-egress-to-echo-deny` | CNPs: allow all, then `egressDeny` client → echo:8080 | client-to-client, pod-to-pod | client → echo dropped |
//!
//! Left out of upstream's scenarios: pod-to-world and pod-to-cidr (they need the Internet),
//! Hubble flow validation, and every test that needs L7 proxies, DNS proxies, encryption,
//! egress gateways or a second cluster. `pod-to-service` curls each Service by ClusterIP (as
//! upstream) and also by name (`NAME.NAMESPACE`). `pod-to-hostport` runs only where the
//! agents have a HostPort service for the echo pods' hostPort (upstream requires the
//! kube-proxy replacement); otherwise it is skipped with the reason. Scenarios blocked by a
//! known gap of cilium-rs (`KNOWN_GAPS`) are skipped in every test, the gap printed.
//!
//! Policy changes: upstream waits until every agent's endpoints realized the new policy
//! revision. The agents of cilium-rs report no realized revision per endpoint, so after a
//! change (policies applied, or removed by the test before) each action of the test is
//! first retried until it gives its expected verdict, for up to 30 s (upstream's policy
//! wait); then every action runs once more, and that run is the one counted and judged.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, ApiResource, AttachParams, DeleteParams, DynamicObject, ListParams};
use regex::Regex;
use serde_json::{Value, json};

use crate::cluster;
use crate::install::{AGENT_SELECTOR, NAMESPACE};

/// The test namespace upstream uses (`--test-namespace cilium-test`, suffixed with the
/// index of the concurrent run).
pub const DEFAULT_NAMESPACE: &str = "cilium-test-1";
/// The client image (upstream's `--curl-image`).
pub const CURL_IMAGE: &str = "quay.io/cilium/alpine-curl:v1.10.0";
/// The echo server image (upstream's `--json-mock-image`).
pub const JSON_MOCK_IMAGE: &str = "quay.io/cilium/json-mock:v1.4.1";
/// The echo servers' port.
pub const ECHO_PORT: u16 = 8080;
/// The echo servers' hostPort (upstream's `EchoServerHostPort`).
pub const ECHO_HOST_PORT: u16 = 4000;

const CLIENT: &str = "client";
const CLIENT2: &str = "client2";
const ECHO_SAME_NODE: &str = "echo-same-node";
const ECHO_OTHER_NODE: &str = "echo-other-node";
const HOST_NETNS: &str = "host-netns";
const AGENT_CONTAINER: &str = "cilium-agent";
/// How long a policy change may take to reach every node (upstream's `PolicyWaitTimeout`).
const POLICY_WAIT: Duration = Duration::from_secs(30);
/// How long a Service or NodePort may take to answer (upstream's `ShortTimeout`).
const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the workloads may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Attempts of a command whose exec broke down (not the command's own failure).
const EXEC_ATTEMPTS: usize = 3;

/// What `cilium connectivity test` is asked to do (upstream's flags of the same names).
#[derive(Debug, Clone)]
pub struct Options {
    /// `--test`: run the tests one of these regular expressions matches (unanchored,
    /// against `TEST/SCENARIO`, so `/pod-to-host` picks a scenario), skip those a pattern
    /// starting with `!` matches; all tests when only exclusions (or nothing) are given.
    pub test: Vec<String>,
    /// `--single-node`: one node's tests only (no `echo-other-node`); also detected when
    /// the agent DaemonSet wants one pod or one node can take the workloads.
    pub single_node: bool,
    /// The test namespace (`--test-namespace` plus upstream's `-1` suffix).
    pub namespace: String,
    /// `--timeout`: the whole suite's budget; zero (upstream's default) for none.
    pub timeout: Duration,
    /// `--cleanup`: only remove the test namespace and everything in it (upstream keeps
    /// the workloads after a run so the next one starts faster).
    pub cleanup_only: bool,
    /// `--force-deploy`: remove the test namespace first, then deploy everything anew.
    pub force_deploy: bool,
    /// `--connect-timeout` (curl's `--connect-timeout`, ping's `-W`).
    pub connect_timeout: Duration,
    /// `--request-timeout` (curl's `--max-time`).
    pub request_timeout: Duration,
    /// `--verbose`: print each scenario and action as it runs instead of only on failure.
    pub verbose: bool,
    /// The cluster's name in the messages (upstream: the kubeconfig context's cluster;
    /// see [`cluster_name`]).
    pub cluster_name: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            test: Vec::new(),
            single_node: false,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            timeout: Duration::ZERO,
            cleanup_only: false,
            force_deploy: false,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            verbose: false,
            cluster_name: "kubernetes".to_owned(),
        }
    }
}

/// The outcome of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Tests that ran and passed.
    pub passed: usize,
    /// Tests that failed, by name.
    pub failed: Vec<String>,
    /// Tests skipped (by `--test`, or all of their scenarios skipped).
    pub skipped: usize,
    /// Scenarios skipped (by `--test`, or a feature the cluster lacks).
    pub scenarios_skipped: usize,
    /// Actions run (counted runs only).
    pub actions: usize,
    /// Actions whose verdict was not the expected one.
    pub failed_actions: usize,
}

impl Summary {
    /// Whether every test that ran passed.
    pub fn ok(&self) -> bool {
        self.failed.is_empty()
    }

    /// The error a failed run ends with (upstream's `[NS] N tests failed`), if it failed.
    pub fn error(&self, namespace: &str) -> Option<String> {
        (!self.ok()).then(|| format!("[{namespace}] {} tests failed", self.failed.len()))
    }
}

/// The cluster name of the kubeconfig's context (`context`, else the current one), as
/// upstream shows it in brackets; `kubernetes` when it cannot be read.
pub fn cluster_name(kubeconfig: Option<&Path>, context: Option<&str>) -> String {
    let config = match kubeconfig {
        Some(p) => kube::config::Kubeconfig::read_from(p),
        None => kube::config::Kubeconfig::read(),
    };
    config
        .ok()
        .and_then(|c| {
            let name = context
                .map(str::to_owned)
                .or_else(|| c.current_context.clone())?;
            c.contexts
                .iter()
                .find(|n| n.name == name)
                .and_then(|n| n.context.as_ref())
                .map(|ctx| ctx.cluster.clone())
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "kubernetes".to_owned())
}

// ---- test selection ----

/// `--test` as upstream applies it: regular expressions matched anywhere in
/// `TEST/SCENARIO`; a `!` prefix excludes. A scenario runs when no exclusion matches and
/// an inclusion does (or none was given); a test runs when one of its scenarios does.
#[derive(Debug, Clone, Default)]
pub struct TestFilter {
    run: Vec<Regex>,
    skip: Vec<Regex>,
}

impl TestFilter {
    /// The filter of `patterns`, or the first that is not a regular expression.
    pub fn new(patterns: &[String]) -> Result<TestFilter, String> {
        let mut f = TestFilter::default();
        for p in patterns {
            let (list, text) = match p.strip_prefix('!') {
                Some(rest) => (&mut f.skip, rest),
                None => (&mut f.run, p.as_str()),
            };
            list.push(Regex::new(text).map_err(|e| format!("test filter: {e}"))?);
        }
        Ok(f)
    }

    /// Whether `name` (`TEST/SCENARIO`) is enabled.
    pub fn enabled(&self, name: &str) -> bool {
        if self.skip.iter().any(|r| r.is_match(name)) {
            return false;
        }
        self.run.is_empty() || self.run.iter().any(|r| r.is_match(name))
    }
}

// ---- peers ----

type Labels = BTreeMap<String, String>;

/// A pod of the test (a source, or an echo destination).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PodPeer {
    namespace: String,
    name: String,
    container: String,
    ip: String,
    node: String,
    host_ip: String,
    labels: Labels,
}

impl PodPeer {
    fn from_pod(p: &Pod) -> Option<PodPeer> {
        let status = p.status.as_ref()?;
        let spec = p.spec.as_ref()?;
        Some(PodPeer {
            namespace: p.metadata.namespace.clone()?,
            name: p.metadata.name.clone()?,
            container: spec.containers.first()?.name.clone(),
            ip: status.pod_ip.clone()?,
            node: spec.node_name.clone()?,
            host_ip: status.host_ip.clone().unwrap_or_default(),
            labels: p.metadata.labels.clone().unwrap_or_default(),
        })
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.labels.get(key).is_some_and(|v| v == value)
    }
}

impl fmt::Display for PodPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// An echo Service.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SvcPeer {
    namespace: String,
    name: String,
    cluster_ip: String,
    port: u16,
    node_port: u16,
    labels: Labels,
}

impl SvcPeer {
    fn from_service(s: &Service) -> Option<SvcPeer> {
        let spec = s.spec.as_ref()?;
        let port = spec.ports.as_ref()?.first()?;
        Some(SvcPeer {
            namespace: s.metadata.namespace.clone()?,
            name: s.metadata.name.clone()?,
            cluster_ip: spec.cluster_ip.clone().unwrap_or_default(),
            port: u16::try_from(port.port).ok()?,
            node_port: port
                .node_port
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            labels: s.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

/// A node: its name, and its InternalIP / ExternalIP addresses (IPv4 only: the test runs
/// the IPv4 family).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodePeer {
    name: String,
    /// (`internal-ip` or `external-ip`, address).
    addresses: Vec<(&'static str, String)>,
}

impl NodePeer {
    fn from_node(n: &Node) -> NodePeer {
        let mut addresses = Vec::new();
        for a in n.status.iter().flat_map(|s| s.addresses.iter().flatten()) {
            let kind = match a.type_.as_str() {
                "InternalIP" => "internal-ip",
                "ExternalIP" => "external-ip",
                _ => continue,
            };
            if a.address.parse::<std::net::Ipv4Addr>().is_ok() {
                addresses.push((kind, a.address.clone()));
            }
        }
        NodePeer {
            name: n.metadata.name.clone().unwrap_or_default(),
            addresses,
        }
    }

    fn has_address(&self, ip: &str) -> bool {
        self.addresses.iter().any(|(_, a)| a == ip)
    }
}

/// An action's destination: what it is called, where it was sent, and its labels (the
/// expectations read them).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    name: String,
    address: String,
    port: u16,
    labels: Labels,
}

impl Target {
    fn pod(p: &PodPeer, port: u16) -> Target {
        Target {
            name: p.to_string(),
            address: p.ip.clone(),
            port,
            labels: p.labels.clone(),
        }
    }

    fn has(&self, key: &str, value: &str) -> bool {
        self.labels.get(key).is_some_and(|v| v == value)
    }
}

/// What the cluster holds for the tests once deployed.
#[derive(Debug, Clone, Default)]
struct Env {
    clients: Vec<PodPeer>,
    echoes: Vec<PodPeer>,
    hosts: Vec<PodPeer>,
    services: Vec<SvcPeer>,
    nodes: Vec<NodePeer>,
    /// Why pod-to-hostport cannot run, if it cannot.
    no_host_port: Option<String>,
}

// ---- actions and expectations ----

/// The verdict an action must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Exit code 0: the traffic passed.
    Success,
    /// Any non-zero exit code: dropped (upstream's `ResultDrop`).
    Drop,
    /// curl's exit code 28, a timeout: dropped in the handshake (upstream's
    /// `ResultDropCurlTimeout`).
    DropTimeout,
}

impl Expect {
    fn matches(self, code: i32) -> bool {
        match self {
            Expect::Success => code == 0,
            Expect::Drop => code != 0,
            Expect::DropTimeout => code == 28,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Expect::Success => "exit code 0",
            Expect::Drop => "a non-zero exit code",
            Expect::DropTimeout => "exit code 28 (timeout)",
        }
    }
}

/// One command of a test, from a source pod towards a destination.
#[derive(Debug, Clone)]
struct Action {
    test: &'static str,
    scenario: &'static str,
    name: String,
    src: PodPeer,
    dst: Target,
    command: Vec<String>,
    expect: Expect,
}

impl fmt::Display for Action {
    /// Upstream's `TEST/SCENARIO:NAME: SRC (IP) -> DST (ADDR:PORT)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}:{}: {} ({}) -> {} ({}:{})",
            self.test,
            self.scenario,
            self.name,
            self.src,
            self.src.ip,
            self.dst.name,
            self.dst.address,
            self.dst.port
        )
    }
}

/// How the commands are built (upstream's curl and ping options).
#[derive(Debug, Clone, Copy)]
struct Commands {
    connect_timeout: Duration,
    request_timeout: Duration,
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", d.as_secs())
    } else {
        format!("{s}")
    }
}

impl Commands {
    /// `curl` as upstream runs it: the IPv4 family, failing on HTTP errors, printing
    /// `LOCAL -> REMOTE = CODE`.
    fn curl(&self, host: &str, port: u16) -> Vec<String> {
        let mut cmd: Vec<String> = ["curl", "--silent", "--fail", "--show-error"]
            .map(str::to_owned)
            .into();
        if !self.connect_timeout.is_zero() {
            cmd.extend(["--connect-timeout".into(), seconds(self.connect_timeout)]);
        }
        if !self.request_timeout.is_zero() {
            cmd.extend(["--max-time".into(), seconds(self.request_timeout)]);
        }
        cmd.extend(
            [
                "-4",
                "-w",
                "%{local_ip}:%{local_port} -> %{remote_ip}:%{remote_port} = %{response_code}\n",
                "--output",
                "/dev/null",
            ]
            .map(str::to_owned),
        );
        cmd.push(format!("http://{host}:{port}/"));
        cmd
    }

    /// `ping` as upstream runs it: one echo request.
    fn ping(&self, address: &str) -> Vec<String> {
        let mut cmd: Vec<String> = ["ping", "-c", "1"].map(str::to_owned).into();
        if !self.connect_timeout.is_zero() {
            cmd.extend(["-W".into(), seconds(self.connect_timeout)]);
        }
        cmd.push(address.to_owned());
        cmd
    }
}

// ---- scenarios ----

/// Upstream's scenarios this suite has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// curl from each client to each echo pod's IP.
    PodToPod,
    /// ping between the client pods.
    ClientToClient,
    /// curl from each client to each echo Service (ClusterIP, and name).
    PodToService,
    /// curl from each client to each echo pod's node IP on the hostPort.
    PodToHostPort,
    /// ping from each client to each node address.
    PodToHost,
    /// curl from each node's network namespace (`host-netns`) to each echo pod.
    HostToPod,
    /// curl from each client to each echo Service's NodePort on the other nodes.
    PodToRemoteNodePort,
    /// curl from each client to each echo Service's NodePort on its own node.
    PodToLocalNodePort,
}

/// Scenarios skipped in every test because cilium-rs lacks what they exercise, each with
/// the gap (what was run, what was expected, what happened). Remove an entry once its gap
/// is closed: the scenario then runs again.
const KNOWN_GAPS: &[(&str, &str)] = &[];

/// A scenario's action before the test's expectation is applied.
struct Step {
    name: String,
    src: PodPeer,
    dst: Target,
    command: Vec<String>,
}

impl Scenario {
    /// Upstream's name.
    fn name(self) -> &'static str {
        match self {
            Scenario::PodToPod => "pod-to-pod",
            Scenario::ClientToClient => "client-to-client",
            Scenario::PodToService => "pod-to-service",
            Scenario::PodToHostPort => "pod-to-hostport",
            Scenario::PodToHost => "pod-to-host",
            Scenario::HostToPod => "host-to-pod",
            Scenario::PodToRemoteNodePort => "pod-to-remote-nodeport",
            Scenario::PodToLocalNodePort => "pod-to-local-nodeport",
        }
    }

    /// Why the scenario cannot run in `env`, if it cannot.
    fn unmet(self, env: &Env) -> Option<String> {
        if let Some(gap) = self.known_gap() {
            return Some(gap.to_owned());
        }
        match self {
            Scenario::PodToHostPort => env.no_host_port.clone(),
            _ => None,
        }
    }

    /// The gap of cilium-rs that keeps this scenario from passing, if one does (see
    /// [`KNOWN_GAPS`]).
    fn known_gap(self) -> Option<&'static str> {
        KNOWN_GAPS
            .iter()
            .find(|(name, _)| *name == self.name())
            .map(|(_, gap)| *gap)
    }

    /// The scenario's actions in `env`, named as upstream names them.
    fn steps(self, env: &Env, cmds: Commands) -> Vec<Step> {
        let mut out = Vec::new();
        let mut i = 0;
        match self {
            Scenario::PodToPod => {
                for c in &env.clients {
                    for e in &env.echoes {
                        out.push(Step {
                            name: format!("curl-ipv4-{i}"),
                            src: c.clone(),
                            dst: Target::pod(e, ECHO_PORT),
                            command: cmds.curl(&e.ip, ECHO_PORT),
                        });
                        i += 1;
                    }
                }
            }
            Scenario::ClientToClient => {
                for s in &env.clients {
                    for d in &env.clients {
                        if s.ip == d.ip {
                            continue;
                        }
                        out.push(Step {
                            name: format!("ping-ipv4-{i}"),
                            src: s.clone(),
                            dst: Target::pod(d, 0),
                            command: cmds.ping(&d.ip),
                        });
                        i += 1;
                    }
                }
            }
            Scenario::PodToService => {
                for c in &env.clients {
                    for s in &env.services {
                        let name = format!("{}/{}", s.namespace, s.name);
                        out.push(Step {
                            name: format!("curl-ipv4-{i}"),
                            src: c.clone(),
                            dst: Target {
                                name: name.clone(),
                                address: s.cluster_ip.clone(),
                                port: s.port,
                                labels: s.labels.clone(),
                            },
                            command: cmds.curl(&s.cluster_ip, s.port),
                        });
                        // By name too: the cluster's name resolution.
                        let host = format!("{}.{}", s.name, s.namespace);
                        out.push(Step {
                            name: format!("curl-{i}"),
                            src: c.clone(),
                            dst: Target {
                                name,
                                address: host.clone(),
                                port: s.port,
                                labels: s.labels.clone(),
                            },
                            command: cmds.curl(&host, s.port),
                        });
                        i += 1;
                    }
                }
            }
            Scenario::PodToHostPort => {
                for c in &env.clients {
                    for e in &env.echoes {
                        if !e.host_ip.is_empty() {
                            out.push(Step {
                                name: format!("curl-ipv4-{i}"),
                                src: c.clone(),
                                dst: Target {
                                    name: e.to_string(),
                                    address: e.host_ip.clone(),
                                    port: ECHO_HOST_PORT,
                                    labels: Labels::new(),
                                },
                                command: cmds.curl(&e.host_ip, ECHO_HOST_PORT),
                            });
                        }
                        i += 1;
                    }
                }
            }
            Scenario::PodToHost => {
                for c in &env.clients {
                    for n in &env.nodes {
                        for (kind, addr) in &n.addresses {
                            out.push(Step {
                                name: format!("ping-ipv4-{kind}"),
                                src: c.clone(),
                                dst: Target {
                                    name: n.name.clone(),
                                    address: addr.clone(),
                                    port: 0,
                                    labels: Labels::new(),
                                },
                                command: cmds.ping(addr),
                            });
                        }
                    }
                }
            }
            Scenario::HostToPod => {
                for h in &env.hosts {
                    for e in &env.echoes {
                        out.push(Step {
                            name: format!("curl-ipv4-{i}"),
                            src: h.clone(),
                            dst: Target::pod(e, ECHO_PORT),
                            command: cmds.curl(&e.ip, ECHO_PORT),
                        });
                        i += 1;
                    }
                }
            }
            Scenario::PodToRemoteNodePort | Scenario::PodToLocalNodePort => {
                let local = self == Scenario::PodToLocalNodePort;
                for c in &env.clients {
                    for s in &env.services {
                        if s.node_port == 0 {
                            continue;
                        }
                        for n in &env.nodes {
                            if n.has_address(&c.host_ip) != local {
                                continue;
                            }
                            for (_, addr) in &n.addresses {
                                out.push(Step {
                                    name: format!("curl-{i}"),
                                    src: c.clone(),
                                    dst: Target {
                                        name: format!("{}/{}", s.namespace, s.name),
                                        address: addr.clone(),
                                        port: s.node_port,
                                        labels: s.labels.clone(),
                                    },
                                    command: cmds.curl(addr, s.node_port),
                                });
                            }
                            i += 1;
                        }
                    }
                }
            }
        }
        out
    }
}

// ---- tests ----

/// A test: upstream's name, the policies it applies, its scenarios and the verdict each
/// action must give.
#[derive(Clone, Copy)]
struct TestCase {
    name: &'static str,
    policies: fn(&str) -> Vec<Value>,
    scenarios: &'static [Scenario],
    expect: fn(&PodPeer, &Target) -> Expect,
}

impl fmt::Debug for TestCase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestCase")
            .field("name", &self.name)
            .field("scenarios", &self.scenarios)
            .finish_non_exhaustive()
    }
}

fn no_policies(_: &str) -> Vec<Value> {
    Vec::new()
}

fn all_pass(_: &PodPeer, _: &Target) -> Expect {
    Expect::Success
}

fn all_drop(_: &PodPeer, _: &Target) -> Expect {
    Expect::Drop
}

/// Only `client2` (`other=client`) may reach a client.
fn from_other_client_only(src: &PodPeer, _: &Target) -> Expect {
    if src.has("other", "client") {
        Expect::Success
    } else {
        Expect::Drop
    }
}

/// Only `client2` (`other=client`) may reach an echo pod; others time out.
fn echo_from_other_client_only(src: &PodPeer, dst: &Target) -> Expect {
    if dst.has("kind", "echo") && !src.has("other", "client") {
        Expect::DropTimeout
    } else {
        Expect::Success
    }
}

/// Clients may not reach echo pods on 8080; everything else passes.
fn client_to_echo_denied(src: &PodPeer, dst: &Target) -> Expect {
    if src.has("kind", "client") && dst.has("kind", "echo") && dst.port == ECHO_PORT {
        Expect::Drop
    } else {
        Expect::Success
    }
}

/// The cluster-identity selector upstream's policies put in every peer selector.
fn in_cluster() -> Value {
    json!([{"key": "io.cilium.k8s.policy.cluster", "operator": "Exists"}])
}

fn cnp(ns: &str, name: &str, spec: Value) -> Value {
    let mut policy = json!({
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumNetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
    });
    policy["spec"] = spec;
    policy
}

fn knp(ns: &str, name: &str, spec: Value) -> Value {
    let mut policy = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns},
    });
    policy["spec"] = spec;
    policy
}

/// DNS on port 53, as upstream's egress policies allow it.
fn dns_ports() -> Value {
    json!([{"ports": [{"port": "53", "protocol": "UDP"}, {"port": "53", "protocol": "TCP"}]}])
}

fn allow_all_except_world(ns: &str) -> Vec<Value> {
    let entities = json!([
        "host",
        "remote-node",
        "cluster",
        "init",
        "health",
        "kube-apiserver"
    ]);
    vec![cnp(
        ns,
        "allow-all-except-world",
        json!({
            "endpointSelector": {},
            "egress": [
                {"toEntities": entities},
                {"toEndpoints": [{"matchExpressions": in_cluster()}]},
                {"toPorts": dns_ports(), "toEntities": ["world"]},
            ],
            "ingress": [
                {"fromEntities": entities},
                {"fromEndpoints": [{"matchExpressions": in_cluster()}]},
            ],
        }),
    )]
}

fn client_ingress_from_client2(ns: &str) -> Vec<Value> {
    vec![cnp(
        ns,
        "client-ingress-from-client2",
        json!({
            "endpointSelector": {"matchLabels": {"kind": "client"}},
            "ingress": [{"fromEndpoints": [{"matchLabels": {"other": "client"}}]}],
        }),
    )]
}

fn client_ingress_from_client2_knp(ns: &str) -> Vec<Value> {
    vec![knp(
        ns,
        "client-ingress-from-client2",
        json!({
            "podSelector": {"matchLabels": {"kind": "client"}},
            "ingress": [{"from": [{"podSelector": {
                "matchLabels": {"other": "client"},
                "matchExpressions": in_cluster(),
            }}]}],
        }),
    )]
}

fn deny_all_ingress(ns: &str) -> Vec<Value> {
    vec![cnp(
        ns,
        "all-ingress-deny",
        json!({"endpointSelector": {}, "ingress": [{}]}),
    )]
}

fn deny_all_ingress_knp(ns: &str) -> Vec<Value> {
    vec![knp(
        ns,
        "all-ingress-deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    )]
}

fn deny_all_egress(ns: &str) -> Vec<Value> {
    vec![cnp(
        ns,
        "all-egress-deny",
        json!({"endpointSelector": {}, "egress": [{}]}),
    )]
}

fn deny_all_egress_knp(ns: &str) -> Vec<Value> {
    vec![knp(
        ns,
        "all-egress-deny",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    )]
}

fn echo_ingress_from_other_client(ns: &str) -> Vec<Value> {
    vec![cnp(
        ns,
        "echo-ingress-from-other-client",
        json!({
            "description": "Allow other client to contact echo",
            "endpointSelector": {"matchLabels": {"kind": "echo"}},
            "ingress": [{"fromEndpoints": [{
                "matchLabels": {"other": "client"},
                "matchExpressions": in_cluster(),
            }]}],
        }),
    )]
}

fn echo_ingress_from_other_client_knp(ns: &str) -> Vec<Value> {
    vec![knp(
        ns,
        "echo-ingress-from-other-client",
        json!({
            "podSelector": {"matchLabels": {"kind": "echo"}},
            "ingress": [{"from": [{"podSelector": {
                "matchLabels": {"other": "client"},
                "matchExpressions": in_cluster(),
            }}]}],
        }),
    )]
}

/// Echo pods of the test namespace, in this cluster.
fn echo_pods_of(ns: &str) -> Value {
    json!([{
        "matchLabels": {"io.kubernetes.pod.namespace": ns, "kind": "echo"},
        "matchExpressions": in_cluster(),
    }])
}

fn kube_dns() -> Value {
    json!([
        {"key": "k8s-app", "operator": "In", "values": ["kube-dns", "coredns", "node-local-dns", "nodelocaldns"]},
        {"key": "io.kubernetes.pod.namespace", "operator": "In", "values": ["kube-system"]},
    ])
}

fn client_egress_to_echo(ns: &str) -> Vec<Value> {
    vec![cnp(
        ns,
        "client-egress-to-echo",
        json!({
            "endpointSelector": {"matchLabels": {"kind": "client"}},
            "egress": [
                {
                    "toPorts": [{"ports": [{"port": ECHO_PORT.to_string(), "protocol": "TCP"}]}],
                    "toEndpoints": echo_pods_of(ns),
                },
                {"toPorts": dns_ports(), "toEndpoints": [{"matchExpressions": kube_dns()}]},
                {"toPorts": dns_ports(), "toEntities": ["world"]},
            ],
        }),
    )]
}

fn client_egress_to_echo_knp(ns: &str) -> Vec<Value> {
    vec![knp(
        ns,
        "client-egress-to-echo",
        json!({
            "podSelector": {"matchLabels": {"kind": "client"}},
            "egress": [
                {
                    "to": [{"podSelector": {
                        "matchLabels": {"kind": "echo"},
                        "matchExpressions": in_cluster(),
                    }}],
                    "ports": [{"port": ECHO_PORT, "protocol": "TCP"}],
                },
                {
                    "to": [{"podSelector": {"matchExpressions": kube_dns()}}],
                    "ports": [{"port": 53}],
                },
                {"ports": [{"port": 53, "protocol": "UDP"}]},
            ],
        }),
    )]
}

fn client_egress_to_echo_deny(ns: &str) -> Vec<Value> {
    vec![
        cnp(
            ns,
            "allow-all-egress",
            json!({
                "endpointSelector": {},
                "egress": [
                    {"toEndpoints": [{"matchExpressions": in_cluster()}]},
                    {"toCIDR": ["0.0.0.0/0"]},
                ],
            }),
        ),
        cnp(
            ns,
            "allow-all-ingress",
            json!({
                "endpointSelector": {},
                "ingress": [{"fromEndpoints": [{"matchExpressions": in_cluster()}]}],
            }),
        ),
        cnp(
            ns,
            "client-egress-to-echo-deny",
            json!({
                "endpointSelector": {"matchLabels": {"kind": "client"}},
                "egressDeny": [{
                    "toPorts": [{"ports": [{"port": ECHO_PORT.to_string(), "protocol": "TCP"}]}],
                    "toEndpoints": echo_pods_of(ns),
                }],
            }),
        ),
    ]
}

/// The suite, in upstream's order.
fn suite() -> Vec<TestCase> {
    use Scenario::*;
    vec![
        TestCase {
            name: "no-policies",
            policies: no_policies,
            scenarios: &[
                PodToPod,
                ClientToClient,
                PodToService,
                PodToHostPort,
                PodToHost,
                HostToPod,
            ],
            expect: all_pass,
        },
        TestCase {
            name: "no-policies-extra",
            policies: no_policies,
            scenarios: &[PodToRemoteNodePort, PodToLocalNodePort],
            expect: all_pass,
        },
        TestCase {
            name: "allow-all-except-world",
            policies: allow_all_except_world,
            scenarios: &[PodToPod, ClientToClient, PodToService, PodToHost],
            expect: all_pass,
        },
        TestCase {
            name: "client-ingress",
            policies: client_ingress_from_client2,
            scenarios: &[ClientToClient],
            expect: from_other_client_only,
        },
        TestCase {
            name: "client-ingress-knp",
            policies: client_ingress_from_client2_knp,
            scenarios: &[ClientToClient],
            expect: from_other_client_only,
        },
        TestCase {
            name: "all-ingress-deny",
            policies: deny_all_ingress,
            scenarios: &[PodToPod],
            expect: all_drop,
        },
        TestCase {
            name: "all-ingress-deny-knp",
            policies: deny_all_ingress_knp,
            scenarios: &[PodToPod],
            expect: all_drop,
        },
        TestCase {
            name: "all-egress-deny",
            policies: deny_all_egress,
            scenarios: &[PodToPod],
            expect: all_drop,
        },
        TestCase {
            name: "all-egress-deny-knp",
            policies: deny_all_egress_knp,
            scenarios: &[PodToPod],
            expect: all_drop,
        },
        TestCase {
            name: "echo-ingress",
            policies: echo_ingress_from_other_client,
            scenarios: &[PodToPod],
            expect: echo_from_other_client_only,
        },
        TestCase {
            name: "echo-ingress-knp",
            policies: echo_ingress_from_other_client_knp,
            scenarios: &[PodToPod],
            expect: echo_from_other_client_only,
        },
        TestCase {
            name: "client-egress",
            policies: client_egress_to_echo,
            scenarios: &[PodToPod],
            expect: all_pass,
        },
        TestCase {
            name: "client-egress-knp",
            policies: client_egress_to_echo_knp,
            scenarios: &[PodToPod],
            expect: all_pass,
        },
        TestCase {
            name: "client-egress-to-echo-deny",
            policies: client_egress_to_echo_deny,
            scenarios: &[ClientToClient, PodToPod],
            expect: client_to_echo_denied,
        },
    ]
}

/// The names of the tests this suite has, in the order they run.
pub fn test_names() -> Vec<&'static str> {
    suite().iter().map(|t| t.name).collect()
}

impl TestCase {
    /// The actions of `scenario` in `env`, with this test's expectations.
    fn actions(&self, scenario: Scenario, env: &Env, cmds: Commands) -> Vec<Action> {
        scenario
            .steps(env, cmds)
            .into_iter()
            .map(|s| Action {
                test: self.name,
                scenario: scenario.name(),
                expect: (self.expect)(&s.src, &s.dst),
                name: s.name,
                src: s.src,
                dst: s.dst,
                command: s.command,
            })
            .collect()
    }
}

// ---- the workloads ----

fn name_kind(name: &str, kind: &str) -> Value {
    json!({"name": name, "kind": kind})
}

/// A required (anti-)affinity to the `client` pod's node.
fn to_client(anti: bool) -> Value {
    let term = json!({
        "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchExpressions": [
                {"key": "name", "operator": "In", "values": [CLIENT]},
            ]},
            "topologyKey": "kubernetes.io/hostname",
        }],
    });
    if anti {
        json!({"podAntiAffinity": term})
    } else {
        json!({"podAffinity": term})
    }
}

fn service_account(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ServiceAccount",
           "metadata": {"name": name, "namespace": ns}})
}

/// A pod template's container: the image, upstream's `NET_RAW` for ping, and for echo
/// servers the port (named `http-8080`, with the hostPort) in `PORT`.
fn container(name: &str, image: &str, echo: bool) -> Value {
    let mut c = json!({
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "securityContext": {"capabilities": {"add": ["NET_RAW"]}},
    });
    if echo {
        c["ports"] = json!([{
            "name": format!("http-{ECHO_PORT}"),
            "containerPort": ECHO_PORT,
            "hostPort": ECHO_HOST_PORT,
        }]);
        c["env"] = json!([
            {"name": "PORT", "value": ECHO_PORT.to_string()},
            {"name": "NAMED_PORT", "value": format!("http-{ECHO_PORT}")},
        ]);
        c["readinessProbe"] = json!({
            "httpGet": {"path": "/", "port": ECHO_PORT, "scheme": "HTTP"},
            "timeoutSeconds": 2, "periodSeconds": 1, "initialDelaySeconds": 1,
        });
    } else {
        // A shell that stays up for `kubectl exec` (upstream: `/usr/bin/pause`, which the
        // lab's images do not have; `sleep` is in every image of curl).
        c["command"] = json!(["sleep", "infinity"]);
    }
    c
}

fn deployment(
    ns: &str,
    name: &str,
    kind: &str,
    extra: &[(&str, &str)],
    image: &str,
    affinity: Option<Value>,
) -> Value {
    let mut pod_labels = name_kind(name, kind);
    for (k, v) in extra {
        pod_labels[*k] = json!(v);
    }
    let mut spec = json!({
        "containers": [container(name, image, kind == "echo")],
        "serviceAccountName": name,
    });
    if let Some(a) = affinity {
        spec["affinity"] = a;
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "labels": name_kind(name, kind)},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": name_kind(name, kind)},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    })
}

fn echo_service(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns, "labels": {"kind": "echo"}},
        "spec": {
            "type": "NodePort",
            "ports": [{"name": "http", "port": ECHO_PORT}],
            "selector": {"name": name},
            "ipFamilyPolicy": "PreferDualStack",
        },
    })
}

fn host_netns_daemonset(ns: &str) -> Value {
    let labels = name_kind(HOST_NETNS, HOST_NETNS);
    let mut pod_labels = labels.clone();
    pod_labels["other"] = json!("host-netns");
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": HOST_NETNS, "namespace": ns, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "containers": [container(HOST_NETNS, CURL_IMAGE, false)],
                    "hostNetwork": true,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                },
            },
        },
    })
}

/// What is deployed, in order, with upstream's message for each; `single_node` leaves out
/// `echo-other-node`.
fn workloads(ns: &str, single_node: bool) -> Vec<(String, Vec<Value>)> {
    let mut out = vec![
        (
            format!("{ECHO_SAME_NODE} service"),
            vec![echo_service(ns, ECHO_SAME_NODE)],
        ),
        (
            "same-node deployment".to_owned(),
            vec![
                service_account(ns, ECHO_SAME_NODE),
                deployment(
                    ns,
                    ECHO_SAME_NODE,
                    "echo",
                    &[("other", "echo")],
                    JSON_MOCK_IMAGE,
                    Some(to_client(false)),
                ),
            ],
        ),
        (
            format!("{CLIENT} deployment"),
            vec![
                service_account(ns, CLIENT),
                deployment(ns, CLIENT, "client", &[], CURL_IMAGE, None),
            ],
        ),
        (
            format!("{CLIENT2} deployment"),
            vec![
                service_account(ns, CLIENT2),
                deployment(
                    ns,
                    CLIENT2,
                    "client",
                    &[("other", "client")],
                    CURL_IMAGE,
                    Some(to_client(false)),
                ),
            ],
        ),
    ];
    if !single_node {
        out.push((
            format!("{ECHO_OTHER_NODE} service"),
            vec![echo_service(ns, ECHO_OTHER_NODE)],
        ));
        out.push((
            "other-node deployment".to_owned(),
            vec![
                service_account(ns, ECHO_OTHER_NODE),
                deployment(
                    ns,
                    ECHO_OTHER_NODE,
                    "echo",
                    &[("first", "echo")],
                    JSON_MOCK_IMAGE,
                    Some(to_client(true)),
                ),
            ],
        ));
    }
    out.push((
        format!("{HOST_NETNS} daemonset"),
        vec![host_netns_daemonset(ns)],
    ));
    out
}

// ---- exec ----

/// A command's outcome.
#[derive(Debug, Clone, Default)]
struct Exec {
    code: i32,
    stdout: String,
    stderr: String,
}

/// The exit code an exec's final status gives: 0 on `Success`, the `ExitCode` cause of a
/// `NonZeroExitCode` failure; an error when the command did not run (or the status was
/// lost), which is the exec's failure, not the command's.
fn exit_code(status: Option<&Status>) -> Result<i32, String> {
    let Some(s) = status else {
        return Err("the exec ended without an exit status".to_owned());
    };
    if s.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if s.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = s
            .details
            .iter()
            .flat_map(|d| d.causes.iter().flatten())
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message.as_deref()?.trim().parse().ok())
    {
        return Ok(code);
    }
    Err(s
        .message
        .clone()
        .unwrap_or_else(|| "the exec failed".to_owned()))
}

/// Runs `command` in `pod` (the API's exec): its exit code and output.
async fn exec(
    client: &kube::Client,
    pod: &PodPeer,
    command: &[String],
    timeout: Duration,
) -> Result<Exec, String> {
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
    let params = AttachParams::default()
        .container(pod.container.clone())
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let run = async {
        let mut process = pods
            .exec(&pod.name, command.to_vec(), &params)
            .await
            .map_err(|e| format!("exec in {pod}: {e}"))?;
        let status = process.take_status();
        let mut out = process.stdout();
        let mut err = process.stderr();
        let read_out = async {
            let mut s = String::new();
            if let Some(r) = out.as_mut() {
                let _ = r.read_to_string(&mut s).await;
            }
            s
        };
        let read_err = async {
            let mut s = String::new();
            if let Some(r) = err.as_mut() {
                let _ = r.read_to_string(&mut s).await;
            }
            s
        };
        let (stdout, stderr) = tokio::join!(read_out, read_err);
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = process.join().await;
        let code = exit_code(status.as_ref()).map_err(|e| format!("exec in {pod}: {e}"))?;
        Ok(Exec {
            code,
            stdout,
            stderr,
        })
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("exec in {pod}: no answer within {timeout:?}"))?
}

// ---- the report ----

/// What became of one test.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct TestResult {
    name: String,
    /// Why it was skipped, if it was.
    skipped: Option<String>,
    actions: usize,
    scenarios_skipped: usize,
    /// `(action, message)` of each action with the wrong verdict.
    failed_actions: Vec<(String, String)>,
    /// Why the test itself failed (its policies could not be applied...).
    error: Option<String>,
}

impl TestResult {
    fn failed(&self) -> bool {
        self.error.is_some() || !self.failed_actions.is_empty()
    }
}

/// The summary of `results` as upstream prints it.
fn summarize(results: &[TestResult]) -> Summary {
    let mut s = Summary::default();
    for r in results {
        s.actions += r.actions;
        s.scenarios_skipped += r.scenarios_skipped;
        s.failed_actions += r.failed_actions.len();
        if r.skipped.is_some() {
            s.skipped += 1;
        } else if r.failed() {
            s.failed.push(r.name.clone());
        } else {
            s.passed += 1;
        }
    }
    s
}

/// Upstream's closing report: the `✅` line, or the `📋 Test Report` with each failed
/// test and action.
fn report_text(namespace: &str, results: &[TestResult]) -> String {
    let s = summarize(results);
    let ran = results.len() - s.skipped;
    if s.ok() {
        return format!(
            "\n✅ [{namespace}] All {ran} tests ({} actions) successful, {} tests skipped, {} scenarios skipped.\n",
            s.actions, s.skipped, s.scenarios_skipped
        );
    }
    let mut out = format!(
        "\n📋 Test Report [{namespace}]\n❌ {}/{ran} tests failed ({}/{} actions), {} tests skipped, {} scenarios skipped:\n",
        s.failed.len(),
        s.failed_actions,
        s.actions,
        s.skipped,
        s.scenarios_skipped
    );
    for r in results.iter().filter(|r| r.failed()) {
        out.push_str(&format!("Test [{}]:\n", r.name));
        if let Some(e) = &r.error {
            out.push_str(&format!("  🟥 {e}\n"));
        }
        for (action, message) in &r.failed_actions {
            out.push_str(&format!("  🟥 {action}: {message}\n"));
        }
    }
    out
}

// ---- the run ----

/// The run's state: where it prints, the current test's buffered log (upstream shows a
/// test's details only when it fails, or with `--verbose`), the suite's deadline.
struct Runner<'a> {
    client: &'a kube::Client,
    opts: &'a Options,
    out: &'a mut dyn Write,
    cmds: Commands,
    deadline: Option<Instant>,
    /// The current test's log lines, until it fails (`None`: printed as they come).
    buffer: Option<Vec<String>>,
    /// Whether the cursor is after a run of dots.
    mid_line: bool,
    /// Policies changed since the datapath last showed the expected verdicts.
    policy_changed: bool,
}

impl Runner<'_> {
    /// A line of the suite (`ℹ️`, `✨`, `⌛`...).
    fn line(&mut self, text: &str) {
        if self.mid_line {
            let _ = writeln!(self.out);
            self.mid_line = false;
        }
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }

    /// A line of the current test (indented; buffered unless the test failed or
    /// `--verbose`).
    fn log(&mut self, text: &str) {
        let text = format!("  {text}");
        match &mut self.buffer {
            Some(b) => b.push(text),
            None => self.line(&text),
        }
    }

    /// One action's progress dot.
    fn dot(&mut self) {
        let _ = write!(self.out, ".");
        let _ = self.out.flush();
        self.mid_line = true;
    }

    /// A failure of the current test: the buffered details first, then `text`.
    fn fail(&mut self, text: &str) {
        if let Some(lines) = self.buffer.take() {
            self.mid_line = true;
            for l in lines {
                self.line(&l);
            }
        }
        self.log(&format!("❌ {text}"));
    }

    fn remaining(&self) -> Result<Duration, String> {
        match self.deadline {
            None => Ok(Duration::MAX),
            Some(d) => d
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    format!(
                        "connectivity test suite timeout ({:?}) reached",
                        self.opts.timeout
                    )
                }),
        }
    }

    fn exec_timeout(&self) -> Duration {
        self.opts.request_timeout.max(self.opts.connect_timeout) + Duration::from_secs(10)
    }

    /// Runs a command, retrying an exec that broke down (not the command's failure).
    async fn run_command(&self, pod: &PodPeer, command: &[String]) -> Result<Exec, String> {
        let mut last = String::new();
        for attempt in 0..EXEC_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            match exec(self.client, pod, command, self.exec_timeout()).await {
                Ok(e) => return Ok(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn cluster(&self) -> &str {
        &self.opts.cluster_name
    }

    fn ns(&self) -> &str {
        &self.opts.namespace
    }

    // -- setup --

    /// Upstream's detection: one node wanted by the agents' DaemonSet, or one node
    /// without a control-plane `NoSchedule` taint.
    async fn detect_single_node(&mut self) -> Result<bool, String> {
        if self.opts.single_node {
            return Ok(true);
        }
        let ds = Api::<DaemonSet>::namespaced(self.client.clone(), NAMESPACE)
            .get_opt("cilium")
            .await
            .map_err(|e| format!("reading the cilium DaemonSet: {e}"))?
            .ok_or("unable to determine status of Cilium DaemonSet: not found (run \"cilium status\" for more details)")?;
        if ds.status.map(|s| s.desired_number_scheduled) == Some(1) {
            return Ok(true);
        }
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("unable to list nodes: {e}"))?;
        let workers = nodes
            .items
            .iter()
            .filter(|n| {
                !n.spec
                    .iter()
                    .flat_map(|s| s.taints.iter().flatten())
                    .any(|t| {
                        t.effect == "NoSchedule"
                            && (t.key == "node-role.kubernetes.io/control-plane"
                                || t.key == "node-role.kubernetes.io/master")
                    })
            })
            .count();
        let single = workers == 1;
        if single {
            self.line(
                "ℹ️  Single-node environment detected, enabling single-node connectivity test",
            );
        }
        Ok(single)
    }

    /// Deletes the test namespace and waits until it is gone (upstream's cleanup).
    async fn delete_namespace(&mut self) -> Result<(), String> {
        let (cluster, ns) = (self.cluster().to_owned(), self.ns().to_owned());
        self.line(&format!(
            "🔥 [{cluster}] Deleting connectivity check deployments..."
        ));
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(&ns, &DeleteParams::foreground()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
            Err(e) => return Err(format!("deleting namespace {ns}: {e}")),
        }
        self.line(&format!(
            "⌛ [{cluster}] Waiting for namespace {ns} to disappear"
        ));
        let timeout = READY_TIMEOUT.min(self.remaining()?);
        cluster::wait_for(timeout, || async {
            match api.get_opt(&ns).await {
                Ok(None) => Ok(true),
                Ok(Some(_)) => Err(format!("namespace {ns} is still terminating")),
                Err(e) => Err(e.to_string()),
            }
        })
        .await
    }

    /// Deploys the namespace and the workloads (only what is missing, with upstream's
    /// messages).
    async fn deploy(&mut self, single_node: bool) -> Result<(), String> {
        let (cluster, ns) = (self.cluster().to_owned(), self.ns().to_owned());
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        if let Some(existing) = ns_api.get_opt(&ns).await.map_err(|e| e.to_string())?
            && existing.metadata.deletion_timestamp.is_some()
        {
            self.line(&format!(
                "⌛ [{cluster}] Waiting for namespace {ns} to disappear"
            ));
            let timeout = READY_TIMEOUT.min(self.remaining()?);
            cluster::wait_for(timeout, || async {
                Ok(ns_api
                    .get_opt(&ns)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_none())
            })
            .await
            .map_err(|e| format!("namespace {ns}: {e}"))?;
        }
        if ns_api
            .get_opt(&ns)
            .await
            .map_err(|e| e.to_string())?
            .is_none()
        {
            self.line(&format!(
                "✨ [{cluster}] Creating namespace {ns} for connectivity check..."
            ));
            let namespace = json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": ns, "labels": {"app.kubernetes.io/name": "cilium-cli"}},
            });
            cluster::apply(self.client, &[namespace]).await?;
        }
        for (what, objects) in workloads(&ns, single_node) {
            let main = objects.last().cloned().unwrap_or_default();
            if !self.exists(&main).await? {
                self.line(&format!("✨ [{cluster}] Deploying {what}..."));
            }
            cluster::apply(self.client, &objects).await?;
        }
        Ok(())
    }

    async fn exists(&self, object: &Value) -> Result<bool, String> {
        let ns = self.ns();
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let found = match object["kind"].as_str() {
            Some("Deployment") => Api::<Deployment>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await
                .map(|o| o.is_some()),
            Some("DaemonSet") => Api::<DaemonSet>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await
                .map(|o| o.is_some()),
            Some("Service") => Api::<Service>::namespaced(self.client.clone(), ns)
                .get_opt(name)
                .await
                .map(|o| o.is_some()),
            _ => Ok(false),
        };
        found.map_err(|e| format!("reading {name}: {e}"))
    }

    /// Waits for the Deployments and the DaemonSet to be ready.
    async fn wait_ready(&mut self, single_node: bool) -> Result<(), String> {
        let (cluster, ns) = (self.cluster().to_owned(), self.ns().to_owned());
        let mut names = vec![CLIENT, CLIENT2, ECHO_SAME_NODE];
        if !single_node {
            names.push(ECHO_OTHER_NODE);
        }
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        for name in names {
            self.line(&format!(
                "⌛ [{cluster}] Waiting for deployment {ns}/{name} to become ready..."
            ));
            let timeout = READY_TIMEOUT.min(self.remaining()?);
            let ready = cluster::wait_for(timeout, || async {
                let d = deployments.get(name).await.map_err(|e| e.to_string())?;
                let want = d.spec.replicas.unwrap_or(1);
                let st = d.status.unwrap_or_default();
                let generation = d.metadata.generation.unwrap_or(0);
                if st.observed_generation.unwrap_or(0) >= generation
                    && st.updated_replicas.unwrap_or(0) == want
                    && st.ready_replicas.unwrap_or(0) == want
                    && st.replicas.unwrap_or(0) == want
                {
                    Ok(true)
                } else {
                    Err(format!(
                        "{} of {want} replicas ready",
                        st.ready_replicas.unwrap_or(0)
                    ))
                }
            })
            .await
            .map_err(|e| format!("deployment {ns}/{name} is not ready: {e}"));
            if let Err(e) = ready {
                return Err(self.with_pod_problems(e, &format!("name={name}")).await);
            }
        }
        self.line(&format!(
            "⌛ [{cluster}] Waiting for DaemonSet {ns}/{HOST_NETNS} to become ready..."
        ));
        let daemonsets: Api<DaemonSet> = Api::namespaced(self.client.clone(), &ns);
        let timeout = READY_TIMEOUT.min(self.remaining()?);
        let ready = cluster::wait_for(timeout, || async {
            let d = daemonsets
                .get(HOST_NETNS)
                .await
                .map_err(|e| e.to_string())?;
            let generation = d.metadata.generation.unwrap_or(0);
            let st = d.status.unwrap_or_default();
            if st.observed_generation.unwrap_or(0) >= generation
                && st.desired_number_scheduled > 0
                && st.number_ready == st.desired_number_scheduled
                && st.updated_number_scheduled.unwrap_or(0) == st.desired_number_scheduled
            {
                Ok(true)
            } else {
                Err(format!(
                    "{} of {} pods ready",
                    st.number_ready, st.desired_number_scheduled
                ))
            }
        })
        .await
        .map_err(|e| format!("DaemonSet {ns}/{HOST_NETNS} is not ready: {e}"));
        match ready {
            Ok(()) => Ok(()),
            Err(e) => Err(self
                .with_pod_problems(e, &format!("kind={HOST_NETNS}"))
                .await),
        }
    }

    /// `error`, followed by why the pods matching `selector` are not ready (their
    /// containers' waiting reasons and messages, as `kubectl describe` shows them).
    async fn with_pod_problems(&self, error: String, selector: &str) -> String {
        let Ok(pods) = Api::<Pod>::namespaced(self.client.clone(), self.ns())
            .list(&ListParams::default().labels(selector))
            .await
        else {
            return error;
        };
        let mut out = error;
        for p in &pods.items {
            let name = p.metadata.name.as_deref().unwrap_or_default();
            let statuses = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten());
            for c in statuses.filter(|c| !c.ready) {
                if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
                    out.push_str(&format!(
                        "; pod {name}: {}: {}",
                        w.reason.as_deref().unwrap_or("Waiting"),
                        w.message.as_deref().unwrap_or_default()
                    ));
                }
            }
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none() {
                out.push_str(&format!("; pod {name}: not scheduled"));
            }
        }
        out
    }

    /// The test's pods, Services and nodes as they are now.
    async fn discover(&self) -> Result<Env, String> {
        let ns = self.ns();
        let pods = Api::<Pod>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing pods in {ns}: {e}"))?;
        let mut env = Env::default();
        for p in &pods.items {
            let running = p.metadata.deletion_timestamp.is_none()
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let Some(peer) = PodPeer::from_pod(p).filter(|_| running) else {
                continue;
            };
            match peer.labels.get("kind").map(String::as_str) {
                Some("client") => env.clients.push(peer),
                Some("echo") => env.echoes.push(peer),
                Some(HOST_NETNS) => env.hosts.push(peer),
                _ => {}
            }
        }
        let services = Api::<Service>::namespaced(self.client.clone(), ns)
            .list(&ListParams::default().labels("kind=echo"))
            .await
            .map_err(|e| format!("listing services in {ns}: {e}"))?;
        env.services = services
            .items
            .iter()
            .filter_map(SvcPeer::from_service)
            .collect();
        let nodes = Api::<Node>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("listing nodes: {e}"))?;
        env.nodes = nodes.items.iter().map(NodePeer::from_node).collect();
        env.clients.sort_by(|a, b| a.name.cmp(&b.name));
        env.echoes.sort_by(|a, b| a.name.cmp(&b.name));
        env.hosts.sort_by(|a, b| a.node.cmp(&b.node));
        env.services.sort_by(|a, b| a.name.cmp(&b.name));
        env.nodes.sort_by(|a, b| a.name.cmp(&b.name));
        if env.clients.is_empty() || env.echoes.is_empty() {
            return Err(format!("no running client or echo pods in {ns}"));
        }
        Ok(env)
    }

    /// Upstream's checks before the tests: each echo Service's name resolves in a client,
    /// each NodePort answers on the nodes the NodePort scenarios that will run reach.
    async fn validate(&mut self, env: &mut Env, filter: &TestFilter) -> Result<(), String> {
        let cluster = self.cluster().to_owned();
        let client = env.clients[0].clone();
        for s in env.services.clone() {
            self.line(&format!(
                "⌛ [{cluster}] Waiting for Service {}/{} to become ready...",
                s.namespace, s.name
            ));
            let cmd: Vec<String> = ["getent", "hosts", &s.name].map(str::to_owned).into();
            let timeout = (SHORT_TIMEOUT * 2).min(self.remaining()?);
            let this = &*self;
            cluster::wait_for(timeout, || async {
                let e = this.run_command(&client, &cmd).await?;
                if e.code == 0 && e.stdout.split_whitespace().any(|w| w == s.cluster_ip) {
                    Ok(true)
                } else {
                    Err(format!(
                        "{} does not resolve to {}: {}",
                        s.name,
                        s.cluster_ip,
                        e.stdout.trim()
                    ))
                }
            })
            .await
            .map_err(|e| format!("timeout reached waiting for service {}: {e}", s.name))?;
        }
        for s in env.services.clone() {
            if s.node_port == 0 {
                continue;
            }
            for n in env.nodes.clone() {
                let local = env.clients.iter().any(|c| n.has_address(&c.host_ip));
                let scenario = if local {
                    Scenario::PodToLocalNodePort
                } else {
                    Scenario::PodToRemoteNodePort
                };
                if !will_run(scenario, filter) {
                    continue;
                }
                for (kind, addr) in &n.addresses {
                    if *kind != "internal-ip" {
                        continue;
                    }
                    self.line(&format!(
                        "⌛ [{cluster}] Waiting for NodePort {addr}:{} ({}/{}) to become ready...",
                        s.node_port, s.namespace, s.name
                    ));
                    let cmd = self.cmds.curl(addr, s.node_port);
                    let timeout = SHORT_TIMEOUT.min(self.remaining()?);
                    let this = &*self;
                    let ready = cluster::wait_for(timeout, || async {
                        let e = this.run_command(&client, &cmd).await?;
                        if e.code == 0 {
                            Ok(true)
                        } else {
                            Err(format!("curl exit code {}: {}", e.code, e.stderr.trim()))
                        }
                    })
                    .await;
                    if let Err(e) = ready {
                        // The NodePort tests will say which path fails.
                        self.line(&format!(
                            "⚠️  [{cluster}] NodePort {addr}:{} ({}/{}) not ready after {timeout:?}: {e}",
                            s.node_port, s.namespace, s.name
                        ));
                    }
                }
            }
        }
        if will_run(Scenario::PodToHostPort, filter) {
            env.no_host_port = self.host_port_support(env).await;
        }
        Ok(())
    }

    /// Why pod-to-hostport cannot run: upstream requires the kube-proxy replacement's
    /// HostPort; here each echo pod's node's agent must list a HostPort service for its
    /// hostPort (`cilium-dbg service list`).
    async fn host_port_support(&self, env: &Env) -> Option<String> {
        let agents = match Api::<Pod>::namespaced(self.client.clone(), NAMESPACE)
            .list(&ListParams::default().labels(AGENT_SELECTOR))
            .await
        {
            Ok(l) => l.items,
            Err(e) => return Some(format!("listing the agents: {e}")),
        };
        let cmd: Vec<String> = ["cilium-dbg", "service", "list", "-o", "json"]
            .map(str::to_owned)
            .into();
        for e in &env.echoes {
            let Some(agent) = agents
                .iter()
                .find(|a| {
                    a.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(e.node.as_str())
                })
                .and_then(PodPeer::from_pod)
            else {
                return Some(format!("no agent pod on node {}", e.node));
            };
            let agent = PodPeer {
                container: AGENT_CONTAINER.to_owned(),
                ..agent
            };
            let services = match self.run_command(&agent, &cmd).await {
                Ok(x) if x.code == 0 => serde_json::from_str::<Value>(&x.stdout).ok(),
                _ => None,
            };
            let Some(services) = services else {
                return Some(format!("cannot list the services of agent {agent}"));
            };
            if !has_host_port(&services, ECHO_HOST_PORT) {
                return Some(format!(
                    "Feature host-port is disabled: agent {agent} on {} has no HostPort service for port {ECHO_HOST_PORT}",
                    e.node
                ));
            }
        }
        None
    }

    // -- tests --

    /// Applies a test's policies; for Cilium policies, waits until an agent recorded
    /// them as valid (or says why not).
    async fn apply_policies(&mut self, policies: &[Value]) -> Result<(), String> {
        let cluster = self.cluster().to_owned();
        for p in policies {
            self.log(&format!(
                "ℹ️  📜 Applying {} '{}' to namespace '{}' on cluster {cluster}..",
                p["kind"].as_str().unwrap_or_default(),
                p["metadata"]["name"].as_str().unwrap_or_default(),
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
            ));
        }
        self.policy_changed = true;
        cluster::apply(self.client, policies).await?;
        let resource = ApiResource {
            group: "cilium.io".into(),
            version: "v2".into(),
            api_version: "cilium.io/v2".into(),
            kind: "CiliumNetworkPolicy".into(),
            plural: "ciliumnetworkpolicies".into(),
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), self.ns(), &resource);
        for p in policies
            .iter()
            .filter(|p| p["kind"] == "CiliumNetworkPolicy")
        {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            let timeout = POLICY_WAIT.min(self.remaining()?);
            cluster::wait_for(timeout, || async {
                let o = api.get(name).await.map_err(|e| e.to_string())?;
                let valid = o.data["status"]["conditions"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["type"] == "Valid").cloned());
                match valid {
                    Some(c) if c["status"] == "True" => Ok(true),
                    Some(c) => Err(format!(
                        "policy {name} is not valid: {}",
                        c["message"].as_str().unwrap_or_default()
                    )),
                    None => Err(format!("no agent reported policy {name} valid")),
                }
            })
            .await?;
        }
        Ok(())
    }

    async fn delete_policies(&mut self, policies: &[Value]) -> Result<(), String> {
        let cluster = self.cluster().to_owned();
        for p in policies.iter().rev() {
            self.log(&format!(
                "ℹ️  📜 Deleting {} '{}' in namespace '{}' on cluster {cluster}..",
                p["kind"].as_str().unwrap_or_default(),
                p["metadata"]["name"].as_str().unwrap_or_default(),
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
            ));
        }
        self.policy_changed = true;
        cluster::delete(self.client, policies).await.map(drop)
    }

    /// Deletes the policies a cut-short run may have left in the test namespace.
    async fn delete_leftover_policies(&mut self) -> Result<(), String> {
        let mut leftovers = Vec::new();
        for t in suite() {
            leftovers.extend((t.policies)(self.ns()));
        }
        if !cluster::delete(self.client, &leftovers).await?.is_empty() {
            self.policy_changed = true;
        }
        Ok(())
    }

    /// After a policy change: each action again until its verdict is the expected one,
    /// for up to [`POLICY_WAIT`] in all (the wait upstream makes on the agents' realized
    /// policy revisions). Nothing is judged here.
    async fn settle(&mut self, actions: &[Action]) -> Result<(), String> {
        let start = Instant::now();
        let until = start + POLICY_WAIT.min(self.remaining()?);
        if self.opts.verbose {
            self.log("⌛ Waiting for the policy change to reach every node...");
        }
        let mut retries = 0;
        for a in actions {
            loop {
                self.remaining()?;
                let matched = self
                    .run_command(&a.src, &a.command)
                    .await
                    .is_ok_and(|e| a.expect.matches(e.code));
                if matched {
                    break;
                }
                if Instant::now() >= until {
                    if self.opts.verbose {
                        self.log(&format!(
                            "⌛ {a}: not {} after {POLICY_WAIT:?}",
                            a.expect.describe()
                        ));
                    }
                    return Ok(());
                }
                retries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        if self.opts.verbose {
            self.log(&format!(
                "⌛ Every action gave its expected verdict after {:.1?} ({retries} retries)",
                start.elapsed()
            ));
        }
        self.policy_changed = false;
        Ok(())
    }

    /// Runs one action, judging its exit code; the failure message if it fails.
    async fn run_action(&mut self, a: &Action) -> Option<String> {
        self.log(&format!("[.] Action [{a}]"));
        self.dot();
        let cmd = a.command.join(" ");
        let program = a.command.first().cloned().unwrap_or_default();
        let e = match self.run_command(&a.src, &a.command).await {
            Ok(e) => e,
            Err(e) => {
                let msg = format!("command {cmd:?} failed: {e}");
                self.fail(&msg);
                return Some(msg);
            }
        };
        if a.expect.matches(e.code) {
            return None;
        }
        let msg = match (a.expect, e.code) {
            (Expect::Success, code) => {
                format!("command {cmd:?} failed: command terminated with exit code {code}")
            }
            (_, 0) => format!(
                "command {cmd:?} succeeded while it should have failed: {}",
                e.stdout.trim()
            ),
            (expect, code) => format!(
                "command {cmd:?} failed with unexpected exit code: command terminated with exit code {code} (expected {})",
                expect.describe()
            ),
        };
        self.fail(&msg);
        self.log(&format!("ℹ️  {program} stdout:"));
        self.log(e.stdout.trim());
        self.log(&format!("ℹ️  {program} stderr:"));
        self.log(e.stderr.trim());
        Some(msg)
    }

    async fn run_test(
        &mut self,
        t: &TestCase,
        index: usize,
        total: usize,
        env: &Env,
        filter: &TestFilter,
    ) -> Result<TestResult, String> {
        let ns = self.ns().to_owned();
        let mut result = TestResult {
            name: t.name.to_owned(),
            ..TestResult::default()
        };
        let enabled: Vec<(Scenario, bool)> = t
            .scenarios
            .iter()
            .map(|s| (*s, filter.enabled(&format!("{}/{}", t.name, s.name()))))
            .collect();
        if enabled.iter().all(|(_, on)| !on) {
            let reason = "skipped by user";
            self.line(&format!(
                "[=] [{ns}] Skipping test [{}] [{index}/{total}] ({reason})",
                t.name
            ));
            result.skipped = Some(reason.to_owned());
            return Ok(result);
        }
        self.line(&format!("[=] [{ns}] Test [{}] [{index}/{total}]", t.name));
        self.buffer = (!self.opts.verbose).then(Vec::new);
        let policies = (t.policies)(&ns);
        let mut groups = Vec::new();
        let outcome = async {
            if !policies.is_empty() {
                self.apply_policies(&policies)
                    .await
                    .map_err(|e| format!("setting up test: applying network policies: {e}"))?;
            }
            for (s, on) in &enabled {
                let name = format!("{}/{}", t.name, s.name());
                let skip = if *on {
                    s.unmet(env)
                } else {
                    Some("skipped by user".to_owned())
                };
                if let Some(reason) = skip {
                    let text = format!("  [-] Skipping Scenario [{name}] ({reason})");
                    if *on {
                        // A requirement the cluster does not meet: always shown.
                        self.line(&text);
                    } else {
                        self.log(text.trim_start());
                    }
                    result.scenarios_skipped += 1;
                    continue;
                }
                groups.push((name, t.actions(*s, env, self.cmds)));
            }
            if self.policy_changed {
                let all: Vec<Action> = groups.iter().flat_map(|(_, a)| a.clone()).collect();
                self.settle(&all).await?;
            }
            for (name, actions) in &groups {
                self.log(&format!("[-] Scenario [{name}]"));
                for a in actions {
                    self.remaining()?;
                    result.actions += 1;
                    if let Some(msg) = self.run_action(a).await {
                        result.failed_actions.push((a.to_string(), msg));
                    }
                }
            }
            Ok::<(), String>(())
        }
        .await;
        let cleanup = if policies.is_empty() {
            Ok(())
        } else {
            self.delete_policies(&policies).await
        };
        if let Err(e) = outcome {
            if self.remaining().is_err() {
                return Err(e);
            }
            let msg = format!("[{ns}] test {} failed: {e}", t.name);
            if let Some(lines) = self.buffer.take() {
                self.mid_line = true;
                for l in lines {
                    self.line(&l);
                }
            }
            self.log(&format!("🟥 {msg}"));
            result.error = Some(msg);
        }
        if let Err(e) = cleanup {
            let msg = format!("[{ns}] test {} failed: removing its policies: {e}", t.name);
            self.log(&format!("🟥 {msg}"));
            result.error.get_or_insert(msg);
        }
        self.buffer = None;
        Ok(result)
    }
}

/// Whether some test will run `scenario` (`--test` enables it, no known gap skips it).
fn will_run(scenario: Scenario, filter: &TestFilter) -> bool {
    scenario.known_gap().is_none()
        && suite().iter().any(|t| {
            t.scenarios.contains(&scenario)
                && filter.enabled(&format!("{}/{}", t.name, scenario.name()))
        })
}

/// Whether `services` (`cilium-dbg service list -o json`) has a HostPort frontend on
/// `port`.
fn has_host_port(services: &Value, port: u16) -> bool {
    services.as_array().into_iter().flatten().any(|s| {
        s["spec"]["flags"]["type"] == "HostPort"
            && s["spec"]["frontend-address"]["port"].as_u64() == Some(u64::from(port))
    })
}

/// `cilium connectivity test`: deploys the workloads (unless `--cleanup`), runs the
/// selected tests printing their progress to `out` as upstream does, and returns what
/// became of them. An `Err` is a run that could not be carried out (no cluster, the
/// workloads never ready, the suite's timeout); failed tests are in
/// [`Summary::failed`] (see [`Summary::error`] for upstream's closing error).
pub async fn run(
    client: &kube::Client,
    opts: &Options,
    out: &mut dyn Write,
) -> Result<Summary, String> {
    let filter = TestFilter::new(&opts.test)?;
    let mut r = Runner {
        client,
        opts,
        out,
        cmds: Commands {
            connect_timeout: opts.connect_timeout,
            request_timeout: opts.request_timeout,
        },
        deadline: (!opts.timeout.is_zero()).then(|| Instant::now() + opts.timeout),
        buffer: None,
        mid_line: false,
        policy_changed: false,
    };
    if opts.cleanup_only {
        r.line("ℹ️  🧹 Cleanup mode enabled - removing all connectivity test artifacts");
        let cluster = opts.cluster_name.clone();
        r.line(&format!(
            "🧹 [{cluster}] Starting cleanup of connectivity test artifacts..."
        ));
        r.delete_namespace().await?;
        r.line(&format!("✅ [{cluster}] Cleanup complete"));
        r.line("ℹ️  ✅ Cleanup complete");
        return Ok(Summary::default());
    }
    let single_node = r.detect_single_node().await?;
    if opts.force_deploy {
        r.delete_namespace().await?;
    }
    r.deploy(single_node).await?;
    r.wait_ready(single_node).await?;
    let mut env = r.discover().await?;
    r.validate(&mut env, &filter).await?;
    r.delete_leftover_policies().await?;
    if let Some(version) = cluster::config_map(client)
        .await?
        .and_then(|cm| cluster::recorded(&cm).1)
    {
        r.line(&format!(
            "ℹ️  Cilium version: {}",
            version.trim_start_matches('v')
        ));
    }
    let tests = suite();
    let ns = opts.namespace.clone();
    r.line(&format!("🏃[{ns}] Running {} tests ...", tests.len()));
    let mut results = Vec::new();
    for (i, t) in tests.iter().enumerate() {
        if let Err(e) = r.remaining() {
            r.line(&format!(
                "🟥 Cancellation request ({e}) received, cancelling tests..."
            ));
            return Err(e);
        }
        let result = r.run_test(t, i + 1, tests.len(), &env, &filter).await;
        match result {
            Ok(res) => results.push(res),
            Err(e) => {
                r.line(&format!(
                    "🟥 Cancellation request ({e}) received, cancelling tests..."
                ));
                return Err(e);
            }
        }
    }
    let text = report_text(&ns, &results);
    r.line(text.trim_end());
    Ok(summarize(&results))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, labels: &[(&str, &str)]) -> PodPeer {
        PodPeer {
            namespace: DEFAULT_NAMESPACE.into(),
            name: name.into(),
            container: name.into(),
            ip: "172.20.1.10".into(),
            node: "k8s-w1".into(),
            host_ip: "192.168.10.101".into(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn env() -> Env {
        let mut c1 = peer("client-1", &[("kind", "client"), ("name", "client")]);
        c1.ip = "172.20.2.11".into();
        let mut c2 = peer(
            "client2-1",
            &[("kind", "client"), ("name", "client2"), ("other", "client")],
        );
        c2.ip = "172.20.2.12".into();
        let mut e1 = peer(
            "echo-same-node-1",
            &[("kind", "echo"), ("name", "echo-same-node")],
        );
        e1.ip = "172.20.2.13".into();
        let mut e2 = peer(
            "echo-other-node-1",
            &[("kind", "echo"), ("name", "echo-other-node")],
        );
        e2.ip = "172.20.0.14".into();
        e2.node = "k8s-w2".into();
        e2.host_ip = "192.168.10.102".into();
        let mut h1 = peer("host-netns-a", &[("kind", "host-netns")]);
        h1.ip = "192.168.10.101".into();
        let svc = |name: &str, ip: &str, np| SvcPeer {
            namespace: DEFAULT_NAMESPACE.into(),
            name: name.into(),
            cluster_ip: ip.into(),
            port: 8080,
            node_port: np,
            labels: [("kind".to_owned(), "echo".to_owned())].into(),
        };
        let node = |name: &str, ip: &str| NodePeer {
            name: name.into(),
            addresses: vec![("internal-ip", ip.into())],
        };
        Env {
            clients: vec![c1, c2],
            echoes: vec![e2, e1],
            hosts: vec![h1],
            services: vec![
                svc("echo-other-node", "10.96.0.20", 31001),
                svc("echo-same-node", "10.96.0.10", 31000),
            ],
            nodes: vec![
                node("k8s-ctr", "192.168.10.100"),
                node("k8s-w1", "192.168.10.101"),
                node("k8s-w2", "192.168.10.102"),
            ],
            no_host_port: None,
        }
    }

    fn cmds() -> Commands {
        Commands {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
        }
    }

    fn test(name: &str) -> TestCase {
        suite().into_iter().find(|t| t.name == name).unwrap()
    }

    #[test]
    fn filters_follow_upstream() {
        let f = TestFilter::new(&[]).unwrap();
        assert!(f.enabled("no-policies/pod-to-pod"));
        // Unanchored, against TEST/SCENARIO.
        let f = TestFilter::new(&["no-policies".into()]).unwrap();
        assert!(f.enabled("no-policies/pod-to-pod"));
        assert!(f.enabled("no-policies-extra/pod-to-local-nodeport"));
        assert!(!f.enabled("all-ingress-deny/pod-to-pod"));
        let f = TestFilter::new(&["^no-policies/".into()]).unwrap();
        assert!(!f.enabled("no-policies-extra/pod-to-local-nodeport"));
        // A scenario across tests.
        let f = TestFilter::new(&["/pod-to-host$".into()]).unwrap();
        assert!(f.enabled("no-policies/pod-to-host"));
        assert!(!f.enabled("no-policies/pod-to-hostport"));
        // Exclusions alone keep everything else; they win over inclusions.
        let f = TestFilter::new(&["!knp".into()]).unwrap();
        assert!(f.enabled("echo-ingress/pod-to-pod"));
        assert!(!f.enabled("echo-ingress-knp/pod-to-pod"));
        let f = TestFilter::new(&["echo-ingress".into(), "!knp".into()]).unwrap();
        assert!(f.enabled("echo-ingress/pod-to-pod"));
        assert!(!f.enabled("echo-ingress-knp/pod-to-pod"));
        assert!(!f.enabled("no-policies/pod-to-pod"));
        let err = TestFilter::new(&["(".into()]).unwrap_err();
        assert!(err.starts_with("test filter:"), "{err}");
    }

    #[test]
    fn suite_has_upstream_names_once_each() {
        let names = test_names();
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(names[0], "no-policies");
        assert!(names.contains(&"echo-ingress-knp"));
        assert!(names.contains(&"all-ingress-deny"));
    }

    #[test]
    fn policies_decode_as_kubernetes_and_cilium_policies() {
        use k8s_openapi::api::networking::v1::NetworkPolicy;
        for t in suite() {
            for p in (t.policies)(DEFAULT_NAMESPACE) {
                assert_eq!(p["metadata"]["namespace"], DEFAULT_NAMESPACE, "{}", t.name);
                match p["kind"].as_str().unwrap() {
                    "NetworkPolicy" => {
                        let knp: NetworkPolicy = serde_json::from_value(p.clone())
                            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
                        assert!(knp.spec.is_some());
                    }
                    "CiliumNetworkPolicy" => {
                        let o: DynamicObject = serde_json::from_value(p.clone())
                            .unwrap_or_else(|e| panic!("{}: {e}", t.name));
                        assert!(o.data["spec"]["endpointSelector"].is_object(), "{}", t.name);
                    }
                    other => panic!("{}: kind {other}", t.name),
                }
                // The agents' own parser takes every document.
                let docs = cilium_policy::parse(&p.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", t.name));
                assert_eq!(docs.len(), 1, "{}", t.name);
                assert!(!docs[0].1.is_empty(), "{}: no rules", t.name);
            }
        }
    }

    #[test]
    fn workloads_decode_and_follow_upstream_labels() {
        let all = workloads(DEFAULT_NAMESPACE, false);
        let what: Vec<&str> = all.iter().map(|(w, _)| w.as_str()).collect();
        assert_eq!(
            what,
            [
                "echo-same-node service",
                "same-node deployment",
                "client deployment",
                "client2 deployment",
                "echo-other-node service",
                "other-node deployment",
                "host-netns daemonset",
            ]
        );
        for (_, objects) in &all {
            for o in objects {
                match o["kind"].as_str().unwrap() {
                    "Deployment" => {
                        let d: Deployment = serde_json::from_value(o.clone()).unwrap();
                        let spec = d.spec;
                        let labels = spec.template.metadata.unwrap().labels.unwrap();
                        let selector = spec.selector.match_labels.unwrap();
                        assert!(selector.iter().all(|(k, v)| labels.get(k) == Some(v)));
                    }
                    "DaemonSet" => {
                        let d: DaemonSet = serde_json::from_value(o.clone()).unwrap();
                        assert_eq!(d.spec.template.spec.unwrap().host_network, Some(true));
                    }
                    "Service" => {
                        let s: Service = serde_json::from_value(o.clone()).unwrap();
                        assert_eq!(s.spec.unwrap().type_.as_deref(), Some("NodePort"));
                    }
                    "ServiceAccount" => {}
                    other => panic!("kind {other}"),
                }
            }
        }
        let client2 = &all[3].1[1];
        let labels = &client2["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["kind"], "client");
        assert_eq!(labels["name"], "client2");
        assert_eq!(labels["other"], "client");
        let other = &all[5].1[1]["spec"]["template"]["spec"]["affinity"];
        assert!(other["podAntiAffinity"].is_object());
        let single = workloads(DEFAULT_NAMESPACE, true);
        assert!(single.iter().all(|(w, _)| !w.contains("other-node")));
    }

    #[test]
    fn scenarios_name_actions_as_upstream() {
        let env = env();
        let t = test("no-policies");
        let pod_to_pod = t.actions(Scenario::PodToPod, &env, cmds());
        assert_eq!(pod_to_pod.len(), 4);
        assert_eq!(
            pod_to_pod[0].to_string(),
            "no-policies/pod-to-pod:curl-ipv4-0: cilium-test-1/client-1 (172.20.2.11) -> cilium-test-1/echo-other-node-1 (172.20.0.14:8080)"
        );
        assert_eq!(
            pod_to_pod[0].command.join(" "),
            "curl --silent --fail --show-error --connect-timeout 2 --max-time 10 -4 -w %{local_ip}:%{local_port} -> %{remote_ip}:%{remote_port} = %{response_code}\n --output /dev/null http://172.20.0.14:8080/"
        );
        let pings = t.actions(Scenario::ClientToClient, &env, cmds());
        assert_eq!(pings.len(), 2);
        assert_eq!(
            pings[0].command,
            ["ping", "-c", "1", "-W", "2", "172.20.2.12"]
        );
        // Two services by ClusterIP and by name, from two clients.
        let svc = t.actions(Scenario::PodToService, &env, cmds());
        assert_eq!(svc.len(), 8);
        assert!(
            svc[1]
                .command
                .last()
                .unwrap()
                .contains("echo-other-node.cilium-test-1:8080")
        );
        let hosts = t.actions(Scenario::PodToHost, &env, cmds());
        assert_eq!(hosts.len(), 6);
        assert_eq!(hosts[0].name, "ping-ipv4-internal-ip");
        let host_to_pod = t.actions(Scenario::HostToPod, &env, cmds());
        assert_eq!(host_to_pod.len(), 2);
        let hostport = t.actions(Scenario::PodToHostPort, &env, cmds());
        assert!(
            hostport[0]
                .command
                .last()
                .unwrap()
                .ends_with("192.168.10.102:4000/")
        );
        // Clients are on k8s-w1: two remote nodes, one local, per client and service.
        let extra = test("no-policies-extra");
        assert_eq!(
            extra
                .actions(Scenario::PodToRemoteNodePort, &env, cmds())
                .len(),
            8
        );
        let local = extra.actions(Scenario::PodToLocalNodePort, &env, cmds());
        assert_eq!(local.len(), 4);
        assert!(
            local[0]
                .command
                .last()
                .unwrap()
                .contains("192.168.10.101:31001")
        );
        assert!(
            t.actions(Scenario::PodToPod, &env, cmds())
                .iter()
                .all(|a| a.expect == Expect::Success)
        );
    }

    #[test]
    fn expectations_follow_upstream() {
        let env = env();
        let verdicts = |name: &str, s: Scenario| -> Vec<(String, String, Expect)> {
            test(name)
                .actions(s, &env, cmds())
                .into_iter()
                .map(|a| (a.src.name.clone(), a.dst.name.clone(), a.expect))
                .collect()
        };
        let client_ingress = verdicts("client-ingress", Scenario::ClientToClient);
        assert_eq!(
            client_ingress,
            [
                (
                    "client-1".into(),
                    "cilium-test-1/client2-1".into(),
                    Expect::Drop
                ),
                (
                    "client2-1".into(),
                    "cilium-test-1/client-1".into(),
                    Expect::Success
                ),
            ]
        );
        for (_, _, e) in verdicts("all-ingress-deny-knp", Scenario::PodToPod) {
            assert_eq!(e, Expect::Drop);
        }
        for (src, _, e) in verdicts("echo-ingress", Scenario::PodToPod) {
            let want = if src == "client2-1" {
                Expect::Success
            } else {
                Expect::DropTimeout
            };
            assert_eq!(e, want);
        }
        for (_, _, e) in verdicts("client-egress-to-echo-deny", Scenario::ClientToClient) {
            assert_eq!(e, Expect::Success);
        }
        for (_, _, e) in verdicts("client-egress-to-echo-deny", Scenario::PodToPod) {
            assert_eq!(e, Expect::Drop);
        }
        assert!(Expect::Drop.matches(1) && Expect::Drop.matches(28) && !Expect::Drop.matches(0));
        assert!(Expect::DropTimeout.matches(28) && !Expect::DropTimeout.matches(7));
        assert!(Expect::Success.matches(0) && !Expect::Success.matches(28));
    }

    #[test]
    fn exit_codes_come_from_the_exec_status() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{StatusCause, StatusDetails};
        let ok = Status {
            status: Some("Success".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(&ok)), Ok(0));
        let failed = Status {
            status: Some("Failure".into()),
            reason: Some("NonZeroExitCode".into()),
            message: Some("command terminated with non-zero exit code".into()),
            details: Some(StatusDetails {
                causes: Some(vec![StatusCause {
                    reason: Some("ExitCode".into()),
                    message: Some("28".into()),
                    ..StatusCause::default()
                }]),
                ..StatusDetails::default()
            }),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(&failed)), Ok(28));
        let broken = Status {
            status: Some("Failure".into()),
            message: Some("container not found".into()),
            ..Status::default()
        };
        assert_eq!(exit_code(Some(&broken)), Err("container not found".into()));
        assert!(exit_code(None).is_err());
    }

    #[test]
    fn known_gaps_skip_their_scenario_everywhere() {
        let all = TestFilter::default();
        for (name, gap) in KNOWN_GAPS {
            assert!(gap.starts_with("known gap: "), "{name}");
            let scenario = suite()
                .iter()
                .flat_map(|t| t.scenarios.iter().copied())
                .find(|s| s.name() == *name)
                .unwrap_or_else(|| panic!("{name} is no scenario of the suite"));
            assert_eq!(scenario.unmet(&env()).as_deref(), Some(*gap));
            assert!(!will_run(scenario, &all));
        }
        assert!(will_run(Scenario::PodToLocalNodePort, &all));
        let no_extra = TestFilter::new(&["!no-policies-extra".into()]).unwrap();
        assert!(!will_run(Scenario::PodToLocalNodePort, &no_extra));
        assert!(will_run(Scenario::PodToPod, &no_extra));
        // A requirement the cluster lacks skips the scenario with its reason.
        let mut lacking = env();
        lacking.no_host_port = Some("Feature host-port is disabled".into());
        assert!(Scenario::PodToHostPort.unmet(&lacking).is_some());
        assert!(Scenario::PodToHostPort.unmet(&env()).is_none());
    }

    #[test]
    fn host_port_is_found_in_the_service_list() {
        let list = json!([
            {"spec": {"flags": {"type": "ClusterIP"}, "frontend-address": {"port": 4000}}},
            {"spec": {"flags": {"type": "HostPort"}, "frontend-address": {"port": 4000}}},
        ]);
        assert!(has_host_port(&list, 4000));
        assert!(!has_host_port(&list, 4001));
        assert!(!has_host_port(&json!([]), 4000));
    }

    #[test]
    fn the_report_reads_as_upstream() {
        let pass = TestResult {
            name: "no-policies".into(),
            actions: 29,
            ..TestResult::default()
        };
        let skipped = TestResult {
            name: "all-egress-deny".into(),
            skipped: Some("skipped by user".into()),
            ..TestResult::default()
        };
        let text = report_text("cilium-test-1", &[pass.clone(), skipped.clone()]);
        assert_eq!(
            text,
            "\n✅ [cilium-test-1] All 1 tests (29 actions) successful, 1 tests skipped, 0 scenarios skipped.\n"
        );
        let failed = TestResult {
            name: "all-ingress-deny".into(),
            actions: 4,
            scenarios_skipped: 1,
            failed_actions: vec![(
                "all-ingress-deny/pod-to-pod:curl-ipv4-0: a (1) -> b (2:8080)".into(),
                "command \"curl\" succeeded while it should have failed: ok".into(),
            )],
            ..TestResult::default()
        };
        let results = [pass, skipped, failed];
        let text = report_text("cilium-test-1", &results);
        assert_eq!(
            text,
            "\n📋 Test Report [cilium-test-1]\n\
             ❌ 1/2 tests failed (1/33 actions), 1 tests skipped, 1 scenarios skipped:\n\
             Test [all-ingress-deny]:\n  \
             🟥 all-ingress-deny/pod-to-pod:curl-ipv4-0: a (1) -> b (2:8080): command \"curl\" succeeded while it should have failed: ok\n"
        );
        let s = summarize(&results);
        assert_eq!(
            s,
            Summary {
                passed: 1,
                failed: vec!["all-ingress-deny".into()],
                skipped: 1,
                scenarios_skipped: 1,
                actions: 33,
                failed_actions: 1,
            }
        );
        assert_eq!(
            s.error("cilium-test-1").as_deref(),
            Some("[cilium-test-1] 1 tests failed")
        );
        assert_eq!(summarize(&results[..2]).error("x"), None);
    }

    #[test]
    fn an_inverted_expectation_is_a_failure() {
        // The judgement a run makes: the verdict against the expectation, both ways.
        let env = env();
        let mut a = test("all-ingress-deny").actions(Scenario::PodToPod, &env, cmds());
        let deny = a.remove(0);
        assert!(
            !deny.expect.matches(0),
            "a curl that passes a deny policy must fail the test"
        );
        let allow = &test("no-policies").actions(Scenario::PodToPod, &env, cmds())[0];
        assert!(
            !allow.expect.matches(28),
            "a curl that times out without a policy must fail the test"
        );
    }

    #[test]
    fn kubeconfig_cluster_names_the_run() {
        let dir = std::env::temp_dir().join(format!("ct-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config");
        std::fs::write(
            &file,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster: {server: 'https://127.0.0.1:6443'}\nusers:\n- name: admin\n  user: {}\ncontexts:\n- name: admin@lab\n  context: {cluster: lab, user: admin}\ncurrent-context: admin@lab\n",
        )
        .unwrap();
        assert_eq!(cluster_name(Some(&file), None), "lab");
        assert_eq!(cluster_name(Some(&file), Some("missing")), "kubernetes");
        assert_eq!(cluster_name(Some(&dir.join("absent")), None), "kubernetes");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
