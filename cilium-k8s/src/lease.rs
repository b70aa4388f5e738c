// SPDX-License-Identifier: Apache-2.0

//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it and Cilium's operator uses it (Lease `cilium-operator-resource-lock` in the
//! operator's namespace; 15 s lease, 10 s renew deadline, 2 s retry period).
//!
//! - A candidate takes the Lease when it does not exist, is released (no holder), or has
//!   not been renewed for the lease duration. "Not renewed" is judged by this process's own
//!   clock, from when it last saw the record change (as client-go does), so clock skew
//!   between machines does not matter.
//! - Every write carries the resourceVersion just read: of two candidates, one wins.
//! - The leader renews every retry period; when it could not renew for the renew deadline
//!   it has lost the lead ([`LeaderElector::hold`] returns) and must stop leading.
//! - [`LeaderElector::release`] gives the Lease up at shutdown (holder cleared), so a
//!   standby takes over at once instead of after the lease duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Error;

/// Cilium operator's Lease name.
pub const OPERATOR_LEASE: &str = "cilium-operator-resource-lock";

/// One candidate for a Lease; see the module documentation.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// How long a leader that stopped renewing keeps the Lease (`leader-election-lease-duration`).
    pub lease_duration: Duration,
    /// How long a leader keeps leading without a successful renewal (`leader-election-renew-deadline`).
    pub renew_deadline: Duration,
    /// How often candidates try and leaders renew (`leader-election-retry-period`).
    pub retry_period: Duration,
    observed: Option<(String, Instant)>,
    last_renewed: Option<Instant>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// What identifies a version of the record: who holds it and when it was renewed.
fn record(spec: &LeaseSpec) -> String {
    format!(
        "{}|{:?}|{:?}",
        spec.holder_identity.as_deref().unwrap_or_default(),
        spec.renew_time,
        spec.lease_transitions
    )
}

impl LeaderElector {
    /// A candidate `identity` for Lease `namespace/name`, with Cilium's timings.
    pub fn new(client: kube::Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            observed: None,
            last_renewed: None,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One attempt: takes or renews the Lease; `Ok(false)` when another holds it.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, Error> {
        let api_err = |e: kube::Error| Error::Api(format!("lease {}: {e}", self.name));
        let seconds = i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(current) = self.api.get_opt(&self.name).await.map_err(api_err)? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => {
                    self.last_renewed = Some(Instant::now());
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(api_err(e)),
            };
        };
        let spec = current.spec.clone().unwrap_or_default();
        let seen = record(&spec);
        let at = match &self.observed {
            Some((r, at)) if *r == seen => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((seen, at));
                at
            }
        };
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_for = Duration::from_secs(
            u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0),
        );
        if !holder.is_empty() && holder != self.identity && at.elapsed() < held_for {
            return Ok(false);
        }
        let mut lease = current;
        let mut new = spec;
        if holder != self.identity {
            new.lease_transitions = Some(new.lease_transitions.unwrap_or(0) + 1);
            new.acquire_time = Some(now());
        }
        new.holder_identity = Some(self.identity.clone());
        new.lease_duration_seconds = Some(seconds);
        new.renew_time = Some(now());
        lease.spec = Some(new);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => {
                self.last_renewed = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(api_err(e)),
        }
    }

    /// Waits until this candidate holds the Lease (trying every retry period; API errors
    /// are retried too, and reported once).
    pub async fn acquire(&mut self) {
        let mut announced = false;
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) if !announced => {
                    eprintln!(
                        "level=info subsys=leader-election msg=\"another candidate leads; standing by\" lease={} identity={}",
                        self.name, self.identity
                    );
                    announced = true;
                }
                Err(e) if !announced => {
                    eprintln!(
                        "level=warning subsys=leader-election msg=\"cannot read the lease; retrying\" error=\"{e}\""
                    );
                    announced = true;
                }
                _ => {}
            }
            tokio::time::sleep(self.retry_period).await;
        }
    }

    /// Renews the Lease every retry period while this candidate leads; returns why it
    /// lost the lead (another took it, or no renewal succeeded for the renew deadline).
    pub async fn hold(&mut self) -> String {
        loop {
            tokio::time::sleep(self.retry_period).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => {}
                Ok(false) => return format!("lease {} taken by another candidate", self.name),
                Err(e) => {
                    let since = self.last_renewed.map_or(Duration::MAX, |t| t.elapsed());
                    if since >= self.renew_deadline {
                        return format!(
                            "lease {} not renewed for {since:?} (renew deadline {:?}): {e}",
                            self.name, self.renew_deadline
                        );
                    }
                }
            }
        }
    }

    /// Gives the Lease up if this candidate holds it (holder cleared), so that a standby
    /// takes over without waiting for the lease duration. Best effort.
    pub async fn release(&mut self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        let _ = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await;
    }
}
