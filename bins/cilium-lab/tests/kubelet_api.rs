// SPDX-License-Identifier: Apache-2.0

//! The lab kubelet's API server (`cilium_lab::kubelet::server`) as the real apiserver and an
//! unmodified kubectl use it: a control plane on 127.0.0.1 (`ControlPlane::start_for_test`,
//! which gives the apiserver a kubelet client certificate and our CA), the server on a free
//! port with a serving certificate from that CA, a Node pointing at it (InternalIP
//! 127.0.0.1, its port as `daemonEndpoints.kubeletEndpoint`, `ExtendWebSocketsToKubelet`
//! declared so the apiserver proxies WebSocket exec as it is) and a Pod bound to it, whose
//! container `main` runs host commands and has log files in a temp dir (`sidecar` is in the
//! spec but "not running"). Then `kubectl exec` (output, stderr, exit codes, stdin, a
//! terminal with its size) and `kubectl logs` (whole, tail, previous, limit, follow,
//! refusals), and port-forward (kube-rs' WebSocket, as `cilium hubble port-forward` uses
//! it, to a Service's pod). The TLS and HTTP checks that need no apiserver (client certificates, SPDY,
//! unknown pods, health) talk to the server directly. Not privileged: no namespaces, any
//! user.

#![forbid(unsafe_code)]

