// SPDX-License-Identifier: Apache-2.0

//! Watchers made from other watchers, so that a source whose objects do not have the
//! consumer's shape still feeds the consumer's loop unchanged: [`Mapped`] (one object in,
//! one out, through a function that may need context, e.g. the cluster's name) and
//! [`Grouped`] (several objects in, one per group out, e.g. a Service's EndpointSlices
//! merged into its endpoints).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;

use super::{Change, Watcher, put};

/// The objects of another watcher, each turned into a `U` by a function; what the function
/// refuses is reported as [`Change::Invalid`] and left out (as a decoder's refusal is).
/// Changes that leave the `U` as it was are not reported.
pub struct Mapped<W, T, U, F> {
    inner: W,
    map: F,
    objects: BTreeMap<String, U>,
    pending: VecDeque<Change<U>>,
    source: PhantomData<fn(T)>,
}

impl<W, T, U: fmt::Debug, F> fmt::Debug for Mapped<W, T, U, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapped")
            .field("objects", &self.objects.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<W, T, U, F> Mapped<W, T, U, F>
where
    W: Watcher<T>,
    U: Clone + PartialEq,
    F: Fn(&T) -> Result<U, String>,
{
    /// Wraps `inner` (just started: `initial` are its first changes); returns the wrapper
    /// and its own first changes.
    pub fn new(inner: W, initial: Vec<Change<T>>, map: F) -> (Self, Vec<Change<U>>) {
        let mut mapped = Mapped {
            inner,
            map,
            objects: BTreeMap::new(),
            pending: VecDeque::new(),
            source: PhantomData,
        };
        let first = initial
            .into_iter()
            .filter_map(|c| Self::absorb(&mapped.map, &mut mapped.objects, c))
            .collect();
        (mapped, first)
    }

    fn absorb(map: &F, objects: &mut BTreeMap<String, U>, change: Change<T>) -> Option<Change<U>> {
        match change {
            Change::Upsert { key, object } => put(objects, key, map(&object)),
            Change::Delete { key, .. } => objects
                .remove(&key)
                .map(|last| Change::Delete { key, last }),
            Change::Invalid { key, error } => {
                objects.remove(&key);
                Some(Change::Invalid { key, error })
            }
        }
    }
}

/// The next change of an adapter: its pending changes first, then what `absorb` makes of
/// its source's next changes (the source's cache already holds their result).
async fn pump<T, U, W: Watcher<T>>(
    source: &mut W,
    pending: &mut VecDeque<Change<U>>,
    mut absorb: impl FnMut(&W, Change<T>) -> Vec<Change<U>>,
) -> Result<Change<U>, W::Error> {
    loop {
        if let Some(c) = pending.pop_front() {
            return Ok(c);
        }
        let change = source.next_change().await?;
        pending.extend(absorb(source, change));
    }
}

impl<W, T, U, F> Watcher<U> for Mapped<W, T, U, F>
where
    W: Watcher<T> + Send,
    U: Clone + PartialEq + Send,
    F: Fn(&T) -> Result<U, String> + Send + Sync,
{
    type Error = W::Error;

    fn objects(&self) -> &BTreeMap<String, U> {
        &self.objects
    }

    async fn next_change(&mut self) -> Result<Change<U>, W::Error> {
        let (map, objects) = (&self.map, &mut self.objects);
        pump(&mut self.inner, &mut self.pending, |_, c| {
            Self::absorb(map, objects, c).into_iter().collect()
        })
        .await
    }
}

/// The objects of another watcher gathered into groups, one `U` per group: `group_of`
/// names an object's group (`None`: in no group), `merge` makes a group's `U` from its
/// members (`None`: the group is gone). Keys are the groups' names. A member that moves
/// to another group changes both. An [`Change::Invalid`] of the source is passed on (with
/// the source's key) and its member leaves its group.
pub struct Grouped<W, T, U> {
    inner: W,
    groups: Groups<T, U>,
    pending: VecDeque<Change<U>>,
}

/// The state of a [`Grouped`]: who is in which group, and each group's `U`.
struct Groups<T, U> {
    group_of: fn(&T) -> Option<String>,
    merge: fn(&str, &[&T]) -> Option<U>,
    group_of_member: BTreeMap<String, String>,
    members: BTreeMap<String, BTreeSet<String>>,
    merged: BTreeMap<String, U>,
}

impl<W, T, U: fmt::Debug> fmt::Debug for Grouped<W, T, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Grouped")
            .field("groups", &self.groups.merged.len())
            .field("members", &self.groups.group_of_member.len())
            .field("pending", &self.pending)
            .finish_non_exhaustive()
    }
}

