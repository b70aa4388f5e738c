// SPDX-License-Identifier: Apache-2.0

//! Security identities as CiliumIdentity objects (`identity-allocation-mode=crd`, Cilium's
//! default): a [`cilium_identity::IdentityBackend`] on the Kubernetes API.
//!
//! Each identity is one cluster-scoped CiliumIdentity named by its number, with the label
//! set in `security-labels` ([`CiliumIdentity`]). The backend keeps every CiliumIdentity
//! in memory through a watch ([`Informer`]), so looking up a label
//! set or a number costs no request.
//!
//! Allocating a label set that has no identity yet: the API server's create is the only
//! arbiter (a name is created once), as in Cilium, where a name conflict means "taken, try
//! another". Where Cilium tries a random free number (so two agents racing for one label
//! set can create two identities for it), this backend walks a sequence of numbers that
//! depends only on the label set: [`first_candidate`] (a hash of the labels' kvstore key)
//! and the numbers after it, skipping those known to stand for other labels. Two agents
//! racing for the same labels try the same numbers in the same order: the first create
//! wins, the other gets a conflict, reads the object, finds its own labels and takes the
//! same number. Left open: an identity deleted (garbage-collected) while another agent
//! is between two steps of the walk; the operator only collects identities no endpoint has
//! used for its heartbeat timeout, so a label set being allocated is not among them.
//!
//! Releasing deletes nothing: in crd mode the operator deletes the identities that no
//! CiliumEndpoint references (Cilium's identity GC), as identities may be used by other
//! nodes without any trace of that on the object.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cilium_core::cluster::Change;
use cilium_core::{Label, LabelSet, NumericIdentity};
use cilium_identity::{IdentityBackend, IdentityError};
use kube::api::{Api, PostParams};

use crate::types::CiliumIdentity;
use crate::watch::Informer;

/// The number and labels of a CiliumIdentity; refuses names that are not numbers in
/// `1..=u32::MAX` and labels that are not `source:key` -> value.
pub fn decode(object: &CiliumIdentity) -> Result<(u32, LabelSet), String> {
    let name = object.metadata.name.as_deref().unwrap_or_default();
    let id: u32 = name
        .parse()
        .ok()
        .filter(|n| *n != 0)
        .ok_or_else(|| format!("name {name:?} is not an identity number"))?;
    if object.security_labels.is_empty() {
        return Err("no security-labels".into());
    }
    let mut labels = LabelSet::new();
    for (k, v) in &object.security_labels {
        let (source, key) = k
            .split_once(':')
            .ok_or_else(|| format!("security label {k:?} has no source"))?;
        let label = Label::new(source, key, v.as_str())
            .map_err(|e| format!("security label {k:?}: {e}"))?;
        labels.insert(label);
    }
    Ok((id, labels))
}

/// The `security-labels` map of a label set (`source:key` -> value).
pub fn security_labels(labels: &LabelSet) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|l| (format!("{}:{}", l.source(), l.key()), l.value().to_owned()))
        .collect()
}

/// The first number tried for `labels` in `[min, max]`: FNV-1a (64 bits) of the label
/// set's kvstore key, reduced to the range. Every agent computes the same one.
pub fn first_candidate(labels: &LabelSet, min: u32, max: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in labels.kvstore_key().bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let span = u64::from(max - min) + 1;
    min + u32::try_from(hash % span).unwrap_or(0)
}

/// The identities as last seen, both ways.
#[derive(Debug, Default)]
struct Index {
    by_id: BTreeMap<u32, LabelSet>,
    by_labels: HashMap<String, BTreeSet<u32>>,
}

impl Index {
    fn insert(&mut self, id: u32, labels: LabelSet) {
        self.remove(id);
        self.by_labels
            .entry(labels.kvstore_key())
            .or_default()
            .insert(id);
        self.by_id.insert(id, labels);
    }

    fn remove(&mut self, id: u32) {
        if let Some(old) = self.by_id.remove(&id) {
            let key = old.kvstore_key();
            if let Some(ids) = self.by_labels.get_mut(&key) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_labels.remove(&key);
                }
            }
        }
    }

    /// The identity of `labels`: the lowest number standing for them (objects written by
    /// other allocators may hold one label set twice).
    fn find(&self, labels: &LabelSet) -> Option<u32> {
        self.by_labels
            .get(&labels.kvstore_key())
            .and_then(|ids| ids.first().copied())
    }

    fn apply(&mut self, change: Change<(u32, LabelSet)>) {
        match change {
            Change::Upsert {
                object: (id, labels),
                ..
            } => self.insert(id, labels),
            Change::Delete { last: (id, _), .. } => self.remove(id),
            Change::Invalid { key, error } => {
                eprintln!(
                    "level=warning subsys=identity-crd msg=\"ignoring an invalid CiliumIdentity\" name={key:?} error=\"{error}\""
                );
                if let Ok(id) = key.parse() {
                    self.remove(id);
                }
            }
        }
    }
}

