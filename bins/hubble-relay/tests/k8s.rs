// SPDX-License-Identifier: Apache-2.0

//! The hubble-relay binary on the Kubernetes API (`--k8s-kubeconfig-path`) of the upstream
//! control plane: started before Cilium's CRDs exist, it retries, then its peers follow the
//! CiliumNodes: two nodes (fake Hubble servers on 127.0.0.x) are two connected nodes in
//! `GetNodes` (what `hubble list nodes` shows), a deleted CiliumNode leaves, a changed
//! address is followed, a node whose server is down is listed unavailable under its
//! CiliumNode's name and address. The relay dials the nodes over mutual TLS with the
//! certificates Cilium's chart makes (a node whose certificate another CA signed is
//! unavailable). No root.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cilium_hubble::observer::{Listen, ObserverService, RingSource, serve};
use cilium_hubble::proto::observer::GetNodesRequest;
use cilium_hubble::proto::relay::NodeState;
use cilium_hubble::tls::ServerTls;
use cilium_k8s::pki::{CertificateAuthority, Usage};
use cilium_k8s::testing::ControlPlane;
use kube::api::DeleteParams;

/// A fake Hubble server named `node` on `ip:port` (`port` 0: any) over `tls`, serving until
/// the test ends; returns its port.
async fn hubble_server(node: &str, ip: &str, port: u16, tls: &ServerTls) -> Result<u16, String> {
    let listener = format!("{ip}:{port}")
        .parse::<Listen>()
        .map_err(|e| e.to_string())?
        .bind()
        .await
        .map_err(|e| e.to_string())?;
    let port = match listener.address().map_err(|e| e.to_string())? {
        Listen::Tcp(address) => address.port(),
        other => return Err(format!("{other:?} is not TCP")),
    };
    let source = Arc::new(RingSource::new(node, 63).map_err(|e| format!("{e:?}"))?);
    tokio::spawn(serve(
        ObserverService::new(source),
        listener,
        Some(tls.config()?),
    ));
    Ok(port)
}

/// The certificates of the test, as Cilium's chart makes them: the cluster's CA, the
/// nodes' server certificate (`*.default.hubble-grpc.cilium.io`), the relay's client
/// certificate; and a server certificate of another CA, an impostor's.
struct Pki {
    dir: std::path::PathBuf,
    nodes: ServerTls,
    impostor: ServerTls,
}

impl Pki {
    fn new(dir: &std::path::Path) -> Pki {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let now = std::time::SystemTime::now();
        let year = now + Duration::from_secs(365 * 86400);
        let wildcard = cilium_hubble::tls::server_wildcard("default");
        let serving = Usage {
            server: true,
            client: false,
        };
        let ca = CertificateAuthority::new("Cilium CA").unwrap();
        let server = ca
            .certificate(&wildcard, &[&wildcard], serving, now, year)
            .unwrap();
        let relay = ca
            .certificate(
                "*.hubble-relay.cilium.io",
                &[],
                Usage {
                    server: false,
                    client: true,
                },
                now,
                year,
            )
            .unwrap();
        let other = CertificateAuthority::new("Cilium CA").unwrap();
        let impostor = other
            .certificate(&wildcard, &[&wildcard], serving, now, year)
            .unwrap();
        let ca_file = write("ca.crt", ca.cert_pem());
        write("relay.crt", &relay.cert_pem);
        write("relay.key", &relay.key_pem);
        Pki {
            dir: dir.to_owned(),
            nodes: ServerTls {
                cert_file: write("server.crt", &server.cert_pem),
                key_file: write("server.key", &server.key_pem),
                client_ca_files: vec![ca_file.clone()],
            },
            impostor: ServerTls {
                cert_file: write("impostor.crt", &impostor.cert_pem),
                key_file: write("impostor.key", &impostor.key_pem),
                client_ca_files: vec![ca_file],
            },
        }
    }

    /// The relay's TLS flags.
    fn relay_flags(&self) -> Vec<String> {
        let path = |n: &str| self.dir.join(n).display().to_string();
        vec![
            "--tls-hubble-server-ca-files".into(),
            path("ca.crt"),
            "--tls-client-cert-file".into(),
            path("relay.crt"),
            "--tls-client-key-file".into(),
            path("relay.key"),
        ]
    }
}

/// The fake servers, all on one port (the relay's `--peer-port`): `k8s-w1` on 127.0.0.2,
/// `k8s-w2` on 127.0.0.3 and on 127.0.0.4 (where it moves), an impostor with another CA's
/// certificate on 127.0.0.6; nothing on 127.0.0.5.
async fn hubble_servers(pki: &Pki) -> u16 {
    for _ in 0..10 {
        let port = hubble_server("k8s-w1", "127.0.0.2", 0, &pki.nodes)
            .await
            .unwrap();
        if hubble_server("k8s-w2", "127.0.0.3", port, &pki.nodes)
            .await
            .is_ok()
            && hubble_server("k8s-w2", "127.0.0.4", port, &pki.nodes)
                .await
                .is_ok()
            && hubble_server("k8s-w4", "127.0.0.6", port, &pki.impostor)
                .await
                .is_ok()
        {
            return port;
        }
    }
    panic!("no port free on 127.0.0.2, .3, .4 and .6 at once");
}

