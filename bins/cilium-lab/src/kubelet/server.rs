// SPDX-License-Identifier: Apache-2.0

//! The kubelet's API (port 10250): exec, logs and port-forward as the apiserver proxies them.
//!
//! What upstream's kubelet serves there (`pkg/kubelet/server/server.go`), as far as
//! `kubectl exec` and `kubectl logs` need it:
//!
//! - `GET|POST /exec/{namespace}/{pod}/{container}` (and
//!   `/exec/{namespace}/{pod}/{uid}/{container}`, the uid not checked) with `command=` once
//!   per argument and `input`, `output`, `error` (stdin, stdout, stderr) and `tty` set to
//!   `1`, upgraded to a WebSocket with subprotocol `v5.channel.k8s.io` (or
//!   `v4.channel.k8s.io`). Every binary message starts with its channel: 0 stdin, 1 stdout,
//!   2 stderr, 3 the outcome (a `metav1.Status`: `Success`, or `Failure` with reason
//!   `NonZeroExitCode` and the code as the `ExitCode` cause, so kubectl exits with it), 4 a
//!   terminal resize (`{"Width":..,"Height":..}`); v5 adds 255, a client's half close
//!   (`[255, 0]` closes the command's stdin). After the outcome the server closes the
//!   WebSocket (status 1000). With `tty=1` the command runs on a pseudo-terminal (stderr goes
//!   to stdout, as upstream), sized by the client's resize messages; the terminal is not the
//!   command's controlling terminal (that takes `setsid` in the child, i.e. unsafe code), so
//!   `^C` reaches it as a byte, not as SIGINT, and a half close of stdin is not passed on
//!   (the client types `^D`). SPDY (`Upgrade: SPDY/3.1`) is refused: the
//!   apiserver proxies WebSocket requests as they are only to a Node whose
//!   `status.declaredFeatures` lists `ExtendWebSocketsToKubelet`, and would otherwise
//!   translate them to SPDY.
//! - `GET /containerLogs/{namespace}/{pod}/{container}` with `follow`, `previous`,
//!   `tailLines` (or `tail`) and `limitBytes`: the log file as it is (the lab's runtime
//!   writes a container's raw output, stdout and stderr together), chunked; following
//!   polls the file and stops when the client goes, or when the container's current run is
//!   no longer the one followed (restarted, or gone). Times are not recorded, so
//!   `timestamps`, `sinceSeconds` and `sinceTime` are refused with 400, as is a `stream`
//!   other than `All`.
//! - `GET|POST /portForward/{namespace}/{pod}` (and `.../{uid}`) with `port=`, over
//!   WebSocket (`v4.channel.k8s.io`): a data and an error channel per port, connected to
//!   `localhost:PORT` in the pod's network namespace (see `portforward.rs`).
//! - `GET /healthz`: `ok`.
//!
//! An unknown pod or container is a 404 whose body is the [`Containers`] implementation's
//! message, as upstream's kubelet answers (the apiserver passes it on for exec; for logs it
//! replaces a 404's body with its own message, and passes 400s on as they are).
//!
//! TLS: the serving certificate is given; a client must show a certificate that chains to
//! the given CA (the apiserver's `--kubelet-client-certificate`). Any such client is
//! allowed: there is no authorization step (upstream asks the apiserver with a
//! SubjectAccessReview). HTTP/1.1 only.

use std::convert::Infallible;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine;
use hyper::body::{Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeek, AsyncSeekExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

mod portforward;

/// Where a container runs, as the server needs it.
pub trait Containers: Send + Sync + 'static {
    /// A command that runs `argv` inside container `container` of pod `namespace/pod` (its
    /// network namespace, its environment); Err if the pod or container is unknown or not
    /// running (the message goes to the client with a 404). The server sets the command's
    /// standard streams and kills it when the client goes.
    fn exec_command(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        argv: &[String],
    ) -> Result<Command, String>;

    /// The log file of the container's current run (or the previous run with `previous`);
    /// Err if the pod or container is unknown (the message goes to the client with a 404).
    /// A file that does not exist is a run that left no log (a 400, as upstream's "previous
    /// terminated container not found"). While a client follows the current run's log,
    /// this is asked again every second: following stops once it names another file or
    /// fails.
    fn log_path(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        previous: bool,
    ) -> Result<PathBuf, String>;

    /// The network namespace file of pod `namespace/pod` (`/run/netns/...`), where a
    /// port-forward connects; None for a pod on the host network (the namespace this
    /// server runs in). Err if the pod is unknown or has no network yet (the message goes
    /// to the client with a 404).
    fn pod_netns(&self, namespace: &str, pod: &str) -> Result<Option<PathBuf>, String>;
}

/// How long a client has for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client has to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest WebSocket message a client may send (kubectl sends stdin in 32 KiB pieces).
const MAX_MESSAGE: usize = 4 << 20;
/// How much of a command's output or a log goes into one message or chunk.
const CHUNK: usize = 32 * 1024;
/// With a terminal, how long the command waits for the client's first resize message
/// (kubectl sends the terminal's size first thing; a command started before it would see
/// a 0x0 terminal).
const FIRST_RESIZE_WAIT: Duration = Duration::from_secs(1);
/// How long the last frames of an exec session may take to go out.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a followed log file is read for more.
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How often following asks whether the followed run is still the container's current one.
const FOLLOW_CHECK: Duration = Duration::from_secs(1);

/// The exec subprotocols served, in the server's order of preference.
const PROTOCOLS: [Protocol; 2] = [Protocol::V5, Protocol::V4];

