// SPDX-License-Identifier: Apache-2.0

//! The hubble-relay binary as a user runs it: bad flags are one clear line and exit 1
//! before anything starts (two peer sources among `--kvstore-opt`, `--peer` and
//! `--k8s-kubeconfig-path` included; a `KUBECONFIG` in the environment is used only
//! without a flag naming a source); with a fixed peer that is down, the relay serves and
//! says so (asked as Hubble's CLI asks: health check, then status).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The relay's command without the Kubernetes API of the environment (`KUBECONFIG`, the
/// in-cluster account), with `kubeconfig` as `KUBECONFIG` if given.
fn command(kubeconfig: Option<&str>) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hubble-relay"));
    cmd.env_remove("KUBECONFIG")
        .env_remove("KUBERNETES_SERVICE_HOST");
    if let Some(path) = kubeconfig {
        cmd.env("KUBECONFIG", path);
    }
    cmd
}

/// Runs the relay with `args` (and `--disable-client-tls --disable-server-tls` unless they
/// name TLS flags).
fn relay(kubeconfig: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = command(kubeconfig);
    if !args
        .iter()
        .any(|a| a.starts_with("--tls") || a.starts_with("--disable"))
    {
        cmd.args(["--disable-client-tls", "--disable-server-tls"]);
    }
    let out = cmd.args(args).output().expect("run hubble-relay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_refused_before_starting() {
    const NOWHERE: Option<&str> = Some("/nonexistent/kubeconfig");
    for (kubeconfig, args, want) in [
        (
            None,
            &["--peer", "k8s-w1=127.0.0.1:1", "--listen-address", "bogus"][..],
            "--listen-address \"bogus\"",
        ),
        (
            None,
            &["--listen-address", "unix:///tmp/x.sock"][..],
            "peers come from --kvstore-opt, --peer or --k8s-kubeconfig-path",
        ),
        (
            None,
            &["--k8s-kubeconfig-path", "/nonexistent/kubeconfig"][..],
            "--k8s-kubeconfig-path: ",
        ),
        (
            None,
            &["--k8s-kubeconfig-path", ""][..],
            "a path is expected",
        ),
        (
            None,
            &[
                "--peer",
                "a=b:1",
                "--k8s-kubeconfig-path",
                "/nonexistent/kubeconfig",
            ][..],
            "--peer and --k8s-kubeconfig-path exclude each other",
        ),
        (
            None,
            &[
                "--kvstore-opt",
                "etcd.address=127.0.0.1:2379",
                "--peer",
                "a=b:1",
                "--k8s-kubeconfig-path",
                "/nonexistent/kubeconfig",
            ][..],
            "--kvstore-opt, --peer and --k8s-kubeconfig-path exclude each other",
        ),
        // KUBECONFIG is the source when no flag names one, and conflicts with none.
        (NOWHERE, &[][..], "KUBECONFIG: "),
        (
            NOWHERE,
            &["--peer", "no-address"][..],
            "--peer \"no-address\": NAME=ADDRESS",
        ),
        (
            NOWHERE,
            &["--kvstore-opt", "etcd.adress=x"][..],
            "--kvstore-opt: ",
        ),
        (
            NOWHERE,
            &["--peer", "a=b:1", "--k8s-kubeconfig-path", "/x"][..],
            "--peer and --k8s-kubeconfig-path exclude each other",
        ),
        (
            None,
            &["--peer", "no-address"][..],
            "--peer \"no-address\": NAME=ADDRESS",
        ),
        (
            None,
            &[
                "--peer",
                "a=b:1",
                "--kvstore-opt",
                "etcd.address=127.0.0.1:2379",
            ][..],
            "--kvstore-opt and --peer exclude each other",
        ),
        (
            None,
            &["--peer", "a=b:1", "--dial-timeout", "soon"][..],
            "--dial-timeout",
        ),
        (
            None,
            &["--kvstore-opt", "etcd.adress=x"][..],
            "--kvstore-opt",
        ),
        // TLS: to the peers unless --disable-client-tls, on a TCP listener unless
        // --disable-server-tls; files that cannot be read are named.
        (
            None,
            &["--peer", "a=b:1", "--disable-server-tls"][..],
            "--tls-hubble-server-ca-files is required (or --disable-client-tls for plain text)",
        ),
        (
            None,
            &[
                "--peer",
                "a=b:1",
                "--disable-client-tls",
                "--tls-client-cert-file",
                "/x.crt",
            ][..],
            "choose one",
        ),
        (
            None,
            &[
                "--peer",
                "a=b:1",
                "--disable-server-tls",
                "--tls-hubble-server-ca-files",
                "/nonexistent/ca.crt",
            ][..],
            "/nonexistent/ca.crt",
        ),
        (
            None,
            &["--peer", "a=b:1", "--disable-client-tls"][..],
            "--tls-server-cert-file and --tls-server-key-file are required",
        ),
    ] {
        let (ok, err) = relay(kubeconfig, args);
        assert!(!ok, "{kubeconfig:?} {args:?} was accepted");
        assert!(err.contains(want), "{kubeconfig:?} {args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    }
}

#[test]
fn a_relay_with_a_down_peer_serves_and_says_so() {
    let dir = std::env::temp_dir().join(format!("crs-relay-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("relay.sock");
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down_address = down.local_addr().unwrap().to_string();
    drop(down);
    // A KUBECONFIG in the environment does not stand in the way of --peer.
    let child = command(Some("/nonexistent/kubeconfig"))
        .args([
            "--peer",
            &format!("k8s-w9={down_address}"),
            "--listen-address",
            &format!("unix://{}", socket.display()),
            "--dial-timeout",
            "1s",
            "--disable-client-tls",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("start hubble-relay");
    let mut relay = KillOnDrop(child);
    // Asked as Hubble's CLI asks: the health check, then the status.
    let server = format!("unix://{}", socket.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if cilium_hubble::observer::check_health(&server, Duration::from_secs(1), None)
                .await
                .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "the relay never answered");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut client = cilium_hubble::observer::connect(&server, Duration::from_secs(2))
            .await
            .unwrap();
        client
            .server_status(cilium_hubble::proto::observer::ServerStatusRequest {})
            .await
            .unwrap()
            .into_inner()
    });
    // Stopped as a kubelet stops it (SIGTERM), it removes its socket: a file left behind
    // would pass for a relay.
    assert!(socket.exists());
    let killed = Command::new("kill")
        .args(["-TERM", &relay.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let exit = relay.0.wait().expect("wait");
    assert!(exit.success(), "{exit}");
    assert!(!socket.exists(), "{} left behind", socket.display());
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.num_connected_nodes, Some(0));
    assert_eq!(status.num_unavailable_nodes, Some(1));
    assert_eq!(status.unavailable_nodes, ["k8s-w9"]);
}

/// A child process killed (by its pid) when dropped, even when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
