// SPDX-License-Identifier: Apache-2.0

//! `cargo xtask fresh-check`: proves that `scripts/deps.sh` is all a fresh machine needs.
//!
//! A minimal Debian root (`debootstrap --variant=minbase`, from the Debian archive this
//! machine's apt uses) is kept under the cache directory. Each run starts from a pristine
//! copy of it (an overlay whose upper layer is thrown away afterwards), copies the tracked
//! files of the checkout into it, runs `scripts/deps.sh` there as root, then builds every
//! target of the workspace, the demo's binaries, the fuzz targets and the Kubernetes control
//! plane (`cargo xtask kube-build`) with the host's Rust and Go toolchains (bind-mounted
//! read-only) and, with `--test` / `--demo`, runs README's commands.
//!
//! Everything is mounted by a child in its own mount and PID namespaces: when it ends, even
//! killed, its mounts and every process it started go with it, and nothing is left mounted
//! on the host (checked after each run).
//!
//! Caches kept between runs: the base root, apt's downloaded packages, cargo's registry and
//! the cargo target directory; Go's module and build caches are the host's (see below). The target directory is
//! keyed by a fingerprint of the root's installed packages and the toolchains, so a build
//! that a missing package would break is never hidden by outputs of an earlier, complete
//! install (a build script that ran with `libprotobuf-dev` present would not run again).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

/// The command line of `cargo xtask fresh-check`.
#[derive(Debug, Default)]
struct Options {
    /// Cache directory (base root, caches, the per-run overlay).
    dir: Option<PathBuf>,
    /// Also run README's test command inside the root.
    test: bool,
    /// Also run README's demo command inside the root.
    demo: bool,
    /// Keep the run's overlay (the root as deps.sh left it) for inspection.
    keep: bool,
    /// Make the base root again.
    rebuild_base: bool,
}

const USAGE: &str =
    "usage: cargo xtask fresh-check [--dir DIR] [--test] [--demo] [--keep] [--rebuild-base]";

/// Where the check keeps its root and caches unless `--dir` says otherwise.
fn default_dir() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"));
    cache.join("cilium-rs").join("fresh-check")
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--dir" => {
                let d = it
                    .next()
                    .ok_or_else(|| format!("--dir needs a value\n{USAGE}"))?;
                o.dir = Some(PathBuf::from(d));
            }
            "--test" => o.test = true,
            "--demo" => o.demo = true,
            "--keep" => o.keep = true,
            "--rebuild-base" => o.rebuild_base = true,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// One Debian archive entry of the host's apt configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AptSource {
    /// The archive's URI (`http://deb.debian.org/debian`).
    pub(crate) uri: String,
    /// Its suites (`bookworm`, `bookworm-updates`).
    pub(crate) suites: Vec<String>,
    /// Its components (`main`).
    pub(crate) components: Vec<String>,
}

impl AptSource {
    /// The entry as one-line `sources.list` lines (one suite a line).
    fn lines(&self) -> String {
        self.suites
            .iter()
            .map(|suite| format!("deb {} {suite} {}\n", self.uri, self.components.join(" ")))
            .collect()
    }
}

