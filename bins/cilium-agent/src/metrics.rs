// SPDX-License-Identifier: Apache-2.0

//! The agent's Prometheus metrics, with Cilium's names (prefix `cilium_`): endpoint
//! states, identities, IPAM, regenerations, and the datapath's drop / forward counters
//! read from `cilium_metrics` at each scrape.

use std::path::PathBuf;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The agent's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    endpoint_state: Family<Labels, Gauge>,
    identity: Family<Labels, Gauge>,
    ipam_capacity: Family<Labels, Gauge>,
    ip_addresses: Family<Labels, Gauge>,
    regenerations: Family<Labels, Counter>,
    /// Successful endpoint regenerations.
    pub regenerations_success: Counter,
    /// Failed endpoint regenerations.
    pub regenerations_failure: Counter,
    /// Time to create (regenerate) an endpoint, seconds.
    pub regeneration_time: Histogram,
    /// Hubble's metrics (prefix `hubble_`).
    hubble: Registry,
    flows_processed: Family<Labels, Counter>,
    drops: Family<Labels, Counter>,
    lost: Family<Labels, Counter>,
}

/// Reads `cilium_metrics` on each scrape.
#[derive(Debug)]
struct DatapathCounters {
    bpf_root: PathBuf,
}

fn direction(dir: u8) -> &'static str {
    match dir {
        1 => "INGRESS",
        2 => "EGRESS",
        3 => "SERVICE",
        _ => "UNKNOWN",
    }
}

