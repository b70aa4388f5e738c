// SPDX-License-Identifier: Apache-2.0

//! schemathesis (PyPI, pinned in `tests/schemathesis/requirements.txt`, installed into
//! `target/schemathesis-venv` by `cargo xtask test`) against the agent's own document,
//! `GET /v1/openapi.json`, with every check (`--checks all`): a dry-mode agent in this
//! process, reached over loopback TCP through a forwarder to its unix socket (schemathesis
//! speaks TCP only). A fixed seed and a bounded number of examples per operation keep the
//! run reproducible and about a minute long. Without the venv the test says so and passes,
//! except under CI (`CI` set), where it fails.

mod common;

use std::io::Read;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, dry_agent_with};

/// Examples per operation and phase, and the seed.
const MAX_EXAMPLES: &str = "100";
const SEED: &str = "19";
/// The longest a run may take before it is stopped and failed.
const RUN_LIMIT: Duration = Duration::from_secs(600);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_owned()
}

/// Cargo's target directory: the one this test's agent binary was built into.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cilium-agent"))
        .ancestors()
        .nth(2)
        .expect("the target directory")
        .to_owned()
}

/// Forwards each connection to 127.0.0.1:<port> to the unix socket, for the life of the
/// process (the listener only accepts on loopback).
fn forward(socket: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().expect("local address").port();
    let socket = socket.to_owned();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let Ok(unix) = UnixStream::connect(&socket) else {
                continue;
            };
            let (Ok(tcp_in), Ok(unix_in)) = (tcp.try_clone(), unix.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || pipe_tcp_to_unix(tcp_in, unix_in));
            std::thread::spawn(move || pipe_unix_to_tcp(unix, tcp));
        }
    });
    port
}

fn pipe_tcp_to_unix(mut from: TcpStream, mut to: UnixStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

fn pipe_unix_to_tcp(mut from: UnixStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

#[test]
fn schemathesis_finds_nothing_against_the_agents_document() {
    let root = workspace_root();
    let venv = target_dir().join("schemathesis-venv");
    let schemathesis = venv.join("bin/schemathesis");
    if !schemathesis.exists() {
        let why = format!(
            "no {}; `cargo xtask test` installs tests/schemathesis/requirements.txt there",
            schemathesis.display()
        );
        assert!(
            std::env::var_os("CI").is_none(),
            "schemathesis is not installed under CI: {why}"
        );
        println!("skipped: schemathesis not installed ({why})");
        return;
    }
    let dir = TempDir::new("schemathesis");
    // A /16 of pods: POST /ipam is called a few hundred times and never exhausts it.
    let (_api, socket) = dry_agent_with(&dir.0, &[("ipv4-range", "172.20.0.0/16")]);
    let port = forward(&socket);
    let config = root.join("tests/schemathesis");

    let started = Instant::now();
    let mut child = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(config.join("schemathesis.toml"))
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args(["--checks", "all"])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--workers", "1", "--request-timeout", "10"])
        .args(["--generation-database", "none", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "hooks")
        .env("PYTHONPATH", &config)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .current_dir(&dir.0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run schemathesis");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for schemathesis") {
            break s;
        }
        if started.elapsed() > RUN_LIMIT {
            // Ours, by its pid.
            let _ = child.kill();
            let _ = child.wait();
            panic!("schemathesis ran over {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = reader.join().expect("schemathesis' output");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let summary: Vec<&str> = out
        .lines()
        .map(|l| l.trim().trim_matches('=').trim())
        .filter(|l| {
            // `Tested: N`, `N generated, N passed`, `N warning in S s` (the last line).
            l.starts_with("Tested:")
                || (l.starts_with(|c: char| c.is_ascii_digit())
                    && (l.contains(" generated") || l.contains(" in ")))
        })
        .collect();
    println!(
        "schemathesis: {} ({:.0} s)",
        summary
            .join(" | ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" "),
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "schemathesis failed ({status}):\n{out}\n{err}"
    );
    assert!(out.contains(" passed"), "no passing summary:\n{out}");
}
