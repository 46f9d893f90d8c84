//! # lockkit-zk
//!
//! ZooKeeper backend for lockkit: ephemeral sequential nodes, protected creates, czxid tokens.
//!
//! **Status: placeholder.** This crate compiles so the workspace layout of
//! DESIGN §1 is complete; issue #6 (ZooKeeper backend) fills it. Until then the facade reports a
//! configuration error for its URLs.

/// The backend kind this crate will provide, as used in metrics labels.
pub const KIND: &str = "zookeeper";
