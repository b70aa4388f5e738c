// SPDX-License-Identifier: Apache-2.0

//! Network device plumbing over rtnetlink: the veth pairs of endpoints, the host device
//! (`cilium_host`), addresses and routes. Used by the CNI plugin (an endpoint's veth, its
//! address and routes inside the pod's namespace) and by the agent (the host device and
//! per-endpoint routes in the node's namespace).
//!
//! A netlink socket acts in the network namespace it was opened in: [`Netlink::open`] opens
//! one in the calling thread's namespace, [`Netlink::open_in`] in another (from a helper
//! thread that enters it). Both must be called inside a tokio runtime, which drives the
//! connection.

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::link::{
    InfoData, InfoVeth, LinkAttribute, LinkInfo as NlLinkInfo, LinkMessage,
};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// The route protocol (`rtm_protocol`; `proto 67` in `ip route`) of every route the agent
/// adds in the node's namespace: endpoint routes (`<pod ip>/32 dev lxc…`) and
/// auto-direct-node-routes (`<pod cidr> via <node ip>`). No routing daemon uses 67
/// (`/usr/share/iproute2/rt_protos`), so `cilium-dbg cleanup` removes exactly the routes
/// marked with it and leaves every other route alone. (Upstream installs its routes with
/// `proto kernel`, which the kernel's own connected routes share.)
pub const AGENT_ROUTE_PROTOCOL: u8 = 67;

/// A failed netlink operation.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The kernel refused a request.
    #[error("{action}: {message} (errno {errno})")]
    Kernel {
        /// What was being done.
        action: String,
        /// The errno the kernel returned (positive).
        errno: i32,
        /// Its description.
        message: String,
    },
    /// Opening the socket or entering a namespace failed.
    #[error("{action}: {source}")]
    Io {
        /// What was being done.
        action: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A device that must exist does not.
    #[error("no device {0:?}")]
    NoDevice(String),
}

impl LinkError {
    /// The errno, for kernel errors.
    pub fn errno(&self) -> Option<i32> {
        match self {
            LinkError::Kernel { errno, .. } => Some(*errno),
            LinkError::Io { source, .. } => source.raw_os_error(),
            LinkError::NoDevice(_) => Some(libc::ENODEV),
        }
    }
}

fn kernel(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> LinkError {
    let action = action.into();
    move |e| match e {
        rtnetlink::Error::NetlinkError(m) => {
            let errno = -m.raw_code();
            LinkError::Kernel {
                action,
                errno,
                message: std::io::Error::from_raw_os_error(errno).to_string(),
            }
        }
        other => LinkError::Kernel {
            action,
            errno: libc::EIO,
            message: other.to_string(),
        },
    }
}

/// A device's index and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index.
    pub index: u32,
    /// MAC address.
    pub mac: [u8; 6],
}

fn info_of(msg: &LinkMessage) -> LinkInfo {
    let mut mac = [0u8; 6];
    for attr in &msg.attributes {
        if let LinkAttribute::Address(bytes) = attr
            && bytes.len() == 6
        {
            mac.copy_from_slice(bytes);
        }
    }
    LinkInfo {
        index: msg.header.index,
        mac,
    }
}

