// SPDX-License-Identifier: Apache-2.0

//! Loading the datapath once per node, and attaching it to endpoints.
//!
//! [`Datapath::load`] loads `bpf_lxc.o` with the node's constants as `volatile const`
//! globals and its maps pinned under `<bpf-root>/tc/globals/` (existing pins are reused, so
//! a restarted agent keeps every map's contents). [`Datapath::attach_endpoint`] attaches the
//! already loaded `from_container` (tc ingress) and `to_container` (tc egress) to an
//! endpoint's host-side veth as TCX links, pinned under
//! `<bpf-root>/cilium/endpoints/<ifname>/`: the links outlive the process, and a new loader
//! atomically swaps its programs into existing links, so traffic never stops.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, ProgramError, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use crate::DatapathError;
use crate::maps::globals_dir;
use crate::objects;

const OBJECT: &str = "bpf_lxc";
const HOST_OBJECT: &str = "bpf_host";
/// The programs attached to the node's device, with their hooks.
const NETDEV_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("from_netdev", TcAttachType::Ingress),
    ("to_netdev", TcAttachType::Egress),
];
/// The program attached to the node's VXLAN device (tunnel mode).
const OVERLAY_PROGRAMS: [(&str, TcAttachType); 1] = [("from_overlay", TcAttachType::Ingress)];
/// The programs attached to an endpoint, with their hooks.
const ENDPOINT_PROGRAMS: [(&str, TcAttachType); 2] = [
    ("from_container", TcAttachType::Ingress),
    ("to_container", TcAttachType::Egress),
];

/// Node-wide settings compiled into the programs as constants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathConfig {
    /// Where the BPF file system is mounted (`/sys/fs/bpf`; the lab gives each node its own).
    pub bpf_root: PathBuf,
    /// The node's IP.
    pub node_ipv4: Ipv4Addr,
    /// The router IP (pods' gateway, on `cilium_host`).
    pub router_ipv4: Ipv4Addr,
    /// `ipv4-native-routing-cidr`.
    pub native_routing_cidr: Option<(Ipv4Addr, u8)>,
    /// Answer pods' ARP requests in BPF.
    pub arp_responder: bool,
    /// Seed of the Maglev flow hash: the second word of `bpf-lb-maglev-hash-seed`
    /// (`cilium_lb::maglev::MaglevSeed::jhash0`).
    pub maglev_hash_seed: u32,
    /// `routing-mode=tunnel`: the ifindex of the node's VXLAN device (collect-metadata
    /// mode, port 8472); 0 for native routing.
    pub tunnel_ifindex: u32,
    /// `monitor-aggregation`: 0 none, 1 lowest, 2 low, 3 medium, 4 maximum.
    pub monitor_aggregation: u8,
    /// `monitor-aggregation-interval`, in seconds.
    pub monitor_aggregation_interval: u32,
    /// `monitor-aggregation-flags` (TCP flag bits).
    pub monitor_aggregation_flags: u8,
    /// `bpf-conntrack-accounting`: packets and bytes per conntrack entry.
    pub conntrack_accounting: bool,
    /// `kube-proxy-replacement`: `from_netdev` serves NodePort.
    pub enable_nodeport: bool,
    /// `enable-bpf-masquerade`: `to_netdev` masquerades pod traffic leaving the cluster.
    pub enable_bpf_masquerade: bool,
    /// `service-no-backend-response: reject`: a packet for a service without backends is
    /// answered with an ICMP port unreachable (else dropped).
    pub service_no_backend_reject: bool,
}

