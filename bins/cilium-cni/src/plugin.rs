// SPDX-License-Identifier: Apache-2.0

//! The commands, against the local agent's API.
//!
//! - ADD: `POST /ipam` for the pod, the veth pair (host `lxc<hash>`, pod `CNI_IFNAME` with
//!   the IP, a route to the router and a default route), `PUT /endpoint/0` (returns once the
//!   endpoint is ready). A failure at any step undoes the earlier ones: the veth is deleted
//!   and the IP released.
//! - DEL: `DELETE /endpoint/container-id:<id>` and the veth. Idempotent; when the agent
//!   is down, the deletion is queued in `<socket dir>/deleteQueue/` and the agent replays
//!   it when it starts.
//! - CHECK: the endpoint exists and is ready, both ends of the veth exist, and the pod's
//!   interface has the endpoint's address and those `prevResult` gives it.
//! - GC: deletes the endpoints (and veths) of attachments not in
//!   `cni.dev/valid-attachments`; goes on after a failure and reports them all.
//! - STATUS: the agent answers `/healthz`.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use cilium_agent::client::{Client, ClientError};
use cilium_bpf::link::{LinkError, Netlink, setup_endpoint_veth};
use ipnet::IpNet;
use serde_json::{Value, json};

use crate::host_veth_name;
use crate::spec::{
    CniEnv, CniError, CniResult, Command, Interface, IpConfig, NetConf, Route, code,
};

/// The default agent socket.
pub const DEFAULT_SOCKET: &str = "/var/run/cilium/cilium.sock";

/// The agent socket: the netconf's `agent-socket`, `$CILIUM_SOCK`, then the default.
pub fn agent_socket(conf: &NetConf, env_sock: Option<String>) -> PathBuf {
    if let Some(Value::String(s)) = conf.extra.get("agent-socket")
        && !s.is_empty()
    {
        return PathBuf::from(s);
    }
    match env_sock {
        Some(s) if !s.is_empty() => PathBuf::from(s.strip_prefix("unix://").unwrap_or(&s)),
        _ => PathBuf::from(DEFAULT_SOCKET),
    }
}

/// Where DEL queues deletions while the agent is down.
pub fn delete_queue(socket: &Path) -> PathBuf {
    socket
        .parent()
        .unwrap_or(Path::new("/var/run/cilium"))
        .join("deleteQueue")
}

fn agent_err(e: &ClientError) -> CniError {
    let unreachable = e.0.starts_with("cannot reach");
    CniError::new(
        if unreachable {
            code::AGENT_UNREACHABLE
        } else {
            code::AGENT_REFUSED
        },
        if unreachable {
            "unable to connect to the cilium agent"
        } else {
            "the cilium agent refused the request"
        },
    )
    .with_details(e.0.clone())
}

fn link_err(what: &str, e: &LinkError) -> CniError {
    let c = if e.errno() == Some(libc::EEXIST) {
        code::INTERFACE_EXISTS
    } else {
        code::IO
    };
    CniError::new(c, what.to_owned()).with_details(e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(code::IO, "starting a runtime").with_details(e.to_string()))
}

fn required<'a>(v: Option<&'a str>, name: &str) -> Result<&'a str, CniError> {
    v.ok_or_else(|| CniError::new(code::INVALID_ENV, format!("{name} is required")))
}

/// Runs one command; returns the JSON to print on success (None: print nothing).
pub fn run(env: &CniEnv, conf: &NetConf, socket: &Path) -> Result<Option<Value>, CniError> {
    let client = Client::new(&socket.to_string_lossy());
    match env.command {
        Command::Add => add(env, conf, &client).map(Some),
        Command::Del => del(env, &client, socket).map(|()| None),
        Command::Check => check(env, conf, &client).map(|()| None),
        Command::Gc => gc(conf, &client).map(|()| None),
        Command::Status => match client.call("GET", "/healthz", None) {
            Ok(_) => Ok(None),
            Err(e) => Err(
                CniError::new(code::UNAVAILABLE, "the cilium agent is not available")
                    .with_details(e.0),
            ),
        },
        Command::Version => Ok(Some(crate::spec::version_json())),
    }
}

