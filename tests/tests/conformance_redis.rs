//! The conformance kit against a private standalone `redis-server` (or
//! `LOCKKIT_TEST_REDIS_URL`), in the unfair mode (`fifo(false)`) and in the default FIFO mode.
#![cfg(feature = "redis")]

mod unfair_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::standalone().await,
        except: [
            fifo_order => "not in the unfair Redis mode (fifo(false): after a release the first client to retry wins); the fifo_mode suite runs it in the default FIFO mode",
            permits_fifo_order => "not in the unfair Redis mode, for the same reason; the fifo_mode suite runs it",
        ],
    }
}

mod fifo_mode {
    use lockkit_tests::redis::RedisHarness;

    lockkit_core::conformance_suite! {
        harness: RedisHarness::standalone_fifo().await,
    }
}
