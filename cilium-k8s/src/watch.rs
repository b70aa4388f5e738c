// SPDX-License-Identifier: Apache-2.0

//! Kubernetes objects as the consumers of `cilium_core::cluster` see cluster objects: an
//! [`Informer`] that lists, then watches from the list's resourceVersion (kube-runtime's
//! watcher: re-watch after a broken stream, list again after `410 Gone`), keeps the objects
//! by `namespace/name`, and reports [`Change`]s: `Upsert` for a new or changed object,
//! `Delete` with the last state, `Invalid` for an object the decoder refuses (left out of
//! the cache, never half applied). After a relist only the difference with the cache is
//! reported, so a restart of the watch loses and duplicates nothing. Objects arrive without
//! their `managedFields` (the apiserver's bookkeeping, often most of an object's size).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::time::Duration;

use cilium_core::cluster::Change;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event, ExponentialBackoff};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::Error;

/// Turns an API object into what the consumer keeps.
pub type Decoder<K, T> = fn(&K) -> Result<T, String>;

/// The cache key of an object: `namespace/name`, or `name` when cluster-scoped.
pub fn key<K: Resource>(object: &K) -> String {
    match object.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", object.name_any()),
        _ => object.name_any(),
    }
}

/// The objects and the changes between them, fed with watcher events; the part of an
/// [`Informer`] that does not talk to the API (tested on its own).
#[derive(Debug)]
pub struct Cache<K, T> {
    objects: BTreeMap<String, T>,
    relist: Option<BTreeMap<String, Result<T, String>>>,
    decode: Decoder<K, T>,
}

impl<K: Resource, T: Clone + PartialEq> Cache<K, T> {
    /// An empty cache.
    pub fn new(decode: Decoder<K, T>) -> Self {
        Cache {
            objects: BTreeMap::new(),
            relist: None,
            decode,
        }
    }

    /// The objects as last seen, by key.
    pub fn objects(&self) -> &BTreeMap<String, T> {
        &self.objects
    }

    /// Whether a (re)list is under way (its objects not yet applied).
    pub fn listing(&self) -> bool {
        self.relist.is_some()
    }

    fn upsert(&mut self, key: String, decoded: Result<T, String>, out: &mut Vec<Change<T>>) {
        match decoded {
            Ok(object) => {
                if self.objects.get(&key) != Some(&object) {
                    self.objects.insert(key.clone(), object.clone());
                    out.push(Change::Upsert { key, object });
                }
            }
            Err(error) => {
                self.objects.remove(&key);
                out.push(Change::Invalid { key, error });
            }
        }
    }

    /// Applies one watcher event and returns the changes it makes.
    pub fn apply(&mut self, event: Event<K>) -> Vec<Change<T>> {
        let mut out = Vec::new();
        match event {
            Event::Apply(o) => {
                let k = key(&o);
                let decoded = (self.decode)(&o);
                self.upsert(k, decoded, &mut out);
            }
            Event::Delete(o) => {
                let k = key(&o);
                if let Some(last) = self.objects.remove(&k) {
                    out.push(Change::Delete { key: k, last });
                }
            }
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                let k = key(&o);
                let decoded = (self.decode)(&o);
                self.relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k, decoded);
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                let gone: Vec<String> = self
                    .objects
                    .keys()
                    .filter(|k| !listed.contains_key(*k))
                    .cloned()
                    .collect();
                for (k, decoded) in listed {
                    self.upsert(k, decoded, &mut out);
                }
                for k in gone {
                    if let Some(last) = self.objects.remove(&k) {
                        out.push(Change::Delete { key: k, last });
                    }
                }
            }
        }
        out
    }
}

/// A list-then-watch of one kind through the Kubernetes API; see the module documentation.
pub struct Informer<K, T> {
    stream: BoxStream<'static, Result<Event<K>, watcher::Error>>,
    cache: Cache<K, T>,
    pending: VecDeque<Change<T>>,
}

impl<K, T: Debug> Debug for Informer<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer")
            .field("objects", &self.cache.objects.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<K> Informer<K, K>
where
    K: Resource + Clone + PartialEq + DeserializeOwned + Debug + Send + 'static,
{
    /// Lists `api` (every object as an `Upsert`) and starts watching after it.
    pub async fn start(api: Api<K>) -> Result<(Self, Vec<Change<K>>), Error> {
        Self::start_with(api, watcher::Config::default(), |o| Ok(o.clone())).await
    }
}

/// How a watch retries when the API fails: exponentially from 0.8 s, as kube-runtime's
/// default, but at most every 5 s rather than 30 s, so that after an apiserver outage
/// changes reach the agents, the operator and the kubelets within seconds; reset after two
/// minutes without an error.
fn backoff() -> ResetTimerBackoff<ExponentialBackoff> {
    let exponential = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(800))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .without_max_times()
        .with_jitter();
    ResetTimerBackoff::new(exponential.into(), Duration::from_secs(120))
}