/// Debian's own archives among apt source entries, in deb822 (`.sources`) or one-line
/// (`.list`) form. Entries of other vendors (their keys are not in a fresh root), `deb-src`
/// entries and disabled ones are left out; one-line entries with several suites do not
/// exist, so each line is one suite.
pub(crate) fn parse_apt_sources(text: &str, deb822: bool) -> Vec<AptSource> {
    let mut out = Vec::new();
    if deb822 {
        for stanza in text.split("\n\n") {
            let mut types = Vec::new();
            let (mut uris, mut suites, mut comps) = (Vec::new(), Vec::new(), Vec::new());
            let mut enabled = true;
            for line in stanza.lines() {
                let line = line.trim();
                if line.starts_with('#') {
                    continue;
                }
                let Some((key, value)) = line.split_once(':') else {
                    continue;
                };
                let words = || value.split_whitespace().map(str::to_owned);
                match key.trim().to_ascii_lowercase().as_str() {
                    "types" => types = words().collect(),
                    "uris" => uris = words().collect(),
                    "suites" => suites = words().collect(),
                    "components" => comps = words().collect(),
                    "enabled" => enabled = !value.trim().eq_ignore_ascii_case("no"),
                    _ => {}
                }
            }
            if !enabled || !types.iter().any(|t| t == "deb") || suites.is_empty() {
                continue;
            }
            for uri in uris.into_iter().filter(|u| is_debian_archive(u)) {
                out.push(AptSource {
                    uri,
                    suites: suites.clone(),
                    components: comps.clone(),
                });
            }
        }
    } else {
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("").trim();
            let mut words = line.split_whitespace();
            if words.next() != Some("deb") {
                continue;
            }
            // Options in brackets (`[signed-by=... arch=amd64]`) come before the URI.
            let mut rest: Vec<&str> = words.collect();
            if rest.first().is_some_and(|w| w.starts_with('[')) {
                let end = rest.iter().position(|w| w.ends_with(']')).unwrap_or(0);
                rest.drain(..=end);
            }
            if rest.len() < 2 || !is_debian_archive(rest[0]) {
                continue;
            }
            out.push(AptSource {
                uri: rest[0].to_owned(),
                suites: vec![rest[1].to_owned()],
                components: rest[2..].iter().map(|s| (*s).to_owned()).collect(),
            });
        }
    }
    out
}

/// Whether a URI is one of Debian's archives (signed by the keyring every Debian root has).
fn is_debian_archive(uri: &str) -> bool {
    let host = uri
        .split_once("://")
        .map_or(uri, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    host == "debian.org" || host.ends_with(".debian.org")
}

/// The host's Debian archives, from `/etc/apt/sources.list` and `sources.list.d/`.
fn host_apt_sources() -> Result<Vec<AptSource>, String> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir.filter_map(Result::ok).map(|e| e.path()).collect();
        more.sort();
        files.extend(more);
    }
    let mut out = Vec::new();
    for f in files {
        let ext = f.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext != "list" && ext != "sources" {
            continue;
        }
        if let Ok(text) = fs::read_to_string(&f) {
            out.extend(parse_apt_sources(&text, ext == "sources"));
        }
    }
    if out.is_empty() {
        return Err(
            "no Debian archive in /etc/apt/sources.list or sources.list.d/: the check \
             builds its root from the archive this machine's apt uses"
                .into(),
        );
    }
    Ok(out)
}

/// The archive and suite debootstrap starts from: the first entry whose suite is a release
/// (not `-updates`, `-security` or `-backports`).
fn base_suite(sources: &[AptSource]) -> Result<(String, String), String> {
    for s in sources {
        for suite in &s.suites {
            if !suite.contains('-') && !suite.contains('/') {
                return Ok((s.uri.clone(), suite.clone()));
            }
        }
    }
    Err("no release suite (such as bookworm) among the host's Debian archives".into())
}

/// Lines of a failed step that name what is missing (a file, a command, a package).
pub(crate) fn missing_lines(lines: &[String]) -> Vec<String> {
    const SIGNS: &[&str] = &[
        "not found",
        "No such file or directory",
        "cannot find",
        "Could not find",
        "could not find",
        "Unable to locate",
        "unable to find",
        "not installed",
        "failed to run custom build command",
    ];
    let mut out: Vec<String> = Vec::new();
    for l in lines {
        let t = l.trim();
        if SIGNS.iter().any(|s| t.contains(s)) && !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    out
}

/// A stable 64-bit key for a text (FNV-1a), for naming cache directories.
pub(crate) fn fingerprint(text: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn have(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{shown} failed ({status})"))
    }
}

fn output(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{shown} failed ({})", out.status));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{shown}: output is not UTF-8"))
}

