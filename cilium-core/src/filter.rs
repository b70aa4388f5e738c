// SPDX-License-Identifier: Apache-2.0

//! The label filter: which labels count for a workload's identity.
//!
//! Cilium keeps only *identity-relevant* labels when it allocates an identity; the others
//! become information labels. Each rule (a *label prefix*) is `[source:][!]regex`: the regex
//! must match at the start of the label key, `!` makes it an ignore rule, and an empty source
//! (or `any`) matches every source. A label is kept when
//! - the longest matching include rule is longer than the shortest matching ignore rule, or
//! - no include rule was configured by the user and no ignore rule matches.
//!
//! The default rules are Cilium's (`reserved:.*`, `io.kubernetes.pod.namespace`,
//! `io.cilium.k8s.namespace.labels`, `app.kubernetes.io`, `io.cilium.k8s.policy.cluster`
//! kept; `io.kubernetes`, `kubernetes.io`, `.*beta.kubernetes.io`, `k8s.io`,
//! `pod-template-generation`, `pod-template-hash`, `controller-revision-hash`, `annotation.*`,
//! `etcd_node` and the StatefulSet/Job index labels ignored).
//!
//! ```
//! use cilium_core::{LabelFilter, LabelSet};
//! let pod = LabelSet::parse_list(&[
//!     "k8s:app=webpod",
//!     "k8s:pod-template-hash=84755789dd",
//!     "k8s:io.kubernetes.pod.namespace=default",
//! ]).unwrap();
//! let (identity, info) = LabelFilter::default().filter(&pod);
//! assert_eq!(identity.to_string(), "k8s:app=webpod;k8s:io.kubernetes.pod.namespace=default;");
//! assert_eq!(info.to_string(), "k8s:pod-template-hash=84755789dd;");
//! ```

use std::fmt;

use regex::Regex;
use serde::Deserialize;

use crate::labels::{LabelSet, keys, source};
use crate::{CoreError, Label};

/// One filter rule.
#[derive(Debug, Clone)]
pub struct LabelPrefix {
    source: String,
    prefix: String,
    ignore: bool,
    expr: Regex,
}

impl LabelPrefix {
    /// Parses `[source:][!]regex`.
    ///
    /// ```
    /// use cilium_core::LabelPrefix;
    /// let p = LabelPrefix::parse("k8s:!io\\.kubernetes").unwrap();
    /// assert!(p.is_ignore());
    /// assert_eq!(p.to_string(), "!k8s:io\\.kubernetes");
    /// assert!(LabelPrefix::parse("k8s:").is_err());
    /// assert!(LabelPrefix::parse("a(b").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let (src, prefix) = match text.split_once(':') {
            Some((s, p)) => (s, p),
            None => ("", text),
        };
        Self::build(text, src, prefix, false)
    }

    fn build(text: &str, src: &str, prefix: &str, ignore: bool) -> Result<Self, CoreError> {
        let (ignore, prefix) = match prefix.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (ignore, prefix),
        };
        if prefix.is_empty() {
            return Err(CoreError::InvalidLabelPrefix {
                input: text.to_owned(),
                reason: "empty prefix".to_owned(),
            });
        }
        let expr = Regex::new(prefix).map_err(|e| CoreError::InvalidLabelPrefix {
            input: text.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(LabelPrefix {
            source: src.to_owned(),
            prefix: prefix.to_owned(),
            ignore,
            expr,
        })
    }

    /// Whether this rule ignores (rather than includes) the labels it matches.
    pub fn is_ignore(&self) -> bool {
        self.ignore
    }

    /// If the rule matches the label, the length of the matched part of the key.
    pub fn matches(&self, label: &Label) -> Option<usize> {
        if !self.source.is_empty() && self.source != source::ANY && self.source != label.source() {
            return None;
        }
        // Leftmost-first match, accepted only at the start of the key (as Go's
        // FindStringIndex followed by a check of the start offset).
        let m = self.expr.find(label.key())?;
        (m.start() == 0).then_some(m.end())
    }
}

/// Prints `[!]source:prefix`, as Cilium logs its rules.
impl fmt::Display for LabelPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ignore {
            f.write_str("!")?;
        }
        write!(f, "{}:{}", self.source, self.prefix)
    }
}

