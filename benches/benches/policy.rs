// SPDX-License-Identifier: Apache-2.0

//! Policy computation, 250 rules over 1000 identities (the scale of Cilium's scalability
//! report: < 600 ms to enforce 250 policies per endpoint; our goal is under 10 ms).
//!
//! - `policy_one_endpoint_250r_1000id`: one endpoint's whole policy. `baseline` resolves it
//!   from scratch (`Repository::resolve`: every selector over every identity); `ours` adds
//!   the endpoint to a `PolicyEngine` whose selector cache is warm.
//! - `policy_identity_added_250r_1000id`: one identity appears while 100 endpoints exist.
//!   `baseline` recomputes the 100 endpoints' policies; `ours` is the incremental
//!   `upsert_identity`, which returns only the changed entries.

use std::hint::black_box;

use cilium_core::{LabelSet, NumericIdentity};
use cilium_policy::{EnforcementMode, PolicyEngine, Repository, Rule, parse};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

const RULES: usize = 250;
const IDENTITIES: u32 = 1000;
const APPS: usize = 50;
const NAMESPACES: usize = 5;

fn labels(i: u32) -> LabelSet {
    let i = i as usize;
    LabelSet::parse_list(&[
        format!("k8s:app=app-{}", i % APPS),
        format!(
            "k8s:io.kubernetes.pod.namespace=ns-{}",
            (i / APPS) % NAMESPACES
        ),
        format!("k8s:version=v{}", i / (APPS * NAMESPACES)),
    ])
    .expect("valid labels")
}

fn rules() -> Vec<Rule> {
    let mut yaml = String::new();
    for i in 0..RULES {
        let (app, ns) = (i % APPS, (i / APPS) % NAMESPACES);
        let peer = (i * 7 + 3) % APPS;
        let port = 8000 + i % 20;
        let section = if i % 25 == 0 {
            "ingressDeny"
        } else {
            "ingress"
        };
        yaml.push_str(&format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {{name: p{i}, namespace: ns-{ns}}}\nspec:\n  endpointSelector: {{matchLabels: {{app: app-{app}}}}}\n  {section}:\n  - fromEndpoints:\n    - matchLabels: {{app: app-{peer}}}\n    - matchExpressions: [{{key: version, operator: In, values: [v1, v2]}}]\n    toPorts: [{{ports: [{{port: \"{port}\", endPort: {}, protocol: TCP}}]}}]\n  egress:\n  - toEndpoints: [{{matchLabels: {{k8s:io.kubernetes.pod.namespace: ns-{}}}}}]\n---\n",
            port + 10,
            (ns + 1) % NAMESPACES
        ));
    }
    parse(&yaml)
        .expect("valid policies")
        .into_iter()
        .flat_map(|(_, r)| r)
        .collect()
}

fn setup() -> (Repository, PolicyEngine) {
    let rules = rules();
    let mut repo = Repository::new(EnforcementMode::Default);
    let mut engine = PolicyEngine::new(EnforcementMode::Default);
    repo.add(rules.clone());
    engine.add_rules(rules);
    for i in 0..IDENTITIES {
        let id = NumericIdentity::new(256 + i);
        repo.upsert_identity(id, labels(i));
        engine.upsert_identity(id, labels(i));
    }
    (repo, engine)
}

fn one_endpoint(c: &mut Criterion) {
    let (repo, engine) = setup();
    // app-0 in ns-0 is selected by 5 rules; all 250 are evaluated.
    let ep = labels(0);
    let mut g = c.benchmark_group("policy_one_endpoint_250r_1000id");
    g.sample_size(20);
    g.bench_function("baseline", |b| b.iter(|| black_box(repo.resolve(&ep))));
    g.bench_function("ours", |b| {
        b.iter_batched(
            || engine.clone(),
            |mut e| {
                black_box(e.upsert_endpoint(1, ep.clone()));
                e
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
}

fn identity_added(c: &mut Criterion) {
    let (mut repo, mut engine) = setup();
    let endpoints: Vec<LabelSet> = (0..100).map(labels).collect();
    for (n, l) in endpoints.iter().enumerate() {
        engine.upsert_endpoint(n as u16 + 1, l.clone());
    }
    let new_id = NumericIdentity::new(256 + IDENTITIES);
    let new_labels = labels(IDENTITIES + 3);
    let mut g = c.benchmark_group("policy_identity_added_250r_1000id");
    g.sample_size(10);
    g.bench_function("baseline", |b| {
        b.iter_batched(
            || repo.clone(),
            |mut r| {
                r.upsert_identity(new_id, new_labels.clone());
                for l in &endpoints {
                    black_box(r.resolve(l));
                }
                r
            },
            BatchSize::LargeInput,
        );
    });
    g.bench_function("ours", |b| {
        b.iter_batched(
            || engine.clone(),
            |mut e| {
                black_box(e.upsert_identity(new_id, new_labels.clone()));
                e
            },
            BatchSize::LargeInput,
        );
    });
    g.finish();
    repo.remove_identity(new_id);
}

criterion_group!(benches, one_endpoint, identity_added);
criterion_main!(benches);
