// SPDX-License-Identifier: Apache-2.0

//! `cilium-dbg cleanup`: removes what cilium-rs's agent installed on this node (the network
//! namespace the command runs in, the bpf root and the state directory), so that the node
//! is as it was before the agent ran. As upstream's command, it lists what it will remove
//! and asks for confirmation (`--force` skips the question), then reports each removal.
//!
//! What is removed, and how each thing is recognised:
//!
//! - **programs on devices**: the links pinned under `<bpf-root>/cilium/endpoints/<lxc>/`
//!   (`from_container`, `to_container` on the pods' host-side veths) and
//!   `<bpf-root>/cilium/devices/<dev>/` (`from_overlay` on `cilium_vxlan`, `from_netdev` /
//!   `to_netdev` on a native device). The loader attaches every program as a tcx link and
//!   keeps it only through its pin, so removing the pin detaches the program. A tcx program
//!   with one of the datapath's names that has no pin under the bpf root is held by a
//!   running process (or pinned under another bpf root): it is reported, not removed.
//! - **routes** (not with `--bpf-state`): the IPv4 routes marked with the agent's route
//!   protocol ([`AGENT_ROUTE_PROTOCOL`]: endpoint routes and auto-direct-node-routes), and,
//!   from agents that did not mark them yet, `/32` link-scope routes of the main table out
//!   of an `lxc*` device (endpoint routes). Every other route stays.
//! - **links** (not with `--bpf-state`): devices named `cilium_*` (the agent makes
//!   `cilium_host` and its veth peer `cilium_net`, and `cilium_vxlan` in tunnel mode;
//!   upstream matches the same prefix). The pods' `lxc*` veths stay (as upstream leaves
//!   them): they lose their programs and routes, and the pods are restarted afterwards.
//! - **BPF pins**: the maps pinned in `<bpf-root>/tc/globals` whose names start with
//!   `cilium_` (upstream's rule), the directories under `<bpf-root>/cilium`, and
//!   `tc/globals` and `tc` when nothing else is left in them. Nothing else of the bpffs.
//! - **agent state** (not with `--bpf-state`): in the state directory, what the agent keeps
//!   there ([`STATE_ENTRIES`]: endpoint state, the embedded store, its API and Hubble
//!   sockets, the CNI's queue of deletions), the API socket and its `deleteQueue` when they
//!   live elsewhere, then the directory itself when it is empty. Other files stay.
//!
//! Not undone: the sysctls the agent sets in the node's namespace (`net.ipv4.ip_forward=1`,
//! `rp_filter=0`: their earlier values are not recorded, and upstream leaves them too) and
//! the bpffs mount the agent makes when the bpf root has none.
//!
//! It refuses to run while the agent's API socket accepts connections, `--force` or not
//! (upstream refuses while the agent's pidfile exists): removing the datapath under a live
//! agent breaks its pods and the agent would restore part of it. `--force` only skips the
//! confirmation.
//!
//! ```
//! use cilium_dbg::cleanup::{Scope, is_agent_link};
//! assert_eq!(Scope::from_flags(false, false), Scope::All);
//! assert_eq!(Scope::from_flags(false, true), Scope::BpfOnly);
//! assert!(is_agent_link("cilium_host") && !is_agent_link("lxc0123456789ab"));
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use cilium_bpf::link::{AGENT_ROUTE_PROTOCOL, Device, Netlink, Route};
use cilium_bpf::loader::{PinnedAttachment, TcxProgram};

/// What the agent keeps in its state directory: endpoint state files, the embedded store
/// (its log and the compaction's temporary file), the API and Hubble sockets (default
/// paths), and the queue of deletions the CNI leaves while the agent is down.
pub const STATE_ENTRIES: [&str; 6] = [
    "endpoints",
    "kvstore.log",
    "kvstore.compact",
    "cilium.sock",
    "hubble.sock",
    "deleteQueue",
];

/// The main routing table.
const MAIN_TABLE: u32 = 254;
/// `RT_SCOPE_LINK`.
const SCOPE_LINK: u8 = 253;