fn api_err(operation: &'static str) -> impl FnOnce(kube::Error) -> IdentityError {
    move |e| IdentityError::Backend {
        operation,
        reason: e.to_string(),
    }
}

/// Identities kept as CiliumIdentity objects; see the module documentation.
#[derive(Debug)]
pub struct CrdBackend {
    api: Api<CiliumIdentity>,
    min: u32,
    max: u32,
    index: Arc<Mutex<Index>>,
    watch: tokio::task::JoinHandle<()>,
}

impl Drop for CrdBackend {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl CrdBackend {
    /// Lists the CiliumIdentities (waits until the list succeeds once) and keeps watching
    /// them; new identities are taken from cluster `cluster_id`'s global range.
    pub async fn start(client: kube::Client, cluster_id: u8) -> Result<Self, crate::Error> {
        let (min, max) = NumericIdentity::global_range(cluster_id);
        Self::with_range(client, min.get(), max.get()).await
    }

    /// [`CrdBackend::start`] with new identities taken from `[min, max]`.
    pub async fn with_range(
        client: kube::Client,
        min: u32,
        max: u32,
    ) -> Result<Self, crate::Error> {
        if min == 0 || min > max {
            return Err(crate::Error::Api(format!(
                "identity range [{min}, {max}] is empty"
            )));
        }
        let api: Api<CiliumIdentity> = Api::all(client);
        let (mut informer, initial) =
            Informer::start_with(api.clone(), Default::default(), decode).await?;
        let index = Arc::new(Mutex::new(Index::default()));
        {
            let mut idx = index.lock().unwrap_or_else(|e| e.into_inner());
            for change in initial {
                idx.apply(change);
            }
        }
        let shared = index.clone();
        let watch = tokio::spawn(async move {
            let mut failing = false;
            loop {
                match informer.next().await {
                    Ok(change) => {
                        failing = false;
                        shared
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .apply(change);
                    }
                    Err(e) if !failing => {
                        failing = true;
                        eprintln!(
                            "level=warning subsys=identity-crd msg=\"watching CiliumIdentities failed; retrying\" error=\"{e}\""
                        );
                    }
                    Err(_) => {}
                }
            }
        });
        Ok(CrdBackend {
            api,
            min,
            max,
            index,
            watch,
        })
    }

