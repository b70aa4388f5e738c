// SPDX-License-Identifier: Apache-2.0

//! The embedded store's log as found on disk after anything (crash, damage): opening never
//! panics; a store that opens is usable, and reopening it gives the same contents.
#![no_main]

use cilium_core::kvstore::{FileStore, KvStore};
use libfuzzer_sys::fuzz_target;

fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("FileStore futures are ready at once"),
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("crs-fuzz-kv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("store.log");
    std::fs::write(&path, data).expect("write log");
    if let Ok(store) = FileStore::open(&path) {
        let before = ready(store.list_prefix("")).expect("list");
        ready(store.put("cilium/fuzz", b"v")).expect("put");
        drop(store);
        let store = FileStore::open(&path).expect("reopen");
        let after = ready(store.list_prefix("")).expect("list");
        assert_eq!(
            after.len(),
            before.len() + usize::from(!before.iter().any(|(k, _)| k == "cilium/fuzz"))
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
});
