// SPDX-License-Identifier: Apache-2.0

//! Policy documents as YAML or JSON: parsing never panics, and whatever parses resolves
//! against a few identities without panicking.
#![no_main]

use cilium_core::{LabelSet, NumericIdentity};
use cilium_policy::{EnforcementMode, Repository, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(docs) = parse(text) else {
        return;
    };
    let mut repo = Repository::new(EnforcementMode::Default);
    repo.add(docs.into_iter().flat_map(|(_, rules)| rules));
    let a = NumericIdentity::new(256);
    let b = NumericIdentity::new(257);
    let labels = |app: &str| {
        LabelSet::parse_list(&[
            format!("k8s:app={app}").as_str(),
            "k8s:io.kubernetes.pod.namespace=default",
        ])
        .expect("valid labels")
    };
    repo.upsert_identity(a, labels("a"));
    repo.upsert_identity(b, labels("b"));
    for port in [0u16, 53, 80, 65535] {
        let _ = repo.allowed(a, b, 6, port);
        let _ = repo.allowed(b, a, 17, port);
    }
});
