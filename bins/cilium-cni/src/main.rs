// SPDX-License-Identifier: Apache-2.0

//! `cilium-cni`: the CNI plugin binary. Reads `CNI_*` and the netconf on stdin, prints the
//! result or the spec's error JSON on stdout (exit 1 on error); logs go to stderr.
//!
//! VERSION is answered here. Every other command needs the local agent's API on
//! `/var/run/cilium/cilium.sock`; until it answers, STATUS reports code 50 (cannot serve
//! ADD) and the other commands code 100 (agent unreachable).

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

use cilium_cni::spec::{CURRENT_VERSION, CniEnv, CniError, Command, NetConf, code, version_json};

const AGENT_SOCKET: &str = "/var/run/cilium/cilium.sock";

fn run(version: &mut String) -> Result<serde_json::Value, CniError> {
    let env = CniEnv::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(version_json());
    }
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(code::IO, "reading stdin").with_details(e.to_string()))?;
    let conf = NetConf::parse(&stdin)?;
    *version = conf.cni_version.clone();
    *version = conf.negotiate()?.to_owned();
    if let Err(e) = UnixStream::connect(AGENT_SOCKET) {
        let code = if env.command == Command::Status {
            code::UNAVAILABLE
        } else {
            code::AGENT_UNREACHABLE
        };
        return Err(CniError::new(
            code,
            format!("unable to connect to the cilium agent at {AGENT_SOCKET}"),
        )
        .with_details(e.to_string()));
    }
    Err(CniError::new(
        code::AGENT_UNREACHABLE,
        "this cilium-cni build has no agent client yet",
    ))
}

fn main() -> ExitCode {
    let mut version = CURRENT_VERSION.to_owned();
    match run(&mut version) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cilium-cni: {e}");
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
