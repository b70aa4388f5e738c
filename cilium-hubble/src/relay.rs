// SPDX-License-Identifier: Apache-2.0

//! Hubble Relay: one Observer API for a whole cluster. The relay asks every node's Hubble
//! server (its peers, kept current by whoever discovers them) and merges their answers
//! in time order. A node that cannot be reached is reported (a `node_status` event in
//! `GetFlows`, `unavailable_nodes` in `ServerStatus`, `NODE_UNAVAILABLE` in `GetNodes`)
//! and the others are served all the same.
//!
//! Without `follow`, `number` is the cluster-wide count: the newest `number` flows of all
//! nodes together (`first`: the oldest). With `follow`, each node's stream (its last
//! `number` flows, then every new one) goes through a sort buffer: a response leaves the
//! buffer once it has waited [`RelayOptions::sort_buffer_drain_timeout`], or when the
//! buffer holds [`RelayOptions::sort_buffer_len_max`] responses (the oldest first), so
//! flows from different nodes come out in time order unless one node lags by more than
//! the drain timeout.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::observer::{Client, connect_with};
use crate::proto;
use crate::proto::observer::get_flows_response::ResponseTypes;
use crate::proto::observer::{
    GetFlowsRequest, GetFlowsResponse, GetNodesRequest, GetNodesResponse, ServerStatusRequest,
    ServerStatusResponse,
};
use crate::proto::relay::{NodeState, NodeStatusEvent};

/// A node's Hubble server.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    /// The node's name.
    pub name: String,
    /// Its Observer API: `HOST:PORT` or `unix://PATH`.
    pub address: String,
}

/// How the relay talks to its peers and orders their flows (Hubble Relay's flags).
#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    /// How long connecting to a peer may take (`--dial-timeout`).
    pub dial_timeout: Duration,
    /// How long a followed response waits for older ones from other nodes
    /// (`--sort-buffer-drain-timeout`).
    pub sort_buffer_drain_timeout: Duration,
    /// How many followed responses the sort buffer holds at most (`--sort-buffer-len-max`).
    pub sort_buffer_len_max: usize,
}

impl Default for RelayOptions {
    fn default() -> Self {
        RelayOptions {
            dial_timeout: Duration::from_secs(5),
            sort_buffer_drain_timeout: Duration::from_secs(1),
            sort_buffer_len_max: 100,
        }
    }
}

/// The relay: serves [`proto::observer::observer_server::Observer`] from its peers.
#[derive(Debug)]
pub struct Relay {
    peers: watch::Receiver<Vec<Peer>>,
    clients: Mutex<HashMap<String, Client>>,
    options: RelayOptions,
    started: Instant,
    tls: Option<PeerTls>,
}

/// How the relay dials its peers over TLS (Hubble Relay's `--tls-hubble-server-ca-files`,
/// `--tls-client-cert-file`, `--tls-client-key-file`): each peer's certificate must name it
/// as [`crate::tls::server_name`] does for the relay's cluster.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The CA of the nodes' certificates and the relay's client certificate.
    pub files: crate::tls::ClientTls,
    /// The cluster's name (`--cluster-name`; Cilium's `cluster-name`, `default`).
    pub cluster_name: String,
}

/// What the peers answered to one call.
struct Gathered<T> {
    answers: Vec<(Peer, T)>,
    unavailable: Vec<(Peer, String)>,
}

fn time_ns(r: &GetFlowsResponse) -> u128 {
    r.time.as_ref().map_or(0, crate::observer::timestamp_ns)
}

fn node_status(unavailable: &[(Peer, String)]) -> GetFlowsResponse {
    let names: Vec<String> = unavailable.iter().map(|(p, _)| p.name.clone()).collect();
    let message = unavailable
        .iter()
        .map(|(p, e)| format!("{}: {e}", p.name))
        .collect::<Vec<_>>()
        .join("; ");
    GetFlowsResponse {
        response_types: Some(ResponseTypes::NodeStatus(NodeStatusEvent {
            state_change: NodeState::NodeUnavailable as i32,
            node_names: names,
            message,
        })),
        node_name: String::new(),
        time: None,
    }
}

impl Relay {
    /// A relay over the peers `peers` holds (changes apply to the next call).
    pub fn new(peers: watch::Receiver<Vec<Peer>>, options: RelayOptions) -> Self {
        Relay {
            peers,
            clients: Mutex::new(HashMap::new()),
            options,
            started: Instant::now(),
            tls: None,
        }
    }

    /// The same relay dialing its peers over TLS.
    pub fn with_tls(self, tls: PeerTls) -> Self {
        Relay {
            tls: Some(tls),
            ..self
        }
    }

    /// The peers now.
    pub fn peers(&self) -> Vec<Peer> {
        self.peers.borrow().clone()
    }

