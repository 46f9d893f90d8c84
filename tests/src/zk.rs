//! Fixture and harness for the zk backend (see issue text); filled by its issue.
