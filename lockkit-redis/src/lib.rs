//! # lockkit-redis
//!
//! Redis backend for lockkit: SET NX PX with Lua scripts, a fencing counter, pub/sub wake-ups.
//!
//! **Status: placeholder.** This crate compiles so the workspace layout of
//! DESIGN §1 is complete; issue #4 (Redis backend) fills it. Until then the facade reports a
//! configuration error for its URLs.

/// The backend kind this crate will provide, as used in metrics labels.
pub const KIND: &str = "redis";
