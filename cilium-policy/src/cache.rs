// SPDX-License-Identifier: Apache-2.0

//! The selector cache: each peer selector in use, resolved to the identities it selects,
//! kept up to date one identity at a time.

use std::collections::{BTreeMap, BTreeSet};

use cilium_core::{LabelSet, NumericIdentity};

use crate::engine::{selects, static_identities};
use crate::rules::Peer;

/// One change to a selection: `id` joined (`added`) or left the identities of `peer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectionChange {
    /// The peer whose selection changed.
    pub peer: Peer,
    /// The identity.
    pub id: NumericIdentity,
    /// Joined (true) or left (false).
    pub added: bool,
}

#[derive(Debug, Clone)]
struct Selection {
    ids: BTreeSet<NumericIdentity>,
    users: usize,
}

/// Selections of the peers in use, over the known identities.
///
/// ```
/// use cilium_core::{LabelSet, NumericIdentity};
/// use cilium_policy::{Peer, Selector, SelectorCache};
///
/// let mut cache = SelectorCache::new();
/// let web = Peer::Endpoints(Selector::labels([("app", "web")]));
/// cache.add_user(&web);
/// let changes = cache.upsert_identity(
///     NumericIdentity::new(300),
///     LabelSet::parse_list(&["k8s:app=web"]).unwrap(),
/// );
/// assert_eq!(changes.len(), 1);
/// assert!(cache.selection(&web).unwrap().contains(&NumericIdentity::new(300)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct SelectorCache {
    identities: BTreeMap<NumericIdentity, LabelSet>,
    selections: BTreeMap<Peer, Selection>,
}

impl SelectorCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers one user of `peer`, resolving it on first use; returns its identities.
    pub fn add_user(&mut self, peer: &Peer) -> &BTreeSet<NumericIdentity> {
        let identities = &self.identities;
        let sel = self.selections.entry(peer.clone()).or_insert_with(|| {
            let mut ids: BTreeSet<NumericIdentity> = static_identities(peer).into_iter().collect();
            ids.extend(
                identities
                    .iter()
                    .filter(|(id, labels)| selects(peer, **id, labels))
                    .map(|(id, _)| *id),
            );
            Selection { ids, users: 0 }
        });
        sel.users += 1;
        &sel.ids
    }

    /// Drops one user of `peer`; the selection is forgotten with its last user.
    pub fn remove_user(&mut self, peer: &Peer) {
        if let Some(sel) = self.selections.get_mut(peer) {
            sel.users -= 1;
            if sel.users == 0 {
                self.selections.remove(peer);
            }
        }
    }

    /// The identities `peer` selects, if it is in use.
    pub fn selection(&self, peer: &Peer) -> Option<&BTreeSet<NumericIdentity>> {
        self.selections.get(peer).map(|s| &s.ids)
    }

    /// How many peers are in use.
    pub fn len(&self) -> usize {
        self.selections.len()
    }

    /// Whether no peer is in use.
    pub fn is_empty(&self) -> bool {
        self.selections.is_empty()
    }

    /// The labels of a known identity.
    pub fn labels(&self, id: NumericIdentity) -> Option<&LabelSet> {
        self.identities.get(&id)
    }

    /// Records (or relabels) an identity; returns the selections it joined or left.
    pub fn upsert_identity(
        &mut self,
        id: NumericIdentity,
        labels: LabelSet,
    ) -> Vec<SelectionChange> {
        let changes = self.reselect(id, Some(&labels));
        self.identities.insert(id, labels);
        changes
    }

    /// Forgets an identity; returns the selections it left.
    pub fn remove_identity(&mut self, id: NumericIdentity) -> Vec<SelectionChange> {
        if self.identities.remove(&id).is_none() {
            return Vec::new();
        }
        self.reselect(id, None)
    }

    fn reselect(&mut self, id: NumericIdentity, labels: Option<&LabelSet>) -> Vec<SelectionChange> {
        let mut changes = Vec::new();
        for (peer, sel) in &mut self.selections {
            if static_identities(peer).contains(&id) {
                continue;
            }
            let now = labels.is_some_and(|l| selects(peer, id, l));
            let was = sel.ids.contains(&id);
            if now == was {
                continue;
            }
            if now {
                sel.ids.insert(id);
            } else {
                sel.ids.remove(&id);
            }
            changes.push(SelectionChange {
                peer: peer.clone(),
                id,
                added: now,
            });
        }
        changes
    }
}