/// A netlink connection bound to one network namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// A connection in the calling thread's network namespace.
    pub fn open() -> Result<Self, LinkError> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(|source| LinkError::Io {
            action: "opening a netlink socket".into(),
            source,
        })?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// A connection in the network namespace `netns` (an open `/proc/<pid>/ns/net` or
    /// `/run/netns/<name>` file). The calling thread's namespace does not change.
    pub fn open_in(netns: &File) -> Result<Self, LinkError> {
        let runtime = tokio::runtime::Handle::current();
        in_netns(netns, move || {
            let _enter = runtime.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| LinkError::Io {
                    action: "opening a netlink socket".into(),
                    source,
                })?;
            runtime.spawn(conn);
            Ok(Netlink { handle })
        })
    }

    /// The device named `name`, if it exists.
    pub async fn get(&self, name: &str) -> Result<Option<LinkInfo>, LinkError> {
        let mut stream = self
            .handle
            .link()
            .get()
            .match_name(name.to_owned())
            .execute();
        match stream.try_next().await {
            Ok(Some(msg)) => Ok(Some(info_of(&msg))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ENODEV => Ok(None),
            Err(e) => Err(kernel(format!("looking up {name}"))(e)),
        }
    }

    /// The device named `name`, which must exist.
    pub async fn require(&self, name: &str) -> Result<LinkInfo, LinkError> {
        self.get(name)
            .await?
            .ok_or_else(|| LinkError::NoDevice(name.to_owned()))
    }

    /// Creates a veth pair `name` <-> `peer` with an MTU (0: the kernel's default).
    pub async fn add_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), LinkError> {
        let mut builder = LinkVeth::new(name, peer);
        if mtu > 0 {
            builder = builder.mtu(mtu);
        }
        self.handle
            .link()
            .add(builder.build())
            .execute()
            .await
            .map_err(kernel(format!("creating veth {name}")))
    }

    /// Creates a veth pair whose peer is born in the network namespace `netns` under its
    /// final name: no move between namespaces (a move waits for the kernel to quiesce the
    /// device, tens of milliseconds), no rename. Both ends are down; MTU 0: the default.
    pub async fn add_veth_into(
        &self,
        name: &str,
        peer: &str,
        netns: &File,
        mtu: u32,
    ) -> Result<(), LinkError> {
        let mut builder = LinkVeth::new(name, peer);
        let mut peer_builder = LinkUnspec::new_with_name(peer).setns_by_fd(netns.as_raw_fd());
        if mtu > 0 {
            builder = builder.mtu(mtu);
            peer_builder = peer_builder.mtu(mtu);
        }
        let mut msg = builder.build();
        let peer_msg = peer_builder.build();
        let mut placed = false;
        for attr in &mut msg.attributes {
            if let LinkAttribute::LinkInfo(infos) = attr {
                for info in infos {
                    if let NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(p))) = info {
                        *p = peer_msg.clone();
                        placed = true;
                    }
                }
            }
        }
        if !placed {
            return Err(LinkError::Kernel {
                action: format!("creating veth {name}"),
                errno: libc::EINVAL,
                message: "the veth message has no peer to place".into(),
            });
        }
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(kernel(format!(
                "creating veth {name} with {peer} in the pod"
            )))
    }

    /// Creates a VXLAN device in collect-metadata (external) mode on `port` (Cilium's is
    /// 8472): the BPF programs choose each packet's remote and VNI. Up, MTU 0: default.
    pub async fn add_vxlan_external(&self, name: &str, port: u16) -> Result<(), LinkError> {
        let msg = rtnetlink::LinkVxlan::new(name, 0)
            .port(port)
            .collect_metadata(true)
            .learning(false)
            .up()
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(kernel(format!("creating the VXLAN device {name}")))
    }

    /// Moves a device into the network namespace `netns`.
    pub async fn move_to(&self, index: u32, netns: &File) -> Result<(), LinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(netns.as_raw_fd())
            .build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(kernel(format!(
                "moving device {index} to the pod's namespace"
            )))
    }

    /// Renames a device (it must be down), sets its MTU (0: unchanged) and brings it up.
    pub async fn rename_up(&self, index: u32, name: &str, mtu: u32) -> Result<(), LinkError> {
        let mut b = LinkUnspec::new_with_index(index).name(name);
        if mtu > 0 {
            b = b.mtu(mtu);
        }
        self.handle
            .link()
            .set(b.build())
            .execute()
            .await
            .map_err(kernel(format!("renaming device {index} to {name}")))?;
        self.up(index).await
    }

    /// Brings a device up.
    pub async fn up(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(index).up().build())
            .execute()
            .await
            .map_err(kernel(format!("bringing device {index} up")))
    }

    /// Deletes a device (a veth takes its peer with it).
    pub async fn delete(&self, index: u32) -> Result<(), LinkError> {
        self.handle
            .link()
            .del(index)
            .execute()
            .await
            .map_err(kernel(format!("deleting device {index}")))
    }

    /// Deletes the device `name` if it exists; returns whether it did.
    pub async fn delete_by_name(&self, name: &str) -> Result<bool, LinkError> {
        match self.get(name).await? {
            Some(info) => match self.delete(info.index).await {
                Ok(()) => Ok(true),
                Err(e) if e.errno() == Some(libc::ENODEV) => Ok(false),
                Err(e) => Err(e),
            },
            None => Ok(false),
        }
    }

    /// Adds `ip/prefix` to a device (an existing identical address is fine).
    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<(), LinkError> {
        match self
            .handle
            .address()
            .add(index, ip.into(), prefix)
            .execute()
            .await
        {
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::EEXIST => Ok(()),
            other => other.map_err(kernel(format!("adding {ip}/{prefix} to device {index}"))),
        }
    }

    /// Adds (or replaces) a route to `dst/len` out of device `index`, directly connected
    /// (scope link).
    pub async fn route_dev(&self, dst: Ipv4Addr, len: u8, index: u32) -> Result<(), LinkError> {
        self.replace_route(
            dev_route(dst, len, index, None),
            format!("adding the route {dst}/{len}"),
        )
        .await
    }

    /// Adds (or replaces) a route to `dst/len` via `gateway` out of device `index`
    /// (`dst` 0.0.0.0/0 is the default route).
    pub async fn route_via(
        &self,
        dst: Ipv4Addr,
        len: u8,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), LinkError> {
        self.replace_route(
            via_route(dst, len, gateway, index, None),
            format!("adding the route {dst}/{len} via {gateway}"),
        )
        .await
    }

    /// The IPv4 addresses of every device but loopback, as `(ifindex, address)`, in the
    /// kernel's order.
    pub async fn ipv4_addresses(&self) -> Result<Vec<(u32, Ipv4Addr)>, LinkError> {
        use rtnetlink::packet_route::address::AddressAttribute;
        let mut out = Vec::new();
        let mut stream = self.handle.address().get().execute();
        while let Some(msg) = stream
            .try_next()
            .await
            .map_err(kernel("listing addresses"))?
        {
            for attr in &msg.attributes {
                if let AddressAttribute::Address(std::net::IpAddr::V4(ip)) = attr
                    && !ip.is_loopback()
                {
                    out.push((msg.header.index, *ip));
                }
            }
        }
        Ok(out)
    }

    /// Every device of the namespace, in the kernel's order.
    pub async fn devices(&self) -> Result<Vec<Device>, LinkError> {
        let mut out = Vec::new();
        let mut stream = self.handle.link().get().execute();
        while let Some(msg) = stream.try_next().await.map_err(kernel("listing devices"))? {
            let name = msg.attributes.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            });
            out.push(Device {
                index: msg.header.index,
                name: name.unwrap_or_default(),
            });
        }
        Ok(out)
    }

    /// Every IPv4 route of every table.
    pub async fn routes_v4(&self) -> Result<Vec<Route>, LinkError> {
        let mut out = Vec::new();
        let mut request = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build());
        // Without strict checking the kernel ignores the table in a dump request; unspec
        // says "all tables" either way.
        request.message_mut().header.table = RouteHeader::RT_TABLE_UNSPEC;
        let mut stream = request.execute();
        while let Some(msg) = stream.try_next().await.map_err(kernel("listing routes"))? {
            if let Some(route) = Route::from_message(&msg) {
                out.push(route);
            }
        }
        Ok(out)
    }

    /// Deletes exactly `route` (same table, protocol, scope, type, gateway, device and
    /// metric). Returns false when it was already gone.
    pub async fn delete_route(&self, route: &Route) -> Result<bool, LinkError> {
        match self.handle.route().del(route.to_message()).execute().await {
            Ok(()) => Ok(true),
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => Ok(false),
            Err(e) => Err(kernel(format!("removing the route {route}"))(e)),
        }
    }

    /// Adds (or replaces) a route to `dst/len` out of device `index`, directly connected
    /// (scope link), marked with [`AGENT_ROUTE_PROTOCOL`]: the agent's endpoint routes.
    pub async fn agent_route_dev(
        &self,
        dst: Ipv4Addr,
        len: u8,
        index: u32,
    ) -> Result<(), LinkError> {
        self.replace_route(
            dev_route(dst, len, index, Some(AGENT_ROUTE_PROTOCOL)),
            format!("adding the route {dst}/{len}"),
        )
        .await
    }

    /// Adds (or replaces) a route to `dst/len` via `gateway` out of device `index`, marked
    /// with [`AGENT_ROUTE_PROTOCOL`]: the agent's routes to other nodes' pod CIDRs.
    pub async fn agent_route_via(
        &self,
        dst: Ipv4Addr,
        len: u8,
        gateway: Ipv4Addr,
        index: u32,
    ) -> Result<(), LinkError> {
        self.replace_route(
            via_route(dst, len, gateway, index, Some(AGENT_ROUTE_PROTOCOL)),
            format!("adding the route {dst}/{len} via {gateway}"),
        )
        .await
    }

    async fn replace_route(&self, msg: RouteMessage, action: String) -> Result<(), LinkError> {
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(kernel(action))
    }

    /// Removes the route to `dst/len` of the main table if there is one, whatever its
    /// protocol, scope and type (as `ip route del` asks: the kernel matches only the fields
    /// a request sets, and scope "nowhere" stands for any scope).
    pub async fn route_del(&self, dst: Ipv4Addr, len: u8) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .protocol(RouteProtocol::Unspec)
            .scope(RouteScope::NoWhere)
            .kind(RouteType::Unspec)
            .build();
        match self.handle.route().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => Ok(()),
            other => other.map_err(kernel(format!("removing the route {dst}/{len}"))),
        }
    }
}

