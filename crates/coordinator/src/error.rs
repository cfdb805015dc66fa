//! The store's error type.

use std::path::PathBuf;

/// Errors from opening or using the coordinator's database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory could not be created or inspected.
    #[error("state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be created with mode 0600.
    #[error("database file {path}: {source}")]
    DbFile {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// SQLite could not open or set up the database.
    #[error("opening database {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this program.
    #[error(
        "database schema version {found} is newer than this build supports ({supported}); \
         run a newer inferadb-mesh"
    )]
    SchemaTooNew {
        /// `PRAGMA user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value does not decode (edited by hand, or a bug).
    #[error("corrupt {what} in the database: {detail}")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Why it does not decode.
        detail: String,
    },
    /// No node has this ID (it was removed, or never existed).
    #[error("node {0} not found")]
    NodeNotFound(i64),
    /// Another node already has this MagicDNS name.
    #[error("the name {0:?} is taken by another node")]
    NameTaken(String),
    /// The operating system's random number generator failed.
    #[error("random number generator: {0}")]
    Random(getrandom::Error),
}

impl StoreError {
    pub(crate) fn corrupt(what: &'static str, detail: impl ToString) -> Self {
        StoreError::Corrupt {
            what,
            detail: detail.to_string(),
        }
    }
}

/// Fills `buf` from the OS random number generator.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), StoreError> {
    getrandom::fill(buf).map_err(StoreError::Random)
}
