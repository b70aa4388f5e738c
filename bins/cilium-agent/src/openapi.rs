// SPDX-License-Identifier: Apache-2.0

//! `GET /v1/openapi.json`: the API as a contract (OpenAPI 3.1). Every path parameter, query
//! parameter and request body says what its handler enforces (types, formats, patterns,
//! enums, required fields), and every operation lists every status its handler can return,
//! errors being Cilium's `Error` model (a JSON string). What JSON Schema cannot state (a
//! backend listed twice, an `except` outside its CIDR, an `endPort` below its port) is in
//! the descriptions. `tests/schemathesis.rs` runs schemathesis against it.

use cilium_core::NumericIdentity;
use cilium_core::config::AgentConfig;
use serde_json::{Map, Value, json};

/// Characters a label key or value may never hold: `;` and control characters (`=` too in
/// a key), as [`cilium_core::labels::Label`] checks them.
const CONTROL: &str = r"\u0000-\u001f\u007f-\u009f";

/// A label key of `Label::k8s` (Kubernetes' labels of a pod record).
fn label_key() -> String {
    format!("^[^=;{CONTROL}]+$")
}

/// A label value of `Label::k8s`.
fn label_value() -> String {
    format!("^[^;{CONTROL}]*$")
}

/// A label in Cilium's text form as `Label::from_str` parses it: `$key[=value]`
/// (reserved), `source:key[=value]`, or `key[=value]` (no `:` before the first `=`).
fn label_text() -> String {
    let key = format!("[^=;{CONTROL}]");
    let value = format!("(=[^;{CONTROL}]*)?");
    format!(
        r"^(\${key}+{value}|[^:=;$][^:=;]*:{key}+{value}|[^:=;${CONTROL}][^:=;{CONTROL}]*{value})$"
    )
}

/// An IPv4 octet without leading zeros, as Rust and Python parse addresses.
const OCTET: &str = "(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";

/// A number 0-65535 as Rust's `u16`/`u32` parsers take it (leading zeros allowed).
const PORT_TEXT: &str =
    r"^\+?0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})$";

/// The protocols of cilium-lb (`TCP`, `UDP`, `SCTP`, `ANY`), in any case.
const L4_ANY: &str = "^([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp]|[Aa][Nn][Yy])$";

/// The protocols of a NetworkPolicy port (`TCP`, `UDP`, `SCTP`), in any case.
const L4_K8S: &str = "^([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp])$";

/// A Kubernetes DNS-1123 label (a namespace).
pub(crate) const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A Kubernetes DNS-1123 subdomain (a pod or service account name).
pub(crate) const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn or_null(schema: Value) -> Value {
    json!({"anyOf": Value::Array(vec![schema, json!({"type": "null"})])})
}

fn error(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": schema_ref("Error")}},
    })
}

fn ok(description: &str, schema: Value) -> Value {
    let mut response = json!({"description": description});
    response["content"]["application/json"]["schema"] = schema;
    response
}

/// The 503 of every handler that needs the node state.
const NO_NODE: &str = "The agent was started without node state";

fn responses(list: Vec<(&str, Value)>) -> Value {
    Value::Object(
        list.into_iter()
            .map(|(code, r)| (code.to_owned(), r))
            .collect::<Map<_, _>>(),
    )
}

fn path_param(name: &str, description: &str, schema: Value) -> Value {
    let mut param =
        json!({"name": name, "in": "path", "required": true, "description": description});
    param["schema"] = schema;
    param
}

fn body(description: &str, schema: Value) -> Value {
    let mut body = json!({"description": description, "required": true});
    body["content"]["application/json"]["schema"] = schema;
    body
}

/// The document, for an agent with this configuration (the monitor aggregation level a
/// `PATCH /config` may repeat is the one in force).
pub(crate) fn document(config: &AgentConfig) -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "cilium-rs agent API",
            "version": crate::VERSION,
            "description": "Cilium's agent REST API (basePath /v1) on the agent's unix socket. \
                Errors are Cilium's Error model: the message as a JSON string. A refused \
                request (4xx) changes nothing.",
        },
        "servers": [{"url": "/v1"}],
        "paths": paths(),
        "components": {"schemas": schemas(config)},
    })
}