/// Serves the kubelet API on `listener` with TLS (`cert_pem`/`key_pem` the serving
/// certificate, client certificates required and verified against `client_ca_pem`) until
/// the future is dropped, which also ends every exec session (killing its command) and
/// every followed log. Returns an error only when the certificates or the key cannot be
/// used; a failed accept (e.g. out of file descriptors) is retried.
///
/// ```no_run
/// # async fn example(
/// #     containers: std::sync::Arc<dyn cilium_lab::kubelet::server::Containers>,
/// # ) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("192.168.10.101:10250").await?;
/// let cert = std::fs::read_to_string("kubelet.crt")?;
/// let key = std::fs::read_to_string("kubelet.key")?;
/// let ca = std::fs::read_to_string("ca.crt")?;
/// cilium_lab::kubelet::server::serve(listener, &cert, &key, &ca, containers).await
/// # }
/// ```
pub async fn serve(
    listener: tokio::net::TcpListener,
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
    containers: Arc<dyn Containers>,
) -> io::Result<()> {
    let tls = tokio_rustls::TlsAcceptor::from(tls_config(cert_pem, key_pem, client_ca_pem)?);
    // Sessions and followed logs outlive their connection's task: they watch this channel,
    // whose sender goes with this future.
    let (_serving, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(connection(
                        tcp,
                        tls.clone(),
                        containers.clone(),
                        stopped.clone(),
                    ));
                }
                Err(e) => {
                    eprintln!("kubelet API: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The TLS configuration: this certificate, client certificates from this CA required,
/// HTTP/1.1.
fn tls_config(
    cert_pem: &str,
    key_pem: &str,
    client_ca_pem: &str,
) -> io::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("kubelet API: {what}: {e}"),
        )
    }
    let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("serving certificate", e))?;
    if certs.is_empty() {
        return Err(invalid("serving certificate", "no certificate in the PEM"));
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid("serving key", e))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca_pem.as_bytes()) {
        roots
            .add(ca.map_err(|e| invalid("client CA", e))?)
            .map_err(|e| invalid("client CA", e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| invalid("client CA", e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("TLS versions", e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| invalid("serving certificate", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// One client connection: the TLS handshake, then HTTP/1.1 requests (and upgrades).
async fn connection(
    tcp: tokio::net::TcpStream,
    tls: tokio_rustls::TlsAcceptor,
    containers: Arc<dyn Containers>,
    stopped: watch::Receiver<()>,
) {
    // A client without a valid certificate ends here.
    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp)).await else {
        return;
    };
    let service = hyper::service::service_fn(move |req| {
        let containers = containers.clone();
        let stopped = stopped.clone();
        async move { Ok::<_, Infallible>(route(req, containers, stopped).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// A response body: a whole text, or chunks sent by a task (a log).
enum Body {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Body::Channel(rx) => rx
                .poll_recv(cx)
                .map(|chunk| chunk.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
            Body::Channel(_) => SizeHint::default(),
        }
    }
}

/// A plain-text response, as upstream's kubelet writes its errors.
fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::Full(Some(Bytes::from(message.to_owned()))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn route(
    req: Request<Incoming>,
    containers: Arc<dyn Containers>,
    stopped: watch::Receiver<()>,
) -> Response<Body> {
    let segments = match path_segments(req.uri().path()) {
        Ok(s) => s,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    match segments.as_slice() {
        ["healthz"] => match *req.method() {
            Method::GET | Method::HEAD => text(StatusCode::OK, "ok"),
            _ => text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed"),
        },
        ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => {
            exec(req, namespace, pod, container, &*containers, stopped)
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            portforward::handle(req, namespace, pod, &*containers, stopped)
        }
        ["containerLogs", namespace, pod, container] => {
            let method = req.method().clone();
            let query = req.uri().query().map(str::to_owned);
            let request = (&method, query.as_deref());
            logs(
                request,
                namespace,
                pod,
                container,
                containers.clone(),
                stopped,
            )
            .await
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// Decodes a request's path and query as the server does before it acts (the route, and
/// the exec or log options it names); an error is what the client would be told. For
/// fuzzing and tests: the server itself decodes on the way.
pub fn check_request(path: &str, query: Option<&str>) -> Result<(), String> {
    let segments = path_segments(path)?;
    let q = parse_query(query)?;
    match segments.first().map(String::as_str) {
        Some("exec") => exec_options(&q).map(|_| ()),
        Some("containerLogs") => log_options(&q).map(|_| ()),
        Some("portForward") => portforward::ports(&q).map(|_| ()),
        _ => Ok(()),
    }
}

/// The decoded segments of a request path (`/exec/ns/p/c` -> exec, ns, p, c).
fn path_segments(path: &str) -> Result<Vec<String>, String> {
    path.strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(|s| percent_decode(s, false))
        .collect()
}

/// Decodes `%XX` escapes (and `+` as a space in a query, as Go's `url.QueryEscape` writes
/// it).
fn percent_decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("invalid escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

/// A request's query as (name, value) pairs, decoded, in order.
fn parse_query(query: Option<&str>) -> Result<Vec<(String, String)>, String> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(name, true)?, percent_decode(value, true)?))
        })
        .collect()
}

/// The first value of query parameter `name`.
fn first<'q>(query: &'q [(String, String)], name: &str) -> Option<&'q str> {
    query
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// A boolean as Go's `strconv.ParseBool` reads it (how the apiserver's parameters decode).
fn parse_bool(name: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(format!("{name}={value:?} is not a boolean")),
    }
}

// ---- exec ----

/// An exec subprotocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `v5.channel.k8s.io`: v4 and the client's half close.
    V5,
    /// `v4.channel.k8s.io`: channels, the outcome as a `metav1.Status`.
    V4,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::V5 => "v5.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
        }
    }
}

/// What an exec request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ExecOptions {
    command: Vec<String>,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

/// An exec request's options, checked as upstream's kubelet checks them.
fn exec_options(query: &[(String, String)]) -> Result<ExecOptions, String> {
    // The apiserver writes "1"; "true" is accepted as well.
    let flag = |name: &str| matches!(first(query, name), Some("1" | "true"));
    let command: Vec<String> = query
        .iter()
        .filter(|(n, _)| n == "command")
        .map(|(_, v)| v.clone())
        .collect();
    if command.is_empty() {
        return Err("no command given (command=... once per argument)".into());
    }
    let tty = flag("tty");
    // The apiserver's names for the kubelet (`stdin`, `stdout`, `stderr` are its own API's).
    let options = ExecOptions {
        command,
        stdin: flag("input"),
        stdout: flag("output"),
        // A terminal has one output: stderr goes to stdout.
        stderr: flag("error") && !tty,
        tty,
    };
    if !options.stdin && !options.stdout && !options.stderr {
        return Err("you must specify at least 1 of stdin, stdout, stderr \
                    (input=1, output=1, error=1)"
            .into());
    }
    Ok(options)
}

/// Whether header `name` lists `token` (comma-separated, case-insensitive).
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The subprotocol to speak: the server's most preferred one the client offers.
fn negotiate(headers: &HeaderMap) -> Result<Protocol, String> {
    let offered = offered_protocols(headers);
    PROTOCOLS
        .into_iter()
        .find(|p| offered.contains(&p.name()))
        .ok_or_else(|| {
            let supported: Vec<&str> = PROTOCOLS.iter().map(|p| p.name()).collect();
            format!("requested protocol(s) are not supported: {offered:?}; supports {supported:?}")
        })
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 section 4.2.2).
fn accept_key(key: &[u8]) -> String {
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut input = key.to_vec();
    input.extend_from_slice(GUID);
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &input);
    base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
}

fn exec(
    mut req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    container: &str,
    containers: &dyn Containers,
    stopped: watch::Receiver<()>,
) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    let options = match parse_query(req.uri().query()).and_then(|q| exec_options(&q)) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let command = match containers.exec_command(namespace, pod, container, &options.command) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::NOT_FOUND, &e),
    };
    let headers = req.headers();
    let accept = match handshake(headers, "exec", &PROTOCOLS.map(Protocol::name)) {
        Ok(a) => a,
        Err(response) => return *response,
    };
    let protocol = match negotiate(headers) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    on_upgrade(&mut req, stopped, move |io| {
        session(io, protocol, options, command)
    });
    switching_protocols(&accept, Some(protocol.name()))
}