/// The relay's nodes as `hubble list nodes` shows them: name, address, connected.
async fn nodes(server: &str) -> Result<Vec<(String, String, bool)>, String> {
    let mut client = cilium_hubble::observer::connect(server, Duration::from_secs(2)).await?;
    let nodes = client
        .get_nodes(GetNodesRequest {})
        .await
        .map_err(|e| e.to_string())?
        .into_inner()
        .nodes;
    Ok(nodes
        .into_iter()
        .map(|n| {
            (
                n.name,
                n.address,
                n.state == NodeState::NodeConnected as i32,
            )
        })
        .collect())
}

/// The relay's log so far.
fn log(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Waits (30 s at most) until the relay's nodes are `want`.
async fn wait_for_nodes(server: &str, log_path: &std::path::Path, want: &[(&str, String, bool)]) {
    let want: Vec<(String, String, bool)> = want
        .iter()
        .map(|(n, a, c)| ((*n).to_owned(), a.clone(), *c))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = nodes(server).await;
        if got.as_ref() == Ok(&want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the relay's nodes are {got:?}, not {want:?}; its log:\n{}",
            log(log_path)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_peers_follow_the_ciliumnodes() {
    let cp = tokio::task::spawn_blocking(|| ControlPlane::start_for_test("relay-k8s"))
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("crs-relay-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pki = Pki::new(&dir);
    let port = hubble_servers(&pki).await;
    let socket = dir.join("relay.sock");
    let log_path = dir.join("relay.log");
    let child = Command::new(env!("CARGO_BIN_EXE_hubble-relay"))
        .args([
            "--k8s-kubeconfig-path",
            &cp.kubeconfig().display().to_string(),
            "--listen-address",
            &format!("unix://{}", socket.display()),
            "--peer-port",
            &port.to_string(),
            "--dial-timeout",
            "1s",
        ])
        .args(pki.relay_flags())
        .env_remove("KUBECONFIG")
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .spawn()
        .expect("start hubble-relay");
    let _relay = KillOnDrop(child);
    let server = format!("unix://{}", socket.display());

    // Without the CiliumNode definition the list fails: the relay serves no node and
    // tries again.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log(&log_path).contains("cannot list the nodes of the Kubernetes API yet; retrying") {
        assert!(
            Instant::now() < deadline,
            "no retry logged:\n{}",
            log(&log_path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for_nodes(&server, &log_path, &[]).await;

    let client = cilium_k8s::client(&cp.kubeconfig()).await.unwrap();
    cilium_k8s::crds::register(&client, Duration::from_secs(60))
        .await
        .unwrap();
    let at = |ip: &str| format!("{ip}:{port}");
    for (name, ip) in [("k8s-w1", [127, 0, 0, 2]), ("k8s-w2", [127, 0, 0, 3])] {
        cilium_k8s::nodes::register(client.clone(), name, ip.into())
            .await
            .unwrap();
    }
    wait_for_nodes(
        &server,
        &log_path,
        &[
            ("k8s-w1", at("127.0.0.2"), true),
            ("k8s-w2", at("127.0.0.3"), true),
        ],
    )
    .await;

    // A CiliumNode deleted: its node leaves.
    cilium_k8s::nodes::api(client.clone())
        .delete("k8s-w1", &DeleteParams::default())
        .await
        .unwrap();
    wait_for_nodes(&server, &log_path, &[("k8s-w2", at("127.0.0.3"), true)]).await;

    // An address changed: the node is asked at the new one.
    cilium_k8s::nodes::register(client.clone(), "k8s-w2", [127, 0, 0, 4].into())
        .await
        .unwrap();
    wait_for_nodes(&server, &log_path, &[("k8s-w2", at("127.0.0.4"), true)]).await;

    // A node whose Hubble server does not answer, and one whose certificate the cluster's
    // CA did not sign: listed, unavailable.
    for (name, ip) in [("k8s-w3", [127, 0, 0, 5]), ("k8s-w4", [127, 0, 0, 6])] {
        cilium_k8s::nodes::register(client.clone(), name, ip.into())
            .await
            .unwrap();
    }
    wait_for_nodes(
        &server,
        &log_path,
        &[
            ("k8s-w2", at("127.0.0.4"), true),
            ("k8s-w3", at("127.0.0.5"), false),
            ("k8s-w4", at("127.0.0.6"), false),
        ],
    )
    .await;

    let log = log(&log_path);
    for line in [
        "msg=\"following the nodes of the Kubernetes API\"",
        &format!(
            "msg=\"peer added or changed\" node=k8s-w2 address={}",
            at("127.0.0.4")
        ),
        "msg=\"peer gone\" node=k8s-w1",
    ] {
        assert!(log.contains(line), "{line} is not logged:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A child process killed (by its pid) when dropped, even when the test panics.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