/// How much to remove (upstream's `--all-state` / `--bpf-state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everything: programs, routes, links, BPF pins and the agent's state.
    All,
    /// BPF state only: programs on devices and BPF pins.
    BpfOnly,
}

impl Scope {
    /// As upstream: `--all-state` (or no flag at all) is everything, `--bpf-state` alone
    /// the BPF state only.
    pub fn from_flags(all_state: bool, bpf_state: bool) -> Scope {
        if bpf_state && !all_state {
            Scope::BpfOnly
        } else {
            Scope::All
        }
    }
}

/// Where the agent keeps its things.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanupConfig {
    /// The bpf root (`--bpf-root`).
    pub bpf_root: PathBuf,
    /// The agent's state directory (`--state-dir`).
    pub state_dir: PathBuf,
    /// The agent's API socket (`-H`).
    pub socket: PathBuf,
    /// How much to remove.
    pub scope: Scope,
}

/// A link device cilium-rs's agent made: `cilium_*` (`cilium_host`, `cilium_net`,
/// `cilium_vxlan`).
pub fn is_agent_link(name: &str) -> bool {
    name.starts_with("cilium_")
}

/// A pinned map of the datapath (in `<bpf-root>/tc/globals`).
pub fn is_cilium_map(name: &str) -> bool {
    name.starts_with("cilium_")
}

/// A route the agent added: marked with [`AGENT_ROUTE_PROTOCOL`], or an unmarked endpoint
/// route of an older agent (`/32`, main table, link scope, no gateway, out of an `lxc*`
/// device). `device` is the name of the route's output device.
pub fn is_agent_route(route: &Route, device: Option<&str>) -> bool {
    if route.protocol == AGENT_ROUTE_PROTOCOL {
        return true;
    }
    route.prefix_len == 32
        && route.table == MAIN_TABLE
        && route.scope == SCOPE_LINK
        && route.gateway.is_none()
        && device.is_some_and(|d| d.starts_with("lxc"))
}

/// A route in `ip route`'s words, with its device's name.
pub fn route_text(route: &Route, device: Option<&str>) -> String {
    let mut s = format!("{}/{}", route.destination, route.prefix_len);
    if let Some(gw) = route.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    match (device, route.oif) {
        (Some(d), _) => s.push_str(&format!(" dev {d}")),
        (None, Some(i)) => s.push_str(&format!(" dev #{i}")),
        (None, None) => {}
    }
    if route.table != MAIN_TABLE {
        s.push_str(&format!(" table {}", route.table));
    }
    s.push_str(&format!(" proto {}", route.protocol));
    if route.scope == SCOPE_LINK {
        s.push_str(" scope link");
    }
    if let Some(p) = route.priority {
        s.push_str(&format!(" metric {p}"));
    }
    s
}

/// One thing to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A program attached to a device, kept there by its pinned link.
    Program(PinnedAttachment),
    /// A route the agent added.
    Route {
        /// The route.
        route: Route,
        /// Its output device's name.
        device: Option<String>,
    },
    /// A link device.
    Link(String),
    /// A pinned map.
    Map(PathBuf),
    /// Another pin under `<bpf-root>/cilium`.
    Pin(PathBuf),
    /// A directory of pins, removed once empty.
    PinDir(PathBuf),
    /// An entry of the agent's state (a file, socket or directory tree).
    State(PathBuf),
    /// The state directory, removed once empty.
    StateDir(PathBuf),
}

impl Item {
    /// The section of the listing the item belongs to.
    fn section(&self) -> &'static str {
        match self {
            Item::Program(_) => "tcx programs on devices (their pinned links)",
            Item::Route { .. } => "routes",
            Item::Link(_) => "links",
            Item::Map(_) => "BPF maps",
            Item::Pin(_) | Item::PinDir(_) => "BPF pins and their directories",
            Item::State(_) | Item::StateDir(_) => "agent state",
        }
    }
}

impl std::fmt::Display for Item {
    /// The item as the listing and the report name it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Item::Program(a) => write!(f, "{} on {} ({})", a.program, a.ifname, a.path.display()),
            Item::Route { route, device } => f.write_str(&route_text(route, device.as_deref())),
            Item::Link(name) => f.write_str(name),
            Item::Map(p) | Item::Pin(p) | Item::PinDir(p) | Item::State(p) | Item::StateDir(p) => {
                write!(f, "{}", p.display())
            }
        }
    }
}

