//! Fixture and harness for the redis backend (see issue text); filled by its issue.
