// SPDX-License-Identifier: Apache-2.0

//! `cilium-cni`: the CNI plugin binary. Reads `CNI_*` and the netconf on stdin, prints the
//! result or the spec's error JSON on stdout (exit 1 on error); logs go to stderr.
//!
//! VERSION is answered here; the other commands talk to the local agent's API (the
//! netconf's `agent-socket`, `$CILIUM_SOCK`, or `/var/run/cilium/cilium.sock`): see
//! [`cilium_cni::plugin`].

use std::io::Read;
use std::process::ExitCode;

use cilium_cni::spec::{CURRENT_VERSION, CniEnv, CniError, Command, NetConf, code, version_json};

fn run(version: &mut String) -> Result<Option<serde_json::Value>, CniError> {
    let env = CniEnv::from_vars(|k| std::env::var(k).ok())?;
    if env.command == Command::Version {
        return Ok(Some(version_json()));
    }
    let mut stdin = Vec::new();
    std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| CniError::new(code::IO, "reading stdin").with_details(e.to_string()))?;
    let conf = NetConf::parse(&stdin)?;
    *version = conf.cni_version.clone();
    *version = conf.negotiate()?.to_owned();
    let socket = cilium_cni::plugin::agent_socket(&conf, std::env::var("CILIUM_SOCK").ok());
    cilium_cni::plugin::run(&env, &conf, &socket)
}

fn main() -> ExitCode {
    let mut version = CURRENT_VERSION.to_owned();
    match run(&mut version) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cilium-cni: {e}");
            println!("{}", e.to_json(&version));
            ExitCode::FAILURE
        }
    }
}