/// What a scan found: the items to remove, in the order they are removed, and what cannot
/// be removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Programs first (detaching them before their maps go), then routes, links, pins,
    /// their directories, and the agent's state.
    pub items: Vec<Item>,
    /// Datapath programs attached with no pin under the bpf root (held by a running
    /// process, or pinned under another bpf root), as `<program> (<hook>) on <device>`:
    /// cleanup cannot detach them.
    pub held: Vec<String>,
    /// Problems met while looking (a device whose programs could not be listed...).
    pub notes: Vec<String>,
}

impl Plan {
    /// Whether there is nothing to remove.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Upstream's warning: every item by section.
    pub fn warning(&self) -> String {
        let mut sections: Vec<(&str, Vec<String>)> = Vec::new();
        for item in &self.items {
            let s = item.section();
            match sections.iter_mut().find(|(name, _)| *name == s) {
                Some((_, lines)) => lines.push(item.to_string()),
                None => sections.push((s, vec![item.to_string()])),
            }
        }
        let mut out = "Warning: Destructive operation. You are about to remove:\n".to_owned();
        for (name, lines) in sections {
            out.push_str(&format!("- {name}\n"));
            for l in lines {
                out.push_str(&format!("  {l}\n"));
            }
        }
        for h in &self.held {
            out.push_str(&format!(
                "Note: {h} is attached with no pin here ({HELD}): it cannot be removed\n"
            ));
        }
        out
    }
}

/// Why a datapath program can be attached with no pin under the bpf root.
const HELD: &str = "held by a running process, or pinned under another bpf root";

/// The question upstream asks (`--force` skips it).
pub const QUESTION: &str = "The command is non-revertible, do you want to continue [y/N]?";

/// Reads the answer to [`QUESTION`]: `y` or `yes` (any case) goes on; anything else,
/// including end of input, does not.
pub fn confirmed(input: &mut dyn BufRead) -> bool {
    let mut line = String::new();
    if input.read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Whether the agent is running: its API socket accepts a connection.
pub fn agent_running(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

/// Refuses a state directory whose contents must never be removed (`/`, or a relative
/// path that depends on where the command runs).
pub fn check_state_dir(dir: &Path) -> Result<(), String> {
    if !dir.is_absolute() {
        return Err(format!(
            "--state-dir {} is not an absolute path",
            dir.display()
        ));
    }
    if dir.parent().is_none() {
        return Err("--state-dir is the root directory: refusing to clean it".to_owned());
    }
    Ok(())
}

/// The entries of `dir` (none when it does not exist or cannot be read), sorted.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Plans the BPF pins: the maps of `tc/globals`, everything under `cilium/` (programs'
/// links first, then other pins, then the directories bottom-up), and `tc/globals` and
/// `tc` when they would be left empty.
pub fn plan_pins(bpf_root: &Path, attachments: &[PinnedAttachment]) -> Vec<Item> {
    let mut items: Vec<Item> = attachments.iter().cloned().map(Item::Program).collect();
    let links = cilium_bpf::loader::links_dir(bpf_root);
    let linked: BTreeSet<&Path> = attachments.iter().map(|a| a.path.as_path()).collect();
    let mut dirs = Vec::new();
    let mut pins = Vec::new();
    // Depth-first, so each directory comes after everything in it.
    fn walk(dir: &Path, linked: &BTreeSet<&Path>, pins: &mut Vec<Item>, dirs: &mut Vec<Item>) {
        for e in entries(dir) {
            if e.is_dir() {
                walk(&e, linked, pins, dirs);
            } else if !linked.contains(e.as_path()) {
                pins.push(Item::Pin(e));
            }
        }
        dirs.push(Item::PinDir(dir.to_path_buf()));
    }
    if links.is_dir() {
        walk(&links, &linked, &mut pins, &mut dirs);
    }
    let globals = cilium_bpf::maps::globals_dir(bpf_root);
    let in_globals = entries(&globals);
    let maps: Vec<PathBuf> = in_globals
        .iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| is_cilium_map(&n.to_string_lossy()))
        })
        .cloned()
        .collect();
    items.extend(maps.iter().cloned().map(Item::Map));
    items.extend(pins);
    items.extend(dirs);
    if globals.is_dir() && maps.len() == in_globals.len() {
        items.push(Item::PinDir(globals.clone()));
        let tc = bpf_root.join("tc");
        if entries(&tc) == [globals] {
            items.push(Item::PinDir(tc));
        }
    }
    items
}