impl DatapathConfig {
    /// Settings for a node, with the ARP responder on, no native-routing CIDR, no monitor
    /// aggregation (interval 5 s, flags SYN, FIN, RST), no conntrack accounting, NodePort
    /// and BPF masquerading on (they act only where the node-device programs are attached),
    /// packets for services without backends rejected.
    pub fn new(bpf_root: impl Into<PathBuf>, node_ipv4: Ipv4Addr, router_ipv4: Ipv4Addr) -> Self {
        DatapathConfig {
            bpf_root: bpf_root.into(),
            node_ipv4,
            router_ipv4,
            native_routing_cidr: None,
            arp_responder: true,
            maglev_hash_seed: cilium_lb::maglev::MaglevConfig::default().seed().jhash0,
            tunnel_ifindex: 0,
            monitor_aggregation: 0,
            monitor_aggregation_interval: 5,
            monitor_aggregation_flags: 0x07,
            conntrack_accounting: false,
            enable_nodeport: true,
            enable_bpf_masquerade: true,
            service_no_backend_reject: true,
        }
    }
}

/// Loads a BPF object built from this datapath's sources as the datapath loads its own:
/// maps pinned by name under `<bpf-root>/tc/globals/` (shared with a loaded [`Datapath`]),
/// and the node's settings in its `volatile const` globals. Programs are not loaded. For
/// harnesses that include the datapath's C (benchmarks); `object` names it in errors.
pub fn load_object(
    config: &DatapathConfig,
    object: &'static str,
    bytes: &[u8],
) -> Result<Ebpf, DatapathError> {
    let globals = globals_dir(&config.bpf_root);
    std::fs::create_dir_all(&globals).map_err(io_err("creating", &globals))?;
    let be = |ip: Ipv4Addr| u32::from_ne_bytes(ip.octets());
    let (cidr, cidr_len) = config
        .native_routing_cidr
        .map_or((0, 0), |(ip, len)| (be(ip), u32::from(len)));
    let node = be(config.node_ipv4);
    let router = be(config.router_ipv4);
    let arp = u32::from(config.arp_responder);
    let seed = config.maglev_hash_seed;
    let tunnel = config.tunnel_ifindex;
    let aggregation = u32::from(config.monitor_aggregation);
    let interval = config.monitor_aggregation_interval;
    let report_flags = u32::from(config.monitor_aggregation_flags);
    let accounting = u32::from(config.conntrack_accounting);
    let nodeport = u32::from(config.enable_nodeport);
    let masquerade = u32::from(config.enable_bpf_masquerade);
    let reject = u32::from(config.service_no_backend_reject);
    EbpfLoader::new()
        .default_map_pin_directory(&globals)
        .override_global("NODE_IPV4", &node, true)
        .override_global("ROUTER_IPV4", &router, true)
        .override_global("NATIVE_CIDR4", &cidr, true)
        .override_global("NATIVE_CIDR4_LEN", &cidr_len, true)
        .override_global("ENABLE_ARP_RESPONDER", &arp, true)
        .override_global("HASH_INIT4_SEED", &seed, true)
        .override_global("TUNNEL_IFINDEX", &tunnel, true)
        .override_global("MONITOR_AGGREGATION", &aggregation, true)
        .override_global("CT_REPORT_INTERVAL", &interval, true)
        .override_global("CT_REPORT_FLAGS", &report_flags, true)
        .override_global("CT_ACCOUNTING", &accounting, true)
        .override_global("ENABLE_NODEPORT", &nodeport, true)
        .override_global("ENABLE_BPF_MASQUERADE", &masquerade, true)
        .override_global("SERVICE_NO_BACKEND_REJECT", &reject, true)
        .load(bytes)
        .map_err(|source| DatapathError::LoadObject {
            object,
            source: Box::new(source),
        })
}

/// Whether [`Datapath::attach_endpoint`] made new links or took over existing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// The endpoint had no links: new ones were created and pinned.
    New,
    /// Links pinned by an earlier loader were atomically switched to this loader's programs.
    Replaced,
}

/// The loaded datapath of one node.
#[derive(Debug)]
pub struct Datapath {
    config: DatapathConfig,
    ebpf: Ebpf,
    host: Ebpf,
}

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

