// SPDX-License-Identifier: Apache-2.0

//! The built-in workloads pods run, by image: `traefik/whoami` is an HTTP server that
//! answers with its host name, addresses and the request (as whoami does);
//! `nicolaka/netshoot` is a shell that sleeps (its commands run through `kubectl exec`);
//! Cilium's own images (`quay.io/cilium/cilium`, `quay.io/cilium/operator-generic`,
//! `quay.io/cilium/hubble-relay`) run this project's binaries (the agent's image also has
//! `cilium-dbg`, `hubble` and `cilium-cni`, run when the command names them);
//! `quay.io/cilium/alpine-curl` is a shell and `quay.io/cilium/json-mock` an HTTP server
//! on 8080, for `cilium connectivity test`; `registry.k8s.io/kube-proxy` is upstream's
//! kube-proxy from the pinned Kubernetes build (the seed's cluster before Cilium);
//! `registry.k8s.io/e2e-test-images/agnhost` is upstream's agnhost, built from the same
//! Kubernetes module (`cargo xtask conformance`), for Kubernetes' own e2e tests, and
//! `registry.k8s.io/pause` a process that sleeps.

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};

/// What a pod runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Workload {
    /// An HTTP server on a port, answering like traefik/whoami.
    Whoami {
        /// The port.
        port: u16,
    },
    /// Nothing to run (a sleeping shell).
    Sleep,
    /// One of this project's programs (next to cilium-lab), for Cilium's images.
    Program {
        /// Its file name.
        binary: &'static str,
    },
}

/// The workload of an image, or an error naming the images this lab knows.
pub fn for_image(image: &str, ports: &[u16]) -> Result<Workload, String> {
    let name = image
        .rsplit_once('/')
        .map_or(image, |(repo, rest)| {
            if repo.contains('.') || repo.contains(':') {
                rest
            } else {
                image
            }
        })
        .split([':', '@'])
        .next()
        .unwrap_or(image);
    match name {
        "traefik/whoami" | "whoami" | "containous/whoami" => Ok(Workload::Whoami {
            port: ports.first().copied().unwrap_or(80),
        }),
        "nicolaka/netshoot" | "netshoot" | "busybox" | "alpine" | "curlimages/curl"
        | "cilium/alpine-curl" | "alpine-curl" | "pause" => Ok(Workload::Sleep),
        // Cilium's connectivity test's echo server (an HTTP server on 8080).
        "cilium/json-mock" | "json-mock" => Ok(Workload::Whoami {
            port: ports.first().copied().unwrap_or(8080),
        }),
        "cilium" | "cilium/cilium" => Ok(Workload::Program {
            binary: "cilium-agent",
        }),
        "operator-generic" | "operator" | "cilium/operator-generic" | "cilium/operator" => {
            Ok(Workload::Program {
                binary: "cilium-operator",
            })
        }
        "hubble-relay" | "cilium/hubble-relay" => Ok(Workload::Program {
            binary: "hubble-relay",
        }),
        "kube-proxy" => Ok(Workload::Program {
            binary: "kube-proxy",
        }),
        // Kubernetes' e2e test image (its entrypoint is /agnhost, a subcommand per role).
        "agnhost" | "e2e-test-images/agnhost" => Ok(Workload::Program { binary: "agnhost" }),
        other => Err(format!(
            "image {other:?} is not one this lab can run: traefik/whoami (an HTTP server answering \"Hostname: <pod>\"), nicolaka/netshoot (a shell for kubectl exec), Cilium's quay.io/cilium/cilium, operator-generic and hubble-relay (this project's binaries), quay.io/cilium/alpine-curl (a shell) and json-mock (an HTTP server on 8080), registry.k8s.io/kube-proxy (upstream's), registry.k8s.io/e2e-test-images/agnhost (upstream's, for the e2e tests) or registry.k8s.io/pause"
        )),
    }
}

/// The programs that are upstream Kubernetes' (in the pinned build's directory), not this
/// project's.
pub const KUBERNETES_PROGRAMS: &[&str] = &["kube-proxy", "agnhost"];

/// The programs an image of this project's has besides its entrypoint (upstream's
/// `cilium` image ships `cilium-dbg`, `hubble` and the CNI plugin with the agent).
pub fn image_programs(entrypoint: &str) -> &'static [&'static str] {
    match entrypoint {
        "cilium-agent" => &["cilium-agent", "cilium-dbg", "hubble", "cilium-cni"],
        "cilium-operator" => &["cilium-operator"],
        "hubble-relay" => &["hubble-relay"],
        "kube-proxy" => &["kube-proxy"],
        "agnhost" => &["agnhost"],
        _ => &[],
    }
}

/// The body whoami answers with.
pub fn whoami_body(hostname: &str, local: IpAddr, peer: &str, request: &[String]) -> String {
    let mut out = format!("Hostname: {hostname}\nIP: 127.0.0.1\nIP: {local}\nRemoteAddr: {peer}\n");
    for line in request {
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn serve(mut conn: TcpStream, hostname: &str) {
    let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
    let peer = conn.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let local = conn
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let Ok(read) = conn.try_clone() else { return };
    let mut reader = BufReader::new(read);
    let mut request = Vec::new();
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let line = line.trim_end().to_owned();
                if line.is_empty() {
                    break;
                }
                request.push(line);
            }
        }
    }
    let body = whoami_body(hostname, local, &peer, &request);
    let _ = write!(
        conn,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Runs the whoami server on `port` until the process is killed.
pub fn run_whoami(hostname: &str, port: u16) -> std::io::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port))?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let name = hostname.to_owned();
        std::thread::spawn(move || serve(conn, &name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_map_to_workloads_and_unknown_ones_are_named() {
        assert_eq!(
            for_image("traefik/whoami", &[80]),
            Ok(Workload::Whoami { port: 80 })
        );
        assert_eq!(
            for_image("docker.io/traefik/whoami:v1.10", &[]),
            Ok(Workload::Whoami { port: 80 })
        );
        assert_eq!(for_image("nicolaka/netshoot", &[]), Ok(Workload::Sleep));
        assert_eq!(
            for_image("quay.io/cilium/cilium:v1.18.0", &[]),
            Ok(Workload::Program {
                binary: "cilium-agent"
            })
        );
        assert_eq!(
            for_image("quay.io/cilium/operator-generic:v1.18.0@sha256:abc", &[]),
            Ok(Workload::Program {
                binary: "cilium-operator"
            })
        );
        assert_eq!(
            for_image("registry.k8s.io/e2e-test-images/agnhost:2.56", &[80, 81]),
            Ok(Workload::Program { binary: "agnhost" })
        );
        assert_eq!(
            for_image("registry.k8s.io/pause:3.10", &[]),
            Ok(Workload::Sleep)
        );
        let err = for_image("nginx", &[]).unwrap_err();
        assert!(
            err.contains("\"nginx\"") && err.contains("traefik/whoami"),
            "{err}"
        );
    }

    #[test]
    fn whoami_answers_with_the_hostname_first() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (c, _) = listener.accept().unwrap();
            serve(c, "webpod-1");
        });
        let mut c = TcpStream::connect(addr).unwrap();
        write!(c, "GET / HTTP/1.1\r\nHost: webpod\r\n\r\n").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut c, &mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        let body = out.split_once("\r\n\r\n").unwrap().1;
        assert!(body.starts_with("Hostname: webpod-1\n"), "{body}");
        assert!(body.contains("GET / HTTP/1.1\nHost: webpod\n"), "{body}");
    }
}
