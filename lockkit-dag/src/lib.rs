//! # lockkit-dag
//!
//! Pipelines for lockkit: DAG specs with `lock:` settings on tasks, the
//! relational catalog (tasks, pipelines, dependencies) and shared-task
//! detection, plus a runner that takes each task's lock.
//!
//! **Status: placeholder.** This crate compiles so the workspace layout of
//! `ARCHITECTURE.md` §1 is complete; a later issue fills it. The `pipelines` example of
//! the `lockkit` crate shows the idea by hand meanwhile.

pub use lockkit_core::LockOptions;
