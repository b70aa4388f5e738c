// SPDX-License-Identifier: Apache-2.0

//! Per-packet cost of the datapath, measured in the kernel with BPF_PROG_TEST_RUN.
//!
//! - `datapath_from_container_local`: `from_container` on a TCP SYN between two local
//!   endpoints (parse, two endpoint lookups, MAC rewrite, TTL, trace event, counters,
//!   redirect_peer). `baseline` is a program that only returns TC_ACT_OK, run in the same
//!   process on the same packet.
//!
//! Needs root (CAP_BPF and a private bpffs); otherwise prints "skipped: needs root". Each
//! figure is the median over 7 rounds of the mean kernel-measured time of 20,000 single
//! runs (a run changes the packet, TTL included, so runs cannot be repeated in place).

use std::net::Ipv4Addr;
use std::process::Command;

use cilium_bpf::maps::Maps;
use cilium_bpf::testing::ipv4_tcp_packet;
use cilium_bpf::types::{EndpointInfo, mac_to_u64};
use cilium_bpf::{Datapath, DatapathConfig};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir(&self.0);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("datapath_from_container_local: benchmark");
        return;
    }
    if unsafe_free_euid() != 0 {
        println!("datapath_from_container_local: skipped: needs root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("crs{}-bench-bpffs", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ok = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "mounting bpffs at {}", dir.display());
    let _mount = Mount(dir.clone());

    let mut dp = Datapath::load(DatapathConfig::new(
        &dir,
        Ipv4Addr::new(192, 168, 10, 100),
        Ipv4Addr::new(10, 0, 0, 254),
    ))
    .expect("load datapath");
    let mut maps = Maps::open(&dir).expect("maps");
    let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    for (i, ip) in [a, b].into_iter().enumerate() {
        let info = EndpointInfo {
            ifindex: 1,
            lxc_id: 10 + i as u16,
            mac: mac_to_u64([2, 0, 0, 0, 0, 10 + i as u8]),
            node_mac: mac_to_u64([2, 0, 0, 0, 1, 10 + i as u8]),
            sec_id: 300 + i as u32,
            ..EndpointInfo::default()
        };
        maps.endpoints.upsert_ipv4(ip, &info).expect("insert");
    }
    let packet = ipv4_tcp_packet(a, b, 40000, 80, 0x02);

    let mut bench = aya::Ebpf::load(cilium_bpf::objects::BPF_BENCH).expect("load bench object");
    let pass: &mut aya::programs::SchedClassifier = bench
        .program_mut("bench_pass")
        .expect("bench_pass")
        .try_into()
        .expect("classifier");
    pass.load().expect("load bench_pass");

    const RUNS: u32 = 20_000;
    let mut ours = Vec::new();
    let mut base = Vec::new();
    for _ in 0..7 {
        let (mut o, mut b) = (0u128, 0u128);
        for _ in 0..RUNS {
            let r = dp.test_run("from_container", &packet, 1).expect("test run");
            assert_eq!(r.verdict, 7, "local delivery redirects");
            o += r.per_run.as_nanos();
            let r = cilium_bpf::loader::test_run_program(pass, "bench_pass", &packet, 1)
                .expect("test run");
            b += r.per_run.as_nanos();
        }
        ours.push(o as f64 / f64::from(RUNS));
        base.push(b as f64 / f64::from(RUNS));
    }
    let (o, b) = (median(ours), median(base));
    println!("datapath_from_container_local/baseline  {b:>8.1} ns/packet (pass program)");
    println!("datapath_from_container_local/ours      {o:>8.1} ns/packet");
    println!(
        "datapath_from_container_local ratio     {:>8.2}x the pass program",
        o / b.max(1.0)
    );
}

fn unsafe_free_euid() -> u32 {
    // Reads the effective uid from /proc instead of calling geteuid, keeping this bench
    // free of unsafe code.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(u32::MAX)
}
