// SPDX-License-Identifier: Apache-2.0

//! `PUT /v1/service/{id}` bodies never panic; a body that becomes a service turns back into
//! a spec that describes the same service.
#![no_main]

use cilium_agent::service::ServiceSpec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = ServiceSpec::parse(data) else {
        return;
    };
    if let Ok(svc) = spec.to_service() {
        let back = ServiceSpec::from_service(1, &svc);
        assert_eq!(back.to_service().as_ref(), Ok(&svc));
        let _ = cilium_agent::service::service_json(1, &svc);
    }
});