/// Runs `session` on the request's connection once it is upgraded (after the response),
/// until it ends or the server stops.
fn on_upgrade<F, Fut>(req: &mut Request<Incoming>, mut stopped: watch::Receiver<()>, session: F)
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        tokio::select! {
            () = async {
                if let Ok(upgraded) = upgrade.await {
                    session(TokioIo::new(upgraded)).await;
                }
            } => {}
            _ = stopped.changed() => {}
        }
    });
}

/// Checks a WebSocket upgrade request (RFC 6455 section 4.2.1) for `what` (exec,
/// port-forward), whose subprotocols are `protocols`; its `Sec-WebSocket-Accept`, or the
/// response that refuses it.
fn handshake(
    headers: &HeaderMap,
    what: &str,
    protocols: &[&str],
) -> Result<String, Box<Response<Body>>> {
    if !has_token(headers, header::UPGRADE, "websocket") {
        return Err(Box::new(match headers.get(header::UPGRADE) {
            Some(other) => text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "this kubelet serves {what} over WebSocket only ({}), not {:?}; the \
                     apiserver sends WebSocket requests as they are to a Node whose \
                     status.declaredFeatures lists ExtendWebSocketsToKubelet",
                    protocols.join(", "),
                    String::from_utf8_lossy(other.as_bytes()),
                ),
            ),
            None => text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "{what} needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)"
                ),
            ),
        }));
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Connection: Upgrade",
        )));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "only WebSocket version 13 is served",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return Err(Box::new(response));
    }
    match headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| !k.is_empty())
    {
        Some(key) => Ok(accept_key(key.as_bytes())),
        None => Err(Box::new(text(
            StatusCode::BAD_REQUEST,
            "a WebSocket upgrade needs Sec-WebSocket-Key",
        ))),
    }
}

/// The subprotocols a client offers, in its order.
fn offered_protocols(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The `101 Switching Protocols` that accepts an upgrade (with the chosen subprotocol).
fn switching_protocols(accept: &str, protocol: Option<&'static str>) -> Response<Body> {
    let mut response = Response::new(Body::Full(None));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Some(protocol) = protocol {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(protocol),
        );
    }
    if let Ok(accept) = HeaderValue::from_str(accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// What goes to the client, in order.
#[derive(Debug)]
enum Outbound {
    /// A binary message (channel byte first).
    Data(Vec<u8>),
    /// The answer to a ping.
    Pong(Vec<u8>),
    /// The close frame, with its status; nothing follows it.
    Close(u16),
}

/// A terminal size, as the client's resize messages give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
struct TermSize {
    #[serde(rename = "Width")]
    width: u16,
    #[serde(rename = "Height")]
    height: u16,
}

/// One exec over an upgraded connection: runs the command, relays its streams, sends the
/// outcome and closes. The command is killed if the client closes or goes first.
async fn session<S>(io: S, protocol: Protocol, options: ExecOptions, command: Command)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(16);
    let mut writer = tokio::spawn(write_loop(wr, out_rx));
    let (stdin_tx, stdin_rx) = mpsc::channel(16);
    let (resize_tx, resize_rx) = watch::channel(None);
    let mut reader = tokio::spawn(read_loop(
        ws::Reader::new(rd, true),
        protocol,
        out_tx.clone(),
        stdin_tx,
        resize_tx,
    ));
    tokio::select! {
        () = run(command, &options, &out_tx, stdin_rx, resize_rx) => {}
        // The client closed or went: dropping `run` kills the command.
        _ = &mut reader => {}
    }
    drop(out_tx);
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
    reader.abort();
}

/// Writes what `rx` gives as WebSocket frames; after a close frame (or when every sender is
/// gone) shuts the connection down.
async fn write_loop<W: AsyncWrite + Unpin>(mut w: W, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        let (frame, last) = match out {
            Outbound::Data(payload) => (ws::frame(ws::BINARY, &payload, None), false),
            Outbound::Pong(payload) => (ws::frame(ws::PONG, &payload, None), false),
            Outbound::Close(code) => (ws::frame(ws::CLOSE, &code.to_be_bytes(), None), true),
        };
        if w.write_all(&frame).await.is_err() || w.flush().await.is_err() {
            return;
        }
        if last {
            break;
        }
    }
    let _ = w.shutdown().await;
}

