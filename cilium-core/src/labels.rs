// SPDX-License-Identifier: Apache-2.0

//! Labels as Cilium writes them (`source:key=value`) and sorted label sets.
//!
//! A [`LabelSet`] holds at most one label per key (as Cilium's `Labels` map does) and keeps
//! them sorted by key. Its canonical string is the form Cilium uses as the kvstore key of an
//! identity: every label written `source:key=value;`, sorted by key, for example
//! `k8s:app=web;k8s:io.kubernetes.pod.namespace=default;`. Printing and parsing round-trip.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::CoreError;

/// Well-known label sources, as Cilium names them.
pub mod source {
    /// Source not specified (a label parsed without a `source:` prefix).
    pub const UNSPEC: &str = "unspec";
    /// Matches labels of any source (used in selectors and filters).
    pub const ANY: &str = "any";
    /// Labels taken from Kubernetes objects.
    pub const K8S: &str = "k8s";
    /// Labels taken from the container runtime.
    pub const CONTAINER: &str = "container";
    /// Labels given by the CNI plugin.
    pub const CNI: &str = "cni";
    /// Labels Cilium reserves for itself (`reserved:host`, `reserved:world`, ...).
    pub const RESERVED: &str = "reserved";
    /// Labels naming a CIDR (`cidr:10.0.0.0/8`).
    pub const CIDR: &str = "cidr";
    /// Labels naming a CiliumCIDRGroup.
    pub const CIDR_GROUP: &str = "cidrgroup";
    /// Labels naming a DNS name.
    pub const FQDN: &str = "fqdn";
    /// Labels of a node.
    pub const NODE: &str = "node";
}

/// The label keys Cilium adds to a pod's labels, and Kubernetes' own.
pub mod keys {
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
    /// Prefix of the namespace's labels copied onto the pod.
    pub const POD_NAMESPACE_META_LABELS: &str = "io.cilium.k8s.namespace.labels";
    /// The pod's service account.
    pub const POLICY_SERVICE_ACCOUNT: &str = "io.cilium.k8s.policy.serviceaccount";
    /// The cluster's name.
    pub const POLICY_CLUSTER: &str = "io.cilium.k8s.policy.cluster";
    /// The recommended `app.kubernetes.io/*` labels.
    pub const APP_KUBERNETES: &str = "app.kubernetes.io";
}

/// One label: a source, a key and a value (possibly empty).
///
/// Keys never contain `=` or `;`, sources never contain `:`, `=` or `;`, values never contain
/// `;` (the kvstore key separator). The constructor and the parser enforce it, so every
/// label prints to a string that parses back to the same label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label {
    source: String,
    key: String,
    value: String,
}

fn invalid(input: &str, reason: &'static str) -> CoreError {
    CoreError::InvalidLabel {
        input: input.to_owned(),
        reason,
    }
}

impl Label {
    /// Builds a label, checking each part.
    ///
    /// ```
    /// use cilium_core::Label;
    /// let l = Label::new("k8s", "app", "web").unwrap();
    /// assert_eq!(l.to_string(), "k8s:app=web");
    /// assert!(Label::new("k8s", "", "web").is_err());
    /// ```
    pub fn new(
        source: impl Into<String>,
        key: impl Into<String>,
        value: impl Into<String>,
    ) -> Result<Self, CoreError> {
        let label = Label {
            source: source.into(),
            key: key.into(),
            value: value.into(),
        };
        label.check(&label.to_string())?;
        Ok(label)
    }

    /// A label with source `k8s`.
    pub fn k8s(key: impl Into<String>, value: impl Into<String>) -> Result<Self, CoreError> {
        Self::new(source::K8S, key, value)
    }

    /// A label with source `reserved` and an empty value, such as `reserved:host`.
    pub fn reserved(key: impl Into<String>) -> Result<Self, CoreError> {
        Self::new(source::RESERVED, key, "")
    }

    fn check(&self, input: &str) -> Result<(), CoreError> {
        if self.source.is_empty() {
            return Err(invalid(input, "empty source"));
        }
        if self.source.contains([':', '=', ';']) {
            return Err(invalid(input, "source contains ':', '=' or ';'"));
        }
        if self.key.is_empty() {
            return Err(invalid(input, "empty key"));
        }
        if self.key.contains(['=', ';']) {
            return Err(invalid(input, "key contains '=' or ';'"));
        }
        if self.value.contains(';') {
            return Err(invalid(input, "value contains ';'"));
        }
        if self
            .key
            .chars()
            .chain(self.value.chars())
            .any(char::is_control)
        {
            return Err(invalid(input, "control character"));
        }
        Ok(())
    }

    /// The source (`k8s`, `reserved`, ...).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value; empty for labels such as `reserved:host`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Writes the label in kvstore form: `source:key=value;` (always with `=` and `;`).
    pub fn write_kvstore(&self, out: &mut String) {
        out.push_str(&self.source);
        out.push(':');
        out.push_str(&self.key);
        out.push('=');
        out.push_str(&self.value);
        out.push(';');
    }
}