/// Mount points under `dir` in this process's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect()
}

/// The directories of one cache.
#[derive(Debug)]
struct Layout {
    base: PathBuf,
    run: PathBuf,
    apt_archives: PathBuf,
    cargo_home: PathBuf,
    targets: PathBuf,
}

impl Layout {
    fn new(dir: &Path) -> Self {
        Self {
            base: dir.join("base"),
            run: dir.join("run"),
            apt_archives: dir.join("apt-archives"),
            cargo_home: dir.join("cargo-home"),
            targets: dir.join("targets"),
        }
    }

    fn upper(&self) -> PathBuf {
        self.run.join("upper")
    }

    fn merged(&self) -> PathBuf {
        self.run.join("merged")
    }
}

const BASE_MARKER: &str = ".cilium-rs-base";
/// Where the checkout is copied inside the root.
const SRC: &str = "/src/cilium-rs";
/// The cargo target directory inside the root.
const TARGET: &str = "/build/target";
/// The host's Rust toolchain inside the root.
const RUST: &str = "/opt/rust";
/// The host's CA bundle, and where the root gets a copy of it.
const HOST_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const HOST_CA: &str = "/etc/host-ca-certificates.crt";
/// How many target directories (one per fingerprint) are kept: each is about 15 GB.
const KEEP_TARGETS: usize = 1;

