// SPDX-License-Identifier: Apache-2.0

use std::net::Ipv4Addr;

use cilium_bpf::events::{EventKind, ObservationPoint, drop_reason};

use crate::filter::{FlowFilter, passes};
use crate::flow::{
    Endpoint, Flow, FlowTime, NoNames, Resolver, TrafficDirection, Verdict, rfc3339,
};

/// Names pods as the agent would: by endpoint id or IP.
struct Pods;

impl Resolver for Pods {
    fn endpoint(&self, id: u16, ip: Ipv4Addr, identity: u32) -> Endpoint {
        let (ns, pod, labels) = match ip.octets() {
            [172, 20, 0, 10] => ("default", "curl-pod", vec!["k8s:app=curl".to_owned()]),
            [172, 20, 1, 10] => (
                "default",
                "webpod-7d9f-abcde",
                vec!["k8s:app=webpod".to_owned()],
            ),
            _ => return NoNames.endpoint(id, ip, identity),
        };
        Endpoint {
            id,
            identity,
            namespace: ns.into(),
            labels: labels.into(),
            pod_name: pod.into(),
        }
    }
}

const T: u128 = 1_795_749_014_123_456_789; // 2026-11-27T03:10:14.123456789Z

#[test]
fn times_are_rfc3339_in_utc() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
    assert_eq!(rfc3339(T), "2026-11-27T03:10:14.123456789Z");
    assert_eq!(
        rfc3339(951_782_400_000_000_000),
        "2000-02-29T00:00:00.000000000Z"
    );
    // A flow's time in JSON as protobuf's JSON mapping writes it (what Hubble prints).
    for (ns, text) in [
        (T, "2026-11-27T03:10:14.123456789Z"),
        (T - 789, "2026-11-27T03:10:14.123456Z"),
        (T - 456_789, "2026-11-27T03:10:14.123Z"),
        (T - 123_456_789, "2026-11-27T03:10:14Z"),
        (T - 123_456_780, "2026-11-27T03:10:14.000000009Z"),
    ] {
        assert_eq!(FlowTime(ns).to_string(), text);
        assert_eq!(crate::observer::parse_time(text), Some(ns));
        assert_eq!(
            serde_json::from_value::<FlowTime>(serde_json::json!(text)).unwrap(),
            FlowTime(ns)
        );
    }
}

#[test]
fn times_parse_as_rfc3339_allows() {
    use crate::observer::parse_time;
    let t = T - 123_456_789; // 2026-11-27T03:10:14Z
    assert_eq!(parse_time("2026-11-27T04:10:14+01:00"), Some(t));
    assert_eq!(
        parse_time("2026-11-27t02:40:14.5-00:30"),
        Some(t + 500_000_000)
    );
    for bad in [
        "2026-11-27T03:10:14",
        "2026-11-27T03:10:14.Z",
        "2026-11-27T03:10:14.1234567890Z",
        "2026-13-27T03:10:14Z",
        "2026-11-27T24:10:14Z",
        "2026-11-27T03:10:14+1:00",
        "2026-11-27 03:10:14Z",
        "+026-11-27T03:10:14Z",
        "2026-11-27T03:10:14Zjunk",
        "1969-12-31T23:59:59Z",
    ] {
        assert_eq!(parse_time(bad), None, "{bad}");
    }
}

#[test]
fn a_trace_becomes_hubbles_flow_and_json() {
    let ev = crate::example_event();
    let flow = Flow::from_event(&ev, T, "k8s-w1", &Pods);
    assert_eq!(flow.verdict, Verdict::Forwarded);
    assert_eq!(flow.traffic_direction, TrafficDirection::Ingress);
    assert_eq!(flow.trace_observation_point.as_deref(), Some("TO_ENDPOINT"));
    assert_eq!(flow.event_type.kind, 4);
    let json = serde_json::to_value(&flow).unwrap();
    assert_eq!(json["verdict"], "FORWARDED");
    assert_eq!(json["IP"]["ipVersion"], "IPv4");
    assert_eq!(json["l4"]["TCP"]["destination_port"], 80);
    assert_eq!(json["l4"]["TCP"]["flags"]["SYN"], true);
    assert_eq!(json["source"]["pod_name"], "curl-pod");
    assert_eq!(json["destination"]["ID"], 12);
    assert_eq!(json["Type"], "L3_L4");
    assert_eq!(json["node_name"], "k8s-w1");
    // protojson leaves zero values out, as upstream's hubble prints them.
    assert!(json["event_type"].get("sub_type").is_none(), "{json}");
    assert_eq!(json["Summary"], "TCP Flags: SYN");
    let back: Flow = serde_json::from_value(json).unwrap();
    assert_eq!(back, flow);
    assert_eq!(
        flow.compact(),
        "Nov 27 03:10:14.123: default/curl-pod:43210 (ID:257) -> default/webpod-7d9f-abcde:80 (ID:256) to-endpoint FORWARDED (TCP Flags: SYN)"
    );
}