/// Prints `source:key=value`, or `source:key` when the value is empty (as Cilium does).
impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}:{}", self.source, self.key)
        } else {
            write!(f, "{}:{}={}", self.source, self.key, self.value)
        }
    }
}

/// Parses `source:key=value`, `source:key`, `key=value` (source `unspec`) or `$key`
/// (shorthand for `reserved:key`). The source ends at the first `:` that comes before any
/// `=`; the key ends at the first `=`.
///
/// ```
/// use cilium_core::Label;
/// let l: Label = "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default".parse().unwrap();
/// assert_eq!(l.source(), "k8s");
/// assert_eq!(l.key(), "io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name");
/// assert_eq!("$host".parse::<Label>().unwrap().to_string(), "reserved:host");
/// assert_eq!("app=a:b".parse::<Label>().unwrap().source(), "unspec");
/// ```
impl FromStr for Label {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        if s.is_empty() {
            return Err(invalid(s, "empty label"));
        }
        let (src, rest) = if let Some(rest) = s.strip_prefix('$') {
            (source::RESERVED, rest)
        } else {
            let colon = s.find(':');
            let equals = s.find('=');
            match (colon, equals) {
                (Some(c), Some(e)) if c < e => (&s[..c], &s[c + 1..]),
                (Some(c), None) => (&s[..c], &s[c + 1..]),
                _ => (source::UNSPEC, s),
            }
        };
        let (key, value) = match rest.split_once('=') {
            Some((k, v)) => (k, v),
            None => (rest, ""),
        };
        let label = Label {
            source: src.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
        };
        label.check(s)?;
        Ok(label)
    }
}

impl Serialize for Label {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A set of labels with at most one label per key, sorted by key.
///
/// ```
/// use cilium_core::LabelSet;
/// let set: LabelSet = "k8s:io.kubernetes.pod.namespace=default;k8s:app=web;".parse().unwrap();
/// assert_eq!(set.to_string(), "k8s:app=web;k8s:io.kubernetes.pod.namespace=default;");
/// assert_eq!(set.get("app").unwrap().value(), "web");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSet {
    /// Sorted by key, keys unique.
    labels: Vec<Label>,
}

impl LabelSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a set from Kubernetes-style `key -> value` pairs, all with source `source`.
    pub fn from_pairs<'a>(
        source: &str,
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, CoreError> {
        let mut set = LabelSet::new();
        for (k, v) in pairs {
            set.insert(Label::new(source, k, v)?);
        }
        Ok(set)
    }

    /// Parses a list of label strings (each as [`Label`]'s `FromStr`); a key given twice is
    /// an error.
    pub fn parse_list<S: AsRef<str>>(items: &[S]) -> Result<Self, CoreError> {
        let mut set = LabelSet::new();
        for item in items {
            let label: Label = item.as_ref().parse()?;
            if set.get(label.key()).is_some() {
                return Err(CoreError::DuplicateLabelKey {
                    key: label.key,
                    input: items
                        .iter()
                        .map(|s| s.as_ref())
                        .collect::<Vec<_>>()
                        .join(","),
                });
            }
            set.insert(label);
        }
        Ok(set)
    }

    /// Inserts a label, replacing (and returning) any label with the same key.
    pub fn insert(&mut self, label: Label) -> Option<Label> {
        match self.find(&label.key) {
            Ok(i) => Some(std::mem::replace(&mut self.labels[i], label)),
            Err(i) => {
                self.labels.insert(i, label);
                None
            }
        }
    }

    fn find(&self, key: &str) -> Result<usize, usize> {
        self.labels.binary_search_by(|l| l.key.as_str().cmp(key))
    }

    /// Removes the label with this key.
    pub fn remove(&mut self, key: &str) -> Option<Label> {
        let i = self.find(key).ok()?;
        Some(self.labels.remove(i))
    }

    /// The label with this key.
    pub fn get(&self, key: &str) -> Option<&Label> {
        self.find(key).ok().map(|i| &self.labels[i])
    }

    /// Whether this exact label (source, key and value) is in the set.
    pub fn contains(&self, label: &Label) -> bool {
        self.get(&label.key) == Some(label)
    }

    /// Whether any label has this source.
    pub fn has_source(&self, source: &str) -> bool {
        self.labels.iter().any(|l| l.source == source)
    }

    /// Number of labels.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The labels, sorted by key.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Label> + '_ {
        self.labels.iter()
    }

    /// The kvstore key form: `source:key=value;` per label, sorted by key. This string is a
    /// cross-node contract (it names identities in the kvstore): it must not change.
    pub fn kvstore_key(&self) -> String {
        let mut out = String::with_capacity(self.labels.len() * 32);
        for label in &self.labels {
            label.write_kvstore(&mut out);
        }
        out
    }

    /// Each label as `source:key[=value]`, sorted by key (the form `cilium-dbg` prints).
    pub fn to_strings(&self) -> Vec<String> {
        self.labels.iter().map(ToString::to_string).collect()
    }
}

