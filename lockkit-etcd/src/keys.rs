//! Where locks live in etcd's key space, and what their values hold.
//!
//! A lock named `N` is the set of keys `<prefix>/<enc(N)>/<enc(lease id)>`,
//! one per request (holder or waiter). `enc` percent-encodes every byte
//! outside `A-Z a-z 0-9 - _ . ~`, so a name's segment never contains `/`
//! and the keys of `a` are never inside the range of `a/b`. Names are
//! returned byte-exact by decoding the segment.
//!
//! The value of a lock's key (one permit) is
//! `lockkit1\n<acquired at, ms since the Unix epoch>\n<owner>`; a
//! semaphore's (N > 1 permits) is
//! `lockkit2\n<acquired at>\n<N>\n<owner>`, so that every request can see
//! the permit count of the keys ahead of it (owner labels contain no
//! control characters, so no newline). Locks keep the first form, which
//! earlier versions of this crate read.

use std::time::{Duration, SystemTime};

use lockkit_core::spi::system_time_from_millis;
use lockkit_core::{Error, LeaseId, LockName, Result};

/// The first line of a lock's value (one permit).
const VALUE_MAGIC: &str = "lockkit1";

/// The first line of a semaphore's value (N > 1 permits).
const SEMAPHORE_MAGIC: &str = "lockkit2";

/// The key layout under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// The prefix with one trailing `/`, e.g. `lockkit/`.
    root: String,
}

impl Layout {
    /// A layout under `prefix` (trailing slashes are ignored).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty prefix or one with control
    /// characters.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::invalid_input(
                "the etcd key prefix must not be empty",
            ));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(Error::invalid_input(
                "the etcd key prefix must not contain control characters",
            ));
        }
        Ok(Self {
            root: format!("{trimmed}/"),
        })
    }

    /// `<prefix>/`: every key of every lock starts with it.
    pub(crate) fn root(&self) -> &str {
        &self.root
    }

    /// `<prefix>/<enc(name)>/`: every key (holder and waiters) of one lock.
    pub(crate) fn name_prefix(&self, name: &LockName) -> String {
        format!("{}{}/", self.root, encode(name.as_str()))
    }

    /// The key of one request for `name`.
    pub(crate) fn key(&self, name: &LockName, lease_id: &LeaseId) -> String {
        format!("{}{}", self.name_prefix(name), encode(lease_id.as_str()))
    }

    /// Splits a key written by this layout into the lock name and lease id;
    /// `None` for keys that are not ours.
    pub(crate) fn parse(&self, key: &[u8]) -> Option<(LockName, LeaseId)> {
        let key = std::str::from_utf8(key).ok()?;
        let rest = key.strip_prefix(&self.root)?;
        let (name, lease) = rest.split_once('/')?;
        let name = LockName::new(decode(name)?).ok()?;
        let lease = LeaseId::parse(&decode(lease)?).ok()?;
        Some((name, lease))
    }
}

/// The value stored with a key: who asked, when (by the requesting
/// client's clock; etcd has no server time) and with how many permits.
pub(crate) fn value(owner: &str, at: SystemTime, permits: u32) -> String {
    let ms = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis();
    if permits == 1 {
        format!("{VALUE_MAGIC}\n{ms}\n{owner}")
    } else {
        format!("{SEMAPHORE_MAGIC}\n{ms}\n{permits}\n{owner}")
    }
}

/// What a value written by [`value`] says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    /// The requester's owner label.
    pub(crate) owner: String,
    /// When it asked (or was last re-checked in line).
    pub(crate) at: SystemTime,
    /// The permit count it asked with.
    pub(crate) permits: u32,
}

/// Reads a value written by [`value`]; `None` for values that are not
/// ours.
pub(crate) fn parse_value(raw: &[u8]) -> Option<Stored> {
    let text = std::str::from_utf8(raw).ok()?;
    let (magic, rest) = text.split_once('\n')?;
    let (ms, rest) = rest.split_once('\n')?;
    let ms: i64 = ms.parse().ok()?;
    let (permits, owner) = match magic {
        VALUE_MAGIC => (1, rest),
        SEMAPHORE_MAGIC => {
            let (permits, owner) = rest.split_once('\n')?;
            (permits.parse().ok().filter(|n| *n > 0)?, owner)
        }
        _ => return None,
    };
    Some(Stored {
        owner: owner.to_owned(),
        at: system_time_from_millis(ms),
        permits,
    })
}

/// The permit count stored in a key's value; `None` for values that are
/// not ours.
pub(crate) fn permits_of(raw: &[u8]) -> Option<u32> {
    parse_value(raw).map(|stored| stored.permits)
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes every byte outside the URL "unreserved" set.
pub(crate) fn encode(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Reverses [`encode`]; `None` for malformed input or non-UTF-8 results.
pub(crate) fn decode(encoded: &str) -> Option<String> {
    let bytes = encoded.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = encoded.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_nest() {
        let layout = Layout::new("locks/").unwrap();
        assert_eq!(layout.root(), "locks/");
        for raw in [
            "a",
            "a/b",
            "'; DROP TABLE locks; --",
            "../x",
            "with space ",
            "%41",
            "emoji 🔒",
            &"é".repeat(127),
        ] {
            let name = LockName::new(raw).unwrap();
            let lease = LeaseId::random();
            let key = layout.key(&name, &lease);
            assert!(key.starts_with(&layout.name_prefix(&name)));
            let (n, l) = layout.parse(key.as_bytes()).unwrap();
            assert_eq!(n.as_str(), raw);
            assert_eq!(l, lease);
        }
        let a = layout.name_prefix(&LockName::new("a").unwrap());
        let ab = layout.name_prefix(&LockName::new("a/b").unwrap());
        assert!(!ab.starts_with(&a), "{ab} must not be inside {a}");
        assert!(layout.parse(b"other/a/b").is_none());
        assert!(layout.parse(b"locks/%zz/b").is_none());
    }

    #[test]
    fn prefix_is_validated() {
        assert!(Layout::new("").is_err());
        assert!(Layout::new("///").is_err());
        assert!(Layout::new("a\nb").is_err());
    }

    #[test]
    fn values_round_trip() {
        let at = system_time_from_millis(1_700_000_000_123);
        let owner = "'; DROP -- \"x\" 🔒";
        for permits in [1, 2, 1024] {
            let stored = parse_value(value(owner, at, permits).as_bytes()).unwrap();
            assert_eq!(stored.owner, owner);
            assert_eq!(stored.at, at);
            assert_eq!(stored.permits, permits);
        }
        assert!(
            value(owner, at, 1).starts_with("lockkit1\n"),
            "locks keep the old form"
        );
        assert!(parse_value(b"garbage").is_none());
        assert!(parse_value(b"lockkit2\n1\n0\nowner").is_none());
        assert!(parse_value(b"lockkit2\n1\nx\nowner").is_none());
    }
}
