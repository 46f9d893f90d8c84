//! Fixture and harness for the etcd backend (see issue text); filled by its issue.