impl<W, T, U> Grouped<W, T, U>
where
    W: Watcher<T>,
    U: Clone + PartialEq,
{
    /// Wraps `inner` (just started: `initial` are its first changes); returns the wrapper
    /// and the groups as `Upsert`s (and the source's `Invalid`s).
    pub fn new(
        inner: W,
        initial: Vec<Change<T>>,
        group_of: fn(&T) -> Option<String>,
        merge: fn(&str, &[&T]) -> Option<U>,
    ) -> (Self, Vec<Change<U>>) {
        let mut groups = Groups {
            group_of,
            merge,
            group_of_member: BTreeMap::new(),
            members: BTreeMap::new(),
            merged: BTreeMap::new(),
        };
        let first = groups.absorb(inner.objects(), initial);
        let grouped = Grouped {
            inner,
            groups,
            pending: VecDeque::new(),
        };
        (grouped, first)
    }
}

impl<T, U: Clone + PartialEq> Groups<T, U> {
    fn leave(&mut self, key: &str, touched: &mut BTreeSet<String>) {
        if let Some(group) = self.group_of_member.remove(key) {
            if let Some(m) = self.members.get_mut(&group) {
                m.remove(key);
                if m.is_empty() {
                    self.members.remove(&group);
                }
            }
            touched.insert(group);
        }
    }

    /// Applies the source's changes (`objects`: its cache, which already holds their
    /// result) and returns the groups' changes.
    fn absorb(&mut self, objects: &BTreeMap<String, T>, changes: Vec<Change<T>>) -> Vec<Change<U>> {
        let mut out = Vec::new();
        let mut touched = BTreeSet::new();
        for change in changes {
            match change {
                Change::Upsert { key, object } => {
                    self.leave(&key, &mut touched);
                    if let Some(group) = (self.group_of)(&object) {
                        self.group_of_member.insert(key.clone(), group.clone());
                        self.members.entry(group.clone()).or_default().insert(key);
                        touched.insert(group);
                    }
                }
                Change::Delete { key, .. } => self.leave(&key, &mut touched),
                Change::Invalid { key, error } => {
                    self.leave(&key, &mut touched);
                    out.push(Change::Invalid { key, error });
                }
            }
        }
        for group in touched {
            let members: Vec<&T> = self
                .members
                .get(&group)
                .into_iter()
                .flatten()
                .filter_map(|k| objects.get(k))
                .collect();
            let merged = if members.is_empty() {
                None
            } else {
                (self.merge)(&group, &members)
            };
            match merged {
                Some(object) => out.extend(put(&mut self.merged, group, Ok(object))),
                None => out.extend(
                    self.merged
                        .remove(&group)
                        .map(|last| Change::Delete { key: group, last }),
                ),
            }
        }
        out
    }
}

