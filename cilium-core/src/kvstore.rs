// SPDX-License-Identifier: Apache-2.0

//! The cluster store behind one trait, [`KvStore`], with Cilium's kvstore semantics (keys
//! are `/`-separated paths such as `cilium/state/identities/v1/id/256`, values are bytes,
//! usually JSON). [`FileStore`] is the embedded, durable backend kept in the agent's state
//! directory; the etcd backend implements the same trait.
//!
//! `FileStore` is an append-only log of JSON lines, each write flushed with `fsync` before
//! the call returns. Opening replays the log; a last line torn by a crash is dropped (and
//! cut off), so the store holds exactly the writes that returned. When the log grows to
//! several times the live data it is compacted: rewritten to a temporary file, synced, and
//! renamed over the log.
//!
//! ```
//! use cilium_core::kvstore::{FileStore, KvStore};
//! # let dir = std::env::temp_dir().join(format!("crs-kv-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir).unwrap();
//! let store = FileStore::open(dir.join("store.log")).unwrap();
//! # futures_ready(async {
//! store.put("cilium/state/services/v1/default/web", b"{}").await.unwrap();
//! assert!(!store.create_only("cilium/state/services/v1/default/web", b"{}").await.unwrap());
//! let listed = store.list_prefix("cilium/state/services/v1/").await.unwrap();
//! assert_eq!(listed.len(), 1);
//! # });
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # fn futures_ready(f: impl std::future::Future<Output = ()>) {
//! #     let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
//! #     let mut f = std::pin::pin!(f);
//! #     assert!(f.as_mut().poll(&mut cx).is_ready());
//! # }
//! ```

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A store failure.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// Reading or writing the store failed.
    #[error("kvstore {path}: {source}")]
    Io {
        /// The store's file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A record in the middle of the log is not valid (the file was damaged, not torn).
    #[error("kvstore {path}: record {line} is corrupt: {reason}")]
    Corrupt {
        /// The store's file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// Why.
        reason: String,
    },
    /// A key that is empty or not a clean path.
    #[error("invalid key {0:?}: keys are non-empty paths without empty segments")]
    InvalidKey(String),
}

/// A key-value store with Cilium's kvstore operations. Futures of local backends are ready
/// at once; networked ones (etcd) fit the same signatures.
pub trait KvStore: Send + Sync {
    /// The value of a key.
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, KvError>> + Send;
    /// Sets a key.
    fn put(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), KvError>> + Send;
    /// Sets a key only if it does not exist; returns whether it was created.
    fn create_only(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Deletes a key; returns whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Every key under a prefix, in key order.
    fn list_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, KvError>> + Send;
}

/// A shared store is a store: the agent hands one store to several users.
impl<T: KvStore> KvStore for std::sync::Arc<T> {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<Vec<u8>>, KvError>> + Send {
        (**self).get(key)
    }
    fn put(&self, key: &str, value: &[u8]) -> impl Future<Output = Result<(), KvError>> + Send {
        (**self).put(key, value)
    }
    fn create_only(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).create_only(key, value)
    }
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).delete(key)
    }
    fn list_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<(String, Vec<u8>)>, KvError>> + Send {
        (**self).list_prefix(prefix)
    }
}

fn check_key(key: &str) -> Result<(), KvError> {
    if key.is_empty() || key.split('/').any(str::is_empty) {
        return Err(KvError::InvalidKey(key.to_owned()));
    }
    Ok(())
}

/// One line of the log.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// `put` or `del`.
    op: String,
    key: String,
    /// Base64 of the value (puts only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    value: String,
}

impl Record {
    fn put(key: &str, value: &[u8]) -> Self {
        Record {
            op: "put".into(),
            key: key.to_owned(),
            value: B64.encode(value),
        }
    }

    fn del(key: &str) -> Self {
        Record {
            op: "del".into(),
            key: key.to_owned(),
            value: String::new(),
        }
    }

