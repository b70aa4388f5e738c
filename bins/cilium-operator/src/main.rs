// SPDX-License-Identifier: Apache-2.0

//! `cilium-operator`: stands by until it leads, then allocates pod CIDRs to CiliumNodes
//! and garbage-collects unused identities, until SIGINT/SIGTERM or the loss of leadership
//! (exit 1, as Cilium's operator does, to be restarted).
//!
//! With `--k8s-kubeconfig-path` it first registers Cilium's CRDs with the Kubernetes API
//! (unless `--skip-crd-creation`). Without `--kvstore-opt` it then runs on that API alone
//! (Lease election, CiliumNode IPAM, CiliumIdentity, CiliumEndpoint and CiliumNode GC);
//! with it, on the cluster store (etcd, `--kvstore-opt etcd.address=<url>`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cilium_core::config::parse_duration;
use cilium_core::kvstore::AnyStore;
use cilium_core::kvstore::etcd::EtcdStore;
use cilium_operator::OperatorConfig;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "cilium-operator",
    about = "cilium-rs operator: pod CIDRs and identity GC"
)]
struct Cli {
    /// Store options: `etcd.address=<url>` (several separated by `;`). Without it, the
    /// operator runs on the Kubernetes API (`--k8s-kubeconfig-path`).
    #[arg(long)]
    kvstore_opt: Option<String>,
    /// The pod CIDR pool.
    #[arg(long, default_value = "10.0.0.0/8")]
    cluster_pool_ipv4_cidr: String,
    /// The size of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    cluster_pool_ipv4_mask_size: u8,
    /// How often unused identities are looked for.
    #[arg(long, default_value = "15m")]
    identity_gc_interval: String,
    /// How long an identity stays unused before it is deleted.
    #[arg(long, default_value = "30m")]
    identity_heartbeat_timeout: String,
    /// How often CiliumEndpoints whose pod is gone are looked for (Kubernetes mode).
    #[arg(long, default_value = "5m")]
    cilium_endpoint_gc_interval: String,
    /// How often CiliumNodes whose Kubernetes Node is gone are looked for (Kubernetes
    /// mode); one found so in two rounds in a row is deleted, freeing its pod CIDR.
    #[arg(long, default_value = "5m0s")]
    nodes_gc_interval: String,
    /// The namespace of the leader-election Lease (Kubernetes mode; default
    /// `$CILIUM_K8S_NAMESPACE`, then kube-system).
    #[arg(long)]
    k8s_namespace: Option<String>,
    /// How long a dead leader keeps the lead (its session lease, or the Lease object).
    #[arg(long, default_value = "15s")]
    leader_election_lease_duration: String,
    /// This operator's name (default: host name and pid).
    #[arg(long)]
    operator_id: Option<String>,
    /// A kubeconfig for the Kubernetes API: Cilium's CRDs are registered (created or
    /// upgraded, then waited for) at start.
    #[arg(long, env = "KUBECONFIG")]
    k8s_kubeconfig_path: Option<std::path::PathBuf>,
    /// Do not register the CRDs (they are managed elsewhere).
    #[arg(long)]
    skip_crd_creation: bool,
}

/// Registers Cilium's CRDs through the API, as Cilium's operator does before anything else.
async fn register_crds(kubeconfig: &std::path::Path) -> Result<(), String> {
    let fail = |e: cilium_k8s::Error| format!("Unable to create custom resource definition: {e}");
    let client = cilium_k8s::client(kubeconfig).await.map_err(fail)?;
    for (name, outcome) in cilium_k8s::crds::register(&client, Duration::from_secs(60))
        .await
        .map_err(fail)?
    {
        eprintln!(
            "level=info subsys=k8s msg=\"CRD (CustomResourceDefinition) is installed and up-to-date\" name={name} action={outcome:?}"
        );
    }
    Ok(())
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .map(Duration::from_secs)
        .map_err(|e| format!("--{flag}: {e}"))
}

async fn run(cli: Cli) -> Result<(), String> {
    let mut config = OperatorConfig::new(
        &cli.operator_id.unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "operator".into());
            format!("{host}-{}", std::process::id())
        }),
        &cli.cluster_pool_ipv4_cidr,
        cli.cluster_pool_ipv4_mask_size,
    )?;
    config.identity_gc_interval = duration("identity-gc-interval", &cli.identity_gc_interval)?;
    config.identity_heartbeat_timeout = duration(
        "identity-heartbeat-timeout",
        &cli.identity_heartbeat_timeout,
    )?;
    config.endpoint_gc_interval = duration(
        "cilium-endpoint-gc-interval",
        &cli.cilium_endpoint_gc_interval,
    )?;
    config.nodes_gc_interval = duration("nodes-gc-interval", &cli.nodes_gc_interval)?;
    let lease = duration(
        "leader-election-lease-duration",
        &cli.leader_election_lease_duration,
    )?;
    config.lease_duration = lease;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let Some(kvstore_opt) = &cli.kvstore_opt else {
        let Some(kubeconfig) = &cli.k8s_kubeconfig_path else {
            return Err(
                "set --k8s-kubeconfig-path (the Kubernetes API) or --kvstore-opt \
                 etcd.address=<url> (the cluster store)"
                    .into(),
            );
        };
        if !cli.skip_crd_creation {
            register_crds(kubeconfig).await?;
        }
        let client = cilium_k8s::client(kubeconfig)
            .await
            .map_err(|e| e.to_string())?;
        let shutdown = async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        let namespace = cli
            .k8s_namespace
            .clone()
            .or_else(|| std::env::var("CILIUM_K8S_NAMESPACE").ok())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "kube-system".into());
        return cilium_operator::run_k8s(client, config, &namespace, shutdown).await;
    };
    let etcd = cilium_core::config::parse_kvstore_opt(kvstore_opt)
        .and_then(|o| cilium_core::config::etcd_config_of(&o))
        .map_err(|e| format!("--kvstore-opt: {e}"))?;
    if let Some(kubeconfig) = &cli.k8s_kubeconfig_path
        && !cli.skip_crd_creation
    {
        register_crds(kubeconfig).await?;
    }
    let store = loop {
        match EtcdStore::connect_with(&etcd, lease).await {
            Ok(s) => break s,
            Err(e) => {
                eprintln!(
                    "level=warning subsys=cilium-operator msg=\"etcd is not reachable yet\" error=\"{e}\""
                );
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let store = Arc::new(AnyStore::Etcd(Box::new(store)));
    tokio::select! {
        r = cilium_operator::run(store, config) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("level=fatal msg=\"starting the runtime\" error=\"{e}\"");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("level=fatal subsys=cilium-operator msg=\"operator stopped\" error=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}
