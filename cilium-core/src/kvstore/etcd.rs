// SPDX-License-Identifier: Apache-2.0

//! The etcd backend of [`KvStore`] (feature `etcd`), for clusters: the same operations on
//! a real etcd (v3 API, tested against etcd 3.4).
//!
//! - Session keys (`put_ephemeral`, `create_only_ephemeral`) are attached to this client's
//!   lease, granted at connect and kept alive every TTL/3 by a background task (Cilium's
//!   session lease: 15 minutes by default). When the process dies the keys go when the
//!   lease expires. If the lease is lost (etcd was away longer than the TTL), a new one is
//!   granted and every key written with `put_ephemeral` is written again; locks taken with
//!   `create_only_ephemeral` are not (their holder must take them again).
//! - `create_only`, `compare_and_swap` and `delete_if` are single etcd transactions.
//! - A watch resumes by itself after a disconnection, from the revision after the last
//!   change it delivered; when etcd has compacted that revision away it reports
//!   [`KvError::Compacted`].
//!
//! ```no_run
//! # async fn run() -> Result<(), cilium_core::kvstore::KvError> {
//! use cilium_core::kvstore::KvStore;
//! use cilium_core::kvstore::etcd::EtcdStore;
//!
//! let store = EtcdStore::connect(&["http://127.0.0.1:2379".to_owned()], std::time::Duration::from_secs(900)).await?;
//! store.put_ephemeral("cilium/state/nodes/v1/default/k8s-w1", b"{}").await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};

use super::{EventKind, KeyValue, KvError, KvStore, KvWatch, Listing, WatchEvent, check_key};

#[allow(
    clippy::needless_pass_by_value,
    reason = "used as map_err(unavailable)"
)]
fn unavailable(e: etcd_client::Error) -> KvError {
    KvError::Unavailable(e.to_string())
}

/// A client of an etcd cluster, with its session lease.
pub struct EtcdStore {
    client: Client,
    lease: Arc<AtomicI64>,
    /// Keys written with `put_ephemeral`, to write again under a new lease.
    session_keys: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    keeper: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("lease", &self.lease_id())
            .finish_non_exhaustive()
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EtcdStore {
    /// Connects to etcd (`http://host:port` endpoints) and grants the session lease of
    /// `session_ttl` (at least one second). Needs a tokio runtime (time and I/O enabled).
    pub async fn connect(endpoints: &[String], session_ttl: Duration) -> Result<Self, KvError> {
        let config = crate::config::EtcdConfig {
            endpoints: endpoints.to_vec(),
            ..Default::default()
        };
        Self::connect_with(&config, session_ttl).await
    }

    /// [`EtcdStore::connect`] with an [`EtcdConfig`](crate::config::EtcdConfig): over TLS
    /// when it names a CA (`trusted-ca-file`), with its client certificate when it names
    /// one (an etcd with `--client-cert-auth`). A TLS file that cannot be read is an
    /// error naming it.
    pub async fn connect_with(
        config: &crate::config::EtcdConfig,
        session_ttl: Duration,
    ) -> Result<Self, KvError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some(ca) = &config.trusted_ca_file {
            let read = |p: &std::path::Path, what: &str| {
                std::fs::read(p)
                    .map_err(|e| KvError::Unavailable(format!("etcd {what} {}: {e}", p.display())))
            };
            let mut tls = etcd_client::TlsOptions::new().ca_certificate(
                etcd_client::Certificate::from_pem(read(ca, "trusted-ca-file")?),
            );
            if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
                tls = tls.identity(etcd_client::Identity::from_pem(
                    read(cert, "cert-file")?,
                    read(key, "key-file")?,
                ));
            }
            options = options.with_tls(tls);
        }
        let endpoints = &config.endpoints;
        let mut client = Client::connect(endpoints, Some(options))
            .await
            .map_err(unavailable)?;
        let ttl = session_ttl.as_secs().max(1) as i64;
        let granted = client.lease_grant(ttl, None).await.map_err(unavailable)?;
        let lease = Arc::new(AtomicI64::new(granted.id()));
        let session_keys = Arc::new(Mutex::new(BTreeMap::new()));
        let keeper = tokio::spawn(keep_alive(
            client.clone(),
            lease.clone(),
            session_keys.clone(),
            ttl,
        ));
        Ok(EtcdStore {
            client,
            lease,
            session_keys,
            keeper,
        })
    }

    /// The session lease's id.
    pub fn lease_id(&self) -> i64 {
        self.lease.load(Ordering::SeqCst)
    }

    /// Ends the session now: revokes the lease, so every session key goes at once.
    pub async fn close(self) -> Result<(), KvError> {
        self.keeper.abort();
        let mut c = self.client.clone();
        c.lease_revoke(self.lease_id())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    fn client(&self) -> Client {
        self.client.clone()
    }

    async fn txn(&self, txn: Txn) -> Result<bool, KvError> {
        Ok(self
            .client()
            .txn(txn)
            .await
            .map_err(unavailable)?
            .succeeded())
    }

    async fn list(&self, prefix: &str) -> Result<Listing, KvError> {
        let resp = self
            .client()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(unavailable)?;
        let revision = resp.header().map_or(0, |h| h.revision().max(0) as u64);
        let mut items: Vec<KeyValue> = resp
            .kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((items, revision))
    }
}