/// Plans the agent's state: [`STATE_ENTRIES`] in the state directory, the API socket and
/// its `deleteQueue` when they are elsewhere, and the state directory when it would be
/// left empty.
pub fn plan_state(state_dir: &Path, socket: &Path) -> Vec<Item> {
    let mut paths: Vec<PathBuf> = STATE_ENTRIES.iter().map(|e| state_dir.join(e)).collect();
    paths.push(socket.to_path_buf());
    if let Some(dir) = socket.parent() {
        paths.push(dir.join("deleteQueue"));
    }
    let mut seen = BTreeSet::new();
    let found: Vec<PathBuf> = paths
        .into_iter()
        .filter(|p| exists(p) && seen.insert(p.clone()))
        .collect();
    let mut items: Vec<Item> = found.iter().cloned().map(Item::State).collect();
    let present = entries(state_dir);
    if state_dir.is_dir() && present.iter().all(|p| found.contains(p)) {
        items.push(Item::StateDir(state_dir.to_path_buf()));
    }
    items
}

/// Plans the routes and links of the node's namespace.
pub fn plan_network(routes: &[Route], devices: &[Device]) -> Vec<Item> {
    let names: BTreeMap<u32, &str> = devices.iter().map(|d| (d.index, d.name.as_str())).collect();
    let mut items = Vec::new();
    for r in routes {
        let device = r.oif.and_then(|i| names.get(&i).copied());
        if is_agent_route(r, device) {
            items.push(Item::Route {
                route: r.clone(),
                device: device.map(str::to_owned),
            });
        }
    }
    items.extend(
        devices
            .iter()
            .filter(|d| is_agent_link(&d.name))
            .map(|d| Item::Link(d.name.clone())),
    );
    items
}

/// The datapath programs attached to `devices` that no pin keeps: each
/// `<program> (<hook>) on <device>`.
pub fn held_programs(
    attached: &[(String, Vec<TcxProgram>)],
    attachments: &[PinnedAttachment],
) -> Vec<String> {
    let pinned: BTreeSet<(&str, &str)> = attachments
        .iter()
        .map(|a| (a.ifname.as_str(), a.program.as_str()))
        .collect();
    let mut out = Vec::new();
    for (dev, programs) in attached {
        for p in programs {
            if p.is_cilium() && !pinned.contains(&(dev.as_str(), p.name.as_str())) {
                out.push(format!("{} ({}) on {dev}", p.name, p.hook));
            }
        }
    }
    out
}

/// Every device's tcx programs; devices whose programs cannot be listed become notes.
fn attached_programs(
    devices: &[Device],
    notes: &mut Vec<String>,
) -> Vec<(String, Vec<TcxProgram>)> {
    let mut out = Vec::new();
    for d in devices {
        match cilium_bpf::loader::tcx_programs(&d.name) {
            Ok(p) => out.push((d.name.clone(), p)),
            Err(e) => notes.push(format!(
                "cannot list the tcx programs of {}: {}",
                d.name,
                chain(&e)
            )),
        }
    }
    out
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&format!(": {c}"));
        cur = c.source();
    }
    s
}

