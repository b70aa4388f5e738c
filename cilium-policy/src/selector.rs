// SPDX-License-Identifier: Apache-2.0

//! Label selectors (`matchLabels`, `matchExpressions`) over identity labels.
//!
//! A selector key may carry a source (`k8s:app`, `reserved:host`); without one it matches
//! a label of that key from any source (Cilium's `any:` default for policy selectors).

use std::collections::BTreeMap;
use std::fmt;

use cilium_core::LabelSet;
use serde::{Deserialize, Serialize};

/// An operator of a `matchExpressions` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Operator {
    /// The label's value is one of `values`.
    In,
    /// The label is absent, or its value is none of `values`.
    NotIn,
    /// The label is present.
    Exists,
    /// The label is absent.
    DoesNotExist,
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirement {
    /// The label key (optionally `source:key`).
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values (for In and NotIn).
    #[serde(default)]
    pub values: Vec<String>,
}

/// A label selector. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Selector {
    /// Labels that must be present with these values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
    /// Requirements that must all hold.
    #[serde(default)]
    pub match_expressions: Vec<Requirement>,
}

/// Splits a selector key into (source or None for any, key).
fn split_key(key: &str) -> (Option<&str>, &str) {
    match key.split_once(':') {
        Some(("any", k)) => (None, k),
        Some((src, k)) if !src.is_empty() && !src.contains(['.', '/']) => (Some(src), k),
        _ => (None, key),
    }
}

/// The value of the label `key` (with optional source) in `labels`.
fn value_of<'a>(labels: &'a LabelSet, key: &str) -> Option<&'a str> {
    let (src, k) = split_key(key);
    let label = labels.get(k)?;
    match src {
        Some(s) if s != label.source() => None,
        _ => Some(label.value()),
    }
}

impl Selector {
    /// A selector requiring exactly these labels.
    pub fn labels<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Selector {
            match_labels: pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            match_expressions: Vec::new(),
        }
    }

    /// Whether the selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    /// Whether `labels` satisfy the selector.
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| value_of(labels, k) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| {
                let v = value_of(labels, &r.key);
                match r.operator {
                    Operator::In => v.is_some_and(|v| r.values.iter().any(|x| x == v)),
                    Operator::NotIn => v.is_none_or(|v| r.values.iter().all(|x| x != v)),
                    Operator::Exists => v.is_some(),
                    Operator::DoesNotExist => v.is_none(),
                }
            })
    }

    /// Whether the selector constrains the key (in `matchLabels` or any expression).
    pub fn mentions(&self, key: &str) -> bool {
        let wanted = split_key(key).1;
        self.match_labels.keys().any(|k| split_key(k).1 == wanted)
            || self
                .match_expressions
                .iter()
                .any(|r| split_key(&r.key).1 == wanted)
    }

    /// Adds a `matchLabels` requirement (builder style).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.match_labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Checks the operators' values (In/NotIn need values; Exists/DoesNotExist none).
    pub fn validate(&self) -> Result<(), String> {
        for (i, r) in self.match_expressions.iter().enumerate() {
            let has = !r.values.is_empty();
            match r.operator {
                Operator::In | Operator::NotIn if !has => {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} needs values",
                        r.operator
                    ));
                }
                Operator::Exists | Operator::DoesNotExist if has => {
                    return Err(format!(
                        "matchExpressions[{i}]: {:?} takes no values",
                        r.operator
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Prints `key=value,...` and expressions, for messages.
impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self
            .match_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for r in &self.match_expressions {
            parts.push(format!("{} {:?} {:?}", r.key, r.operator, r.values));
        }
        if parts.is_empty() {
            f.write_str("{}")
        } else {
            f.write_str(&parts.join(","))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> LabelSet {
        LabelSet::parse_list(items).unwrap()
    }

    #[test]
    fn keys_with_and_without_source() {
        let l = set(&["k8s:app=web", "k8s:io.kubernetes.pod.namespace=x"]);
        assert!(Selector::labels([("app", "web")]).matches(&l));
        assert!(Selector::labels([("k8s:app", "web")]).matches(&l));
        assert!(Selector::labels([("any:app", "web")]).matches(&l));
        assert!(!Selector::labels([("container:app", "web")]).matches(&l));
        assert!(Selector::labels([("io.kubernetes.pod.namespace", "x")]).matches(&l));
        assert!(Selector::default().matches(&l));
    }

    #[test]
    fn expressions() {
        let l = set(&["k8s:app=web", "k8s:tier=front"]);
        let expr = |op, vals: &[&str]| Selector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![Requirement {
                key: "tier".into(),
                operator: op,
                values: vals.iter().map(|s| s.to_string()).collect(),
            }],
        };
        assert!(expr(Operator::In, &["front", "back"]).matches(&l));
        assert!(!expr(Operator::NotIn, &["front"]).matches(&l));
        assert!(expr(Operator::Exists, &[]).matches(&l));
        assert!(!expr(Operator::DoesNotExist, &[]).matches(&l));
        assert!(expr(Operator::NotIn, &["x"]).matches(&set(&["k8s:app=a"])));
        assert!(expr(Operator::In, &[]).validate().is_err());
        assert!(expr(Operator::Exists, &["a"]).validate().is_err());
    }
}
