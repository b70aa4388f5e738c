// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg bpf ...` against a real datapath: maps pinned in a private bpffs (no network
//! change anywhere), a ClusterIP written through cilium-lb, an ipcache entry, and the
//! binary's tables and JSON checked. Needs root; the bpffs is unmounted on drop.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use cilium_bpf::types::RemoteEndpointInfo;
use cilium_bpf::{Datapath, DatapathConfig};
use support::run_dbg;

struct BpfFs(PathBuf);

impl BpfFs {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("crs{}-dbg-bpffs", std::process::id()));
        std::fs::create_dir_all(&path).expect("dir");
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "mount bpffs at {}", path.display());
        BpfFs(path)
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Upstream's cilium-dbg reading the same maps: it knows only `/sys/fs/bpf`, so it runs in
/// a mount namespace of its own where the test's bpffs is bound there (nothing changes
/// outside it). `None` when upstream's binary is not built (see `upstream_client`).
fn upstream_dbg(root: &BpfFs, api: &Path, args: &[&str]) -> Option<(bool, String, String)> {
    let binary = cilium_k8s::testing::upstream_client("cilium-dbg")?;
    let host = format!("unix://{}", api.display());
    // Upstream takes the first bpf filesystem it finds mounted: every other one (a lab's,
    // another test's) is unmounted in this private mount namespace, nowhere else.
    let script = "mount --bind \"$0\" /sys/fs/bpf && \
        for m in $(awk '$3 == \"bpf\" && $2 != \"/sys/fs/bpf\" {print $2}' /proc/mounts); do \
        umount -l \"$m\"; done && exec \"$@\"";
    let mut all: Vec<&std::ffi::OsStr> = vec![
        "--mount".as_ref(),
        "--propagation".as_ref(),
        "private".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        script.as_ref(),
        root.0.as_os_str(),
        binary.as_os_str(),
        "-H".as_ref(),
        host.as_ref(),
    ];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    Some(support::run_binary("unshare".as_ref(), &all))
}