#[test]
fn drops_and_verdicts_read_like_hubble() {
    let mut ev = crate::example_event();
    ev.kind = EventKind::Drop {
        reason: drop_reason::POLICY_DENIED,
    };
    let flow = Flow::from_event(&ev, T, "k8s-w1", &Pods);
    assert_eq!(flow.verdict, Verdict::Dropped);
    assert_eq!(flow.drop_reason_desc.as_deref(), Some("POLICY_DENIED"));
    assert!(
        flow.compact()
            .ends_with("Policy denied DROPPED (TCP Flags: SYN)"),
        "{}",
        flow.compact()
    );
    ev.kind = EventKind::PolicyVerdict {
        allowed: false,
        ingress: true,
    };
    let flow = Flow::from_event(&ev, T, "k8s-w1", &Pods);
    assert!(
        flow.compact()
            .contains("policy-verdict:L3-L4 INGRESS DENIED"),
        "{}",
        flow.compact()
    );
    // Egress: emitted by the source endpoint; an address that is no pod prints as the IP.
    ev.kind = EventKind::Trace {
        point: ObservationPoint::ToStack,
    };
    ev.src_endpoint = 12;
    ev.daddr = Ipv4Addr::new(8, 8, 8, 8);
    ev.proto = 1;
    ev.icmp_type = 8;
    let flow = Flow::from_event(&ev, T, "k8s-w1", &Pods);
    assert_eq!(flow.traffic_direction, TrafficDirection::Egress);
    assert!(
        flow.compact().contains(
            "default/curl-pod (ID:257) -> 8.8.8.8 (ID:256) to-stack FORWARDED (ICMPv4 EchoRequest)"
        ),
        "{}",
        flow.compact()
    );
}

#[test]
fn filters_and_within_or_across_and_deny_wins() {
    let ev = crate::example_event();
    let flow = Flow::from_event(&ev, T, "k8s-w1", &Pods);
    let f = |build: fn(&mut FlowFilter)| {
        let mut x = FlowFilter::default();
        build(&mut x);
        x
    };
    let from_curl = f(|x| x.source_pod = vec!["default/curl".into()]);
    let to_web_80 = f(|x| {
        x.destination_label = vec!["app=webpod".into()];
        x.destination_port = vec![80];
    });
    let udp = f(|x| x.protocol = vec!["udp".into()]);
    let dropped = f(|x| x.verdict = vec![Verdict::Dropped]);
    assert!(from_curl.matches(&flow));
    assert!(to_web_80.matches(&flow));
    assert!(!udp.matches(&flow));
    // AND within a filter.
    let both = f(|x| {
        x.source_pod = vec!["default/curl".into()];
        x.protocol = vec!["udp".into()];
    });
    assert!(!both.matches(&flow));
    // OR across filters; an empty allowlist allows all; the denylist wins.
    assert!(passes(&flow, &[udp.clone(), from_curl.clone()], &[]));
    assert!(!passes(&flow, &[udp.clone(), dropped.clone()], &[]));
    assert!(passes(&flow, &[], &[]));
    assert!(!passes(
        &flow,
        std::slice::from_ref(&from_curl),
        &[to_web_80]
    ));
    // Values of one field are alternatives; a pod name without namespace matches any.
    let either = f(|x| x.destination_port = vec![53, 80]);
    assert!(either.matches(&flow));
    let anyns = f(|x| x.destination_pod = vec!["webpod-".into()]);
    assert!(anyns.matches(&flow));
    let other_ns = f(|x| x.destination_pod = vec!["kube-system/webpod".into()]);
    assert!(!other_ns.matches(&flow));
    let with_source = f(|x| x.source_label = vec!["k8s:app=curl".into()]);
    assert!(with_source.matches(&flow));
    let key_only = f(|x| x.source_label = vec!["app".into()]);
    assert!(key_only.matches(&flow));
}