/// Looks at the node's namespace, the bpf root and the state directory. Must run inside
/// a tokio runtime (netlink).
pub async fn scan(config: &CleanupConfig) -> Result<Plan, String> {
    let nl = Netlink::open().map_err(|e| chain(&e))?;
    let devices = nl.devices().await.map_err(|e| chain(&e))?;
    let attachments =
        cilium_bpf::loader::pinned_attachments(&config.bpf_root).map_err(|e| chain(&e))?;
    let mut plan = Plan::default();
    let attached = attached_programs(&devices, &mut plan.notes);
    plan.held = held_programs(&attached, &attachments);
    let mut pins = plan_pins(&config.bpf_root, &attachments);
    // Programs first, then the network, then the rest of the pins.
    let programs = pins
        .iter()
        .take_while(|i| matches!(i, Item::Program(_)))
        .count();
    plan.items.extend(pins.drain(..programs));
    if config.scope == Scope::All {
        let routes = nl.routes_v4().await.map_err(|e| chain(&e))?;
        plan.items.extend(plan_network(&routes, &devices));
    }
    plan.items.extend(pins);
    if config.scope == Scope::All {
        plan.items
            .extend(plan_state(&config.state_dir, &config.socket));
    }
    Ok(plan)
}

/// What [`execute`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Items removed.
    pub removed: usize,
    /// What could not be removed, one line each.
    pub errors: Vec<String>,
}

/// Removes the items in order, writing one line per removal to `out`; a failure is
/// recorded and the next item is tried (as upstream). Then checks that no datapath program
/// is left on any device. Must run inside a tokio runtime (netlink).
pub async fn execute(plan: &Plan, out: &mut dyn Write) -> Outcome {
    let mut outcome = Outcome::default();
    let nl = match Netlink::open() {
        Ok(nl) => Some(nl),
        Err(e) => {
            outcome.errors.push(chain(&e));
            None
        }
    };
    for item in &plan.items {
        let done: Result<Option<String>, String> = match item {
            Item::Program(a) => cilium_bpf::loader::remove_pinned_link(&a.path)
                .map(|removed| removed.then(|| format!("removed tcx program {item}")))
                .map_err(|e| chain(&e)),
            Item::Route { .. } | Item::Link(_) => match &nl {
                None => Err(format!("{item}: no netlink connection")),
                Some(nl) => remove_network(nl, item).await,
            },
            Item::Map(p) => remove_file(p).map(|()| {
                Some(format!(
                    "removed map {}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                ))
            }),
            Item::Pin(p) => remove_file(p).map(|()| Some(format!("removed pin {}", p.display()))),
            Item::PinDir(p) | Item::StateDir(p) => {
                remove_dir(p).map(|()| Some(format!("removed directory {}", p.display())))
            }
            Item::State(p) => remove_tree(p).map(|()| Some(format!("removed {}", p.display()))),
        };
        match done {
            Ok(Some(line)) => {
                outcome.removed += 1;
                let _ = writeln!(out, "{line}");
            }
            Ok(None) => {}
            Err(e) => outcome.errors.push(e),
        }
    }
    // What is still attached: held by a process, or attached again meanwhile.
    if let Some(nl) = &nl
        && let Ok(devices) = nl.devices().await
    {
        let mut notes = Vec::new();
        let attached = attached_programs(&devices, &mut notes);
        for left in held_programs(&attached, &[]) {
            outcome.errors.push(format!(
                "{left} is still attached ({HELD}; stop it and run cleanup again)"
            ));
        }
    }
    outcome
}

async fn remove_network(nl: &Netlink, item: &Item) -> Result<Option<String>, String> {
    match item {
        Item::Route { route, .. } => match nl.delete_route(route).await {
            Ok(true) => Ok(Some(format!("removed route {item}"))),
            Ok(false) => Ok(None),
            Err(e) => Err(chain(&e)),
        },
        Item::Link(name) => match nl.delete_by_name(name).await {
            Ok(true) => Ok(Some(format!("removed link {name}"))),
            // A veth goes with its peer (cilium_host with cilium_net).
            Ok(false) => Ok(Some(format!(
                "removed link {name} (deleted with its veth peer)"
            ))),
            Err(e) => Err(chain(&e)),
        },
        _ => Ok(None),
    }
}

fn gone_is_fine(r: std::io::Result<()>, what: &str, path: &Path) -> Result<(), String> {
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("removing {what} {}: {e}", path.display())),
    }
}

fn remove_file(path: &Path) -> Result<(), String> {
    gone_is_fine(std::fs::remove_file(path), "pin", path)
}

fn remove_dir(path: &Path) -> Result<(), String> {
    gone_is_fine(std::fs::remove_dir(path), "directory", path)
}

