//! Key names: how a lock name becomes Redis keys and a channel.
//!
//! For lock `N` under prefix `P` (default `lockkit:`):
//!
//! | what | key | type |
//! |---|---|---|
//! | the lease | `P{E}:lock` | string, with `PX` expiry |
//! | the fencing counter | `P{E}:fence` | string (integer), no expiry |
//! | FIFO queue (arrival order) | `P{E}:queue` | sorted set, expires with its last waiter |
//! | FIFO waiter liveness | `P{E}:waiters` | sorted set, expires with its last waiter |
//! | a semaphore's permits | `P{E}:permits` | sorted set of lease ids by expiry ms, expires with its last permit |
//! | a semaphore's holders | `P{E}:holders` | hash, lease id → `<token>\n<acquired ms>\n<N>\n<owner>`, expires with `:permits` |
//! | release hints | channel `P{E}:released` | pub/sub, payload = the raw name |
//!
//! `E` is the name with `%`, `{` and `}` percent-encoded (`%25`, `%7B`,
//! `%7D`); every other byte is kept as is, so keys stay readable
//! (`lockkit:{node_b}:lock`). Because `E` never contains a brace, `{E}` is
//! the key's Redis Cluster hash tag: all keys of one lock live in one slot,
//! which the Lua scripts need. The encoding is injective, so two names never
//! share a key, and names differing only in case stay apart.

use lockkit_core::{Error, LockName, Result};

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "lockkit:";

/// Longest accepted prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 64;

/// A validated key prefix: 1..=64 bytes of ASCII letters, digits and
/// `_ - . : / |`, so it can never open a hash tag or act as a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    /// Checks `prefix`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty or over-long prefix or one with
    /// other characters (braces would break Redis Cluster hash tags, glob
    /// characters would break `SCAN` and `PSUBSCRIBE` patterns).
    ///
    /// ```
    /// use lockkit_redis::KeyPrefix;
    ///
    /// assert!(KeyPrefix::new("etl:prod:").is_ok());
    /// assert!(KeyPrefix::new("bad{prefix}").is_err());
    /// ```
    pub fn new(prefix: &str) -> Result<Self> {
        if prefix.is_empty() || prefix.len() > MAX_PREFIX_BYTES {
            return Err(Error::invalid_input(format!(
                "a Redis key prefix must have 1..={MAX_PREFIX_BYTES} bytes, got {}",
                prefix.len()
            )));
        }
        if let Some(bad) = prefix
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "_-.:/|".contains(*c)))
        {
            return Err(Error::invalid_input(format!(
                "invalid character {bad:?} in Redis key prefix {prefix:?}: use ASCII letters, digits and _ - . : / |"
            )));
        }
        Ok(Self(prefix.to_owned()))
    }

    /// The prefix as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keys and channel of one lock.
    pub fn keys(&self, name: &LockName) -> LockKeys {
        let tag = format!("{}{{{}}}", self.0, encode(name.as_str()));
        LockKeys {
            lock: format!("{tag}:lock"),
            fence: format!("{tag}:fence"),
            queue: format!("{tag}:queue"),
            waiters: format!("{tag}:waiters"),
            permits: format!("{tag}:permits"),
            holders: format!("{tag}:holders"),
            channel: format!("{tag}:released"),
        }
    }

    /// The `SCAN MATCH` pattern of every lease key under this prefix.
    pub fn lock_pattern(&self) -> String {
        format!("{}{{*}}:lock", self.0)
    }

    /// The `SCAN MATCH` pattern of every semaphore's permits key under
    /// this prefix.
    pub fn permits_pattern(&self) -> String {
        format!("{}{{*}}:permits", self.0)
    }

    /// The `PSUBSCRIBE` pattern of every release channel under this prefix.
    pub fn channel_pattern(&self) -> String {
        format!("{}{{*}}:released", self.0)
    }

    /// The lock name of a lease key found by `SCAN`, or `None` for a key
    /// that is not one of ours (another layout, undecodable, invalid name).
    pub fn name_of_lock_key(&self, key: &[u8]) -> Option<LockName> {
        self.name_of(key, "}:lock")
    }

    /// The semaphore name of a permits key found by `SCAN`, or `None` for
    /// a key that is not one of ours.
    pub fn name_of_permits_key(&self, key: &[u8]) -> Option<LockName> {
        self.name_of(key, "}:permits")
    }

    fn name_of(&self, key: &[u8], suffix: &str) -> Option<LockName> {
        let key = std::str::from_utf8(key).ok()?;
        let inner = key
            .strip_prefix(self.0.as_str())?
            .strip_prefix('{')?
            .strip_suffix(suffix)?;
        if inner.contains(['{', '}']) {
            return None;
        }
        LockName::new(decode(inner)?).ok()
    }
}