#[test]
fn a_service_frontend_is_named_shown_and_filtered() {
    let mut names = crate::flow::Names::default();
    names.pods.insert(
        Ipv4Addr::new(172, 20, 0, 10),
        (12, "default".into(), "curl-pod".into()),
    );
    names.services.insert(
        (Ipv4Addr::new(10, 96, 0, 10), 80),
        crate::flow::Service {
            name: "webpod".into(),
            namespace: "default".into(),
        },
    );
    // A reply from the ClusterIP, after reverse NAT, delivered to curl-pod.
    let mut ev = crate::example_event();
    ev.saddr = Ipv4Addr::new(10, 96, 0, 10);
    ev.sport = 80;
    ev.daddr = Ipv4Addr::new(172, 20, 0, 10);
    ev.dport = 43210;
    ev.is_reply = true;
    let flow = Flow::from_event(&ev, T, "k8s-ctr", &names);
    let svc = flow.source_service.clone().expect("the frontend is named");
    assert_eq!(
        (svc.namespace.as_str(), svc.name.as_str()),
        ("default", "webpod")
    );
    assert_eq!(flow.destination_service, None);
    assert!(
        flow.compact()
            .contains(": default/curl-pod:43210 (ID:256) <- default/webpod:80 (ID:257) "),
        "{}",
        flow.compact()
    );
    let by = |s: &str| FlowFilter {
        source_service: vec![s.into()],
        ..FlowFilter::default()
    };
    assert!(passes(&flow, &[by("default/web")], &[]));
    assert!(passes(&flow, &[by("webpod")], &[]));
    assert!(!passes(&flow, &[by("kube-system/webpod")], &[]));
    let to = FlowFilter {
        destination_service: vec!["webpod".into()],
        ..FlowFilter::default()
    };
    assert!(!passes(&flow, &[to], &[]));
    // Through protobuf and back.
    let back = crate::observer::from_proto(crate::observer::to_proto(&flow));
    assert_eq!(back.source_service, flow.source_service);
    assert_eq!(back.compact(), flow.compact());
}

#[test]
fn drop_reason_names_are_the_apis_and_survive_protobuf() {
    for (code, name) in [
        (drop_reason::INVALID_SOURCE_IP, "INVALID_SOURCE_IP"),
        (drop_reason::POLICY_DENIED, "POLICY_DENIED"),
        (drop_reason::INVALID_PACKET, "INVALID_PACKET_DROPPED"),
        (
            drop_reason::CT_INVALID_HEADER,
            "CT_TRUNCATED_OR_INVALID_HEADER",
        ),
        (drop_reason::UNKNOWN_L3, "UNSUPPORTED_L3_PROTOCOL"),
        (drop_reason::UNKNOWN_L4, "UNKNOWN_L4_PROTOCOL"),
        (drop_reason::NO_SERVICE, "SERVICE_BACKEND_NOT_FOUND"),
        (drop_reason::POLICY_DENY, "POLICY_DENY"),
    ] {
        let mut ev = crate::example_event();
        ev.kind = EventKind::Drop { reason: code };
        let flow = Flow::from_event(&ev, T, "k8s-w1", &NoNames);
        assert_eq!(flow.drop_reason_desc.as_deref(), Some(name));
        let back = crate::observer::from_proto(crate::observer::to_proto(&flow));
        assert_eq!(back.drop_reason_desc, flow.drop_reason_desc, "{name}");
        // A filter on the reason (as the API receives it) matches.
        let filter = crate::observer::filter_from(&crate::proto::flow::FlowFilter {
            drop_reason_desc: vec![i32::from(code)],
            ..Default::default()
        })
        .expect("a known reason");
        assert!(passes(&flow, &[filter], &[]), "{name}");
    }
}

#[test]
fn verdict_names_are_the_json_ones() {
    for v in [
        Verdict::VerdictUnknown,
        Verdict::Forwarded,
        Verdict::Dropped,
        Verdict::Error,
        Verdict::Audit,
        Verdict::Redirected,
        Verdict::Traced,
        Verdict::Translated,
    ] {
        assert_eq!(serde_json::to_value(v).unwrap(), v.name());
    }
}

#[test]
fn a_frame_that_is_not_ipv4_has_no_ip_layer() {
    let mut ev = crate::example_event();
    ev.kind = EventKind::Drop {
        reason: drop_reason::UNKNOWN_L3,
    };
    ev.ethertype = Some(0x86dd);
    (ev.saddr, ev.daddr, ev.sport, ev.dport, ev.proto) =
        (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED, 0, 0, 0);
    (
        ev.src_identity,
        ev.dst_identity,
        ev.src_endpoint,
        ev.dst_endpoint,
    ) = (0, 0, 0, 0);
    let flow = Flow::from_event(&ev, T, "k8s-w1", &NoNames);
    assert!(flow.ip.is_none());
    assert_eq!(flow.summary, "EtherType 0x86dd (IPv6)");
    assert_eq!(
        flow.drop_reason_desc.as_deref(),
        Some("UNSUPPORTED_L3_PROTOCOL")
    );
    let json = serde_json::to_value(&flow).unwrap();
    assert!(json.get("IP").is_none(), "{json}");
    let line = flow.compact();
    assert!(!line.contains("0.0.0.0"), "{line}");
    assert!(
        line.contains("Unsupported L3 protocol DROPPED (EtherType 0x86dd (IPv6))"),
        "{line}"
    );
    // Through protobuf and back, still without an IP layer; an IP filter does not match.
    let back = crate::observer::from_proto(crate::observer::to_proto(&flow));
    assert!(back.ip.is_none());
    let filter = FlowFilter {
        source_ip: vec![Ipv4Addr::UNSPECIFIED],
        ..FlowFilter::default()
    };
    assert!(!filter.matches(&flow));
}
