//! The lock `coordinator serve` holds on its state directory, as the node
//! holds one on its own: two servers on one database would each think
//! they hold every map stream (online flags, ephemeral sweeps and the
//! relay's clients would fight). The admin commands (`authkey …`,
//! `nodes …`) do not take it: they are meant to run beside the server.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file in the state directory.
pub const LOCK_FILE_NAME: &str = "serve.lock";

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another `coordinator serve` runs on this state directory.
    #[error(
        "state directory {path} is in use by another coordinator serve{}: two coordinators must not share one database (stop the other one, or give this one its own --state-dir)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// The directory or the lock file could not be created or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// Held while the server runs; dropping it releases the lock.
#[derive(Debug)]
pub struct ServeLock {
    _lock: Flock<File>,
}

impl ServeLock {
    /// Creates `state_dir` (0700) if needed and takes an exclusive `flock`
    /// on `<state_dir>/serve.lock` without waiting, writing our pid into
    /// it for the next one's error message.
    pub fn acquire(state_dir: &Path) -> Result<ServeLock, LockError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LockError::Io { path, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(io(state_dir))?;
        let path = state_dir.join(LOCK_FILE_NAME);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                return Err(LockError::InUse {
                    path: state_dir.to_path_buf(),
                    pid: s.trim().parse().ok(),
                });
            }
        };
        lock.set_len(0).map_err(io(&path))?;
        writeln!(&mut *lock, "{}", std::process::id()).map_err(io(&path))?;
        Ok(ServeLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_pid_until_the_first_drops() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("coord");
        let first = ServeLock::acquire(&state).expect("first");
        let e = ServeLock::acquire(&state).expect_err("second");
        let text = e.to_string();
        assert!(
            text.contains(&format!("(pid {})", std::process::id())),
            "{text}"
        );
        assert!(text.contains("another coordinator serve"), "{text}");
        // The admin commands' store still opens beside the lock.
        crate::Store::open(&state).expect("store opens beside the lock");
        drop(first);
        ServeLock::acquire(&state).expect("free again");
    }
}
