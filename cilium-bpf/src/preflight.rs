// SPDX-License-Identifier: Apache-2.0

//! Kernel preflight: can this machine run the datapath, and which advanced features does
//! it offer? [`Preflight::run`] reads the kernel version and configuration, looks for the
//! BPF and cgroup2 mounts, and really probes the kernel: it loads a minimal program of each
//! type the datapath uses, creates each map type, and tests each helper it calls. Nothing
//! fails hard: what is missing is reported with the reason.

use std::fmt::{self, Write as _};
use std::io::Read;
use std::path::{Path, PathBuf};

use aya::maps::MapType;
use aya::programs::ProgramType;
use aya::sys::{BpfHelper, is_helper_supported, is_map_supported, is_program_supported};
use serde::Serialize;

/// A kernel release, parsed from `uname -r`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KernelVersion {
    /// The full release string (`6.18.44-fc-v657`).
    pub release: String,
    /// Major, minor, patch.
    pub version: (u32, u32, u32),
}

impl KernelVersion {
    /// Parses a release string such as `6.8.0-53-generic`.
    pub fn parse(release: &str) -> Option<Self> {
        let mut nums = release
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().ok());
        let major = nums.next()??;
        let minor = nums.next()??;
        let patch = nums.next().flatten().unwrap_or(0);
        Some(KernelVersion {
            release: release.to_owned(),
            version: (major, minor, patch),
        })
    }

    /// Whether this kernel is at least `major.minor`.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        (self.version.0, self.version.1) >= (major, minor)
    }
}

/// The state of one `CONFIG_*` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigState {
    /// `=y`.
    Builtin,
    /// `=m`.
    Module,
    /// `# ... is not set`, or absent from a configuration that was read.
    NotSet,
    /// No configuration could be read.
    Unknown,
}

impl ConfigState {
    /// Whether the option is built in or a module.
    pub fn enabled(self) -> bool {
        matches!(self, ConfigState::Builtin | ConfigState::Module)
    }
}

/// One checked `CONFIG_*` option.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigCheck {
    /// The option (`CONFIG_BPF`).
    pub option: &'static str,
    /// Its state.
    pub state: ConfigState,
    /// What needs it (as the seed groups them).
    pub needed_for: &'static str,
}

/// The options the seed checks, with what needs them.
const CONFIG_OPTIONS: &[(&str, &str)] = &[
    ("CONFIG_BPF", "base requirements"),
    ("CONFIG_BPF_SYSCALL", "base requirements"),
    ("CONFIG_BPF_JIT", "base requirements"),
    ("CONFIG_NET_CLS_BPF", "base requirements"),
    ("CONFIG_NET_CLS_ACT", "base requirements"),
    ("CONFIG_NET_SCH_INGRESS", "base requirements"),
    ("CONFIG_CRYPTO_SHA1", "base requirements"),
    ("CONFIG_CRYPTO_USER_API_HASH", "base requirements"),
    ("CONFIG_CGROUPS", "base requirements"),
    ("CONFIG_CGROUP_BPF", "base requirements"),
    ("CONFIG_PERF_EVENTS", "base requirements"),
    ("CONFIG_SCHEDSTATS", "base requirements"),
    ("CONFIG_VXLAN", "tunneling"),
    ("CONFIG_GENEVE", "tunneling"),
    ("CONFIG_FIB_RULES", "routing"),
    ("CONFIG_NETFILTER_XT_TARGET_TPROXY", "L7 and FQDN policies"),
    ("CONFIG_NETFILTER_XT_TARGET_MARK", "L7 and FQDN policies"),
    ("CONFIG_NETFILTER_XT_TARGET_CT", "L7 and FQDN policies"),
    ("CONFIG_NETFILTER_XT_MATCH_MARK", "L7 and FQDN policies"),
    ("CONFIG_NETFILTER_XT_MATCH_SOCKET", "L7 and FQDN policies"),
    (
        "CONFIG_NETFILTER_XT_SET",
        "iptables masquerading (not needed with BPF masquerade)",
    ),
    (
        "CONFIG_IP_SET",
        "iptables masquerading (not needed with BPF masquerade)",
    ),
    (
        "CONFIG_IP_SET_HASH_IP",
        "iptables masquerading (not needed with BPF masquerade)",
    ),
    (
        "CONFIG_NETFILTER_XT_MATCH_COMMENT",
        "iptables masquerading (not needed with BPF masquerade)",
    ),
    ("CONFIG_NETKIT", "netkit device mode"),
    ("CONFIG_WIREGUARD", "WireGuard encryption"),
    (
        "CONFIG_KPROBES",
        "kprobe-based tooling (not used by the datapath)",
    ),
];