/// A set of [`LabelPrefix`] rules.
#[derive(Debug, Clone)]
pub struct LabelFilter {
    prefixes: Vec<LabelPrefix>,
    /// Set when the user gave at least one include rule: then a label must match an include
    /// rule to be kept.
    whitelist: bool,
}

/// The regexes of Cilium's default rules (`!` = ignore).
const DEFAULT_RULES: &[&str] = &[
    "reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    r"!pod-template-generation",
    r"!pod-template-hash",
    r"!controller-revision-hash",
    r"!annotation.*",
    r"!etcd_node",
];

impl Default for LabelFilter {
    /// Cilium's default rules.
    fn default() -> Self {
        let prefixes = DEFAULT_RULES
            .iter()
            .map(|rule| LabelPrefix::parse(rule).expect("default label rules are valid"))
            .collect();
        // Keep the named constants and the rule list in step.
        debug_assert!(DEFAULT_RULES[1].replace('\\', "") == keys::POD_NAMESPACE);
        LabelFilter {
            prefixes,
            whitelist: false,
        }
    }
}

/// The JSON label prefix file Cilium reads with `--label-prefix-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixFile {
    version: u64,
    #[serde(rename = "valid-prefixes", default)]
    valid_prefixes: Vec<PrefixFileEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrefixFileEntry {
    #[serde(default)]
    invert: bool,
    prefix: String,
    source: String,
}

impl LabelFilter {
    /// Cilium's default rules plus the user's (`--label` values): any user include rule
    /// turns the filter into an allow list.
    ///
    /// ```
    /// use cilium_core::{LabelFilter, LabelSet};
    /// let f = LabelFilter::with_user_prefixes(["k8s:app"]).unwrap();
    /// let pod = LabelSet::parse_list(&["k8s:app=web", "k8s:tier=front"]).unwrap();
    /// assert_eq!(f.filter(&pod).0.to_string(), "k8s:app=web;");
    /// ```
    pub fn with_user_prefixes<I, S>(prefixes: I) -> Result<Self, CoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut filter = LabelFilter::default();
        filter.add_user_prefixes(prefixes)?;
        Ok(filter)
    }

    /// Replaces the default rules by those of a label prefix file (JSON, version 1:
    /// `{"version":1,"valid-prefixes":[{"source":"k8s","prefix":"app","invert":false}]}`),
    /// then adds the user's rules.
    pub fn from_prefix_file<I, S>(json: &str, user: I) -> Result<Self, CoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let file: PrefixFile =
            serde_json::from_str(json).map_err(|e| CoreError::InvalidLabelPrefix {
                input: "label prefix file".to_owned(),
                reason: e.to_string(),
            })?;
        if file.version != 1 {
            return Err(CoreError::UnsupportedPrefixFileVersion {
                version: file.version,
            });
        }
        let mut filter = LabelFilter {
            prefixes: Vec::new(),
            whitelist: false,
        };
        for entry in &file.valid_prefixes {
            let text = format!("{}:{}", entry.source, entry.prefix);
            if entry.source.is_empty() {
                return Err(CoreError::InvalidLabelPrefix {
                    input: text,
                    reason: "empty source".to_owned(),
                });
            }
            let p = LabelPrefix::build(&text, &entry.source, &entry.prefix, entry.invert)?;
            filter.whitelist |= !p.ignore;
            filter.prefixes.push(p);
        }
        filter.add_user_prefixes(user)?;
        Ok(filter)
    }

    fn add_user_prefixes<I, S>(&mut self, prefixes: I) -> Result<(), CoreError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut added = Vec::new();
        for p in prefixes {
            let p = p.as_ref();
            if p.is_empty() {
                continue;
            }
            added.push(LabelPrefix::parse(p)?);
        }
        for p in added {
            self.whitelist |= !p.ignore;
            self.prefixes.push(p);
        }
        Ok(())
    }

    /// The rules, in order.
    pub fn prefixes(&self) -> &[LabelPrefix] {
        &self.prefixes
    }

    /// Whether this one label counts for identity.
    pub fn is_identity_relevant(&self, label: &Label) -> bool {
        let mut included = 0usize;
        let mut ignored = 0usize;
        for p in &self.prefixes {
            if let Some(len) = p.matches(label) {
                if p.ignore {
                    if ignored == 0 || len < ignored {
                        ignored = len;
                    }
                } else if len > included {
                    included = len;
                }
            }
        }
        (!self.whitelist && ignored == 0) || included > ignored
    }

    /// Splits labels into (identity labels, information labels).
    pub fn filter(&self, labels: &LabelSet) -> (LabelSet, LabelSet) {
        let mut identity = LabelSet::new();
        let mut info = LabelSet::new();
        for l in labels {
            if self.is_identity_relevant(l) {
                identity.insert(l.clone());
            } else {
                info.insert(l.clone());
            }
        }
        (identity, info)
    }
}

