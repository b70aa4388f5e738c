// SPDX-License-Identifier: Apache-2.0

//! The CLI's commands as functions of a client and their options: `install`,
//! `uninstall`, `config view|set|delete`, `hubble enable|disable` (`status` is
//! [`crate::status`]). Each prints what it does as upstream's cilium-cli does and
//! returns an error that says what went wrong; bad values change nothing.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::cluster;
use crate::install::{self, AGENT_SELECTOR, NAMESPACE, OPERATOR_SELECTOR};
use crate::values::Values;

/// The values an `install` is given, in the order they apply (Helm's: files, then
/// `--set`, then `--set-string`).
#[derive(Debug, Clone, Default)]
pub struct ValueArgs {
    /// `--values FILE` contents.
    pub files: Vec<(String, String)>,
    /// `--set` expressions.
    pub set: Vec<String>,
    /// `--set-string` expressions.
    pub set_string: Vec<String>,
}

impl ValueArgs {
    /// The values these arguments make, on top of `base`.
    pub fn apply_to(&self, base: &Value) -> Result<Values, String> {
        let mut values = Values::new();
        values
            .merge_yaml(&base.to_string())
            .map_err(|e| e.to_string())?;
        for (name, text) in &self.files {
            values
                .merge_yaml(text)
                .map_err(|e| format!("--values {name}: {e}"))?;
        }
        for s in &self.set {
            values.set(s).map_err(|e| e.to_string())?;
        }
        for s in &self.set_string {
            values.set_string(s).map_err(|e| e.to_string())?;
        }
        Ok(values)
    }
}

/// The objects of an install of `values` at `version`, `cilium-config` annotated with
/// both (the record later commands read).
pub fn install_objects(values: &Values, version: &str) -> Result<Vec<Value>, String> {
    let settings = values.resolve().map_err(|e| e.to_string())?;
    let mut objects = install::objects(&settings, version);
    for o in &mut objects {
        if o["kind"] == "ConfigMap" && o["metadata"]["name"] == "cilium-config" {
            o["metadata"]["annotations"] = json!({
                cluster::VALUES_ANNOTATION: values.tree().to_string(),
                cluster::VERSION_ANNOTATION: version,
            });
        }
    }
    Ok(objects)
}

/// `objects` with Hubble's TLS Secrets ([`install::tls_secrets`]) before the workloads
/// when the values turn Hubble's TLS and its automatic certificates on: the CA of Secret
/// `cilium-ca` when `client` finds one (certificates made earlier stay valid), else a new
/// one. Every call makes new leaf certificates, as the chart's helm method does at every
/// install and upgrade: `cilium upgrade` rotates them.
pub async fn with_tls_secrets(
    client: Option<&kube::Client>,
    values: &Values,
    mut objects: Vec<Value>,
) -> Result<Vec<Value>, String> {
    let settings = values.resolve().map_err(|e| e.to_string())?;
    if !install::hubble_tls_on(&settings) || !settings.hubble_tls_auto {
        return Ok(objects);
    }
    let existing = match client {
        Some(c) => Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c.clone(), NAMESPACE)
            .get_opt(install::CA_SECRET)
            .await
            .map_err(|e| format!("reading Secret {NAMESPACE}/{}: {e}", install::CA_SECRET))?,
        None => None,
    };
    let ca = match existing {
        Some(secret) => {
            let data = secret.data.unwrap_or_default();
            let text = |key: &str| {
                data.get(key)
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .ok_or_else(|| {
                        format!(
                            "Secret {NAMESPACE}/{} has no {key}: delete it to make a new CA",
                            install::CA_SECRET
                        )
                    })
            };
            cilium_k8s::pki::CertificateAuthority::from_pem(
                install::CA_NAME,
                &text("ca.crt")?,
                &text("ca.key")?,
            )
            .map_err(|e| format!("Secret {NAMESPACE}/{}: {e}", install::CA_SECRET))?
        }
        None => cilium_k8s::pki::CertificateAuthority::new(install::CA_NAME)
            .map_err(|e| e.to_string())?,
    };
    let secrets = install::tls_secrets(&settings, &ca)?;
    let at = objects
        .iter()
        .position(|o| o["kind"] == "DaemonSet")
        .unwrap_or(objects.len());
    objects.splice(at..at, secrets);
    Ok(objects)
}