/// A kernel facility probed for real.
#[derive(Debug, Clone, Serialize)]
pub struct Probe {
    /// `program`, `map` or `helper`.
    pub kind: &'static str,
    /// What was probed (`sched_cls`, `lpm_trie`, `bpf_redirect_peer (tc)`).
    pub name: String,
    /// Whether the kernel offers it.
    pub available: bool,
    /// An error that prevented a verdict, if any.
    pub error: Option<String>,
}

/// One of the seed's advanced features.
#[derive(Debug, Clone, Serialize)]
pub struct Feature {
    /// The feature, as the seed names it.
    pub name: &'static str,
    /// Minimum kernel (`major.minor`), if the feature has one.
    pub min_kernel: Option<&'static str>,
    /// Whether this machine offers it.
    pub available: bool,
    /// Why (what was checked, or what is missing).
    pub reason: String,
}

/// Where the needed file systems are mounted.
#[derive(Debug, Clone, Serialize)]
pub struct Mounts {
    /// A BPF file system, if one is mounted (the agent mounts one otherwise).
    pub bpffs: Option<PathBuf>,
    /// The cgroup v2 hierarchy.
    pub cgroup2: Option<PathBuf>,
}

/// The full preflight report.
#[derive(Debug, Clone, Serialize)]
pub struct Preflight {
    /// The running kernel.
    pub kernel: Option<KernelVersion>,
    /// Where the configuration was read from.
    pub config_source: Option<PathBuf>,
    /// The options checked.
    pub config: Vec<ConfigCheck>,
    /// Mounts.
    pub mounts: Mounts,
    /// Real probes.
    pub probes: Vec<Probe>,
    /// The seed's feature table.
    pub features: Vec<Feature>,
}

/// Reads the kernel configuration: `/proc/config.gz`, else `/boot/config-<release>`.
pub fn read_kernel_config(release: Option<&str>) -> Option<(PathBuf, String)> {
    let gz = Path::new("/proc/config.gz");
    if let Ok(file) = std::fs::File::open(gz) {
        let mut text = String::new();
        if flate2::read::GzDecoder::new(file)
            .read_to_string(&mut text)
            .is_ok()
        {
            return Some((gz.to_path_buf(), text));
        }
    }
    let boot = PathBuf::from(format!("/boot/config-{}", release?));
    std::fs::read_to_string(&boot).ok().map(|t| (boot, t))
}

/// The state of `option` in a configuration text.
pub fn config_state(config: &str, option: &str) -> ConfigState {
    for line in config.lines() {
        if let Some(v) = line.strip_prefix(option).and_then(|r| r.strip_prefix('=')) {
            return match v.trim() {
                "y" => ConfigState::Builtin,
                "m" => ConfigState::Module,
                _ => ConfigState::NotSet,
            };
        }
    }
    ConfigState::NotSet
}

/// Finds the mount point of a file system type in `/proc/self/mounts` text.
pub fn find_mount(mounts: &str, fstype: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let (_dev, dir, ty) = (f.next()?, f.next()?, f.next()?);
        (ty == fstype).then(|| PathBuf::from(dir))
    })
}

fn release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .ok()
        .map(|s| s.trim().to_owned())
}

fn probe_program(name: &str, t: ProgramType) -> Probe {
    let r = is_program_supported(t);
    Probe {
        kind: "program",
        name: name.to_owned(),
        available: matches!(r, Ok(true)),
        error: r.err().map(|e| e.to_string()),
    }
}

fn probe_map(name: &str, t: MapType) -> Probe {
    let r = is_map_supported(t);
    Probe {
        kind: "map",
        name: name.to_owned(),
        available: matches!(r, Ok(true)),
        error: r.err().map(|e| e.to_string()),
    }
}

fn probe_helper(name: &str, hook: &str, t: ProgramType, h: BpfHelper) -> Probe {
    let r = is_helper_supported(t, h);
    Probe {
        kind: "helper",
        name: format!("{name} ({hook})"),
        available: matches!(r, Ok(true)),
        error: r.err().map(|e| e.to_string()),
    }
}

