// SPDX-License-Identifier: Apache-2.0

//! The Observer API over mutual TLS on a real TCP socket, with certificates as Cilium's
//! chart makes them (a CA, a server certificate for `*.<cluster>.hubble-grpc.cilium.io`, a
//! client certificate): the client with its certificate is served; one without, one signed
//! by another CA, an expired one, a plain-text client and a client expecting another server
//! name are refused; and the bytes on the wire carry no flow content (they do in plain text).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use cilium_hubble::observer::connect_with;
use cilium_hubble::proto::observer::GetFlowsRequest;
use cilium_hubble::tls::{ClientTls, ServerTls, server_name, server_wildcard};
use cilium_k8s::pki::{CertificateAuthority, CertifiedKey, Usage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

/// A node name that shows up in the responses (`node_name`), to look for on the wire.
const NODE: &str = "tls-node-5e4d3c";

struct Files {
    dir: std::path::PathBuf,
}

impl Files {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("crs-hubble-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Files { dir }
    }

    fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn pair(&self, name: &str, ck: &CertifiedKey) -> (std::path::PathBuf, std::path::PathBuf) {
        (
            self.write(&format!("{name}.crt"), &ck.cert_pem),
            self.write(&format!("{name}.key"), &ck.key_pem),
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const CLIENT: Usage = Usage {
    server: false,
    client: true,
};

/// Asks for the last flows; the node names of the answers.
async fn last_flows(server: &str, tls: Option<&ClientTls>) -> Result<Vec<String>, String> {
    let mut client = connect_with(server, Duration::from_secs(3), tls).await?;
    let mut stream = client
        .get_flows(GetFlowsRequest {
            number: 3,
            ..Default::default()
        })
        .await
        .map_err(|s| s.to_string())?
        .into_inner();
    let mut nodes = Vec::new();
    while let Some(item) = stream.message().await.map_err(|s| s.to_string())? {
        nodes.push(item.node_name);
    }
    Ok(nodes)
}

/// A TCP proxy on 127.0.0.1 to `target` that keeps every byte it carries.
async fn recording_proxy(target: String) -> (String, Arc<Mutex<Vec<u8>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                continue;
            };
            let (ri, wi) = inbound.into_split();
            let (ro, wo) = outbound.into_split();
            for (mut r, mut w) in [
                (
                    Box::new(ri) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(wo) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(ro), Box::new(wi)),
            ] {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = r.read(&mut buf).await {
                        // Recorded before it is passed on: whatever a client has read,
                        // the record holds.
                        record.lock().unwrap().extend_from_slice(&buf[..n]);
                        if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = w.shutdown().await;
                });
            }
        }
    });
    (address, seen)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_serves_only_clients_the_ca_signed() {
    let files = Files::new();
    let ca = CertificateAuthority::new("Cilium CA").unwrap();
    let other_ca = CertificateAuthority::new("Cilium CA").unwrap();
    let now = SystemTime::now();
    let year = now + Duration::from_secs(365 * 86400);
    let wildcard = server_wildcard("default");
    let server = ca
        .certificate(
            &wildcard,
            &[&wildcard],
            Usage {
                server: true,
                client: false,
            },
            now,
            year,
        )
        .unwrap();
    // The client's certificate from the CA rebuilt from its PEM (as `cilium upgrade` does
    // with Secret cilium-ca): what it issues verifies against the first certificate.
    let client = CertificateAuthority::from_pem("Cilium CA", ca.cert_pem(), &ca.key_pem())
        .unwrap()
        .certificate("*.hubble-relay.cilium.io", &[], CLIENT, now, year)
        .unwrap();
    let foreign = other_ca
        .certificate("*.hubble-relay.cilium.io", &[], CLIENT, now, year)
        .unwrap();
    let day = Duration::from_secs(86400);
    let expired = ca
        .certificate(
            "*.hubble-relay.cilium.io",
            &[],
            CLIENT,
            now - 2 * day,
            now - day,
        )
        .unwrap();
    let ca_file = files.write("ca.crt", ca.cert_pem());
    let other_ca_file = files.write("other-ca.crt", other_ca.cert_pem());
    let (server_crt, server_key) = files.pair("server", &server);

    let source = support::source(NODE, 7);
    for port in [80, 81] {
        source.push(support::flow_at(NODE, port, 3, false));
    }
    let tls = ServerTls {
        cert_file: server_crt,
        key_file: server_key,
        client_ca_files: vec![ca_file.clone()],
    }
    .config()
    .unwrap();
    let (_task, address) = support::serve_tls_on(&source, "127.0.0.1:0", Some(tls)).await;
    let with = |pair: Option<&CertifiedKey>, name: &str, ca: &std::path::Path| {
        let (cert_file, key_file) = match pair {
            Some(ck) => {
                let (c, k) = files.pair(name, ck);
                (Some(c), Some(k))
            }
            None => (None, None),
        };
        ClientTls {
            ca_files: vec![ca.to_owned()],
            cert_file,
            key_file,
            server_name: Some(server_name("k8s-w1", "default")),
        }
    };

    // The CA's client, through a proxy that records the wire: served, nothing in clear.
    let (proxied, wire) = recording_proxy(address.clone()).await;
    let good = with(Some(&client), "client", &ca_file);
    let mut nodes = Err(String::new());
    for _ in 0..50 {
        nodes = last_flows(&proxied, Some(&good)).await;
        if nodes.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(nodes.unwrap(), [NODE, NODE]);
    let captured = wire.lock().unwrap().clone();
    assert!(captured.len() > 1000, "{} bytes", captured.len());
    assert!(
        !contains(&captured, NODE),
        "the node's name crossed in clear"
    );

    // Refused: no certificate, another CA's, an expired one, plain text, and a server
    // certificate that does not carry the expected name or is not trusted.
    let refused = [
        ("no client certificate", with(None, "none", &ca_file)),
        (
            "another CA's certificate",
            with(Some(&foreign), "foreign", &ca_file),
        ),
        (
            "an expired certificate",
            with(Some(&expired), "expired", &ca_file),
        ),
        (
            "another cluster's server name",
            ClientTls {
                server_name: Some(server_name("k8s-w1", "other")),
                ..good.clone()
            },
        ),
        (
            "a server the client's CA did not sign",
            ClientTls {
                ca_files: vec![other_ca_file.clone()],
                ..good.clone()
            },
        ),
    ];
    for (what, tls) in &refused {
        let got = last_flows(&address, Some(tls)).await;
        assert!(got.is_err(), "{what}: served {got:?}");
    }
    let plain = last_flows(&address, None).await;
    assert!(plain.is_err(), "plain text: served {plain:?}");

    // The same exchange in plain text shows the node's name on the wire: the check above
    // would see it.
    let plain_source = support::source(NODE, 7);
    plain_source.push(support::flow_at(NODE, 80, 3, false));
    let (_plain_task, plain_address) =
        support::serve_tls_on(&plain_source, "127.0.0.1:0", None).await;
    let (proxied, wire) = recording_proxy(plain_address).await;
    assert_eq!(last_flows(&proxied, None).await.unwrap(), [NODE]);
    assert!(contains(&wire.lock().unwrap(), NODE));
}
