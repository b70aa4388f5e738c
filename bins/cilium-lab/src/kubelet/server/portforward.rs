// SPDX-License-Identifier: Apache-2.0

//! Port forwarding: `/portForward/{namespace}/{pod}` (and `.../{uid}`), as upstream's kubelet
//! serves it over WebSocket (`pkg/kubelet/cri/streaming/portforward/websocket.go`).
//!
//! The ports are the query's `port` (repeated, or comma-separated; 1 to 65535: the apiserver
//! turns its own API's `ports` into one `port=P1,P2`). The
//! subprotocol is `v4.channel.k8s.io` (or none: the same binary framing); each port `i` has
//! two channels, data `2i` and error `2i+1`. The first message of each channel, from the
//! server, is the port as two little-endian bytes. Then the client's messages on a data
//! channel go to the port's connection and what the pod sends back comes on the same
//! channel. The connection is made when the session opens, to `localhost:PORT` inside the
//! pod's network namespace (127.0.0.1, then ::1), as the container runtime does; one that
//! fails is reported once on the port's error channel. The session closes (status 1000)
//! once every port's connection has ended (the pod closed it, or it failed), or when the
//! client closes. `v4.base64.channel.k8s.io` (text frames) is not served; SPDY, and the
//! WebSocket tunnel of SPDY that `kubectl port-forward` speaks
//! (`SPDY/3.1+portforward.k8s.io`), are refused with a 400 naming what is served.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};

use super::{
    Body, CHUNK, CLOSE_TIMEOUT, Containers, Outbound, handshake, offered_protocols, on_upgrade,
    parse_query, switching_protocols, text, write_loop, ws,
};

/// The subprotocol served (binary channels).
const PROTOCOL: &str = "v4.channel.k8s.io";

/// How long connecting to a pod's port may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The ports a port-forward request asks for, checked as upstream's kubelet checks them.
pub(super) fn ports(query: &[(String, String)]) -> Result<Vec<u16>, String> {
    let values: Vec<&str> = query
        .iter()
        .filter(|(n, _)| n == "port")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut ports = Vec::new();
    for value in values {
        if value.is_empty() {
            return Err("query parameter \"port\" cannot be empty".into());
        }
        for p in value.split(',') {
            match p.parse::<u16>() {
                Ok(0) => return Err(format!("port {value:?} must be > 0")),
                Ok(port) => ports.push(port),
                Err(e) => return Err(format!("unable to parse {value:?} as a port: {e}")),
            }
        }
    }
    // Two channels a port, numbered by one byte.
    if ports.len() > 128 {
        return Err(format!("{} ports asked; at most 128", ports.len()));
    }
    Ok(ports)
}

/// The port-forward request: checks it, accepts the upgrade and runs the session.
pub(super) fn handle(
    mut req: Request<Incoming>,
    namespace: &str,
    pod: &str,
    containers: &dyn Containers,
    stopped: watch::Receiver<()>,
) -> Response<Body> {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return text(StatusCode::METHOD_NOT_ALLOWED, "405: Method Not Allowed");
    }
    let headers = req.headers();
    let accept = match handshake(headers, "port-forward", &[PROTOCOL]) {
        Ok(a) => a,
        Err(response) => return *response,
    };
    let offered = offered_protocols(headers);
    let protocol = if offered.is_empty() {
        None
    } else if offered.contains(&PROTOCOL) {
        Some(PROTOCOL)
    } else {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "requested protocol(s) are not supported: {offered:?}; supports [{PROTOCOL:?}]"
            ),
        );
    };
    let ports = match parse_query(req.uri().query()).and_then(|q| ports(&q)) {
        Ok(p) => p,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e),
    };
    let netns = match containers.pod_netns(namespace, pod) {
        Ok(n) => n,
        Err(e) => return text(StatusCode::NOT_FOUND, &e),
    };
    let target = format!("{namespace}/{pod}");
    on_upgrade(&mut req, stopped, move |io| {
        session(io, ports, netns, target)
    });
    switching_protocols(&accept, protocol)
}

