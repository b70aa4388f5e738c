// SPDX-License-Identifier: Apache-2.0

//! The binary as a runtime calls it: environment, stdin, stdout JSON and exit status.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn cni(vars: &[(&str, &str)], stdin: &str) -> (i32, Value) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cilium-cni"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cilium-cni");
    // The plugin may answer (an error) without reading its stdin: a closed pipe is fine.
    match child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
    {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => panic!("write stdin: {e}"),
    }
    let out = child.wait_with_output().expect("wait");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

const CONF: &str =
    r#"{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni","enable-debug":false}"#;

#[test]
fn version_needs_only_the_command() {
    let (status, out) = cni(&[("CNI_COMMAND", "VERSION")], "");
    assert_eq!(status, 0);
    assert_eq!(out["cniVersion"], "1.1.0");
    assert_eq!(out["supportedVersions"].as_array().map(Vec::len), Some(5));
}

#[test]
fn errors_are_spec_json_on_stdout_with_exit_1() {
    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc123"),
        ("CNI_IFNAME", "eth0"),
    ];
    let (status, out) = cni(&add, CONF);
    assert_eq!((status, out["code"].as_u64()), (1, Some(4)), "{out}");
    assert!(out["msg"].as_str().unwrap().contains("CNI_NETNS"));

    let mut add = add.to_vec();
    add.push(("CNI_NETNS", "/var/run/netns/nothing"));
    let (status, out) = cni(&add, "{not json");
    assert_eq!((status, out["code"].as_u64()), (1, Some(6)), "{out}");

    let (_, out) = cni(
        &add,
        r#"{"cniVersion":"0.1.0","name":"n","type":"cilium-cni"}"#,
    );
    assert_eq!(out["code"], 1, "{out}");
    assert_eq!(
        out["cniVersion"], "0.1.0",
        "errors speak the config's version"
    );
}

#[test]
fn status_without_an_agent_says_unavailable() {
    if std::path::Path::new("/var/run/cilium/cilium.sock").exists() {
        eprintln!("skipped: an agent socket exists on this machine");
        return;
    }
    let (status, out) = cni(&[("CNI_COMMAND", "STATUS")], CONF);
    assert_eq!((status, out["code"].as_u64()), (1, Some(50)), "{out}");
    assert_eq!(out["cniVersion"], "0.3.1");
}
