// SPDX-License-Identifier: Apache-2.0

//! The hubble-relay binary as a user runs it: bad flags are one clear line and exit 1
//! before anything starts; with a fixed peer that is down, the relay serves and says so
//! (through the hubble binary, as a user would ask).

use std::path::PathBuf;
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_hubble-relay"))
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
    let hubble = PathBuf::from(env!("CARGO_BIN_EXE_hubble-relay")).with_file_name("hubble");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let out = Command::new(&hubble)
            .args([
                "--server",
                &format!("unix://{}", socket.display()),
                "status",
            ])
            .output()
            .expect("run hubble (built with the workspace)");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.contains("Healthcheck (via unix://"), "{status}");
    assert!(status.contains("Connected Nodes: 0/1"), "{status}");
}