/// Reads the client's messages: stdin data, stdin's close (v5), resizes, pings; returns
/// when the client closes (answered) or the connection ends.
async fn read_loop<R: AsyncRead + Unpin>(
    mut frames: ws::Reader<R>,
    protocol: Protocol,
    out: mpsc::Sender<Outbound>,
    stdin: mpsc::Sender<Vec<u8>>,
    resize: watch::Sender<Option<TermSize>>,
) {
    let mut stdin = Some(stdin);
    loop {
        let message = match frames.next().await {
            Ok(m) => m,
            Err(ws::ReadError::Protocol(code, _)) => {
                let _ = out.send(Outbound::Close(code)).await;
                return;
            }
            Err(ws::ReadError::Io(_)) => return,
        };
        let data = match message {
            ws::Message::Data(data) => data,
            ws::Message::Ping(payload) => {
                let _ = out.send(Outbound::Pong(payload)).await;
                continue;
            }
            ws::Message::Pong => continue,
            ws::Message::Close => {
                let _ = out.send(Outbound::Close(1000)).await;
                return;
            }
        };
        match data.split_first() {
            Some((0, input)) => {
                if let Some(tx) = &stdin
                    && tx.send(input.to_vec()).await.is_err()
                {
                    stdin = None;
                }
            }
            Some((4, json)) => {
                let sizes = serde_json::Deserializer::from_slice(json).into_iter::<TermSize>();
                for size in sizes.flatten() {
                    resize.send_replace(Some(size));
                }
            }
            // v5: the client closed one of its streams; only stdin matters.
            Some((255, [0])) if protocol == Protocol::V5 => stdin = None,
            _ => {}
        }
    }
}

/// Runs the command to its end and sends its outcome and the close frame.
async fn run(
    command: Command,
    options: &ExecOptions,
    out: &mpsc::Sender<Outbound>,
    stdin: mpsc::Receiver<Vec<u8>>,
    resize: watch::Receiver<Option<TermSize>>,
) {
    let result = if options.tty {
        run_tty(command, out, stdin, resize).await
    } else {
        run_piped(command, options, out, stdin).await
    };
    let mut message = vec![3];
    message.extend_from_slice(&outcome(result, &options.command));
    let _ = out.send(Outbound::Data(message)).await;
    let _ = out.send(Outbound::Close(1000)).await;
}

/// The outcome as the v4 error channel carries it (a `metav1.Status`).
fn outcome(result: io::Result<ExitStatus>, argv: &[String]) -> Vec<u8> {
    let status = match result {
        Ok(status) => {
            // A signal is reported as a shell would: 128 + its number.
            let code = status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(1);
            if code == 0 {
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                })
            } else {
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!(
                        "command terminated with non-zero exit code: {argv:?} exited with {code}"
                    ),
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
                })
            }
        }
        Err(e) => serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("failed to exec in container: {argv:?}: {e}"),
            "reason": "InternalError",
        }),
    };
    status.to_string().into_bytes()
}

/// Starts the command, to be killed when dropped.
fn spawn(command: Command) -> io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::from(command);
    command.kill_on_drop(true);
    command.spawn()
    // `command` goes here, and with it this process's copies of the child's streams.
}

/// Without a terminal: stdin, stdout and stderr are pipes.
async fn run_piped(
    mut command: Command,
    options: &ExecOptions,
    out: &mpsc::Sender<Outbound>,
    mut stdin: mpsc::Receiver<Vec<u8>>,
) -> io::Result<ExitStatus> {
    let pipe_if = |wanted: bool| {
        if wanted {
            Stdio::piped()
        } else {
            Stdio::null()
        }
    };
    command
        .stdin(pipe_if(options.stdin))
        .stdout(pipe_if(options.stdout))
        .stderr(pipe_if(options.stderr));
    let mut child = spawn(command)?;
    let child_stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let input = async move {
        let mut sink = child_stdin;
        while let Some(data) = stdin.recv().await {
            if let Some(w) = sink.as_mut()
                && w.write_all(&data).await.is_err()
            {
                sink = None;
            }
        }
        // The client closed stdin: so does the command's.
        drop(sink);
        std::future::pending::<Infallible>().await
    };
    let done = async {
        let ((), (), status) =
            tokio::join!(relay(stdout, 1, out), relay(stderr, 2, out), child.wait());
        status
    };
    tokio::select! {
        status = done => status,
        never = input => match never {},
    }
}

/// Sends what `source` gives on `channel` until it ends; output the client can no longer
/// take is read and dropped (so the command does not block on a full pipe).
async fn relay<R: AsyncRead + Unpin>(source: Option<R>, channel: u8, out: &mpsc::Sender<Outbound>) {
    let Some(mut source) = source else { return };
    let mut buf = vec![0; CHUNK + 1];
    buf[0] = channel;
    let mut open = true;
    loop {
        match source.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if open && out.send(Outbound::Data(buf[..=n].to_vec())).await.is_err() {
                    open = false;
                }
            }
        }
    }
}

/// With a terminal: the command's three streams are a pseudo-terminal, sized by the
/// client.
async fn run_tty(
    mut command: Command,
    out: &mpsc::Sender<Outbound>,
    mut stdin: mpsc::Receiver<Vec<u8>>,
    mut resize: watch::Receiver<Option<TermSize>>,
) -> io::Result<ExitStatus> {
    let (pty, terminal) = Pty::open()?;
    let Pty {
        mut output,
        mut input,
        control,
    } = pty;
    command
        .stdin(terminal.try_clone()?)
        .stdout(terminal.try_clone()?)
        .stderr(terminal);
    if resize.borrow().is_none() {
        let _ = tokio::time::timeout(FIRST_RESIZE_WAIT, resize.changed()).await;
    }
    let first = *resize.borrow_and_update();
    if let Some(size) = first {
        set_size(&control, size)?;
    }
    let mut child = spawn(command)?;
    let relay_output = async {
        let mut buf = vec![0; CHUNK + 1];
        buf[0] = 1;
        let mut open = true;
        // Reads fail (EIO) once the command and everything it started closed the terminal.
        while let Ok(n @ 1..) = output.read(&mut buf[1..]).await {
            if open && out.send(Outbound::Data(buf[..=n].to_vec())).await.is_err() {
                open = false;
            }
        }
    };
    let relay_input = async {
        let mut open = true;
        while let Some(data) = stdin.recv().await {
            if open && (input.write_all(&data).await.is_err() || input.flush().await.is_err()) {
                open = false;
            }
        }
        // A terminal has no end of input to pass on (the client types ^D).
        std::future::pending::<Infallible>().await
    };
    let resizes = async {
        while resize.changed().await.is_ok() {
            let size = *resize.borrow_and_update();
            if let Some(size) = size {
                let _ = set_size(&control, size);
            }
        }
        std::future::pending::<Infallible>().await
    };
    let done = async {
        let ((), status) = tokio::join!(relay_output, child.wait());
        status
    };
    tokio::select! {
        status = done => status,
        never = relay_input => match never {},
        never = resizes => match never {},
    }
}

