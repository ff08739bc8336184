//! Leader election on a Lease (kube-lease-manager): of several replicas only
//! the leader reconciles and writes; the others keep their caches warm.
//!
//! kube-lease-manager takes the Lease and renews it. Two things are added
//! here from a watch of the Lease:
//! - a standby tries at once when the Lease is handed over or runs out, so
//!   that a rolling update hands over in about a second;
//! - a leader steps down when its renewals stop landing, before a standby
//!   can take the Lease (client-go's "renew deadline"): two leaders never act
//!   at once as long as clocks agree within the grace.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use crate::controller::error::Error;
use crate::metrics::Metrics;

/// Which Lease, held by whom, for how long.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// Seconds a leader holds the Lease without renewing it: how long a
    /// standby waits after the leader died.
    pub duration: u64,
    /// This process, as the Lease's holderIdentity shows it.
    pub identity: String,
}

impl LeaseSettings {
    /// Renewed this long before it runs out.
    fn grace(&self) -> u64 {
        (self.duration / 3).max(1)
    }
}

/// Until when this process may act as the leader, by its own clock: the
/// moment it steps down unless a renewal lands first. What no API server
/// precondition guards (an export ZIP put in place on a volume the replicas
/// share) is done only while it holds, so that a leader that lost the Lease
/// without noticing yet (cut off, or frozen) does not overwrite what the new
/// leader wrote.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<AtomicI64>);

impl Fence {
    /// Whether this process may still act as the leader now.
    pub fn holds(&self) -> bool {
        Utc::now().timestamp_millis() < self.0.load(Ordering::SeqCst)
    }

    /// Fails with [`Error::NotLeading`], naming what is left `undone`, unless
    /// this process may still act as the leader now: right before what no
    /// API server precondition guards.
    pub fn check(&self, undone: &'static str) -> Result<(), Error> {
        match self.holds() {
            true => Ok(()),
            false => Err(Error::NotLeading(undone)),
        }
    }

    fn until(&self, until: DateTime<Utc>) {
        self.0.store(until.timestamp_millis(), Ordering::SeqCst);
    }

    fn forever(&self) {
        self.0.store(i64::MAX, Ordering::SeqCst);
    }