/// A network device: its index and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
}

/// An IPv4 route as the kernel reports it (the fields that identify it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub destination: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// The next hop, if any.
    pub gateway: Option<Ipv4Addr>,
    /// The output device's index, if any.
    pub oif: Option<u32>,
    /// Routing table (254: main, 255: local).
    pub table: u32,
    /// Route protocol (`rtm_protocol`: 2 kernel, 4 static, [`AGENT_ROUTE_PROTOCOL`]...).
    pub protocol: u8,
    /// Scope (`rtm_scope`: 0 universe, 253 link, 254 host).
    pub scope: u8,
    /// Type (`rtm_type`: 1 unicast, 2 local, 3 broadcast...).
    pub kind: u8,
    /// Metric, if set.
    pub priority: Option<u32>,
}

impl Route {
    /// The route a netlink message describes (None for other families).
    fn from_message(msg: &RouteMessage) -> Option<Route> {
        let mut route = Route {
            destination: Ipv4Addr::UNSPECIFIED,
            prefix_len: msg.header.destination_prefix_length,
            gateway: None,
            oif: None,
            table: u32::from(msg.header.table),
            protocol: msg.header.protocol.into(),
            scope: msg.header.scope.into(),
            kind: msg.header.kind.into(),
            priority: None,
        };
        if msg.header.address_family != rtnetlink::packet_route::AddressFamily::Inet {
            return None;
        }
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.destination = *ip,
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Table(t) => route.table = *t,
                RouteAttribute::Priority(p) => route.priority = Some(*p),
                _ => {}
            }
        }
        Some(route)
    }

    /// The netlink message that names exactly this route.
    fn to_message(&self) -> RouteMessage {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(self.destination, self.prefix_len)
            .table_id(self.table)
            .protocol(RouteProtocol::from(self.protocol))
            .scope(RouteScope::from(self.scope))
            .kind(RouteType::from(self.kind));
        if let Some(gw) = self.gateway {
            builder = builder.gateway(gw);
        }
        if let Some(oif) = self.oif {
            builder = builder.output_interface(oif);
        }
        if let Some(p) = self.priority {
            builder = builder.priority(p);
        }
        builder.build()
    }
}

