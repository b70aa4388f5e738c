// SPDX-License-Identifier: Apache-2.0

//! CNI input: netconf on stdin, CNI_ARGS and the other variables never panic; a parsed
//! netconf negotiates a version or says why not.
#![no_main]

use cilium_cni::spec::{CniEnv, NetConf, parse_cni_args};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(conf) = NetConf::parse(data) {
        let _ = conf.negotiate();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_cni_args(text);
    let mut parts = text.splitn(4, '\n');
    let (cmd, id, ifname, args) = (parts.next(), parts.next(), parts.next(), parts.next());
    let _ = CniEnv::from_vars(|k| match k {
        "CNI_COMMAND" => cmd.map(str::to_owned),
        "CNI_CONTAINERID" => id.map(str::to_owned),
        "CNI_IFNAME" => ifname.map(str::to_owned),
        "CNI_NETNS" => Some("/var/run/netns/x".to_owned()),
        "CNI_ARGS" => args.map(str::to_owned),
        _ => None,
    });
});