use std::io::{BufRead, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cilium_k8s::pki::{CertificateAuthority, CertifiedKey};
use cilium_k8s::testing::ControlPlane;
use cilium_lab::kubelet::server::{Containers, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NODE: &str = "kubelet-api-node";
/// The longest any one kubectl may take.
const KUBECTL_TIMEOUT: Duration = Duration::from_secs(60);

/// Pod `default/p`: container `main` runs on this host, `sidecar` is not running.
struct TestContainers {
    dir: PathBuf,
    /// The log file of main's current run (a restart changes it).
    current_log: Mutex<PathBuf>,
}

impl TestContainers {
    fn check(&self, namespace: &str, pod: &str, container: &str) -> Result<(), String> {
        if (namespace, pod, container) == ("default", "p", "main") {
            Ok(())
        } else {
            Err(format!(
                "container {container:?} is not running in pod {namespace}/{pod}"
            ))
        }
    }
}

impl Containers for TestContainers {
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: &[String],
    ) -> Result<Command, String> {
        self.check(namespace, pod, container)?;
        let (program, args) = argv.split_first().ok_or("no command")?;
        let mut command = Command::new(program);
        command.args(args).current_dir(&self.dir);
        Ok(command)
    }

    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, String> {
        self.check(namespace, pod, container)?;
        if previous {
            Ok(self.dir.join("previous.log"))
        } else {
            Ok(self.current_log.lock().expect("lock").clone())
        }
    }

    /// Pod `default/p` is on this host's network (its ports are this host's).
    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, String> {
        self.check(namespace, pod, "main").map(|()| None)
    }
}

/// A temp dir removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kubelet-api-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server on 127.0.0.1 (a free port), on its own runtime; dropping the runtime stops
/// it.
struct Kubelet {
    /// Runs the server; dropping it stops it.
    _runtime: tokio::runtime::Runtime,
    port: u16,
}

impl Kubelet {
    fn start(ca: &CertificateAuthority, containers: Arc<dyn Containers>) -> Kubelet {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let serving = ca
            .serving(&["kubelet"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
            .expect("serving certificate");
        let ca_pem = ca.cert_pem().to_owned();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
            .expect("listener");
        let port = listener.local_addr().expect("address").port();
        runtime.spawn(async move {
            let served = serve(
                listener,
                &serving.cert_pem,
                &serving.key_pem,
                &ca_pem,
                containers,
            )
            .await;
            panic!("the kubelet API stopped: {served:?}");
        });
        Kubelet {
            _runtime: runtime,
            port,
        }
    }
}

/// One HTTP/1.1 exchange over TLS with the server (`request` should close the connection):
/// the raw response, or why the connection failed.
async fn https(
    port: u16,
    ca_pem: &str,
    client: Option<&CertifiedKey>,
    request: &str,
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA"))
        .expect("CA");
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).expect("key"),
            )
            .expect("client certificate"),
        None => builder.with_no_client_auth(),
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let name = ServerName::from(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tls.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                // A peer that closes without close_notify: what came is the answer.
                Err(_) if !response.is_empty() => break,
                Err(e) => return Err(format!("read: {e}")),
            }
        }
        Ok(String::from_utf8_lossy(&response).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| "no answer in 30 s".to_owned())?
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_only_clients_with_a_certificate_from_its_ca() {
    let dir = TempDir::new("tls");
    std::fs::write(dir.0.join("current.log"), "x\n").expect("log");
    let ca = CertificateAuthority::new("test CA").expect("CA");
    let serving = ca
        .serving(&["kubelet"], &[IpAddr::V4(Ipv4Addr::LOCALHOST)])
        .expect("serving");
    let containers = Arc::new(TestContainers {
        current_log: Mutex::new(dir.0.join("current.log")),
        dir: dir.0.clone(),
    });
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("listener");
    let port = listener.local_addr().expect("address").port();
    let ca_pem = ca.cert_pem().to_owned();
    let server = tokio::spawn(async move {
        serve(
            listener,
            &serving.cert_pem,
            &serving.key_pem,
            &ca_pem,
            containers,
        )
        .await
    });
    let client = ca
        .client("kube-apiserver-kubelet-client", &["system:masters"])
        .expect("client");

    let ok = https(port, ca.cert_pem(), Some(&client), &get("/healthz"))
        .await
        .expect("healthz with a certificate");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("\r\n\r\nok"), "{ok}");

    let refused = https(port, ca.cert_pem(), None, &get("/healthz")).await;
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    let other_ca = CertificateAuthority::new("another CA").expect("CA");
    let stranger = other_ca.client("someone", &[]).expect("client");
    let refused = https(port, ca.cert_pem(), Some(&stranger), &get("/healthz")).await;
    assert!(
        refused.is_err(),
        "served a certificate from another CA: {refused:?}"
    );

    // SPDY, as the apiserver sends it to a Node that does not declare WebSocket support.
    let spdy = "POST /exec/default/p/main?command=true&output=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                Connection: Upgrade, close\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n\r\n";
    let answer = https(port, ca.cert_pem(), Some(&client), spdy)
        .await
        .expect("spdy");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("WebSocket only"), "{answer}");
    assert!(answer.contains("ExtendWebSocketsToKubelet"), "{answer}");
    let plain = https(
        port,
        ca.cert_pem(),
        Some(&client),
        &get("/exec/default/p/main?command=true&output=1"),
    )
    .await
    .expect("exec without upgrade");
    assert!(plain.starts_with("HTTP/1.1 400"), "{plain}");
    assert!(plain.contains("needs a WebSocket upgrade"), "{plain}");
    let unknown = https(
        port,
        ca.cert_pem(),
        Some(&client),
        &get("/exec/default/nope/main?command=true&output=1"),
    )
    .await
    .expect("unknown pod");
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(
        unknown.contains("is not running in pod default/nope"),
        "{unknown}"
    );
    let no_stream = https(
        port,
        ca.cert_pem(),
        Some(&client),
        &get("/exec/default/p/main?command=true"),
    )
    .await
    .expect("no stream");
    assert!(no_stream.starts_with("HTTP/1.1 400"), "{no_stream}");
    let logs = https(
        port,
        ca.cert_pem(),
        Some(&client),
        &get("/containerLogs/default/p/main"),
    )
    .await
    .expect("logs");
    assert!(logs.starts_with("HTTP/1.1 200"), "{logs}");
    assert!(logs.contains("chunked"), "{logs}");
    assert!(logs.contains("\r\n\r\n2\r\nx\n\r\n0\r\n"), "{logs}");
    let missing = https(port, ca.cert_pem(), Some(&client), &get("/stats/summary"))
        .await
        .expect("unknown path");
    assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");

    assert!(!server.is_finished(), "the server stopped");
    server.abort();
}

/// What a kubectl run gave.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn kubectl_command(cp: &ControlPlane, args: &[&str]) -> Command {
    let mut command = Command::new(cp.kubectl_path());
    command
        .arg(format!("--kubeconfig={}", cp.kubeconfig().display()))
        .args(args);
    command
}

/// A thread that reads `source` to its end.
fn read_all(mut source: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = source.read_to_end(&mut out);
        out
    })
}

