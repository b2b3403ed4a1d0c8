//! The data-directory lock: one process at a time per data directory.
//!
//! Two processes on one directory would fight over the store and, worse, connect as the same
//! device and evict each other from the server. The lock is an exclusive `flock` on
//! `DIR/lock`, which also holds the holder's pid so the refusal can name it. The operating
//! system releases it when the process ends, however it ends.

use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use crate::error::ClientError;

/// The lock file of a data directory.
pub(crate) fn lock_path(dir: &Path) -> PathBuf {
    dir.join("lock")
}

/// A held data-directory lock; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist), or says who holds it.
    pub fn acquire(dir: &Path) -> Result<DirLock, ClientError> {
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(lock_path(dir))?;
        // `File::try_lock` needs Rust 1.89; rustix's flock is the same call, safe, on 1.85.
        match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                file.set_len(0)?;
                file.rewind()?;
                writeln!(file, "{}", std::process::id())?;
                file.flush()?;
                Ok(DirLock { _file: file })
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Err(ClientError::Locked { dir: dir.display().to_string(), pid: text.trim().parse().ok() })
            }
            Err(e) => Err(ClientError::Io(e.into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let first = DirLock::acquire(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        match DirLock::acquire(dir.path()) {
            Err(ClientError::Locked { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        drop(first);
        DirLock::acquire(dir.path()).unwrap_or_else(|e| panic!("released, yet: {e}"));
    }
}
