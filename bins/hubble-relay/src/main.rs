// SPDX-License-Identifier: Apache-2.0

//! `hubble-relay`: serves the Observer API for the whole cluster from every node's Hubble
//! server, and optionally the Hubble UI. The peers come from one source: the cluster store
//! (`--kvstore-opt`), the Kubernetes API (`--k8s-kubeconfig-path`, else the kubeconfig
//! `KUBECONFIG` names, else the in-cluster account when `KUBERNETES_SERVICE_HOST` is set),
//! or a fixed list (`--peer`). Two explicit flags of these are an error; `KUBECONFIG` and
//! the in-cluster account are used only when no flag names a source.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cilium_core::config::{EtcdConfig, etcd_config_of, parse_duration, parse_kvstore_opt};
use cilium_core::kvstore::AnyStore;
use cilium_core::kvstore::etcd::EtcdStore;
use cilium_hubble::observer::{Listen, Listener, serve};
use cilium_hubble::relay::{Peer, PeerTls, Relay, RelayOptions};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser};

#[derive(Debug, Parser)]
#[command(
    name = "hubble-relay",
    about = "cilium-rs hubble-relay: the cluster's flows through one Observer API, and the Hubble UI"
)]
struct Cli {
    /// Where to serve the Observer API: `:PORT`, `HOST:PORT` or `unix://PATH` (repeatable).
    #[arg(long = "listen-address", default_value = ":4245")]
    listen_address: Vec<String>,
    /// The cluster store: `etcd.address=URL` (or `etcd.config=FILE`); nodes are the peers.
    #[arg(long)]
    kvstore_opt: Option<String>,
    /// The cluster whose nodes are the peers.
    #[arg(long, default_value = "default")]
    cluster_name: String,
    /// The agents' Hubble port (their `hubble-listen-address`).
    #[arg(long, default_value_t = 4244)]
    peer_port: u16,
    /// A fixed peer, `NAME=ADDRESS` (repeatable; instead of discovering the nodes).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// The Kubernetes API's kubeconfig; every CiliumNode is a peer. `KUBECONFIG` (its
    /// first file) when the flag is not given and no other source is.
    // An OsString: an empty KUBECONFIG is as good as none (a PathBuf parser refuses it).
    #[arg(long, env = "KUBECONFIG", value_parser = clap::value_parser!(OsString))]
    k8s_kubeconfig_path: Option<OsString>,
    /// How long connecting to a peer may take.
    #[arg(long, default_value = "5s")]
    dial_timeout: String,
    /// How many followed responses wait at most to be put in time order.
    #[arg(long, default_value_t = 100)]
    sort_buffer_len_max: usize,
    /// How long a followed response waits for older ones from other nodes.
    #[arg(long, default_value = "1s")]
    sort_buffer_drain_timeout: String,
    /// Where to serve the Hubble UI: `HOST:PORT` or `unix://PATH` (repeatable; none by
    /// default).
    #[arg(long)]
    ui_listen_address: Vec<String>,
    /// Dial the nodes' Hubble servers in plain text (no TLS; their `hubble-disable-tls`).
    #[arg(long)]
    disable_client_tls: bool,
    /// The CAs of the nodes' Hubble server certificates (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    tls_hubble_server_ca_files: Vec<PathBuf>,
    /// The relay's client certificate, for nodes that verify their clients.
    #[arg(long)]
    tls_client_cert_file: Option<PathBuf>,
    /// Its private key.
    #[arg(long)]
    tls_client_key_file: Option<PathBuf>,
    /// Serve the Observer API over TCP in plain text (the chart's default:
    /// `hubble.relay.tls.server.enabled=false`). Unix sockets are always plain.
    #[arg(long)]
    disable_server_tls: bool,
    /// The relay's server certificate, for its TCP listeners.
    #[arg(long)]
    tls_server_cert_file: Option<PathBuf>,
    /// Its private key.
    #[arg(long)]
    tls_server_key_file: Option<PathBuf>,
    /// The CAs whose client certificates the relay's server accepts (mTLS; repeatable or
    /// comma-separated; none: any client).
    #[arg(long, value_delimiter = ',')]
    tls_relay_client_ca_files: Vec<PathBuf>,
}

/// The relay's TLS to its peers (`None`: `--disable-client-tls`).
fn client_tls(cli: &Cli) -> Result<Option<cilium_hubble::tls::ClientTls>, String> {
    let files = cilium_hubble::tls::ClientTls {
        ca_files: cli.tls_hubble_server_ca_files.clone(),
        cert_file: cli.tls_client_cert_file.clone(),
        key_file: cli.tls_client_key_file.clone(),
        server_name: None,
    };
    if cli.disable_client_tls {
        if files != Default::default() {
            return Err("--disable-client-tls with --tls-hubble-server-ca-files or --tls-client-* files: choose one".into());
        }
        return Ok(None);
    }
    if files.ca_files.is_empty() {
        return Err("the nodes' Hubble servers are dialed over TLS: --tls-hubble-server-ca-files is required (or --disable-client-tls for plain text)".into());
    }
    // Read now: a bad file is an error at start, not at the first call.
    files.config()?;
    Ok(Some(files))
}