/// The controlling side of a pseudo-terminal, as three descriptors of it: reads and writes
/// block (in tokio's blocking pool: registering a descriptor with tokio's reactor takes
/// unsafe code), so each direction has its own.
struct Pty {
    /// What the command writes.
    output: tokio::fs::File,
    /// What the command reads.
    input: tokio::fs::File,
    /// For the terminal's size.
    control: OwnedFd,
}

impl Pty {
    /// A new pseudo-terminal: this side, and the terminal for the command.
    fn open() -> io::Result<(Pty, std::fs::File)> {
        use rustix::pty::OpenptFlags;
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let control = rustix::pty::openpt(flags)?;
        rustix::pty::grantpt(&control)?;
        rustix::pty::unlockpt(&control)?;
        let terminal = rustix::pty::ioctl_tiocgptpeer(&control, flags)?;
        let output = tokio::fs::File::from_std(std::fs::File::from(control.try_clone()?));
        let input = tokio::fs::File::from_std(std::fs::File::from(control.try_clone()?));
        Ok((
            Pty {
                output,
                input,
                control,
            },
            std::fs::File::from(terminal),
        ))
    }
}

/// Sets a pseudo-terminal's size.
fn set_size(control: &OwnedFd, size: TermSize) -> io::Result<()> {
    let winsize = rustix::termios::Winsize {
        ws_row: size.height,
        ws_col: size.width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    Ok(rustix::termios::tcsetwinsize(control, winsize)?)
}

/// WebSocket framing (RFC 6455), what the exec sessions need of it: no extensions.
mod ws {
    use std::io;

    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::MAX_MESSAGE;

    pub(super) const CONTINUATION: u8 = 0x0;
    pub(super) const TEXT: u8 = 0x1;
    pub(super) const BINARY: u8 = 0x2;
    pub(super) const CLOSE: u8 = 0x8;
    pub(super) const PING: u8 = 0x9;
    pub(super) const PONG: u8 = 0xA;

    /// A message from the peer.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Message {
        /// A whole data message (binary or text, the fragments joined).
        Data(Vec<u8>),
        /// A ping, with its payload.
        Ping(Vec<u8>),
        /// A pong.
        Pong,
        /// The peer's close frame.
        Close,
    }

    /// Why reading failed.
    #[derive(Debug)]
    pub(super) enum ReadError {
        /// The connection failed or ended.
        Io(#[expect(dead_code, reason = "shown by Debug")] io::Error),
        /// The peer broke the protocol: the close status to answer with, and why.
        Protocol(
            u16,
            #[expect(dead_code, reason = "shown by Debug")] &'static str,
        ),
    }

    /// Reads messages from a stream.
    #[derive(Debug)]
    pub(super) struct Reader<R> {
        inner: R,
        /// Whether frames must be masked (the server's side) or must not be.
        masked: bool,
        /// A fragmented message so far.
        partial: Option<Vec<u8>>,
    }

    impl<R: AsyncRead + Unpin> Reader<R> {
        /// A reader of a client's frames (`masked`) or of a server's.
        pub(super) fn new(inner: R, masked: bool) -> Self {
            Reader {
                inner,
                masked,
                partial: None,
            }
        }

        /// The next message; control frames between fragments come first.
        pub(super) async fn next(&mut self) -> Result<Message, ReadError> {
            use ReadError::Protocol;
            loop {
                let mut head = [0u8; 2];
                self.read(&mut head).await?;
                let fin = head[0] & 0x80 != 0;
                if head[0] & 0x70 != 0 {
                    return Err(Protocol(1002, "reserved bits set"));
                }
                let opcode = head[0] & 0x0f;
                if (head[1] & 0x80 != 0) != self.masked {
                    return Err(Protocol(1002, "frame masking is wrong for its direction"));
                }
                let len = match head[1] & 0x7f {
                    126 => {
                        let mut b = [0u8; 2];
                        self.read(&mut b).await?;
                        u64::from(u16::from_be_bytes(b))
                    }
                    127 => {
                        let mut b = [0u8; 8];
                        self.read(&mut b).await?;
                        u64::from_be_bytes(b)
                    }
                    n => u64::from(n),
                };
                let control = opcode & 0x8 != 0;
                if control && (!fin || len > 125) {
                    return Err(Protocol(1002, "fragmented or long control frame"));
                }
                let so_far = self.partial.as_ref().map_or(0, Vec::len);
                let len = usize::try_from(len)
                    .ok()
                    .filter(|l| l.saturating_add(so_far) <= MAX_MESSAGE)
                    .ok_or(Protocol(1009, "message too big"))?;
                let mut key = [0u8; 4];
                if self.masked {
                    self.read(&mut key).await?;
                }
                let mut payload = vec![0u8; len];
                self.read(&mut payload).await?;
                if self.masked {
                    for (i, b) in payload.iter_mut().enumerate() {
                        *b ^= key[i % 4];
                    }
                }
                match opcode {
                    PING => return Ok(Message::Ping(payload)),
                    PONG => return Ok(Message::Pong),
                    CLOSE => return Ok(Message::Close),
                    TEXT | BINARY if self.partial.is_some() => {
                        return Err(Protocol(1002, "new message inside a fragmented one"));
                    }
                    TEXT | BINARY if fin => return Ok(Message::Data(payload)),
                    TEXT | BINARY => self.partial = Some(payload),
                    CONTINUATION => {
                        let Some(mut message) = self.partial.take() else {
                            return Err(Protocol(1002, "continuation without a message"));
                        };
                        message.extend_from_slice(&payload);
                        if fin {
                            return Ok(Message::Data(message));
                        }
                        self.partial = Some(message);
                    }
                    _ => return Err(Protocol(1002, "unknown opcode")),
                }
            }
        }

        async fn read(&mut self, buf: &mut [u8]) -> Result<(), ReadError> {
            self.inner
                .read_exact(buf)
                .await
                .map(drop)
                .map_err(ReadError::Io)
        }
    }

    /// One whole frame; `mask` for a client's frames.
    pub(super) fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        frame.push(0x80 | opcode);
        let mask_bit = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n @ 0..=125 => frame.push(mask_bit | n as u8),
            n @ 126..=0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            Some(key) => {
                frame.extend_from_slice(&key);
                frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
            }
            None => frame.extend_from_slice(payload),
        }
        frame
    }
}

