// SPDX-License-Identifier: Apache-2.0

//! The kvstore on an etcd that requires client certificates (`--client-cert-auth`), as
//! production clusters run it: a client reading `kvstore-opt etcd.config=<file>` with
//! `trusted-ca-file`, `cert-file` and `key-file` (Cilium's keys) writes and reads; a
//! client without a certificate, with another CA's, with an expired one, or in plain text
//! is refused. Needs the `etcd` binary (CI installs it); no root.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cilium_core::config::{EtcdConfig, etcd_config_of, parse_kvstore_opt};
use cilium_core::kvstore::KvStore;
use cilium_core::kvstore::etcd::{EtcdServer, EtcdServerTls, EtcdStore};
use cilium_k8s::pki::{CertificateAuthority, CertifiedKey, Usage};

const CLIENT: Usage = Usage {
    server: false,
    client: true,
};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn pair(dir: &Path, name: &str, ck: &CertifiedKey) -> (PathBuf, PathBuf) {
    (
        write(dir, &format!("{name}.crt"), &ck.cert_pem),
        write(dir, &format!("{name}.key"), &ck.key_pem),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_with_client_certificates_serves_only_its_clients() {
    let dir = Dir(std::env::temp_dir().join(format!("crs-etcd-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let d = &dir.0;
    let now = SystemTime::now();
    let year = now + Duration::from_secs(365 * 86400);
    let day = Duration::from_secs(86400);
    let ca = CertificateAuthority::new("etcd CA").unwrap();
    let other = CertificateAuthority::new("etcd CA").unwrap();
    let server = ca
        .serving(&["localhost"], &["127.0.0.1".parse().unwrap()])
        .unwrap();
    let ca_file = write(d, "ca.crt", ca.cert_pem());
    let (server_cert, server_key) = pair(d, "server", &server);
    let (client_cert, client_key) = pair(
        d,
        "client",
        &ca.certificate("cilium-agent", &[], CLIENT, now, year)
            .unwrap(),
    );
    let tls = EtcdServerTls {
        ca_file: ca_file.clone(),
        cert_file: server_cert,
        key_file: server_key,
        client_cert_file: client_cert.clone(),
        client_key_file: client_key.clone(),
    };
    let Some(etcd) = EtcdServer::start_for_test_tls("etcd_tls", Some(tls)) else {
        return;
    };
    assert!(etcd.endpoint.starts_with("https://"), "{}", etcd.endpoint);

    // The client as the agent is configured: kvstore-opt etcd.config=<file>.
    let config_file = write(
        d,
        "etcd.config",
        &format!(
            "---\nendpoints:\n- {}\ntrusted-ca-file: {}\ncert-file: {}\nkey-file: {}\n",
            etcd.endpoint,
            ca_file.display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    let opts = parse_kvstore_opt(&format!("etcd.config={}", config_file.display())).unwrap();
    let good = etcd_config_of(&opts).unwrap();
    let ttl = Duration::from_secs(10);
    let store = EtcdStore::connect_with(&good, ttl)
        .await
        .expect("the CA's client connects");
    store
        .put("cilium/state/test/v1/k", b"over-tls")
        .await
        .unwrap();
    assert_eq!(
        store
            .get("cilium/state/test/v1/k")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"over-tls"[..])
    );

    let (foreign_cert, foreign_key) = pair(
        d,
        "foreign",
        &other
            .certificate("cilium-agent", &[], CLIENT, now, year)
            .unwrap(),
    );
    let (expired_cert, expired_key) = pair(
        d,
        "expired",
        &ca.certificate("cilium-agent", &[], CLIENT, now - 2 * day, now - day)
            .unwrap(),
    );
    let refused = [
        (
            "no client certificate",
            EtcdConfig {
                cert_file: None,
                key_file: None,
                ..good.clone()
            },
        ),
        (
            "another CA's certificate",
            EtcdConfig {
                cert_file: Some(foreign_cert),
                key_file: Some(foreign_key),
                ..good.clone()
            },
        ),
        (
            "an expired certificate",
            EtcdConfig {
                cert_file: Some(expired_cert),
                key_file: Some(expired_key),
                ..good.clone()
            },
        ),
        (
            "plain text",
            EtcdConfig {
                endpoints: vec![etcd.endpoint.replace("https://", "http://")],
                ..EtcdConfig::default()
            },
        ),
        (
            "a server the client's CA did not sign",
            EtcdConfig {
                trusted_ca_file: Some(write(d, "other-ca.crt", other.cert_pem())),
                ..good.clone()
            },
        ),
    ];
    for (what, config) in refused {
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            let store = EtcdStore::connect_with(&config, ttl).await?;
            store.get("cilium/state/test/v1/k").await
        })
        .await
        .expect("an answer within 30 s");
        assert!(got.is_err(), "{what}: served {got:?}");
    }
    // A file that cannot be read is named.
    let missing = EtcdConfig {
        cert_file: Some(d.join("absent.crt")),
        ..good
    };
    let e = EtcdStore::connect_with(&missing, ttl).await.unwrap_err();
    assert!(e.to_string().contains("absent.crt"), "{e}");
}