fn dbg(root: &BpfFs, args: &[&str]) -> (bool, String, String) {
    let mut all = vec![std::ffi::OsStr::new("--bpf-root"), root.0.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    run_dbg(&all)
}

#[test]
fn privileged_bpf_views_show_what_the_datapath_holds() {
    if !is_root() {
        eprintln!("privileged_bpf_views_show_what_the_datapath_holds: skipped: needs root");
        return;
    }
    let fs = BpfFs::new();
    // No maps yet: one clear line, non-zero exit.
    let (ok, out, err) = dbg(&fs, &["bpf", "lb", "list"]);
    assert!(
        !ok && out.is_empty() && err.starts_with("Error: cannot open the datapath maps"),
        "{err}"
    );

    let _dp = Datapath::load(DatapathConfig::new(
        &fs.0,
        Ipv4Addr::new(192, 168, 10, 100),
        Ipv4Addr::new(172, 20, 0, 254),
    ))
    .expect("load datapath");
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let svc = cilium_lb::service::Service::new(
        "default/webpod",
        cilium_lb::service::L3n4Addr::new(vip.into(), 80, cilium_lb::maglev::L4Proto::Tcp),
        cilium_lb::service::ServiceType::ClusterIP,
    )
    .with_backend(cilium_lb::service::Backend::new(
        cilium_lb::service::L3n4Addr::new(
            Ipv4Addr::new(172, 20, 0, 11).into(),
            8080,
            cilium_lb::maglev::L4Proto::Tcp,
        ),
    ));
    let mut lb = cilium_lb::manager::LbManager::new(cilium_lb::manager::LbConfig::default());
    cilium_bpf::lb::ServiceWriter::open(&fs.0)
        .expect("writer")
        .apply(&lb.upsert(&svc).expect("upsert"))
        .expect("apply");
    let mut maps = cilium_bpf::maps::Maps::open(&fs.0).expect("maps");
    maps.ipcache
        .upsert_ipv4(
            Ipv4Addr::new(172, 20, 1, 10),
            32,
            &RemoteEndpointInfo {
                sec_identity: 256,
                tunnel_endpoint: [192, 168, 10, 101, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ..RemoteEndpointInfo::default()
            },
        )
        .expect("ipcache");

    let (ok, out, _) = dbg(&fs, &["bpf", "lb", "list"]);
    assert!(ok);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "SERVICE ADDRESS         BACKEND ADDRESS (REVNAT_ID) (SLOT)",
            "10.96.0.10:80/TCP (0)   0.0.0.0:0 (1) (0) [ClusterIP, non-routable]",
            "10.96.0.10:80/TCP (1)   172.20.0.11:8080/TCP (1) (1)",
        ],
        "{out}"
    );
    let (_, out, _) = dbg(&fs, &["bpf", "lb", "list", "--backends"]);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("1    TCP://172.20.0.11")),
        "{out}"
    );
    let (_, out, _) = dbg(&fs, &["bpf", "lb", "list", "--revnat"]);
    assert!(out.contains("10.96.0.10:80"), "{out}");
    let (_, out, _) = dbg(&fs, &["bpf", "lb", "list", "-o", "json"]);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        json["10.96.0.10:80/TCP (1)"][0],
        "172.20.0.11:8080/TCP (1) (1)"
    );

    let (_, out, _) = dbg(&fs, &["bpf", "ipcache", "list"]);
    assert!(
        out.contains("172.20.1.10/32      identity=256 encryptkey=0 tunnelendpoint=192.168.10.101 flags=<none>"),
        "{out}"
    );
    // Policy: nothing for endpoint 7, then an allow from identity 300 on TCP 80-81 and a
    // deny of UDP from anyone.
    let (ok, out, _) = dbg(&fs, &["bpf", "policy", "get", "7"]);
    assert!(ok && out.starts_with("Policy stats empty"), "{out}");
    let mut policy = cilium_policy::EndpointPolicy {
        ingress_enforced: true,
        egress_enforced: false,
        ..Default::default()
    };
    let key = |peer: u32, proto: u8, lo: u16, hi: u16| cilium_policy::PolicyKey {
        direction: cilium_policy::Direction::Ingress,
        peer: cilium_core::NumericIdentity::new(peer),
        ports: cilium_policy::PortRange { proto, lo, hi },
    };
    policy
        .entries
        .insert(key(300, 6, 80, 81), cilium_policy::Verdict::Allow);
    policy
        .entries
        .insert(key(0, 17, 0, u16::MAX), cilium_policy::Verdict::Deny);
    cilium_bpf::policy::PolicyWriter::open(&fs.0, false)
        .expect("policy writer")
        .install(7, &policy)
        .expect("install");
    let (ok, out, _) = dbg(&fs, &["bpf", "policy", "get", "7", "-n"]);
    let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
    assert!(ok);
    assert_eq!(
        lines,
        [
            "POLICY   DIRECTION   IDENTITY   PORT/PROTO   PROXY PORT   AUTH TYPE   BYTES   PACKETS   PREFIX",
            "Deny     Ingress     0          UDP          NONE         disabled    -       -         8",
            "Allow    Egress      0          ANY          NONE         disabled    -       -         0",
            "Allow    Ingress     300        80-81/TCP    NONE         disabled    -       -         23",
        ],
        "{out}"
    );
    // Preflight probes the kernel for real: this one runs the datapath, so it passes.
    let (ok, out, _) = dbg(&fs, &["preflight", "-o", "json"]);
    assert!(ok, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(report["kernel"]["release"].is_string(), "{report}");
    let (ok, out, _) = dbg(&fs, &["bpf", "ct", "list", "global"]);
    assert!(ok && out.is_empty(), "no flows yet: {out}");
    let (ok, _, err) = dbg(&fs, &["bpf", "ct", "list", "local"]);
    assert!(!ok && err.contains("global"), "{err}");

    upstream_reads_the_same_maps(&fs);
}

