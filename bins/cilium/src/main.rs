// SPDX-License-Identifier: Apache-2.0

//! `cilium`: the cluster CLI (see `cilium --help`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use cilium_cli::commands::{self, ValueArgs};
use cilium_cli::{cluster, connectivity, install, portforward, status};
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "cilium",
    version,
    about = "CLI to install, manage and troubleshoot cilium-rs in a Kubernetes cluster"
)]
struct Cli {
    /// Path to the kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    kubeconfig: Option<PathBuf>,
    /// Kubernetes configuration context.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Namespace Cilium is running in (only kube-system).
    #[arg(short = 'n', long, global = true, default_value = install::NAMESPACE)]
    namespace: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, Args)]
struct ValueFlags {
    /// A Helm value, `key=value[,key=value]` (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    /// A Helm value taken as a string (repeatable).
    #[arg(long = "set-string")]
    set_string: Vec<String>,
    /// A YAML file of Helm values (repeatable, later files win).
    #[arg(short = 'f', long = "values")]
    values: Vec<PathBuf>,
}

impl ValueFlags {
    fn read(&self) -> Result<ValueArgs, String> {
        let mut files = Vec::new();
        for f in &self.values {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--values {}: {e}", f.display()))?;
            files.push((f.display().to_string(), text));
        }
        Ok(ValueArgs {
            files,
            set: self.set.clone(),
            set_string: self.set_string.clone(),
        })
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Json,
    Summary,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install Cilium in a Kubernetes cluster (Helm values as Cilium's chart takes them).
    Install {
        #[command(flatten)]
        values: ValueFlags,
        /// Cilium version to install (an image tag: 1.17.5 or v1.17.5).
        #[arg(long)]
        version: Option<String>,
        /// Print the objects as YAML instead of applying them.
        #[arg(long)]
        dry_run: bool,
        /// Print the merged Helm values instead of applying them.
        #[arg(long)]
        dry_run_helm_values: bool,
        /// Wait for the install to be ready.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait_duration: Duration,
    },
    /// Upgrade a Cilium install (the recorded values with these on top).
    Upgrade {
        #[command(flatten)]
        values: ValueFlags,
        /// Cilium version to upgrade to.
        #[arg(long)]
        version: Option<String>,
        /// Start from the chart's defaults instead of the recorded values.
        #[arg(long)]
        reset_values: bool,
        /// Wait for the upgrade to be ready.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait_duration: Duration,
    },
    /// Uninstall Cilium.
    Uninstall {
        /// How long to wait for the agents to go.
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait_duration: Duration,
    },
    /// Display status.
    Status {
        /// Wait for the status to be OK.
        #[arg(long)]
        wait: bool,
        /// How long to wait.
        #[arg(long, default_value = "5m", value_parser = duration)]
        wait_duration: Duration,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "summary")]
        output: Output,
    },
    /// Manage the configuration (the cilium-config ConfigMap).
    Config {
        #[command(subcommand)]
        command: ConfigCmd,
    },
    /// Manage Hubble.
    Hubble {
        #[command(subcommand)]
        command: HubbleCmd,
    },
    /// Connectivity troubleshooting.
    Connectivity {
        #[command(subcommand)]
        command: ConnectivityCmd,
    },
    /// Collect what a bug report needs (objects, logs, every agent's state) into a tarball.
    Sysdump {
        /// The archive's name without extension; `<ts>` stands for the time.
        #[arg(long, default_value = "cilium-sysdump-<ts>")]
        output_filename: String,
        /// Collect `cilium-dbg` output from at most this many agents.
        #[arg(long, default_value_t = 100)]
        max_agents: usize,
    },
    /// Display the CLI's version and the installed one.
    Version,
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Show the configuration.
    View,
    /// Set a key.
    Set {
        /// The key.
        key: String,
        /// The value.
        value: String,
        /// Restart the Cilium pods (default true).
        #[arg(short = 'r', long, default_value_t = true, action = clap::ArgAction::Set)]
        restart: bool,
    },
    /// Delete a key.
    Delete {
        /// The key.
        key: String,
        /// Restart the Cilium pods (default true).
        #[arg(short = 'r', long, default_value_t = true, action = clap::ArgAction::Set)]
        restart: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConnectivityCmd {
    /// Validate connectivity in cluster.
    Test(ConnectivityTestArgs),
}

#[derive(Debug, Args)]
struct ConnectivityTestArgs {
    /// Run tests that match one of the given regular expressions, skip tests by starting
    /// the expression with '!', target Scenarios with e.g. '/pod-to-host'.
    #[arg(long, value_delimiter = ',')]
    test: Vec<String>,
    /// Limit to tests able to run on a single node.
    #[arg(long)]
    single_node: bool,
    /// Namespace to perform the connectivity in (always suffixed with a sequence number,
    /// e.g.: cilium-test-1).
    #[arg(long, default_value = "cilium-test")]
    test_namespace: String,
    /// Maximum time to allow the connectivity test suite to take (0s: no limit).
    #[arg(long, default_value = "0s", value_parser = duration)]
    timeout: Duration,
    /// Cleanup all connectivity test artifacts (namespaces, deployments, services)
    /// without running tests.
    #[arg(long)]
    cleanup: bool,
    /// Force re-deploying test artifacts.
    #[arg(long)]
    force_deploy: bool,
    /// Maximum time to allow initiation of the connection to take.
    #[arg(long, default_value = "2s", value_parser = duration)]
    connect_timeout: Duration,
    /// Maximum time to allow a request to take.
    #[arg(long, default_value = "10s", value_parser = duration)]
    request_timeout: Duration,
    /// Show informational messages and don't buffer any lines.
    #[arg(short = 'v', long)]
    verbose: bool,
}

#[derive(Debug, Subcommand)]
enum HubbleCmd {
    /// Enable Hubble Relay (and the UI with --ui).
    Enable {
        /// Enable the Hubble UI too.
        #[arg(long)]
        ui: bool,
        /// Wait for it to be ready.
        #[arg(long)]
        wait: bool,
    },
    /// Disable Hubble Relay and the UI.
    Disable,
    /// Forward the relay port to the local machine (until interrupted).
    PortForward {
        /// Local port to forward to. 0 will select a random port.
        #[arg(long, default_value_t = 4245)]
        port_forward: u16,
        /// Local address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        address: String,
    },
    /// Open the Hubble UI: forward its port to the local machine (until interrupted).
    Ui {
        /// Local port to forward to. 0 will select a random port.
        #[arg(long, default_value_t = 12000)]
        port_forward: u16,
        /// Open the browser (`xdg-open`) once the port is forwarded.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set,
              num_args = 0..=1, default_missing_value = "true")]
        open_browser: bool,
    },
}