    /// The record as one log line.
    fn line(&self, path: &Path) -> Result<Vec<u8>, KvError> {
        let mut line = serde_json::to_vec(self).map_err(|e| KvError::Io {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        Ok(line)
    }
}

#[derive(Debug)]
struct Inner {
    file: File,
    data: BTreeMap<String, Vec<u8>>,
    /// Records in the log (live or not).
    records: usize,
}

/// The embedded durable store: an fsynced append-only log in one file.
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl FileStore {
    /// Opens (or creates) the store at `path`, replaying its log. A torn last record (no
    /// newline: its write never returned) is dropped; any complete record that is not valid
    /// is an error, and nothing is changed.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KvError> {
        let path = path.into();
        let io = |source| KvError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io)?;
        let mut data = BTreeMap::new();
        let mut records = 0;
        let mut good_len = 0u64;
        let mut lines = Vec::new();
        {
            let mut reader = BufReader::new(&file);
            loop {
                let mut buf = Vec::new();
                let n = reader.read_until(b'\n', &mut buf).map_err(io)?;
                if n == 0 {
                    break;
                }
                lines.push(buf);
            }
        }
        let total = lines.len();
        for (i, line) in lines.into_iter().enumerate() {
            let last = i + 1 == total;
            let complete = line.ends_with(b"\n");
            // A torn tail (no newline, or not a valid record): the write never returned, so
            // it never happened; it is neither applied nor kept.
            if last && !complete {
                break;
            }
            let parsed = serde_json::from_slice::<Record>(&line)
                .map_err(|e| e.to_string())
                .and_then(|r| apply(&mut data, r));
            match parsed {
                Ok(()) => {
                    records += 1;
                    good_len += line.len() as u64;
                }
                Err(reason) => {
                    return Err(KvError::Corrupt {
                        path,
                        line: i + 1,
                        reason,
                    });
                }
            }
        }
        if good_len < file.metadata().map_err(io)?.len() {
            file.set_len(good_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(FileStore {
            path,
            inner: Mutex::new(Inner {
                file,
                data,
                records,
            }),
        })
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        self.lock().data.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map and log inconsistent (the map
        // changes only after the log write succeeded), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self) -> impl Fn(std::io::Error) -> KvError + '_ {
        move |source| KvError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one record and syncs it, then applies it to the map.
    fn write(&self, inner: &mut Inner, record: Record) -> Result<(), KvError> {
        let line = record.line(&self.path)?;
        inner.file.write_all(&line).map_err(self.io())?;
        inner.file.sync_data().map_err(self.io())?;
        inner.records += 1;
        let _ = apply(&mut inner.data, record);
        if inner.records > 64 && inner.records > 4 * inner.data.len() {
            self.compact(inner)?;
        }
        Ok(())
    }

    /// Rewrites the log with one record per live key: temp file, fsync, rename, fsync dir.
    fn compact(&self, inner: &mut Inner) -> Result<(), KvError> {
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp).map_err(self.io())?;
        for (key, value) in &inner.data {
            let line = Record::put(key, value).line(&self.path)?;
            out.write_all(&line).map_err(self.io())?;
        }
        out.sync_all().map_err(self.io())?;
        std::fs::rename(&tmp, &self.path).map_err(self.io())?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(self.io())?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(self.io())?;
        file.seek(SeekFrom::End(0)).map_err(self.io())?;
        inner.file = file;
        inner.records = inner.data.len();
        Ok(())
    }
}

fn apply(data: &mut BTreeMap<String, Vec<u8>>, r: Record) -> Result<(), String> {
    check_key(&r.key).map_err(|e| e.to_string())?;
    match r.op.as_str() {
        "put" => {
            let value = B64.decode(&r.value).map_err(|e| e.to_string())?;
            data.insert(r.key, value);
        }
        "del" => {
            data.remove(&r.key);
        }
        other => return Err(format!("unknown operation {other:?}")),
    }
    Ok(())
}

impl KvStore for FileStore {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(self.lock().data.get(key).cloned())
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        check_key(key)?;
        let mut inner = self.lock();
        if inner.data.get(key).is_some_and(|v| v == value) {
            return Ok(());
        }
        self.write(&mut inner, Record::put(key, value))
    }

    async fn create_only(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        check_key(key)?;
        let mut inner = self.lock();
        if inner.data.contains_key(key) {
            return Ok(false);
        }
        self.write(&mut inner, Record::put(key, value))?;
        Ok(true)
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        check_key(key)?;
        let mut inner = self.lock();
        if !inner.data.contains_key(key) {
            return Ok(false);
        }
        self.write(&mut inner, Record::del(key))?;
        Ok(true)
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, KvError> {
        Ok(self
            .lock()
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ready<T>(f: impl Future<Output = T>) -> T {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("FileStore futures are ready at once"),
        }
    }

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "crs-kv-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u8, Vec<u8>),
        Create(u8, Vec<u8>),
        Del(u8),
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        let value = proptest::collection::vec(any::<u8>(), 0..12);
        prop_oneof![
            (0u8..12, value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
            (0u8..12, value).prop_map(|(k, v)| Op::Create(k, v)),
            (0u8..12).prop_map(Op::Del),
        ]
    }

    fn key(k: u8) -> String {
        format!("cilium/state/test/v1/k{k}")
    }

    fn run(store: &FileStore, model: &mut BTreeMap<String, Vec<u8>>, op: &Op) {
        match op {
            Op::Put(k, v) => {
                ready(store.put(&key(*k), v)).unwrap();
                model.insert(key(*k), v.clone());
            }
            Op::Create(k, v) => {
                let created = ready(store.create_only(&key(*k), v)).unwrap();
                assert_eq!(created, !model.contains_key(&key(*k)));
                model.entry(key(*k)).or_insert_with(|| v.clone());
            }
            Op::Del(k) => {
                assert_eq!(
                    ready(store.delete(&key(*k))).unwrap(),
                    model.remove(&key(*k)).is_some()
                );
            }
        }
    }

    fn contents(store: &FileStore) -> BTreeMap<String, Vec<u8>> {
        ready(store.list_prefix("")).unwrap().into_iter().collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// After any operations (compactions included), reopening gives the same contents.
        #[test]
        fn reopen_gives_what_was_written(ops in proptest::collection::vec(arb_op(), 0..200)) {
            let dir = TempDir::new("reopen");
            let path = dir.0.join("store.log");
            let mut model = BTreeMap::new();
            {
                let store = FileStore::open(&path).unwrap();
                for op in &ops {
                    run(&store, &mut model, op);
                }
                prop_assert_eq!(contents(&store), model.clone());
            }
            let store = FileStore::open(&path).unwrap();
            prop_assert_eq!(contents(&store), model);
        }

        /// A crash cuts the log anywhere: reopening never fails and gives the state after
        /// some prefix of the writes, at least every write whose record was whole.
        #[test]
        fn a_torn_log_gives_a_prefix(ops in proptest::collection::vec(arb_op(), 1..40), cut in any::<prop::sample::Index>()) {
            let dir = TempDir::new("torn");
            let path = dir.0.join("store.log");
            let mut states = vec![(0u64, BTreeMap::new())];
            {
                let store = FileStore::open(&path).unwrap();
                let mut model = BTreeMap::new();
                for op in &ops {
                    run(&store, &mut model, op);
                    let len = std::fs::metadata(&path).unwrap().len();
                    states.push((len, model.clone()));
                }
            }
            let full = std::fs::metadata(&path).unwrap().len();
            let at = cut.index(full as usize + 1) as u64;
            OpenOptions::new().write(true).open(&path).unwrap().set_len(at).unwrap();
            let store = FileStore::open(&path).unwrap();
            // The newest state whose log fits within the cut.
            let want = states.iter().rev().find(|(len, _)| *len <= at).map(|(_, s)| s.clone()).unwrap();
            prop_assert_eq!(contents(&store), want.clone());
            // The store stays usable, and the torn bytes are gone.
            ready(store.put("cilium/after/crash", b"x")).unwrap();
            drop(store);
            let store = FileStore::open(&path).unwrap();
            let mut want = want;
            want.insert("cilium/after/crash".into(), b"x".to_vec());
            prop_assert_eq!(contents(&store), want);
        }
    }

    #[test]
    fn bad_keys_and_corruption_are_errors() {
        let dir = TempDir::new("bad");
        let path = dir.0.join("store.log");
        let store = FileStore::open(&path).unwrap();
        for k in ["", "/a", "a//b", "a/"] {
            assert!(
                matches!(ready(store.put(k, b"v")), Err(KvError::InvalidKey(_))),
                "{k:?}"
            );
        }
        ready(store.put("a/b", b"1")).unwrap();
        ready(store.put("a/c", b"2")).unwrap();
        drop(store);
        // Damage the first of two records: not a torn tail, so opening refuses.
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, text.replacen("put", "pot", 1)).unwrap();
        assert!(matches!(
            FileStore::open(&path),
            Err(KvError::Corrupt { line: 1, .. })
        ));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text.replacen("put", "pot", 1),
            "untouched"
        );
    }

    #[test]
    fn compaction_keeps_the_log_small() {
        let dir = TempDir::new("compact");
        let path = dir.0.join("store.log");
        let store = FileStore::open(&path).unwrap();
        for i in 0..1000u32 {
            ready(store.put("cilium/state/ip/v1/default/10.0.0.1", &i.to_be_bytes())).unwrap();
        }
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines <= 65, "{lines} records for one key");
        drop(store);
        let store = FileStore::open(&path).unwrap();
        assert_eq!(
            ready(store.get("cilium/state/ip/v1/default/10.0.0.1")).unwrap(),
            Some(999u32.to_be_bytes().to_vec())
        );
        assert_eq!(store.len(), 1);
    }
}
