// SPDX-License-Identifier: Apache-2.0

//! The seed's manifest, as its author types it after `cat << EOF | kubectl apply -f -`.

/// The seed's manifest: the `webpod` Deployment (2 whoami replicas) and Service, and
/// `curl-pod` on k8s-ctr.
pub const SEED: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: webpod
spec:
  replicas: 2
  selector:
    matchLabels:
      app: webpod
  template:
    metadata:
      labels:
        app: webpod
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchExpressions:
              - key: app
                operator: In
                values:
                - sample-app
            topologyKey: "kubernetes.io/hostname"
      containers:
      - name: webpod
        image: traefik/whoami
        ports:
        - containerPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: webpod
  labels:
    app: webpod
spec:
  selector:
    app: webpod
  ports:
  - protocol: TCP
    port: 80
    targetPort: 80
  type: ClusterIP
---
apiVersion: v1
kind: Pod
metadata:
  name: curl-pod
  labels:
    app: curl
spec:
  nodeName: k8s-ctr
  containers:
  - name: curl
    image: nicolaka/netshoot
    command: ["tail"]
    args: ["-f", "/dev/null"]
  terminationGracePeriodSeconds: 0
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn the_seed_manifest_is_a_deployment_a_service_and_a_pod() {
        let mut kinds = Vec::new();
        for de in serde_norway::Deserializer::from_str(SEED) {
            let v = serde_json::Value::deserialize(de).expect("yaml");
            let kind = v["kind"].as_str().expect("kind").to_owned();
            match kind.as_str() {
                "Deployment" => {
                    assert_eq!(v["spec"]["replicas"], 2);
                    serde_json::from_value::<k8s_openapi::api::apps::v1::Deployment>(v)
                        .expect("Deployment");
                }
                "Service" => {
                    serde_json::from_value::<k8s_openapi::api::core::v1::Service>(v)
                        .expect("Service");
                }
                _ => {
                    let p: k8s_openapi::api::core::v1::Pod =
                        serde_json::from_value(v).expect("Pod");
                    assert_eq!(p.spec.and_then(|s| s.node_name).as_deref(), Some("k8s-ctr"));
                }
            }
            kinds.push(kind);
        }
        assert_eq!(kinds, ["Deployment", "Service", "Pod"]);
    }
}
