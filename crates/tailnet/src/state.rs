//! The node's state directory: its keys and registration, kept across
//! restarts, and a lock so two processes never run one identity.
//!
//! Two replicas sharing one identity is the classic sidecar failure
//! ("machine key cloning", tailscale#4837): [`StateDir::open`] takes an
//! exclusive `flock` on `<dir>/lock` and a second process gets
//! [`StateError::InUse`] naming the holder's pid. Files are written
//! atomically (temporary file + rename) with mode 0600 in a 0700 directory.

use nix::fcntl::{Flock, FlockArg};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tailnet_wire::PrivateKey;

/// What went wrong with the state directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// Another process holds the directory.
    #[error(
        "state directory {path} is in use by another process{}: two processes must not share one node identity",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The directory.
        path: PathBuf,
        /// The holder's pid, when it wrote one.
        pid: Option<u32>,
    },
    /// A file could not be read or written.
    #[error("state directory {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file holds something that is not a key (its content is not
    /// repeated here).
    #[error("key file {0} is corrupt")]
    CorruptKey(PathBuf),
    /// A JSON file does not parse.
    #[error("state file {path} is corrupt: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The three private keys of a node.
#[derive(Debug, Clone)]
pub struct NodeKeys {
    /// Identifies the machine to control (Noise).
    pub machine: PrivateKey,
    /// The WireGuard static key (node key).
    pub node: PrivateKey,
    /// Seals disco messages. Never persisted: a fresh one every start, as
    /// Go's magicsock makes one per process, so peers see a new disco key
    /// in the netmap and know this node restarted (they drop its old
    /// WireGuard session and handshake again).
    pub disco: PrivateKey,
}

/// An open, locked state directory.
#[derive(Debug)]
pub struct StateDir {
    path: PathBuf,
    _lock: Flock<File>,
}