impl Collector for DatapathCounters {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Ok(map) = cilium_bpf::maps::MetricsMap::open(&self.bpf_root) else {
            return Ok(());
        };
        let Ok(totals) = map.totals() else {
            return Ok(());
        };
        let mut drops = Vec::new();
        let mut forwards = Vec::new();
        for (key, value) in totals {
            let dir = direction(key.dir);
            if key.reason == cilium_bpf::maps::REASON_FORWARDED {
                forwards.push((dir, value));
            } else {
                let reason = cilium_bpf::events::drop_reason::describe(key.reason);
                drops.push((reason, dir, value));
            }
        }
        for (name, help, bytes) in [
            (
                "drop_count",
                "Total dropped packets, by reason and direction",
                false,
            ),
            (
                "drop_bytes",
                "Total dropped bytes, by reason and direction",
                true,
            ),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (reason, dir, v) in &drops {
                let set = [("reason", *reason), ("direction", *dir)];
                let c = ConstCounter::new(if bytes { v.bytes } else { v.count });
                c.encode(family.encode_family(&set)?)?;
            }
        }
        for (name, help, bytes) in [
            (
                "forward_count",
                "Total forwarded packets, by direction",
                false,
            ),
            ("forward_bytes", "Total forwarded bytes, by direction", true),
        ] {
            let counter = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
            for (dir, v) in &forwards {
                let set = [("direction", *dir)];
                let c = ConstCounter::new(if bytes { v.bytes } else { v.count });
                c.encode(family.encode_family(&set)?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// The metrics; with a BPF root, the datapath counters too.
    pub fn new(bpf_root: Option<PathBuf>) -> Self {
        let mut registry = Registry::with_prefix("cilium");
        let endpoint_state = Family::<Labels, Gauge>::default();
        registry.register(
            "endpoint_state",
            "Count of all endpoints, tagged by different endpoint states",
            endpoint_state.clone(),
        );
        let identity = Family::<Labels, Gauge>::default();
        registry.register(
            "identity",
            "Number of identities in use on this node",
            identity.clone(),
        );
        let ipam_capacity = Family::<Labels, Gauge>::default();
        registry.register(
            "ipam_capacity",
            "Total number of IPs in the IPAM pool, by family",
            ipam_capacity.clone(),
        );
        let ip_addresses = Family::<Labels, Gauge>::default();
        registry.register(
            "ip_addresses",
            "Number of allocated IP addresses, by family",
            ip_addresses.clone(),
        );
        let regenerations = Family::<Labels, Counter>::default();
        registry.register(
            "endpoint_regenerations",
            "Count of all endpoint regenerations that have completed, tagged by outcome",
            regenerations.clone(),
        );
        let regeneration_time = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "endpoint_regeneration_time_stats_seconds",
            "Endpoint regeneration time, seconds",
            regeneration_time.clone(),
        );
        if let Some(root) = bpf_root {
            registry.register_collector(Box::new(DatapathCounters { bpf_root: root }));
        }
        let regenerations_success = regenerations
            .get_or_create(&labels(&[("outcome", "success")]))
            .clone();
        let regenerations_failure = regenerations
            .get_or_create(&labels(&[("outcome", "failure")]))
            .clone();
        let mut hubble = Registry::with_prefix("hubble");
        let flows_processed = Family::<Labels, Counter>::default();
        hubble.register(
            "flows_processed",
            "Total number of flows processed",
            flows_processed.clone(),
        );
        let drops = Family::<Labels, Counter>::default();
        hubble.register("drop", "Number of drops", drops.clone());
        let lost = Family::<Labels, Counter>::default();
        hubble.register(
            "lost_events",
            "Number of lost events, by where they were lost",
            lost.clone(),
        );
        Metrics {
            registry,
            hubble,
            flows_processed,
            drops,
            lost,
            endpoint_state,
            identity,
            ipam_capacity,
            ip_addresses,
            regenerations,
            regenerations_success,
            regenerations_failure,
            regeneration_time,
        }
    }

    /// Sets the number of ready endpoints.
    pub fn set_endpoints(&self, ready: i64) {
        self.endpoint_state
            .get_or_create(&labels(&[("endpoint_state", "ready")]))
            .set(ready);
    }

    /// Sets the IPAM gauges.
    pub fn set_ipam(&self, used: i64, capacity: i64) {
        let fam = labels(&[("family", "ipv4")]);
        self.ip_addresses.get_or_create(&fam).set(used);
        self.ipam_capacity.get_or_create(&fam).set(capacity);
    }

    /// Sets the number of identities endpoints of this node use.
    pub fn set_identities(&self, n: i64) {
        self.identity
            .get_or_create(&labels(&[("type", "cluster_local")]))
            .set(n);
    }

    /// Counts a flow Hubble saw (`hubble_flows_processed_total`, `hubble_drop_total`).
    pub fn count_flow(&self, flow: &cilium_hubble::flow::Flow) {
        let protocol = flow
            .l4
            .as_ref()
            .map_or("unknown", cilium_hubble::flow::Layer4::protocol)
            .to_uppercase();
        let (kind, subtype) = match flow.event_type.kind {
            1 => ("Drop", String::new()),
            5 => ("PolicyVerdict", String::new()),
            _ => (
                "Trace",
                flow.trace_observation_point
                    .as_deref()
                    .unwrap_or_default()
                    .to_lowercase()
                    .replace('_', "-"),
            ),
        };
        let verdict = flow.verdict.name();
        self.flows_processed
            .get_or_create(&labels(&[
                ("protocol", &protocol),
                ("subtype", &subtype),
                ("type", kind),
                ("verdict", verdict),
            ]))
            .inc();
        if flow.event_type.kind == 1
            && let Some(reason) = &flow.drop_reason_desc
        {
            self.drops
                .get_or_create(&labels(&[("protocol", &protocol), ("reason", reason)]))
                .inc();
        }
    }

    /// Counts events lost before they became flows (`hubble_lost_events_total`; `source`
    /// as Hubble names it: `perf_event_ring_buffer` for the datapath's ring buffer).
    pub fn count_lost(&self, source: &str, n: u64) {
        self.lost
            .get_or_create(&labels(&[("source", source)]))
            .inc_by(n);
    }

    /// The text exposition format (the agent's metrics, then Hubble's).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut hubble = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err()
            || prometheus_client::encoding::text::encode(&mut hubble, &self.hubble).is_err()
        {
            out.clear();
            return out;
        }
        // One exposition: a single `# EOF`, at the end.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        out.push_str(&hubble);
        let _ = &self.regenerations;
        out
    }
}