fn remove_tree(path: &Path) -> Result<(), String> {
    let r = if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    gone_is_fine(r, "state", path)
}

/// The whole command: refuses while the agent runs, scans, shows the plan, asks (unless
/// `force`), removes. The listing, the question and each removal are written to `out` as
/// they happen; an error (the agent runs, or something could not be removed: one line
/// each) means exit 1.
pub fn run(
    config: &CleanupConfig,
    force: bool,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), String> {
    if agent_running(&config.socket) {
        return Err(format!(
            "the agent is running: its API answers on {}. Stop it before cleaning up (--force only skips the confirmation)",
            config.socket.display()
        ));
    }
    if config.scope == Scope::All {
        check_state_dir(&config.state_dir)?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    runtime.block_on(async {
        let plan = scan(config).await?;
        for n in &plan.notes {
            let _ = writeln!(out, "Note: {n}");
        }
        if plan.is_empty() {
            let _ = writeln!(
                out,
                "Nothing to remove: no cilium-rs state in this network namespace, under {}{}.",
                config.bpf_root.display(),
                if config.scope == Scope::All {
                    format!(" or in {}", config.state_dir.display())
                } else {
                    String::new()
                }
            );
            return if plan.held.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "still attached with no pin here ({HELD}): {}",
                    plan.held.join(", ")
                ))
            };
        }
        let _ = write!(out, "{}", plan.warning());
        if !force {
            let _ = writeln!(out, "{QUESTION}");
            let _ = out.flush();
            if !confirmed(input) {
                let _ = writeln!(out, "Cleanup aborted: nothing removed.");
                return Ok(());
            }
        }
        let outcome = execute(&plan, out).await;
        let _ = writeln!(
            out,
            "Removed {} item{}.",
            outcome.removed,
            if outcome.removed == 1 { "" } else { "s" }
        );
        if outcome.errors.is_empty() {
            Ok(())
        } else {
            Err(outcome.errors.join("\nError: "))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cilium_bpf::loader::{PinnedOn, TcHook};
    use std::net::Ipv4Addr;

    fn route(dst: [u8; 4], len: u8, protocol: u8, scope: u8, oif: u32) -> Route {
        Route {
            destination: Ipv4Addr::from(dst),
            prefix_len: len,
            gateway: None,
            oif: Some(oif),
            table: MAIN_TABLE,
            protocol,
            scope,
            kind: 1,
            priority: None,
        }
    }

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!("crsclean-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn flags_choose_the_scope_as_upstream() {
        assert_eq!(Scope::from_flags(false, false), Scope::All);
        assert_eq!(Scope::from_flags(true, false), Scope::All);
        assert_eq!(Scope::from_flags(true, true), Scope::All);
        assert_eq!(Scope::from_flags(false, true), Scope::BpfOnly);
    }

    #[test]
    fn only_the_agents_routes_are_recognised() {
        // Marked: whatever the device or shape (node routes have a gateway).
        let mut node_route = route([172, 20, 2, 0], 24, AGENT_ROUTE_PROTOCOL, 0, 2);
        node_route.gateway = Some(Ipv4Addr::new(192, 168, 10, 102));
        assert!(is_agent_route(&node_route, Some("eth0")));
        // An unmarked endpoint route of an older agent.
        let legacy = route([172, 20, 1, 10], 32, 4, SCOPE_LINK, 7);
        assert!(is_agent_route(&legacy, Some("lxc0123456789ab")));
        // The same shape on another device, another table, another length: not ours.
        assert!(!is_agent_route(&legacy, Some("eth0")));
        assert!(!is_agent_route(&legacy, None));
        let mut other_table = legacy.clone();
        other_table.table = 100;
        assert!(!is_agent_route(&other_table, Some("lxc0123456789ab")));
        let wide = route([172, 20, 1, 0], 24, 4, SCOPE_LINK, 7);
        assert!(!is_agent_route(&wide, Some("lxc0123456789ab")));
        // Kernel and static routes of the node.
        let connected = route([192, 168, 10, 0], 24, 2, SCOPE_LINK, 2);
        assert!(!is_agent_route(&connected, Some("eth0")));
        let mut default = route([0, 0, 0, 0], 0, 4, 0, 2);
        default.gateway = Some(Ipv4Addr::new(192, 168, 10, 1));
        assert!(!is_agent_route(&default, Some("eth0")));
    }

    #[test]
    fn routes_read_like_ip_route() {
        let mut r = route([172, 20, 1, 10], 32, AGENT_ROUTE_PROTOCOL, SCOPE_LINK, 7);
        assert_eq!(
            route_text(&r, Some("lxc1")),
            "172.20.1.10/32 dev lxc1 proto 67 scope link"
        );
        r.gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
        r.scope = 0;
        r.table = 100;
        r.priority = Some(5);
        assert_eq!(
            route_text(&r, None),
            "172.20.1.10/32 via 10.0.0.1 dev #7 table 100 proto 67 metric 5"
        );
    }

    #[test]
    fn network_plan_takes_agent_routes_and_cilium_links() {
        let devices = [
            Device {
                index: 1,
                name: "lo".into(),
            },
            Device {
                index: 2,
                name: "eth0".into(),
            },
            Device {
                index: 3,
                name: "cilium_net".into(),
            },
            Device {
                index: 4,
                name: "cilium_host".into(),
            },
            Device {
                index: 7,
                name: "lxc0123456789ab".into(),
            },
        ];
        let routes = [
            route([192, 168, 10, 0], 24, 2, SCOPE_LINK, 2),
            route([172, 20, 1, 10], 32, AGENT_ROUTE_PROTOCOL, SCOPE_LINK, 7),
        ];
        let plan = plan_network(&routes, &devices);
        let text: Vec<String> = plan.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "172.20.1.10/32 dev lxc0123456789ab proto 67 scope link",
                "cilium_net",
                "cilium_host"
            ]
        );
    }

    #[test]
    fn pins_plan_keeps_foreign_pins_and_orders_directories_last() {
        let root = TempDir::new("pins");
        let r = &root.0;
        let ep = r.join("cilium/endpoints/lxc1");
        std::fs::create_dir_all(&ep).unwrap();
        std::fs::write(ep.join("from_container"), "").unwrap();
        std::fs::write(ep.join("stray"), "").unwrap();
        let globals = r.join("tc/globals");
        std::fs::create_dir_all(&globals).unwrap();
        std::fs::write(globals.join("cilium_lxc"), "").unwrap();
        std::fs::write(globals.join("other_map"), "").unwrap();
        std::fs::create_dir_all(r.join("foreign")).unwrap();
        std::fs::write(r.join("cilium/leftover"), "").unwrap();
        let attachments = cilium_bpf::loader::pinned_attachments(r).unwrap();
        let pinned = |program: &str| PinnedAttachment {
            on: PinnedOn::Endpoint,
            ifname: "lxc1".into(),
            program: program.into(),
            path: ep.join(program),
        };
        assert_eq!(attachments, [pinned("from_container"), pinned("stray")]);
        let plan = plan_pins(r, &attachments);
        assert_eq!(
            plan,
            [
                Item::Program(pinned("from_container")),
                Item::Program(pinned("stray")),
                Item::Map(globals.join("cilium_lxc")),
                Item::Pin(r.join("cilium/leftover")),
                Item::PinDir(ep.clone()),
                Item::PinDir(r.join("cilium/endpoints")),
                Item::PinDir(r.join("cilium")),
            ],
            "other_map keeps tc/globals, and foreign stays"
        );
        std::fs::remove_file(globals.join("other_map")).unwrap();
        let plan = plan_pins(r, &attachments);
        assert_eq!(
            &plan[plan.len() - 2..],
            [Item::PinDir(globals.clone()), Item::PinDir(r.join("tc"))]
        );
    }

    #[test]
    fn state_plan_takes_the_agents_entries_only() {
        let dir = TempDir::new("state");
        let s = &dir.0;
        std::fs::create_dir_all(s.join("endpoints")).unwrap();
        std::fs::write(s.join("endpoints/1.json"), "{}").unwrap();
        std::fs::write(s.join("kvstore.log"), "").unwrap();
        std::fs::write(s.join("cilium.sock"), "").unwrap();
        let plan = plan_state(s, &s.join("cilium.sock"));
        assert_eq!(
            plan,
            [
                Item::State(s.join("endpoints")),
                Item::State(s.join("kvstore.log")),
                Item::State(s.join("cilium.sock")),
                Item::StateDir(s.clone()),
            ]
        );
        // A file the agent does not write stays, and so does the directory.
        std::fs::write(s.join("notes.txt"), "mine").unwrap();
        let plan = plan_state(s, &s.join("cilium.sock"));
        assert_eq!(plan.len(), 3);
        assert!(!plan.contains(&Item::StateDir(s.clone())));
        // A socket elsewhere, with the CNI's queue next to it.
        let run = s.join("run");
        std::fs::create_dir_all(run.join("deleteQueue")).unwrap();
        std::fs::write(run.join("api.sock"), "").unwrap();
        let plan = plan_state(&s.join("missing"), &run.join("api.sock"));
        assert_eq!(
            plan,
            [
                Item::State(run.join("api.sock")),
                Item::State(run.join("deleteQueue"))
            ]
        );
    }

    #[test]
    fn unsafe_state_dirs_are_refused() {
        assert!(check_state_dir(Path::new("/")).is_err());
        assert!(check_state_dir(Path::new("var/run/cilium")).is_err());
        assert!(check_state_dir(Path::new("/var/run/cilium")).is_ok());
    }

    #[test]
    fn only_yes_confirms() {
        for (answer, ok) in [
            ("y\n", true),
            ("Y\n", true),
            ("yes\n", true),
            ("n\n", false),
            ("\n", false),
            ("", false),
            ("yep\n", false),
        ] {
            assert_eq!(confirmed(&mut answer.as_bytes()), ok, "{answer:?}");
        }
    }

    #[test]
    fn warning_lists_sections_and_held_programs() {
        let plan = Plan {
            items: vec![
                Item::Link("cilium_host".into()),
                Item::Map("/sys/fs/bpf/tc/globals/cilium_lxc".into()),
                Item::Link("cilium_net".into()),
            ],
            held: vec!["from_container (ingress) on lxc1".into()],
            notes: vec![],
        };
        assert_eq!(
            plan.warning(),
            "Warning: Destructive operation. You are about to remove:\n\
             - links\n  cilium_host\n  cilium_net\n\
             - BPF maps\n  /sys/fs/bpf/tc/globals/cilium_lxc\n\
             Note: from_container (ingress) on lxc1 is attached with no pin here (held by a running process, or pinned under another bpf root): it cannot be removed\n"
        );
    }

    #[test]
    fn unpinned_datapath_programs_are_held() {
        let prog = |hook, name: &str| TcxProgram {
            hook,
            id: 1,
            name: name.into(),
        };
        let attached = vec![
            (
                "lxc1".to_owned(),
                vec![
                    prog(TcHook::Ingress, "from_container"),
                    prog(TcHook::Egress, "to_container"),
                ],
            ),
            (
                "eth0".to_owned(),
                vec![prog(TcHook::Ingress, "someone_else")],
            ),
        ];
        let pinned = [PinnedAttachment {
            on: PinnedOn::Endpoint,
            ifname: "lxc1".into(),
            program: "from_container".into(),
            path: "/x".into(),
        }];
        assert_eq!(
            held_programs(&attached, &pinned),
            ["to_container (egress) on lxc1"]
        );
    }

    #[test]
    fn a_running_agent_is_detected_by_its_socket() {
        let dir = TempDir::new("sock");
        let sock = dir.0.join("cilium.sock");
        assert!(!agent_running(&sock));
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert!(agent_running(&sock));
        let config = CleanupConfig {
            bpf_root: dir.0.join("bpf"),
            state_dir: dir.0.clone(),
            socket: sock.clone(),
            scope: Scope::All,
        };
        let mut out = Vec::new();
        let err = run(&config, true, &mut "".as_bytes(), &mut out).unwrap_err();
        assert!(err.contains(&sock.display().to_string()), "{err}");
        assert!(out.is_empty());
        drop(listener);
        // A stale socket file (the agent was killed) does not answer.
        assert!(!agent_running(&sock));
    }
}