/// `cargo xtask fresh-check [...]`.
pub(crate) fn fresh_check(root: &Path, args: &[String]) -> Result<(), String> {
    let opts = parse_options(args)?;
    if !is_root() {
        return Err(
            "fresh-check needs root (debootstrap, chroot, mounts); run it with sudo".into(),
        );
    }
    for cmd in ["debootstrap", "unshare", "chroot", "mount", "tar", "git"] {
        if !have(cmd) {
            return Err(format!(
                "fresh-check needs `{cmd}` on the host (./scripts/deps.sh installs it)"
            ));
        }
    }
    let dir = opts.dir.clone().unwrap_or_else(default_dir);
    fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let l = Layout::new(&dir);
    for d in [&l.apt_archives, &l.cargo_home, &l.targets] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    let started = Instant::now();
    let sources = host_apt_sources()?;
    ensure_base(&l, &sources, opts.rebuild_base)?;
    prepare_run(root, &l, &sources)?;

    // The child does every mount in namespaces of its own (see the module doc).
    let exe = std::env::current_exe().map_err(|e| format!("finding xtask's binary: {e}"))?;
    let mut child = Command::new("unshare");
    child
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--propagation",
            "private",
            "--",
        ])
        // bash is PID 1: it reaps the processes tests daemonize (a zombie would still look
        // alive to a test waiting for a pid to go); a second command keeps it from exec'ing.
        .args(["/bin/bash", "-c", "\"$@\"; exit $?", "fresh-check-init"])
        .arg(&exe)
        .arg("fresh-check-inner")
        .arg(&dir);
    if opts.test {
        child.arg("--test");
    }
    if opts.demo {
        child.arg("--demo");
    }
    // The child's stdin is a pipe nobody writes to: it reads end of file when this process
    // ends, however it ends, and then ends too (taking its namespaces down).
    let result = child
        .stdin(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            // Child::wait closes the child's stdin: hold it until the child is done.
            let _held = c.stdin.take();
            c.wait()
        })
        .map_err(|e| format!("cannot run unshare: {e}"))
        .and_then(|s| {
            if s.success() {
                Ok(())
            } else {
                Err(format!("{s}"))
            }
        });

    let left = mounts_under(&dir);
    if !opts.keep {
        let _ = fs::remove_dir_all(&l.run);
    }
    if !left.is_empty() {
        return Err(format!("mounts left on the host: {left:?}"));
    }
    result.map_err(|_| {
        "fresh-check failed (see above: the step, and what it names as missing)".to_owned()
    })?;
    eprintln!(
        "fresh-check: a fresh Debian root with scripts/deps.sh builds everything ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Makes the base root with debootstrap unless a complete one is there.
fn ensure_base(l: &Layout, sources: &[AptSource], rebuild: bool) -> Result<(), String> {
    let (mirror, suite) = base_suite(sources)?;
    let want = format!("{suite} {mirror} minbase\n");
    let marker = l.base.join(BASE_MARKER);
    if !rebuild && fs::read_to_string(&marker).is_ok_and(|m| m == want) {
        return Ok(());
    }
    if l.base.exists() {
        fs::remove_dir_all(&l.base).map_err(|e| format!("removing {}: {e}", l.base.display()))?;
    }
    eprintln!("fresh-check: debootstrap --variant=minbase {suite} from {mirror}");
    let t = Instant::now();
    // In a mount namespace of its own: the /proc and /sys it mounts in the new root while
    // it installs go with it, even when it fails.
    run(Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "debootstrap"])
        .arg("--variant=minbase")
        .arg(format!("--cache-dir={}", l.apt_archives.display()))
        .arg(&suite)
        .arg(&l.base)
        .arg(&mirror))?;
    fs::write(&marker, want).map_err(|e| format!("writing {}: {e}", marker.display()))?;
    eprintln!(
        "fresh-check: base root made in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A new, empty overlay upper layer holding the checkout, apt's sources and resolv.conf.
fn prepare_run(root: &Path, l: &Layout, sources: &[AptSource]) -> Result<(), String> {
    if l.run.exists() {
        if let Some(m) = mounts_under(&l.run).first() {
            return Err(format!(
                "{m} is still mounted (another fresh-check running?)"
            ));
        }
        fs::remove_dir_all(&l.run).map_err(|e| format!("removing {}: {e}", l.run.display()))?;
    }
    let upper = l.upper();
    let src = upper.join(SRC.trim_start_matches('/'));
    for d in [
        &src,
        &l.run.join("work"),
        &l.merged(),
        &upper.join("etc/apt"),
    ] {
        fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
    }
    // The tracked files as they are in the working tree: what a commit of it would hold
    // (a file left untracked is missing here, as it is from a fresh clone).
    let files = Command::new("git")
        .args(["ls-files", "-z", "--cached"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !files.status.success() {
        return Err(
            "git ls-files failed: fresh-check copies the tracked files of a git checkout".into(),
        );
    }
    // Tracked files deleted in the working tree are left out.
    let list: Vec<u8> = files
        .stdout
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty() && root.join(String::from_utf8_lossy(p).as_ref()).exists())
        .flat_map(|p| p.iter().copied().chain([0]))
        .collect();
    let mut pack = Command::new("tar")
        .args(["--null", "-T", "-", "-cf", "-"])
        .current_dir(root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("tar: {e}"))?;
    let mut stdin = pack.stdin.take().ok_or("tar: no stdin")?;
    std::thread::spawn(move || {
        let _ = stdin.write_all(&list);
    });
    let pipe = pack.stdout.take().ok_or("tar: no stdout")?;
    run(Command::new("tar")
        .args(["-xf", "-"])
        .current_dir(&src)
        .stdin(pipe))?;
    let status = pack.wait().map_err(|e| format!("tar: {e}"))?;
    if !status.success() {
        return Err(format!("tar of the checkout failed ({status})"));
    }
    let mut list =
        String::from("# Written by cargo xtask fresh-check: the host's Debian archives.\n");
    for s in sources {
        list.push_str(&s.lines());
    }
    fs::write(upper.join("etc/apt/sources.list"), list)
        .map_err(|e| format!("writing sources.list: {e}"))?;
    fs::copy("/etc/resolv.conf", upper.join("etc/resolv.conf"))
        .map_err(|e| format!("copying /etc/resolv.conf: {e}"))?;
    // The machine's network, like resolv.conf: where TLS goes through a proxy, its CA is in
    // the host's bundle, which the root's own ca-certificates would not have. Kept apart
    // from the bundle deps.sh's ca-certificates makes, and named by SSL_CERT_FILE and
    // friends as on the host.
    let ca = Path::new(HOST_CA_BUNDLE);
    if ca.is_file() {
        fs::copy(ca, upper.join(HOST_CA.trim_start_matches('/')))
            .map_err(|e| format!("copying {HOST_CA_BUNDLE}: {e}"))?;
    }
    Ok(())
}

/// `xtask fresh-check-inner DIR [--test] [--demo]`: runs in new mount and PID namespaces
/// (started by `fresh_check` through unshare, under a bash that is their PID 1).
pub(crate) fn fresh_check_inner(args: &[String]) -> ExitCode {
    match inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fresh-check: {e}");
            ExitCode::FAILURE
        }
    }
}