    fn lift(&self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// Whether this process leads, as the election says.
pub struct Leadership {
    leading: watch::Receiver<bool>,
    resign: Option<oneshot::Sender<()>>,
    campaign: Option<tokio::task::JoinHandle<()>>,
}

impl Leadership {
    /// A process that leads from the start: the only one (no election).
    pub fn alone(metrics: &Metrics, fence: &Fence) -> Self {
        metrics.set_leader(true);
        fence.forever();
        let (_, leading) = watch::channel(true);
        Self {
            leading,
            resign: None,
            campaign: None,
        }
    }

    /// Campaigns for the Lease in the background.
    pub fn campaign(
        client: Client,
        settings: LeaseSettings,
        metrics: Arc<Metrics>,
        fence: Fence,
    ) -> Self {
        let (sender, leading) = watch::channel(false);
        let (resign, resigned) = oneshot::channel();
        let leader = Leader {
            leading: sender,
            metrics,
            fence,
        };
        let campaign = tokio::spawn(campaign(client, settings, leader, resigned));
        Self {
            leading,
            resign: Some(resign),
            campaign: Some(campaign),
        }
    }

    /// Waits until this process leads: false when its campaign ended
    /// without it ever leading (it could not take up the Lease it acquired).
    pub async fn acquired(&mut self) -> bool {
        self.leading.wait_for(|leading| *leading).await.is_ok()
    }

    /// Waits until this process no longer leads (never, for one alone).
    pub async fn lost(&mut self) {
        match self.leading.wait_for(|leading| !*leading).await {
            Ok(_) => {}
            Err(_) => std::future::pending().await,
        }
    }

    /// Hands the Lease over (released), so that a standby takes over at once.
    pub async fn resign(mut self) {
        if let Some(resign) = self.resign.take() {
            let _ = resign.send(());
        }
        if let Some(campaign) = self.campaign.take() {
            let _ = campaign.await;
        }
    }
}

/// The Lease as the API server has it now, from a watch of it alone.
fn lease_changes(client: Client, settings: &LeaseSettings) -> impl Stream<Item = Lease> + use<> {
    let leases = Api::<Lease>::namespaced(client, &settings.namespace);
    let only = watcher::Config::default().fields(&format!("metadata.name={}", settings.name));
    watcher(leases, only)
        .default_backoff()
        .applied_objects()
        .filter_map(|lease| async move { lease.ok() })
}

/// Until when a holder's last renewal holds the Lease, by this host's clock.
fn held_until(lease: &Lease) -> Option<DateTime<Utc>> {
    let spec = lease.spec.as_ref()?;
    let renewed: DateTime<Utc> = spec.renew_time.as_ref()?.0.to_string().parse().ok()?;
    let seconds = spec.lease_duration_seconds?;
    Some(renewed + chrono::TimeDelta::seconds(seconds.into()))
}

fn holder(lease: &Lease) -> Option<&str> {
    lease.spec.as_ref()?.holder_identity.as_deref()
}

async fn manager(
    client: &Client,
    settings: &LeaseSettings,
) -> kube_lease_manager::Result<LeaseManager> {
    let params = LeaseParams::new(&settings.identity, settings.duration, settings.grace());
    LeaseManager::new(
        client.clone(),
        &settings.name,
        &settings.namespace,
        params,
        LeaseCreateMode::AutoCreate,
    )
    .await
}

/// What leading changes in this process: the controllers run, the metric,
/// and the fence.
struct Leader {
    leading: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    fence: Fence,
}

async fn campaign(
    client: Client,
    settings: LeaseSettings,
    leader: Leader,
    mut resigned: oneshot::Receiver<()>,
) {
    let mut lease = Box::pin(lease_changes(client.clone(), &settings));
    let lease_name = format!("{}/{}", settings.namespace, settings.name);
    info!(
        lease = lease_name,
        identity = settings.identity,
        "campaigning for the leader Lease"
    );
    tokio::select! {
        _ = hand_over_from_predecessor(&client, &settings, &mut lease) => {}
        _ = &mut resigned => return,
    }
    loop {
        // Standby: a fresh manager reads the Lease anew, so that one handed
        // over or run out is tried at once.
        let manager = match manager(&client, &settings).await {
            Ok(manager) => manager,
            Err(error) => {
                warn!(%error, lease = lease_name, "cannot read the leader Lease; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => continue,
                    _ = &mut resigned => return,
                }
            }
        };
        let mut changed = Box::pin(manager.changed());
        let acquired = loop {
            tokio::select! {
                result = &mut changed => match result {
                    Ok(true) => break true,
                    Ok(false) => changed = Box::pin(manager.changed()),
                    Err(error) => {
                        warn!(%error, lease = lease_name, "campaign failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        break false;
                    }
                },
                Some(now) = lease.next() => {
                    let free = holder(&now).is_none()
                        || held_until(&now).is_some_and(|until| until < Utc::now());
                    if free {
                        break false;
                    }
                }
                _ = &mut resigned => return,
            }
        };
        drop(changed);
        if !acquired {
            continue;
        }
        info!(
            lease = lease_name,
            identity = settings.identity,
            "leading: reconciling"
        );
        leader.metrics.set_leader(true);
        lead(
            &client,
            &manager,
            &settings,
            &mut lease,
            &mut resigned,
            &leader,
        )
        .await;
        leader.fence.lift();
        leader.metrics.set_leader(false);
        let _ = leader.leading.send(false);
        return;
    }
}

/// A process restarted in the same pod has its predecessor's identity; a
/// Lease held under it was held by that process, which is gone (a container
/// restarts only once the last one exited). Without this, the restarted
/// process would find itself the holder and lead at once, with cold caches.
/// Instead the Lease is handed over now, and the standby, whose caches are
/// warm, gets up to one Lease duration to take it before this process
/// campaigns too.
async fn hand_over_from_predecessor(
    client: &Client,
    settings: &LeaseSettings,
    lease: &mut (impl Stream<Item = Lease> + Unpin),
) {
    let leases = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
    let Ok(Some(held)) = leases.get_opt(&settings.name).await else {
        return;
    };
    if holder(&held) != Some(settings.identity.as_str()) {
        return;
    }
    let released = match manager(client, settings).await {
        Ok(manager) => manager.release().await,
        Err(error) => Err(error),
    };
    if let Err(error) = released {
        warn!(%error, "could not hand over the Lease a predecessor held; it runs out instead");
        return;
    }
    info!(
        identity = settings.identity,
        "handed over the Lease held before this process restarted"
    );
    let taken = async {
        while let Some(now) = lease.next().await {
            if holder(&now).is_some_and(|h| h != settings.identity) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(settings.duration), taken).await;
}

/// A Lease acquired but not taken up (the campaign ends, and the process
/// with it): handed over, so that a standby takes it at once.
async fn give_up(manager: &LeaseManager, settings: &LeaseSettings, why: &str) {
    warn!(identity = settings.identity, "{why}: not leading");
    if let Err(error) = manager.release().await {
        warn!(%error, "could not release the leader Lease; it runs out instead");
    }
}

/// Renews the Lease until this process resigns (the Lease released) or
/// cannot be sure it still holds it.
async fn lead(
    client: &Client,
    manager: &LeaseManager,
    settings: &LeaseSettings,
    lease: &mut (impl Stream<Item = Lease> + Unpin),
    resigned: &mut oneshot::Receiver<()>,
    leader: &Leader,
) {
    // A renewal that has not landed by half the grace before the Lease runs
    // out ends the leadership: a standby may take it at the end.
    let margin = chrono::TimeDelta::milliseconds((settings.grace() * 500) as i64);
    // From the acquired Lease's own renewal, read back, not from the time
    // this task got to run: a process frozen right after acquiring does not
    // act past the Lease's end.
    let leases = Api::<Lease>::namespaced(client.clone(), &settings.namespace);
    let acquired = match leases.get(&settings.name).await {
        Ok(acquired) if holder(&acquired) == Some(settings.identity.as_str()) => {
            held_until(&acquired)
        }
        Ok(acquired) => {
            let holder = holder(&acquired).unwrap_or_default();
            warn!(holder, "the leader Lease was taken over at once");
            return;
        }
        Err(error) => {
            let why = format!("cannot read back the leader Lease just acquired: {error}");
            return give_up(manager, settings, &why).await;
        }
    };
    let mut step_down_at = match acquired {
        Some(until) if Utc::now() < until - margin => until - margin,
        Some(until) => {
            let why = format!(
                "the leader Lease acquired ran out ({until}) before this process took it up"
            );
            return give_up(manager, settings, &why).await;
        }
        None => {
            let why = "the leader Lease acquired has no renewal time or duration";
            return give_up(manager, settings, why).await;
        }
    };
    leader.fence.until(step_down_at);
    let _ = leader.leading.send(true);
    // Kept across the loop: a renewal is never cut short by the Lease event
    // it causes.
    let mut changed = Box::pin(manager.changed());
    loop {
        let until_step_down = (step_down_at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            result = &mut changed => match result {
                Ok(true) => changed = Box::pin(manager.changed()),
                Ok(false) => {
                    warn!(identity = settings.identity, "the leader Lease was taken over");
                    return;
                }
                Err(error) => {
                    warn!(%error, "could not renew the leader Lease");
                    return;
                }
            },
            Some(now) = lease.next() => {
                if holder(&now) != Some(settings.identity.as_str()) {
                    warn!(holder = holder(&now), "the leader Lease is held by another");
                    return;
                }
                if let Some(until) = held_until(&now) {
                    step_down_at = until - margin;
                    leader.fence.until(step_down_at);
                }
            }
            _ = tokio::time::sleep(until_step_down) => {
                warn!(identity = settings.identity, "the leader Lease was not renewed in time");
                return;
            }
            _ = &mut *resigned => {
                drop(changed);
                // No longer acting before the Lease can be taken.
                leader.fence.lift();
                match manager.release().await {
                    Ok(()) => info!(identity = settings.identity, "leader Lease handed over"),
                    Err(error) => warn!(%error, "could not release the leader Lease; it runs out instead"),
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn the_fence_holds_only_until_the_step_down_by_the_clock_not_by_a_task_noticing() {
        let fence = Fence::default();
        assert!(!fence.holds(), "a standby never acts");
        fence.until(Utc::now() + chrono::TimeDelta::seconds(5));
        assert!(fence.holds());
        // A process frozen past its step-down finds the fence down as soon
        // as it runs again, before the election task has run at all.
        fence.until(Utc::now() - chrono::TimeDelta::milliseconds(1));
        assert!(!fence.holds());
        fence.forever();
        assert!(fence.holds(), "one alone leads");
        fence.lift();
        assert!(!fence.holds());
    }

    #[test]
    fn a_lease_is_held_until_its_last_renewal_plus_its_duration() {
        let renewed = "2026-01-01T00:00:00.250Z";
        let lease = Lease {
            spec: Some(LeaseSpec {
                holder_identity: Some("tenure-0".into()),
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
            ..Default::default()
        };
        let until: DateTime<Utc> = "2026-01-01T00:00:15.250Z".parse().unwrap();
        assert_eq!(held_until(&lease), Some(until));
        assert_eq!(holder(&lease), Some("tenure-0"));
        assert_eq!(held_until(&Lease::default()), None);
    }

    #[test]
    fn the_grace_is_a_third_of_the_duration_and_at_least_a_second() {
        let settings = |duration| LeaseSettings {
            name: "tenure".into(),
            namespace: "tenure-system".into(),
            duration,
            identity: "a".into(),
        };
        assert_eq!(settings(15).grace(), 5);
        assert_eq!(settings(2).grace(), 1);
    }
}