impl Preflight {
    /// Runs every check. Needs CAP_BPF (and CAP_NET_ADMIN) for the probes to succeed;
    /// without them probes report unavailable with the error.
    pub fn run() -> Self {
        let kernel = release().as_deref().and_then(KernelVersion::parse);
        let cfg = read_kernel_config(kernel.as_ref().map(|k| k.release.as_str()));
        let config = CONFIG_OPTIONS
            .iter()
            .map(|(option, needed_for)| ConfigCheck {
                option,
                state: cfg
                    .as_ref()
                    .map_or(ConfigState::Unknown, |(_, text)| config_state(text, option)),
                needed_for,
            })
            .collect::<Vec<_>>();
        let mounts_text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mounts = Mounts {
            bpffs: find_mount(&mounts_text, "bpf"),
            cgroup2: find_mount(&mounts_text, "cgroup2"),
        };
        use ProgramType as P;
        let tc = P::SchedClassifier;
        let probes = vec![
            probe_program("sched_cls", tc),
            probe_program("xdp", P::Xdp),
            probe_program("cgroup_sock_addr", P::CgroupSockAddr),
            probe_program("cgroup_skb", P::CgroupSkb),
            probe_map("hash", MapType::Hash),
            probe_map("lru_hash", MapType::LruHash),
            probe_map("percpu_hash", MapType::PerCpuHash),
            probe_map("lpm_trie", MapType::LpmTrie),
            probe_map("array", MapType::Array),
            probe_map("ringbuf", MapType::RingBuf),
            probe_map("hash_of_maps", MapType::HashOfMaps),
            probe_map("perf_event_array", MapType::PerfEventArray),
            probe_helper("bpf_redirect", "tc", tc, BpfHelper::BPF_FUNC_redirect),
            probe_helper(
                "bpf_redirect_peer",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_redirect_peer,
            ),
            probe_helper(
                "bpf_redirect_neigh",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_redirect_neigh,
            ),
            probe_helper("bpf_fib_lookup", "tc", tc, BpfHelper::BPF_FUNC_fib_lookup),
            probe_helper(
                "bpf_ringbuf_reserve",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_ringbuf_reserve,
            ),
            probe_helper(
                "bpf_get_prandom_u32",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_get_prandom_u32,
            ),
            probe_helper(
                "bpf_l3_csum_replace",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_l3_csum_replace,
            ),
            probe_helper(
                "bpf_l4_csum_replace",
                "tc",
                tc,
                BpfHelper::BPF_FUNC_l4_csum_replace,
            ),
            probe_helper("bpf_sk_assign", "tc", tc, BpfHelper::BPF_FUNC_sk_assign),
            probe_helper(
                "bpf_get_netns_cookie",
                "cgroup/connect4",
                P::CgroupSockAddr,
                BpfHelper::BPF_FUNC_get_netns_cookie,
            ),
            probe_helper(
                "bpf_get_socket_cookie",
                "cgroup/connect4",
                P::CgroupSockAddr,
                BpfHelper::BPF_FUNC_get_socket_cookie,
            ),
        ];
        let mut report = Preflight {
            kernel,
            config_source: cfg.map(|(p, _)| p),
            config,
            mounts,
            probes,
            features: Vec::new(),
        };
        report.features = report.compute_features();
        report
    }

    fn config_enabled(&self, option: &str) -> Option<bool> {
        self.config
            .iter()
            .find(|c| c.option == option)
            .and_then(|c| (c.state != ConfigState::Unknown).then(|| c.state.enabled()))
    }

    fn probe_ok(&self, name: &str) -> bool {
        self.probes.iter().any(|p| p.name == name && p.available)
    }