fn inner(args: &[String]) -> Result<(), String> {
    // End when the parent does (see fresh_check); PID 1 then ends too, taking every process
    // of the run and every mount with it.
    std::thread::spawn(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut std::io::stdin(), &mut buf), Ok(n) if n > 0) {}
        eprintln!("fresh-check: the parent is gone; stopping");
        #[allow(clippy::exit)] // the only way to end the process from this thread
        std::process::exit(2);
    });
    let dir = PathBuf::from(args.first().ok_or("fresh-check-inner: no directory")?);
    let test = args.iter().any(|a| a == "--test");
    let demo = args.iter().any(|a| a == "--demo");
    let l = Layout::new(&dir);
    let m = l.merged();
    let at = |p: &str| m.join(p.trim_start_matches('/'));

    run(Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o"])
        .arg(format!(
            "lowerdir={},upperdir={},workdir={}",
            l.base.display(),
            l.upper().display(),
            l.run.join("work").display()
        ))
        .arg(&m))?;
    run(Command::new("mount")
        .args(["-t", "proc", "proc"])
        .arg(at("/proc")))?;
    run(Command::new("mount")
        .args(["--rbind", "/sys"])
        .arg(at("/sys")))?;
    run(Command::new("mount")
        .args(["--rbind", "/dev"])
        .arg(at("/dev")))?;
    run(Command::new("mount")
        .args(["-t", "tmpfs", "tmpfs"])
        .arg(at("/run")))?;
    let bind = |src: &Path, dst: &str, ro: bool| -> Result<(), String> {
        let target = at(dst);
        fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        run(Command::new("mount").arg("--bind").arg(src).arg(&target))?;
        if ro {
            run(Command::new("mount")
                .args(["-o", "remount,bind,ro"])
                .arg(&target))?;
        }
        Ok(())
    };
    bind(&l.apt_archives, "/var/cache/apt/archives", false)?;
    bind(&l.cargo_home, "/root/.cargo", false)?;
    // The host's toolchains, read-only: the root has none of its own.
    let sysroot = output(Command::new("rustc").args(["--print", "sysroot"]))?;
    bind(Path::new(sysroot.trim()), RUST, true)?;
    let goroot = go_env("GOROOT");
    if let Some(g) = &goroot {
        bind(Path::new(g), "/usr/local/go", true)?;
        // Go's module and build caches are the host's own: the control plane is built with
        // CGO_ENABLED=0 (nothing of the root's packages takes part in it) and Go's caches
        // are content-addressed, so a cached result is one the root would have computed.
        // Sharing them makes the root's `kube-build` cost seconds after the host's.
        for (var, dst) in [
            ("GOMODCACHE", "/root/go/pkg/mod"),
            ("GOCACHE", "/root/.cache/go-build"),
        ] {
            let src = PathBuf::from(go_env(var).ok_or_else(|| format!("go env {var}: no value"))?);
            fs::create_dir_all(&src).map_err(|e| format!("creating {}: {e}", src.display()))?;
            bind(&src, dst, false)?;
        }
    }

    let t = Instant::now();
    step(&m, "deps", "./scripts/deps.sh")?;
    eprintln!(
        "fresh-check: deps.sh done in {:.0} s",
        t.elapsed().as_secs_f64()
    );

    // The target directory of this set of packages and toolchains.
    let mut key = chroot_output(&m, "dpkg-query -W -f '${Package} ${Version} ${Status}\\n'")?;
    key.push_str(&chroot_output(&m, "rustc -vV")?);
    if goroot.is_some() {
        key.push_str(&chroot_output(&m, "go version")?);
    }
    let fp = fingerprint(&key);
    let target = l.targets.join(&fp);
    let fresh = !target.exists();
    fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
    touch(&target);
    prune_targets(&l.targets, &fp);
    eprintln!(
        "fresh-check: target directory {fp} ({})",
        if fresh {
            "new: a cold build"
        } else {
            "kept from a run with the same packages"
        }
    );
    bind(&target, TARGET, false)?;

    let t = Instant::now();
    step(
        &m,
        "build",
        "cargo build --workspace --all-targets --locked",
    )?;
    step(
        &m,
        "demo binaries",
        "cargo build --workspace --bins --locked",
    )?;
    step(
        &m,
        "fuzz targets",
        "cargo check --locked --manifest-path fuzz/Cargo.toml --bins",
    )?;
    step(&m, "kubernetes control plane", "cargo xtask kube-build")?;
    eprintln!(
        "fresh-check: build done in {:.0} s",
        t.elapsed().as_secs_f64()
    );
    if test {
        step(&m, "test", "cargo xtask test")?;
    }
    if demo {
        step(&m, "demo", "cargo xtask demo")?;
    }
    Ok(())
}