fn add(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<Value, CniError> {
    let container = required(env.container_id.as_deref(), "CNI_CONTAINERID")?;
    let ifname = required(env.ifname.as_deref(), "CNI_IFNAME")?;
    let netns_path = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is required"))?;
    let netns = File::open(netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "cannot open the container's network namespace",
        )
        .with_details(format!("{}: {e}", netns_path.display()))
    })?;
    let (ns, pod) = env.pod().unwrap_or(("", ""));
    let owner = if pod.is_empty() {
        container.to_owned()
    } else {
        format!("{ns}/{pod}")
    };
    let ipam = client
        .call(
            "POST",
            &format!("/ipam?family=ipv4&owner={}", url_escape(&owner)),
            None,
        )
        .map_err(|e| agent_err(&e))?;
    let parse_ip = |v: &Value| v.as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
    let (Some(ip), Some(router)) = (
        parse_ip(&ipam["ipv4"]["ip"]),
        parse_ip(&ipam["ipv4"]["gateway"]),
    ) else {
        return Err(
            CniError::new(code::AGENT_REFUSED, "the agent's IPAM answer has no IPv4")
                .with_details(ipam.to_string()),
        );
    };
    let release = || {
        let _ = client.call("DELETE", &format!("/ipam/{ip}"), None);
    };
    let host_name = host_veth_name(container, ifname);
    let mtu = conf.mtu.unwrap_or(0);
    let rt = runtime()?;
    let link = match rt.block_on(setup_endpoint_veth(
        &host_name, &netns, ifname, ip, router, mtu,
    )) {
        Ok(l) => l,
        Err(e) => {
            release();
            return Err(link_err("setting up the pod's interface", &e));
        }
    };
    let mac = |m: [u8; 6]| {
        m.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let request = json!({
        "addressing": {"ipv4": ip.to_string()},
        "mac": mac(link.container.mac),
        "container-id": container,
        "container-interface-name": ifname,
        "interface-name": host_name,
        "interface-index": link.host.index,
        "k8s-namespace": ns,
        "k8s-pod-name": pod,
        "netns": netns_path.to_string_lossy(),
        "sync-build-endpoint": true,
    });
    if let Err(e) = client.call("PUT", "/endpoint/0", Some(&request)) {
        let _ = rt.block_on(async {
            let nl = Netlink::open()?;
            nl.delete_by_name(&host_name).await
        });
        release();
        return Err(agent_err(&e));
    }
    let result = CniResult {
        interfaces: vec![
            Interface {
                name: host_name.clone(),
                mac: mac(link.host.mac),
                mtu: conf.mtu,
                sandbox: None,
            },
            Interface {
                name: ifname.to_owned(),
                mac: mac(link.container.mac),
                mtu: conf.mtu,
                sandbox: Some(netns_path.to_string_lossy().into_owned()),
            },
        ],
        ips: vec![IpConfig {
            address: IpNet::new(IpAddr::V4(ip), 32).unwrap_or(IpNet::V4(Default::default())),
            gateway: Some(IpAddr::V4(router)),
            interface: Some(1),
        }],
        routes: vec![Route {
            dst: "0.0.0.0/0".parse().unwrap_or(IpNet::V4(Default::default())),
            gw: Some(IpAddr::V4(router)),
            mtu: None,
        }],
    };
    Ok(result.to_json(conf.negotiate()?))
}

fn del(env: &CniEnv, client: &Client, socket: &Path) -> Result<(), CniError> {
    let container = required(env.container_id.as_deref(), "CNI_CONTAINERID")?;
    let ifname = env.ifname.as_deref().unwrap_or("eth0");
    match client.call(
        "DELETE",
        &format!("/endpoint/container-id:{container}"),
        None,
    ) {
        Ok(_) => {}
        Err(e) if e.0.starts_with("[404") => {}
        Err(e) if e.0.starts_with("cannot reach") => {
            // Queue it: the agent deletes the endpoint when it comes back.
            let dir = delete_queue(socket);
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(container), container))
                .map_err(|io| {
                    CniError::new(code::IO, "queueing the deletion").with_details(io.to_string())
                })?;
        }
        Err(e) => return Err(agent_err(&e)),
    }
    let host_name = host_veth_name(container, ifname);
    let rt = runtime()?;
    rt.block_on(async {
        let nl = Netlink::open()?;
        nl.delete_by_name(&host_name).await
    })
    .map_err(|e| link_err("deleting the pod's interface", &e))?;
    Ok(())
}

fn check(env: &CniEnv, conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let container = required(env.container_id.as_deref(), "CNI_CONTAINERID")?;
    let ifname = required(env.ifname.as_deref(), "CNI_IFNAME")?;
    let ep = client
        .call("GET", &format!("/endpoint/container-id:{container}"), None)
        .map_err(|e| agent_err(&e))?;
    let state = ep["status"]["state"].as_str().unwrap_or("unknown");
    if state != "ready" {
        return Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("the endpoint is {state}"),
        ));
    }
    let host_name = host_veth_name(container, ifname);
    let netns_path = env
        .netns
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_ENV, "CNI_NETNS is required"))?;
    let netns = File::open(netns_path).map_err(|e| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            "cannot open the container's network namespace",
        )
        .with_details(e.to_string())
    })?;
    let rt = runtime()?;
    let (host, pod, addresses) = rt
        .block_on(async {
            let host = Netlink::open()?.get(&host_name).await?;
            let in_pod = Netlink::open_in(&netns)?;
            let pod = in_pod.get(ifname).await?;
            Ok::<_, LinkError>((host, pod, in_pod.ipv4_addresses().await?))
        })
        .map_err(|e| link_err("checking the interfaces", &e))?;
    let (Some(_), Some(pod)) = (host, pod) else {
        return Err(CniError::new(
            code::IO,
            format!("interface missing: {host_name} on the host or {ifname} in the pod"),
        ));
    };
    for ip in expected_addresses(conf.prev_result.as_ref(), ifname, &ep) {
        if !addresses.contains(&(pod.index, ip)) {
            return Err(CniError::new(
                code::IO,
                format!("address {ip} missing on {ifname} in the pod"),
            ));
        }
    }
    Ok(())
}