pub(crate) fn io_err(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> DatapathError {
    let path = path.to_path_buf();
    move |source| DatapathError::Io {
        action,
        path,
        source,
    }
}

/// Whether `path` is on a BPF file system.
pub fn is_bpffs(path: &Path) -> Result<bool, DatapathError> {
    Ok(fs_magic(path)? == BPF_FS_MAGIC)
}

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Whether `path` is on a cgroup v2 file system (a cgroup directory).
pub fn is_cgroup2(path: &Path) -> Result<bool, DatapathError> {
    Ok(fs_magic(path)? == CGROUP2_SUPER_MAGIC)
}

/// The magic number of the file system `path` is on.
fn fs_magic(path: &Path) -> Result<i64, DatapathError> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| DatapathError::Io {
        action: "checking the file system of",
        path: path.to_path_buf(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    // SAFETY: `statfs` is a plain C struct for which all-zero bytes are a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call, and `st` is a valid,
    // writable `statfs` the kernel fills in.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(io_err("checking the file system of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(st.f_type as i64)
}

impl Datapath {
    /// Loads the datapath: creates (or reuses) the pinned maps and loads the programs. Does
    /// not attach anything.
    pub fn load(config: DatapathConfig) -> Result<Self, DatapathError> {
        if !is_bpffs(&config.bpf_root)? {
            return Err(DatapathError::NotBpffs {
                path: config.bpf_root.clone(),
            });
        }
        let load = |object: &'static str, bytes: &[u8]| load_object(&config, object, bytes);
        let mut ebpf = load(OBJECT, objects::BPF_LXC)?;
        for (name, _) in ENDPOINT_PROGRAMS.iter().chain(&OVERLAY_PROGRAMS) {
            let prog = classifier(&mut ebpf, OBJECT, name)?;
            prog.load().map_err(|e| load_error(OBJECT, name, e))?;
        }
        let mut host = load(HOST_OBJECT, objects::BPF_HOST)?;
        for (name, _) in NETDEV_PROGRAMS {
            let prog = classifier(&mut host, HOST_OBJECT, name)?;
            prog.load().map_err(|e| load_error(HOST_OBJECT, name, e))?;
        }
        Ok(Datapath { config, ebpf, host })
    }

    /// The configuration.
    pub fn config(&self) -> &DatapathConfig {
        &self.config
    }

    fn links_dir(&self, ifname: &str) -> PathBuf {
        self.config
            .bpf_root
            .join("cilium")
            .join("endpoints")
            .join(ifname)
    }

    /// Attaches the endpoint programs to `ifname` (the endpoint's host-side veth, in the
    /// network namespace of the calling thread) and pins the links. Nothing is loaded or
    /// compiled: creating an endpoint stays cheap.
    pub fn attach_endpoint(&mut self, ifname: &str) -> Result<Attached, DatapathError> {
        let dir = self.links_dir(ifname);
        attach_pinned(&mut self.ebpf, OBJECT, &ENDPOINT_PROGRAMS, &dir, ifname)
    }

    /// Attaches `from_overlay` to the node's VXLAN device `ifname` (tunnel mode), pinned
    /// under `<bpf-root>/cilium/devices/<ifname>/`.
    pub fn attach_overlay(&mut self, ifname: &str) -> Result<Attached, DatapathError> {
        let dir = self
            .config
            .bpf_root
            .join("cilium")
            .join("devices")
            .join(ifname);
        attach_pinned(&mut self.ebpf, OBJECT, &OVERLAY_PROGRAMS, &dir, ifname)
    }

    /// Attaches `from_netdev` (NodePort, reverse masquerading) and `to_netdev`
    /// (masquerading) to the node's device `ifname`, pinned under
    /// `<bpf-root>/cilium/devices/<ifname>/`.
    pub fn attach_netdev(&mut self, ifname: &str) -> Result<Attached, DatapathError> {
        let dir = self
            .config
            .bpf_root
            .join("cilium")
            .join("devices")
            .join(ifname);
        attach_pinned(&mut self.host, HOST_OBJECT, &NETDEV_PROGRAMS, &dir, ifname)
    }

    /// Runs a datapath program (`from_container`, `to_container`, `from_netdev`,
    /// `to_netdev`) on a packet with `BPF_PROG_TEST_RUN`, `repeat` times, in the kernel. The
    /// packet's `skb->ifindex` is the loopback device's (1). Returns the program's verdict
    /// (`TC_ACT_*`) and the kernel-measured time per run.
    pub fn test_run(
        &mut self,
        program: &'static str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        self.test_run_on(program, packet, repeat, 0)
    }

    /// [`Datapath::test_run`] with the packet on interface `ifindex` (`skb->ifindex`; 0 for
    /// the loopback device's): an interface of the calling thread's network namespace (see
    /// [`crate::testing::TestLinks`]).
    pub fn test_run_on(
        &mut self,
        program: &'static str,
        packet: &[u8],
        repeat: u32,
        ifindex: u32,
    ) -> Result<TestRunOutcome, DatapathError> {
        let (ebpf, object) = if program.ends_with("netdev") {
            (&mut self.host, HOST_OBJECT)
        } else {
            (&mut self.ebpf, OBJECT)
        };
        let prog = classifier(ebpf, object, program)?;
        test_run_program_on(prog, program, packet, repeat, ifindex)
    }

    /// Detaches the endpoint programs from `ifname` and removes their pins. Returns false if
    /// nothing was attached.
    pub fn detach_endpoint(&mut self, ifname: &str) -> Result<bool, DatapathError> {
        detach_pinned(&self.config.bpf_root, ifname)
    }
}

/// Attaches `programs` of a loaded object to `ifname` as TCX links pinned in `dir`, or
/// swaps them into links an earlier loader pinned there. Each new TCX attachment waits for
/// an RCU grace period in the kernel while holding RTNL (about 12 ms on a 2-CPU VM with
/// HZ=250): it is the floor of an endpoint's creation time, and attachments of different
/// endpoints serialise on it. (Attaching both programs from two threads was measured: no
/// gain, RTNL serialises them. Legacy tc, clsact plus two filters, was measured slower:
/// about 35 ms per device.)
fn attach_pinned(
    ebpf: &mut Ebpf,
    object: &'static str,
    programs: &[(&'static str, TcAttachType)],
    dir: &Path,
    ifname: &str,
) -> Result<Attached, DatapathError> {
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let mut outcome = Attached::New;
    for &(name, hook) in programs {
        let prog = classifier(ebpf, object, name)?;
        if attach_one(prog, object, name, hook, dir, ifname)? {
            outcome = Attached::Replaced;
        }
    }
    Ok(outcome)
}

/// Attaches one program (or swaps it into its pinned link) and pins the link; returns
/// whether a pinned link was reused.
fn attach_one(
    prog: &mut SchedClassifier,
    object: &'static str,
    name: &'static str,
    hook: TcAttachType,
    dir: &Path,
    ifname: &str,
) -> Result<bool, DatapathError> {
    let pin = dir.join(name);
    let existing = if pin.exists() {
        let pinned = PinnedLink::from_pin(&pin).map_err(|e| DatapathError::Link {
            action: "opening pinned",
            path: pin.clone(),
            source: Box::new(e),
        })?;
        let link: SchedClassifierLink =
            FdLink::from(pinned)
                .try_into()
                .map_err(|e| DatapathError::Link {
                    action: "reusing",
                    path: pin.clone(),
                    source: Box::new(e),
                })?;
        Some(link)
    } else {
        None
    };
    let action = |verb: &str| format!("{verb} {ifname}");
    let replaced = existing.is_some();
    let id = match existing {
        Some(link) => prog.attach_to_link(link).map_err(|source| {
            program_err(object, action("swapping into the link on"), name, source)
        })?,
        None => prog
            .attach_with_options(
                ifname,
                hook,
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            )
            .map_err(|source| program_err(object, action("attaching to"), name, source))?,
    };
    let link = prog
        .take_link(id)
        .map_err(|source| program_err(object, action("taking the link on"), name, source))?;
    let fd_link: FdLink = link.try_into().map_err(|e| DatapathError::Link {
        action: "converting",
        path: pin.clone(),
        source: Box::new(e),
    })?;
    if pin.exists() {
        std::fs::remove_file(&pin).map_err(io_err("replacing", &pin))?;
    }
    fd_link.pin(&pin).map_err(|e| DatapathError::Link {
        action: "pinning",
        path: pin.clone(),
        source: Box::new(e),
    })?;
    Ok(replaced)
}

/// The result of [`Datapath::test_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (`TC_ACT_OK` 0, `TC_ACT_SHOT` 2, `TC_ACT_REDIRECT` 7).
    pub verdict: u32,
    /// Kernel-measured time per run.
    pub per_run: std::time::Duration,
}

/// Runs a loaded tc program with `BPF_PROG_TEST_RUN` (`skb->ifindex` 1, loopback).
pub fn test_run_program(
    prog: &SchedClassifier,
    name: &'static str,
    packet: &[u8],
    repeat: u32,
) -> Result<TestRunOutcome, DatapathError> {
    test_run_program_on(prog, name, packet, repeat, 0)
}

/// Offset of `ifindex` in `struct __sk_buff` (the test run's context).
const SKB_IFINDEX_OFFSET: usize = 40;

/// Runs a loaded tc program with `BPF_PROG_TEST_RUN` on a packet of interface `ifindex`
/// (`skb->ifindex`; 0: loopback's). The kernel takes the interface from the calling
/// thread's network namespace and refuses an index it does not find there.
pub fn test_run_program_on(
    prog: &SchedClassifier,
    name: &'static str,
    packet: &[u8],
    repeat: u32,
    ifindex: u32,
) -> Result<TestRunOutcome, DatapathError> {
    use aya::programs::TestRun;
    // The context up to and including `ifindex`; the kernel zero-fills the rest.
    let mut ctx = [0u8; SKB_IFINDEX_OFFSET + 4];
    ctx[SKB_IFINDEX_OFFSET..].copy_from_slice(&ifindex.to_ne_bytes());
    let opts = aya::programs::TestRunOptions {
        data_in: Some(packet),
        ctx_in: (ifindex != 0).then_some(&ctx[..]),
        repeat: repeat.max(1),
        ..Default::default()
    };
    let r = prog
        .test_run(opts)
        .map_err(|source| program_err(OBJECT, "test-running".to_owned(), name, source))?;
    Ok(TestRunOutcome {
        verdict: r.return_value,
        per_run: r.duration,
    })
}

/// Detaches an endpoint's pinned links (used by [`Datapath::detach_endpoint`] and by
/// cleanup tools that run without loading the programs).
pub fn detach_pinned(bpf_root: &Path, ifname: &str) -> Result<bool, DatapathError> {
    let dir = bpf_root.join("cilium").join("endpoints").join(ifname);
    if !dir.exists() {
        return Ok(false);
    }
    for (name, _) in ENDPOINT_PROGRAMS {
        let pin = dir.join(name);
        if !pin.exists() {
            continue;
        }
        let pinned = PinnedLink::from_pin(&pin).map_err(|e| DatapathError::Link {
            action: "opening pinned",
            path: pin.clone(),
            source: Box::new(e),
        })?;
        // Unpinning drops the last reference once the fd closes: the link detaches.
        let link = pinned.unpin().map_err(io_err("unpinning", &pin))?;
        drop(link);
    }
    std::fs::remove_dir(&dir).map_err(io_err("removing", &dir))?;
    Ok(true)
}

/// The name of every tc program cilium-rs attaches (as the kernel and `bpftool` show it):
/// a tcx program with one of these names on a device is this project's.
pub const TC_PROGRAMS: [&str; 5] = [
    ENDPOINT_PROGRAMS[0].0,
    ENDPOINT_PROGRAMS[1].0,
    NETDEV_PROGRAMS[0].0,
    NETDEV_PROGRAMS[1].0,
    OVERLAY_PROGRAMS[0].0,
];

/// The directory of this project's link pins: `<bpf-root>/cilium` (`endpoints/<ifname>/`
/// and `devices/<ifname>/` under it, one pin per attached program).
pub fn links_dir(bpf_root: &Path) -> PathBuf {
    bpf_root.join("cilium")
}

/// What kind of device a pinned link is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PinnedOn {
    /// An endpoint's host-side veth (`<bpf-root>/cilium/endpoints/<ifname>/`).
    Endpoint,
    /// A node device: its native device or VXLAN device (`<bpf-root>/cilium/devices/<ifname>/`).
    Device,
}

/// One link pinned under [`links_dir`]: a program attached to a device, kept attached by
/// the pin alone (the loader closes its own descriptor once the link is pinned).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PinnedAttachment {
    /// The kind of device.
    pub on: PinnedOn,
    /// The device's name.
    pub ifname: String,
    /// The program's name (the pin's file name).
    pub program: String,
    /// The pin.
    pub path: PathBuf,
}

/// Every link pinned under `<bpf-root>/cilium/{endpoints,devices}/<ifname>/`, sorted. A
/// missing directory is no pin.
pub fn pinned_attachments(bpf_root: &Path) -> Result<Vec<PinnedAttachment>, DatapathError> {
    let mut out = Vec::new();
    for (sub, on) in [
        ("endpoints", PinnedOn::Endpoint),
        ("devices", PinnedOn::Device),
    ] {
        let dir = links_dir(bpf_root).join(sub);
        for ifdir in read_dir_sorted(&dir)? {
            if !ifdir.is_dir() {
                continue;
            }
            let ifname = file_name(&ifdir);
            for pin in read_dir_sorted(&ifdir)? {
                out.push(PinnedAttachment {
                    on,
                    ifname: ifname.clone(),
                    program: file_name(&pin),
                    path: pin,
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The entries of a directory, sorted; none when it does not exist.
fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, DatapathError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("listing", dir)(e)),
    };
    let mut out = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io_err("listing", dir))?;
    out.sort();
    Ok(out)
}

/// Removes a pinned link: the program detaches from its device as the pin was the link's
/// last reference (a process still holding the link keeps it attached until it closes it).
/// A pin that is not a link is removed as a file. Returns false when the pin was gone.
pub fn remove_pinned_link(pin: &Path) -> Result<bool, DatapathError> {
    if std::fs::symlink_metadata(pin).is_err() {
        return Ok(false);
    }
    match PinnedLink::from_pin(pin) {
        Ok(pinned) => {
            let link = pinned.unpin().map_err(io_err("unpinning", pin))?;
            drop(link);
        }
        Err(_) => std::fs::remove_file(pin).map_err(io_err("removing", pin))?,
    }
    Ok(true)
}

/// A tc hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TcHook {
    /// Packets the device receives.
    Ingress,
    /// Packets the device sends.
    Egress,
}

impl std::fmt::Display for TcHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TcHook::Ingress => "ingress",
            TcHook::Egress => "egress",
        })
    }
}