/// The TLS of the relay's TCP listeners (`None`: plain).
fn server_tls(
    cli: &Cli,
    listens: &[Listen],
) -> Result<Option<cilium_hubble::tls::ServerTlsConfig>, String> {
    let tcp = listens.iter().any(|l| matches!(l, Listen::Tcp(_)));
    if cli.disable_server_tls || !tcp {
        return Ok(None);
    }
    match (&cli.tls_server_cert_file, &cli.tls_server_key_file) {
        (Some(cert), Some(key)) => cilium_hubble::tls::ServerTls {
            cert_file: cert.clone(),
            key_file: key.clone(),
            client_ca_files: cli.tls_relay_client_ca_files.clone(),
        }
        .config()
        .map(Some),
        _ => Err("a TCP --listen-address serves over TLS: --tls-server-cert-file and --tls-server-key-file are required (or --disable-server-tls for plain text)".into()),
    }
}

fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=hubble-relay msg=\"{msg}\" {fields}");
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .map(Duration::from_secs)
        .map_err(|e| format!("--{flag}: {e}"))
}

/// Where the peers come from.
#[derive(Debug)]
enum Source {
    /// The nodes in the cluster store (how to reach its etcd).
    ClusterStore(EtcdConfig),
    /// The CiliumNodes of the Kubernetes API.
    Kubernetes(KubernetesApi),
    /// `--peer`.
    Fixed(Vec<Peer>),
}

/// How to reach the Kubernetes API.
#[derive(Debug)]
enum KubernetesApi {
    /// A kubeconfig, and the flag or variable that named it.
    Kubeconfig(PathBuf, &'static str),
    /// The pod's service account (`KUBERNETES_SERVICE_HOST`).
    InCluster,
}

impl std::fmt::Display for KubernetesApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KubernetesApi::Kubeconfig(path, _) => write!(f, "{}", path.display()),
            KubernetesApi::InCluster => f.write_str("in-cluster account"),
        }
    }
}

impl KubernetesApi {
    /// A client (reads the kubeconfig or the service account; does not call the API).
    async fn client(&self) -> Result<kube::Client, String> {
        match self {
            KubernetesApi::Kubeconfig(path, named_by) => cilium_k8s::client(path)
                .await
                .map_err(|e| format!("{named_by}: {e}")),
            KubernetesApi::InCluster => kube::Config::incluster()
                .map_err(|e| e.to_string())
                .and_then(|c| kube::Client::try_from(c).map_err(|e| e.to_string()))
                .map_err(|e| {
                    format!("the in-cluster Kubernetes account (KUBERNETES_SERVICE_HOST): {e}")
                }),
        }
    }
}

/// The source of the peers the flags name: at most one of `--kvstore-opt`, `--peer` and
/// `--k8s-kubeconfig-path`; with none of them, the kubeconfig `KUBECONFIG` names (its
/// first file; `kubeconfig_from_env`: clap took the path from there), else the in-cluster
/// account when `KUBERNETES_SERVICE_HOST` is set.
fn source(cli: &Cli, kubeconfig_from_env: bool) -> Result<Source, String> {
    let explicit_kubeconfig = cli
        .k8s_kubeconfig_path
        .as_ref()
        .filter(|_| !kubeconfig_from_env);
    let given: Vec<&str> = [
        ("--kvstore-opt", cli.kvstore_opt.is_some()),
        ("--peer", !cli.peers.is_empty()),
        ("--k8s-kubeconfig-path", explicit_kubeconfig.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, given)| given.then_some(flag))
    .collect();
    if let [first @ .., last] = &given[..]
        && !first.is_empty()
    {
        return Err(format!(
            "{} and {last} exclude each other",
            first.join(", ")
        ));
    }
    if let Some(opt) = &cli.kvstore_opt {
        return parse_kvstore_opt(opt)
            .and_then(|o| etcd_config_of(&o))
            .map(Source::ClusterStore)
            .map_err(|e| format!("--kvstore-opt: {e}"));
    }
    if !cli.peers.is_empty() {
        return hubble_relay::discovery::static_peers(&cli.peers).map(Source::Fixed);
    }
    if let Some(path) = explicit_kubeconfig {
        if path.is_empty() {
            return Err("--k8s-kubeconfig-path: a path is expected".into());
        }
        return Ok(Source::Kubernetes(KubernetesApi::Kubeconfig(
            path.into(),
            "--k8s-kubeconfig-path",
        )));
    }
    // KUBECONFIG may list several files (kubectl merges them); the first is used.
    let from_env = cli
        .k8s_kubeconfig_path
        .as_ref()
        .and_then(|p| std::env::split_paths(p).find(|p| !p.as_os_str().is_empty()));
    if let Some(path) = from_env {
        return Ok(Source::Kubernetes(KubernetesApi::Kubeconfig(
            path,
            "KUBECONFIG",
        )));
    }
    if std::env::var("KUBERNETES_SERVICE_HOST").is_ok_and(|h| !h.is_empty()) {
        return Ok(Source::Kubernetes(KubernetesApi::InCluster));
    }
    Err("peers come from --kvstore-opt, --peer or --k8s-kubeconfig-path".into())
}

