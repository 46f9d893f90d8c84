//! lockkit through its public API: one `Locker` (its own backend
//! connection) per contender, on any backend URL.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lockkit::{Error, LockBackend, LockGuard, LockOptions, Locker};

use crate::subject::{Client, Family, Grant, Held, Result, Subject};

/// lockkit on the backend `url` names.
pub struct LockkitSubject {
    url: String,
    /// The in-memory backend lives in this process: its contenders share
    /// one instance (a new `connect` would be a separate store).
    shared: Option<Arc<dyn LockBackend>>,
    ttl: Duration,
    /// Permits per name: 1 takes a lock, N a semaphore (P7).
    permits: u32,
}

impl LockkitSubject {
    /// Subject on `url` with leases of `ttl` (renewed by the guard).
    pub async fn new(url: impl Into<String>, ttl: Duration) -> Result<Self> {
        let url = url.into();
        let shared = if url.starts_with("memory:") {
            Some(lockkit::connect(&url).await?)
        } else {
            None
        };
        Ok(Self {
            url,
            shared,
            ttl,
            permits: 1,
        })
    }

    /// The same subject taking one of `permits` permits of each name (a
    /// semaphore), on the same backend.
    pub fn semaphore(&self, permits: u32) -> Self {
        Self {
            url: self.url.clone(),
            shared: self.shared.clone(),
            ttl: self.ttl,
            permits,
        }
    }

    /// A locker with its own backend connection (shared for `memory://`).
    pub async fn locker(&self, owner: &str) -> Result<Locker> {
        let backend = match &self.shared {
            Some(backend) => Arc::clone(backend),
            None => lockkit::connect(&self.url).await?,
        };
        Ok(Locker::new(backend, owner)?)
    }
}

#[async_trait]
impl Subject for LockkitSubject {
    fn label(&self) -> String {
        if self.permits == 1 {
            "lockkit".into()
        } else {
            format!("lockkit semaphore of {}", self.permits)
        }
    }

    fn family(&self) -> Family {
        Family::Lockkit
    }

    async fn client(&self) -> Result<Box<dyn Client>> {
        Ok(Box::new(LockkitClient {
            locker: self.locker("bench").await?,
            ttl: self.ttl,
            permits: self.permits,
        }))
    }
}

/// One contender's locker.
struct LockkitClient {
    locker: Locker,
    ttl: Duration,
    permits: u32,
}

#[async_trait]
impl Client for LockkitClient {
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>> {
        let options = LockOptions::new().ttl(self.ttl).permits(self.permits);
        let guard = if wait.is_zero() {
            self.locker.try_acquire_with(lock, &options).await?
        } else {
            match self
                .locker
                .acquire_with(lock, &options.wait_timeout(wait))
                .await
            {
                Ok(guard) => Some(guard),
                Err(Error::Timeout { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(guard.map(|guard| Grant {
            token: Some(guard.token().get()),
            held: Box::new(GuardHeld(guard)),
        }))
    }
}

struct GuardHeld(LockGuard);

#[async_trait]
impl Held for GuardHeld {
    async fn release(self: Box<Self>) -> Result<()> {
        self.0.release().await?;
        Ok(())
    }
}
