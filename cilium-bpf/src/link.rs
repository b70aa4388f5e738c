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
use rtnetlink::packet_route::route::RouteScope;
use rtnetlink::{Handle, LinkUnspec, LinkVeth, RouteMessageBuilder};

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
        let fd = netns
            .as_fd()
            .try_clone_to_owned()
            .map_err(|source| LinkError::Io {
                action: "duplicating the namespace descriptor".into(),
                source,
            })?;
        let opened = std::thread::spawn(move || {
            // SAFETY: `fd` is an open namespace descriptor owned by this closure; setns only
            // changes this short-lived helper thread's namespace.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(LinkError::Io {
                    action: "entering the network namespace".into(),
                    source: std::io::Error::last_os_error(),
                });
            }
            let _enter = runtime.enter();
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| LinkError::Io {
                    action: "opening a netlink socket".into(),
                    source,
                })?;
            runtime.spawn(conn);
            Ok(Netlink { handle })
        })
        .join();
        opened.unwrap_or_else(|_| {
            Err(LinkError::Io {
                action: "entering the network namespace".into(),
                source: std::io::Error::other("helper thread panicked"),
            })
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
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .output_interface(index)
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!("adding the route {dst}/{len}")))
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
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .gateway(gateway)
            .output_interface(index)
            .build();
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(kernel(format!(
                "adding the route {dst}/{len} via {gateway}"
            )))
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

    /// Removes the route to `dst/len` if there is one.
    pub async fn route_del(&self, dst: Ipv4Addr, len: u8) -> Result<(), LinkError> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, len)
            .build();
        match self.handle.route().del(msg).execute().await {
            Err(rtnetlink::Error::NetlinkError(m)) if -m.raw_code() == libc::ESRCH => Ok(()),
            other => other.map_err(kernel(format!("removing the route {dst}/{len}"))),
        }
    }
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
/// (moved into `netns`), both with `mtu` (0: default) and up; inside the pod, `ip/32`,
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