/// Normalises `--version` (`1.17.5` or `v1.17.5`) to an image tag.
pub fn version_tag(version: Option<&str>) -> String {
    match version {
        None => install::DEFAULT_VERSION.to_owned(),
        Some(v) if v.starts_with('v') => v.to_owned(),
        Some(v) => format!("v{v}"),
    }
}

/// `cilium install`: refuses a cluster where Cilium is installed, then applies.
pub async fn install(
    client: &kube::Client,
    values: &Values,
    version: &str,
    wait: Option<Duration>,
) -> Result<String, String> {
    let objects = with_tls_secrets(Some(client), values, install_objects(values, version)?).await?;
    if cluster::config_map(client).await?.is_some() {
        return Err(format!(
            "Cilium is already installed (ConfigMap {NAMESPACE}/cilium-config exists): use 'cilium upgrade', or 'cilium uninstall' first"
        ));
    }
    let settings = values.resolve().map_err(|e| e.to_string())?;
    let mut out = format!(
        "ℹ️  Using Cilium version {}\n🔮 Auto-detected cluster name: {}\n",
        version.trim_start_matches('v'),
        settings.cluster_name
    );
    if settings.kube_proxy_replacement {
        out.push_str("ℹ️  Cilium will fully replace all functionalities of kube-proxy\n");
    }
    cluster::apply(client, &objects).await?;
    out.push_str(
        "✅ Cilium was successfully installed! Run 'cilium status' to view installation health\n",
    );
    if let Some(timeout) = wait {
        wait_ready(client, timeout).await?;
    }
    Ok(out)
}

/// `cilium upgrade`: the recorded values with these on top (`--reset-values`: without
/// the recorded ones), applied.
pub async fn upgrade(
    client: &kube::Client,
    args: &ValueArgs,
    version: Option<&str>,
    reset: bool,
    wait: Option<Duration>,
) -> Result<String, String> {
    let cm = cluster::config_map(client)
        .await?
        .ok_or("Cilium is not installed: use 'cilium install'")?;
    let (recorded, recorded_version) = cluster::recorded(&cm);
    let base = if reset { json!({}) } else { recorded };
    let values = args.apply_to(&base)?;
    let version = match version {
        Some(v) => version_tag(Some(v)),
        None => recorded_version.unwrap_or_else(|| version_tag(None)),
    };
    let objects =
        with_tls_secrets(Some(client), &values, install_objects(&values, &version)?).await?;
    cluster::apply(client, &objects).await?;
    // New settings (and certificates) reach the agents, the operator and the relay when
    // they start.
    cluster::restart(client, AGENT_SELECTOR).await?;
    cluster::restart(client, OPERATOR_SELECTOR).await?;
    cluster::restart(client, install::RELAY_SELECTOR).await?;
    if let Some(timeout) = wait {
        wait_ready(client, timeout).await?;
    }
    Ok(format!(
        "🔮 Upgraded Cilium to version {}\n",
        version.trim_start_matches('v')
    ))
}

/// Waits for `cilium status` to be OK: the components' counts first, then every agent's
/// own status (an agent pod runs before its API answers).
pub async fn wait_ready(client: &kube::Client, timeout: Duration) -> Result<(), String> {
    cluster::wait_for(timeout, || async {
        let counts = crate::status::collect(client, false).await?;
        let st = if counts.ok() {
            crate::status::collect(client, true).await?
        } else {
            counts
        };
        if st.ok() {
            Ok(true)
        } else {
            Err(st
                .errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", v.join("; ")))
                .collect::<Vec<_>>()
                .join(", "))
        }
    })
    .await
    .map_err(|e| format!("Cilium is not ready after {timeout:?}: {e}"))
}