    fn compute_features(&self) -> Vec<Feature> {
        let k = self.kernel.as_ref();
        let version_ok = |maj, min| k.is_some_and(|k| k.at_least(maj, min));
        let arch = std::env::consts::ARCH;
        let mut out = Vec::new();
        let mut add = |name, min_kernel: Option<&'static str>, checks: Vec<(bool, String)>| {
            let failed: Vec<String> = checks
                .iter()
                .filter(|(ok, _)| !ok)
                .map(|(_, why)| why.clone())
                .collect();
            let reason = if failed.is_empty() {
                checks
                    .into_iter()
                    .map(|(_, why)| why)
                    .collect::<Vec<_>>()
                    .join("; ")
            } else {
                failed.join("; ")
            };
            out.push(Feature {
                name,
                min_kernel,
                available: failed.is_empty(),
                reason,
            });
        };
        let kernel_check = |maj: u32, min: u32| {
            let ok = version_ok(maj, min);
            let have = k.map_or("unknown".to_owned(), |k| {
                format!("{}.{}", k.version.0, k.version.1)
            });
            (
                ok,
                if ok {
                    format!("kernel {have} >= {maj}.{min}")
                } else {
                    format!("kernel {have} < {maj}.{min}")
                },
            )
        };
        let config_check = |opt: &str| match self.config_enabled(opt) {
            Some(true) => (true, format!("{opt} enabled")),
            Some(false) => (false, format!("{opt} is not set")),
            None => (
                false,
                format!("{opt} unknown (no kernel configuration found)"),
            ),
        };
        let probe_check = |name: &str| {
            let ok = self.probe_ok(name);
            (
                ok,
                if ok {
                    format!("{name} available")
                } else {
                    format!("{name} not available")
                },
            )
        };
        add(
            "WireGuard Transparent Encryption",
            Some("5.6"),
            vec![kernel_check(5, 6), config_check("CONFIG_WIREGUARD")],
        );
        add(
            "Full support for Session Affinity",
            Some("5.7"),
            vec![
                kernel_check(5, 7),
                probe_check("bpf_get_netns_cookie (cgroup/connect4)"),
            ],
        );
        add(
            "BPF-based proxy redirection",
            Some("5.7"),
            vec![kernel_check(5, 7), probe_check("bpf_sk_assign (tc)")],
        );
        add(
            "Socket-level LB bypass in pod netns",
            Some("5.7"),
            vec![
                kernel_check(5, 7),
                probe_check("bpf_get_netns_cookie (cgroup/connect4)"),
            ],
        );
        add("L3 devices", Some("5.8"), vec![kernel_check(5, 8)]);
        add(
            "BPF-based host routing",
            Some("5.10"),
            vec![
                kernel_check(5, 10),
                probe_check("bpf_redirect_neigh (tc)"),
                probe_check("bpf_redirect_peer (tc)"),
            ],
        );
        let multicast = if arch == "aarch64" {
            (6, 0, "6.0")
        } else {
            (5, 10, "5.10")
        };
        add(
            if arch == "aarch64" {
                "Multicast Support in Cilium (Beta) (AArch64)"
            } else {
                "Multicast Support in Cilium (Beta) (AMD64)"
            },
            Some(multicast.2),
            vec![kernel_check(multicast.0, multicast.1)],
        );
        add(
            "IPv6 BIG TCP support",
            Some("5.19"),
            vec![kernel_check(5, 19)],
        );
        add(
            "IPv4 BIG TCP support",
            Some("6.3"),
            vec![kernel_check(6, 3)],
        );
        add(
            "Netkit device mode",
            Some("6.7"),
            vec![kernel_check(6, 7), config_check("CONFIG_NETKIT")],
        );
        add("VXLAN tunneling", None, vec![config_check("CONFIG_VXLAN")]);
        add(
            "Geneve tunneling",
            None,
            vec![config_check("CONFIG_GENEVE")],
        );
        add("kprobes", None, vec![config_check("CONFIG_KPROBES")]);
        out
    }

    /// Whether the datapath itself can run: BPF and the BPF syscall (when the configuration
    /// is readable), and the program and map types and helpers it uses, probed for real.
    /// Other base requirements the seed lists (CRYPTO_USER_API_HASH, SCHEDSTATS) serve
    /// features this datapath does not use yet; they are reported, not required.
    pub fn datapath_ready(&self) -> bool {
        let base = ["CONFIG_BPF", "CONFIG_BPF_SYSCALL"]
            .iter()
            .all(|o| self.config_enabled(o) != Some(false));
        let needed = [
            "sched_cls",
            "hash",
            "lru_hash",
            "percpu_hash",
            "lpm_trie",
            "ringbuf",
            "bpf_redirect (tc)",
            "bpf_redirect_peer (tc)",
            "bpf_ringbuf_reserve (tc)",
        ];
        base && needed.iter().all(|n| self.probe_ok(n))
    }
}

