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
    fn the_stream_holds_every_manifest() {
        let all = all_yaml();
        assert_eq!(all.matches("\n---\n").count(), ALL.len() - 1);
        for crd in ALL {
            assert!(all.contains(&format!("name: {}", crd.name)));
        }
    }
}
