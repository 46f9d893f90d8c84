//! Who holds a permit: the rule every request applies to the live nodes
//! ahead of its own, and the same rule read from outside (`holders`).
//!
//! A node holds a permit of a semaphore of N when fewer than N live nodes
//! precede it in the queue and every one of them (that is a lockkit
//! record) asked for the same N. Nodes only ever leave the part of the
//! queue ahead of a node (new ones get higher sequence numbers), so a node
//! that was admitted stays admitted, and the last of any set of holders
//! saw all the others ahead of it when it was admitted: at most N hold,
//! and they all agree on N. A lock is the case N = 1: the head holds.

use crate::record::Node;

/// What the live nodes ahead of a request's node mean for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Fewer than its permit count are ahead, all with its count: it holds.
    Admitted,
    /// As many as its permit count (or more) are ahead: it waits.
    Waits,
    /// A node ahead asked with another permit count (`held`).
    Mismatch { held: u32 },
}

/// The rule for a request of `permits` whose node has the live nodes
/// `ahead` before it (in queue order). A mismatch wins over admission:
/// a request never holds beside a node of another count.
pub(crate) fn admit(ahead: &[Node], permits: u32) -> Admission {
    if let Some(held) = ahead
        .iter()
        .filter_map(Node::permits)
        .find(|n| *n != permits)
    {
        return Admission::Mismatch { held };
    }
    if ahead.len() < usize::try_from(permits).unwrap_or(usize::MAX) {
        Admission::Admitted
    } else {
        Admission::Waits
    }
}

/// The holders among a queue's `live` nodes (in queue order): every node
/// that [`admit`] admits against the live nodes ahead of it, in queue
/// (and so token) order. Nodes that are not lockkit records count as
/// ahead but never hold.
pub(crate) fn holders(live: Vec<Node>) -> Vec<Node> {
    let mut seen: Option<u32> = None;
    let mut mixed = false;
    let mut out = Vec::new();
    for (ahead, node) in live.into_iter().enumerate() {
        let Some(permits) = node.permits() else {
            continue;
        };
        let agrees = !mixed && seen.is_none_or(|s| s == permits);
        match seen {
            None => seen = Some(permits),
            Some(s) if s != permits => mixed = true,
            Some(_) => {}
        }
        if agrees && ahead < usize::try_from(permits).unwrap_or(usize::MAX) {
            out.push(node);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lockkit_core::LeaseId;
    use zookeeper_client::Stat;

    use super::*;
    use crate::record::{Record, State};

    fn node(i: i64, permits: Option<u32>) -> Node {
        let stat = Stat {
            czxid: i,
            mzxid: i,
            pzxid: i,
            ctime: 0,
            mtime: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        Node {
            path: format!("/l/lk-{i}"),
            record: permits.map(|n| {
                Record::new(
                    State::Held,
                    Duration::from_secs(1),
                    &LeaseId::random(),
                    "o",
                    n,
                )
            }),
            stat,
        }
    }

    fn paths(nodes: &[Node]) -> Vec<&str> {
        nodes.iter().map(|n| n.path.as_str()).collect()
    }

    #[test]
    fn the_first_n_agreeing_nodes_hold() {
        let ahead: Vec<Node> = (0..2).map(|i| node(i, Some(3))).collect();
        assert_eq!(admit(&ahead, 3), Admission::Admitted);
        assert_eq!(admit(&ahead[..0], 1), Admission::Admitted);
        let full: Vec<Node> = (0..3).map(|i| node(i, Some(3))).collect();
        assert_eq!(admit(&full, 3), Admission::Waits);
        assert_eq!(admit(&full[..1], 1), Admission::Mismatch { held: 3 });
        assert_eq!(admit(&full[..1], 4), Admission::Mismatch { held: 3 });
        // A foreign node counts as ahead but carries no count.
        assert_eq!(admit(&[node(0, None)], 1), Admission::Waits);
        let queue: Vec<Node> = (0..5).map(|i| node(i, Some(3))).collect();
        assert_eq!(paths(&holders(queue)), ["/l/lk-0", "/l/lk-1", "/l/lk-2"]);
        let lock: Vec<Node> = (0..3).map(|i| node(i, Some(1))).collect();
        assert_eq!(paths(&holders(lock)), ["/l/lk-0"]);
    }

    #[test]
    fn nodes_behind_another_count_never_hold() {
        // A lock's holder, then a semaphore's request about to leave, then
        // a lock's waiter: only the head holds.
        let queue = vec![node(0, Some(1)), node(1, Some(3)), node(2, Some(1))];
        assert_eq!(paths(&holders(queue)), ["/l/lk-0"]);
        let queue = vec![node(0, Some(3)), node(1, Some(1)), node(2, Some(3))];
        assert_eq!(paths(&holders(queue)), ["/l/lk-0"]);
        let queue = vec![node(0, None), node(1, Some(2)), node(2, Some(2))];
        assert_eq!(paths(&holders(queue)), ["/l/lk-1"]);
    }
}
