//! Checking a recorded history against a mutex model.
//!
//! Every grant a taker reported opens a *claim*: the interval in which its
//! holder may act as the lock's holder. A claim ends at the earliest of the
//! release being invoked, the guard's lost signal, and the guard's safe
//! deadline (moved by each reported renewal) — a holder past its deadline
//! has, by the contract, declared the lease lost even if it has not noticed
//! yet (it was paused). The model holds when no two claims on one lock
//! overlap and tokens rise in grant order.

use std::collections::BTreeMap;

use super::event::{Event, Kind};
use super::taker::granted;

/// One holder's claim on a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The taker.
    pub proc: String,
    /// The lock.
    pub lock: String,
    /// The grant's fencing token.
    pub token: u64,
    /// The grant's lease id.
    pub lease: String,
    /// When the grant was reported ([`mono_ns`](super::event::mono_ns)).
    pub start: u64,
    /// When the claim ended (see the module docs).
    pub end: u64,
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (token {}, lease {}…) from {} ms to {} ms",
            self.proc,
            self.token,
            self.lease.get(..8).unwrap_or(&self.lease),
            self.start / 1_000_000,
            self.end / 1_000_000
        )
    }
}

impl Claim {
    fn overlaps(&self, other: &Claim) -> bool {
        self.lock == other.lock
            && self.lease != other.lease
            && self.start < other.end
            && other.start < self.end
    }
}

/// What [`check`] found.
#[derive(Debug, Clone, Default)]
pub struct HistoryCheck {
    /// Every claim, in grant order.
    pub claims: Vec<Claim>,
    /// Pairs of claims on one lock that overlap.
    pub overlaps: Vec<(Claim, Claim)>,
    /// Consecutive grants of one lock whose token did not rise.
    pub token_regressions: Vec<(Claim, Claim)>,
}

impl HistoryCheck {
    /// Whether the history fits the mutex model.
    pub fn holds(&self) -> bool {
        self.overlaps.is_empty() && self.token_regressions.is_empty()
    }

    /// The grants of `lock`, in order.
    pub fn grants(&self, lock: &str) -> Vec<&Claim> {
        self.claims.iter().filter(|c| c.lock == lock).collect()
    }

    /// A readable account of the violations, on one line.
    pub fn describe(&self) -> String {
        let mut lines = Vec::new();
        for (a, b) in &self.overlaps {
            lines.push(format!("{a} overlaps {b}"));
        }
        for (a, b) in &self.token_regressions {
            lines.push(format!("{a}, then {b}"));
        }
        lines.join("; ")
    }
}

/// Builds the claims of `events` and checks them (see the module docs).
pub fn check(events: &[Event]) -> HistoryCheck {
    let mut open: BTreeMap<String, Claim> = BTreeMap::new();
    let mut claims = Vec::new();
    for event in events {
        let Some(lease) = event.lease.clone() else {
            continue;
        };
        if granted(event) {
            let claim = Claim {
                proc: event.proc.clone(),
                lock: event.lock.clone().unwrap_or_default(),
                token: event.token.unwrap_or(0),
                lease: lease.clone(),
                start: event.t,
                end: event.deadline.unwrap_or(event.t),
            };
            if let Some(old) = open.insert(lease, claim) {
                claims.push(old);
            }
            continue;
        }
        let Some(claim) = open.get_mut(&lease) else {
            continue;
        };
        match event.ev {
            Kind::Renewed => {
                if let Some(deadline) = event.deadline {
                    claim.end = claim.end.max(deadline);
                }
            }
            Kind::Lost => claim.end = claim.end.min(event.t),
            Kind::Invoke if event.op.as_deref() == Some("release") => {
                claim.end = claim.end.min(event.t);
            }
            _ => {}
        }
    }
    claims.extend(open.into_values());
    claims.sort_by_key(|c| (c.start, c.token));
    let mut overlaps = Vec::new();
    for (i, a) in claims.iter().enumerate() {
        for b in &claims[i + 1..] {
            if a.overlaps(b) {
                overlaps.push((a.clone(), b.clone()));
            }
        }
    }
    let mut last: BTreeMap<&str, &Claim> = BTreeMap::new();
    let mut token_regressions = Vec::new();
    for claim in &claims {
        if let Some(previous) = last.insert(&claim.lock, claim)
            && claim.token <= previous.token
        {
            token_regressions.push((previous.clone(), claim.clone()));
        }
    }
    HistoryCheck {
        claims,
        overlaps,
        token_regressions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(
        proc: &str,
        t: u64,
        ev: Kind,
        op: &str,
        lease: &str,
        token: u64,
        deadline: u64,
    ) -> Event {
        let mut e = Event::now(proc, ev).op(op);
        e.t = t;
        e.lock = Some("l".into());
        e.lease = Some(lease.into());
        e.token = Some(token);
        e.deadline = Some(deadline);
        e
    }

    #[test]
    fn a_paused_holder_past_its_deadline_does_not_overlap() {
        let events = vec![
            event("a", 10, Kind::Ok, "acquire", "la", 1, 100),
            // b is granted after a's deadline; a notices only later.
            event("b", 150, Kind::Ok, "acquire", "lb", 2, 300),
            event("a", 200, Kind::Lost, "", "la", 1, 0),
        ];
        let check = check(&events);
        assert!(check.holds(), "{}", check.describe());
        assert_eq!(check.claims.len(), 2);
    }

    #[test]
    fn overlaps_and_regressions_are_found() {
        let events = vec![
            event("a", 10, Kind::Ok, "acquire", "la", 5, 100),
            event("a", 50, Kind::Renewed, "", "la", 5, 400),
            event("b", 150, Kind::Ok, "acquire", "lb", 5, 300),
        ];
        let check = check(&events);
        assert_eq!(check.overlaps.len(), 1, "{}", check.describe());
        assert_eq!(check.token_regressions.len(), 1);
    }
}
