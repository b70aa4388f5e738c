// SPDX-License-Identifier: Apache-2.0

//! The hubble-relay binary as a user runs it: bad flags are one clear line and exit 1
//! before anything starts; with a fixed peer that is down, the relay serves and says so
//! (asked as Hubble's CLI asks: health check, then status).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn relay(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hubble-relay"))
        .args(args)
        .output()
        .expect("run hubble-relay");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_flags_are_refused_before_starting() {
    for (args, want) in [
        (
            &["--peer", "k8s-w1=127.0.0.1:1", "--listen-address", "bogus"][..],
            "--listen-address \"bogus\"",
        ),
        (
            &["--listen-address", "unix:///tmp/x.sock"][..],
            "peers come from --kvstore-opt or --peer",
        ),
        (
            &["--peer", "no-address"][..],
            "--peer \"no-address\": NAME=ADDRESS",
        ),
        (
            &[
                "--peer",
                "a=b:1",
                "--kvstore-opt",
                "etcd.address=127.0.0.1:2379",
            ][..],
            "exclude each other",
        ),
        (
            &["--peer", "a=b:1", "--dial-timeout", "soon"][..],
            "--dial-timeout",
        ),
        (&["--kvstore-opt", "etcd.adress=x"][..], "--kvstore-opt"),
    ] {
        let (ok, err) = relay(args);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(want), "{args:?}: {err}");
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
    let child = Command::new(env!("CARGO_BIN_EXE_hubble-relay"))
        .args([
            "--peer",
            &format!("k8s-w9={down_address}"),
            "--listen-address",
            &format!("unix://{}", socket.display()),
            "--dial-timeout",
            "1s",
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("start hubble-relay");
    let _relay = KillOnDrop(child);
    // Asked as Hubble's CLI asks: the health check, then the status.
    let server = format!("unix://{}", socket.display());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if cilium_hubble::observer::check_health(&server, Duration::from_secs(1))
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
