//! SQLite's cross-process wake-ups: a *wake file* next to the database
//! (`<db>-lockkit-wake`). A release writes one byte into it; every backend
//! on the same file watches it (inotify on Linux, through `notify`) and
//! wakes its waiters, so a waiting process learns of a release within
//! milliseconds instead of at its next poll. Polling stays as the fallback
//! (a lease that simply expires writes nothing; a file system without
//! change events, such as NFS, delivers none) — ARCHITECTURE.md §6.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lockkit_core::Error;
use lockkit_core::spi::Wakes;
use notify::{EventKind, RecursiveMode, Watcher};

use crate::dialect::{Announcer, ListenerTask, StartListener};

/// The wake file of the database at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-lockkit-wake");
    PathBuf::from(name)
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Writes one byte at offset 0 (the file never grows): a change event for
/// every watcher. Best effort: a failure only means waiters poll.
pub(crate) fn announcer(path: PathBuf) -> Announcer {
    let file: Arc<std::sync::OnceLock<Option<File>>> = Arc::default();
    Arc::new(move || {
        if let Some(file) = file.get_or_init(|| open(&path).ok())
            && let Err(err) = file.write_at(b"r", 0)
        {
            tracing::debug!(error = %err, "writing the SQLite wake file failed; waiters poll");
        }
    })
}

/// Starts watching `path`: every change wakes every waiter of this
/// backend (the file does not say which lock was released).
pub(crate) fn listener(path: PathBuf) -> StartListener {
    Box::new(move |wakes: Arc<Wakes>| {
        let path = path.clone();
        Box::pin(async move {
            open(&path).map_err(|e| {
                Error::backend(
                    "sqlite",
                    format!("cannot create the wake file {}: {e}", path.display()),
                    Some(Box::new(e) as lockkit_core::BoxError),
                )
            })?;
            let mut watcher =
                notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                    match event {
                        Ok(event)
                            if matches!(
                                event.kind,
                                EventKind::Modify(_) | EventKind::Create(_)
                            ) =>
                        {
                            wakes.notify_all();
                        }
                        Ok(_) => {}
                        // Missed events: wake everyone, they re-check.
                        Err(_) => wakes.notify_all(),
                    }
                })
                .map_err(|e| watch_error(&path, e))?;
            watcher
                .watch(&path, RecursiveMode::NonRecursive)
                .map_err(|e| watch_error(&path, e))?;
            // The task owns the watcher; aborting it (dropping the
            // ListenerTask) stops the watch.
            Ok(ListenerTask(tokio::spawn(async move {
                let _watcher = watcher;
                std::future::pending::<()>().await;
            })))
        })
    })
}

fn watch_error(path: &Path, err: notify::Error) -> Error {
    Error::backend(
        "sqlite",
        format!("cannot watch the wake file {}: {err}", path.display()),
        Some(Box::new(err) as lockkit_core::BoxError),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wake_file_sits_next_to_the_database() {
        assert_eq!(
            path_for(Path::new("/data/locks.db")),
            PathBuf::from("/data/locks.db-lockkit-wake")
        );
    }
}