/// The IPv4 addresses CHECK expects on the pod's interface `ifname`: the endpoint's, as
/// the agent holds it, and those `prevResult` gives that interface (its `ips` whose
/// `interface` is the sandbox interface named `ifname`; the spec has CHECK consult
/// `prevResult` for the expected addresses). Addresses of other interfaces, such as
/// those a later plugin of the chain added, are not this plugin's to check.
pub fn expected_addresses(
    prev_result: Option<&Value>,
    ifname: &str,
    endpoint: &Value,
) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = endpoint["status"]["networking"]["addressing"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["ipv4"].as_str()?.parse().ok())
        .collect();
    if let Some(prev) = prev_result {
        for ip in prev["ips"].as_array().into_iter().flatten() {
            let Some(iface) = ip["interface"]
                .as_u64()
                .and_then(|i| prev["interfaces"].get(usize::try_from(i).ok()?))
            else {
                continue;
            };
            let ours =
                iface["name"] == ifname && iface["sandbox"].as_str().is_some_and(|s| !s.is_empty());
            let addr = ip["address"]
                .as_str()
                .and_then(|a| a.split('/').next()?.parse::<Ipv4Addr>().ok());
            if let (true, Some(addr)) = (ours, addr)
                && !out.contains(&addr)
            {
                out.push(addr);
            }
        }
    }
    out
}

fn gc(conf: &NetConf, client: &Client) -> Result<(), CniError> {
    let valid = valid_attachments(conf);
    let endpoints = client
        .call("GET", "/endpoint", None)
        .map_err(|e| agent_err(&e))?;
    let rt = runtime()?;
    // As the spec asks: go on after an error, remove as much as possible, report them all.
    let mut errors = Vec::new();
    for stale in stale_endpoints(&valid, &endpoints) {
        match client.call("DELETE", &format!("/endpoint/{}", stale.id), None) {
            // Gone already (a DEL in between): nothing left to do at the agent.
            Ok(_) => {}
            Err(e) if e.0.starts_with("[404") => {}
            Err(e) => {
                errors.push(agent_err(&e));
                continue;
            }
        }
        if stale.host_interface.is_empty() {
            continue;
        }
        if let Err(e) = rt.block_on(async {
            let nl = Netlink::open()?;
            nl.delete_by_name(&stale.host_interface).await
        }) {
            errors.push(link_err("deleting a stale pod's interface", &e));
        }
    }
    let Some(first) = errors.first() else {
        return Ok(());
    };
    let details: Vec<String> = errors.iter().map(ToString::to_string).collect();
    Err(
        CniError::new(first.code, format!("GC: {} failure(s)", errors.len()))
            .with_details(details.join("; ")),
    )
}

/// GC's `cni.dev/valid-attachments` as (container id, ifname) pairs. `cni.dev/attachments`,
/// the name an earlier text of the spec gave it (libcni sends both), is read when the
/// other is absent, so that a runtime following that text does not see every attachment
/// removed. Neither: no attachment is valid (what `cnitool gc` asks for).
pub fn valid_attachments(conf: &NetConf) -> Vec<(String, String)> {
    conf.extra
        .get("cni.dev/valid-attachments")
        .or_else(|| conf.extra.get("cni.dev/attachments"))
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|a| {
                    Some((
                        a["containerID"].as_str()?.to_owned(),
                        a["ifname"].as_str().unwrap_or("eth0").to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An endpoint GC removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaleEndpoint {
    /// The agent's endpoint id.
    pub id: u64,
    /// Its container id.
    pub container_id: String,
    /// Its host-side interface.
    pub host_interface: String,
}

/// The endpoints of the agent's `GET /endpoint` list that belong to no valid attachment
/// (container id and interface name). Endpoints without a container id (not made by a
/// CNI ADD) are never stale.
pub fn stale_endpoints(valid: &[(String, String)], endpoints: &Value) -> Vec<StaleEndpoint> {
    endpoints
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ep| {
            let container = ep["status"]["external-identifiers"]["container-id"]
                .as_str()
                .filter(|c| !c.is_empty())?;
            let networking = &ep["status"]["networking"];
            let ifname = networking["container-interface-name"]
                .as_str()
                .unwrap_or("eth0");
            if valid.iter().any(|(c, i)| c == container && i == ifname) {
                return None;
            }
            Some(StaleEndpoint {
                id: ep["id"].as_u64()?,
                container_id: container.to_owned(),
                host_interface: networking["interface-name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            })
        })
        .collect()
}

/// Escapes a query value (pod owners are `<ns>/<pod>`).
fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
