// SPDX-License-Identifier: Apache-2.0

//! Cilium's custom resource definitions (`cilium.io/v2`), as this project ships them
//! (`cilium-k8s/crds/*.yaml`): upstream's group, version, kinds, scopes, short names,
//! categories, status subresources and printer columns, and schemas of the fields Cilium
//! writes and reads. Each carries upstream's schema-version label
//! ([`SCHEMA_VERSION_LABEL`]), which an operator compares before it upgrades a definition.
//!
//! ```
//! let cep = cilium_k8s::crds::find("CiliumEndpoint").unwrap();
//! assert_eq!(cep.name, "ciliumendpoints.cilium.io");
//! assert_eq!(cep.short_names, ["cep", "ciliumep"]);
//! let object = cep.object().unwrap();
//! assert_eq!(object["spec"]["scope"], "Namespaced");
//! ```

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use serde_json::Value;

use crate::Error;

/// The API group.
pub const GROUP: &str = "cilium.io";
/// The version served and stored.
pub const VERSION: &str = "v2";
/// The label naming a definition's schema version (upstream's key).
pub const SCHEMA_VERSION_LABEL: &str = "io.cilium.k8s.crd.schema.version";
/// The schema version these manifests carry.
pub const SCHEMA_VERSION: &str = "1.34.2";

/// One custom resource definition.
#[derive(Debug, Clone, Copy)]
pub struct Crd {
    /// `<plural>.cilium.io`.
    pub name: &'static str,
    /// The kind (`CiliumEndpoint`).
    pub kind: &'static str,
    /// The plural resource name (`ciliumendpoints`).
    pub plural: &'static str,
    /// Short names kubectl accepts (`cep`).
    pub short_names: &'static [&'static str],
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// The manifest (YAML).
    pub yaml: &'static str,
}

impl Crd {
    /// The manifest as a JSON value (what the API takes).
    pub fn object(&self) -> Result<Value, Error> {
        serde_norway::from_str(self.yaml)
            .map_err(|e| Error::Manifest(format!("{}: {e}", self.name)))
    }
}

/// The five definitions.
pub const ALL: [Crd; 5] = [
    Crd {
        name: "ciliumnodes.cilium.io",
        kind: "CiliumNode",
        plural: "ciliumnodes",
        short_names: &["cn", "ciliumn"],
        namespaced: false,
        yaml: include_str!("../crds/ciliumnodes.yaml"),
    },
    Crd {
        name: "ciliumendpoints.cilium.io",
        kind: "CiliumEndpoint",
        plural: "ciliumendpoints",
        short_names: &["cep", "ciliumep"],
        namespaced: true,
        yaml: include_str!("../crds/ciliumendpoints.yaml"),
    },
    Crd {
        name: "ciliumidentities.cilium.io",
        kind: "CiliumIdentity",
        plural: "ciliumidentities",
        short_names: &["ciliumid"],
        namespaced: false,
        yaml: include_str!("../crds/ciliumidentities.yaml"),
    },
    Crd {
        name: "ciliumnetworkpolicies.cilium.io",
        kind: "CiliumNetworkPolicy",
        plural: "ciliumnetworkpolicies",
        short_names: &["cnp", "ciliumnp"],
        namespaced: true,
        yaml: include_str!("../crds/ciliumnetworkpolicies.yaml"),
    },
    Crd {
        name: "ciliumclusterwidenetworkpolicies.cilium.io",
        kind: "CiliumClusterwideNetworkPolicy",
        plural: "ciliumclusterwidenetworkpolicies",
        short_names: &["ccnp"],
        namespaced: false,
        yaml: include_str!("../crds/ciliumclusterwidenetworkpolicies.yaml"),
    },
];

/// The definition of `kind`.
pub fn find(kind: &str) -> Option<&'static Crd> {
    ALL.iter().find(|c| c.kind == kind)
}

/// Every manifest in one multi-document YAML stream (`kubectl apply -f -`).
pub fn all_yaml() -> String {
    ALL.iter()
        .map(|c| c.yaml.trim_end())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// What [`register`] did with one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// It was not in the cluster: created.
    Created,
    /// The cluster's was older (or had no schema or version label): replaced.
    Upgraded,
    /// The cluster's is this version or newer: left alone.
    UpToDate,
}

/// A `major.minor.patch` version.
fn semver(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v.trim_start_matches('v').splitn(3, '.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    let patch = parts.next()?.split(['-', '+']).next()?.parse().ok()?;
    Some((major, minor, patch))
}

/// Whether the cluster's definition must be replaced by ours, as Cilium's operator decides:
/// no schema, no (or an unreadable) schema-version label, or a lower version than ours.
pub fn needs_update(current: &CustomResourceDefinition) -> bool {
    let no_schema = current.spec.versions.first().is_none_or(|v| {
        v.schema
            .as_ref()
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .is_none()
    });
    let theirs = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(SCHEMA_VERSION_LABEL))
        .and_then(|v| semver(v));
    match (no_schema, theirs, semver(SCHEMA_VERSION)) {
        (true, _, _) | (_, None, _) => true,
        (false, Some(theirs), Some(ours)) => theirs < ours,
        (false, Some(_), None) => false,
    }
}