/// Connects to `localhost:port` in network namespace `netns` (None: this process's): on a
/// thread of its own, which enters the namespace and ends (a socket stays in the namespace
/// it was made in, whichever thread uses it).
async fn connect(netns: Option<PathBuf>, port: u16) -> io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let connected = (|| -> io::Result<std::net::TcpStream> {
            if let Some(path) = &netns {
                let file = std::fs::File::open(path)?;
                rustix::thread::move_into_link_name_space(
                    std::os::fd::AsFd::as_fd(&file),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )?;
            }
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
            let stream =
                std::net::TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT).or_else(|e4| {
                    std::net::TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT)
                        .map_err(|e6| io::Error::new(e4.kind(), format!("IPv4: {e4}; IPv6: {e6}")))
                })?;
            stream.set_nonblocking(true)?;
            Ok(stream)
        })();
        let _ = tx.send(connected);
    });
    let stream = rx
        .await
        .map_err(|_| io::Error::other("the connecting thread failed"))??;
    tokio::net::TcpStream::from_std(stream)
}

/// What a port's reader reports.
enum FromPod {
    /// Bytes for the data channel.
    Data(u8, Vec<u8>),
    /// The port's connection ended (the pod closed it, or it failed).
    Done,
}

/// One port-forward session over an upgraded connection.
pub(super) async fn session<S>(io: S, ports: Vec<u16>, netns: Option<PathBuf>, target: String)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(16);
    let mut writer = tokio::spawn(write_loop(wr, out_rx));
    let mut to_pod: Vec<Option<OwnedWriteHalf>> = Vec::with_capacity(ports.len());
    let (from_tx, mut from_rx) = mpsc::channel(16);
    let mut readers = tokio::task::JoinSet::new();
    let mut open = 0usize;
    for (i, &port) in ports.iter().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        let [lo, hi] = port.to_le_bytes();
        for channel in [data, error] {
            let _ = out_tx.send(Outbound::Data(vec![channel, lo, hi])).await;
        }
        match connect(netns.clone(), port).await {
            Ok(stream) => {
                let (r, w) = stream.into_split();
                to_pod.push(Some(w));
                readers.spawn(read_pod(r, data, from_tx.clone()));
                open += 1;
            }
            Err(e) => {
                to_pod.push(None);
                let mut message = vec![error];
                message.extend_from_slice(
                    format!(
                        "error forwarding port {port} to pod {target}: failed to connect to \
                         localhost:{port} inside the pod's network namespace: {e}"
                    )
                    .as_bytes(),
                );
                let _ = out_tx.send(Outbound::Data(message)).await;
            }
        }
    }
    drop(from_tx);
    let mut frames = ws::Reader::new(rd, true);
    while open > 0 {
        tokio::select! {
            message = frames.next() => match message {
                Ok(ws::Message::Data(data)) => {
                    let Some((&channel, bytes)) = data.split_first() else { continue };
                    let slot = to_pod.get_mut(usize::from(channel / 2));
                    if channel % 2 == 0
                        && let Some(slot) = slot
                        && let Some(w) = slot
                        && w.write_all(bytes).await.is_err()
                    {
                        // The pod's side is gone: its reader ends the port.
                        *slot = None;
                    }
                }
                Ok(ws::Message::Ping(payload)) => {
                    let _ = out_tx.send(Outbound::Pong(payload)).await;
                }
                Ok(ws::Message::Pong) => {}
                Ok(ws::Message::Close) => break,
                Err(ws::ReadError::Protocol(code, _)) => {
                    let _ = out_tx.send(Outbound::Close(code)).await;
                    open = 0;
                }
                Err(ws::ReadError::Io(_)) => open = 0,
            },
            Some(from) = from_rx.recv() => match from {
                FromPod::Data(channel, bytes) => {
                    let mut message = Vec::with_capacity(bytes.len() + 1);
                    message.push(channel);
                    message.extend_from_slice(&bytes);
                    let _ = out_tx.send(Outbound::Data(message)).await;
                }
                FromPod::Done => open -= 1,
            },
        }
    }
    // Every connection closes with the session (dropped writers and aborted readers).
    readers.abort_all();
    drop(to_pod);
    let _ = out_tx.send(Outbound::Close(1000)).await;
    drop(out_tx);
    if tokio::time::timeout(CLOSE_TIMEOUT, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// Relays what the pod sends on a port's connection until it ends.
async fn read_pod(mut r: OwnedReadHalf, channel: u8, out: mpsc::Sender<FromPod>) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if out
                    .send(FromPod::Data(channel, buf[..n].to_vec()))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    }
    let _ = out.send(FromPod::Done).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn ports_follow_upstream() {
        assert_eq!(ports(&query(&[("port", "80")])).unwrap(), [80]);
        assert_eq!(
            ports(&query(&[("port", "80,4245"), ("port", "53")])).unwrap(),
            [80, 4245, 53]
        );
        for (bad, why) in [
            (query(&[]), "is required"),
            (query(&[("port", "")]), "cannot be empty"),
            (query(&[("port", "0")]), "must be > 0"),
            (query(&[("port", "65536")]), "unable to parse"),
            (query(&[("port", "80,")]), "unable to parse"),
            (query(&[("port", "http")]), "unable to parse"),
        ] {
            let e = ports(&bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    /// A client's side of a session over an in-memory connection.
    struct Client {
        reader: ws::Reader<tokio::io::ReadHalf<tokio::io::DuplexStream>>,
        writer: tokio::io::WriteHalf<tokio::io::DuplexStream>,
    }

    impl Client {
        fn start(ports: Vec<u16>) -> Client {
            let (ours, theirs) = tokio::io::duplex(64 * 1024);
            tokio::spawn(session(theirs, ports, None, "default/p".into()));
            let (rd, wr) = tokio::io::split(ours);
            Client {
                reader: ws::Reader::new(rd, false),
                writer: wr,
            }
        }

        async fn send(&mut self, opcode: u8, payload: &[u8]) {
            let frame = ws::frame(opcode, payload, Some([1, 2, 3, 4]));
            self.writer.write_all(&frame).await.unwrap();
        }

        async fn next(&mut self) -> ws::Message {
            tokio::time::timeout(Duration::from_secs(30), self.reader.next())
                .await
                .expect("a message in time")
                .expect("a message")
        }
    }

    #[tokio::test]
    async fn a_session_relays_both_ways_and_closes_with_the_pod() {
        // The "pod": an upper-casing server on loopback that closes after one line.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut line = Vec::new();
            let mut b = [0u8; 1];
            while s.read_exact(&mut b).await.is_ok() && b[0] != b'\n' {
                line.push(b[0]);
            }
            s.write_all(&line.to_ascii_uppercase()).await.unwrap();
        });
        let mut client = Client::start(vec![port]);
        let [lo, hi] = port.to_le_bytes();
        assert_eq!(client.next().await, ws::Message::Data(vec![0, lo, hi]));
        assert_eq!(client.next().await, ws::Message::Data(vec![1, lo, hi]));
        client.send(ws::BINARY, b"\0hello ").await;
        client.send(ws::PING, b"p").await;
        assert_eq!(client.next().await, ws::Message::Pong);
        client.send(ws::BINARY, b"\0world\n").await;
        let mut got = Vec::new();
        loop {
            match client.next().await {
                ws::Message::Data(d) => {
                    assert_eq!(d[0], 0, "data comes on the data channel");
                    got.extend_from_slice(&d[1..]);
                }
                ws::Message::Close => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, b"HELLO WORLD");
    }

    #[tokio::test]
    async fn a_port_nobody_listens_on_is_reported_on_its_error_channel() {
        // A port bound and not listened on: connecting is refused.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let mut client = Client::start(vec![port]);
        let mut error = String::new();
        loop {
            match client.next().await {
                ws::Message::Data(d) if d.len() == 3 => {}
                ws::Message::Data(d) => {
                    assert_eq!(d[0], 1, "errors come on the error channel");
                    error.push_str(&String::from_utf8_lossy(&d[1..]));
                }
                ws::Message::Close => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(
            error.contains(&format!("error forwarding port {port}")),
            "{error}"
        );
        assert!(error.contains("refused"), "{error}");
        drop(socket);
    }
}
