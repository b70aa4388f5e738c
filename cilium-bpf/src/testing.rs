// SPDX-License-Identifier: Apache-2.0

//! Helpers for tests and benchmarks: packets (`BPF_PROG_TEST_RUN` inputs), commands, and
//! threads inside network namespaces. The privileged tests of every crate use these, so a
//! test that needs root says "skipped: needs root" the same way everywhere.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::process::Command;

/// True when running as root; otherwise prints `<test>: skipped: needs root`.
pub fn is_root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("{test}: skipped: needs root");
    }
    root
}

/// Runs a command, panicking with its output when it fails; returns its stdout.
#[track_caller]
pub fn run(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace with interfaces of its own, for test runs of packets on a given interface
/// (`BPF_PROG_TEST_RUN` takes `skb->ifindex` only from an interface of the calling
/// thread's namespace: [`TestLinks::enter`]). Deleted on drop.
#[derive(Debug)]
pub struct TestLinks {
    /// The namespace (`/run/netns/<netns>`).
    pub netns: String,
    /// The interfaces' indexes, in creation order.
    pub ifindexes: Vec<u32>,
}

impl TestLinks {
    /// Creates namespace `netns` (a name of the caller's, with its project prefix) with
    /// `count` interfaces named `lxc0`, `lxc1`, ... (veths, each with a peer `lxc0p`, ...:
    /// kernels may lack the dummy driver).
    pub fn new(netns: &str, count: usize) -> Self {
        let _ = Command::new("ip").args(["netns", "del", netns]).output();
        run(&["ip", "netns", "add", netns]);
        let mut links = TestLinks {
            netns: netns.to_owned(),
            ifindexes: Vec::new(),
        };
        for i in 0..count {
            let name = format!("lxc{i}");
            let peer = format!("{name}p");
            run(&[
                "ip", "-n", netns, "link", "add", &name, "type", "veth", "peer", "name", &peer,
            ]);
            let out = run(&["ip", "-n", netns, "-o", "link", "show", "dev", &name]);
            let index = out
                .split(':')
                .next()
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no ifindex in {out:?}"));
            links.ifindexes.push(index);
        }
        links
    }

    /// Moves the calling thread into the namespace until the guard drops.
    pub fn enter(&self) -> NetnsGuard {
        let original = std::fs::File::open("/proc/thread-self/ns/net").expect("own netns");
        let path = format!("/run/netns/{}", self.netns);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: `file` is an open network namespace file that outlives the call; setns
        // only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        NetnsGuard { original }
    }
}

impl Drop for TestLinks {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
    }
}

/// The calling thread inside a [`TestLinks`] namespace; back in its own on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    original: std::fs::File,
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // SAFETY: `original` is the thread's former network namespace, open until here.
        let rc = unsafe { libc::setns(self.original.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            eprintln!(
                "returning to the original network namespace: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Starts `f` on a new thread that has entered the network namespace `/run/netns/<ns>`.
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: `file` is an open network namespace file that outlives the call; setns
        // only changes this thread's namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Starts a TCP echo server on `ip:port` inside `/run/netns/<ns>` (until the process
/// ends); returns the count of connections it accepted.
pub fn tcp_echo_server(
    ns: &str,
    ip: Ipv4Addr,
    port: u16,
) -> std::sync::Arc<std::sync::atomic::AtomicU32> {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU32, Ordering};
    let accepted = std::sync::Arc::new(AtomicU32::new(0));
    let count = accepted.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    spawn_in_netns(ns, move || {
        let listener = std::net::TcpListener::bind((ip, port)).expect("bind");
        tx.send(()).expect("ready");
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 || conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("echo server ready");
    accepted
}

/// Whether a TCP connection from inside `/run/netns/<ns>` to `to:port` gets its line
/// echoed back (1 s to connect, 2 s to answer).
pub fn tcp_echo_reaches(ns: &str, to: Ipv4Addr, port: u16) -> bool {
    use std::io::{Read, Write};
    spawn_in_netns(ns, move || {
        let addr = std::net::SocketAddr::from((to, port));
        let Ok(mut conn) =
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(1))
        else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(2)));
        let _ = conn.write_all(b"ping\n");
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).is_ok() && &buf == b"ping\n"
    })
    .join()
    .unwrap_or(false)
}

/// Runs `f` on a thread inside the network namespace `/run/netns/<ns>` and waits for it.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_netns(ns, f).join().expect("netns thread panicked")
}

