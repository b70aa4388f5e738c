// SPDX-License-Identifier: Apache-2.0

//! Calling a CNI plugin binary the way a container runtime does (the lab and the tests
//! create pods with it): the `CNI_*` environment, the netconf on stdin, the result or
//! error JSON from stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One invocation of a plugin.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    /// `ADD`, `DEL`, `CHECK`, `GC`, `STATUS`, `VERSION`.
    pub command: &'a str,
    /// `CNI_CONTAINERID`.
    pub container_id: &'a str,
    /// `CNI_NETNS`: the pod's network namespace path.
    pub netns: &'a str,
    /// `CNI_IFNAME`.
    pub ifname: &'a str,
    /// The pod's namespace and name (`CNI_ARGS` `K8S_POD_NAMESPACE` / `K8S_POD_NAME`).
    pub pod: (&'a str, &'a str),
    /// The network configuration (stdin).
    pub netconf: &'a str,
}

/// What the plugin answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Whether it exited 0.
    pub success: bool,
    /// Its stdout as JSON (`Null` when empty or not JSON).
    pub output: Value,
    /// Its stderr.
    pub stderr: String,
}

/// Runs `plugin` (a path), optionally through `wrapper` (e.g. `ip netns exec NODE`, so it
/// runs in the node's namespace as under a runtime on that node).
pub fn invoke(plugin: &Path, wrapper: &[&str], call: &Invocation<'_>) -> std::io::Result<Outcome> {
    invoke_with_path(plugin, wrapper, call, "/opt/cni/bin")
}

/// [`invoke`] with `CNI_PATH` (where a plugin finds the plugins it delegates to, such as
/// an IPAM plugin) set to `cni_path`.
pub fn invoke_with_path(
    plugin: &Path,
    wrapper: &[&str],
    call: &Invocation<'_>,
    cni_path: &str,
) -> std::io::Result<Outcome> {
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(plugin);
            c
        }
        None => Command::new(plugin),
    };
    let mut child = cmd
        .env("CNI_COMMAND", call.command)
        .env("CNI_CONTAINERID", call.container_id)
        .env("CNI_NETNS", call.netns)
        .env("CNI_IFNAME", call.ifname)
        .env("CNI_PATH", cni_path)
        .env(
            "CNI_ARGS",
            format!(
                // As containerd sends them: plugins that do not know an argument (the
                // reference plugins) ignore it instead of failing.
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={}",
                call.pod.0, call.pod.1
            ),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A plugin may answer (an error) without reading its stdin.
        match stdin.write_all(call.netconf.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => return Err(e),
        }
    }
    let out = child.wait_with_output()?;
    Ok(Outcome {
        success: out.status.success(),
        output: serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The pod's IPv4 address from an ADD result (`ips[0].address`, without the prefix).
pub fn result_ipv4(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"][0]["address"]
        .as_str()?
        .split('/')
        .next()?
        .parse()
        .ok()
}
