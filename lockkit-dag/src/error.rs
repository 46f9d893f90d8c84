//! The errors of the pipeline layer.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a spec: where, what, why.
///
/// Displayed as `FILE:LINE: CONTEXT: REASON` (the line when the parser
/// knows it), the shape compilers use, so editors can jump to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblem {
    /// The spec file.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<u64>,
    /// What the problem is in: `task NodeB`, `pipeline DAG1`, or empty for
    /// the file as a whole.
    pub context: String,
    /// Why it is a problem.
    pub reason: String,
}

impl fmt::Display for SpecProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.context.is_empty() {
            write!(f, ": {}", self.context)?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// The problems of an invalid spec, one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecProblems(pub Vec<SpecProblem>);

impl fmt::Display for SpecProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

/// What can go wrong in `lockkit-dag`.
#[derive(Debug, thiserror::Error)]
pub enum DagError {
    /// The spec is invalid; nothing was written.
    #[error("invalid spec:\n{0}")]
    InvalidSpec(SpecProblems),
    /// A spec file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No pipeline of this name is in the catalog.
    #[error("no pipeline {name:?} in the catalog (known: {known})")]
    UnknownPipeline {
        /// The name asked for.
        name: String,
        /// The names the catalog has, comma-separated.
        known: String,
    },
    /// No recorded run has this id.
    #[error("no recorded run {0}")]
    UnknownRun(i64),
    /// Bad input other than a spec (a run id, a template, an option).
    #[error("{0}")]
    InvalidInput(String),
    /// The catalog database failed or cannot be reached; the lock
    /// library's classification (configuration, transient, backend).
    #[error(transparent)]
    Catalog(#[from] lockkit_core::Error),
    /// Writing an output file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl DagError {
    /// An error for one problem of a spec.
    pub(crate) fn spec(problem: SpecProblem) -> Self {
        Self::InvalidSpec(SpecProblems(vec![problem]))
    }
}

/// The result type of this crate.
pub type Result<T, E = DagError> = std::result::Result<T, E>;