// ---- logs ----

/// What a log request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogOptions {
    follow: bool,
    previous: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
}

/// A log request's options; what cannot be honoured without times is refused.
fn log_options(query: &[(String, String)]) -> Result<LogOptions, String> {
    let boolean = |name: &str| first(query, name).map_or(Ok(false), |v| parse_bool(name, v));
    let number = |name: &str, value: &str| {
        value
            .parse::<u64>()
            .map_err(|_| format!("{name}={value:?} is not a non-negative integer"))
    };
    if boolean("timestamps")? {
        return Err(
            "timestamps are not available: this kubelet's log files hold the \
                    containers' raw output, without times"
                .into(),
        );
    }
    for name in ["sinceSeconds", "sinceTime"] {
        if first(query, name).is_some() {
            return Err(format!(
                "{name} is not available: this kubelet's log files hold the containers' raw \
                 output, without times"
            ));
        }
    }
    match first(query, "stream") {
        None | Some("" | "All") => {}
        Some(other) => {
            return Err(format!(
                "stream {other:?} is not available: this kubelet's log files hold stdout and \
                 stderr together (stream=All)"
            ));
        }
    }
    // `tail` is the older name; "all" is no limit.
    let tail = first(query, "tailLines").or_else(|| first(query, "tail"));
    let tail_lines = match tail {
        None | Some("all") => None,
        Some(v) => Some(number("tailLines", v)?),
    };
    let limit_bytes = match first(query, "limitBytes") {
        None => None,
        Some(v) => match number("limitBytes", v)? {
            0 => return Err("limitBytes must be at least 1".into()),
            n => Some(n),
        },
    };
    Ok(LogOptions {
        follow: boolean("follow")?,
        previous: boolean("previous")?,
        tail_lines,
        limit_bytes,
    })
}

/// The run a follower follows, to tell when it is over.
struct Followed {
    containers: Arc<dyn Containers>,
    namespace: String,
    pod: String,
    container: String,
    path: PathBuf,
}

impl Followed {
    /// Whether the followed file is still the container's current log.
    fn is_current(&self) -> bool {
        matches!(
            self.containers.log_path(&self.namespace, &self.pod, &self.container, false),
            Ok(p) if p == self.path
        )
    }
}

async fn logs(
    (method, query): (&Method, Option<&str>),
    namespace: &str,
    pod: &str,
    container: &str,
    containers: Arc<dyn Containers>,
    mut stopped: watch::Receiver<()>,
) -> Response<Body> {
    if !matches!(*method, Method::GET | Method::HEAD) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    let options = match parse_query(query).and_then(|q| log_options(&q)) {
        Ok(o) => o,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let path = match containers.log_path(namespace, pod, container, options.previous) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::NOT_FOUND, &e),
    };
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let message = if options.previous {
                format!("previous terminated container {container:?} in pod {pod:?} not found")
            } else {
                format!("container {container:?} in pod {pod:?} has no log yet")
            };
            return text(StatusCode::BAD_REQUEST, &message);
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the log of container {container:?} in pod {pod:?}: {e}"),
            );
        }
    };
    let start = match options.tail_lines {
        None => Ok(0),
        Some(lines) => match file.metadata().await {
            Ok(m) => tail_offset(&mut file, m.len(), lines).await,
            Err(e) => Err(e),
        },
    };
    let start = match start {
        Ok(s) => s,
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("reading the log of container {container:?} in pod {pod:?}: {e}"),
            );
        }
    };
    // The previous run is over: nothing more to follow.
    let followed = (options.follow && !options.previous).then(|| Followed {
        containers,
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
        path,
    });
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        tokio::select! {
            _ = send_log(file, start, options.limit_bytes, followed, &tx) => {}
            _ = stopped.changed() => {}
        }
    });
    let mut response = Response::new(Body::Channel(rx));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Where the last `lines` lines of a file of `len` bytes start (a newline that ends the
/// file ends its last line).
async fn tail_offset<F>(file: &mut F, len: u64, lines: u64) -> io::Result<u64>
where
    F: AsyncRead + AsyncSeek + Unpin,
{
    if lines == 0 {
        return Ok(len);
    }
    let mut seen = 0;
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - start) as usize];
        file.seek(io::SeekFrom::Start(start)).await?;
        file.read_exact(chunk).await?;
        for (i, b) in chunk.iter().enumerate().rev() {
            let at = start + i as u64;
            if *b == b'\n' && at + 1 != len {
                seen += 1;
                if seen == lines {
                    return Ok(at + 1);
                }
            }
        }
        end = start;
    }
    Ok(0)
}