    /// The range new identities are taken from.
    pub fn range(&self) -> (u32, u32) {
        (self.min, self.max)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reads identity `id` from the API (not from the watch), recording what it finds.
    async fn read(&self, id: u32) -> Result<Option<LabelSet>, IdentityError> {
        let found = self
            .api
            .get_opt(&id.to_string())
            .await
            .map_err(api_err("reading a CiliumIdentity"))?;
        let decoded = found.as_ref().map(decode);
        let mut idx = self.index();
        match decoded {
            Some(Ok((id, labels))) => {
                idx.insert(id, labels.clone());
                Ok(Some(labels))
            }
            // Taken by an object that does not decode: not usable, not ours.
            Some(Err(_)) => Ok(Some(LabelSet::new())),
            None => {
                idx.remove(id);
                Ok(None)
            }
        }
    }
}

/// How many times one number is tried when it vanishes between a conflict and the read.
const VANISHED_RETRIES: u32 = 3;

impl IdentityBackend for CrdBackend {
    async fn allocate(&self, labels: &LabelSet) -> Result<NumericIdentity, IdentityError> {
        if labels.is_empty() {
            return Err(IdentityError::EmptyLabels);
        }
        if let Some(id) = self.index().find(labels) {
            return Ok(NumericIdentity::new(id));
        }
        let security = security_labels(labels);
        let span = self.max - self.min + 1;
        let start = first_candidate(labels, self.min, self.max);
        for step in 0..span {
            let candidate = self.min + (start - self.min + step) % span;
            match self.index().by_id.get(&candidate) {
                Some(held) if held == labels => return Ok(NumericIdentity::new(candidate)),
                Some(_) => continue,
                None => {}
            }
            for _ in 0..VANISHED_RETRIES {
                let object = CiliumIdentity::new(candidate, security.clone());
                match self.api.create(&PostParams::default(), &object).await {
                    Ok(_) => {
                        self.index().insert(candidate, labels.clone());
                        return Ok(NumericIdentity::new(candidate));
                    }
                    Err(kube::Error::Api(status)) if status.code == 409 => {
                        match self.read(candidate).await? {
                            Some(held) if held == *labels => {
                                return Ok(NumericIdentity::new(candidate));
                            }
                            Some(_) => break,
                            // Deleted since the conflict: try the same number again.
                            None => continue,
                        }
                    }
                    Err(e) => return Err(api_err("creating a CiliumIdentity")(e)),
                }
            }
        }
        Err(IdentityError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    async fn release(&self, _labels: &LabelSet, _id: NumericIdentity) -> Result<(), IdentityError> {
        // The operator's GC deletes identities no CiliumEndpoint references.
        Ok(())
    }

    async fn lookup(&self, labels: &LabelSet) -> Result<Option<NumericIdentity>, IdentityError> {
        Ok(self.index().find(labels).map(NumericIdentity::new))
    }

    async fn lookup_by_id(&self, id: NumericIdentity) -> Result<Option<LabelSet>, IdentityError> {
        if let Some(labels) = self.index().by_id.get(&id.get()) {
            return Ok(Some(labels.clone()));
        }
        Ok(self.read(id.get()).await?.filter(|l| !l.is_empty()))
    }

    async fn list(&self) -> Result<Vec<(NumericIdentity, LabelSet)>, IdentityError> {
        Ok(self
            .index()
            .by_id
            .iter()
            .map(|(id, l)| (NumericIdentity::new(*id), l.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(items: &[&str]) -> LabelSet {
        LabelSet::parse_list(items).unwrap()
    }

    #[test]
    fn decoding_refuses_what_is_not_an_identity() {
        let good = CiliumIdentity::new(300, [("k8s:app".to_owned(), "web".to_owned())].into());
        assert_eq!(decode(&good).unwrap(), (300, labels(&["k8s:app=web"])));
        let mut bad = good.clone();
        bad.metadata.name = Some("web".into());
        assert!(decode(&bad).unwrap_err().contains("not an identity number"));
        bad.metadata.name = Some("0".into());
        assert!(decode(&bad).is_err());
        let mut bad = good.clone();
        bad.security_labels = [("app".to_owned(), "web".to_owned())].into();
        assert!(decode(&bad).unwrap_err().contains("no source"));
        bad.security_labels.clear();
        assert!(decode(&bad).is_err());
    }

    #[test]
    fn security_labels_round_trip_through_decode() {
        let set = labels(&[
            "k8s:app=web",
            "k8s:io.kubernetes.pod.namespace=default",
            "reserved:host",
        ]);
        let object = CiliumIdentity::new(4242, security_labels(&set));
        assert_eq!(decode(&object).unwrap().1, set);
    }

    #[test]
    fn the_first_candidate_depends_only_on_the_labels_and_stays_in_range() {
        let a = labels(&["k8s:app=web"]);
        let b = labels(&["k8s:app=db"]);
        assert_eq!(
            first_candidate(&a, 256, 65535),
            first_candidate(&a.clone(), 256, 65535)
        );
        assert_ne!(
            first_candidate(&a, 256, 65535),
            first_candidate(&b, 256, 65535)
        );
        for n in 0..200 {
            let l = labels(&[&format!("k8s:n={n}")]);
            let c = first_candidate(&l, 300, 310);
            assert!((300..=310).contains(&c));
        }
        assert_eq!(first_candidate(&a, 7, 7), 7);
    }

    #[test]
    fn the_index_prefers_the_lowest_number_for_duplicated_labels() {
        let mut idx = Index::default();
        let web = labels(&["k8s:app=web"]);
        idx.insert(900, web.clone());
        idx.insert(500, web.clone());
        assert_eq!(idx.find(&web), Some(500));
        idx.apply(Change::Delete {
            key: "500".into(),
            last: (500, web.clone()),
        });
        assert_eq!(idx.find(&web), Some(900));
        // Relabelled in place: the old labels no longer find it.
        idx.insert(900, labels(&["k8s:app=db"]));
        assert_eq!(idx.find(&web), None);
        idx.apply(Change::Invalid {
            key: "900".into(),
            error: "bad".into(),
        });
        assert!(idx.by_id.is_empty() && idx.by_labels.is_empty());
    }
}
