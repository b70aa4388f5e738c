// SPDX-License-Identifier: Apache-2.0

//! `hubble-relay`: serves the Observer API for the whole cluster from every node's Hubble
//! server (peers from the cluster store, or `--peer`), and optionally the Hubble UI.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use cilium_core::config::{etcd_endpoints_of, parse_duration, parse_kvstore_opt};
use cilium_core::kvstore::AnyStore;
use cilium_core::kvstore::etcd::EtcdStore;
use cilium_hubble::observer::{Listen, Listener, serve};
use cilium_hubble::relay::{Relay, RelayOptions};
use clap::Parser;

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
    /// A fixed peer, `NAME=ADDRESS` (repeatable; instead of the cluster store).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// How long connecting to a peer may take.
    #[arg(long, default_value = "5s")]
    dial_timeout: String,
    /// How many followed responses wait at most to be put in time order.
    #[arg(long, default_value_t = 100)]
    sort_buffer_len_max: usize,
    /// How long a followed response waits for older ones from other nodes.
    #[arg(long, default_value = "1s")]
    sort_buffer_drain_timeout: String,
    /// Where to serve the Hubble UI: `HOST:PORT` or `unix://PATH` (none by default).
    #[arg(long)]
    ui_listen_address: Option<String>,
}

fn log(level: &str, msg: &str, fields: &str) {
    eprintln!("level={level} subsys=hubble-relay msg=\"{msg}\" {fields}");
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    parse_duration(text)
        .map(Duration::from_secs)
        .map_err(|e| format!("--{flag}: {e}"))
}

async fn run(cli: Cli) -> Result<(), String> {
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
    let ui = cli
        .ui_listen_address
        .as_deref()
        .map(|l| {
            l.parse::<Listen>()
                .map_err(|e| format!("--ui-listen-address {e}"))
        })
        .transpose()?;
    let fixed = hubble_relay::discovery::static_peers(&cli.peers)?;
    let endpoints = match (&cli.kvstore_opt, fixed.is_empty()) {
        (Some(opt), true) => Some(
            parse_kvstore_opt(opt)
                .and_then(|o| etcd_endpoints_of(&o))
                .map_err(|e| format!("--kvstore-opt: {e}"))?,
        ),
        (None, false) => None,
        (Some(_), false) => return Err("--peer and --kvstore-opt exclude each other".into()),
        (None, true) => return Err("peers come from --kvstore-opt or --peer".into()),
    };

    let (tx, peers) = tokio::sync::watch::channel(fixed);
    // Held for as long as the relay runs when the peers are fixed (the list stays open).
    let mut _fixed_peers = None;
    if let Some(endpoints) = endpoints {
        let cluster = cli.cluster_name.clone();
        let port = cli.peer_port;
        tokio::spawn(async move {
            let store = loop {
                match EtcdStore::connect(&endpoints, Duration::from_secs(15)).await {
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
            hubble_relay::discovery::follow(store, &cluster, port, tx).await;
        });
    } else {
        _fixed_peers = Some(tx);
    }
    let relay = Arc::new(Relay::new(peers, options));
    let mut tasks = tokio::task::JoinSet::new();
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
        let relay = relay.clone();
        tasks.spawn(async move { serve(relay, listener).await.map_err(|e| e.to_string()) });
    }
    if let Some(listen) = ui {
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
    tokio::select! {
        Some(done) = tasks.join_next() => done.map_err(|e| e.to_string())?,
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
            eprintln!("level=fatal subsys=hubble-relay msg=\"relay stopped\" error=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}