/// Renews the lease every TTL/3; when it is gone, grants a new one and writes the session
/// keys again. Retries every second while etcd is away.
async fn keep_alive(
    mut client: Client,
    lease: Arc<AtomicI64>,
    session_keys: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    ttl: i64,
) {
    let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(300));
    loop {
        let id = lease.load(Ordering::SeqCst);
        let alive = match client.lease_keep_alive(id).await {
            Ok((mut keeper, mut stream)) => match keeper.keep_alive().await {
                Ok(()) => match stream.message().await {
                    Ok(Some(resp)) => Some(resp.ttl() > 0),
                    _ => None,
                },
                Err(_) => None,
            },
            Err(_) => None,
        };
        match alive {
            Some(true) => tokio::time::sleep(period).await,
            Some(false) => {
                // The lease expired while we were away: a new session.
                if let Ok(granted) = client.lease_grant(ttl, None).await {
                    lease.store(granted.id(), Ordering::SeqCst);
                    let keys: Vec<(String, Vec<u8>)> = lock(&session_keys)
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    for (k, v) in keys {
                        let opts = PutOptions::new().with_lease(granted.id());
                        let _ = client.put(k, v, Some(opts)).await;
                    }
                } else {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
            None => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

impl KvStore for EtcdStore {
    type Watch = EtcdWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        let resp = self.client().get(key, None).await.map_err(unavailable)?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        self.client()
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(unavailable)
    }

    async fn create_only(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        self.txn(
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, None)]),
        )
        .await
    }

    async fn compare_and_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        self.txn(
            Txn::new()
                .when([Compare::value(key, CompareOp::Equal, old)])
                .and_then([TxnOp::put(key, new, None)]),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        lock(&self.session_keys).remove(key);
        let resp = self.client().delete(key, None).await.map_err(unavailable)?;
        Ok(resp.deleted() > 0)
    }

    async fn delete_if(&self, key: &str, old: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        let done = self
            .txn(
                Txn::new()
                    .when([Compare::value(key, CompareOp::Equal, old)])
                    .and_then([TxnOp::delete(key, None)]),
            )
            .await?;
        if done {
            lock(&self.session_keys).remove(key);
        }
        Ok(done)
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        let opts = PutOptions::new().with_lease(self.lease_id());
        self.client()
            .put(key, value, Some(opts))
            .await
            .map_err(unavailable)?;
        lock(&self.session_keys).insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn create_only_ephemeral(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        let opts = PutOptions::new().with_lease(self.lease_id());
        self.txn(
            Txn::new()
                .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key, value, Some(opts))]),
        )
        .await
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, KvError> {
        Ok(self.list(prefix).await?.0)
    }

    async fn list_prefix_revision(&self, prefix: &str) -> Result<Listing, KvError> {
        self.list(prefix).await
    }

    async fn watch_prefix(&self, prefix: &str, after_revision: u64) -> Result<EtcdWatch, KvError> {
        let next = if after_revision == 0 {
            // From now on: after the store's current revision.
            self.list("cilium/.revision-probe").await?.1 + 1
        } else {
            after_revision + 1
        };
        let mut watch = EtcdWatch {
            client: self.client(),
            prefix: prefix.to_owned(),
            next,
            stream: None,
            pending: VecDeque::new(),
        };
        watch.open().await?;
        Ok(watch)
    }
}

/// A watch on etcd: changes under a prefix in revision order, resumed after
/// disconnections.
pub struct EtcdWatch {
    client: Client,
    prefix: String,
    /// The first revision not yet delivered.
    next: u64,
    stream: Option<WatchStream>,
    pending: VecDeque<WatchEvent>,
}