/// Local endpoints for `BPF_PROG_TEST_RUN`, which runs programs with `skb->ifindex` 1
/// (loopback): endpoint `i` of `ips` sits behind ifindex 1 with id `10 + i`, identity
/// `300 + i` and MACs `02:00:00:00:00:(10+i)` (pod) and `02:00:00:00:01:(10+i)` (host side).
pub fn loopback_endpoints(
    maps: &mut crate::maps::Maps,
    ips: &[Ipv4Addr],
) -> Result<(), crate::DatapathError> {
    let at: Vec<(Ipv4Addr, u32)> = ips.iter().map(|ip| (*ip, 1)).collect();
    endpoints_at(maps, &at)
}

/// Local endpoints as [`loopback_endpoints`] writes them, each behind its own interface:
/// `(address, ifindex)` (the interfaces of a [`TestLinks`]).
pub fn endpoints_at(
    maps: &mut crate::maps::Maps,
    endpoints: &[(Ipv4Addr, u32)],
) -> Result<(), crate::DatapathError> {
    for (i, (ip, ifindex)) in endpoints.iter().enumerate() {
        let n = u8::try_from(i).unwrap_or(u8::MAX).saturating_add(10);
        let info = crate::types::EndpointInfo {
            ifindex: *ifindex,
            lxc_id: u16::from(n),
            mac: crate::types::mac_to_u64([2, 0, 0, 0, 0, n]),
            node_mac: crate::types::mac_to_u64([2, 0, 0, 0, 1, n]),
            sec_id: 290 + u32::from(n),
            ..crate::types::EndpointInfo::default()
        };
        maps.endpoints.upsert_ipv4(*ip, &info)?;
    }
    Ok(())
}

/// An Ethernet + IPv4 + TCP packet (no payload, IPv4 checksum set), as a pod would send it.
pub fn ipv4_tcp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut p = Vec::with_capacity(54);
    p.extend([0x02, 0, 0, 0, 0, 0x02]); // destination MAC
    p.extend([0x02, 0, 0, 0, 0, 0x01]); // source MAC
    p.extend(0x0800u16.to_be_bytes());
    let total_len: u16 = 20 + 20;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total_len.to_be_bytes());
    ip[8] = 64; // TTL
    ip[9] = 6; // TCP
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let csum = checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    p.extend(ip);
    let mut tcp = [0u8; 20];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = flags;
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    p.extend(tcp);
    p
}

/// An ARP request from `sender` for `target`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut p = Vec::with_capacity(42);
    p.extend([0xff; 6]);
    p.extend(sender_mac);
    p.extend(0x0806u16.to_be_bytes());
    p.extend([0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    p.extend(sender_mac);
    p.extend(sender.octets());
    p.extend([0; 6]);
    p.extend(target.octets());
    p
}

/// The Internet checksum of a header.
pub fn checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sets what one policy entry allowed in `cilium_policystats` under `bpf_root`: `value` on
/// every CPU. Returns the number of CPUs (the sums a reader gets are `value` times it).
pub fn set_policy_stats(
    bpf_root: &std::path::Path,
    key: crate::types::PolicyStatsKey,
    value: crate::types::PolicyStatsValue,
) -> Result<usize, String> {
    use aya::maps::{Map, MapData, PerCpuHashMap, PerCpuValues};
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e.to_string())?;
    let path = crate::maps::globals_dir(bpf_root).join(crate::maps::names::POLICY_STATS);
    let data = MapData::from_pin(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let map = Map::from_map_data(data).map_err(|e| e.to_string())?;
    let mut stats: PerCpuHashMap<
        MapData,
        crate::types::PolicyStatsKey,
        crate::types::PolicyStatsValue,
    > = PerCpuHashMap::try_from(map).map_err(|e| e.to_string())?;
    let values = PerCpuValues::try_from(vec![value; cpus]).map_err(|e| e.to_string())?;
    stats.insert(key, values, 0).map_err(|e| e.to_string())?;
    Ok(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_checksum_verifies() {
        let p = ipv4_tcp_packet(
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            1,
            2,
            2,
        );
        assert_eq!(p.len(), 54);
        assert_eq!(checksum(&p[14..34]), 0);
        assert_eq!(
            arp_request([2; 6], Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).len(),
            42
        );
    }
}