impl Default for KeyPrefix {
    fn default() -> Self {
        Self(DEFAULT_PREFIX.to_owned())
    }
}

/// The Redis keys and channel of one lock (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockKeys {
    /// The lease: `SET NX PX`.
    pub lock: String,
    /// The fencing counter (never expires).
    pub fence: String,
    /// FIFO mode: waiters in arrival order.
    pub queue: String,
    /// FIFO mode: each waiter's liveness deadline.
    pub waiters: String,
    /// A semaphore's live permits: lease ids scored by expiry (server ms).
    pub permits: String,
    /// A semaphore's holders: lease id → token, grant time, count, owner.
    pub holders: String,
    /// The pub/sub channel releases are announced on.
    pub channel: String,
}

/// Percent-encodes `%`, `{` and `}`.
fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            other => out.push(other),
        }
    }
    out
}

/// Reverses [`encode`]; `None` for anything `encode` cannot produce.
fn decode(encoded: &str) -> Option<String> {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3)?;
        out.push(match code {
            "25" => '%',
            "7B" => '{',
            "7D" => '}',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> LockName {
        LockName::new(s).unwrap()
    }

    #[test]
    fn keys_share_one_brace_free_hash_tag() {
        let prefix = KeyPrefix::default();
        let keys = prefix.keys(&name("a}{b%7B{"));
        assert_eq!(keys.lock, "lockkit:{a%7D%7Bb%257B%7B}:lock");
        for key in [
            &keys.lock,
            &keys.fence,
            &keys.queue,
            &keys.waiters,
            &keys.permits,
            &keys.holders,
            &keys.channel,
        ] {
            let open = key.find('{').unwrap();
            let close = key[open..].find('}').unwrap() + open;
            assert_eq!(&key[open + 1..close], "a%7D%7Bb%257B%7B", "{key}");
        }
        assert_eq!(prefix.keys(&name("node_b")).lock, "lockkit:{node_b}:lock");
    }

    #[test]
    fn lock_keys_round_trip() {
        let prefix = KeyPrefix::new("p:").unwrap();
        for raw in [
            "x",
            "%",
            "%25",
            "{}",
            "}:lock",
            "a b 🔒 ünï",
            "'; DROP TABLE locks; --",
            "Node_B",
        ] {
            let keys = prefix.keys(&name(raw));
            assert_eq!(
                prefix.name_of_lock_key(keys.lock.as_bytes()),
                Some(name(raw)),
                "{raw:?}"
            );
        }
        assert_eq!(prefix.name_of_lock_key(b"p:{a}{b}:lock"), None);
        assert_eq!(prefix.name_of_lock_key(b"p:{a%zz}:lock"), None);
        assert_eq!(prefix.name_of_lock_key(b"q:{a}:lock"), None);
        assert_eq!(prefix.name_of_lock_key(b"p:{a}:fence"), None);
        assert_eq!(prefix.name_of_lock_key(b"p:{}:lock"), None);
        let keys = prefix.keys(&name("a%{b"));
        assert_eq!(
            prefix.name_of_permits_key(keys.permits.as_bytes()),
            Some(name("a%{b"))
        );
        assert_eq!(prefix.name_of_permits_key(keys.lock.as_bytes()), None);
    }

    #[test]
    fn prefixes_are_validated() {
        assert!(KeyPrefix::new("").is_err());
        assert!(KeyPrefix::new(&"x".repeat(65)).is_err());
        for bad in ["a{", "a}", "a*", "a?", "a[", "a b", "a\\"] {
            assert!(KeyPrefix::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            KeyPrefix::new("etl:prod/v1|x-y_z.").unwrap().lock_pattern(),
            "etl:prod/v1|x-y_z.{*}:lock"
        );
    }
}
