// SPDX-License-Identifier: Apache-2.0

//! TLS for the Observer API over TCP, as Cilium configures it: a node serves with its
//! certificate and requires a client certificate from one of the client CAs
//! (`hubble-tls-cert-file`, `hubble-tls-key-file`, `hubble-tls-client-ca-files`); the relay
//! and the `hubble` CLI dial with the CA that signed the servers and their own certificate,
//! naming the server as Cilium names a node's ([`server_name`]).
//!
//! Files are PEM: certificates (several may share a file, as a CA bundle), and a PKCS#8,
//! PKCS#1 or SEC1 private key. They are read when a listener or a connection is made, so a
//! rotated certificate is used from the next restart or dial on.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Identity};
/// tonic's configurations, as [`ServerTls::config`] and [`ClientTls::config`] make them.
pub use tonic::transport::{ClientTlsConfig, ServerTlsConfig};

/// The domain under which Cilium names nodes' Hubble servers.
pub const SERVER_NAME_DOMAIN: &str = "hubble-grpc.cilium.io";

/// The TLS server name of node `node` in cluster `cluster`, as Cilium's peers announce it:
/// `<node>.<cluster>.hubble-grpc.cilium.io`, dots in the node's name made hyphens so that
/// the name stays one label (a certificate for `*.<cluster>.hubble-grpc.cilium.io` covers
/// every node of the cluster).
pub fn server_name(node: &str, cluster: &str) -> String {
    format!("{}.{cluster}.{SERVER_NAME_DOMAIN}", node.replace('.', "-"))
}

/// The wildcard name a cluster's Hubble server certificate carries.
pub fn server_wildcard(cluster: &str) -> String {
    format!("*.{cluster}.{SERVER_NAME_DOMAIN}")
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&data);
    let wanted = if what.contains("key") {
        "PRIVATE KEY-----"
    } else {
        "-----BEGIN CERTIFICATE-----"
    };
    if !text.contains(wanted) {
        return Err(format!(
            "{what} {}: no PEM {wanted:?} block",
            path.display()
        ));
    }
    Ok(data)
}

/// Every certificate of `files`, one bundle.
fn bundle(files: &[PathBuf], what: &str) -> Result<Certificate, String> {
    let mut pem = Vec::new();
    for f in files {
        pem.extend(read(f, what)?);
        pem.push(b'\n');
    }
    Ok(Certificate::from_pem(pem))
}

/// A server's TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerTls {
    /// The server's certificate (`hubble-tls-cert-file`).
    pub cert_file: PathBuf,
    /// Its private key (`hubble-tls-key-file`).
    pub key_file: PathBuf,
    /// The CAs whose client certificates are accepted (`hubble-tls-client-ca-files`); none:
    /// no client certificate is asked for (TLS without client authentication).
    pub client_ca_files: Vec<PathBuf>,
}

impl ServerTls {
    /// Reads the files into a server configuration; a missing or non-PEM file is an error
    /// naming it.
    pub fn config(&self) -> Result<ServerTlsConfig, String> {
        let cert = read(&self.cert_file, "TLS certificate")?;
        let key = read(&self.key_file, "TLS key")?;
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if !self.client_ca_files.is_empty() {
            config = config.client_ca_root(bundle(&self.client_ca_files, "client CA")?);
        }
        Ok(config)
    }
}

/// A client's TLS files.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientTls {
    /// The CAs that sign the servers (required: no system roots are trusted).
    pub ca_files: Vec<PathBuf>,
    /// The client's certificate, for servers that require one.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
    /// The name the server's certificate must carry, when it is not the dialed host
    /// (`--tls-server-name`; the relay sets each node's [`server_name`]).
    pub server_name: Option<String>,
}

impl ClientTls {
    /// Reads the files into a client configuration.
    pub fn config(&self) -> Result<ClientTlsConfig, String> {
        if self.ca_files.is_empty() {
            return Err("TLS needs the CA certificate of the servers (--tls-ca-cert-files)".into());
        }
        let mut config = ClientTlsConfig::new().ca_certificate(bundle(&self.ca_files, "CA")?);
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(
                    read(cert, "TLS client certificate")?,
                    read(key, "TLS client key")?,
                ));
            }
            (None, None) => {}
            _ => {
                return Err(
                    "a TLS client certificate needs both its certificate and its key file".into(),
                );
            }
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }

    /// The same files for another server name.
    pub fn with_server_name(&self, name: &str) -> ClientTls {
        ClientTls {
            server_name: Some(name.to_owned()),
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_follow_cilium() {
        assert_eq!(
            server_name("k8s-w1", "default"),
            "k8s-w1.default.hubble-grpc.cilium.io"
        );
        assert_eq!(
            server_name("ip-10-0-0-1.ec2.internal", "prod"),
            "ip-10-0-0-1-ec2-internal.prod.hubble-grpc.cilium.io"
        );
        assert_eq!(
            server_wildcard("default"),
            "*.default.hubble-grpc.cilium.io"
        );
    }

    #[test]
    fn missing_and_non_pem_files_are_named() {
        let dir = std::env::temp_dir().join(format!("hubble-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let server = ServerTls {
            cert_file: dir.join("absent.crt"),
            key_file: junk.clone(),
            client_ca_files: vec![],
        };
        let e = server.config().unwrap_err();
        assert!(e.contains("absent.crt"), "{e}");
        let server = ServerTls {
            cert_file: junk.clone(),
            ..server
        };
        let e = server.config().unwrap_err();
        assert!(e.contains("junk.pem") && e.contains("PEM"), "{e}");
        assert!(ClientTls::default().config().is_err());
        let half = ClientTls {
            ca_files: vec![junk.clone()],
            ..Default::default()
        };
        assert!(half.config().unwrap_err().contains("junk.pem"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
