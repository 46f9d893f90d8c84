//! The subjects: lockkit, the raw commands per backend, the peer crates.

pub mod lockkit;
pub mod peers;
pub mod raw_etcd;
pub mod raw_redis;
pub mod raw_sql;
pub mod raw_zk;

/// An owner value unique to this client.
pub fn unique_owner() -> String {
    format!("bench-{:016x}", fastrand::u64(..))
}