impl FromIterator<Label> for LabelSet {
    fn from_iter<I: IntoIterator<Item = Label>>(iter: I) -> Self {
        let mut set = LabelSet::new();
        for l in iter {
            set.insert(l);
        }
        set
    }
}

impl<'a> IntoIterator for &'a LabelSet {
    type Item = &'a Label;
    type IntoIter = std::slice::Iter<'a, Label>;
    fn into_iter(self) -> Self::IntoIter {
        self.labels.iter()
    }
}

/// Prints the kvstore key form (see [`LabelSet::kvstore_key`]).
impl fmt::Display for LabelSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.kvstore_key())
    }
}

/// Parses the kvstore key form: labels separated by `;` (the last `;` may be left out).
/// Any order is accepted; a key given twice is an error.
impl FromStr for LabelSet {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self, CoreError> {
        let body = s.strip_suffix(';').unwrap_or(s);
        if body.is_empty() {
            return Ok(LabelSet::new());
        }
        let mut set = LabelSet::new();
        for part in body.split(';') {
            let label: Label = part.parse()?;
            if set.get(label.key()).is_some() {
                return Err(CoreError::DuplicateLabelKey {
                    key: label.key,
                    input: s.to_owned(),
                });
            }
            set.insert(label);
        }
        Ok(set)
    }
}

/// Serialised as a list of `source:key[=value]` strings, as Cilium's API does.
impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.labels.iter().map(ToString::to_string))
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let items = Vec::<String>::deserialize(deserializer)?;
        LabelSet::parse_list(&items).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_forms() {
        let l: Label = "k8s:app=web".parse().unwrap();
        assert_eq!((l.source(), l.key(), l.value()), ("k8s", "app", "web"));
        let l: Label = "reserved:host".parse().unwrap();
        assert_eq!((l.source(), l.key(), l.value()), ("reserved", "host", ""));
        let l: Label = "app=web".parse().unwrap();
        assert_eq!(l.source(), "unspec");
        let l: Label = "k8s:a=b=c".parse().unwrap();
        assert_eq!(l.value(), "b=c");
        let l: Label = "cidr:10.0.0.0/8".parse().unwrap();
        assert_eq!(l.key(), "10.0.0.0/8");
    }

    #[test]
    fn bad_labels_are_errors() {
        for bad in [
            "",
            "k8s:",
            "k8s:=v",
            ":app=web",
            "k8s:a;b=c",
            "k8s:a=b;c",
            "$",
            "a\u{7}=b",
        ] {
            assert!(bad.parse::<Label>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn kvstore_key_matches_cilium() {
        let set = LabelSet::parse_list(&["k8s:io.kubernetes.pod.namespace=default", "k8s:app=web"])
            .unwrap();
        assert_eq!(
            set.kvstore_key(),
            "k8s:app=web;k8s:io.kubernetes.pod.namespace=default;"
        );
        let host = LabelSet::parse_list(&["reserved:host"]).unwrap();
        assert_eq!(host.kvstore_key(), "reserved:host=;");
        assert_eq!(host.to_string().parse::<LabelSet>().unwrap(), host);
    }

    #[test]
    fn duplicate_keys_rejected() {
        assert!(matches!(
            "k8s:app=a;container:app=b;".parse::<LabelSet>(),
            Err(CoreError::DuplicateLabelKey { .. })
        ));
        assert!(LabelSet::parse_list(&["k8s:a=1", "k8s:a=2"]).is_err());
    }

    #[test]
    fn serde_as_string_list() {
        let set = LabelSet::parse_list(&["k8s:b=2", "reserved:host"]).unwrap();
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"["k8s:b=2","reserved:host"]"#);
        assert_eq!(serde_json::from_str::<LabelSet>(&json).unwrap(), set);
        assert!(serde_json::from_str::<LabelSet>(r#"["k8s:="]"#).is_err());
    }

    fn arb_label() -> impl Strategy<Value = Label> {
        (
            "[a-z][a-z0-9-]{0,8}",
            "[a-zA-Z0-9][a-zA-Z0-9./_:-]{0,20}",
            "[a-zA-Z0-9._=:/-]{0,12}",
        )
            .prop_map(|(s, k, v)| Label::new(s, k, v).unwrap())
    }

    proptest! {
        #[test]
        fn label_round_trips(l in arb_label()) {
            prop_assert_eq!(l.to_string().parse::<Label>().unwrap(), l);
        }

        #[test]
        fn label_set_round_trips(labels in proptest::collection::vec(arb_label(), 0..8)) {
            let set: LabelSet = labels.into_iter().collect();
            let text = set.to_string();
            prop_assert_eq!(text.parse::<LabelSet>().unwrap(), set.clone());
            // Sorted by key, one label per key.
            let keys: Vec<_> = set.iter().map(|l| l.key().to_owned()).collect();
            let mut sorted = keys.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(keys, sorted);
        }

        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Label>();
            let _ = s.parse::<LabelSet>();
        }
    }
}