async fn run(cli: Cli, kubeconfig_from_env: bool) -> Result<(), String> {
    // Every flag is checked before anything starts.
    let options = RelayOptions {
        dial_timeout: duration("dial-timeout", &cli.dial_timeout)?,
        sort_buffer_drain_timeout: duration(
            "sort-buffer-drain-timeout",
            &cli.sort_buffer_drain_timeout,
        )?,
        sort_buffer_len_max: cli.sort_buffer_len_max,
    };
    let listens = cli
        .listen_address
        .iter()
        .map(|l| {
            l.parse::<Listen>()
                .map_err(|e| format!("--listen-address {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let uis = cli
        .ui_listen_address
        .iter()
        .map(|l| {
            l.parse::<Listen>()
                .map_err(|e| format!("--ui-listen-address {e}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let source = source(&cli, kubeconfig_from_env)?;
    let peer_tls = client_tls(&cli)?;
    let listen_tls = server_tls(&cli, &listens)?;
    let (tx, peers) = tokio::sync::watch::channel(Vec::new());
    // Held for as long as the relay runs when the peers are fixed (the list stays open).
    let mut _fixed_peers = None;
    match source {
        Source::Fixed(fixed) => {
            tx.send_replace(fixed);
            _fixed_peers = Some(tx);
        }
        Source::ClusterStore(etcd) => {
            let cluster = cli.cluster_name.clone();
            let port = cli.peer_port;
            tokio::spawn(async move {
                let store = loop {
                    match EtcdStore::connect_with(&etcd, Duration::from_secs(15)).await {
                        Ok(s) => break s,
                        Err(e) => {
                            log(
                                "warning",
                                "etcd is not reachable yet",
                                &format!("error=\"{e}\""),
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                };
                let store = Arc::new(AnyStore::Etcd(Box::new(store)));
                hubble_relay::discovery::follow_cluster_store(store, &cluster, port, tx).await;
            });
        }
        Source::Kubernetes(api) => {
            // A kubeconfig that cannot be read is refused here; an API that does not
            // answer yet is retried by the discovery.
            let client = api.client().await?;
            log(
                "info",
                "peers are the Kubernetes API's CiliumNodes",
                &format!("api=\"{api}\""),
            );
            tokio::spawn(hubble_relay::discovery::follow_kubernetes(
                client,
                cli.peer_port,
                tx,
            ));
        }
    }
    // Plain text only as asked, and said (once every flag is known good).
    if peer_tls.is_none() {
        log(
            "warning",
            "dialing the Hubble servers in plain text",
            "flag=--disable-client-tls",
        );
    }
    if listen_tls.is_none() && listens.iter().any(|l| matches!(l, Listen::Tcp(_))) {
        log(
            "warning",
            "serving the Observer API over TCP in plain text",
            "flag=--disable-server-tls",
        );
    }
    let mut relay = Relay::new(peers, options);
    if let Some(files) = peer_tls {
        relay = relay.with_tls(PeerTls {
            files,
            cluster_name: cli.cluster_name.clone(),
        });
    }
    let relay = Arc::new(relay);
    let mut tasks = tokio::task::JoinSet::new();
    let sockets: Vec<PathBuf> = listens
        .iter()
        .chain(&uis)
        .filter_map(|l| match l {
            Listen::Unix(p) => Some(p.clone()),
            Listen::Tcp(_) => None,
        })
        .collect();
    for listen in listens {
        let listener = listen
            .bind()
            .await
            .map_err(|e| format!("--listen-address {listen}: {e}"))?;
        log(
            "info",
            "serving the Observer API",
            &format!("address={listen}"),
        );
        let (relay, tls) = (relay.clone(), listen_tls.clone());
        tasks.spawn(async move { serve(relay, listener, tls).await.map_err(|e| e.to_string()) });
    }
    for listen in uis {
        let app = hubble_relay::ui::router(relay.clone());
        let listener = listen
            .bind()
            .await
            .map_err(|e| format!("--ui-listen-address {listen}: {e}"))?;
        log(
            "info",
            "serving the Hubble UI",
            &format!("address={listen}"),
        );
        tasks.spawn(async move {
            match listener {
                Listener::Tcp(l) => axum::serve(l, app).await,
                Listener::Unix(l) => axum::serve(l, app).await,
            }
            .map_err(|e| e.to_string())
        });
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    let ended = tokio::select! {
        Some(done) = tasks.join_next() => done.map_err(|e| e.to_string()).and_then(|r| r),
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
    };
    // A socket file left behind would look like a relay to whoever looks for one.
    for path in sockets {
        let _ = std::fs::remove_file(path);
    }
    ended
}

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    // Only an explicit --k8s-kubeconfig-path conflicts with the other sources.
    let kubeconfig_from_env =
        matches.value_source("k8s_kubeconfig_path") == Some(ValueSource::EnvVariable);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
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
    match rt.block_on(run(cli, kubeconfig_from_env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("level=fatal subsys=hubble-relay msg=\"relay stopped\" error=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}