impl std::fmt::Debug for EtcdWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdWatch")
            .field("prefix", &self.prefix)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl EtcdWatch {
    async fn open(&mut self) -> Result<(), KvError> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next as i64);
        let stream = self
            .client
            .watch(self.prefix.as_str(), Some(opts))
            .await
            .map_err(unavailable)?;
        self.stream = Some(stream);
        Ok(())
    }

    /// Reads one response; Ok(false) when the stream broke and must be reopened.
    async fn read(&mut self) -> Result<bool, KvError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(false);
        };
        let Ok(Some(resp)) = stream.message().await else {
            return Ok(false);
        };
        if resp.compact_revision() > 0 {
            return Err(KvError::Compacted {
                revision: resp.compact_revision() as u64,
            });
        }
        if resp.canceled() {
            return Ok(false);
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision().max(0) as u64;
            if revision < self.next {
                continue;
            }
            self.pending.push_back(WatchEvent {
                revision,
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                kind: match event.event_type() {
                    EventType::Put => EventKind::Put(kv.value().to_vec()),
                    EventType::Delete => EventKind::Delete,
                },
            });
        }
        Ok(true)
    }
}

impl KvWatch for EtcdWatch {
    async fn next(&mut self) -> Result<WatchEvent, KvError> {
        {
            let mut backoff = Duration::from_millis(100);
            loop {
                if let Some(e) = self.pending.pop_front() {
                    self.next = e.revision + 1;
                    return Ok(e);
                }
                if self.read().await? {
                    continue;
                }
                // The stream broke (etcd restarted, connection lost): reopen from `next`.
                self.stream = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match self.open().await {
                    Ok(()) => backoff = Duration::from_millis(100),
                    Err(KvError::Unavailable(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
}

/// An etcd server process this program started (tests, the lab): its data directory, its
/// client and peer URLs. Stopped (killed, by pid) on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Option<std::process::Child>,
    command: Vec<String>,
    /// How many leading words of `command` are the wrapper (`ip netns exec NS`).
    wrapper_len: usize,
    /// A directory removed on drop (the data of a server started by `start_for_test`).
    owned_dir: Option<std::path::PathBuf>,
    /// The URL clients connect to (`http://ip:port`, `https://` with TLS).
    pub endpoint: String,
    tls: Option<EtcdServerTls>,
}

/// An etcd server's TLS: it serves clients over TLS and requires a client certificate
/// signed by `ca_file` (`--client-cert-auth`). The client files are what its own readiness
/// check (`etcdctl`) uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdServerTls {
    /// The CA of the server's and the clients' certificates (`--trusted-ca-file`).
    pub ca_file: std::path::PathBuf,
    /// The server's certificate (`--cert-file`), naming the client address.
    pub cert_file: std::path::PathBuf,
    /// Its key (`--key-file`).
    pub key_file: std::path::PathBuf,
    /// A client certificate the CA signed, for the readiness check.
    pub client_cert_file: std::path::PathBuf,
    /// Its key.
    pub client_key_file: std::path::PathBuf,
}

impl EtcdServer {
    /// Starts `etcd` with its data in `data_dir`, serving clients on `client` and peers on
    /// `peer`; `wrapper` prefixes the command (e.g. `ip netns exec NS`). Waits until it
    /// answers (up to 20 s).
    pub fn start(
        data_dir: &std::path::Path,
        client: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        wrapper: &[String],
    ) -> Result<Self, String> {
        Self::start_binary(
            std::path::Path::new("etcd"),
            data_dir,
            client,
            peer,
            wrapper,
        )
    }

    /// [`EtcdServer::start`] with another etcd program than the `etcd` of `PATH` (the
    /// Kubernetes control plane runs the etcd its apiserver is built against).
    pub fn start_binary(
        binary: &std::path::Path,
        data_dir: &std::path::Path,
        client: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        wrapper: &[String],
    ) -> Result<Self, String> {
        Self::start_binary_tls(binary, data_dir, client, peer, wrapper, None)
    }

    /// [`EtcdServer::start_binary`] serving clients over mutual TLS when `tls` is given
    /// (`https://` client URL, `--client-cert-auth`; peers stay on plain `http://`).
    pub fn start_binary_tls(
        binary: &std::path::Path,
        data_dir: &std::path::Path,
        client: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        wrapper: &[String],
        tls: Option<EtcdServerTls>,
    ) -> Result<Self, String> {
        let name = "default";
        let scheme = if tls.is_some() { "https" } else { "http" };
        let mut command: Vec<String> = wrapper.to_vec();
        command.extend([
            binary.display().to_string(),
            format!("--name={name}"),
            format!("--data-dir={}", data_dir.display()),
            format!("--listen-client-urls={scheme}://{client}"),
            format!("--advertise-client-urls={scheme}://{client}"),
            format!("--listen-peer-urls=http://{peer}"),
            format!("--initial-advertise-peer-urls=http://{peer}"),
            format!("--initial-cluster={name}=http://{peer}"),
            "--log-level=error".to_owned(),
        ]);
        if let Some(t) = &tls {
            command.extend([
                "--client-cert-auth".to_owned(),
                format!("--trusted-ca-file={}", t.ca_file.display()),
                format!("--cert-file={}", t.cert_file.display()),
                format!("--key-file={}", t.key_file.display()),
            ]);
        }
        let mut server = EtcdServer {
            child: None,
            command,
            wrapper_len: wrapper.len(),
            owned_dir: None,
            endpoint: format!("{scheme}://{client}"),
            tls,
        };
        server.run()?;
        server.wait_ready(client)?;
        Ok(server)
    }

    fn run(&mut self) -> Result<(), String> {
        let child = std::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting etcd ({}): {e}", self.command[0]))?;
        self.child = Some(child);
        Ok(())
    }

    /// Whether the server answers: a TCP connection when it runs here, `etcdctl endpoint
    /// health` through the same wrapper when it runs elsewhere (another namespace).
    fn answers(&self, client: std::net::SocketAddr) -> bool {
        let wrapper: Vec<&String> = self.command[..self.wrapper_len].iter().collect();
        let Some((first, rest)) = wrapper.split_first() else {
            return std::net::TcpStream::connect_timeout(&client, Duration::from_millis(200))
                .is_ok();
        };
        let tls: Vec<String> = self
            .tls
            .iter()
            .flat_map(|t| {
                [
                    format!("--cacert={}", t.ca_file.display()),
                    format!("--cert={}", t.client_cert_file.display()),
                    format!("--key={}", t.client_key_file.display()),
                ]
            })
            .collect();
        std::process::Command::new(first)
            .args(rest)
            .args([
                "etcdctl",
                "--dial-timeout=1s",
                "--endpoints",
                &self.endpoint,
            ])
            .args(tls)
            .args(["endpoint", "health"])
            .env("ETCDCTL_API", "3")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn wait_ready(&mut self, client: std::net::SocketAddr) -> Result<(), String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("etcd exited at start: {status}"));
            }
            if self.answers(client) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err("etcd did not answer within 20 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// For tests: an etcd on 127.0.0.1 (free ports) with its data in a fresh directory under
    /// the temp dir, removed with the server. `None` (after printing `<test>: skipped: etcd
    /// not installed`) when there is no `etcd` binary; under CI (`$CI` set) that is a panic
    /// instead, since CI installs it.
    pub fn start_for_test(test: &str) -> Option<EtcdServer> {
        Self::start_for_test_tls(test, None)
    }

    /// [`EtcdServer::start_for_test`] serving over mutual TLS when `tls` is given.
    pub fn start_for_test_tls(test: &str, tls: Option<EtcdServerTls>) -> Option<EtcdServer> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let installed = std::process::Command::new("etcd")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: etcd is not installed (scripts/deps.sh installs etcd-server)"
            );
            eprintln!("{test}: skipped: etcd not installed");
            return None;
        }
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap_or_else(|e| panic!("{test}: no free port: {e}"))
        };
        let dir = std::env::temp_dir().join(format!(
            "crs-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{test}: {e}"));
        let mut server = EtcdServer::start_binary_tls(
            std::path::Path::new("etcd"),
            &dir.join("data"),
            free(),
            free(),
            &[],
            tls,
        )
        .unwrap_or_else(|e| panic!("{test}: {e}"));
        server.owned_dir = Some(dir);
        Some(server)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(std::process::Child::id)
    }

    /// Leaves the server running after this value is dropped (a lab that outlives the
    /// command that started it); returns its pid.
    pub fn detach(mut self) -> Option<u32> {
        self.owned_dir = None;
        self.child.take().map(|c| c.id())
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same data and addresses.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.run()?;
        let addr = self
            .endpoint
            .split_once("://")
            .map_or(self.endpoint.as_str(), |(_, a)| a)
            .parse()
            .map_err(|e| format!("endpoint {}: {e}", self.endpoint))?;
        self.wait_ready(addr)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.owned_dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
