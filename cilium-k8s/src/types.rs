// SPDX-License-Identifier: Apache-2.0

//! Typed `cilium.io/v2` objects, the fields this project reads and writes, with upstream's
//! JSON names. Each implements [`kube::Resource`], so `kube::Api` and the
//! [`Informer`](crate::watch::Informer) take them. Fields this project does not know are
//! not kept: these types are for the objects Cilium's own components write, and a decoder
//! in front of a consumer checks what it relies on.
//!
//! ```
//! use cilium_k8s::types::CiliumIdentity;
//! let id = CiliumIdentity::new(12345, [("k8s:app".to_owned(), "web".to_owned())].into());
//! let json = serde_json::to_value(&id).unwrap();
//! assert_eq!(json["apiVersion"], "cilium.io/v2");
//! assert_eq!(json["metadata"]["name"], "12345");
//! assert_eq!(json["security-labels"]["k8s:app"], "web");
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// Implements [`kube::Resource`] for a `cilium.io/v2` type with a `metadata` field.
macro_rules! cilium_resource {
    ($ty:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl kube::Resource for $ty {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }

            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(crate::crds::GROUP)
            }

            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed(crate::crds::VERSION)
            }

            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }

            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

fn api_version() -> String {
    format!("{}/{}", crate::crds::GROUP, crate::crds::VERSION)
}

/// A security identity in `identity-allocation-mode=crd`: the object's name is the
/// number, `security-labels` the label set (`source:key` -> value), `metadata.labels` the
/// `k8s:` labels that are valid Kubernetes labels (upstream's sanitised copy, which the
/// Namespace printer column reads).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CiliumIdentity {
    /// `cilium.io/v2`.
    #[serde(rename = "apiVersion", default = "api_version")]
    pub api_version: String,
    /// `CiliumIdentity`.
    #[serde(default = "identity_kind")]
    pub kind: String,
    /// Name (the number), labels, annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The identity's labels, `source:key` -> value.
    #[serde(rename = "security-labels", default)]
    pub security_labels: BTreeMap<String, String>,
}

fn identity_kind() -> String {
    "CiliumIdentity".into()
}

cilium_resource!(
    CiliumIdentity,
    "CiliumIdentity",
    "ciliumidentities",
    k8s_openapi::ClusterResourceScope
);

impl CiliumIdentity {
    /// The object for identity `id` with `security_labels`, its `metadata.labels` the
    /// valid Kubernetes labels among the `k8s:` ones (as upstream sanitises them).
    pub fn new(id: u32, security_labels: BTreeMap<String, String>) -> Self {
        let mut metadata = ObjectMeta {
            name: Some(id.to_string()),
            ..ObjectMeta::default()
        };
        metadata.labels = Some(sanitize_k8s_labels(&security_labels));
        CiliumIdentity {
            api_version: api_version(),
            kind: identity_kind(),
            metadata,
            security_labels,
        }
    }
}

/// The `k8s:`-source labels of a `source:key` -> value map whose key and value are valid
/// Kubernetes label keys and values, with the source removed (upstream's
/// `SanitizeK8sLabels`).
pub fn sanitize_k8s_labels(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("k8s:")?;
            (is_qualified_name(key) && is_label_value(v)).then(|| (key.to_owned(), v.clone()))
        })
        .collect()
}

/// A name part of a label key or a label value: at most 63 characters, alphanumeric at
/// both ends, `-`, `_` and `.` inside.
fn is_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS subdomain (RFC 1123): at most 253 characters, lower-case labels of alphanumerics
/// and `-` joined by dots.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            let b = l.as_bytes();
            !b.is_empty()
                && b.len() <= 63
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// A valid label key: `[prefix/]name`, the prefix a DNS subdomain.
pub fn is_qualified_name(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    }
}

/// A valid label value: empty, or a name part.
pub fn is_label_value(value: &str) -> bool {
    value.is_empty() || is_name_part(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_and_values_as_kubernetes_validates_them() {
        for good in [
            "app",
            "io.kubernetes.pod.namespace",
            "app.kubernetes.io/name",
            "a",
        ] {
            assert!(is_qualified_name(good), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "x/",
            "/x",
            "UP.per/x",
            "a b",
            &"a".repeat(64),
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        assert!(is_label_value(""));
        assert!(!is_label_value("a;b"));
    }

    #[test]
    fn sanitising_keeps_valid_k8s_labels_without_their_source() {
        let labels: BTreeMap<String, String> = [
            ("k8s:app", "web"),
            ("k8s:io.kubernetes.pod.namespace", "default"),
            ("reserved:host", ""),
            ("k8s:bad key", "x"),
            ("k8s:ok", "not valid!"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let out = sanitize_k8s_labels(&labels);
        assert_eq!(
            out.into_iter().collect::<Vec<_>>(),
            [
                ("app".to_owned(), "web".to_owned()),
                (
                    "io.kubernetes.pod.namespace".to_owned(),
                    "default".to_owned()
                )
            ]
        );
    }

    #[test]
    fn an_identity_reads_back_from_upstream_json() {
        let json = r#"{"apiVersion":"cilium.io/v2","kind":"CiliumIdentity",
            "metadata":{"name":"6547","labels":{"app":"webpod"}},
            "security-labels":{"k8s:app":"webpod","k8s:io.kubernetes.pod.namespace":"default"}}"#;
        let id: CiliumIdentity = serde_json::from_str(json).unwrap();
        assert_eq!(id.metadata.name.as_deref(), Some("6547"));
        assert_eq!(id.security_labels["k8s:app"], "webpod");
    }
}