impl std::fmt::Display for Route {
    /// `ip route` style, devices by index: `10.0.0.0/24 via 1.2.3.4 dev #3 table 254
    /// proto 67 scope 0`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.destination, self.prefix_len)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        write!(
            f,
            " table {} proto {} scope {}",
            self.table, self.protocol, self.scope
        )?;
        if let Some(p) = self.priority {
            write!(f, " metric {p}")?;
        }
        Ok(())
    }
}

/// Turns IPv6 off in network namespace `netns` (`net.ipv6.conf.all.disable_ipv6` and
/// `default.disable_ipv6` set to 1, which also drops the addresses of existing devices). A
/// kernel without IPv6 has nothing to turn off. The calling thread's namespace does not
/// change: a short-lived helper thread enters `netns` and writes the sysctls.
pub fn disable_ipv6_in(netns: &File) -> Result<(), LinkError> {
    in_netns(netns, || {
        // /proc/sys/net is the namespace of the thread that opens it.
        for conf in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
            match std::fs::write(&path, "1") {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(source) => {
                    return Err(LinkError::Io {
                        action: format!("writing 1 to {path}"),
                        source,
                    });
                }
            }
        }
        Ok(())
    })
}

/// Runs `f` on a short-lived thread that has entered network namespace `netns` (an open
/// `/proc/<pid>/ns/net` or `/run/netns/<name>` file); the caller's namespace is untouched.
fn in_netns<T: Send + 'static>(
    netns: &File,
    f: impl FnOnce() -> Result<T, LinkError> + Send + 'static,
) -> Result<T, LinkError> {
    let fd = netns
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| LinkError::Io {
            action: "duplicating the namespace descriptor".into(),
            source,
        })?;
    let done = std::thread::spawn(move || {
        // SAFETY: `fd` is an open namespace descriptor owned by this closure; setns only
        // changes this short-lived helper thread's namespace.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(LinkError::Io {
                action: "entering the network namespace".into(),
                source: std::io::Error::last_os_error(),
            });
        }
        f()
    })
    .join();
    done.unwrap_or_else(|_| {
        Err(LinkError::Io {
            action: "entering the network namespace".into(),
            source: std::io::Error::other("helper thread panicked"),
        })
    })
}