/// Sorted lines without trailing blanks: upstream walks hash maps in the kernel's order.
fn sorted_lines(out: &str) -> Vec<String> {
    let mut lines: Vec<String> = out
        .lines()
        .map(|l| l.trim_end().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort();
    lines
}

/// Upstream's cilium-dbg decodes the maps the test filled (the service, the ipcache entry,
/// endpoint 7's policy) and a conntrack and a NAT entry written here, with Cilium's own
/// map types: a size or layout that differs from Cilium's fails its decoding. It asks an
/// agent API for the node's addressing and clock source, so one runs on a socket too.
fn upstream_reads_the_same_maps(fs: &BpfFs) {
    let api_dir = std::env::temp_dir().join(format!("crs{}-dbg-api", std::process::id()));
    let socket = api_dir.join("cilium.sock");
    let agent = cilium_agent::Agent::new(
        cilium_core::config::AgentConfig::from_sources(
            &cilium_core::config::ConfigSources::default(),
        )
        .unwrap(),
    );
    let _api = cilium_agent::BackgroundApi::start(agent, &socket).expect("serve");
    let Some(_) = upstream_dbg(fs, &socket, &["version"]) else {
        let _ = std::fs::remove_dir_all(&api_dir);
        return;
    };

    let mut maps = cilium_bpf::maps::Maps::open(&fs.0).expect("maps");
    // 172.20.0.10:43210 -> 172.20.0.11:8080, stored as conntrack stores it (the address
    // fields reversed, as Cilium's).
    let tuple = cilium_bpf::types::Ipv4CtTuple {
        daddr: [172, 20, 0, 10],
        saddr: [172, 20, 0, 11],
        dport: 8080u16.to_be(),
        sport: 43210u16.to_be(),
        nexthdr: 6,
        flags: 0,
    };
    maps.ct4_tcp
        .insert(
            &tuple,
            &cilium_bpf::types::CtEntry {
                packets: 3,
                bytes: 180,
                lifetime: 21600,
                rev_nat_index: 1u16.to_be(),
                tx_flags_seen: 0x02,
                src_sec_id: 256,
                ..Default::default()
            },
        )
        .expect("ct entry");
    let nat_tuple = cilium_bpf::types::Ipv4CtTuple {
        daddr: [192, 168, 10, 1],
        saddr: [172, 20, 0, 10],
        dport: 80u16.to_be(),
        sport: 43210u16.to_be(),
        nexthdr: 6,
        flags: 0,
    };
    maps.snat4
        .insert(
            &nat_tuple,
            &cilium_bpf::types::Ipv4NatEntry {
                created: 1,
                to_addr: [192, 168, 10, 100],
                to_port: 43210u16.to_be(),
                ..Default::default()
            },
        )
        .expect("nat entry");

    let theirs = |args: &[&str]| {
        let (ok, out, err) = upstream_dbg(fs, &socket, args).expect("built");
        assert!(ok, "upstream {args:?}: {err}\n{out}");
        out
    };
    // The same rows as this project's cilium-dbg prints, in any order.
    for args in [
        &["bpf", "lb", "list"][..],
        &["bpf", "lb", "list", "--backends"],
        &["bpf", "lb", "list", "--revnat"],
        &["bpf", "ipcache", "list"],
    ] {
        let (ok, ours, _) = dbg(fs, args);
        assert!(ok, "{args:?}");
        assert_eq!(sorted_lines(&theirs(args)), sorted_lines(&ours), "{args:?}");
    }
    // Endpoint 7's policy map, pinned under Cilium's name, with what its entries allowed
    // from `cilium_policystats` (written here for one entry: 3 packets of 60 bytes on each
    // CPU): upstream reads the same entries and sums the same counters.
    assert!(cilium_bpf::policy::endpoint_pin(&fs.0, 7).exists());
    let allow = cilium_bpf::policy::read_endpoint_policy(&fs.0, 7)
        .expect("policy")
        .expect("endpoint 7")
        .into_iter()
        .find(|e| e.identity == 300)
        .expect("the allow entry");
    let cpus = cilium_bpf::testing::set_policy_stats(
        &fs.0,
        allow.stats_key(7),
        cilium_bpf::types::PolicyStatsValue {
            packets: 3,
            bytes: 180,
        },
    )
    .expect("stats");
    let ours = {
        let (ok, out, _) = dbg(fs, &["bpf", "policy", "get", "7", "-n"]);
        assert!(ok, "{out}");
        out
    };
    let total = 3 * cpus;
    assert!(
        ours.lines().any(|l| l.contains("80-81/TCP")
            && l.contains(&format!(" {} ", 60 * total))
            && l.contains(&format!(" {total} "))),
        "{ours}"
    );
    assert_eq!(
        sorted_lines(&theirs(&["bpf", "policy", "get", "7", "-n"])),
        sorted_lines(&ours)
    );
    // Conntrack and NAT: the entries written above, read with Cilium's key order (the
    // conntrack tuple's addresses reversed, NAT's not) and printed alike.
    let ct = theirs(&["bpf", "ct", "list", "global"]);
    assert!(
        ct.contains(
            "TCP OUT 172.20.0.10:43210 -> 172.20.0.11:8080 expires=21600 Packets=3 Bytes=180"
        ),
        "{ct}"
    );
    let (_, ours, _) = dbg(fs, &["bpf", "ct", "list", "global"]);
    assert_eq!(sorted_lines(&ct), sorted_lines(&ours));
    let nat = theirs(&["bpf", "nat", "list"]);
    let (_, ours, _) = dbg(fs, &["bpf", "nat", "list"]);
    assert_eq!(sorted_lines(&nat), sorted_lines(&ours));
    assert!(
        nat.contains("TCP OUT 172.20.0.10:43210 -> 192.168.10.1:80 XLATE_SRC 192.168.10.100:43210"),
        "{nat}"
    );
    let _ = std::fs::remove_dir_all(&api_dir);
}
