// SPDX-License-Identifier: Apache-2.0

//! The hubble binary as a user runs it, without a server: clear one-line errors and a
//! non-zero exit. (Its flows are tested against a real agent in the node test.)

use std::process::Command;

fn hubble(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_hubble"))
        .args(args)
        .output()
        .expect("run hubble");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_a_server_hubble_says_so() {
    let (ok, err) = hubble(&["--server", "unix:///nonexistent/hubble.sock", "status"]);
    assert!(!ok);
    assert!(
        err.starts_with("Error: cannot connect to the Hubble server"),
        "{err}"
    );
    let (ok, err) = hubble(&["--server", "127.0.0.1:1", "status"]);
    assert!(
        !ok && err.starts_with("Error: cannot connect to the Hubble server 127.0.0.1:1"),
        "{err}"
    );
    let (ok, err) = hubble(&[
        "--server",
        "unix:///nonexistent/hubble.sock",
        "observe",
        "--verdict",
        "MAYBE",
    ]);
    assert!(!ok && err.contains("--verdict MAYBE"), "{err}");
    let (ok, err) = hubble(&["observe", "--drop-reason-desc", "GREMLINS"]);
    assert!(!ok && err.contains("--drop-reason-desc GREMLINS"), "{err}");
    let (ok, err) = hubble(&["observe", "--since", "yesterday-ish"]);
    assert!(!ok && err.contains("--since"), "{err}");
    // TLS: flags without --tls are not silently plain text; missing files are named; a
    // unix socket is never TLS.
    let (ok, err) = hubble(&["--tls-ca-cert-files", "/x/ca.crt", "status"]);
    assert!(!ok && err.contains("need --tls"), "{err}");
    let (ok, err) = hubble(&["--tls", "--server", "127.0.0.1:1", "status"]);
    assert!(!ok && err.contains("--tls-ca-cert-files"), "{err}");
    let (ok, err) = hubble(&[
        "--server",
        "tls://127.0.0.1:1",
        "--tls-ca-cert-files",
        "/nonexistent/ca.crt",
        "status",
    ]);
    assert!(!ok && err.contains("/nonexistent/ca.crt"), "{err}");
}