/// What [`setup_endpoint_veth`] made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointLink {
    /// The host side (in the caller's namespace).
    pub host: LinkInfo,
    /// The container side (in the pod's namespace).
    pub container: LinkInfo,
}

/// Wires a pod: a veth pair `host_name` (in the calling thread's namespace) <-> `ifname`
/// (moved into `netns`), both with `mtu` (0: default) and up; IPv6 off inside the pod
/// ([`disable_ipv6_in`]: the datapath is IPv4-only); inside the pod, `ip/32`,
/// a link-scope route to `router/32` and a default route via `router`. Fails with `EEXIST`
/// when `host_name` or the pod's `ifname` already exist; on any failure after the pair was
/// made, the pair is deleted, so nothing is left behind.
pub async fn setup_endpoint_veth(
    host_name: &str,
    netns: &File,
    ifname: &str,
    ip: Ipv4Addr,
    router: Ipv4Addr,
    mtu: u32,
) -> Result<EndpointLink, LinkError> {
    let host = Netlink::open()?;
    let pod = Netlink::open_in(netns)?;
    for (nl, name, place) in [(&host, host_name, "host"), (&pod, ifname, "pod")] {
        if nl.get(name).await?.is_some() {
            return Err(LinkError::Kernel {
                action: format!("creating {name} in the {place} namespace"),
                errno: libc::EEXIST,
                message: "the interface already exists".into(),
            });
        }
    }
    host.add_veth_into(host_name, ifname, netns, mtu).await?;
    let result = async {
        // The datapath is IPv4-only: without IPv6 the pod sends no router solicitations
        // and neighbour discovery, which from_container would drop as an unsupported L3
        // protocol (as Cilium's CNI does when the agent has IPv6 disabled).
        disable_ipv6_in(netns)?;
        let peer = pod.require(ifname).await?;
        pod.up(peer.index).await?;
        if let Some(lo) = pod.get("lo").await? {
            pod.up(lo.index).await?;
        }
        pod.add_address(peer.index, ip, 32).await?;
        pod.route_dev(router, 32, peer.index).await?;
        pod.route_via(Ipv4Addr::UNSPECIFIED, 0, router, peer.index)
            .await?;
        let container = pod.require(ifname).await?;
        let host_link = host.require(host_name).await?;
        host.up(host_link.index).await?;
        Ok(EndpointLink {
            host: host_link,
            container,
        })
    }
    .await;
    if result.is_err() {
        // Deleting either end removes both.
        let _ = host.delete_by_name(host_name).await;
        let _ = pod.delete_by_name(ifname).await;
    }
    result
}

/// A link-scope route to `dst/len` out of device `index`, marked with `protocol` if given.
fn dev_route(dst: Ipv4Addr, len: u8, index: u32, protocol: Option<u8>) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, len)
        .output_interface(index)
        .scope(RouteScope::Link);
    match protocol {
        Some(p) => b.protocol(RouteProtocol::from(p)).build(),
        None => b.build(),
    }
}

/// A route to `dst/len` via `gateway` out of device `index`, marked with `protocol` if given.
fn via_route(
    dst: Ipv4Addr,
    len: u8,
    gateway: Ipv4Addr,
    index: u32,
    protocol: Option<u8>,
) -> RouteMessage {
    let b = RouteMessageBuilder::<Ipv4Addr>::new()
        .destination_prefix(dst, len)
        .gateway(gateway)
        .output_interface(index);
    match protocol {
        Some(p) => b.protocol(RouteProtocol::from(p)).build(),
        None => b.build(),
    }
}