impl<K, T> Informer<K, T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Clone + PartialEq,
{
    /// [`Informer::start`] with a label/field selector (`config`) and a decoder.
    pub async fn start_with(
        api: Api<K>,
        config: watcher::Config,
        decode: Decoder<K, T>,
    ) -> Result<(Self, Vec<Change<T>>), Error> {
        let mut informer = Informer {
            // Managed fields are the apiserver's bookkeeping, often the bulk of an object:
            // no decoder needs them, and informers that keep whole objects would hold them.
            stream: watcher::watcher(api, config)
                .backoff(backoff())
                .modify(|o: &mut K| o.meta_mut().managed_fields = None)
                .boxed(),
            cache: Cache::new(decode),
            pending: VecDeque::new(),
        };
        let mut initial = Vec::new();
        loop {
            let event = informer
                .stream
                .next()
                .await
                .ok_or_else(|| Error::Api("the watch ended before the list".into()))?
                .map_err(|e| Error::Api(e.to_string()))?;
            let done = matches!(event, Event::InitDone);
            initial.extend(informer.cache.apply(event));
            if done {
                return Ok((informer, initial));
            }
        }
    }

    /// The objects as last seen, by key.
    pub fn cache(&self) -> &BTreeMap<String, T> {
        self.cache.objects()
    }

    /// The next change (waits for one). An error is the API's (unreachable, refused); the
    /// informer stays usable and resumes where it was (after a backoff).
    pub async fn next(&mut self) -> Result<Change<T>, Error> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Ok(c);
            }
            match self.stream.next().await {
                Some(Ok(event)) => self.pending.extend(self.cache.apply(event)),
                Some(Err(e)) => return Err(Error::Api(e.to_string())),
                None => return Err(Error::Api("the watch ended".into())),
            }
        }
    }
}

impl<K, T> cilium_core::cluster::Watcher<T> for Informer<K, T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    T: Clone + PartialEq + Send + Sync,
{
    type Error = Error;

    fn objects(&self) -> &BTreeMap<String, T> {
        self.cache()
    }

    fn next_change(&mut self) -> impl Future<Output = Result<Change<T>, Error>> + Send {
        self.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn cm(name: &str, value: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("default".into());
        c.data = Some([("v".to_owned(), value.to_owned())].into());
        c
    }

    fn value(c: &ConfigMap) -> Result<String, String> {
        let v = c
            .data
            .as_ref()
            .and_then(|d| d.get("v"))
            .cloned()
            .unwrap_or_default();
        if v == "bad" {
            Err("bad value".into())
        } else {
            Ok(v)
        }
    }

    #[test]
    fn a_relist_reports_only_the_difference() {
        let mut cache: Cache<ConfigMap, String> = Cache::new(value);
        let mut out = cache.apply(Event::Init);
        out.extend(cache.apply(Event::InitApply(cm("a", "1"))));
        out.extend(cache.apply(Event::InitApply(cm("b", "2"))));
        assert!(out.is_empty(), "nothing before the list is complete");
        assert!(cache.listing());
        let out = cache.apply(Event::InitDone);
        assert_eq!(out.len(), 2);
        assert_eq!(cache.objects().len(), 2);
        // A changed object, an unchanged rewrite (not reported), a deletion.
        assert_eq!(
            cache.apply(Event::Apply(cm("a", "3"))),
            [Change::Upsert {
                key: "default/a".into(),
                object: "3".into()
            }]
        );
        assert!(cache.apply(Event::Apply(cm("a", "3"))).is_empty());
        // The watch restarts (410 Gone): b changed, a vanished, c is new, in between.
        cache.apply(Event::Init);
        cache.apply(Event::InitApply(cm("b", "4")));
        cache.apply(Event::InitApply(cm("c", "5")));
        let out = cache.apply(Event::InitDone);
        assert_eq!(
            out,
            [
                Change::Upsert {
                    key: "default/b".into(),
                    object: "4".into()
                },
                Change::Upsert {
                    key: "default/c".into(),
                    object: "5".into()
                },
                Change::Delete {
                    key: "default/a".into(),
                    last: "3".into()
                },
            ]
        );
        // An object the decoder refuses is reported and dropped from the cache.
        let out = cache.apply(Event::Apply(cm("c", "bad")));
        assert!(matches!(&out[..], [Change::Invalid { key, .. }] if key == "default/c"));
        assert!(!cache.objects().contains_key("default/c"));
        // Deleting what is not cached reports nothing.
        assert!(cache.apply(Event::Delete(cm("zz", "1"))).is_empty());
    }
}