/// Whether the source is one Cilium treats as node-local (CIDR, FQDN, CIDR group).
pub fn is_local_source(src: &str) -> bool {
    matches!(src, source::CIDR | source::FQDN | source::CIDR_GROUP)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(f: &LabelFilter, l: &str) -> bool {
        f.is_identity_relevant(&l.parse().unwrap())
    }

    #[test]
    fn default_rules_as_cilium() {
        let f = LabelFilter::default();
        for kept in [
            "reserved:host",
            "k8s:app=curl",
            "k8s:io.kubernetes.pod.namespace=default",
            "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=default",
            "k8s:io.cilium.k8s.policy.cluster=default",
            "k8s:io.cilium.k8s.policy.serviceaccount=default",
            "k8s:app.kubernetes.io/name=web",
            "container:foo=bar",
        ] {
            assert!(keep(&f, kept), "{kept} should be kept");
        }
        for dropped in [
            "k8s:io.kubernetes.pod.name=x",
            "k8s:kubernetes.io/hostname=n1",
            "k8s:beta.kubernetes.io/arch=amd64",
            "k8s:failure-domain.beta.kubernetes.io/zone=a",
            "k8s:k8s.io/x=y",
            "k8s:pod-template-hash=abc",
            "k8s:pod-template-generation=1",
            "k8s:controller-revision-hash=1",
            "k8s:annotation.foo=bar",
            "k8s:etcd_node=x",
            "k8s:statefulset.kubernetes.io/pod-name=db-0",
            "k8s:apps.kubernetes.io/pod-index=0",
            "k8s:batch.kubernetes.io/job-completion-index=3",
        ] {
            assert!(!keep(&f, dropped), "{dropped} should be dropped");
        }
    }

    #[test]
    fn user_include_makes_allow_list() {
        let f = LabelFilter::with_user_prefixes(["k8s:app", "", "k8s:!app.secret"]).unwrap();
        assert!(keep(&f, "k8s:app=x"));
        assert!(keep(&f, "reserved:host"));
        assert!(!keep(&f, "k8s:tier=x"));
        // The longer include wins over the shorter ignore, and the reverse.
        assert!(!keep(&f, "k8s:app.secret=1"));
        let f = LabelFilter::with_user_prefixes(["k8s:!foo", "k8s:foo.bar"]).unwrap();
        assert!(keep(&f, "k8s:foo.bar=1"));
        assert!(!keep(&f, "k8s:foo.baz=1"));
        // Source-specific rules do not touch other sources.
        assert!(!keep(&f, "container:tier=1"));
        let f = LabelFilter::with_user_prefixes(["any:!tier"]).unwrap();
        assert!(!keep(&f, "container:tier=1"));
        assert!(!keep(&f, "k8s:tier=1"));
    }

    #[test]
    fn bad_rules_change_nothing() {
        assert!(LabelFilter::with_user_prefixes(["k8s:app", "k8s:(("]).is_err());
        assert!(LabelFilter::with_user_prefixes(["k8s:!"]).is_err());
    }

    #[test]
    fn prefix_file() {
        let f = LabelFilter::from_prefix_file(
            r#"{"version":1,"valid-prefixes":[{"source":"reserved","prefix":".*"},{"source":"k8s","prefix":"app"}]}"#,
            ["k8s:tier"],
        )
        .unwrap();
        assert!(keep(&f, "k8s:app=1"));
        assert!(keep(&f, "k8s:tier=1"));
        assert!(!keep(&f, "k8s:io.kubernetes.pod.namespace=x"));
        assert!(matches!(
            LabelFilter::from_prefix_file(r#"{"version":2}"#, [""; 0]),
            Err(CoreError::UnsupportedPrefixFileVersion { version: 2 })
        ));
        assert!(
            LabelFilter::from_prefix_file(
                r#"{"version":1,"valid-prefixes":[{"source":"","prefix":"a"}]}"#,
                [""; 0]
            )
            .is_err()
        );
    }
}
