// SPDX-License-Identifier: Apache-2.0

//! Table tests from the CNI spec's rules.

use std::collections::HashMap;

use serde_json::json;

use crate::host_veth_name;
use crate::spec::*;

fn env(vars: &[(&str, &str)]) -> Result<CniEnv, CniError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    CniEnv::from_vars(|k| map.get(k).cloned())
}

const FULL: [(&str, &str); 4] = [
    ("CNI_CONTAINERID", "abc123"),
    ("CNI_NETNS", "/var/run/netns/p"),
    ("CNI_IFNAME", "eth0"),
    ("CNI_PATH", "/opt/cni/bin"),
];

#[test]
fn required_variables_per_command() {
    // (command, variable left out, accepted)
    let table = [
        ("ADD", None, true),
        ("ADD", Some("CNI_CONTAINERID"), false),
        ("ADD", Some("CNI_NETNS"), false),
        ("ADD", Some("CNI_IFNAME"), false),
        ("ADD", Some("CNI_PATH"), true),
        ("CHECK", Some("CNI_NETNS"), false),
        ("DEL", Some("CNI_NETNS"), true),
        ("DEL", Some("CNI_IFNAME"), false),
        ("DEL", Some("CNI_CONTAINERID"), false),
        ("GC", Some("CNI_CONTAINERID"), true),
        ("GC", Some("CNI_PATH"), false),
        ("VERSION", Some("CNI_CONTAINERID"), true),
        ("STATUS", Some("CNI_PATH"), true),
    ];
    for (command, missing, ok) in table {
        let mut vars: Vec<(&str, &str)> = FULL
            .iter()
            .copied()
            .filter(|(k, _)| Some(*k) != missing)
            .collect();
        vars.push(("CNI_COMMAND", command));
        let got = env(&vars);
        assert_eq!(got.is_ok(), ok, "{command} without {missing:?}: {got:?}");
        if let Err(e) = got {
            assert_eq!(e.code, code::INVALID_ENV);
            assert!(e.msg.contains(missing.unwrap()), "{}", e.msg);
        }
    }
    assert_eq!(
        env(&FULL).unwrap_err().code,
        code::INVALID_ENV,
        "no command"
    );
    let mut vars = FULL.to_vec();
    vars.push(("CNI_COMMAND", "REMOVE"));
    assert_eq!(env(&vars).unwrap_err().code, code::INVALID_ENV);
}

#[test]
fn container_ids_and_interface_names_are_checked() {
    for (id, ok) in [
        ("abc", true),
        ("a.b_c-1", true),
        ("-abc", false),
        ("a b", false),
        ("a/b", false),
    ] {
        assert_eq!(validate_container_id(id).is_ok(), ok, "{id}");
    }
    for (name, ok) in [
        ("eth0", true),
        ("net1", true),
        ("", false),
        (".", false),
        ("..", false),
        ("a/b", false),
        ("a:b", false),
        ("a b", false),
        ("fifteen-chars-x", true),
        ("sixteen-chars-xx", false),
    ] {
        assert_eq!(validate_ifname(name).is_ok(), ok, "{name:?}");
    }
}

#[test]
fn cni_args() {
    assert_eq!(parse_cni_args("").unwrap(), vec![]);
    let args =
        parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;").unwrap();
    assert_eq!(args.len(), 3);
    assert_eq!(args[2], ("K8S_POD_NAME".to_owned(), "web-0".to_owned()));
    assert_eq!(parse_cni_args("A=b=c").unwrap()[0].1, "b=c");
    for bad in ["novalue", "A=1;junk", "=x"] {
        assert_eq!(
            parse_cni_args(bad).unwrap_err().code,
            code::INVALID_ENV,
            "{bad}"
        );
    }
}

