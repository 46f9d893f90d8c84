//! The crates people would otherwise pick, each at its library defaults:
//! `rslock` and `distributed-lock-redis` on Redis, `distributed-lock-postgres`
//! (advisory locks) on Postgres.

use std::time::Duration;

use async_trait::async_trait;
use distributed_lock_core::{DistributedLock, LockError, LockHandle, LockProvider};

use crate::subject::{Client, Family, Grant, Held, Result, Subject, retry_every_ms};

/// `rslock` 0.10 (Redlock on one server): `acquire` loops over `lock`,
/// which itself retries 3 times 200 ms apart by default.
pub struct Rslock {
    url: String,
    ttl: Duration,
}

impl Rslock {
    /// Subject on the Redis server at `url`.
    pub fn new(url: &str, ttl: Duration) -> Self {
        Self {
            url: url.to_owned(),
            ttl,
        }
    }
}

#[async_trait]
impl Subject for Rslock {
    fn label(&self) -> String {
        "rslock 0.10".into()
    }

    fn family(&self) -> Family {
        Family::Peer
    }

    fn note(&self) -> Option<String> {
        Some("defaults: LockManager::acquire (retries every 200 ms, no queue)".into())
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        let manager = rslock::LockManager::new(vec![self.url.clone()]);
        Ok(Box::new(RslockClient {
            manager,
            ttl: self.ttl,
        }))
    }
}

struct RslockClient {
    manager: rslock::LockManager,
    ttl: Duration,
}

#[async_trait]
impl Client for RslockClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let attempt = async {
            if wait.is_zero() {
                self.manager.lock(lock, self.ttl).await.ok()
            } else {
                self.manager.acquire_no_guard(lock, self.ttl).await.ok()
            }
        };
        // A cancelled attempt may leave its key until the TTL; the
        // harness counts that acquire as timed out.
        let got = tokio::time::timeout(wait.max(Duration::from_millis(1)), attempt)
            .await
            .unwrap_or_default();
        Ok(got.map(|lock| Grant {
            token: None,
            held: Box::new(RslockHeld(lock)),
        }))
    }
}

struct RslockHeld(rslock::Lock);

#[async_trait]
impl Held for RslockHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.0.release().await;
        Ok(())
    }
}

/// `distributed-lock-redis` 0.2: its `acquire` does not wait for a held
/// lock, so this subject wraps `try_acquire` in a 1 ms retry loop.
pub struct DlRedis {
    url: String,
}

impl DlRedis {
    /// Subject on the Redis server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
        }
    }
}

#[async_trait]
impl Subject for DlRedis {
    fn label(&self) -> String {
        "distributed-lock-redis 0.2".into()
    }

    fn family(&self) -> Family {
        Family::Peer
    }

    fn note(&self) -> Option<String> {
        Some("defaults; try_acquire in a 1 ms retry loop (its acquire does not wait)".into())
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        let provider = distributed_lock_redis::RedisLockProvider::new(self.url.clone()).await?;
        Ok(Box::new(DlRedisClient { provider }))
    }
}

struct DlRedisClient {
    provider: distributed_lock_redis::RedisLockProvider,
}

#[async_trait]
impl Client for DlRedisClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let lock = self.provider.create_lock(lock);
        retry_every_ms(wait, || async {
            Ok(lock.try_acquire().await?.map(|handle| Grant {
                token: None,
                held: Box::new(DlHeld(handle)),
            }))
        })
        .await
    }
}

/// A held lock of either `distributed-lock` crate.
struct DlHeld<H>(H);

#[async_trait]
impl<H: LockHandle + 'static> Held for DlHeld<H> {
    async fn release(self: Box<Self>) -> Result<()> {
        self.0.release().await?;
        Ok(())
    }
}

/// `distributed-lock-postgres` 0.2: advisory locks from a pool, waiting
/// with `lock_timeout` inside a transaction.
pub struct DlPostgres {
    url: String,
}

impl DlPostgres {
    /// Subject on the Postgres server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
        }
    }
}

#[async_trait]
impl Subject for DlPostgres {
    fn label(&self) -> String {
        "distributed-lock-postgres 0.2".into()
    }

    fn family(&self) -> Family {
        Family::Peer
    }

    fn note(&self) -> Option<String> {
        Some("defaults (session advisory lock, server-side wait)".into())
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        let provider =
            distributed_lock_postgres::PostgresLockProvider::new(self.url.clone()).await?;
        Ok(Box::new(DlPostgresClient { provider }))
    }
}

struct DlPostgresClient {
    provider: distributed_lock_postgres::PostgresLockProvider,
}

#[async_trait]
impl Client for DlPostgresClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let lock = self.provider.create_lock(lock);
        let handle = if wait.is_zero() {
            lock.try_acquire().await?
        } else {
            match lock.acquire(Some(wait)).await {
                Ok(handle) => Some(handle),
                Err(LockError::Timeout(_)) => None,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(handle.map(|handle| Grant {
            token: None,
            held: Box::new(DlHeld(handle)),
        }))
    }
}
