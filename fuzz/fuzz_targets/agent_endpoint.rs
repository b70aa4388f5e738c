// SPDX-License-Identifier: Apache-2.0

//! The agent's outside input about endpoints: `PUT /v1/endpoint` bodies from the CNI and
//! the state files read back at restart never panic; a state file that parses writes and
//! reads back the same.
#![no_main]

use cilium_agent::endpoint::{EndpointChangeRequest, EndpointRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<EndpointChangeRequest>(data);
    if let Ok(record) = serde_json::from_slice::<EndpointRecord>(data) {
        let again = serde_json::to_vec(&record).expect("serializes");
        let back: EndpointRecord = serde_json::from_slice(&again).expect("reads back");
        assert_eq!(back, record);
        let _ = record.to_json(true, false);
    }
});
