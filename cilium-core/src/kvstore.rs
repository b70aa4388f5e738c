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

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

use base64::Engine;
use serde::{Deserialize, Serialize};

#[cfg(feature = "etcd")]
pub mod etcd;

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
    /// The store cannot be reached (etcd down or unreachable); nothing was changed, or the
    /// outcome is unknown for a write that timed out.
    #[error("kvstore unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for changes the store no longer keeps: list again and watch from the
    /// list's revision.
    #[error("kvstore: changes since revision {revision} were compacted away")]
    Compacted {
        /// The first revision still available.
        revision: u64,
    },
}

/// A key and its value.
pub type KeyValue = (String, Vec<u8>);

/// Keys and values under a prefix, and the store's revision when they were read.
pub type Listing = (Vec<KeyValue>, u64);

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created or changed to this value.
    Put(Vec<u8>),
    /// The key was deleted (or its session ended).
    Delete,
}

/// One change to a key, with the store revision that made it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The store's revision of the change (increasing).
    pub revision: u64,
    /// The key.
    pub key: String,
    /// What happened.
    pub kind: EventKind,
}

/// A stream of changes under a key prefix, from [`KvStore::watch_prefix`].
pub trait KvWatch: Send {
    /// The next change, waiting until there is one. [`KvError::Compacted`] means changes
    /// were lost: list again and watch from the list's revision. A networked backend
    /// reconnects by itself and resumes after the last change it delivered.
    fn next(&mut self) -> impl Future<Output = Result<WatchEvent, KvError>> + Send;
}

