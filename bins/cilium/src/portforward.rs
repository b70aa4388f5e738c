// SPDX-License-Identifier: Apache-2.0

//! Port forwarding to a Service, as `kubectl port-forward svc/NAME LOCAL:PORT` does it and
//! `cilium hubble port-forward` / `cilium hubble ui` use it: a local TCP listener; each
//! connection accepted is carried to one ready pod behind the Service through the API's
//! `pods/portforward` (a WebSocket, `v4.channel.k8s.io`, which the apiserver passes to the
//! pod's kubelet), at the Service port's `targetPort` (a number, or a container port's
//! name). The pod is looked up again for each connection, so a restarted pod is found.

use std::net::SocketAddr;

use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Api;
use kube::api::ListParams;
use tokio::net::{TcpListener, TcpStream};

/// A Service port to forward to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub service: String,
    /// The Service port (`port`, not `targetPort`).
    pub port: u16,
}

/// A pod behind the Service and the port on it that the Service port leads to.
async fn backend(client: &kube::Client, target: &Target) -> Result<(String, u16), String> {
    let Target {
        namespace,
        service,
        port,
    } = target;
    let svc = Api::<Service>::namespaced(client.clone(), namespace)
        .get_opt(service)
        .await
        .map_err(|e| format!("service {namespace}/{service}: {e}"))?
        .ok_or_else(|| format!("service {namespace}/{service} not found"))?;
    let spec = svc.spec.unwrap_or_default();
    let sp = spec
        .ports
        .unwrap_or_default()
        .into_iter()
        .find(|p| p.port == i32::from(*port))
        .ok_or_else(|| format!("service {namespace}/{service} has no port {port}"))?;
    let selector = spec
        .selector
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("service {namespace}/{service} has no selector"))?;
    let labels: Vec<String> = selector.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&labels.join(",")))
        .await
        .map_err(|e| format!("pods of service {namespace}/{service}: {e}"))?;
    let ready = |p: &Pod| {
        p.status.as_ref().is_some_and(|s| {
            s.phase.as_deref() == Some("Running")
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
        })
    };
    let pod = pods
        .items
        .into_iter()
        .find(ready)
        .ok_or_else(|| format!("no ready pod behind service {namespace}/{service}"))?;
    let name = pod.metadata.name.clone().unwrap_or_default();
    let pod_port = match sp.target_port {
        None => *port,
        Some(IntOrString::Int(n)) => u16::try_from(n)
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| format!("service {namespace}/{service}: targetPort {n}"))?,
        Some(IntOrString::String(named)) => pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| format!("pod {namespace}/{name} has no port named {named:?}"))?,
    };
    Ok((name, pod_port))
}

/// Binds `address:local_port` (0: a free port) after checking that `target` has a ready
/// pod, then forwards every connection until the future is dropped. `bound` is told the
/// address listened on before the first connection is taken.
pub async fn forward(
    client: &kube::Client,
    target: &Target,
    address: &str,
    local_port: u16,
    bound: impl FnOnce(SocketAddr),
) -> Result<(), String> {
    backend(client, target).await?;
    let listener = TcpListener::bind((address, local_port))
        .await
        .map_err(|e| format!("unable to listen on {address}:{local_port}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    bound(local);
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("⚠️  accepting a connection on {local}: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (client, target) = (client.clone(), target.clone());
        tokio::spawn(async move {
            if let Err(e) = carry(&client, &target, conn).await {
                eprintln!("⚠️  forwarding a connection from {peer}: {e}");
            }
        });
    }
}

/// One local connection, carried to the pod until either side ends.
async fn carry(client: &kube::Client, target: &Target, mut conn: TcpStream) -> Result<(), String> {
    let (pod, port) = backend(client, target).await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &target.namespace);
    let mut forwarder = pods
        .portforward(&pod, &[port])
        .await
        .map_err(|e| format!("port-forward to pod {}/{pod}: {e}", target.namespace))?;
    let mut upstream = forwarder
        .take_stream(port)
        .ok_or("port-forward gave no stream")?;
    let error = forwarder
        .take_error(port)
        .ok_or("port-forward gave no error channel")?;
    let result = tokio::select! {
        copied = tokio::io::copy_bidirectional(&mut conn, &mut upstream) => {
            copied.map(drop).map_err(|e| e.to_string())
        }
        Some(message) = error => Err(message),
    };
    drop(upstream);
    forwarder.abort();
    result
}