impl StateDir {
    /// Opens (creating it 0700 if needed) and locks `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<StateDir, StateError> {
        let path = path.as_ref().to_path_buf();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&path)
            .map_err(io_err(&path))?;
        let lock_path = path.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((mut f, _)) => {
                let mut s = String::new();
                let _ = f.read_to_string(&mut s);
                return Err(StateError::InUse {
                    path,
                    pid: s.trim().parse().ok(),
                });
            }
        };
        lock.set_len(0).map_err(io_err(&lock_path))?;
        writeln!(&mut *lock, "{}", std::process::id()).map_err(io_err(&lock_path))?;
        // `create` sets 0700 only on a directory it makes: an existing one
        // keeps its mode, and the keys and the local API socket (bound,
        // then chmod-ed) would sit in a directory others can enter.
        let mode = fs::metadata(&path)
            .map_err(io_err(&path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(io_err(&path))?;
            tracing::info!(path = %path.display(), was = format!("{:o}", mode & 0o777), "state directory restricted to 0700");
        }
        Ok(StateDir { path, _lock: lock })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Loads the node's machine and node keys, creating each missing one,
    /// and makes a fresh disco key (see [`NodeKeys::disco`]). A
    /// `disco.key` left by an earlier version is removed: it is a secret
    /// nothing uses any more.
    pub fn keys(&self) -> Result<NodeKeys, StateError> {
        let old_disco = self.path.join("disco.key");
        match fs::remove_file(&old_disco) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&old_disco)(e)),
        }
        Ok(NodeKeys {
            machine: self.key("machine.key")?,
            node: self.key("node.key")?,
            disco: PrivateKey::generate(),
        })
    }

    /// Replaces the node key (after the old one expired or was rejected).
    pub fn rotate_node_key(&self) -> Result<PrivateKey, StateError> {
        let k = PrivateKey::generate();
        self.write("node.key", format!("privkey:{}\n", hex_of(&k)).as_bytes())?;
        Ok(k)
    }

    fn key(&self, name: &str) -> Result<PrivateKey, StateError> {
        let p = self.path.join(name);
        match fs::read_to_string(&p) {
            Ok(s) => PrivateKey::parse(s.trim()).map_err(|_| StateError::CorruptKey(p)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let k = PrivateKey::generate();
                self.write(name, format!("privkey:{}\n", hex_of(&k)).as_bytes())?;
                Ok(k)
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Reads a JSON file; None if it does not exist.
    pub fn load_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
    ) -> Result<Option<T>, StateError> {
        let p = self.path.join(name);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| StateError::Corrupt {
                    path: p,
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// Writes a JSON file atomically, mode 0600.
    pub fn save_json<T: serde::Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StateError::Corrupt {
            path: self.path.join(name),
            message: e.to_string(),
        })?;
        self.write(name, &bytes)
    }

    /// Writes `name` atomically with mode 0600.
    fn write(&self, name: &str, data: &[u8]) -> Result<(), StateError> {
        let p = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        // The mode above only applies to new files.
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(io_err(&tmp))?;
        f.write_all(data).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        fs::rename(&tmp, &p).map_err(io_err(&p))
    }
}

fn hex_of(k: &PrivateKey) -> String {
    k.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!(
            "tailnet-state-{tag}-{}-{}",
            std::process::id(),
            PrivateKey::generate().as_bytes()[0]
        ));
        let _ = fs::remove_dir_all(&p);
        p
    }

    /// Issue 16 finding 9: an existing state directory kept its mode.
    #[test]
    fn an_existing_open_state_directory_is_made_private() {
        let p = tmp("mode");
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        let _dir = StateDir::open(&p).unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "mode {mode:o}");
        let _ = fs::remove_dir_all(&p);
    }

    #[test]
    fn keys_persist_with_private_modes() {
        let p = tmp("keys");
        let first = StateDir::open(&p).unwrap().keys().unwrap();
        let again = StateDir::open(&p).unwrap().keys().unwrap();
        assert_eq!(first.node, again.node);
        assert_eq!(first.machine, again.machine);
        // A fresh disco key every start, so peers can tell a restart.
        assert_ne!(first.disco, again.disco);
        assert!(!p.join("disco.key").exists());
        assert_ne!(first.node, first.machine);
        for f in ["machine.key", "node.key", "lock"] {
            let mode = fs::metadata(p.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{f} has mode {mode:o}");
        }
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let _ = fs::remove_dir_all(&p);
    }

    #[test]
    fn a_disco_key_left_by_an_earlier_version_is_removed() {
        let p = tmp("olddisco");
        let d = StateDir::open(&p).unwrap();
        fs::write(p.join("disco.key"), "privkey:00").unwrap();
        d.keys().unwrap();
        assert!(!p.join("disco.key").exists());
        let _ = fs::remove_dir_all(&p);
    }

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let p = tmp("lock");
        let held = StateDir::open(&p).unwrap();
        let err = StateDir::open(&p).unwrap_err();
        match &err {
            StateError::InUse { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("in use by another process"));
        drop(held);
        StateDir::open(&p).expect("free again once the holder is gone");
        let _ = fs::remove_dir_all(&p);
    }

    #[test]
    fn corrupt_key_file_is_reported_without_its_content() {
        let p = tmp("corrupt");
        let d = StateDir::open(&p).unwrap();
        fs::write(p.join("node.key"), "not-a-key-SECRET").unwrap();
        let err = d.keys().unwrap_err();
        assert!(!err.to_string().contains("SECRET"));
        assert!(matches!(err, StateError::CorruptKey(_)));
        let _ = fs::remove_dir_all(&p);
    }

    #[test]
    fn json_round_trips_atomically() {
        let p = tmp("json");
        let d = StateDir::open(&p).unwrap();
        assert_eq!(d.load_json::<Vec<u32>>("reg.json").unwrap(), None);
        d.save_json("reg.json", &vec![1u32, 2, 3]).unwrap();
        assert_eq!(
            d.load_json::<Vec<u32>>("reg.json").unwrap(),
            Some(vec![1, 2, 3])
        );
        assert!(!p.join(".reg.json.tmp").exists());
        let _ = fs::remove_dir_all(&p);
    }
}