/// `cilium uninstall`: deletes the install's objects (from its record) and waits until
/// the agents' pods are gone.
pub async fn uninstall(client: &kube::Client, timeout: Duration) -> Result<String, String> {
    let cm = cluster::config_map(client)
        .await?
        .ok_or("Cilium is not installed (no ConfigMap kube-system/cilium-config)")?;
    let (recorded, version) = cluster::recorded(&cm);
    let values = ValueArgs::default().apply_to(&recorded)?;
    // The record's relay objects are deleted even if `hubble disable` ran meanwhile.
    let objects = install_objects(&values, version.as_deref().unwrap_or("v0"))?;
    let mut all = objects.clone();
    let mut with_relay = values.clone();
    with_relay
        .set("hubble.relay.enabled=true")
        .map_err(|e| e.to_string())?;
    for o in install_objects(&with_relay, "v0")? {
        if !install::object_refs(&all).contains(&install::object_refs(std::slice::from_ref(&o))[0])
        {
            all.push(o);
        }
    }
    // The TLS Secrets whether or not the record has TLS on (an earlier upgrade may have).
    all.extend(install::tls_secret_refs());
    let mut out = String::from("🔥 Deleting pods in cilium-test-1 namespace...\n");
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    match namespaces
        .delete("cilium-test-1", &Default::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(format!("deleting namespace cilium-test-1: {e}")),
    }
    out.push_str("⌛ Uninstalling Cilium\n");
    cluster::delete(client, &all).await?;
    // Foreground deletion: the DaemonSet goes once its pods have.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let daemonsets: Api<k8s_openapi::api::apps::v1::DaemonSet> =
        Api::namespaced(client.clone(), NAMESPACE);
    cluster::wait_for(timeout, || async {
        let left = pods
            .list(&kube::api::ListParams::default().labels(AGENT_SELECTOR))
            .await
            .map_err(|e| e.to_string())?;
        if !left.items.is_empty() {
            return Err(format!("{} agent pods left", left.items.len()));
        }
        let ds = daemonsets
            .get_opt("cilium")
            .await
            .map_err(|e| e.to_string())?;
        Ok(ds.is_none())
    })
    .await
    .map_err(|e| format!("Cilium is still there after {timeout:?}: {e}"))?;
    // Every other object too (the operator's Deployment waits for its ReplicaSet): an
    // install right after must not find them terminating.
    cluster::wait_gone(client, &all, timeout)
        .await
        .map_err(|e| format!("Cilium is still there after {timeout:?}: {e}"))?;
    out.push_str(
        "🧹 Cleaning up the nodes (BPF state, cilium_* devices, routes, the CNI configuration)\n",
    );
    let settings = values.resolve().map_err(|e| e.to_string())?;
    let version = version.unwrap_or_else(|| version_tag(None));
    for line in cleanup_nodes(client, &settings, &version, timeout).await? {
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out)
}

/// A pod that cleans a node after the agent has gone: `cilium-dbg cleanup` (the BPF
/// programs and maps, `cilium_*` devices, the agent's routes and state) and the removal of
/// the agent's CNI configuration, the ones it set aside coming back (`*.cilium_bak`).
pub fn cleanup_pod(node: &str, settings: &crate::values::Settings, version: &str) -> Value {
    let tag = settings.image_tag.as_deref().unwrap_or(version);
    let restore_cni = "rm -f /host/etc/cni/net.d/05-cilium.conflist; \
        for f in /host/etc/cni/net.d/*.cilium_bak; do \
        if [ -e \"$f\" ]; then mv \"$f\" \"${f%.cilium_bak}\"; fi; done";
    let host_path = |name: &str, path: &str| json!({"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}});
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("cilium-cleanup-{node}"), "namespace": NAMESPACE,
                     "labels": {"k8s-app": "cilium-cleanup"}},
        "spec": {
            "nodeName": node,
            "hostNetwork": true,
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 1,
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {"name": "clean-cilium-state",
                 "image": format!("{}/cilium:{tag}", settings.image_repository.trim_end_matches("/cilium")),
                 "command": ["cilium-dbg", "cleanup", "--force", "--all-state", "--state-dir=/var/run/cilium"],
                 "env": [{"name": "CILIUM_BPF_ROOT", "value": "/sys/fs/bpf"},
                         {"name": "CILIUM_SOCK", "value": "unix:///var/run/cilium/cilium.sock"}],
                 "volumeMounts": [{"name": "bpf-maps", "mountPath": "/sys/fs/bpf"},
                                  {"name": "cilium-run", "mountPath": "/var/run/cilium"}]},
                {"name": "uninstall-cni",
                 "image": "quay.io/cilium/alpine-curl:v1.10.0",
                 "command": ["sh", "-c", restore_cni],
                 "volumeMounts": [{"name": "etc-cni-netd", "mountPath": "/host/etc/cni/net.d"}]},
            ],
            "volumes": [host_path("bpf-maps", "/sys/fs/bpf"), host_path("cilium-run", "/var/run/cilium"),
                        host_path("etc-cni-netd", "/etc/cni/net.d")],
        },
    })
}

