// SPDX-License-Identifier: Apache-2.0

//! The cluster side of the CLI: a client from the kubeconfig, applying and deleting an
//! install's objects (server-side apply, field manager `cilium-cli`), the install's
//! record (the values it was made from, kept as annotations of `cilium-config`, where
//! upstream keeps a Helm release), restarts, and `exec` into a pod's container.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{
    Api, ApiResource, AttachParams, DeleteParams, DynamicObject, ListParams, Patch, PatchParams,
};
use serde_json::Value;

use crate::install::NAMESPACE;

/// The field manager of the CLI's writes.
pub const FIELD_MANAGER: &str = "cilium-cli";
/// The annotation of `cilium-config` holding the values of the install (JSON).
pub const VALUES_ANNOTATION: &str = "cilium.io/install-values";
/// The annotation of `cilium-config` holding the version installed.
pub const VERSION_ANNOTATION: &str = "cilium.io/install-version";

/// A client of the cluster: `--kubeconfig`, else `KUBECONFIG`, else `~/.kube/config`,
/// else the in-cluster account (kube-rs's inference); `--context` picks a context.
pub async fn client(
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<kube::Client, String> {
    let options = kube::config::KubeConfigOptions {
        context: context.map(str::to_owned),
        ..Default::default()
    };
    let config = match kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(file, &options)
                .await
                .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&options)
            .await
            .map_err(|e| format!("kubeconfig: {e}"))?,
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes cluster configured (--kubeconfig, KUBECONFIG or ~/.kube/config): {e}"
            )
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("the Kubernetes client: {e}"))
}

/// The API of an object's kind (the kinds an install has).
fn api_of(client: &kube::Client, object: &Value) -> Result<Api<DynamicObject>, String> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let (plural, namespaced) = match kind {
        "ServiceAccount" => ("serviceaccounts", true),
        "ConfigMap" => ("configmaps", true),
        "Pod" => ("pods", true),
        "Service" => ("services", true),
        "Secret" => ("secrets", true),
        "DaemonSet" => ("daemonsets", true),
        "Deployment" => ("deployments", true),
        "Namespace" => ("namespaces", false),
        "ClusterRole" => ("clusterroles", false),
        "ClusterRoleBinding" => ("clusterrolebindings", false),
        "Role" => ("roles", true),
        "RoleBinding" => ("rolebindings", true),
        "CiliumNetworkPolicy" => ("ciliumnetworkpolicies", true),
        "NetworkPolicy" => ("networkpolicies", true),
        other => return Err(format!("kind {other} is not one the CLI writes")),
    };
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let resource = ApiResource {
        group: group.to_owned(),
        version: version.to_owned(),
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        plural: plural.to_owned(),
    };
    Ok(if namespaced {
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(NAMESPACE);
        Api::namespaced_with(client.clone(), ns, &resource)
    } else {
        Api::all_with(client.clone(), &resource)
    })
}

/// How long `apply` waits for an object still being deleted to be gone.
const TERMINATING_WAIT: Duration = Duration::from_secs(180);

