//! Exit codes of the `lockkit` command (the README has the same table).
//!
//! | code | meaning |
//! |---|---|
//! | the child's | `run`: the command ran under the lock; its status passes through (a child killed by signal N gives 128 + N) |
//! | 0 | success (`status`, `inspect` of a held lock, `release`, `cleanup`) |
//! | 1 | `inspect`: the lock is free; `release --force`: it was not held |
//! | 2 | usage: bad arguments, a missing `--` before the command, an invalid lock name, TTL or duration |
//! | 69 | the backend is unreachable or failed (`EX_UNAVAILABLE`) |
//! | 75 | `run`: the lock is busy (`-n`) or the wait timed out (`EX_TEMPFAIL`; change it with `-E`) |
//! | 78 | configuration: unknown URL scheme, malformed URL, unknown URL parameter, refused credentials (`EX_CONFIG`) |
//! | 79 | `run`: the lease was lost while the command ran; the command was terminated |
//! | 126 | `run`: the command could not be started (not executable) |
//! | 127 | `run`: the command was not found |
//!
//! `lockkit dag` adds:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; `run`: every task succeeded or was skipped; `timeline`: no lock's holds overlapped |
//! | 1 | `lint`: problems found; `run`: a task failed or was not run; `timeline`: holds overlapped |
//! | 2 | usage, an unknown pipeline or run id |
//! | 65 | the spec is invalid (every problem is printed: file, line, task, reason); nothing was loaded (`EX_DATAERR`) |
//! | 66 | a spec file cannot be read (`EX_NOINPUT`) |
//! | 69 | the catalog or the lock backend is unreachable |
//! | 73 | `timeline`: the SVG/HTML file cannot be written (`EX_CANTCREAT`) |
//! | 78 | configuration: a bad catalog URL |
//! | 79 | `run`: a task's lease was lost; the task was stopped and the run failed |

use lockkit::Error;

/// Bad arguments (clap's own code for usage errors).
pub const USAGE: u8 = 2;
/// `inspect`: the lock is free; `release --force`: it was not held.
pub const NOT_HELD: u8 = 1;
/// The backend is unreachable or failed.
pub const UNAVAILABLE: u8 = 69;
/// The default conflict code of `run` (busy, or the wait timed out).
pub const CONFLICT: u8 = 75;
/// A configuration error.
pub const CONFIG: u8 = 78;
/// The lease was lost while the command ran.
pub const LOST: u8 = 79;

/// The exit code for a library error.
pub fn for_error(err: &Error) -> u8 {
    match err {
        Error::InvalidName { .. }
        | Error::InvalidTtl { .. }
        | Error::InvalidInput { .. }
        | Error::PermitsMismatch { .. } => USAGE,
        Error::Configuration { .. } => CONFIG,
        Error::Lost { .. } => LOST,
        Error::Timeout { .. } => CONFLICT,
        _ => UNAVAILABLE,
    }
}

/// The table above, for `--help`.
pub const TABLE: &str = "\
Exit codes:
  child's  run: the command's own status (killed by signal N: 128+N)
  0        success; inspect: the lock is held
  1        inspect: the lock is free; release --force: it was not held
  2        usage: bad arguments, missing `--`, invalid name, TTL or duration;
           run --permits N: the lock's holders use another permit count
  69       the backend is unreachable or failed
  75       run: busy (-n) or the wait timed out (change with -E)
  78       configuration: bad URL, unknown scheme or parameter, refused credentials
  79       run: the lease was lost; the command was terminated
  126/127  run: the command could not be started / was not found
lockkit dag:
  1        lint found problems; run: a task failed; timeline: holds overlapped
  65       the spec is invalid (nothing was loaded)
  66       a spec file cannot be read
  73       timeline: the output file cannot be written
  79       run: a lease was lost; the task was stopped";
