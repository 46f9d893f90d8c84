//! # lockkit-dag
//!
//! Pipelines for lockkit (`ARCHITECTURE.md` §11): a team describes its
//! tasks and pipelines in YAML ([`spec`]), loads them into a relational
//! catalog ([`catalog`]) that finds the sub-tasks shared by several
//! pipelines, and runs a pipeline ([`runner`]) with each locked task under
//! a lease, so that a shared sub-task never runs in two pipelines at once.
//! Every run is recorded, and [`timeline`] draws the recorded runs.
//!
//! The CLI surfaces all of it as `lockkit dag …` (see the README).
//!
//! ```no_run
//! # async fn demo() -> Result<(), lockkit_dag::DagError> {
//! use std::sync::Arc;
//! use lockkit_dag::{Catalog, RunOptions, Spec};
//!
//! let spec = Spec::from_paths(&["pipelines.yaml".into()])?;
//! let catalog = Catalog::open("sqlite:///var/lib/lockkit/catalog.db").await?;
//! catalog.load(&spec).await?;
//! for shared in catalog.shared_tasks().await? {
//!     println!("{} is used by {:?}", shared.task, shared.pipelines);
//! }
//! let backend = Arc::new(lockkit_core::memory::MemoryBackend::new());
//! let run = lockkit_dag::run_pipeline(&catalog, backend, "DAG1", &RunOptions::default()).await?;
//! println!("{}", lockkit_dag::report::summary(&run));
//! # Ok(()) }
//! ```

pub mod catalog;
mod error;
mod graph;
pub mod process;
pub mod record;
pub mod report;
pub mod runner;
pub mod spec;
pub mod timeline;

pub use crate::catalog::Catalog;
pub use crate::error::{DagError, Result, SpecProblem, SpecProblems};
pub use crate::record::{Outcome, RunRecord, TaskRunRecord};
pub use crate::runner::{RunOptions, run_pipeline};
pub use crate::spec::{Action, LockPolicy, Pipeline, Spec, Task, TaskLock};