/// One `go env` value of the host, if it has Go.
fn go_env(var: &str) -> Option<String> {
    Command::new("go")
        .args(["env", var])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// The environment of a fresh root's login shell, with the host's toolchains.
fn chroot_cmd(merged: &Path, script: &str) -> Command {
    let mut c = Command::new("chroot");
    c.arg(merged)
        .args(["/usr/bin/env", "-i"])
        .arg("HOME=/root")
        .arg(format!(
            "PATH={RUST}/bin:/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ))
        .arg("LANG=C.UTF-8")
        .arg("CI=true")
        .arg(format!("CARGO_TARGET_DIR={TARGET}"))
        .arg("CARGO_TERM_COLOR=never")
        .arg("CARGO_INCREMENTAL=0")
        .arg("DEBIAN_FRONTEND=noninteractive");
    if merged.join(HOST_CA.trim_start_matches('/')).is_file() {
        for var in [
            "SSL_CERT_FILE",
            "CARGO_HTTP_CAINFO",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
            // pip (the schemathesis venv of `cargo xtask test`) reads its own.
            "PIP_CERT",
        ] {
            c.arg(format!("{var}={HOST_CA}"));
        }
    }
    c.args(["/bin/bash", "-c"])
        .arg(format!("cd {SRC} && exec {script} 2>&1"));
    c
}

fn chroot_output(merged: &Path, script: &str) -> Result<String, String> {
    output(&mut chroot_cmd(merged, script))
}

/// Runs one step in the root, echoing its output; on failure, names what it found missing.
fn step(merged: &Path, name: &str, script: &str) -> Result<(), String> {
    eprintln!("fresh-check: [{name}] {script}");
    let mut child = chroot_cmd(merged, script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run chroot: {e}"))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut lines = Vec::new();
    for line in BufReader::new(out).lines() {
        let Ok(line) = line else { break };
        eprintln!("{line}");
        lines.push(line);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for chroot: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let missing = missing_lines(&lines);
    let mut msg = format!("step [{name}] `{script}` failed ({status}) in the fresh root");
    if missing.is_empty() {
        msg.push_str("; its last lines:");
        for l in lines.iter().rev().take(15).rev() {
            msg.push_str("\n  ");
            msg.push_str(l);
        }
    } else {
        msg.push_str("; what it names as missing:");
        for l in missing.iter().take(15) {
            msg.push_str("\n  ");
            msg.push_str(l);
        }
    }
    Err(msg)
}

fn touch(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Keeps the newest `KEEP_TARGETS` target directories (and always `current`).
fn prune_targets(targets: &Path, current: &str) {
    let Ok(entries) = fs::read_dir(targets) else {
        return;
    };
    let mut dirs: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != current)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    dirs.sort();
    dirs.reverse();
    for (_, old) in dirs.into_iter().skip(KEEP_TARGETS - 1) {
        eprintln!(
            "fresh-check: removing the old target directory {}",
            old.display()
        );
        let _ = fs::remove_dir_all(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEB822: &str = "Types: deb\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\nURIs: http://deb.debian.org/debian\nSuites: bookworm bookworm-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\nTypes: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: main\n\nTypes: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n\nTypes: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb\nEnabled: no\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\n";

    #[test]
    fn deb822_keeps_debian_archives_only() {
        let s = parse_apt_sources(DEB822, true);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].uri, "http://deb.debian.org/debian");
        assert_eq!(s[0].suites, ["bookworm", "bookworm-updates"]);
        assert_eq!(
            s[0].lines(),
            "deb http://deb.debian.org/debian bookworm main\n\
             deb http://deb.debian.org/debian bookworm-updates main\n"
        );
        assert_eq!(s[1].suites, ["bookworm-security"]);
        assert_eq!(
            base_suite(&s),
            Ok((
                "http://deb.debian.org/debian".to_owned(),
                "bookworm".to_owned()
            ))
        );
    }

    #[test]
    fn one_line_sources() {
        let text = "# comment\ndeb https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://ftp.de.debian.org/debian bookworm main contrib # x\n\
                    deb-src http://deb.debian.org/debian bookworm main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb http://evil.example/debian.org/debian bookworm main\n";
        let s = parse_apt_sources(text, false);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!(s[0].uri, "http://ftp.de.debian.org/debian");
        assert_eq!(s[0].components, ["main", "contrib"]);
        assert_eq!(s[1].suites, ["bookworm-security"]);
    }

    #[test]
    fn no_release_suite_is_an_error() {
        let s = parse_apt_sources(
            "deb http://deb.debian.org/debian-security bookworm-security main",
            false,
        );
        assert!(base_suite(&s).is_err());
        assert!(parse_apt_sources("garbage\n\n::\nTypes:", true).is_empty());
    }

    #[test]
    fn missing_lines_name_the_file() {
        let lines: Vec<String> = [
            "   Compiling etcd-client v0.21.0",
            "error: failed to run custom build command for `etcd-client v0.21.0`",
            "  protoc failed: google/protobuf/descriptor.proto: File not found.",
            "  protoc failed: google/protobuf/descriptor.proto: File not found.",
            "bash: line 1: clang-19: command not found",
            "warning: build failed, waiting for other jobs to finish...",
        ]
        .map(str::to_owned)
        .to_vec();
        let m = missing_lines(&lines);
        assert_eq!(m.len(), 3, "{m:?}");
        assert!(m[1].contains("descriptor.proto: File not found"));
        assert!(m[2].contains("clang-19: command not found"));
    }

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        assert_eq!(fingerprint(""), "cbf29ce484222325");
        assert_eq!(fingerprint("a"), "af63dc4c8601ec8c");
        assert_ne!(
            fingerprint("libprotobuf-dev 3.21.12-3\n"),
            fingerprint("libprotobuf-dev 3.21.12-4\n")
        );
    }

    #[test]
    fn options() {
        let o = parse_options(&["--test".into(), "--dir".into(), "/x".into()]).unwrap();
        assert!(o.test && !o.demo && o.dir == Some(PathBuf::from("/x")));
        assert!(parse_options(&["--dir".into()]).is_err());
        assert!(parse_options(&["--tset".into()]).is_err());
    }
}