/// A program attached to a device's tcx hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcxProgram {
    /// The hook.
    pub hook: TcHook,
    /// The kernel's program id.
    pub id: u32,
    /// The program's name (empty when the kernel reports none).
    pub name: String,
}

impl TcxProgram {
    /// Whether this is one of cilium-rs's programs ([`TC_PROGRAMS`]).
    pub fn is_cilium(&self) -> bool {
        TC_PROGRAMS.contains(&self.name.as_str())
    }
}

/// Every program attached to `ifname`'s tcx ingress and egress hooks, in the calling
/// thread's network namespace (whoever attached them). Needs a kernel with tcx (6.6).
pub fn tcx_programs(ifname: &str) -> Result<Vec<TcxProgram>, DatapathError> {
    let mut out = Vec::new();
    for (hook, attach) in [
        (TcHook::Ingress, TcAttachType::Ingress),
        (TcHook::Egress, TcAttachType::Egress),
    ] {
        let (_, infos) =
            SchedClassifier::query_tcx(ifname, attach).map_err(|e| DatapathError::Query {
                ifname: ifname.to_owned(),
                source: Box::new(e),
            })?;
        out.extend(infos.iter().map(|info| TcxProgram {
            hook,
            id: info.id(),
            name: info.name_as_str().unwrap_or_default().to_owned(),
        }));
    }
    Ok(out)
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    object: &'static str,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, DatapathError> {
    let prog = ebpf.program_mut(name).ok_or(DatapathError::Missing {
        object,
        kind: "program",
        name,
    })?;
    prog.try_into()
        .map_err(|source| program_err(object, "using".to_owned(), name, source))
}

