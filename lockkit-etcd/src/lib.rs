//! # lockkit-etcd
//!
//! etcd backend for lockkit: one session lease per client, FIFO revision queue, watches.
//!
//! **Status: placeholder.** This crate compiles so the workspace layout of
//! DESIGN §1 is complete; issue #5 (etcd backend) fills it. Until then the facade reports a
//! configuration error for its URLs.

/// The backend kind this crate will provide, as used in metrics labels.
pub const KIND: &str = "etcd";
