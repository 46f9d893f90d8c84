//! How fast a waiter gets the lock after a release: the etcd backend's own
//! queue (a watch on the predecessor) against the core's polling wait loop
//! on the same server. Prints the figures (`--nocapture`); asserts that
//! every hand-off is correct (granted after the release, higher token).
#![cfg(feature = "etcd")]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit_core::conformance::unique_name;
use lockkit_core::spi::AcquireRequest;
use lockkit_core::spi::WakeSubscription;
use lockkit_core::{Capabilities, Lease, LockBackend, LockInfo, LockName, Result};
use lockkit_etcd::EtcdBackend;
use lockkit_tests::etcd::EtcdHarness;
use tokio::time::Instant;

/// The etcd backend without its queue: the core's driver then polls (try,
/// then jittered polling up to 500 ms).
#[derive(Debug)]
struct PollingOnly(EtcdBackend);

#[async_trait]
impl LockBackend for PollingOnly {
    fn kind(&self) -> &'static str {
        "etcd-polling"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            fifo: false,
            push_wakeup: false,
            ..self.0.capabilities()
        }
    }
    async fn try_acquire(&self, req: &AcquireRequest) -> Result<Option<Lease>> {
        self.0.try_acquire(req).await
    }
    async fn abandon(&self, req: &AcquireRequest) -> Result<()> {
        self.0.abandon(req).await
    }
    fn abandon_in_background(&self, req: AcquireRequest) {
        self.0.abandon_in_background(req);
    }
    async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease> {
        self.0.extend(lease, ttl).await
    }
    async fn release(&self, lease: &Lease) -> Result<bool> {
        self.0.release(lease).await
    }
    async fn holders(&self, name: &LockName) -> Result<Vec<LockInfo>> {
        self.0.holders(name).await
    }
    async fn list(&self) -> Result<Vec<LockInfo>> {
        self.0.list().await
    }
    async fn force_release(&self, name: &LockName) -> Result<bool> {
        self.0.force_release(name).await
    }
    async fn cleanup_expired(&self) -> Result<u64> {
        self.0.cleanup_expired().await
    }
    async fn subscribe_releases(&self, _name: &LockName) -> Result<Option<WakeSubscription>> {
        Ok(None)
    }
}

/// `rounds` hand-offs from a holder to a waiter on another client; returns
/// the release-to-grant latencies, sorted.
async fn handoffs(
    h: &EtcdHarness,
    holder: Arc<dyn LockBackend>,
    waiter: Arc<dyn LockBackend>,
    queued: bool,
    rounds: usize,
) -> Vec<Duration> {
    let ttl = Duration::from_secs(10);
    let mut latencies = Vec::new();
    for _ in 0..rounds {
        let name = unique_name("etcd-handoff");
        let held = holder
            .try_acquire(&AcquireRequest::new(name.clone(), "holder", ttl).expect("req"))
            .await
            .expect("try")
            .expect("free");
        let task = {
            let (waiter, name) = (Arc::clone(&waiter), name.clone());
            tokio::spawn(async move {
                let req = AcquireRequest::new(name, "waiter", ttl).expect("req");
                let deadline = Instant::now() + Duration::from_secs(20);
                let lease = waiter.acquire(&req, Some(deadline)).await.expect("acquire");
                (lease, Instant::now())
            })
        };
        if queued {
            h.wait_for_keys(&name, 2).await;
        } else {
            // A polling waiter leaves no trace to wait for; give it time to
            // reach its (growing) poll interval, as a real waiter would.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let released_at = Instant::now();
        assert!(holder.release(&held).await.expect("release"));
        let (lease, granted_at) = task.await.expect("waiter task");
        assert!(lease.token > held.token);
        latencies.push(granted_at - released_at);
        assert!(waiter.release(&lease).await.expect("release"));
    }
    latencies.sort();
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn release_to_grant_latency_push_vs_poll() {
    const ROUNDS: usize = 15;
    let h = EtcdHarness::start().await;
    let push = handoffs(
        &h,
        Arc::new(h.backend().await),
        Arc::new(h.backend().await),
        true,
        ROUNDS,
    )
    .await;
    let poll = handoffs(
        &h,
        Arc::new(PollingOnly(h.backend().await)),
        Arc::new(PollingOnly(h.backend().await)),
        false,
        ROUNDS,
    )
    .await;
    let show = |l: &[Duration]| {
        format!(
            "p50 {:?}, p90 {:?}, max {:?}",
            l[l.len() / 2],
            l[l.len() * 9 / 10],
            l[l.len() - 1]
        )
    };
    eprintln!(
        "release → grant, etcd queue + watch (push): {}",
        show(&push)
    );
    eprintln!(
        "release → grant, core polling loop:         {}",
        show(&poll)
    );
}