fn paths() -> Value {
    let mut paths = Map::new();
    for (path, item) in [
        ("/healthz", status_paths()),
        ("/config", config_paths()),
        (
            "/openapi.json",
            json!({"get": {
                "summary": "This document",
                "responses": responses(vec![("200", ok("OpenAPI 3.1", json!({"type": "object"})))]),
            }}),
        ),
        ("/endpoint", endpoint_list()),
        ("/endpoint/{id}", endpoint_paths()),
        ("/ipam", ipam_allocate()),
        ("/ipam/{ip}", ipam_release()),
        ("/identity", identity_list()),
        ("/identity/{id}", identity_get()),
        ("/pod/{namespace}/{name}", pod_put()),
        ("/policy", policy_paths()),
        ("/service", service_list()),
        ("/service/{id}", service_paths()),
        ("/map", map_list()),
        ("/map/{name}", map_get()),
        ("/ip", ip_list()),
        ("/cluster/nodes", cluster_nodes()),
        ("/metrics/", metrics()),
    ] {
        paths.insert(path.to_owned(), item);
    }
    // Cilium's operation ids where Cilium has the operation.
    for (path, method, id) in [
        ("/healthz", "get", "GetHealthz"),
        ("/config", "get", "GetConfig"),
        ("/config", "patch", "PatchConfig"),
        ("/openapi.json", "get", "GetOpenapi"),
        ("/endpoint", "get", "GetEndpoint"),
        ("/endpoint/{id}", "get", "GetEndpointID"),
        ("/endpoint/{id}", "put", "PutEndpointID"),
        ("/endpoint/{id}", "delete", "DeleteEndpointID"),
        ("/ipam", "post", "PostIpam"),
        ("/ipam/{ip}", "delete", "DeleteIpamIP"),
        ("/identity", "get", "GetIdentity"),
        ("/identity/{id}", "get", "GetIdentityID"),
        ("/pod/{namespace}/{name}", "put", "PutPod"),
        ("/policy", "get", "GetPolicy"),
        ("/policy", "put", "PutPolicy"),
        ("/policy", "delete", "DeletePolicy"),
        ("/service", "get", "GetService"),
        ("/service/{id}", "get", "GetServiceID"),
        ("/service/{id}", "put", "PutServiceID"),
        ("/service/{id}", "delete", "DeleteServiceID"),
        ("/map", "get", "GetMap"),
        ("/map/{name}", "get", "GetMapName"),
        ("/ip", "get", "GetIP"),
        ("/cluster/nodes", "get", "GetClusterNodes"),
        ("/metrics/", "get", "GetMetrics"),
    ] {
        paths[path][method]["operationId"] = Value::String(id.into());
    }
    Value::Object(paths)
}

/// `links` of a response: operations taking a value of its body.
fn with_links(mut response: Value, links: Value) -> Value {
    response["links"] = links;
    response
}

fn status_paths() -> Value {
    json!({"get": {
        "summary": "Agent status (Cilium's StatusResponse)",
        "responses": responses(vec![("200", ok("StatusResponse", schema_ref("StatusResponse")))]),
    }})
}

fn config_paths() -> Value {
    json!({
        "get": {
            "summary": "Agent configuration (Cilium's DaemonConfiguration)",
            "responses": responses(vec![("200", ok("DaemonConfiguration", schema_ref("DaemonConfiguration")))]),
        },
        "patch": {
            "summary": "Change runtime options (Debug, policy-enforcement); every field is checked before anything changes",
            "requestBody": body("Cilium's DaemonConfigurationSpec, with the fields that can change at run time", schema_ref("ConfigurationPatch")),
            "responses": responses(vec![
                ("200", ok("DaemonConfiguration", schema_ref("DaemonConfiguration"))),
                ("400", error("Not a JSON object, an unknown or read-only field, or a bad value")),
                ("500", error("Applying the policy enforcement mode failed")),
            ]),
        },
    })
}

fn endpoint_id() -> Value {
    json!({
        "type": "string",
        "pattern": "^((cilium-local:)?\\+?0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})|container-id:.*|pod-name:[^:/]*[:/].*)$",
    })
}

