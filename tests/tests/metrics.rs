//! The `Locker` reports through the `metrics` facade: acquires by outcome,
//! wait and hold time, extends, losses, held gauge — labelled by backend
//! and lock. One test per binary: it installs the global recorder. It runs
//! on Tokio's paused clock, so the renewal at TTL/3 happens before the
//! sleep that waits for it ends, on any machine.

use std::sync::Arc;
use std::time::Duration;

use lockkit_core::memory::MemoryBackend;
use lockkit_core::{LockBackend, LockOptions, Locker};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};

fn labels(key: &CompositeKey) -> Vec<(String, String)> {
    key.key()
        .labels()
        .map(|l| (l.key().to_owned(), l.value().to_owned()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn locker_records_outcomes_times_and_losses() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().expect("install the recorder");

    let memory = MemoryBackend::new();
    let opts = LockOptions::new()
        .ttl(Duration::from_millis(300))
        .wait_timeout(Duration::from_millis(50));
    let a = Locker::new(Arc::new(memory.clone()), "a")
        .and_then(|l| l.with_options(opts.clone()))
        .expect("locker");
    let b = Locker::new(Arc::new(memory.clone()), "b")
        .and_then(|l| l.with_options(opts))
        .expect("locker");

    let guard = a.acquire("metered").await.expect("acquire");
    assert!(b.try_acquire("metered").await.expect("try").is_none());
    assert!(b.acquire("metered").await.is_err(), "times out");
    // Let one renewal happen (at ttl/3), then take the lease away.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(memory.force_release(&guard.name()).await.expect("force"));
    tokio::time::timeout(Duration::from_secs(2), guard.lost())
        .await
        .expect("lost");
    drop(guard);

    let snapshot = snapshotter.snapshot().into_vec();
    let find = |name: &str, kind: MetricKind, want: &[(&str, &str)]| -> Option<&DebugValue> {
        snapshot.iter().find_map(|(key, _, _, value)| {
            let l = labels(key);
            (key.key().name() == name
                && key.kind() == kind
                && want
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v)))
            .then_some(value)
        })
    };
    let counter = |name: &str, want: &[(&str, &str)]| match find(name, MetricKind::Counter, want) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {want:?}: {other:?}"),
    };
    let base = [("backend", "memory"), ("lock", "metered")];
    assert_eq!(
        counter(
            "lockkit_acquire_total",
            &[base[0], base[1], ("outcome", "acquired")]
        ),
        1
    );
    assert_eq!(
        counter(
            "lockkit_acquire_total",
            &[base[0], base[1], ("outcome", "busy")]
        ),
        1
    );
    assert_eq!(
        counter(
            "lockkit_acquire_total",
            &[base[0], base[1], ("outcome", "timeout")]
        ),
        1
    );
    assert!(
        counter(
            "lockkit_extend_total",
            &[base[0], base[1], ("outcome", "ok")]
        ) >= 1
    );
    assert_eq!(counter("lockkit_lost_total", &[base[0], base[1]]), 1);
    match find("lockkit_acquire_wait_seconds", MetricKind::Histogram, &base) {
        Some(DebugValue::Histogram(values)) => assert_eq!(values.len(), 3),
        other => panic!("wait histogram: {other:?}"),
    }
    match find("lockkit_hold_seconds", MetricKind::Histogram, &base) {
        Some(DebugValue::Histogram(values)) => {
            assert_eq!(values.len(), 1);
            assert!(values[0].into_inner() >= 0.15);
        }
        other => panic!("hold histogram: {other:?}"),
    }
    match find("lockkit_held", MetricKind::Gauge, &base) {
        Some(DebugValue::Gauge(v)) => assert_eq!(v.into_inner(), 0.0, "nothing is held any more"),
        other => panic!("held gauge: {other:?}"),
    }
}