impl<W, T, U> Watcher<U> for Grouped<W, T, U>
where
    W: Watcher<T> + Send,
    T: Send,
    U: Clone + PartialEq + Send,
{
    type Error = W::Error;

    fn objects(&self) -> &BTreeMap<String, U> {
        &self.groups.merged
    }

    async fn next_change(&mut self) -> Result<Change<U>, W::Error> {
        let groups = &mut self.groups;
        pump(&mut self.inner, &mut self.pending, |inner, c| {
            groups.absorb(inner.objects(), vec![c])
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::tests::ready;

    /// A source fed by the test: each change is applied to its objects when it is taken.
    #[derive(Default)]
    struct Fake {
        objects: BTreeMap<String, (String, u32)>,
        queue: VecDeque<Change<(String, u32)>>,
    }

    impl Fake {
        fn apply(&mut self, c: &Change<(String, u32)>) {
            match c {
                Change::Upsert { key, object } => {
                    self.objects.insert(key.clone(), object.clone());
                }
                Change::Delete { key, .. } | Change::Invalid { key, .. } => {
                    self.objects.remove(key);
                }
            }
        }

        /// Starts with `changes` applied, as an informer's list is.
        fn started(changes: Vec<Change<(String, u32)>>) -> (Self, Vec<Change<(String, u32)>>) {
            let mut fake = Fake::default();
            for c in &changes {
                fake.apply(c);
            }
            (fake, changes)
        }
    }

    impl Watcher<(String, u32)> for Fake {
        type Error = String;

        fn objects(&self) -> &BTreeMap<String, (String, u32)> {
            &self.objects
        }

        fn next_change(
            &mut self,
        ) -> impl Future<Output = Result<Change<(String, u32)>, String>> + Send {
            let c = self.queue.pop_front();
            if let Some(c) = &c {
                self.apply(c);
            }
            std::future::ready(c.ok_or_else(|| "no more changes".to_owned()))
        }
    }

    fn up(key: &str, group: &str, n: u32) -> Change<(String, u32)> {
        Change::Upsert {
            key: key.into(),
            object: (group.into(), n),
        }
    }

    fn del(key: &str, group: &str, n: u32) -> Change<(String, u32)> {
        Change::Delete {
            key: key.into(),
            last: (group.into(), n),
        }
    }

    #[test]
    fn mapped_reports_what_the_function_makes_and_refuses() {
        let offset = 100;
        let (mut fake, initial) = Fake::started(vec![up("a", "g", 1), up("b", "g", 0)]);
        fake.queue.extend([
            up("a", "g", 1), // unchanged
            up("a", "g", 2),
            up("b", "g", 3), // valid now
            up("a", "g", 0), // refused: a leaves
            del("a", "g", 0),
            del("b", "g", 3),
        ]);
        let map = move |o: &(String, u32)| {
            if o.1 == 0 {
                Err("zero".to_owned())
            } else {
                Ok(o.1 + offset)
            }
        };
        let (mut m, first) = Mapped::new(fake, initial, map);
        assert_eq!(
            first,
            [
                Change::Upsert {
                    key: "a".into(),
                    object: 101
                },
                Change::Invalid {
                    key: "b".into(),
                    error: "zero".into()
                }
            ]
        );
        let mut next = || ready(m.next_change());
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "a".into(),
                object: 102
            })
        );
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "b".into(),
                object: 103
            })
        );
        assert!(matches!(next(), Ok(Change::Invalid { key, .. }) if key == "a"));
        // a was already left out: its deletion is nothing to report.
        assert_eq!(
            next(),
            Ok(Change::Delete {
                key: "b".into(),
                last: 103
            })
        );
        assert!(next().is_err());
        assert!(m.objects().is_empty());
    }

    /// The sum of a group's numbers; a group whose sum is 0 is gone.
    fn sum(_: &str, members: &[&(String, u32)]) -> Option<u32> {
        let s: u32 = members.iter().map(|m| m.1).sum();
        (s > 0).then_some(s)
    }

    fn group(o: &(String, u32)) -> Option<String> {
        (!o.0.is_empty()).then(|| o.0.clone())
    }

    #[test]
    fn grouped_merges_members_and_follows_moves() {
        let (mut fake, initial) =
            Fake::started(vec![up("a1", "a", 1), up("a2", "a", 2), up("x", "", 7)]);
        fake.queue.extend([
            up("a2", "a", 2), // unchanged
            up("a2", "b", 2), // moves: a and b change
            up("x", "b", 5),  // joins b
            Change::Invalid {
                key: "a1".into(),
                error: "bad".into(),
            },
            del("a2", "b", 2),
            up("x", "b", 0), // b's sum is 0: gone
        ]);
        let (mut g, first) = Grouped::new(fake, initial, group, sum);
        assert_eq!(
            first,
            [Change::Upsert {
                key: "a".into(),
                object: 3
            }]
        );
        let mut next = || ready(g.next_change());
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "a".into(),
                object: 1
            })
        );
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "b".into(),
                object: 2
            })
        );
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "b".into(),
                object: 7
            })
        );
        assert!(matches!(next(), Ok(Change::Invalid { key, .. }) if key == "a1"));
        assert_eq!(
            next(),
            Ok(Change::Delete {
                key: "a".into(),
                last: 1
            })
        );
        assert_eq!(
            next(),
            Ok(Change::Upsert {
                key: "b".into(),
                object: 5
            })
        );
        assert_eq!(
            next(),
            Ok(Change::Delete {
                key: "b".into(),
                last: 5
            })
        );
        assert!(next().is_err());
        assert!(g.objects().is_empty());
    }
}