/// A key-value store with Cilium's kvstore operations. Futures of local backends are ready
/// at once (except a watch waiting for a change); networked ones (etcd) fit the same
/// signatures.
///
/// Keys written with the `_ephemeral` calls belong to this client's session (Cilium's
/// session lease): they disappear when the session ends, when the process dies and its
/// lease expires (etcd), or when the store is next opened (embedded store).
pub trait KvStore: Send + Sync {
    /// The watch type.
    type Watch: KvWatch;
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
    /// Sets a key only if its value is `old`; returns whether it was set.
    fn compare_and_swap(
        &self,
        key: &str,
        old: &[u8],
        new: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Deletes a key; returns whether it existed.
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Deletes a key only if its value is `old`; returns whether it did.
    fn delete_if(
        &self,
        key: &str,
        old: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Sets a key that lives as long as this client's session.
    fn put_ephemeral(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<(), KvError>> + Send;
    /// Creates a key that lives as long as this client's session, only if it does not
    /// exist (a lock); returns whether it was created.
    fn create_only_ephemeral(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send;
    /// Every key under a prefix, in key order.
    fn list_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<KeyValue>, KvError>> + Send;
    /// Every key under a prefix, in key order, and the store's revision at that moment
    /// (watch from it to miss nothing).
    fn list_prefix_revision(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Listing, KvError>> + Send;
    /// Changes under a prefix made after `after_revision` (0: from now on).
    fn watch_prefix(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> impl Future<Output = Result<Self::Watch, KvError>> + Send;
}

/// A shared store is a store: the agent hands one store to several users.
impl<T: KvStore> KvStore for Arc<T> {
    type Watch = T::Watch;
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
    fn compare_and_swap(
        &self,
        key: &str,
        old: &[u8],
        new: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).compare_and_swap(key, old, new)
    }
    fn delete(&self, key: &str) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).delete(key)
    }
    fn delete_if(
        &self,
        key: &str,
        old: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).delete_if(key, old)
    }
    fn put_ephemeral(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<(), KvError>> + Send {
        (**self).put_ephemeral(key, value)
    }
    fn create_only_ephemeral(
        &self,
        key: &str,
        value: &[u8],
    ) -> impl Future<Output = Result<bool, KvError>> + Send {
        (**self).create_only_ephemeral(key, value)
    }
    fn list_prefix(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<KeyValue>, KvError>> + Send {
        (**self).list_prefix(prefix)
    }
    fn list_prefix_revision(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Listing, KvError>> + Send {
        (**self).list_prefix_revision(prefix)
    }
    fn watch_prefix(
        &self,
        prefix: &str,
        after_revision: u64,
    ) -> impl Future<Output = Result<Self::Watch, KvError>> + Send {
        (**self).watch_prefix(prefix, after_revision)
    }
}

/// Checks a key: a non-empty `/`-separated path without empty segments.
pub fn check_key(key: &str) -> Result<(), KvError> {
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
    /// The key belongs to the session that wrote it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    ephemeral: bool,
}

impl Record {
    fn put(key: &str, value: &[u8], ephemeral: bool) -> Self {
        Record {
            op: "put".into(),
            key: key.to_owned(),
            value: B64.encode(value),
            ephemeral,
        }
    }

    fn del(key: &str) -> Self {
        Record {
            op: "del".into(),
            key: key.to_owned(),
            value: String::new(),
            ephemeral: false,
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

/// A value and whether it belongs to the session.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    value: Vec<u8>,
    ephemeral: bool,
}

/// How many changes a `FileStore` keeps for watches that fall behind.
const HISTORY: usize = 4096;

#[derive(Debug)]
struct Inner {
    file: File,
    data: BTreeMap<String, Entry>,
    /// Records in the log (live or not).
    records: usize,
    /// The revision of the last change since the store was opened.
    revision: u64,
    /// The last changes, oldest first.
    history: VecDeque<WatchEvent>,
    /// Watches waiting for a change.
    waiting: Vec<Waker>,
}

/// The embedded durable store: an fsynced append-only log in one file. Revisions count
/// the changes since the store was opened (watches live in the same process).
#[derive(Debug)]
pub struct FileStore {
    path: PathBuf,
    inner: Arc<Mutex<Inner>>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn lock(inner: &Mutex<Inner>) -> std::sync::MutexGuard<'_, Inner> {
    // A panic while holding the lock cannot leave the map and log inconsistent (the map
    // changes only after the log write succeeded), so a poisoned lock is still usable.
    inner.lock().unwrap_or_else(|e| e.into_inner())
}

impl FileStore {
    /// Opens (or creates) the store at `path`, replaying its log. A torn last record (no
    /// newline: its write never returned) is dropped; any complete record that is not valid
    /// is an error, and nothing is changed. Session keys of the previous owner are deleted:
    /// its session is over.
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
        let store = FileStore {
            path,
            inner: Arc::new(Mutex::new(Inner {
                file,
                data,
                records,
                revision: 0,
                history: VecDeque::new(),
                waiting: Vec::new(),
            })),
        };
        {
            let mut inner = lock(&store.inner);
            let stale: Vec<String> = inner
                .data
                .iter()
                .filter(|(_, e)| e.ephemeral)
                .map(|(k, _)| k.clone())
                .collect();
            for key in stale {
                store.write(&mut inner, Record::del(&key))?;
            }
        }
        Ok(store)
    }

    /// The file the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many keys the store holds.
    pub fn len(&self) -> usize {
        lock(&self.inner).data.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn io(&self) -> impl Fn(std::io::Error) -> KvError + '_ {
        move |source| KvError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends one record and syncs it, then applies it to the map and tells the watches.
    fn write(&self, inner: &mut Inner, record: Record) -> Result<(), KvError> {
        let line = record.line(&self.path)?;
        inner.file.write_all(&line).map_err(self.io())?;
        inner.file.sync_data().map_err(self.io())?;
        inner.records += 1;
        inner.revision += 1;
        let kind = if record.op == "put" {
            EventKind::Put(B64.decode(&record.value).unwrap_or_default())
        } else {
            EventKind::Delete
        };
        let event = WatchEvent {
            revision: inner.revision,
            key: record.key.clone(),
            kind,
        };
        let _ = apply(&mut inner.data, record);
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(event);
        for w in inner.waiting.drain(..) {
            w.wake();
        }
        if inner.records > 64 && inner.records > 4 * inner.data.len() {
            self.compact(inner)?;
        }
        Ok(())
    }

    /// Rewrites the log with one record per live key: temp file, fsync, rename, fsync dir.
    fn compact(&self, inner: &mut Inner) -> Result<(), KvError> {
        let tmp = self.path.with_extension("compact");
        let mut out = File::create(&tmp).map_err(self.io())?;
        for (key, entry) in &inner.data {
            let line = Record::put(key, &entry.value, entry.ephemeral).line(&self.path)?;
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

    /// Sets `key` when `allowed(current)` says so; returns whether it did.
    fn put_when(
        &self,
        key: &str,
        value: &[u8],
        ephemeral: bool,
        allowed: impl FnOnce(Option<&Entry>) -> bool,
    ) -> Result<bool, KvError> {
        check_key(key)?;
        let mut inner = lock(&self.inner);
        let current = inner.data.get(key);
        if !allowed(current) {
            return Ok(false);
        }
        let same = Entry {
            value: value.to_vec(),
            ephemeral,
        };
        if current == Some(&same) {
            return Ok(true);
        }
        self.write(&mut inner, Record::put(key, value, ephemeral))?;
        Ok(true)
    }

    /// Deletes `key` when it exists and `allowed(value)` says so; returns whether it did.
    fn delete_when(&self, key: &str, allowed: impl FnOnce(&[u8]) -> bool) -> Result<bool, KvError> {
        check_key(key)?;
        let mut inner = lock(&self.inner);
        match inner.data.get(key) {
            Some(e) if allowed(&e.value) => {}
            _ => return Ok(false),
        }
        self.write(&mut inner, Record::del(key))?;
        Ok(true)
    }

    fn list(&self, prefix: &str) -> Listing {
        let inner = lock(&self.inner);
        let items = inner
            .data
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), e.value.clone()))
            .collect();
        (items, inner.revision)
    }
}

fn apply(data: &mut BTreeMap<String, Entry>, r: Record) -> Result<(), String> {
    check_key(&r.key).map_err(|e| e.to_string())?;
    match r.op.as_str() {
        "put" => {
            let value = B64.decode(&r.value).map_err(|e| e.to_string())?;
            data.insert(
                r.key,
                Entry {
                    value,
                    ephemeral: r.ephemeral,
                },
            );
        }
        "del" => {
            data.remove(&r.key);
        }
        other => return Err(format!("unknown operation {other:?}")),
    }
    Ok(())
}

impl KvStore for FileStore {
    type Watch = FileWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        check_key(key)?;
        Ok(lock(&self.inner).data.get(key).map(|e| e.value.clone()))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.put_when(key, value, false, |_| true).map(|_| ())
    }

    async fn create_only(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        self.put_when(key, value, false, |cur| cur.is_none())
    }

    async fn compare_and_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, KvError> {
        self.put_when(key, new, false, |cur| cur.is_some_and(|e| e.value == old))
    }

    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        self.delete_when(key, |_| true)
    }

    async fn delete_if(&self, key: &str, old: &[u8]) -> Result<bool, KvError> {
        self.delete_when(key, |v| v == old)
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.put_when(key, value, true, |_| true).map(|_| ())
    }

    async fn create_only_ephemeral(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        self.put_when(key, value, true, |cur| cur.is_none())
    }

    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, KvError> {
        Ok(self.list(prefix).0)
    }

    async fn list_prefix_revision(&self, prefix: &str) -> Result<Listing, KvError> {
        Ok(self.list(prefix))
    }

    async fn watch_prefix(&self, prefix: &str, after_revision: u64) -> Result<FileWatch, KvError> {
        let now = lock(&self.inner).revision;
        Ok(FileWatch {
            inner: self.inner.clone(),
            prefix: prefix.to_owned(),
            next: if after_revision == 0 {
                now + 1
            } else {
                after_revision + 1
            },
        })
    }
}

/// A watch on a [`FileStore`]: its changes under a prefix, in order. It sees up to the
/// last 4096 changes of the store; a watch further behind gets [`KvError::Compacted`].
#[derive(Debug)]
pub struct FileWatch {
    inner: Arc<Mutex<Inner>>,
    prefix: String,
    /// The first revision not yet delivered.
    next: u64,
}

impl KvWatch for FileWatch {
    fn next(&mut self) -> impl Future<Output = Result<WatchEvent, KvError>> + Send {
        std::future::poll_fn(move |cx| {
            let mut inner = lock(&self.inner);
            if let Some(oldest) = inner.history.front().map(|e| e.revision)
                && self.next < oldest
                && self.next <= inner.revision
            {
                return Poll::Ready(Err(KvError::Compacted { revision: oldest }));
            }
            let found = inner
                .history
                .iter()
                .find(|e| e.revision >= self.next && e.key.starts_with(&self.prefix))
                .cloned();
            match found {
                Some(event) => {
                    self.next = event.revision + 1;
                    Poll::Ready(Ok(event))
                }
                None => {
                    self.next = self.next.max(inner.revision + 1);
                    if !inner.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                        inner.waiting.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
    }
}

/// One of the backends, chosen at run time (the agent's `kvstore` setting): the embedded
/// file store, or etcd (feature `etcd`).
#[derive(Debug)]
pub enum AnyStore {
    /// The embedded store.
    File(FileStore),
    /// etcd.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdStore>),
}

/// A watch on an [`AnyStore`].
#[derive(Debug)]
pub enum AnyWatch {
    /// On the embedded store.
    File(FileWatch),
    /// On etcd.
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd::EtcdWatch>),
}

impl KvWatch for AnyWatch {
    async fn next(&mut self) -> Result<WatchEvent, KvError> {
        match self {
            AnyWatch::File(w) => w.next().await,
            #[cfg(feature = "etcd")]
            AnyWatch::Etcd(w) => w.next().await,
        }
    }
}

/// Calls the same method on whichever backend.
macro_rules! either {
    ($self:expr, $s:ident => $call:expr) => {
        match $self {
            AnyStore::File($s) => $call.await,
            #[cfg(feature = "etcd")]
            AnyStore::Etcd($s) => $call.await,
        }
    };
}

impl KvStore for AnyStore {
    type Watch = AnyWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        either!(self, s => s.get(key))
    }
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        either!(self, s => s.put(key, value))
    }
    async fn create_only(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        either!(self, s => s.create_only(key, value))
    }
    async fn compare_and_swap(&self, key: &str, old: &[u8], new: &[u8]) -> Result<bool, KvError> {
        either!(self, s => s.compare_and_swap(key, old, new))
    }
    async fn delete(&self, key: &str) -> Result<bool, KvError> {
        either!(self, s => s.delete(key))
    }
    async fn delete_if(&self, key: &str, old: &[u8]) -> Result<bool, KvError> {
        either!(self, s => s.delete_if(key, old))
    }
    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        either!(self, s => s.put_ephemeral(key, value))
    }
    async fn create_only_ephemeral(&self, key: &str, value: &[u8]) -> Result<bool, KvError> {
        either!(self, s => s.create_only_ephemeral(key, value))
    }
    async fn list_prefix(&self, prefix: &str) -> Result<Vec<KeyValue>, KvError> {
        either!(self, s => s.list_prefix(prefix))
    }
    async fn list_prefix_revision(&self, prefix: &str) -> Result<Listing, KvError> {
        either!(self, s => s.list_prefix_revision(prefix))
    }
    async fn watch_prefix(&self, prefix: &str, after_revision: u64) -> Result<AnyWatch, KvError> {
        match self {
            AnyStore::File(s) => s
                .watch_prefix(prefix, after_revision)
                .await
                .map(AnyWatch::File),
            #[cfg(feature = "etcd")]
            AnyStore::Etcd(s) => s
                .watch_prefix(prefix, after_revision)
                .await
                .map(|w| AnyWatch::Etcd(Box::new(w))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ready<T>(f: impl Future<Output = T>) -> T {
        let waker = Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut cx) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("FileStore futures are ready at once"),
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

    /// A minimal executor: polls on this thread, parks until woken.
    fn block_on<T>(f: impl Future<Output = T>) -> T {
        struct Unpark(std::thread::Thread);
        impl std::task::Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        let mut f = std::pin::pin!(f);
        loop {
            if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park_timeout(std::time::Duration::from_secs(5));
        }
    }

    #[test]
    fn conditional_writes_and_session_keys() {
        let dir = TempDir::new("cas");
        let path = dir.0.join("store.log");
        let store = FileStore::open(&path).unwrap();
        ready(store.put("a/k", b"1")).unwrap();
        assert!(!ready(store.compare_and_swap("a/k", b"0", b"2")).unwrap());
        assert!(ready(store.compare_and_swap("a/k", b"1", b"2")).unwrap());
        assert!(!ready(store.compare_and_swap("a/none", b"1", b"2")).unwrap());
        assert!(!ready(store.delete_if("a/k", b"1")).unwrap());
        assert!(ready(store.delete_if("a/k", b"2")).unwrap());
        assert_eq!(ready(store.get("a/k")).unwrap(), None);
        ready(store.put_ephemeral("a/node", b"me")).unwrap();
        assert!(ready(store.create_only_ephemeral("a/lock", b"me")).unwrap());
        assert!(!ready(store.create_only_ephemeral("a/lock", b"you")).unwrap());
        ready(store.put("a/kept", b"x")).unwrap();
        drop(store);
        // A new owner: the old session's keys are gone, the rest stays.
        let store = FileStore::open(&path).unwrap();
        assert_eq!(
            ready(store.list_prefix("a/")).unwrap(),
            vec![("a/kept".to_owned(), b"x".to_vec())]
        );
    }

    #[test]
    fn watches_see_changes_after_their_revision_in_order() {
        let dir = TempDir::new("watch");
        let store = Arc::new(FileStore::open(dir.0.join("store.log")).unwrap());
        ready(store.put("svc/a", b"1")).unwrap();
        let (listed, rev) = ready(store.list_prefix_revision("svc/")).unwrap();
        assert_eq!(listed.len(), 1);
        let mut w = ready(store.watch_prefix("svc/", rev)).unwrap();
        ready(store.put("other/x", b"0")).unwrap();
        ready(store.put("svc/b", b"2")).unwrap();
        ready(store.delete("svc/a")).unwrap();
        let e1 = ready(w.next()).unwrap();
        assert_eq!(
            (e1.key.as_str(), &e1.kind),
            ("svc/b", &EventKind::Put(b"2".to_vec()))
        );
        let e2 = ready(w.next()).unwrap();
        assert_eq!((e2.key.as_str(), &e2.kind), ("svc/a", &EventKind::Delete));
        assert!(e2.revision > e1.revision && e1.revision > rev);
        // A watch waits for the next change, made by another thread.
        let writer = {
            let store = store.clone();
            std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                ready(store.put("svc/c", b"3")).unwrap();
            })
        };
        let e3 = block_on(w.next()).unwrap();
        assert_eq!(e3.key, "svc/c");
        writer.join().unwrap();
        // A watch from long ago has lost changes.
        for i in 0..(HISTORY as u32 + 10) {
            ready(store.put("svc/churn", &i.to_be_bytes())).unwrap();
        }
        let mut old = ready(store.watch_prefix("svc/", 1)).unwrap();
        assert!(matches!(ready(old.next()), Err(KvError::Compacted { .. })));
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