fn api_error(what: &str, e: &kube::Error) -> Error {
    Error::Api(format!("{what}: {e}"))
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Creates or upgrades every definition and waits until each is established, as Cilium's
/// operator does at start: a newer definition in the cluster is left alone (no downgrade);
/// a race with another writer (conflict, already exists) is retried; a name conflict is an
/// error. Gives up after `timeout` per definition.
pub async fn register(
    client: &kube::Client,
    timeout: Duration,
) -> Result<Vec<(&'static str, Registered)>, Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for crd in &ALL {
        let desired: CustomResourceDefinition = serde_json::from_value(crd.object()?)
            .map_err(|e| Error::Manifest(format!("{}: {e}", crd.name)))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let outcome = loop {
            let step = match api.get_opt(crd.name).await {
                Err(e) => Err(e),
                Ok(None) => api
                    .create(&PostParams::default(), &desired)
                    .await
                    .map(|_| Registered::Created),
                Ok(Some(current)) if !needs_update(&current) => Ok(Registered::UpToDate),
                Ok(Some(current)) => {
                    let mut next = desired.clone();
                    next.metadata.resource_version = current.metadata.resource_version.clone();
                    api.replace(crd.name, &PostParams::default(), &next)
                        .await
                        .map(|_| Registered::Upgraded)
                }
            };
            match step {
                Ok(r) => break r,
                // Another operator got there first: look again.
                Err(e) if is_status(&e, 409) => {}
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(api_error(crd.name, &e));
                }
                Err(_) => {}
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Api(format!(
                    "{}: not registered in {timeout:?}",
                    crd.name
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        wait_established(&api, crd.name, deadline).await?;
        out.push((crd.name, outcome));
    }
    Ok(out)
}

async fn wait_established(
    api: &Api<CustomResourceDefinition>,
    name: &str,
    deadline: tokio::time::Instant,
) -> Result<(), Error> {
    loop {
        let crd = api.get(name).await.map_err(|e| api_error(name, &e))?;
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        for c in &conditions {
            if c.type_ == "Established" && c.status == "True" {
                return Ok(());
            }
            if c.type_ == "NamesAccepted" && c.status == "False" {
                return Err(Error::Api(format!(
                    "{name}: name conflict: {}",
                    c.reason.as_deref().unwrap_or("names not accepted")
                )));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Api(format!("{name}: not established in time")));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_agree_with_their_table_entries() {
        for crd in ALL {
            let o = crd.object().unwrap();
            assert_eq!(o["kind"], "CustomResourceDefinition");
            assert_eq!(o["metadata"]["name"], crd.name);
            assert_eq!(
                o["metadata"]["labels"][SCHEMA_VERSION_LABEL], SCHEMA_VERSION,
                "{}",
                crd.name
            );
            let spec = &o["spec"];
            assert_eq!(spec["group"], GROUP);
            assert_eq!(spec["names"]["kind"], crd.kind);
            assert_eq!(spec["names"]["listKind"], format!("{}List", crd.kind));
            assert_eq!(spec["names"]["plural"], crd.plural);
            assert_eq!(crd.name, format!("{}.{GROUP}", crd.plural));
            let shorts: Vec<&str> = spec["names"]["shortNames"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(shorts, crd.short_names);
            let scope = if crd.namespaced {
                "Namespaced"
            } else {
                "Cluster"
            };
            assert_eq!(spec["scope"], scope);
            let versions = spec["versions"].as_array().unwrap();
            assert_eq!(versions.len(), 1);
            assert_eq!(versions[0]["name"], VERSION);
            assert_eq!(versions[0]["storage"], true);
            // Upstream: every kind but CiliumEndpoint has a status subresource.
            let status = versions[0]["subresources"].get("status").is_some();
            assert_eq!(status, crd.kind != "CiliumEndpoint", "{}", crd.name);
            assert_eq!(
                versions[0]["schema"]["openAPIV3Schema"]["type"], "object",
                "{}",
                crd.name
            );
        }
    }

    #[test]
    fn endpoint_columns_are_upstreams() {
        let o = find("CiliumEndpoint").unwrap().object().unwrap();
        let cols: Vec<(String, i64)> = o["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_owned(),
                    c["priority"].as_i64().unwrap_or(0),
                )
            })
            .collect();
        let want = [
            ("Security Identity", 0),
            ("Ingress Enforcement", 1),
            ("Egress Enforcement", 1),
            ("Endpoint State", 0),
            ("IPv4", 0),
            ("IPv6", 0),
        ];
        assert_eq!(cols, want.map(|(n, p)| (n.to_owned(), p)).to_vec());
    }

    #[test]
    fn versions_compare_as_cilium_compares_them() {
        assert_eq!(semver("1.34.2"), Some((1, 34, 2)));
        assert_eq!(semver("v1.9.10-rc1"), Some((1, 9, 10)));
        assert_eq!(semver("1.34"), None);
        let mut crd: CustomResourceDefinition =
            serde_json::from_value(find("CiliumNode").unwrap().object().unwrap()).unwrap();
        assert!(!needs_update(&crd), "our own version is up to date");
        let label = |crd: &mut CustomResourceDefinition, v: &str| {
            crd.metadata
                .labels
                .get_or_insert_default()
                .insert(SCHEMA_VERSION_LABEL.into(), v.into());
        };
        label(&mut crd, "1.33.11");
        assert!(needs_update(&crd));
        label(&mut crd, "1.34.10");
        assert!(!needs_update(&crd), "a newer one is not downgraded");
        label(&mut crd, "garbage");
        assert!(needs_update(&crd));
        crd.metadata.labels = None;
        assert!(needs_update(&crd));
        label(&mut crd, SCHEMA_VERSION);
        crd.spec.versions[0].schema = None;
        assert!(needs_update(&crd), "no schema");
    }

    #[test]
    fn the_stream_holds_every_manifest() {
        let all = all_yaml();
        assert_eq!(all.matches("\n---\n").count(), ALL.len() - 1);
        for crd in ALL {
            assert!(all.contains(&format!("name: {}", crd.name)));
        }
    }
}
