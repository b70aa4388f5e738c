// SPDX-License-Identifier: Apache-2.0

//! What reaches Hubble from outside as bytes or text: a protobuf `Flow` from a relay's peer
//! (read back into a flow and encoded again), a `GetFlowsRequest` from a client (its
//! filters accepted or refused, never a panic), and the relay's listen addresses and
//! `--peer` items (a parsed address prints back to itself).
#![no_main]

use cilium_hubble::observer::{Listen, filter_from, from_proto, to_proto};
use cilium_hubble::proto::flow::Flow as ProtoFlow;
use cilium_hubble::proto::observer::GetFlowsRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = ProtoFlow::decode(data) {
        let flow = from_proto(p);
        let again = from_proto(to_proto(&flow));
        assert_eq!(again.l4, flow.l4);
        let _ = flow.compact();
    }
    if let Ok(req) = GetFlowsRequest::decode(data) {
        for f in req.whitelist.iter().chain(&req.blacklist) {
            let _ = filter_from(f);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(listen) = text.parse::<Listen>() {
            assert_eq!(listen.to_string().parse::<Listen>(), Ok(listen));
        }
        let items: Vec<String> = text.split('\n').map(str::to_owned).collect();
        let _ = hubble_relay::discovery::static_peers(&items);
    }
});