fn duration(text: &str) -> Result<Duration, String> {
    let (digits, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |i| text.split_at(i));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (30s, 5m, 1h)"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?} is not a duration (30s, 5m, 1h)")),
    };
    Ok(Duration::from_secs(secs))
}

async fn run(cli: Cli) -> Result<(String, bool), String> {
    if cli.namespace != install::NAMESPACE {
        return Err(format!(
            "--namespace {}: cilium-rs installs into {} only",
            cli.namespace,
            install::NAMESPACE
        ));
    }
    // The dry runs need no cluster.
    if let Cmd::Install {
        values,
        version,
        dry_run,
        dry_run_helm_values,
        ..
    } = &cli.command
        && (*dry_run || *dry_run_helm_values)
    {
        let v = values.read()?.apply_to(&serde_json::json!({}))?;
        let objects = commands::install_objects(&v, &commands::version_tag(version.as_deref()))?;
        // Certificates from a new CA, as `helm template` makes them.
        let objects = commands::with_tls_secrets(None, &v, objects).await?;
        let text = if *dry_run_helm_values {
            serde_norway::to_string(v.tree()).map_err(|e| e.to_string())?
        } else {
            install::to_yaml(&objects)?
        };
        return Ok((text, true));
    }
    let client = cluster::client(cli.kubeconfig.as_deref(), cli.context.as_deref()).await?;
    match cli.command {
        Cmd::Install {
            values,
            version,
            wait,
            wait_duration,
            ..
        } => {
            let v = values.read()?.apply_to(&serde_json::json!({}))?;
            let version = commands::version_tag(version.as_deref());
            commands::install(&client, &v, &version, wait.then_some(wait_duration))
                .await
                .map(|o| (o, true))
        }
        Cmd::Upgrade {
            values,
            version,
            reset_values,
            wait,
            wait_duration,
        } => commands::upgrade(
            &client,
            &values.read()?,
            version.as_deref(),
            reset_values,
            wait.then_some(wait_duration),
        )
        .await
        .map(|o| (o, true)),
        Cmd::Uninstall { wait_duration } => commands::uninstall(&client, wait_duration)
            .await
            .map(|o| (o, true)),
        Cmd::Status {
            wait,
            wait_duration,
            output,
        } => {
            if wait {
                commands::wait_ready(&client, wait_duration).await?;
            }
            let st = status::collect(&client, true).await?;
            let text = match output {
                Output::Json => format!("{:#}\n", status::to_json(&st)),
                Output::Summary => status::render(&st),
            };
            Ok((text, st.ok()))
        }
        Cmd::Config { command } => match command {
            ConfigCmd::View => commands::config_view(&client)
                .await
                .map(|d| (commands::render_config(&d), true)),
            ConfigCmd::Set {
                key,
                value,
                restart,
            } => commands::config_change(&client, &key, Some(&value), restart)
                .await
                .map(|o| (o, true)),
            ConfigCmd::Delete { key, restart } => {
                commands::config_change(&client, &key, None, restart)
                    .await
                    .map(|o| (o, true))
            }
        },
        Cmd::Hubble { command } => match command {
            HubbleCmd::Enable { ui, wait } => {
                commands::hubble(&client, true, ui, wait.then_some(Duration::from_secs(300)))
                    .await
                    .map(|o| (o, true))
            }
            HubbleCmd::Disable => commands::hubble(&client, false, false, None)
                .await
                .map(|o| (o, true)),
            HubbleCmd::PortForward {
                port_forward,
                address,
            } => {
                let target = portforward::Target {
                    namespace: install::NAMESPACE.into(),
                    service: "hubble-relay".into(),
                    port: 80,
                };
                portforward::forward(&client, &target, &address, port_forward, |at| {
                    println!("ℹ️  Hubble Relay is available at {at}");
                })
                .await
                .map(|()| (String::new(), true))
            }
            HubbleCmd::Ui {
                port_forward,
                open_browser,
            } => {
                let target = portforward::Target {
                    namespace: install::NAMESPACE.into(),
                    service: "hubble-ui".into(),
                    port: 80,
                };
                portforward::forward(&client, &target, "127.0.0.1", port_forward, |at| {
                    let url = format!("http://localhost:{}", at.port());
                    if open_browser {
                        println!("ℹ️  Opening {url:?} in your browser...");
                        // No browser is no error: the URL is printed.
                        let _ = std::process::Command::new("xdg-open")
                            .arg(&url)
                            .stdout(std::process::Stdio::null())
                            .stderr(std::process::Stdio::null())
                            .spawn();
                    } else {
                        println!("ℹ️  Hubble UI is available at {url}");
                    }
                })
                .await
                .map(|()| (String::new(), true))
            }
        },
        Cmd::Connectivity {
            command: ConnectivityCmd::Test(a),
        } => {
            let opts = connectivity::Options {
                test: a.test,
                single_node: a.single_node,
                namespace: format!("{}-1", a.test_namespace),
                timeout: a.timeout,
                cleanup_only: a.cleanup,
                force_deploy: a.force_deploy,
                connect_timeout: a.connect_timeout,
                request_timeout: a.request_timeout,
                verbose: a.verbose,
                cluster_name: connectivity::cluster_name(
                    cli.kubeconfig.as_deref(),
                    cli.context.as_deref(),
                ),
            };
            // Progress goes out as it happens; the summary's error fails the command.
            let summary = connectivity::run(&client, &opts, &mut std::io::stdout()).await?;
            match summary.error(&opts.namespace) {
                None => Ok((String::new(), true)),
                Some(e) => Err(e),
            }
        }
        Cmd::Sysdump {
            output_filename,
            max_agents,
        } => {
            if output_filename.contains('/') {
                return Err(format!(
                    "--output-filename {output_filename:?}: a name, not a path"
                ));
            }
            let base = cilium_cli::sysdump::base_name(
                &output_filename,
                k8s_openapi::jiff::Timestamp::now(),
            );
            println!("🔍 Collecting sysdump ...");
            let dump = cilium_cli::sysdump::collect(&client, max_agents).await;
            let path = dump.write(Path::new("."), &base)?;
            Ok((
                format!(
                    "🗳 Compiling sysdump\n✅ The sysdump has been saved to {} ({} files, {} errors)\n",
                    path.display(),
                    dump.files.len(),
                    dump.errors.len()
                ),
                true,
            ))
        }
        Cmd::Version => {
            let running = cluster::config_map(&client)
                .await?
                .and_then(|cm| cluster::recorded(&cm).1)
                .unwrap_or_else(|| "not installed".into());
            Ok((
                format!(
                    "cilium-cli: v{} compiled with {}\ncilium image (default): {}\ncilium image (running): {running}\n",
                    env!("CARGO_PKG_VERSION"),
                    "rustc",
                    install::DEFAULT_VERSION
                ),
                true,
            ))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok((text, ok)) => {
            print!("{text}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}