/// The human-readable report, in the spirit of the seed's checks.
impl fmt::Display for Preflight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = String::new();
        match &self.kernel {
            Some(k) => writeln!(
                s,
                "Kernel:   {} ({}.{}.{})",
                k.release, k.version.0, k.version.1, k.version.2
            )?,
            None => writeln!(s, "Kernel:   unknown")?,
        }
        writeln!(
            s,
            "Config:   {}",
            self.config_source.as_ref().map_or(
                "not found (/proc/config.gz, /boot/config-*)".to_owned(),
                |p| p.display().to_string()
            )
        )?;
        for c in &self.config {
            let v = match c.state {
                ConfigState::Builtin => "y",
                ConfigState::Module => "m",
                ConfigState::NotSet => "not set",
                ConfigState::Unknown => "unknown",
            };
            writeln!(s, "  {:<36} {:<8} {}", c.option, v, c.needed_for)?;
        }
        writeln!(s, "Mounts:")?;
        let show = |p: &Option<PathBuf>, missing: &str| {
            p.as_ref()
                .map_or(missing.to_owned(), |p| p.display().to_string())
        };
        writeln!(
            s,
            "  {:<36} {}",
            "bpffs",
            show(&self.mounts.bpffs, "not mounted (the agent mounts it)")
        )?;
        writeln!(
            s,
            "  {:<36} {}",
            "cgroup2",
            show(&self.mounts.cgroup2, "not mounted")
        )?;
        writeln!(s, "Probes:")?;
        for p in &self.probes {
            let v = if p.available { "ok" } else { "unavailable" };
            let err = p
                .error
                .as_deref()
                .map(|e| format!(" ({e})"))
                .unwrap_or_default();
            writeln!(s, "  {:<8} {:<40} {v}{err}", p.kind, p.name)?;
        }
        writeln!(s, "Features:")?;
        writeln!(
            s,
            "  {:<46} {:<11} {:<10} WHY",
            "FEATURE", "MIN KERNEL", "AVAILABLE"
        )?;
        for ft in &self.features {
            writeln!(
                s,
                "  {:<46} {:<11} {:<10} {}",
                ft.name,
                ft.min_kernel.map_or("-".to_owned(), |k| format!(">= {k}")),
                if ft.available { "yes" } else { "no" },
                ft.reason
            )?;
        }
        writeln!(
            s,
            "Datapath: {}",
            if self.datapath_ready() {
                "ready"
            } else {
                "NOT ready"
            }
        )?;
        f.write_str(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        let k = KernelVersion::parse("6.8.0-53-generic").unwrap();
        assert_eq!(k.version, (6, 8, 0));
        assert!(k.at_least(5, 10) && k.at_least(6, 8) && !k.at_least(6, 9));
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v657").unwrap().version,
            (6, 18, 44)
        );
        assert_eq!(KernelVersion::parse("5.4").unwrap().version, (5, 4, 0));
        assert!(KernelVersion::parse("garbage").is_none());
    }

    #[test]
    fn reads_config_lines() {
        let cfg = "CONFIG_BPF=y\nCONFIG_NET_SCH_INGRESS=m\n# CONFIG_NETKIT is not set\nCONFIG_BPF_JIT_ALWAYS_ON=y\n";
        assert_eq!(config_state(cfg, "CONFIG_BPF"), ConfigState::Builtin);
        assert_eq!(
            config_state(cfg, "CONFIG_NET_SCH_INGRESS"),
            ConfigState::Module
        );
        assert_eq!(config_state(cfg, "CONFIG_NETKIT"), ConfigState::NotSet);
        assert_eq!(config_state(cfg, "CONFIG_BPF_JIT"), ConfigState::NotSet);
    }

    #[test]
    fn finds_mounts() {
        let m = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\nbpf /sys/fs/bpf bpf rw 0 0\n";
        assert_eq!(find_mount(m, "bpf").unwrap(), PathBuf::from("/sys/fs/bpf"));
        assert_eq!(
            find_mount(m, "cgroup2").unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert!(find_mount(m, "tracefs").is_none());
    }

    #[test]
    fn report_never_panics() {
        // Without privileges the probes report errors; the report still renders.
        let r = Preflight::run();
        let text = r.to_string();
        assert!(text.contains("Features:"));
        assert_eq!(r.features.len(), 13);
    }
}
