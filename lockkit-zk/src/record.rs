//! What a lease node stores, and when it counts as expired.
//!
//! The data is seven lines of UTF-8 (owner labels and lease ids cannot hold
//! control characters, so newlines separate them safely):
//!
//! ```text
//! lockkit-zk/1
//! held | waiting
//! <ttl in ms>
//! <granted at, ms since the epoch by the server's clock; 0 = the node's mtime>
//! <lease id>
//! <owner>
//! <permit count: 1 for a lock, N for a semaphore>
//! ```
//!
//! The permit count came last, after the first release: a record without
//! it is a lock's (1), and a reader that predates it still parses the
//! record (it takes the count for part of the owner label), so it keeps
//! honouring the node's TTL.

use std::time::{Duration, SystemTime};

use lockkit_core::spi::{system_time_from_millis, ttl_millis};
use lockkit_core::{FencingToken, LeaseId, LockInfo, LockName};
use zookeeper_client::Stat;

const MAGIC: &str = "lockkit-zk/1";

/// Whether a node holds the lock or waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// Granted; expires `ttl` after its last write (mtime) unless renewed.
    Held,
    /// Queued; like a held node it expires `ttl` after its last write, so
    /// live waiters rewrite their node every third of the TTL and a waiter
    /// whose process died stops blocking the queue after TTL + margin (not
    /// after the session timeout).
    Waiting,
}

/// The parsed data of a lease node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) state: State,
    pub(crate) ttl_ms: u64,
    pub(crate) granted_ms: i64,
    pub(crate) lease_id: LeaseId,
    pub(crate) owner: String,
    /// The permit count the request asked with (1 for a lock).
    pub(crate) permits: u32,
}

impl Record {
    pub(crate) fn new(
        state: State,
        ttl: Duration,
        lease_id: &LeaseId,
        owner: &str,
        permits: u32,
    ) -> Self {
        Self {
            state,
            ttl_ms: u64::try_from(ttl_millis(ttl).max(1)).unwrap_or(u64::MAX),
            granted_ms: 0,
            lease_id: lease_id.clone(),
            owner: owner.to_owned(),
            permits,
        }
    }

    pub(crate) fn with_granted_ms(mut self, granted_ms: i64) -> Self {
        self.granted_ms = granted_ms;
        self
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let state = match self.state {
            State::Held => "held",
            State::Waiting => "waiting",
        };
        format!(
            "{MAGIC}\n{state}\n{}\n{}\n{}\n{}\n{}",
            self.ttl_ms, self.granted_ms, self.lease_id, self.owner, self.permits
        )
        .into_bytes()
    }

    /// Parses node data; `None` when it is not a lockkit record.
    pub(crate) fn decode(data: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(data).ok()?;
        let mut lines = text.splitn(7, '\n');
        if lines.next()? != MAGIC {
            return None;
        }
        let state = match lines.next()? {
            "held" => State::Held,
            "waiting" => State::Waiting,
            _ => return None,
        };
        let ttl_ms = lines.next()?.parse().ok()?;
        let granted_ms = lines.next()?.parse().ok()?;
        let lease_id = LeaseId::parse(lines.next()?).ok()?;
        let owner = lines.next()?.to_owned();
        let permits = match lines.next() {
            // A record written before permit counts: a lock's.
            None => 1,
            Some(count) => count.parse().ok().filter(|n| *n >= 1)?,
        };
        Some(Self {
            state,
            ttl_ms,
            granted_ms,
            lease_id,
            owner,
            permits,
        })
    }
}

/// A lease node as read from the server: its record (if it parses) and stat.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) path: String,
    pub(crate) record: Option<Record>,
    pub(crate) stat: Stat,
}

impl Node {
    /// When (server ms) this node expires unless rewritten, counting
    /// `margin`: `ttl` after its last write (`mtime`), for held and waiting
    /// nodes alike. `None` for nodes that are not lockkit records, which
    /// only go away with their session.
    pub(crate) fn expires_ms(&self, margin: Duration) -> Option<i64> {
        let record = self.record.as_ref()?;
        let ttl = i64::try_from(record.ttl_ms).unwrap_or(i64::MAX);
        let margin = i64::try_from(margin.as_millis()).unwrap_or(i64::MAX);
        Some(self.stat.mtime.saturating_add(ttl).saturating_add(margin))
    }

    /// Whether this node (holder or waiter) expired by `server_now_ms`.
    pub(crate) fn is_expired(&self, server_now_ms: i64, margin: Duration) -> bool {
        self.expires_ms(margin)
            .is_some_and(|at| at <= server_now_ms)
    }

    /// The permit count of this node's request, if it is a lockkit record.
    pub(crate) fn permits(&self) -> Option<u32> {
        self.record.as_ref().map(|r| r.permits)
    }

    /// The fencing token: the node's creation zxid.
    pub(crate) fn token(&self) -> FencingToken {
        FencingToken::new(u64::try_from(self.stat.czxid).unwrap_or(0))
    }

    /// What `current`/`list` report for this node as holder of `name`.
    pub(crate) fn info(&self, name: &LockName) -> Option<LockInfo> {
        let record = self.record.as_ref()?;
        let granted = if record.granted_ms > 0 {
            record.granted_ms
        } else {
            self.stat.mtime
        };
        let expires: SystemTime =
            system_time_from_millis(self.stat.mtime) + Duration::from_millis(record.ttl_ms);
        Some(
            LockInfo::new(
                name.clone(),
                record.owner.clone(),
                record.lease_id.clone(),
                self.token(),
                system_time_from_millis(granted),
                Some(expires),
            )
            .with_permits(record.permits),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let id = LeaseId::random();
        let owner = "'; DROP TABLE locks; -- \"o\" 🔒";
        let r =
            Record::new(State::Held, Duration::from_micros(1500), &id, owner, 3).with_granted_ms(7);
        assert_eq!(r.ttl_ms, 2, "TTLs round up to whole milliseconds");
        let back = Record::decode(&r.encode()).expect("decodes");
        assert_eq!(back, r);
        let old = format!("lockkit-zk/1\nwaiting\n5\n0\n{id}\nowner");
        let old = Record::decode(old.as_bytes()).expect("a record without a permit count");
        assert_eq!((old.permits, old.owner.as_str()), (1, "owner"));
        let zero = format!("lockkit-zk/1\nheld\n5\n0\n{id}\nowner\n0");
        assert_eq!(
            Record::decode(zero.as_bytes()),
            None,
            "0 permits is no record"
        );
        assert_eq!(Record::decode(b"other"), None);
        assert_eq!(Record::decode(b"lockkit-zk/1\nheld\n1\n0\n"), None);
    }
}
