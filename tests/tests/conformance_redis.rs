//! The conformance kit against a private standalone `redis-server` (or
//! `LOCKKIT_TEST_REDIS_URL`), in the default mode and in FIFO mode.
#![cfg(feature = "redis")]

mod default_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::standalone().await,
        except: [
            fifo_order => "not in the default Redis mode (unfair but fast: after a release the first waiter to retry wins); the fifo_mode suite runs it with RedisOptions::fifo",
        ],
    }
}

mod fifo_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::standalone_fifo().await,
    }
}
