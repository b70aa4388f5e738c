// SPDX-License-Identifier: Apache-2.0

//! `cilium-agent`: loads the configuration (`--config-dir DIR`, `CILIUM_*` variables and
//! `--<key>=<value>` flags with Cilium's key names), prints the effective configuration,
//! starts the node (store, IPAM, identities, datapath, restored endpoints; `--dry-mode=true`
//! skips the datapath), serves the REST API on `socket-path` and the metrics on
//! `prometheus-serve-addr`, until SIGINT or SIGTERM.

use std::process::ExitCode;

use cilium_core::config::{AgentConfig, ConfigSources};

fn load(args: &[String]) -> Result<(AgentConfig, bool), String> {
    let mut sources = ConfigSources::default();
    let mut flags = Vec::new();
    let mut dry_mode = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let Some(flag) = arg.strip_prefix("--") else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let (key, value) = match flag.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => {
                i += 1;
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("flag --{flag} needs a value"))?;
                (flag.to_owned(), v.clone())
            }
        };
        if key == "dry-mode" {
            dry_mode = match value.as_str() {
                "true" => true,
                "false" => false,
                v => return Err(format!("dry-mode: expected true or false, got {v:?}")),
            };
        } else if key == "config-dir" {
            sources
                .load_dir(value.as_ref())
                .map_err(|e| e.to_string())?;
        } else {
            flags.push((key, value));
        }
        i += 1;
    }
    sources.load_env(|k| std::env::var(k).ok());
    for (k, v) in flags {
        sources.set_flag(&k, &v).map_err(|e| e.to_string())?;
    }
    for key in sources.ignored() {
        eprintln!("level=warning msg=\"ignoring unknown config key\" key={key}");
    }
    let config = AgentConfig::from_sources(&sources).map_err(|e| e.to_string())?;
    Ok((config, dry_mode))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, dry_mode) = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("level=fatal msg=\"invalid configuration\" error=\"{e}\"");
            return ExitCode::FAILURE;
        }
    };
    for (k, v) in config.effective() {
        println!("{k:<40} {v}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("level=fatal msg=\"starting the runtime\" error=\"{e}\"");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, dry_mode)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("level=fatal msg=\"agent failed\" error=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: AgentConfig, dry_mode: bool) -> Result<(), String> {
    let socket = config.socket_path.clone();
    let cni_conf = config.write_cni_conf_when_ready.clone();
    let cni_exclusive = config.cni_exclusive;
    let metrics_addr = config.prometheus_serve_addr.clone();
    let options = cilium_agent::StartOptions {
        datapath: !dry_mode,
    };
    let agent = cilium_agent::Agent::start(config, options).await?;
    if let Some(node) = agent.node() {
        let report = node.restore.lock().map(|r| r.clone()).unwrap_or_default();
        eprintln!(
            "level=info msg=\"node started\" node={} ipv4={} cidr={} router={} restored={} removed={} replayed-deletes={}",
            node.name,
            node.ipv4,
            node.cidr,
            node.router,
            report.restored.len(),
            report.removed.len(),
            report.replayed_deletes
        );
    }
    if !metrics_addr.is_empty() {
        let addr = if metrics_addr.starts_with(':') {
            format!("0.0.0.0{metrics_addr}")
        } else {
            metrics_addr.clone()
        };
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| format!("prometheus-serve-addr {metrics_addr}: {e}"))?;
        let app = cilium_agent::metrics_router(agent.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        eprintln!("level=info msg=\"serving metrics\" address={addr}");
    }
    let gc_agent = agent.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
        loop {
            tick.tick().await;
            if let Some(node) = gc_agent.node() {
                node.collect_identities().await;
            }
        }
    });
    let listener = cilium_agent::bind(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    eprintln!(
        "level=info msg=\"serving the API\" socket={}",
        socket.display()
    );
    // Ready: the container runtime may now run cilium-cni.
    if let Some(path) = &cni_conf {
        let renamed = cilium_agent::cni_config::write(path, &socket, cni_exclusive)?;
        eprintln!(
            "level=info msg=\"wrote the CNI configuration\" file={} renamed={renamed:?}",
            path.display()
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    axum::serve(listener, cilium_agent::router(agent))
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await
        .map_err(|e| format!("API server: {e}"))
}