/// Runs [`cleanup_pod`] on every node and waits for each to succeed; a line per node.
async fn cleanup_nodes(
    client: &kube::Client,
    settings: &crate::values::Settings,
    version: &str,
    timeout: Duration,
) -> Result<Vec<String>, String> {
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let names: Vec<String> = nodes
        .list(&Default::default())
        .await
        .map_err(|e| format!("listing nodes: {e}"))?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    let pods: Vec<Value> = names
        .iter()
        .map(|n| cleanup_pod(n, settings, version))
        .collect();
    cluster::delete(client, &pods).await?;
    cluster::apply(client, &pods).await?;
    let api: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let phase = |p: &k8s_openapi::api::core::v1::Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + timeout;
    let outcome = loop {
        let list = api
            .list(&kube::api::ListParams::default().labels("k8s-app=cilium-cleanup"))
            .await
            .map_err(|e| e.to_string())?;
        if let Some(failed) = list.items.iter().find(|p| phase(p) == "Failed") {
            let name = failed.metadata.name.clone().unwrap_or_default();
            break Err(format!(
                "{name} failed (kubectl logs -n {NAMESPACE} {name} --all-containers)"
            ));
        }
        let done = list
            .items
            .iter()
            .filter(|p| phase(p) == "Succeeded")
            .count();
        if done == names.len() {
            break Ok(names.iter().map(|n| format!("   {n}: cleaned")).collect());
        }
        if std::time::Instant::now() >= deadline {
            break Err(format!(
                "cleaning the nodes: {done}/{} done after {timeout:?}",
                names.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The pods go either way (their logs were the evidence while they ran).
    if outcome.is_ok() {
        cluster::delete(client, &pods).await?;
    }
    outcome
}

/// `cilium config view`: the ConfigMap's keys and values, aligned.
pub async fn config_view(client: &kube::Client) -> Result<BTreeMap<String, String>, String> {
    let cm = cluster::config_map(client)
        .await?
        .ok_or("Cilium is not installed (no ConfigMap kube-system/cilium-config)")?;
    Ok(cm.data.unwrap_or_default())
}

/// The text of `config view`.
pub fn render_config(data: &BTreeMap<String, String>) -> String {
    let width = data.keys().map(String::len).max().unwrap_or(0) + 1;
    data.iter()
        .map(|(k, v)| format!("{k:<width$}{v}\n"))
        .collect()
}

/// `cilium config set KEY VALUE` / `cilium config delete KEY` (`value` None): patches the
/// ConfigMap (field manager `cilium-cli-config`), then restarts the agents and the
/// operator unless `restart` is false.
pub async fn config_change(
    client: &kube::Client,
    key: &str,
    value: Option<&str>,
    restart: bool,
) -> Result<String, String> {
    if key.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "{key:?} is not a ConfigMap key (letters, digits, '-', '_' and '.')"
        ));
    }
    let cm = cluster::config_map(client)
        .await?
        .ok_or("Cilium is not installed (no ConfigMap kube-system/cilium-config)")?;
    let data = cm.data.unwrap_or_default();
    let mut out = match value {
        Some(v) => format!("✨ Patching ConfigMap cilium-config with {key}={v}...\n"),
        None => {
            if !data.contains_key(key) {
                return Err(format!("key {key:?} is not in ConfigMap cilium-config"));
            }
            format!("✨ Removing key {key} from ConfigMap cilium-config...\n")
        }
    };
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    let patch = json!({"data": {key: value}});
    api.patch(
        "cilium-config",
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| format!("patching ConfigMap cilium-config: {e}"))?;
    if restart {
        let n = cluster::restart(client, AGENT_SELECTOR).await?
            + cluster::restart(client, OPERATOR_SELECTOR).await?;
        out.push_str(&format!("♻️  Restarted Cilium pods ({n})\n"));
    }
    Ok(out)
}

/// `cilium hubble enable|disable`: hubble-relay (and the UI with `ui`) on or off, as an
/// upgrade of the recorded values.
pub async fn hubble(
    client: &kube::Client,
    enable: bool,
    ui: bool,
    wait: Option<Duration>,
) -> Result<String, String> {
    let mut args = ValueArgs::default();
    args.set
        .push(format!("hubble.enabled=true,hubble.relay.enabled={enable}"));
    if ui || !enable {
        args.set.push(format!("hubble.ui.enabled={}", enable && ui));
    }
    let cm = cluster::config_map(client)
        .await?
        .ok_or("Cilium is not installed: use 'cilium install'")?;
    let (recorded, version) = cluster::recorded(&cm);
    let values = args.apply_to(&recorded)?;
    let version = version.unwrap_or_else(|| version_tag(None));
    let objects =
        with_tls_secrets(Some(client), &values, install_objects(&values, &version)?).await?;
    if !enable {
        let mut with_relay = values.clone();
        with_relay
            .set("hubble.relay.enabled=true,hubble.ui.enabled=true")
            .map_err(|e| e.to_string())?;
        let relay: Vec<Value> = install_objects(&with_relay, &version)?
            .into_iter()
            .filter(|o| {
                o["metadata"]["name"] == "hubble-relay" || o["metadata"]["name"] == "hubble-ui"
            })
            .collect();
        cluster::delete(client, &relay).await?;
    }
    cluster::apply(client, &objects).await?;
    if let Some(timeout) = wait {
        wait_ready(client, timeout).await?;
    }
    Ok(if enable {
        "✅ Hubble was successfully enabled!\n".to_owned()
    } else {
        "✅ Hubble was successfully disabled.\n".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(v: &Value) -> String {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        String::from_utf8(bytes).unwrap()
    }

    /// Hubble's TLS as the chart has it: the three Secrets before the workloads, the
    /// agents' projected volume and file arguments, the relay dialing with its
    /// certificate; and plain text said in the ConfigMap and the relay's arguments when
    /// `hubble.tls.enabled=false`.
    #[tokio::test]
    async fn hubble_tls_objects() {
        let mut values = Values::new();
        values
            .set("hubble.relay.enabled=true,cluster.name=lab-1")
            .unwrap();
        let objects = install_objects(&values, "v1.18.0").unwrap();
        let objects = with_tls_secrets(None, &values, objects).await.unwrap();
        let kinds: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect();
        let at = |k: &str| {
            kinds
                .iter()
                .position(|x| x == k)
                .unwrap_or_else(|| panic!("{k}: {kinds:?}"))
        };
        assert!(at("Secret/cilium-ca") < at("DaemonSet/cilium"));
        assert!(at("Secret/hubble-server-certs") < at("DaemonSet/cilium"));
        assert!(at("Secret/hubble-relay-client-certs") < at("Deployment/hubble-relay"));
        let server = &objects[at("Secret/hubble-server-certs")];
        assert_eq!(server["type"], "kubernetes.io/tls");
        for key in ["ca.crt", "tls.crt"] {
            assert!(b64(&server["data"][key]).starts_with("-----BEGIN CERTIFICATE-----"));
        }
        assert!(b64(&server["data"]["tls.key"]).contains("PRIVATE KEY"));
        let ca = &objects[at("Secret/cilium-ca")];
        assert_eq!(b64(&ca["data"]["ca.crt"]), b64(&server["data"]["ca.crt"]));

        let agent = &objects[at("DaemonSet/cilium")]["spec"]["template"]["spec"];
        let volume = agent["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "hubble-tls")
            .expect("hubble-tls volume");
        assert_eq!(
            volume["projected"]["sources"][0]["secret"]["name"],
            "hubble-server-certs"
        );
        let args = agent["containers"][0]["args"].to_string();
        assert!(
            args.contains("--hubble-tls-cert-file=/var/lib/cilium/tls/hubble/server.crt"),
            "{args}"
        );
        let config = install::config_of(&objects);
        assert_eq!(config["hubble-disable-tls"], "false");
        let relay = objects[at("Deployment/hubble-relay")]["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
        for want in [
            "--tls-hubble-server-ca-files=/var/lib/hubble-relay/tls/hubble-server-ca.crt",
            "--tls-client-cert-file=/var/lib/hubble-relay/tls/client.crt",
            "--cluster-name=lab-1",
            "--disable-server-tls",
        ] {
            assert!(relay.contains(want), "{want}: {relay}");
        }

        values.set("hubble.tls.enabled=false").unwrap();
        let plain = with_tls_secrets(None, &values, install_objects(&values, "v1.18.0").unwrap())
            .await
            .unwrap();
        assert!(plain.iter().all(|o| o["kind"] != "Secret"));
        assert_eq!(install::config_of(&plain)["hubble-disable-tls"], "true");
        assert!(!install::config_of(&plain).contains_key("hubble-tls-cert-file"));
        let relay = plain
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "hubble-relay")
            .unwrap()["spec"]["template"]["spec"]["containers"][0]["args"]
            .to_string();
        assert!(relay.contains("--disable-client-tls"), "{relay}");
    }
}
