//! # lockkit-benches
//!
//! Contention benchmarks for lockkit against the raw backends and peer
//! libraries.
//!
//! **Status: placeholder.** This crate compiles so the workspace layout of
//! `ARCHITECTURE.md` §1 is complete; a later issue fills it.

pub use lockkit_core::Capabilities;