    fn cached(&self, peer: &Peer) -> Option<Client> {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer.address)
            .cloned()
    }

    /// Calls every peer at once (connecting to those without a connection); a peer that
    /// cannot be reached, answers with an error or not within the dial timeout lands in
    /// `unavailable` with the reason.
    async fn gather<T, F, Fut>(&self, call: F) -> Gathered<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let timeout = self.options.dial_timeout;
        let tasks: Vec<_> = self
            .peers()
            .into_iter()
            .map(|peer| {
                let (cached, call, address) =
                    (self.cached(&peer), call.clone(), peer.address.clone());
                // A peer on a unix socket (a node's own) is plain.
                let over_tcp = !peer.address.starts_with("unix://");
                let tls = self.tls.as_ref().filter(|_| over_tcp).map(|t| {
                    t.files
                        .with_server_name(&crate::tls::server_name(&peer.name, &t.cluster_name))
                });
                let task = tokio::spawn(async move {
                    let client = match cached {
                        Some(c) => c,
                        None => connect_with(&address, timeout, tls.as_ref()).await?,
                    };
                    match tokio::time::timeout(timeout, call(client.clone())).await {
                        Ok(Ok(v)) => Ok((v, client)),
                        Ok(Err(s)) => Err(s.message().to_owned()),
                        Err(_) => Err(format!("no answer within {timeout:?}")),
                    }
                });
                (peer, task)
            })
            .collect();
        let mut out = Gathered {
            answers: Vec::new(),
            unavailable: Vec::new(),
        };
        for (peer, task) in tasks {
            let result = task.await.unwrap_or_else(|e| Err(e.to_string()));
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            match result {
                Ok((v, client)) => {
                    clients.insert(peer.address.clone(), client);
                    out.answers.push((peer, v));
                }
                Err(e) => {
                    // Connect afresh next time.
                    clients.remove(&peer.address);
                    out.unavailable.push((peer, e));
                }
            }
        }
        out
    }

    /// Opens `GetFlows` with every peer (each within the dial timeout).
    async fn open_streams(
        &self,
        req: GetFlowsRequest,
    ) -> Gathered<tonic::Streaming<GetFlowsResponse>> {
        self.gather(move |mut c| {
            let req = req.clone();
            async move { Ok(c.get_flows(req).await?.into_inner()) }
        })
        .await
    }

    /// A `GetFlows` without `follow`, answered whole: a `node_status` event first when
    /// nodes are unavailable, then the flows (and lost-event notices) of every node in
    /// time order, cut to `number` cluster-wide.
    pub async fn collect(&self, req: GetFlowsRequest) -> Result<Vec<GetFlowsResponse>, Status> {
        if req.follow {
            return Err(Status::invalid_argument(
                "collect answers requests without follow",
            ));
        }
        let (number, first) = (req.number, req.first);
        // Opening a node's stream must take no longer than the dial timeout; reading it
        // takes what it takes (a node ends a stream without follow by itself).
        let opened = self.open_streams(req).await;
        let mut readers = tokio::task::JoinSet::new();
        for (peer, mut stream) in opened.answers {
            readers.spawn(async move {
                let mut items = Vec::new();
                loop {
                    match stream.message().await {
                        Ok(Some(item)) => items.push(item),
                        Ok(None) => return Ok(items),
                        Err(e) => return Err((peer, e.message().to_owned())),
                    }
                }
            });
        }
        let mut unavailable = opened.unavailable;
        let mut merged: Vec<GetFlowsResponse> = Vec::new();
        while let Some(done) = readers.join_next().await {
            match done {
                Ok(Ok(items)) => merged.extend(items),
                Ok(Err(failed)) => unavailable.push(failed),
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        merged.sort_by_key(time_ns);
        let flows = merged
            .iter()
            .filter(|r| matches!(r.response_types, Some(ResponseTypes::Flow(_))))
            .count();
        if number > 0 && flows as u64 > number {
            // Drop the surplus flows from the far end; other notices stay.
            let mut surplus = flows - usize::try_from(number).unwrap_or(usize::MAX);
            let keep_first = first;
            let drop_flow = |r: &GetFlowsResponse, surplus: &mut usize| {
                if *surplus > 0 && matches!(r.response_types, Some(ResponseTypes::Flow(_))) {
                    *surplus -= 1;
                    false
                } else {
                    true
                }
            };
            if keep_first {
                merged.reverse();
                merged.retain(|r| drop_flow(r, &mut surplus));
                merged.reverse();
            } else {
                merged.retain(|r| drop_flow(r, &mut surplus));
            }
        }
        if !unavailable.is_empty() {
            unavailable.sort();
            merged.insert(0, node_status(&unavailable));
        }
        Ok(merged)
    }

    async fn follow(
        &self,
        req: GetFlowsRequest,
        out: mpsc::Sender<Result<GetFlowsResponse, Status>>,
    ) {
        let opened = self.open_streams(req).await;
        let unavailable = opened.unavailable;
        let (tx, mut rx) = mpsc::channel::<GetFlowsResponse>(1024);
        // Dropped with this function, however it returns: the readers end with it.
        let mut readers = tokio::task::JoinSet::new();
        for (_, mut stream) in opened.answers {
            let tx = tx.clone();
            readers.spawn(async move {
                // A node that fails mid-stream ends its part; the others go on.
                while let Ok(Some(item)) = stream.message().await {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        if !unavailable.is_empty() && out.send(Ok(node_status(&unavailable))).await.is_err() {
            return;
        }
        let drain = self.options.sort_buffer_drain_timeout;
        let max = self.options.sort_buffer_len_max.max(1);
        // (time, arrival number) -> response, plus when each arrived.
        let mut buffer: BinaryHeap<Reverse<(u128, u64)>> = BinaryHeap::new();
        let mut held: BTreeMap<u64, (Instant, GetFlowsResponse)> = BTreeMap::new();
        let mut arrivals = 0u64;
        let mut tick = tokio::time::interval(
            drain.clamp(Duration::from_millis(1), Duration::from_millis(100)),
        );
        let mut open = true;
        loop {
            tokio::select! {
                item = rx.recv(), if open => match item {
                    Some(item) => {
                        arrivals += 1;
                        buffer.push(Reverse((time_ns(&item), arrivals)));
                        held.insert(arrivals, (Instant::now(), item));
                    }
                    None => open = false,
                },
                _ = tick.tick() => {}
                () = out.closed() => break,
            }
            // Emit from the oldest while the buffer is over its size, or the oldest
            // arrival in it has waited long enough.
            loop {
                let overfull = held.len() > max;
                let waited = held
                    .first_key_value()
                    .is_some_and(|(_, (at, _))| at.elapsed() >= drain);
                let closing = !open && !held.is_empty();
                if !overfull && !waited && !closing {
                    break;
                }
                let Some(Reverse((_, n))) = buffer.pop() else {
                    break;
                };
                if let Some((_, item)) = held.remove(&n)
                    && out.send(Ok(item)).await.is_err()
                {
                    return;
                }
            }
            if !open && held.is_empty() {
                break;
            }
        }
    }
}

type FlowStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<GetFlowsResponse, Status>> + Send>>;

/// The relay as an Observer service (share one relay between services with an `Arc`).
#[tonic::async_trait]
impl proto::observer::observer_server::Observer for Arc<Relay> {
    type GetFlowsStream = FlowStream;

    async fn get_flows(
        &self,
        request: Request<GetFlowsRequest>,
    ) -> Result<Response<Self::GetFlowsStream>, Status> {
        let req = request.into_inner();
        // Refuse bad filters here, as a node would, rather than once per node.
        for f in req.whitelist.iter().chain(&req.blacklist) {
            crate::observer::filter_from(f)?;
        }
        let (tx, rx) = mpsc::channel(256);
        if req.follow {
            let relay = self.clone();
            tokio::spawn(async move { relay.follow(req, tx).await });
        } else {
            let items = self.collect(req).await?;
            tokio::spawn(async move {
                for item in items {
                    if tx.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_nodes(
        &self,
        _request: Request<GetNodesRequest>,
    ) -> Result<Response<GetNodesResponse>, Status> {
        let gathered = self
            .gather(|mut c| async move { c.get_nodes(GetNodesRequest {}).await })
            .await;
        let mut nodes = Vec::new();
        for (peer, answer) in gathered.answers {
            for mut n in answer.into_inner().nodes {
                n.address = peer.address.clone();
                nodes.push(n);
            }
        }
        for (peer, _) in gathered.unavailable {
            nodes.push(proto::observer::Node {
                name: peer.name,
                address: peer.address,
                state: NodeState::NodeUnavailable as i32,
                ..proto::observer::Node::default()
            });
        }
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(GetNodesResponse { nodes }))
    }

    async fn server_status(
        &self,
        _request: Request<ServerStatusRequest>,
    ) -> Result<Response<ServerStatusResponse>, Status> {
        let gathered = self
            .gather(|mut c| async move { c.server_status(ServerStatusRequest {}).await })
            .await;
        let mut status = ServerStatusResponse {
            uptime_ns: self.started.elapsed().as_nanos() as u64,
            version: concat!("cilium-rs hubble-relay ", env!("CARGO_PKG_VERSION")).to_owned(),
            num_connected_nodes: Some(gathered.answers.len() as u32),
            num_unavailable_nodes: Some(gathered.unavailable.len() as u32),
            unavailable_nodes: gathered
                .unavailable
                .iter()
                .map(|(p, _)| p.name.clone())
                .collect(),
            ..ServerStatusResponse::default()
        };
        for (_, answer) in gathered.answers {
            let s = answer.into_inner();
            status.num_flows += s.num_flows;
            status.max_flows += s.max_flows;
            status.seen_flows += s.seen_flows;
            status.flows_rate += s.flows_rate;
        }
        Ok(Response::new(status))
    }
}
