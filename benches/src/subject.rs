//! What a benchmark drives: a *subject* is one way to take a lock (lockkit
//! on a backend, the raw commands, a peer crate); each contender gets its
//! own client of it.

use std::time::Duration;

use async_trait::async_trait;

/// Errors of the harness and its subjects.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Result with [`BoxError`].
pub type Result<T> = std::result::Result<T, BoxError>;

/// Which family a subject belongs to, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// lockkit through its public API.
    Lockkit,
    /// The backend's own commands, issued with the same client crate.
    Raw,
    /// Another lock crate.
    Peer,
}

/// A lock implementation under test; [`Subject::client`] makes one
/// independent client (its own connection or session) per contender.
#[async_trait]
pub trait Subject: Send + Sync {
    /// Label in the report, e.g. `lockkit`, `raw SET NX PX + EVAL`.
    fn label(&self) -> String;
    /// lockkit, raw or peer.
    fn family(&self) -> Family;
    /// Whether the subject can wait for a held lock (else it is used only
    /// where no contender waits: P1 and P5).
    fn can_wait(&self) -> bool {
        true
    }
    /// A note for the report (how the subject was configured).
    fn note(&self) -> Option<String> {
        None
    }
    /// One new client.
    async fn client(&self) -> Result<Box<dyn Client>>;
}

/// One contender's connection to a subject.
#[async_trait]
pub trait Client: Send + Sync {
    /// Takes `lock`, waiting up to `wait` (`Duration::ZERO`: one try).
    /// `None` when it is busy or the wait ran out.
    async fn acquire(&self, lock: &str, wait: Duration) -> Result<Option<Grant>>;
}

/// A held lock: its fencing token when the subject has one, and how to
/// give it back.
pub struct Grant {
    /// Fencing token, when the subject issues one.
    pub token: Option<u64>,
    /// Releases the lock.
    pub held: Box<dyn Held>,
}

/// Something that releases a held lock.
#[async_trait]
pub trait Held: Send {
    /// Gives the lock back.
    async fn release(self: Box<Self>) -> Result<()>;
}

/// Repeats a one-try acquire every millisecond until `wait` runs out: how
/// subjects that cannot wait are made to (said in the report).
pub async fn retry_every_ms<F, Fut>(wait: Duration, mut attempt: F) -> Result<Option<Grant>>
where
    F: FnMut() -> Fut + Send,
    Fut: std::future::Future<Output = Result<Option<Grant>>> + Send,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if let Some(grant) = attempt().await? {
            return Ok(Some(grant));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
