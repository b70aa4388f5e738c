// SPDX-License-Identifier: Apache-2.0

//! Pod creation as a container runtime feels it, and the agent's memory.
//!
//! - `ours`: the cilium-cni binary, run the way a runtime runs it (CNI environment, netconf
//!   on stdin, a pod netns that already exists), against a cilium-agent in a node namespace
//!   with its datapath loaded. The wall time of ADD is the time to a ready endpoint: the
//!   plugin returns after `PUT /v1/endpoint` answers, which happens once the endpoint is
//!   ready. 100 pods one after another, then 100 more 20 at a time.
//! - `baseline`: the same pod plumbing as a shell-script CNI does it with iproute2 (veth
//!   into the pod, address, routes, links up: seven `ip` runs), no agent, no identity, no
//!   datapath. Same counts, same concurrency.
//! - The agent's resident memory (VmRSS) when empty, with 100 and 200 endpoints, and after
//!   1000 services of two backends each (through `PUT /v1/service`).
//!
//! `cargo bench` (`--bench`) runs the full sizes on release binaries (`cargo xtask bench`
//! builds them); `cargo test` runs a small smoke pass on the debug binaries so the bench
//! itself is tested. Binaries come from `$CRS_BIN_DIR`, else the profile directory this
//! bench runs from (`target/release` as a bench, `target/debug` as a test). Needs root;
//! prints "skipped: ..." otherwise. Everything lives in namespaces, a bpffs and a state dir
//! named `crsp<pid>…`, removed on drop.

mod common;

use std::time::{Duration, Instant};

use cilium_bpf::testing::{is_root_or_skip, run};
use common::{Lab, cni_add, in_waves, report};

/// The baseline: a shell-script CNI's plumbing for pod `i` (addresses in 10.99.0.0/16).
fn plumb(lab: &Lab, i: usize) -> std::thread::JoinHandle<Duration> {
    let node = lab.node.clone();
    let pod = lab.pod_ns(i);
    std::thread::spawn(move || {
        let host = format!("bl{i}");
        let ip = format!("10.99.{}.{}", i / 250, 1 + i % 250);
        let start = Instant::now();
        for args in [
            vec![
                "-n", &node, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns",
                &pod,
            ],
            vec![
                "-n",
                &pod,
                "addr",
                "add",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ],
            vec!["-n", &pod, "link", "set", "eth0", "up"],
            vec![
                "-n",
                &pod,
                "route",
                "add",
                "10.99.255.254/32",
                "dev",
                "eth0",
            ],
            vec![
                "-n",
                &pod,
                "route",
                "add",
                "default",
                "via",
                "10.99.255.254",
                "dev",
                "eth0",
            ],
            vec!["-n", &node, "link", "set", &host, "up"],
            vec![
                "-n",
                &node,
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                &host,
            ],
        ] {
            let mut all = vec!["ip"];
            all.extend(args.iter().map(|s| &**s));
            run(&all);
        }
        start.elapsed()
    })
}

fn service_spec(i: usize, pods: usize) -> serde_json::Value {
    let vip = std::net::Ipv4Addr::from(0x0a60_0000u32 + 1 + i as u32);
    let backend =
        |n: usize| serde_json::json!({"ip": format!("172.20.0.{}", 2 + n % 200), "port": 8080});
    serde_json::json!({
        "frontend-address": {"ip": vip.to_string(), "port": 80, "protocol": "TCP"},
        "backend-addresses": [backend(i % pods), backend((i + 1) % pods)],
        "flags": {"type": "ClusterIP", "name": format!("svc-{i}"), "namespace": "default"},
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("pod_creation: benchmark");
        return;
    }
    if !is_root_or_skip("pod_creation") {
        return;
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (pods, width, services) = if full { (100, 20, 1000) } else { (4, 2, 10) };
    let Some(bins) = common::bins_dir("pod_creation", full, &["cilium-agent", "cilium-cni"]) else {
        return;
    };
    let mut lab = Lab::new("");
    lab.add_pod_namespaces(4 * pods);
    lab.start_agent(&bins, &["--ipv4-range=172.20.0.0/16".to_owned()]);
    let rss_empty = lab.agent_rss_kib();

    let ours_seq = in_waves(0, pods, 1, |i| cni_add(&lab, &bins, i));
    let rss_pods = lab.agent_rss_kib();
    let ours_par = in_waves(pods, pods, width, |i| cni_add(&lab, &bins, i));
    let rss_more = lab.agent_rss_kib();
    let base_seq = in_waves(2 * pods, pods, 1, |i| plumb(&lab, i));
    let base_par = in_waves(3 * pods, pods, width, |i| plumb(&lab, i));

    let client = lab.client();
    let eps = lab.api("GET", "/endpoint", None);
    let ready = eps.as_array().map_or(0, |a| {
        a.iter().filter(|e| e["status"]["state"] == "ready").count()
    });
    assert_eq!(ready, 2 * pods, "every ADD left a ready endpoint");
    let start = Instant::now();
    for i in 0..services {
        client
            .call("PUT", "/service/0", Some(&service_spec(i, 2 * pods)))
            .expect("create a service");
    }
    let programming = start.elapsed();
    let rss_services = lab.agent_rss_kib();
    let listed = client.call("GET", "/service", None).expect("services");
    assert_eq!(listed.as_array().map(Vec::len), Some(services));

    println!(
        "pod_creation: {pods} pods one after another, then {pods} {width} at a time ({} binaries)",
        if full { "release" } else { "debug" }
    );
    report("pod_creation", "sequential", &base_seq, &ours_seq);
    report(
        "pod_creation",
        &format!("{width} at a time"),
        &base_par,
        &ours_par,
    );
    println!(
        "pod_creation agent RSS: empty {:.1} MiB; {pods} endpoints {:.1} MiB; {} endpoints {:.1} MiB ({:.1} KiB per endpoint); +{services} services {:.1} MiB ({:.2} KiB per service)",
        rss_empty as f64 / 1024.0,
        rss_pods as f64 / 1024.0,
        2 * pods,
        rss_more as f64 / 1024.0,
        rss_more.saturating_sub(rss_empty) as f64 / (2 * pods) as f64,
        rss_services as f64 / 1024.0,
        rss_services.saturating_sub(rss_more) as f64 / services as f64,
    );
    println!(
        "pod_creation services: {services} PUT /v1/service in {:.1} ms ({:.2} ms each)",
        programming.as_secs_f64() * 1e3,
        programming.as_secs_f64() * 1e3 / services as f64
    );
}