/// Waits (bounded) for a child to exit; kills it and panics if it does not.
fn wait_bounded(child: &mut Child, what: &str, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs kubectl with `input` on its stdin (none: no stdin), bounded.
fn kubectl(cp: &ControlPlane, args: &[&str], input: Option<Vec<u8>>) -> Run {
    let mut child = kubectl_command(cp, args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let code = wait_bounded(&mut child, &format!("kubectl {args:?}"), KUBECTL_TIMEOUT);
    Run {
        code,
        stdout: String::from_utf8_lossy(&stdout.join().expect("stdout")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr")).into_owned(),
    }
}

/// Runs kubectl on a terminal of `rows` x `cols` (its stdin and stdout), bounded: its exit
/// code and what it wrote on the terminal.
fn kubectl_on_terminal(cp: &ControlPlane, args: &[&str], rows: u16, cols: u16) -> Run {
    use rustix::pty::OpenptFlags;
    let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
    let master = rustix::pty::openpt(flags).expect("openpt");
    rustix::pty::grantpt(&master).expect("grantpt");
    rustix::pty::unlockpt(&master).expect("unlockpt");
    let terminal =
        std::fs::File::from(rustix::pty::ioctl_tiocgptpeer(&master, flags).expect("pty"));
    let size = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(&master, size).expect("window size");
    let mut command = kubectl_command(cp, args);
    command
        .stdin(terminal.try_clone().expect("terminal"))
        .stdout(terminal)
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("kubectl");
    // Only kubectl holds the terminal now: reading ends (EIO) when it exits.
    drop(command);
    let screen = read_all(std::fs::File::from(master));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let code = wait_bounded(&mut child, &format!("kubectl {args:?}"), KUBECTL_TIMEOUT);
    Run {
        code,
        stdout: String::from_utf8_lossy(&screen.join().expect("terminal")).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().expect("stderr")).into_owned(),
    }
}

/// Lines a child writes on stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits (bounded) until `lines` gives `want`.
fn wait_for_line(lines: &mpsc::Receiver<String>, want: &str) {
    let deadline = Instant::now() + KUBECTL_TIMEOUT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if line == want => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line {want:?} from kubectl logs -f; got {seen:?}");
}

fn append(path: &std::path::Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("log");
    f.write_all(text.as_bytes()).expect("append");
}

#[test]
fn kubectl_exec_and_logs_through_the_apiserver() {
    let cp = ControlPlane::start_for_test("kubectl_exec_and_logs_through_the_apiserver");
    let dir = TempDir::new("cp");
    let current = dir.0.join("current.log");
    std::fs::write(&current, "first\nsecond\nthird\n").expect("log");
    std::fs::write(dir.0.join("previous.log"), "an earlier run\n").expect("log");
    let containers = Arc::new(TestContainers {
        dir: dir.0.clone(),
        current_log: Mutex::new(current.clone()),
    });
    let kubelet = Kubelet::start(cp.ca(), containers.clone());

    // The Node as a kubelet registers it, pointing the apiserver at the server.
    cp.add_ready_node(NODE, Ipv4Addr::LOCALHOST).expect("node");
    let status = serde_json::json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet.port}},
        "declaredFeatures": ["ExtendWebSocketsToKubelet"],
    }});
    cp.kubectl(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])
    .expect("node status");
    let declared = cp
        .kubectl(&[
            "get",
            "node",
            NODE,
            "-o",
            "jsonpath={.status.declaredFeatures} {.status.daemonEndpoints.kubeletEndpoint.Port}",
        ])
        .expect("node");
    assert_eq!(
        declared,
        format!("[\"ExtendWebSocketsToKubelet\"] {}", kubelet.port)
    );
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: default\n  \
         labels: {{app: p}}\n  annotations: {{kubectl.kubernetes.io/default-container: \
         main}}\nspec:\n  nodeName: \
         {NODE}\n  containers:\n  - {{name: main, image: busybox}}\n  - {{name: sidecar, \
         image: busybox}}\n"
    );
    cp.kubectl_input(&["apply", "-f", "-"], Some(&pod))
        .expect("pod");
    cp.set_pod_status("p", Ipv4Addr::LOCALHOST, true)
        .expect("pod status");

    // exec: output, stderr and the exit code apart.
    let run = kubectl(&cp, &["exec", "p", "--", "echo", "hello"], None);
    assert_eq!(
        (run.code, run.stdout.as_str()),
        (Some(0), "hello\n"),
        "{run:?}"
    );
    let run = kubectl(
        &cp,
        &[
            "exec",
            "p",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
        None,
    );
    assert_eq!(run.code, Some(3), "{run:?}");
    assert_eq!(run.stdout, "out\n", "{run:?}");
    assert!(run.stderr.starts_with("err\n"), "{run:?}");
    // The command runs where the Containers implementation says (its directory).
    let run = kubectl(&cp, &["exec", "p", "--", "pwd"], None);
    assert_eq!(
        run.stdout.trim(),
        dir.0.canonicalize().expect("dir").display().to_string(),
        "{run:?}"
    );

    // stdin, beyond one message (kubectl sends 32 KiB at a time) and then closed.
    let input: Vec<u8> = (0..200_000u32)
        .flat_map(|i| format!("{i}\n").into_bytes())
        .collect();
    let run = kubectl(&cp, &["exec", "-i", "p", "--", "cat"], Some(input.clone()));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.as_bytes() == input.as_slice(),
        "cat gave {} bytes of {}",
        run.stdout.len(),
        input.len()
    );
    let run = kubectl(
        &cp,
        &["exec", "-i", "p", "--", "wc", "-l"],
        Some(b"a\nb\nc\n".to_vec()),
    );
    assert_eq!(run.stdout.trim(), "3", "{run:?}");

    // -t without -i: kubectl uses no terminal, the command runs all the same.
    let run = kubectl(&cp, &["exec", "-t", "p", "--", "echo", "x"], None);
    assert_eq!((run.code, run.stdout.as_str()), (Some(0), "x\n"), "{run:?}");
    // -it on a terminal: the command gets one, of the client's size; exit codes pass.
    let run = kubectl_on_terminal(
        &cp,
        &[
            "exec",
            "-it",
            "p",
            "--",
            "sh",
            "-c",
            "tty; stty size; exit 4",
        ],
        33,
        101,
    );
    assert_eq!(run.code, Some(4), "{run:?}");
    assert!(run.stdout.contains("/dev/pts/"), "{run:?}");
    assert!(run.stdout.contains("33 101"), "{run:?}");

    // A container the pod has but that does not run: the server's message reaches kubectl.
    let run = kubectl(&cp, &["exec", "p", "-c", "sidecar", "--", "true"], None);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr
            .contains("container \"sidecar\" is not running in pod default/p"),
        "{run:?}"
    );

    // logs: whole, tail, previous run, a byte limit.
    let run = kubectl(&cp, &["logs", "p"], None);
    assert_eq!(run.stdout, "first\nsecond\nthird\n", "{run:?}");
    let run = kubectl(&cp, &["logs", "p", "--tail=1"], None);
    assert_eq!(run.stdout, "third\n", "{run:?}");
    let run = kubectl(&cp, &["logs", "p", "--previous"], None);
    assert_eq!(run.stdout, "an earlier run\n", "{run:?}");
    let run = kubectl(&cp, &["logs", "p", "--limit-bytes=8"], None);
    assert_eq!(run.stdout, "first\nse", "{run:?}");
    // What needs times is refused, with the reason.
    let run = kubectl(&cp, &["logs", "p", "--timestamps"], None);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(
        run.stderr.contains("timestamps are not available"),
        "{run:?}"
    );
    let run = kubectl(&cp, &["logs", "p", "-c", "sidecar"], None);
    assert_ne!(run.code, Some(0), "{run:?}");
    assert!(run.stderr.contains("pods/log p"), "{run:?}");

    // logs -f: what is appended comes; kubectl is killed (bounded).
    let mut follow = kubectl_command(&cp, &["logs", "-f", "p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let lines = lines_of(&mut follow);
    wait_for_line(&lines, "third");
    append(&current, "fourth\n");
    wait_for_line(&lines, "fourth");
    let _ = follow.kill();
    let _ = follow.wait();

    // logs -f ends by itself once the container's current run is another one (restarted).
    let mut follow = kubectl_command(&cp, &["logs", "-f", "--tail=1", "p"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl logs -f");
    let lines = lines_of(&mut follow);
    wait_for_line(&lines, "fourth");
    append(&current, "last words\n");
    let restarted = dir.0.join("run2.log");
    std::fs::write(&restarted, "after the restart\n").expect("log");
    *containers.current_log.lock().expect("lock") = restarted;
    let code = wait_bounded(
        &mut follow,
        "kubectl logs -f after a restart",
        KUBECTL_TIMEOUT,
    );
    assert_eq!(code, Some(0));
    wait_for_line(&lines, "last words");
    let run = kubectl(&cp, &["logs", "p"], None);
    assert_eq!(run.stdout, "after the restart\n", "{run:?}");

    // port-forward through the apiserver, as `cilium hubble port-forward` does it (kube-rs'
    // WebSocket, v4.channel.k8s.io): a local port for Service `echo` (port 80, targetPort the
    // echo server's port "in the pod", i.e. on this host), two connections one after the
    // other, each its own session; then a port nobody listens on, reported on the port's
    // error channel.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").expect("echo");
    let echo_port = echo.local_addr().expect("echo").port();
    std::thread::spawn(move || {
        for conn in echo.incoming().flatten() {
            std::thread::spawn(move || {
                let (mut r, mut w) = (conn.try_clone().expect("clone"), conn);
                let _ = std::io::copy(&mut r, &mut w);
            });
        }
    });
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: echo, namespace: default}}\nspec:\n  \
         selector: {{app: p}}\n  ports: [{{port: 80, targetPort: {echo_port}}}]\n"
    );
    cp.kubectl_input(&["apply", "-f", "-"], Some(&service))
        .expect("service");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = cilium_cli::cluster::client(Some(&cp.kubeconfig()), None)
            .await
            .expect("client");
        let target = cilium_cli::portforward::Target {
            namespace: "default".into(),
            service: "echo".into(),
            port: 80,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let forwarder = {
            let (client, target) = (client.clone(), target.clone());
            tokio::spawn(async move {
                cilium_cli::portforward::forward(&client, &target, "127.0.0.1", 0, |at| {
                    let _ = tx.send(at);
                })
                .await
            })
        };
        let local = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("bound in time")
            .expect("bound");
        for round in 0..2 {
            let mut conn = tokio::net::TcpStream::connect(local)
                .await
                .expect("connect");
            let sent: Vec<u8> = (0..100_000u32)
                .flat_map(|i| format!("{round}:{i}\n").into_bytes())
                .collect();
            let (mut r, mut w) = conn.split();
            let (written, got) = tokio::join!(
                // No half close: kube-rs' forwarder drops what the pod sends after its
                // user's side is shut down.
                async { w.write_all(&sent).await.expect("write") },
                async {
                    let mut got = vec![0u8; sent.len()];
                    tokio::time::timeout(Duration::from_secs(60), r.read_exact(&mut got))
                        .await
                        .expect("echoed in time")
                        .expect("echoed");
                    got
                }
            );
            let () = written;
            assert!(got == sent, "round {round}: the echo differs");
        }
        forwarder.abort();
        // A port nobody listens on (bound, not listening): the kubelet says so.
        let idle = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let idle_port = idle.local_addr().expect("addr").port();
        drop(idle);
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client, "default");
        let mut pf = pods.portforward("p", &[idle_port]).await.expect("upgrade");
        let error = pf.take_error(idle_port).expect("error channel");
        let message = tokio::time::timeout(Duration::from_secs(30), error)
            .await
            .expect("in time")
            .expect("an error message");
        assert!(
            message.contains(&format!(
                "error forwarding port {idle_port} to pod default/p"
            )),
            "{message}"
        );
    });
    drop(runtime);

    // A Node that does not declare ExtendWebSocketsToKubelet: the apiserver translates to
    // SPDY, which the server refuses, saying why.
    cp.kubectl(&[
        "patch",
        "node",
        NODE,
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"declaredFeatures":null}}"#,
    ])
    .expect("node status");
    let refusal = cp.eventually("exec refused over SPDY", || {
        let run = kubectl(&cp, &["exec", "p", "--", "true"], None);
        run.stderr.contains("WebSocket only").then_some(run)
    });
    assert_ne!(refusal.code, Some(0), "{refusal:?}");
    assert!(
        refusal.stderr.contains("ExtendWebSocketsToKubelet"),
        "{refusal:?}"
    );

    drop(kubelet);
}