#[test]
fn netconf_decoding_and_version_negotiation() {
    let table: [(&str, Result<&str, u32>); 9] = [
        (
            r#"{"cniVersion":"0.3.1","name":"cilium","type":"cilium-cni"}"#,
            Ok("0.3.1"),
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":"cilium-cni","mtu":1450}"#,
            Ok("1.0.0"),
        ),
        (
            r#"{"cniVersion":"1.1.0","cniVersions":["0.4.0","1.0.0","1.1.0","2.0.0"],"name":"n","type":"cilium-cni"}"#,
            Ok("1.1.0"),
        ),
        (
            r#"{"cniVersion":"1.0.0","cniVersions":["0.2.0","0.4.0"],"name":"n","type":"cilium-cni"}"#,
            Ok("0.4.0"),
        ),
        (
            r#"{"cniVersion":"0.2.0","name":"n","type":"cilium-cni"}"#,
            Err(code::INCOMPATIBLE_VERSION),
        ),
        (
            r#"{"cniVersion":"9.9.9","name":"n","type":"cilium-cni"}"#,
            Err(code::INCOMPATIBLE_VERSION),
        ),
        (
            r#"{"name":"n","type":"cilium-cni"}"#,
            Err(code::INVALID_NETCONF),
        ),
        (
            r#"{"cniVersion":"1.0.0","name":"n","type":""}"#,
            Err(code::INVALID_NETCONF),
        ),
        (r#"{"cniVersion":"1.0.0","#, Err(code::DECODE)),
    ];
    for (input, want) in table {
        let got = NetConf::parse(input.as_bytes()).and_then(|c| c.negotiate());
        match (got, want) {
            (Ok(v), Ok(w)) => assert_eq!(v, w, "{input}"),
            (Err(e), Err(c)) => assert_eq!(e.code, c, "{input}: {e}"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn unknown_netconf_fields_and_prev_result_pass_through() {
    let conf = NetConf::parse(
        br#"{"cniVersion":"1.0.0","name":"n","type":"cilium-cni","enable-debug":true,"custom":{"a":1},"prevResult":{"cniVersion":"1.0.0","ips":[]}}"#,
    )
    .unwrap();
    assert!(conf.enable_debug);
    assert_eq!(conf.extra["custom"], json!({"a": 1}));
    assert_eq!(conf.prev_result.as_ref().unwrap()["ips"], json!([]));
}

fn sample() -> CniResult {
    CniResult {
        interfaces: vec![Interface {
            name: "eth0".into(),
            mac: "02:00:00:00:00:0a".into(),
            mtu: Some(1500),
            sandbox: Some("/var/run/netns/p".into()),
        }],
        ips: vec![IpConfig {
            address: "172.20.0.10/32".parse().unwrap(),
            gateway: Some("172.20.0.254".parse().unwrap()),
            interface: Some(0),
        }],
        routes: vec![
            Route {
                dst: "172.20.0.254/32".parse().unwrap(),
                gw: None,
                mtu: None,
            },
            Route {
                dst: "0.0.0.0/0".parse().unwrap(),
                gw: Some("172.20.0.254".parse().unwrap()),
                mtu: Some(1500),
            },
        ],
    }
}

#[test]
fn results_in_each_version_layout() {
    let r = sample();
    assert_eq!(
        r.to_json("1.1.0"),
        json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:0a", "mtu": 1500, "sandbox": "/var/run/netns/p"}],
            "ips": [{"address": "172.20.0.10/32", "gateway": "172.20.0.254", "interface": 0}],
            "routes": [{"dst": "172.20.0.254/32"}, {"dst": "0.0.0.0/0", "gw": "172.20.0.254", "mtu": 1500}],
            "dns": {}
        })
    );
    let old = r.to_json("0.3.1");
    assert_eq!(old["ips"][0]["version"], "4");
    assert!(old["interfaces"][0].get("mtu").is_none());
    assert!(old["routes"][1].get("mtu").is_none());
    assert!(r.to_json("1.0.0")["ips"][0].get("version").is_none());
}

#[test]
fn errors_and_version_output() {
    let e = CniError::new(code::TRY_AGAIN_LATER, "agent busy");
    assert_eq!(
        e.to_json("1.1.0"),
        json!({"cniVersion": "1.1.0", "code": 11, "msg": "agent busy"})
    );
    let e = e.with_details("retry");
    assert_eq!(e.to_json("0.3.1")["details"], "retry");
    assert_eq!(
        version_json(),
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
}

#[test]
fn host_veth_names_follow_cilium() {
    // sha256("<id>:<ifname>"), first 12 hex digits (computed independently with Python's
    // hashlib).
    assert_eq!(host_veth_name("abc123", "eth0"), "lxcc69fce2d2430");
    assert_eq!(host_veth_name("9f8e7d6c5b4a", "eth0"), "lxc44c69de027b8");
    assert_eq!(host_veth_name("abc123", "net1"), "lxcf98c5dc07232");
    assert_eq!(host_veth_name("x", "eth0").len(), 15);
}

#[test]
fn check_expects_the_endpoint_address_and_prev_result_ones_of_its_interface() {
    use crate::plugin::expected_addresses;
    let ep = json!({"status": {"networking": {"addressing": [{"ipv4": "172.20.1.5"}]}}});
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
    // No prevResult (libcni had nothing cached): the endpoint's address.
    assert_eq!(expected_addresses(None, "eth0", &ep), [ip("172.20.1.5")]);
    // A chain's result: the host veth, the pod's eth0, bandwidth's IFB device. Only the
    // addresses of the sandbox interface named CNI_IFNAME are this plugin's; duplicates
    // of the endpoint's are listed once.
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [
            {"name": "lxcfebd2fc0b876"},
            {"name": "eth0", "sandbox": "/run/netns/p"},
            {"name": "bwp7746f26fa673"},
            {"name": "net1", "sandbox": "/run/netns/p"},
        ],
        "ips": [
            {"address": "172.20.1.5/32", "gateway": "172.20.1.1", "interface": 1},
            {"address": "10.9.0.7/24", "interface": 1},
            {"address": "10.8.0.1/24", "interface": 0},
            {"address": "10.7.0.1/24", "interface": 2},
            {"address": "10.6.0.2/24", "interface": 3},
            {"address": "10.5.0.2/24"},
            {"address": "fd00::5/128", "interface": 1},
            {"address": "10.4.0.2/24", "interface": 9},
        ],
    });
    assert_eq!(
        expected_addresses(Some(&prev), "eth0", &ep),
        [ip("172.20.1.5"), ip("10.9.0.7")]
    );
    assert_eq!(
        expected_addresses(Some(&prev), "net1", &json!({})),
        [ip("10.6.0.2")]
    );
}

#[test]
fn gc_removes_the_endpoints_of_attachments_not_listed() {
    use crate::plugin::{StaleEndpoint, stale_endpoints, valid_attachments};
    let conf = |extra: &str| {
        NetConf::parse(
            format!(r#"{{"cniVersion":"1.1.0","name":"cilium","type":"cilium-cni"{extra}}}"#)
                .as_bytes(),
        )
        .unwrap()
    };
    let pair = |c: &str, i: &str| (c.to_owned(), i.to_owned());
    // As libcni sends it (both names), the spec's name alone, the earlier name alone.
    let listed = r#"[{"containerID":"c1","ifname":"eth0"},{"containerID":"c2","ifname":"net1"}]"#;
    for extra in [
        format!(r#","cni.dev/valid-attachments":{listed},"cni.dev/attachments":{listed}"#),
        format!(r#","cni.dev/valid-attachments":{listed}"#),
        format!(r#","cni.dev/attachments":{listed}"#),
    ] {
        assert_eq!(
            valid_attachments(&conf(&extra)),
            [pair("c1", "eth0"), pair("c2", "net1")],
            "{extra}"
        );
    }
    // The spec's name wins; none at all (`cnitool gc`): nothing is valid.
    assert_eq!(
        valid_attachments(&conf(&format!(
            r#","cni.dev/valid-attachments":[],"cni.dev/attachments":{listed}"#
        ))),
        []
    );
    assert_eq!(valid_attachments(&conf("")), []);

    let ep = |id: u64, container: &str, ifname: &str| {
        json!({"id": id, "status": {
            "external-identifiers": {"container-id": container},
            "networking": {"container-interface-name": ifname, "interface-name": format!("lxc{id}")},
        }})
    };
    let endpoints = json!([
        ep(1, "c1", "eth0"),
        ep(2, "c2", "eth0"),
        ep(3, "c2", "net1"),
        ep(4, "", "eth0"),
        ep(5, "c3", "eth0"),
    ]);
    let stale = |id: u64, container: &str| StaleEndpoint {
        id,
        container_id: container.to_owned(),
        host_interface: format!("lxc{id}"),
    };
    // c2's eth0 is not listed (only its net1 is); endpoint 4 was not made by a CNI ADD.
    assert_eq!(
        stale_endpoints(&[pair("c1", "eth0"), pair("c2", "net1")], &endpoints),
        [stale(2, "c2"), stale(5, "c3")]
    );
    assert_eq!(
        stale_endpoints(&[], &endpoints),
        [
            stale(1, "c1"),
            stale(2, "c2"),
            stale(3, "c2"),
            stale(5, "c3")
        ]
    );
    assert_eq!(stale_endpoints(&[], &json!(null)), []);
}