/// Applies `objects` in order (server-side apply, forcing conflicts as `helm upgrade`
/// overwrites). An object still being deleted (a previous uninstall's foreground deletion
/// waiting for its ReplicaSets or pods) is waited for first: applied to, it would be
/// removed once its deletion ends, taking the new install with it.
pub async fn apply(client: &kube::Client, objects: &[Value]) -> Result<(), String> {
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for o in objects {
        let api = api_of(client, o)?;
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        wait_for(TERMINATING_WAIT, || async {
            match api.get_opt(name).await {
                Ok(Some(old)) if old.metadata.deletion_timestamp.is_some() => Err(format!(
                    "{} {name} is still being deleted",
                    o["kind"].as_str().unwrap_or_default()
                )),
                Ok(_) => Ok(true),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
        api.patch(name, &params, &Patch::Apply(o))
            .await
            .map_err(|e| {
                format!(
                    "applying {} {name}: {e}",
                    o["kind"].as_str().unwrap_or_default()
                )
            })?;
    }
    Ok(())
}

/// Deletes `objects` in reverse order (foreground: a DaemonSet's pods go first); absent
/// ones are skipped. Returns what was deleted, as `kind/name`.
pub async fn delete(client: &kube::Client, objects: &[Value]) -> Result<Vec<String>, String> {
    let mut deleted = Vec::new();
    for o in objects.iter().rev() {
        let api = api_of(client, o)?;
        let name = o["metadata"]["name"].as_str().unwrap_or_default();
        match api.delete(name, &DeleteParams::foreground()).await {
            Ok(_) => deleted.push(format!("{}/{name}", o["kind"].as_str().unwrap_or_default())),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                return Err(format!(
                    "deleting {} {name}: {e}",
                    o["kind"].as_str().unwrap_or_default()
                ));
            }
        }
    }
    Ok(deleted)
}

/// Waits until none of `objects` exists any more (their deletion, foreground, ends once
/// what they own has gone).
pub async fn wait_gone(
    client: &kube::Client,
    objects: &[Value],
    timeout: Duration,
) -> Result<(), String> {
    wait_for(timeout, || async {
        for o in objects {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            if api_of(client, o)?
                .get_opt(name)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err(format!(
                    "{} {name} is still there",
                    o["kind"].as_str().unwrap_or_default()
                ));
            }
        }
        Ok(true)
    })
    .await
}

/// The `cilium-config` ConfigMap, if Cilium is installed.
pub async fn config_map(client: &kube::Client) -> Result<Option<ConfigMap>, String> {
    Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE)
        .get_opt("cilium-config")
        .await
        .map_err(|e| format!("reading {NAMESPACE}/cilium-config: {e}"))
}

/// The values and version an install recorded on `cilium-config`.
pub fn recorded(cm: &ConfigMap) -> (Value, Option<String>) {
    let annotations = cm.metadata.annotations.clone().unwrap_or_default();
    let values = annotations
        .get(VALUES_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_else(|| Value::Object(Default::default()));
    (values, annotations.get(VERSION_ANNOTATION).cloned())
}

/// Deletes the pods matching `selector` in Cilium's namespace (their controller makes
/// them anew); how many.
pub async fn restart(client: &kube::Client, selector: &str) -> Result<usize, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| format!("listing pods {selector}: {e}"))?;
    let mut n = 0;
    for p in list {
        let name = p.metadata.name.clone().unwrap_or_default();
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => n += 1,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(format!("deleting pod {name}: {e}")),
        }
    }
    Ok(n)
}

/// Runs `command` in a pod's container (the API's exec); its standard output, or an
/// error with its standard error.
pub async fn exec(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    container: &str,
    command: &[&str],
    timeout: Duration,
) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let params = AttachParams::default()
        .container(container)
        .stdin(false)
        .stdout(true)
        .stderr(true);
    let run = async {
        let mut process = pods
            .exec(pod, command.iter().copied(), &params)
            .await
            .map_err(|e| format!("exec in {namespace}/{pod}: {e}"))?;
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = process.stdout() {
            s.read_to_string(&mut out)
                .await
                .map_err(|e| e.to_string())?;
        }
        if let Some(mut s) = process.stderr() {
            s.read_to_string(&mut err)
                .await
                .map_err(|e| e.to_string())?;
        }
        let status = match process.take_status() {
            Some(s) => s.await,
            None => None,
        };
        let _ = process.join().await;
        match status {
            Some(s) if s.status.as_deref() == Some("Failure") => Err(format!(
                "{}: {}{}",
                command.join(" "),
                s.message.unwrap_or_default(),
                if err.is_empty() {
                    String::new()
                } else {
                    format!(": {}", err.trim())
                }
            )),
            _ => Ok(out),
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| format!("exec in {namespace}/{pod}: no answer within {timeout:?}"))?
}

/// Waits until `check` says done (polling every 500 ms) or `timeout` passes; the last
/// reason it gave otherwise.
pub async fn wait_for<F, Fut>(timeout: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, String>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not ready");
    loop {
        match check().await {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = e,
        }
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
