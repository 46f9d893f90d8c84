//! Where lockkit keeps things in ZooKeeper, and how names become node names.
//!
//! ```text
//! <chroot>/<root>/clock                       persistent; written to read the server's clock
//! <chroot>/<root>/locks/<encoded lock name>   container node, one per lock with lease nodes
//! <chroot>/<root>/locks/<encoded lock name>/lk-<encoded lease id>-<sequence>
//!                                             EPHEMERAL_SEQUENTIAL, one per holder or waiter
//! ```
//!
//! Lock names and lease ids are percent-encoded (everything but ASCII
//! letters, digits, `_` and `-`), so `/`, `.`, emoji and other characters
//! ZooKeeper refuses in node names round-trip byte-exact.

use lockkit_core::{LeaseId, LockName};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

/// Bytes kept as they are in node names; everything else is `%XX`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'_').remove(b'-');

/// Prefix of every lease node name.
const LEASE_PREFIX: &str = "lk-";

/// Encodes a lock name (or lease id) into one node name segment.
///
/// ```
/// use lockkit_core::LockName;
/// assert_eq!(lockkit_zk::encode_name(&LockName::new("a/b c.🔒")?), "a%2Fb%20c%2E%F0%9F%94%92");
/// # Ok::<(), lockkit_core::Error>(())
/// ```
pub fn encode_name(name: &LockName) -> String {
    encode(name.as_str())
}

fn encode(raw: &str) -> String {
    utf8_percent_encode(raw, ENCODE).to_string()
}

/// Decodes a lock node name back into the lock name; `None` for nodes
/// lockkit did not create.
pub fn decode_name(segment: &str) -> Option<LockName> {
    let raw = percent_decode_str(segment).decode_utf8().ok()?;
    let name = LockName::new(raw.as_ref()).ok()?;
    // Only accept the canonical encoding, so two node names never map to
    // one lock.
    (encode_name(&name) == segment).then_some(name)
}

/// The node of lock `name` below `root` (relative to the chroot).
pub fn lock_path(root: &str, name: &LockName) -> String {
    format!("{root}/locks/{}", encode_name(name))
}

/// Paths derived from the configured root.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    root: String,
}

impl Layout {
    pub(crate) fn new(root: &str) -> Self {
        Self {
            root: root.to_owned(),
        }
    }

    /// `<root>/locks`
    pub(crate) fn locks_dir(&self) -> String {
        format!("{}/locks", self.root)
    }

    /// `<root>/clock`
    pub(crate) fn clock(&self) -> String {
        format!("{}/clock", self.root)
    }

    /// `<root>/locks/<encoded name>`
    pub(crate) fn lock(&self, name: &LockName) -> String {
        lock_path(&self.root, name)
    }
}

/// The prefix of a lease node (before ZooKeeper appends the sequence):
/// `<lock>/lk-<encoded lease id>-`. Carrying the lease id makes a create
/// whose reply was lost findable (the "protected" create).
pub(crate) fn lease_prefix(lock: &str, lease_id: &LeaseId) -> String {
    format!("{lock}/{}", lease_node_stem(lease_id))
}

fn lease_node_stem(lease_id: &LeaseId) -> String {
    format!("{LEASE_PREFIX}{}-", encode(lease_id.as_str()))
}

/// One lease node in a lock's queue, parsed from its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    /// The node name (last path segment).
    pub(crate) node: String,
    /// The sequence ZooKeeper appended.
    pub(crate) sequence: i64,
}

impl Member {
    /// Parses a child name; `None` for nodes lockkit did not create.
    pub(crate) fn parse(node: &str) -> Option<Self> {
        let rest = node.strip_prefix(LEASE_PREFIX)?;
        let (_, digits) = rest.rsplit_once('-')?;
        if digits.len() < 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Self {
            node: node.to_owned(),
            sequence: digits.parse().ok()?,
        })
    }

    /// Whether this node was created for `lease_id`.
    pub(crate) fn is_for(&self, lease_id: &LeaseId) -> bool {
        self.node.starts_with(&lease_node_stem(lease_id))
    }
}

/// Parses and sorts a lock's children by sequence (queue order), dropping
/// nodes lockkit did not create.
pub(crate) fn queue(children: &[String]) -> Vec<Member> {
    let mut members: Vec<Member> = children.iter().filter_map(|c| Member::parse(c)).collect();
    members.sort_by_key(|m| m.sequence);
    members
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_canonical() {
        for raw in ["node_b", "a/b", ".", "..", "x y", "🔒", "%41", "A-b_c", "é"] {
            let name = LockName::new(raw).expect("valid");
            let enc = encode_name(&name);
            assert!(!enc.contains('/') && !enc.contains('.'), "{enc}");
            assert_eq!(decode_name(&enc).expect("decodes"), name);
        }
        assert_eq!(decode_name("%61"), None, "non-canonical encoding of 'a'");
        assert_eq!(decode_name("%FF"), None, "not UTF-8");
        assert_eq!(decode_name(""), None);
    }

    #[test]
    fn members_parse_and_sort() {
        let id = LeaseId::parse("a-b/c").expect("id");
        let stem = lease_node_stem(&id);
        assert_eq!(stem, "lk-a-b%2Fc-");
        let children = vec![
            format!("{stem}0000000012"),
            "lk-x-0000000003".to_owned(),
            "junk".to_owned(),
            "lk-x-12".to_owned(),
            "lk-y-00000000019999999999".to_owned(),
        ];
        let q = queue(&children);
        let seqs: Vec<i64> = q.iter().map(|m| m.sequence).collect();
        assert_eq!(seqs, [3, 12, 19_999_999_999]);
        assert!(q[1].is_for(&id));
        assert!(!q[0].is_for(&id));
    }
}