/// Sends a log from `start` (at most `limit` bytes), then, when following, what is added
/// to it until the client goes or the followed run is over.
async fn send_log(
    mut file: tokio::fs::File,
    start: u64,
    limit: Option<u64>,
    followed: Option<Followed>,
    tx: &mpsc::Sender<Bytes>,
) -> io::Result<()> {
    file.seek(io::SeekFrom::Start(start)).await?;
    let mut at = start;
    let mut left = limit.unwrap_or(u64::MAX);
    let mut buf = vec![0u8; CHUNK];
    let mut last_check = tokio::time::Instant::now();
    // The run is over: what is left of its log is sent, then the response ends.
    let mut over = false;
    loop {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buf[..want]).await?;
        if n > 0 {
            at += n as u64;
            left -= n as u64;
            if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() || left == 0 {
                return Ok(());
            }
            continue;
        }
        let Some(followed) = &followed else {
            return Ok(());
        };
        if over {
            return Ok(());
        }
        if file.metadata().await?.len() < at {
            // Truncated: start again from its beginning.
            file.seek(io::SeekFrom::Start(0)).await?;
            at = 0;
            continue;
        }
        if last_check.elapsed() >= FOLLOW_CHECK {
            last_check = tokio::time::Instant::now();
            if !followed.is_current() {
                over = true;
                continue;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_POLL) => {}
            () = tx.closed() => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn queries_decode_as_go_encodes_them() {
        let q = parse_query(Some(
            "command=sh&command=-c&command=echo+out%3B+exit+3&input=1&tty",
        ))
        .unwrap();
        assert_eq!(
            q,
            [
                ("command", "sh"),
                ("command", "-c"),
                ("command", "echo out; exit 3"),
                ("input", "1"),
                ("tty", ""),
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
        assert!(parse_query(Some("command=%zz")).is_err());
        assert!(parse_query(Some("command=%+1")).is_err());
        assert!(parse_query(Some("command=%ff")).is_err(), "not UTF-8");
        assert_eq!(
            path_segments("/exec/a%2Fb/p/c").unwrap(),
            ["exec", "a/b", "p", "c"]
        );
        assert_eq!(path_segments("/healthz").unwrap(), ["healthz"]);
    }

    #[test]
    fn exec_options_follow_upstream() {
        let q = |s: &str| parse_query(Some(s)).unwrap();
        let o = exec_options(&q("command=ls&output=1&error=1&tty=1")).unwrap();
        assert!(
            o.tty && o.stdout && !o.stderr,
            "a terminal has no stderr: {o:?}"
        );
        assert_eq!(o.command, ["ls"]);
        assert!(exec_options(&q("command=ls")).is_err(), "no stream");
        assert!(
            exec_options(&q("command=ls&stdout=1")).is_err(),
            "not the kubelet's name"
        );
        assert!(exec_options(&q("output=1")).is_err(), "no command");
        let o = exec_options(&q("command=cat&input=true")).unwrap();
        assert!(o.stdin && !o.stdout);
        let o = exec_options(&q("command=x&output=1&error=1")).unwrap();
        assert!(o.stdout && o.stderr && !o.stdin && !o.tty);
    }

    #[test]
    fn log_options_refuse_what_needs_times() {
        let q = |s: &str| parse_query(Some(s)).unwrap();
        let o = log_options(&q("follow=true&tailLines=3&limitBytes=10&stream=All")).unwrap();
        assert_eq!(
            o,
            LogOptions {
                follow: true,
                previous: false,
                tail_lines: Some(3),
                limit_bytes: Some(10)
            }
        );
        assert_eq!(log_options(&q("tail=all")).unwrap().tail_lines, None);
        assert_eq!(log_options(&q("tail=2")).unwrap().tail_lines, Some(2));
        for bad in [
            "timestamps=true",
            "sinceSeconds=10",
            "sinceTime=2026-01-01T00:00:00Z",
            "stream=Stdout",
            "tailLines=-1",
            "limitBytes=0",
            "follow=maybe",
        ] {
            assert!(log_options(&q(bad)).is_err(), "{bad}");
        }
        assert!(!log_options(&q("timestamps=false")).unwrap().follow);
    }

    async fn tail(text: &[u8], lines: u64) -> u64 {
        tail_offset(&mut Cursor::new(text), text.len() as u64, lines)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn tail_offsets() {
        assert_eq!(tail(b"a\nb\nc\n", 1).await, 4);
        assert_eq!(tail(b"a\nb\nc\n", 2).await, 2);
        assert_eq!(tail(b"a\nb\nc\n", 3).await, 0);
        assert_eq!(tail(b"a\nb\nc\n", 9).await, 0);
        assert_eq!(tail(b"a\nb\nc\n", 0).await, 6);
        assert_eq!(tail(b"a\nb\nc", 1).await, 4, "an unterminated last line");
        assert_eq!(tail(b"a\n\n", 1).await, 2, "an empty last line");
        assert_eq!(tail(b"", 1).await, 0);
        // Lines across the 64 KiB blocks read backwards.
        let line = [b'x'; 999];
        let mut big = Vec::new();
        for _ in 0..300 {
            big.extend_from_slice(&line);
            big.push(b'\n');
        }
        assert_eq!(tail(&big, 70).await, 230 * 1000);
        assert_eq!(tail(&big, 300).await, 0);
    }

    #[tokio::test]
    async fn frames_fragmented_and_controls_between() {
        let mask = Some([1, 2, 3, 4]);
        let mut bytes = Vec::new();
        let mut first = ws::frame(ws::BINARY, b"hel", mask);
        first[0] &= 0x7f; // not the last fragment
        bytes.extend(first);
        bytes.extend(ws::frame(ws::PING, b"p", mask));
        bytes.extend(ws::frame(ws::CONTINUATION, b"lo", mask));
        let big = vec![7u8; 70_000];
        bytes.extend(ws::frame(ws::BINARY, &big, mask));
        bytes.extend(ws::frame(ws::CLOSE, &1000u16.to_be_bytes(), mask));
        let mut r = ws::Reader::new(Cursor::new(bytes), true);
        assert_eq!(r.next().await.unwrap(), ws::Message::Ping(b"p".to_vec()));
        assert_eq!(
            r.next().await.unwrap(),
            ws::Message::Data(b"hello".to_vec())
        );
        assert_eq!(r.next().await.unwrap(), ws::Message::Data(big));
        assert_eq!(r.next().await.unwrap(), ws::Message::Close);
        assert!(matches!(r.next().await, Err(ws::ReadError::Io(_))));

        // A client must mask; a message must fit.
        let mut r = ws::Reader::new(Cursor::new(ws::frame(ws::BINARY, b"x", None)), true);
        assert!(matches!(
            r.next().await,
            Err(ws::ReadError::Protocol(1002, _))
        ));
        let mut huge = ws::frame(ws::BINARY, b"", mask);
        huge[1] = 0x80 | 127;
        huge.splice(2..2, ((MAX_MESSAGE + 1) as u64).to_be_bytes());
        let mut r = ws::Reader::new(Cursor::new(huge), true);
        assert!(matches!(
            r.next().await,
            Err(ws::ReadError::Protocol(1009, _))
        ));
    }

    #[test]
    fn outcomes_are_statuses_kubectl_reads() {
        let ok: serde_json::Value =
            serde_json::from_slice(&outcome(Ok(ExitStatus::from_raw(0)), &[])).unwrap();
        assert_eq!(ok["status"], "Success");
        let failed: serde_json::Value =
            serde_json::from_slice(&outcome(Ok(ExitStatus::from_raw(3 << 8)), &[])).unwrap();
        assert_eq!(failed["status"], "Failure");
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
        // Killed by SIGKILL (9).
        let killed: serde_json::Value =
            serde_json::from_slice(&outcome(Ok(ExitStatus::from_raw(9)), &[])).unwrap();
        assert_eq!(killed["details"]["causes"][0]["message"], "137");
    }

    /// A client's side of an exec session over an in-memory connection.
    struct Client {
        reader: ws::Reader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    }

    impl Client {
        fn start(protocol: Protocol, options: ExecOptions) -> Client {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            let mut command = Command::new(&options.command[0]);
            command.args(&options.command[1..]);
            tokio::spawn(session(theirs, protocol, options, command));
            let (rd, wr) = tokio::io::split(ours);
            Client {
                reader: ws::Reader::new(rd, false),
                writer: wr,
            }
        }

        async fn send(&mut self, payload: &[u8]) {
            let frame = ws::frame(ws::BINARY, payload, Some([9, 8, 7, 6]));
            self.writer.write_all(&frame).await.unwrap();
        }

        /// Everything until the close frame: (stdout, stderr, outcome).
        async fn finish(mut self) -> (Vec<u8>, Vec<u8>, serde_json::Value) {
            let (mut out, mut err, mut status) = (Vec::new(), Vec::new(), Vec::new());
            loop {
                let message = tokio::time::timeout(Duration::from_secs(30), self.reader.next())
                    .await
                    .expect("the session ends")
                    .expect("a message");
                match message {
                    ws::Message::Data(d) => match d.split_first() {
                        Some((1, rest)) => out.extend_from_slice(rest),
                        Some((2, rest)) => err.extend_from_slice(rest),
                        Some((3, rest)) => status.extend_from_slice(rest),
                        other => panic!("unexpected message {other:?}"),
                    },
                    ws::Message::Close => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            (out, err, serde_json::from_slice(&status).expect("a status"))
        }
    }

    fn options(command: &[&str], stdin: bool) -> ExecOptions {
        ExecOptions {
            command: command.iter().map(|s| (*s).to_owned()).collect(),
            stdin,
            stdout: true,
            stderr: true,
            tty: false,
        }
    }

    #[tokio::test]
    async fn v5_session_relays_stdin_until_its_close() {
        let mut client = Client::start(Protocol::V5, options(&["cat"], true));
        client.send(b"\0hello ").await;
        client.send(b"\0world").await;
        client.send(&[255, 0]).await;
        let (out, err, status) = client.finish().await;
        assert_eq!(String::from_utf8_lossy(&out), "hello world");
        assert!(err.is_empty());
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn v4_session_reports_the_exit_code_and_stderr() {
        let mut client = Client::start(
            Protocol::V4,
            options(&["sh", "-c", "head -c 5; echo oops >&2; exit 7"], true),
        );
        client.send(b"\0abcdefgh").await;
        let (out, err, status) = client.finish().await;
        assert_eq!(out, b"abcde");
        assert_eq!(err, b"oops\n");
        assert_eq!(status["details"]["causes"][0]["message"], "7");
    }

    #[tokio::test]
    async fn tty_session_runs_on_a_sized_terminal() {
        let mut o = options(&["sh", "-c", "tty; stty size; echo err >&2"], false);
        o.tty = true;
        o.stderr = false;
        let mut client = Client::start(Protocol::V5, o);
        client.send(b"\x04{\"Width\":101,\"Height\":33}").await;
        let (out, err, status) = client.finish().await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.contains("/dev/pts/"), "{out:?}");
        assert!(out.contains("33 101"), "{out:?}");
        assert!(out.contains("err"), "stderr goes to the terminal: {out:?}");
        assert!(err.is_empty());
        assert_eq!(status["status"], "Success");
    }

    #[tokio::test]
    async fn a_command_that_cannot_start_is_a_failure_status() {
        let client = Client::start(Protocol::V5, options(&["/nonexistent/program"], false));
        let (_, _, status) = client.finish().await;
        assert_eq!(status["status"], "Failure");
        assert_ne!(status["reason"], "NonZeroExitCode");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("/nonexistent/program"),
            "{status}"
        );
    }

    struct OneLog(PathBuf);

    impl Containers for OneLog {
        fn exec_command(&self, _: &str, _: &str, _: &str, _: &[String]) -> Result<Command, String> {
            Err("no exec here".into())
        }
        fn log_path(&self, _: &str, _: &str, _: &str, _: bool) -> Result<PathBuf, String> {
            Ok(self.0.clone())
        }
        fn pod_netns(&self, _: &str, _: &str) -> Result<Option<PathBuf>, String> {
            Err("no port-forward here".into())
        }
    }

    #[tokio::test]
    async fn following_stops_when_the_client_goes() {
        let dir = std::env::temp_dir().join(format!("kubelet-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("follow.log");
        std::fs::write(&path, "one\n").unwrap();
        let followed = Followed {
            containers: Arc::new(OneLog(path.clone())),
            namespace: "default".into(),
            pod: "p".into(),
            container: "c".into(),
            path: path.clone(),
        };
        let file = tokio::fs::File::open(&path).await.unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let follower =
            tokio::spawn(async move { send_log(file, 0, None, Some(followed), &tx).await });
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"one\n"));
        // Appended, as a container's output is (rewriting the file would truncate it
        // first, and a follower reading in between would see the log start again).
        {
            use std::io::Write;
            let mut log = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            log.write_all(b"two\n").unwrap();
        }
        assert_eq!(rx.recv().await.unwrap(), Bytes::from_static(b"two\n"));
        drop(rx);
        tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .expect("the follower stops once its client is gone")
            .unwrap()
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
