// SPDX-License-Identifier: Apache-2.0

//! Kubernetes API objects as the watch stream delivers them (JSON of any shape the API can
//! hold): decoding into a `DynamicObject` and through the CiliumNode decoder into the
//! informer's cache never panics; an object the decoder refuses is reported as `Invalid`
//! and is not in the cache, and a deletion empties its key. The same bytes as a
//! CiliumIdentity: the identity decoder never panics, and what it accepts writes back to an
//! object that decodes to the same number and labels.
#![no_main]

use cilium_core::cluster::{Change, CiliumNode};
use cilium_k8s::identity;
use cilium_k8s::nodes::decode;
use cilium_k8s::types::CiliumIdentity;
use cilium_k8s::watch::{Cache, key};
use kube::api::DynamicObject;
use kube::runtime::watcher::Event;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = serde_json::from_slice::<CiliumIdentity>(data)
        && let Ok((id, labels)) = identity::decode(&object)
    {
        let written = CiliumIdentity::new(id, identity::security_labels(&labels));
        assert_eq!(identity::decode(&written), Ok((id, labels)));
    }
    let Ok(object) = serde_json::from_slice::<DynamicObject>(data) else {
        return;
    };
    let k = key(&object);
    let mut cache: Cache<DynamicObject, CiliumNode> = Cache::new(decode);
    cache.apply(Event::Init);
    cache.apply(Event::InitApply(object.clone()));
    let listed = cache.apply(Event::InitDone);
    let changes = cache.apply(Event::Apply(object.clone()));
    for c in listed.iter().chain(&changes) {
        if let Change::Invalid { key, .. } = c {
            assert!(!cache.objects().contains_key(key));
        }
    }
    // The same object again changes nothing.
    assert!(
        cache
            .apply(Event::Apply(object.clone()))
            .iter()
            .all(|c| matches!(c, Change::Invalid { .. }))
    );
    cache.apply(Event::Delete(object));
    assert!(!cache.objects().contains_key(&k));
});
