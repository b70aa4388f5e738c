// SPDX-License-Identifier: Apache-2.0

//! `cilium-agent`: loads the configuration (`--config-dir DIR`, `CILIUM_*` variables and
//! `--<key>=<value>` flags with Cilium's key names), prints the effective configuration,
//! and serves the REST API on `socket-path` until SIGINT or SIGTERM.

use std::process::ExitCode;

use cilium_core::config::{AgentConfig, ConfigSources};

fn load(args: &[String]) -> Result<AgentConfig, String> {
    let mut sources = ConfigSources::default();
    let mut flags = Vec::new();
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
        if key == "config-dir" {
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
    AgentConfig::from_sources(&sources).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("level=fatal msg=\"invalid configuration\" error=\"{e}\"");
            return ExitCode::FAILURE;
        }
    };
    for (k, v) in config.effective() {
        println!("{k:<40} {v}");
    }
    let socket = config.socket_path.clone();
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
    let agent = cilium_agent::Agent::new(config);
    let result = runtime.block_on(async move {
        let listener = cilium_agent::bind(&socket)?;
        eprintln!(
            "level=info msg=\"serving the API\" socket={}",
            socket.display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        axum::serve(listener, cilium_agent::router(agent))
            .with_graceful_shutdown(async move {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            })
            .await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("level=fatal msg=\"API server failed\" error=\"{e}\"");
            ExitCode::FAILURE
        }
    }
}