fn program_err(
    object: &'static str,
    action: String,
    program: &'static str,
    source: ProgramError,
) -> DatapathError {
    DatapathError::Program {
        action,
        object,
        program,
        source: Box::new(source),
    }
}

fn load_error(object: &'static str, program: &'static str, e: ProgramError) -> DatapathError {
    match e {
        ProgramError::LoadError { verifier_log, .. } => DatapathError::Verifier {
            object,
            program,
            verifier_log: verifier_log.to_string(),
        },
        source => program_err(object, "loading".to_owned(), program, source),
    }
}

/// The socket LB programs, attached to one cgroup v2 directory (the agent's or a test's own
/// subtree, never the root). Their maps are the node's pinned service maps. Dropping this
/// detaches them.
#[derive(Debug)]
pub struct SocketLb {
    _ebpf: Ebpf,
    cgroup: PathBuf,
}

const SOCK_OBJECT: &str = "bpf_sock";
const SOCK_PROGRAMS: [&str; 4] = [
    "sock4_connect",
    "sock4_sendmsg",
    "sock4_recvmsg",
    "sock4_getpeername",
];

impl SocketLb {
    /// Loads `bpf_sock.o` against the maps pinned under `<bpf_root>/tc/globals/` and
    /// attaches its programs to `cgroup`.
    pub fn attach(bpf_root: &Path, cgroup: &Path) -> Result<Self, DatapathError> {
        use aya::programs::{CgroupAttachMode, CgroupSockAddr};
        if !is_bpffs(bpf_root)? {
            return Err(DatapathError::NotBpffs {
                path: bpf_root.to_path_buf(),
            });
        }
        if !cgroup.is_dir() || !is_cgroup2(cgroup)? {
            return Err(DatapathError::NotCgroup2 {
                path: cgroup.to_path_buf(),
            });
        }
        let globals = globals_dir(bpf_root);
        std::fs::create_dir_all(&globals).map_err(io_err("creating", &globals))?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&globals)
            .load(objects::BPF_SOCK)
            .map_err(|source| DatapathError::LoadObject {
                object: SOCK_OBJECT,
                source: Box::new(source),
            })?;
        let cg = std::fs::File::open(cgroup).map_err(io_err("opening cgroup", cgroup))?;
        for name in SOCK_PROGRAMS {
            let err = |action: &str, source| DatapathError::Program {
                action: format!("{action} {}", cgroup.display()),
                object: SOCK_OBJECT,
                program: name,
                source: Box::new(source),
            };
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or(DatapathError::Missing {
                    object: SOCK_OBJECT,
                    kind: "program",
                    name,
                })?
                .try_into()
                .map_err(|e| err("using for", e))?;
            prog.load().map_err(|e| match e {
                ProgramError::LoadError { verifier_log, .. } => DatapathError::Verifier {
                    object: SOCK_OBJECT,
                    program: name,
                    verifier_log: verifier_log.to_string(),
                },
                other => err("loading for", other),
            })?;
            prog.attach(&cg, CgroupAttachMode::Single)
                .map_err(|e| err("attaching to", e))?;
        }
        Ok(SocketLb {
            _ebpf: ebpf,
            cgroup: cgroup.to_path_buf(),
        })
    }

    /// The cgroup the programs are attached to.
    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }
}
