//! The conformance kit (and cluster-specific checks) against a private
//! 3-master Redis Cluster (or
//! `LOCKKIT_TEST_REDIS_CLUSTER_URL`), in the unfair mode (`fifo(false)`) and in the default FIFO mode.
#![cfg(feature = "redis")]

mod unfair_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::cluster().await,
        except: [
            fifo_order => "not in the unfair Redis mode (fifo(false): after a release the first client to retry wins); the fifo_mode suite runs it in the default FIFO mode",
            permits_fifo_order => "not in the unfair Redis mode, for the same reason; the fifo_mode suite runs it",
        ],
    }
}

mod fifo_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::cluster_fifo().await,
    }
}

mod cluster_specific {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use lockkit_core::conformance::unique_name;
    use lockkit_core::spi::AcquireRequest;
    use lockkit_core::{LockBackend, LockName};
    use lockkit_tests::redis::RedisHarness;

    /// The master serving `slot`, from `CLUSTER SLOTS`.
    fn master_of(slots: &[(u16, u16, (String, u16))], slot: u16) -> String {
        let (_, _, (host, port)) = slots
            .iter()
            .find(|(lo, hi, _)| (*lo..=*hi).contains(&slot))
            .expect("every slot is served");
        format!("{host}:{port}")
    }

    /// All keys of one lock share a slot (so the scripts run), different
    /// locks spread over the masters, and `list` finds locks on every
    /// master.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn locks_spread_over_masters_and_list_sees_them_all() {
        let h = RedisHarness::cluster().await;
        let backend = h.backend().await;
        let raw = h.inspector();
        let slots_reply: Vec<redis::Value> = raw.query(redis::cmd("CLUSTER").arg("SLOTS")).await;
        let mut slots = Vec::new();
        for range in slots_reply {
            let redis::Value::Array(parts) = range else {
                panic!("CLUSTER SLOTS entry: {range:?}");
            };
            let lo: u16 = redis::from_redis_value(parts[0].clone()).unwrap();
            let hi: u16 = redis::from_redis_value(parts[1].clone()).unwrap();
            let redis::Value::Array(master) = parts[2].clone() else {
                panic!("CLUSTER SLOTS master: {:?}", parts[2]);
            };
            let host: String = redis::from_redis_value(master[0].clone()).unwrap();
            let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
            slots.push((lo, hi, (host, port)));
        }
        let base = unique_name("spread");
        let mut leases = Vec::new();
        let mut masters = BTreeSet::new();
        for i in 0..24 {
            let name = LockName::new(format!("{base}/{{{i}}}")).unwrap();
            let keys = backend.keys(&name);
            let mut slot_of = Vec::new();
            for key in [
                &keys.lock,
                &keys.fence,
                &keys.queue,
                &keys.waiters,
                &keys.channel,
            ] {
                let slot: u16 = raw
                    .query(redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
                    .await;
                slot_of.push(slot);
            }
            assert!(
                slot_of.windows(2).all(|w| w[0] == w[1]),
                "{keys:?}: {slot_of:?}"
            );
            masters.insert(master_of(&slots, slot_of[0]));
            let req = AcquireRequest::new(name, "spread", Duration::from_secs(30)).unwrap();
            leases.push(backend.try_acquire(&req).await.unwrap().unwrap());
        }
        assert_eq!(
            masters.len(),
            3,
            "24 locks land on all 3 masters: {masters:?}"
        );
        let listed: BTreeSet<String> = backend
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.name.into_string())
            .filter(|n| n.starts_with(base.as_str()))
            .collect();
        assert_eq!(listed.len(), 24, "list scans every master");
        for lease in &leases {
            assert!(backend.release(lease).await.unwrap());
        }
    }
}