fn endpoint_list() -> Value {
    json!({"get": {
        "summary": "Every endpoint",
        "responses": responses(vec![
            ("200", ok("Endpoint list", json!({"type": "array", "items": schema_ref("Endpoint")}))),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn endpoint_paths() -> Value {
    let id = path_param(
        "id",
        "<id> (0-65535), cilium-local:<id>, container-id:<container id> or pod-name:<namespace>:<pod> (or <namespace>/<pod>)",
        endpoint_id(),
    );
    json!({
        "get": {
            "summary": "One endpoint",
            "parameters": [id],
            "responses": responses(vec![
                ("200", ok("Endpoint", schema_ref("Endpoint"))),
                ("400", error("Not an endpoint id")),
                ("404", error("No such endpoint")),
                ("503", error(NO_NODE)),
            ]),
        },
        "put": {
            "summary": "Create an endpoint; returns once it is ready",
            "description": "The agent chooses the id: the path's id is 0. The request is checked first (400); an agent without a datapath then answers 503. With one, the address must be in the node's pod CIDR and interface-name a link of the node (else 400), and the container must have no endpoint on that interface yet (else 409).",
            "parameters": [path_param("id", "0 (or cilium-local:0): the agent chooses", json!({"type": "string", "pattern": "^(cilium-local:)?0$"}))],
            "requestBody": body("Cilium's EndpointChangeRequest (fields this agent does not use are ignored)", schema_ref("EndpointChangeRequest")),
            "responses": responses(vec![
                ("201", with_links(ok("Endpoint", schema_ref("Endpoint")), json!({
                    "get": {"operationId": "GetEndpointID", "parameters": {"id": "$response.body#/id"}},
                    "delete": {"operationId": "DeleteEndpointID", "parameters": {"id": "$response.body#/id"}},
                }))),
                ("400", error("Invalid request")),
                ("404", error("The pod does not exist in the Kubernetes API")),
                ("409", error("The address is allocated to another owner, or the container already has this endpoint")),
                ("500", error("Writing the endpoint's datapath or state failed")),
                ("503", error("No datapath (dry mode), no free endpoint id, the Kubernetes API unreachable, or no node state")),
            ]),
        },
        "delete": {
            "summary": "Delete an endpoint (container-id:<id>: every endpoint of the container)",
            "parameters": [id],
            "responses": responses(vec![
                ("200", ok("Deleted", schema_ref("EndpointDeleted"))),
                ("400", error("Not an endpoint id")),
                ("404", error("No such endpoint")),
                ("500", error("Removing the endpoint's state failed")),
                ("503", error(NO_NODE)),
            ]),
        },
    })
}

fn ipam_allocate() -> Value {
    json!({"post": {
        "summary": "Allocate the next free IP for an owner (held until an endpoint claims it or it is released)",
        "parameters": [
            {"name": "owner", "in": "query", "required": true, "schema": {"type": "string", "minLength": 1}},
            {"name": "family", "in": "query", "schema": {"type": "string", "enum": ["ipv4"]}},
        ],
        "responses": responses(vec![
            ("201", with_links(ok("IPAMResponse", schema_ref("IPAMResponse")), json!({
                "release": {"operationId": "DeleteIpamIP", "parameters": {"ip": "$response.body#/ipv4/ip"}},
            }))),
            ("400", error("No owner, or a family other than ipv4")),
            ("503", error("The pool is exhausted, or no node state")),
        ]),
    }})
}

fn ipam_release() -> Value {
    json!({"delete": {
        "summary": "Release an IP no endpoint uses",
        "parameters": [path_param("ip", "An IPv4 address", json!({"type": "string", "format": "ipv4"}))],
        "responses": responses(vec![
            ("200", ok("Released", json!({"type": "object", "required": ["released"], "properties": {"released": {"type": "string"}}}))),
            ("400", error("Not an IPv4 address")),
            ("404", error("Not allocated")),
            ("409", error("Used by an endpoint, or the router IP")),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn identity_list() -> Value {
    json!({"get": {
        "summary": "Every identity",
        "responses": responses(vec![
            ("200", ok("Identity list", json!({"type": "array", "items": schema_ref("Identity")}))),
            ("500", error("Reading the identities failed")),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn identity_get() -> Value {
    json!({"get": {
        "summary": "One identity",
        "parameters": [path_param("id", "A numeric identity", json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}))],
        "responses": responses(vec![
            ("200", ok("Identity", schema_ref("Identity"))),
            ("400", error("Not an identity number")),
            ("404", error("No such identity")),
            ("500", error("Reading the identities failed")),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn pod_put() -> Value {
    json!({"put": {
        "summary": "Register a pod record (labels, serviceAccountName), as Kubernetes would hold it",
        "parameters": [
            path_param("namespace", "A DNS-1123 label", json!({"type": "string", "pattern": DNS_LABEL, "maxLength": 63})),
            path_param("name", "A DNS-1123 subdomain", json!({"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253})),
        ],
        "requestBody": body("A Pod object (fields other than these are kept as given)", schema_ref("Pod")),
        "responses": responses(vec![
            ("200", ok("The pod record", schema_ref("Pod"))),
            ("400", error("Not a JSON object, a bad label, or a bad name")),
            ("500", error("Storing the pod failed")),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn policy_paths() -> Value {
    json!({
        "get": {
            "summary": "The imported policy documents",
            "responses": responses(vec![
                ("200", ok("Policy", schema_ref("Policy"))),
                ("500", error("Reading the policies failed")),
                ("503", error(NO_NODE)),
            ]),
        },
        "put": {
            "summary": "Import a CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy or NetworkPolicy document, all or nothing",
            "description": "The body is one document as JSON, or YAML text of one or more documents (`---` between them). A document replaces the one of the same origin (<kind>/<namespace>/<name>). Beyond the schema: every `except` CIDR is inside its CIDR, and an `endPort` is not below its port.",
            "requestBody": body("A policy document", schema_ref("PolicyDocument")),
            "responses": responses(vec![
                ("200", ok("Imported", schema_ref("PolicyImported"))),
                ("400", error("A document does not parse or is invalid (its index and the field's path are named)")),
                ("500", error("Storing or applying the policy failed")),
                ("503", error(NO_NODE)),
            ]),
        },
        "delete": {
            "summary": "Delete policies by origin prefix (origin=<kind>/<namespace>/<name>, or a prefix of it) or all of them (all=true)",
            "parameters": [{
                "name": "filter", "in": "query", "required": true, "style": "form", "explode": true,
                "description": "origin, or all=true (origin wins when both are given)",
                "schema": {
                    "type": "object",
                    "properties": {
                        "origin": {"type": "string", "minLength": 1},
                        "all": {"type": "string", "enum": ["true", "false"]},
                    },
                    "anyOf": [
                        {"required": ["origin"]},
                        {"required": ["all"], "properties": {"all": {"const": "true"}}},
                    ],
                },
            }],
            "responses": responses(vec![
                ("200", ok("Deleted", json!({"type": "object", "required": ["deleted"], "properties": {"deleted": {"type": "array", "items": {"type": "string"}}}}))),
                ("400", error("Neither origin nor all=true, an empty origin, or all not true/false")),
                ("404", error("No policy matches the origin")),
                ("500", error("Deleting or applying failed")),
                ("503", error(NO_NODE)),
            ]),
        },
    })
}

fn service_list() -> Value {
    json!({"get": {
        "summary": "Every service, by id",
        "responses": responses(vec![
            ("200", ok("Service list", json!({"type": "array", "items": schema_ref("Service")}))),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn service_paths() -> Value {
    let id = path_param(
        "id",
        "The service (rev-NAT) id; on PUT, 0: the agent chooses (a new frontend), else the id the frontend has",
        json!({"type": "integer", "minimum": 0, "maximum": u16::MAX}),
    );
    json!({
        "get": {
            "summary": "One service",
            "parameters": [id],
            "responses": responses(vec![
                ("200", ok("Service", schema_ref("Service"))),
                ("400", error("Not a service id")),
                ("404", error("No such service")),
                ("503", error(NO_NODE)),
            ]),
        },
        "put": {
            "summary": "Create (id 0) or update a service; written to the maps before the answer",
            "description": "Beyond the schema: a backend (ip, port, protocol) is listed once. PUT /service/0 creates the frontend's service or updates it; PUT /service/<id> updates service <id>, whose frontend is the body's (404 when there is no service <id>, 409 when its frontend is another).",
            "parameters": [id],
            "requestBody": body("Cilium's ServiceSpec", schema_ref("ServiceSpec")),
            "responses": responses(vec![
                ("200", ok("Updated", schema_ref("Service"))),
                ("201", with_links(ok("Created", schema_ref("Service")), json!({
                    "get": {"operationId": "GetServiceID", "parameters": {"id": "$response.body#/spec/id"}},
                    "delete": {"operationId": "DeleteServiceID", "parameters": {"id": "$response.body#/spec/id"}},
                }))),
                ("400", error("Invalid service")),
                ("404", error("No service has this id")),
                ("409", error("The id's service has another frontend, or no service or backend id is free")),
                ("500", error("Storing or writing the service failed")),
                ("503", error(NO_NODE)),
            ]),
        },
        "delete": {
            "summary": "Delete a service",
            "parameters": [id],
            "responses": responses(vec![
                ("200", ok("Deleted", json!({"type": "object", "required": ["deleted", "frontend"], "properties": {"deleted": {"type": "integer"}, "frontend": {"type": "string"}}}))),
                ("400", error("Not a service id")),
                ("404", error("No such service")),
                ("500", error("Deleting the service failed")),
                ("503", error(NO_NODE)),
            ]),
        },
    })
}

fn map_list() -> Value {
    json!({"get": {
        "summary": "The datapath's pinned maps: type, sizes, entry counts",
        "responses": responses(vec![
            ("200", ok("BPFMapList", json!({"type": "object", "required": ["maps"], "properties": {"maps": {"type": "array"}}}))),
            ("500", error("Reading the maps failed")),
            ("503", error("The agent runs without a datapath (dry mode), or no node state")),
        ]),
    }})
}

fn map_get() -> Value {
    json!({"get": {
        "summary": "One map's entries as key/value text",
        "parameters": [path_param("name", "A map of the datapath", json!({"type": "string", "enum": cilium_bpf::maps::names::ALL}))],
        "responses": responses(vec![
            ("200", ok("BPFMap", json!({"type": "object", "required": ["path", "cache"], "properties": {
                "path": {"type": "string"},
                "cache": {"type": "array", "items": {"type": "object", "properties": {"key": {"type": "string"}, "value": {"type": "string"}}}},
            }}))),
            ("404", error("Not a map of the datapath")),
            ("500", error("Reading the map failed")),
            ("503", error("The agent runs without a datapath (dry mode), or no node state")),
        ]),
    }})
}

fn ip_list() -> Value {
    json!({"get": {
        "summary": "IPs and their identities",
        "responses": responses(vec![
            ("200", ok("IP list", json!({"type": "array", "items": {"type": "object", "required": ["cidr", "identity", "source"], "properties": {
                "cidr": {"type": "string"}, "identity": {"type": "integer"}, "source": {"type": "string"},
            }}}))),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn cluster_nodes() -> Value {
    json!({"get": {
        "summary": "Nodes",
        "responses": responses(vec![
            ("200", ok("ClusterNodeStatus", json!({"type": "object", "required": ["self", "nodes"], "properties": {
                "self": {"type": "string"}, "nodes": {"type": "array", "items": {"type": "object"}},
            }}))),
            ("503", error(NO_NODE)),
        ]),
    }})
}

fn metrics() -> Value {
    json!({"get": {
        "summary": "Prometheus metrics",
        "responses": {"200": {"description": "Prometheus text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}},
    }})
}

fn schemas(config: &AgentConfig) -> Value {
    let mut s = Map::new();
    s.insert(
        "Error".into(),
        json!({"type": "string", "description": "Cilium's Error model: what went wrong"}),
    );
    for (name, schema) in [
        ("StatusResponse", status_schema()),
        (
            "DaemonConfiguration",
            json!({"type": "object", "required": ["spec", "status"], "properties": {
                "spec": {"type": "object"}, "status": {"type": "object"},
            }}),
        ),
        ("ConfigurationPatch", config_patch(config)),
        ("EndpointChangeRequest", endpoint_change_request()),
        ("Endpoint", endpoint_schema()),
        (
            "EndpointDeleted",
            json!({"type": "object", "required": ["deleted"], "properties": {
                "deleted": {"type": "integer", "minimum": 0}, "id": {"type": "integer"},
            }}),
        ),
        (
            "IPAMResponse",
            json!({"type": "object", "required": ["ipv4", "host-addressing"], "properties": {
                "ipv4": {"type": "object", "required": ["ip", "gateway", "cidrs"], "properties": {
                    "ip": {"type": "string", "format": "ipv4"},
                    "gateway": {"type": "string", "format": "ipv4"},
                    "cidrs": {"type": "array", "items": {"type": "string"}},
                }},
                "host-addressing": {"type": "object"},
            }}),
        ),
        (
            "Identity",
            json!({"type": "object", "required": ["id", "labels"], "properties": {
                "id": {"type": "integer", "minimum": 0}, "labels": {"type": "array", "items": {"type": "string"}},
            }}),
        ),
        ("Pod", pod_schema()),
        (
            "Policy",
            json!({"type": "object", "required": ["policy", "revision"], "properties": {
                "policy": {"type": "string", "description": "The documents, as one JSON text"},
                "revision": {"type": "integer", "minimum": 0},
            }}),
        ),
        (
            "PolicyImported",
            json!({"type": "object", "required": ["imported", "endpoints-updated"], "properties": {
                "imported": {"type": "array", "items": {"type": "string"}},
                "endpoints-updated": {"type": "integer", "minimum": 0},
            }}),
        ),
        ("ServiceSpec", service_spec()),
        ("FrontendAddress", frontend_address()),
        ("BackendAddress", backend_address()),
        ("ServiceFlags", service_flags()),
        (
            "Service",
            json!({"type": "object", "required": ["spec", "status"], "properties": {
                "spec": {"type": "object", "required": ["id", "frontend-address"], "properties": {"id": {"type": "integer"}}},
                "status": {"type": "object", "required": ["realized"]},
            }}),
        ),
    ] {
        s.insert(name.into(), schema);
    }
    for (name, schema) in policy_schemas() {
        s.insert(name.into(), schema);
    }
    Value::Object(s)
}

fn status_schema() -> Value {
    let state = json!({"type": "object", "required": ["state"], "properties": {
        "state": {"type": "string"}, "msg": {"type": "string"},
    }});
    json!({"type": "object", "required": ["cilium", "kvstore", "kubernetes", "uptime-seconds"], "properties": {
        "cilium": state, "kvstore": state, "kubernetes": state, "hubble": state,
        "uptime-seconds": {"type": "integer", "minimum": 0},
    }})
}

fn config_patch(config: &AgentConfig) -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "options": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "Debug": {"type": "string", "enum": ["Enabled", "Disabled", "true", "false"]},
                    "MonitorAggregationLevel": {
                        "description": "Fixed when the datapath loads: only the level in force (upstream's cilium-dbg sends every option back)",
                        "const": config.monitor_aggregation.name(),
                    },
                },
            },
            "policy-enforcement": {"type": "string", "enum": ["default", "always", "never"]},
        },
    })
}

fn endpoint_change_request() -> Value {
    json!({
        "type": "object",
        "required": ["addressing", "container-id", "interface-name"],
        "properties": {
            "addressing": {"type": "object", "required": ["ipv4"], "properties": {
                "ipv4": {"type": "string", "format": "ipv4", "description": "In the node's pod CIDR"},
            }},
            "container-id": {"type": "string", "minLength": 1},
            "container-interface-name": {"type": "string"},
            "interface-name": {"type": "string", "minLength": 1, "description": "The host-side veth, a link of the node"},
            "k8s-namespace": {"type": "string"},
            "k8s-pod-name": {"type": "string"},
            "netns": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string", "pattern": label_text()}},
            "mac": {"type": ["string", "null"], "pattern": "^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$"},
        },
    })
}

fn endpoint_schema() -> Value {
    json!({"type": "object", "required": ["id", "spec", "status"], "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": u16::MAX},
        "spec": {"type": "object"},
        "status": {"type": "object", "required": ["state", "identity", "networking"], "properties": {
            "state": {"type": "string", "enum": ["waiting-for-identity", "regenerating", "ready", "disconnecting", "restoring"]},
            "identity": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
            "networking": {"type": "object"},
        }},
    }})
}

fn pod_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "properties": {
                "labels": {
                    "type": ["object", "null"],
                    "propertyNames": {"pattern": label_key()},
                    "additionalProperties": {"type": "string", "pattern": label_value()},
                },
            }},
            "spec": {"type": "object", "properties": {
                "serviceAccountName": {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253},
            }},
        },
    })
}

fn service_spec() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["frontend-address"],
        "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": u32::MAX, "readOnly": true,
                   "description": "The service's id in answers; a request may repeat the path's id (or 0)"},
            "frontend-address": schema_ref("FrontendAddress"),
            "backend-addresses": {"type": "array", "items": schema_ref("BackendAddress")},
            "flags": schema_ref("ServiceFlags"),
            "updateServices": {"type": "boolean", "description": "Accepted for compatibility; no effect"},
        },
        // A wildcard frontend (port 0) has no backends.
        "anyOf": [
            {"properties": {"frontend-address": {"required": ["port"], "properties": {"port": {"minimum": 1}}}}},
            {"properties": {"backend-addresses": {"maxItems": 0}}},
        ],
    })
}

fn frontend_address() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ip"],
        "properties": {
            "ip": {"type": "string", "format": "ipv4"},
            "port": {"type": "integer", "minimum": 0, "maximum": u16::MAX},
            "protocol": {"type": "string", "pattern": L4_ANY, "description": "TCP (default), UDP, SCTP or ANY"},
            "scope": {"type": "string", "enum": ["", "external"]},
        },
    })
}

fn backend_address() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["ip"],
        "properties": {
            "ip": {"type": "string", "format": "ipv4"},
            "port": {"type": "integer", "minimum": 0, "maximum": u16::MAX},
            "protocol": {"type": ["string", "null"], "pattern": L4_ANY, "description": "The frontend's when absent"},
            "weight": {"type": ["integer", "null"], "minimum": 0, "maximum": u16::MAX},
            "state": {"enum": ["active", "terminating", "quarantined", "maintenance", null]},
            "nodeName": {"type": ["string", "null"]},
            "zone": {"enum": ["", null], "description": "Topology zones are not supported"},
            "preferred": {"const": false, "description": "Preferred backends are not supported"},
        },
    })
}

fn service_flags() -> Value {
    let policy = json!({"type": "string", "enum": ["", "Cluster", "Local"]});
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "type": {"type": "string", "enum": ["", "ClusterIP", "NodePort", "ExternalIPs", "HostPort", "LoadBalancer", "LocalRedirect"]},
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "cluster": {"type": "string"},
            "trafficPolicy": policy,
            "extTrafficPolicy": policy,
            "intTrafficPolicy": policy,
            "natPolicy": {"const": "", "description": "NAT46/64 is not supported"},
            "healthCheckNodePort": {"const": 0},
            "sessionAffinityTimeout": {"type": ["integer", "null"], "minimum": 0, "maximum": cilium_lb::service::MAX_AFFINITY_TIMEOUT},
            "lbAlgorithm": {"enum": ["random", "maglev", null]},
        },
    })
}

/// The policy documents (cilium-policy's model): every object but metadata rejects unknown
/// fields.
fn policy_schemas() -> Vec<(&'static str, Value)> {
    let v4_cidr = format!(r"^{OCTET}(\.{OCTET}){{3}}/(3[0-2]|[12]?[0-9])$");
    let cidr = json!({"anyOf": [
        {"type": "string", "pattern": v4_cidr},
        {"type": "string", "format": "ipv4"},
        {"type": "string", "format": "ipv6"},
    ], "description": "An IPv4 CIDR or an address"});
    let port = json!({"anyOf": [
        {"type": "integer", "minimum": 0, "maximum": u16::MAX},
        {"type": "string", "pattern": PORT_TEXT},
        {"type": "string", "maxLength": 15, "allOf": [
            {"pattern": "^[a-z0-9](-?[a-z0-9])*$"}, {"pattern": "[a-z]"}]},
        {"type": "null"},
    ], "description": "A port number, or a container port's name (an IANA service name: \
        up to 15 lower-case letters, digits and inner hyphens, with a letter); 0 or absent: \
        every port"});
    let end_port = json!({"type": ["integer", "null"], "minimum": 0, "maximum": u16::MAX,
        "description": "The last port of a range: needs a port, and is not below it"});
    let entities: Vec<&str> = ["all", "cluster"]
        .into_iter()
        .chain(NumericIdentity::reserved().map(|(_, n)| n))
        .collect();
    let list = |items: Value| or_null(json!({"type": "array", "items": items}));
    let metadata = json!({"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "pattern": DNS_SUBDOMAIN, "maxLength": 253},
        "namespace": {"type": ["string", "null"], "pattern": DNS_LABEL, "maxLength": 63,
                      "description": "default when absent; ignored by clusterwide policies"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    }});
    let ingress = |from: &str| {
        let mut p = Map::new();
        p.insert(format!("{from}Endpoints"), list(schema_ref("Selector")));
        p.insert(
            format!("{from}Entities"),
            list(json!({"type": "string", "enum": entities})),
        );
        p.insert(format!("{from}CIDR"), list(cidr.clone()));
        p.insert(format!("{from}CIDRSet"), list(schema_ref("CIDRRule")));
        p.insert("toPorts".into(), list(schema_ref("PortRule")));
        json!({"type": "object", "additionalProperties": false, "properties": p})
    };
    vec![
        (
            "PolicyDocument",
            json!({"oneOf": [schema_ref("CiliumNetworkPolicy"), schema_ref("NetworkPolicy")]}),
        ),
        (
            "CiliumNetworkPolicy",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["apiVersion", "kind", "metadata"],
                "properties": {
                    "apiVersion": {"const": "cilium.io/v2"},
                    "kind": {"enum": ["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"]},
                    "metadata": metadata,
                    "spec": or_null(schema_ref("CiliumRule")),
                    "specs": list(schema_ref("CiliumRule")),
                },
                "description": "spec or specs, not both",
                "oneOf": [
                    {"required": ["spec"], "properties": {"spec": {"type": "object"}, "specs": {"type": "null"}}},
                    {"required": ["specs"], "properties": {"specs": {"type": "array"}, "spec": {"type": "null"}}},
                ],
            }),
        ),
        (
            "CiliumRule",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["endpointSelector"],
                "properties": {
                    "endpointSelector": schema_ref("Selector"),
                    "ingress": list(schema_ref("CiliumIngress")),
                    "ingressDeny": list(schema_ref("CiliumIngress")),
                    "egress": list(schema_ref("CiliumEgress")),
                    "egressDeny": list(schema_ref("CiliumEgress")),
                    "description": {"type": ["string", "null"]},
                },
            }),
        ),
        ("CiliumIngress", ingress("from")),
        ("CiliumEgress", ingress("to")),
        (
            "CIDRRule",
            json!({"type": "object", "additionalProperties": false, "required": ["cidr"], "properties": {
                "cidr": cidr,
                "except": {"type": "array", "items": cidr, "description": "CIDRs inside cidr"},
            }}),
        ),
        (
            "PortRule",
            json!({"type": "object", "additionalProperties": false, "properties": {
                "ports": {"type": "array", "items": {"type": "object", "additionalProperties": false, "properties": {
                    "port": port,
                    "endPort": end_port,
                    "protocol": {"type": ["string", "null"], "pattern": L4_ANY, "description": "TCP, UDP, SCTP or ANY (default)"},
                }}},
            }}),
        ),
        (
            "Selector",
            json!({"type": "object", "additionalProperties": false, "properties": {
                "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
                "matchExpressions": {"type": "array", "items": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string"},
                        "operator": {"enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {"type": "array", "items": {"type": "string"}},
                    },
                    "description": "In and NotIn need values; Exists and DoesNotExist take none",
                    "oneOf": [
                        {"required": ["values"], "properties": {"operator": {"enum": ["In", "NotIn"]}, "values": {"minItems": 1}}},
                        {"properties": {"operator": {"enum": ["Exists", "DoesNotExist"]}, "values": {"maxItems": 0}}},
                    ],
                }},
            }}),
        ),
        (
            "NetworkPolicy",
            json!({
                "type": "object",
                "additionalProperties": false,
                "required": ["apiVersion", "kind", "metadata"],
                "properties": {
                    "apiVersion": {"const": "networking.k8s.io/v1"},
                    "kind": {"const": "NetworkPolicy"},
                    "metadata": metadata,
                    "spec": {"type": "object", "additionalProperties": false, "properties": {
                        "podSelector": schema_ref("Selector"),
                        "policyTypes": list(json!({"enum": ["Ingress", "Egress"]})),
                        "ingress": list(json!({"type": "object", "additionalProperties": false, "properties": {
                            "from": {"type": "array", "items": schema_ref("NetworkPolicyPeer")},
                            "ports": {"type": "array", "items": schema_ref("NetworkPolicyPort")},
                        }})),
                        "egress": list(json!({"type": "object", "additionalProperties": false, "properties": {
                            "to": {"type": "array", "items": schema_ref("NetworkPolicyPeer")},
                            "ports": {"type": "array", "items": schema_ref("NetworkPolicyPort")},
                        }})),
                    }},
                },
            }),
        ),
        (
            "NetworkPolicyPeer",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "podSelector": or_null(schema_ref("Selector")),
                    "namespaceSelector": or_null(schema_ref("Selector")),
                    "ipBlock": or_null(schema_ref("IPBlock")),
                },
                "description": "ipBlock, or podSelector and/or namespaceSelector",
                "oneOf": [
                    {"required": ["ipBlock"], "properties": {
                        "ipBlock": {"type": "object"},
                        "podSelector": {"type": "null"},
                        "namespaceSelector": {"type": "null"},
                    }},
                    {"properties": {"ipBlock": {"type": "null"}}, "anyOf": [
                        {"required": ["podSelector"], "properties": {"podSelector": {"type": "object"}}},
                        {"required": ["namespaceSelector"], "properties": {"namespaceSelector": {"type": "object"}}},
                    ]},
                ],
            }),
        ),
        (
            "IPBlock",
            json!({"type": "object", "additionalProperties": false, "required": ["cidr"], "properties": {
                "cidr": cidr,
                "except": {"type": "array", "items": cidr, "description": "CIDRs inside cidr"},
            }}),
        ),
        (
            "NetworkPolicyPort",
            json!({"type": "object", "additionalProperties": false, "properties": {
                "protocol": {"type": ["string", "null"], "pattern": L4_K8S, "description": "TCP (default), UDP or SCTP"},
                "port": port,
                "endPort": end_port,
            }}),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every operation declares exactly the parameters of its path, and every response
    /// says its content type.
    #[test]
    fn the_document_names_every_route_and_its_path_parameters() {
        let config =
            AgentConfig::from_sources(&cilium_core::config::ConfigSources::default()).unwrap();
        let doc = document(&config);
        let paths = doc["paths"].as_object().unwrap();
        for (path, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let declared: Vec<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect();
                let used: Vec<&str> = path
                    .split('/')
                    .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
                    .collect();
                assert_eq!(declared, used, "{method} {path}");
                for (code, r) in op["responses"].as_object().unwrap() {
                    assert!(r["content"].is_object(), "{method} {path} {code}");
                }
            }
        }
        assert_eq!(paths.len(), 18);
    }
}
