//! The SQLite database: opening, schema migrations, settings and the
//! coordinator's own key.

use crate::error::{random_bytes, StoreError};
use crate::names::BaseDomain;
use crate::time::to_unix;
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::fmt;
use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use zeroize::Zeroizing;

/// The database's file name inside the state directory.
pub const DB_FILE_NAME: &str = "coordinator.db";

/// The schema version this build writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = 2;

/// How long a write waits for another process (the admin CLI next to a
/// running coordinator) to finish its transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only:
/// a shipped migration never changes.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    r#"
    CREATE TABLE nodes (
        -- Never reused (AUTOINCREMENT): clients keep peer IDs across map
        -- messages, and `PeersRemoved` names them.
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        stable_id   TEXT    NOT NULL UNIQUE,
        node_key    BLOB    NOT NULL UNIQUE CHECK (length(node_key) = 32),
        machine_key BLOB    NOT NULL UNIQUE CHECK (length(machine_key) = 32),
        disco_key   BLOB             CHECK (disco_key IS NULL OR length(disco_key) = 32),
        hostname    TEXT    NOT NULL,
        -- The MagicDNS label.
        given_name  TEXT    NOT NULL UNIQUE,
        -- IPv4 as a 32-bit integer, so "lowest free" is an ordered index scan.
        ipv4        INTEGER NOT NULL UNIQUE,
        ipv6        TEXT    NOT NULL UNIQUE,
        -- JSON array of "tag:..." strings.
        tags        TEXT    NOT NULL DEFAULT '[]',
        ephemeral   INTEGER NOT NULL DEFAULT 0,
        -- The pre-auth key that registered (or last re-authenticated) it.
        auth_key_id TEXT,
        -- Unix seconds.
        created     INTEGER NOT NULL,
        last_seen   INTEGER,
        online      INTEGER NOT NULL DEFAULT 0,
        -- Node key expiry, Unix seconds; NULL = never.
        expiry      INTEGER,
        -- JSON array of "ip:port" strings.
        endpoints   TEXT    NOT NULL DEFAULT '[]',
        -- The client's Hostinfo object, as it sent it (JSON).
        hostinfo    TEXT
    );
    CREATE INDEX nodes_ephemeral_last_seen ON nodes (last_seen) WHERE ephemeral = 1;

    CREATE TABLE auth_keys (
        -- The public part of tskey-auth-<id>-<secret>.
        id          TEXT    PRIMARY KEY,
        -- SHA-256 of the secret part; the secret itself is never stored.
        secret_hash BLOB    NOT NULL CHECK (length(secret_hash) = 32),
        reusable    INTEGER NOT NULL,
        ephemeral   INTEGER NOT NULL,
        tags        TEXT    NOT NULL DEFAULT '[]',
        created     INTEGER NOT NULL,
        -- Unix seconds; NULL = never.
        expires     INTEGER,
        used_count  INTEGER NOT NULL DEFAULT 0,
        last_used   INTEGER
    );

    -- The coordinator's Noise machine private key: one row, made once.
    CREATE TABLE coordinator_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        private_key BLOB    NOT NULL CHECK (length(private_key) = 32),
        created     INTEGER NOT NULL
    );

    CREATE TABLE settings (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    "#,
    // 1 -> 2
    r#"
    -- The DERP relay's private key (a node-type X25519 key; its public half
    -- is the relay's DERP address, Derp-Public-Key): one row, made once, so
    -- clients see the same relay across restarts.
    CREATE TABLE derp_key (
        id          INTEGER PRIMARY KEY CHECK (id = 1),
        private_key BLOB    NOT NULL CHECK (length(private_key) = 32),
        created     INTEGER NOT NULL
    );
    "#,
];

/// The coordinator's persistent state: one SQLite database in the state
/// directory.
///
/// Opening creates the directory (mode 0700) and the file (mode 0600) when
/// they do not exist, turns on WAL and brings the schema up to date. One
/// connection is shared behind a mutex; every method is one transaction.
///
/// Durability: WAL with `synchronous=NORMAL`. A committed change survives a
/// crash or kill of the process (what a "coordinator restart" is); an OS
/// crash or power loss can roll back the last few commits, never corrupt
/// the file.
pub struct Store {
    pub(crate) conn: Mutex<Connection>,
    path: PathBuf,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `<state_dir>/coordinator.db`.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(state_dir)
            .map_err(|source| StoreError::StateDir {
                path: state_dir.to_path_buf(),
                source,
            })?;
        let path = state_dir.join(DB_FILE_NAME);
        // Create the file ourselves so it is 0600 from its first byte; SQLite
        // gives its -wal and -shm files the database file's permissions. An
        // existing file readable by others (it holds the coordinator's
        // private key) is made 0600.
        let file_err = |source| StoreError::DbFile {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(file_err)?;
        let perms = file.metadata().map_err(file_err)?.permissions();
        if perms.mode() & 0o077 != 0 {
            file.set_permissions(Permissions::from_mode(0o600))
                .map_err(file_err)?;
        }
        drop(file);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(open_err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::corrupt(
                "journal mode",
                format!("SQLite kept {mode:?} instead of WAL"),
            ));
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        migrate(&mut conn)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA data_version`: it changes when another connection
    /// (the admin CLI: `nodes delete`, `authkey expire`, …) commits to the
    /// database, never for this connection's own writes. The server polls
    /// it to act on those changes.
    pub fn data_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.pragma_query_value(None, "data_version", |r| r.get(0))?)
    }

    /// The schema version of the open database (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// The coordinator's Noise machine private key (32 bytes), generated from
    /// the OS random number generator the first time and the same ever after.
    pub fn coordinator_key(&self, now: SystemTime) -> Result<CoordinatorKey, StoreError> {
        self.singleton_key("coordinator_key", "coordinator key", now)
    }

    /// The DERP relay's private key (32 bytes, clamped like a WireGuard
    /// key), generated the first time and the same ever after.
    pub fn derp_key(&self, now: SystemTime) -> Result<CoordinatorKey, StoreError> {
        self.singleton_key("derp_key", "DERP key", now)
    }

    /// Reads the one row of `table` (`coordinator_key` or `derp_key`),
    /// inserting a fresh random key first if there is none.
    fn singleton_key(
        &self,
        table: &'static str,
        what: &'static str,
        now: SystemTime,
    ) -> Result<CoordinatorKey, StoreError> {
        let mut fresh = Zeroizing::new([0u8; 32]);
        random_bytes(fresh.as_mut())?;
        // Clamped, as `wg genkey` and Go's key.NewNode store keys; X25519
        // clamps on use anyway, so this only makes the stored form canonical.
        fresh[0] &= 248;
        fresh[31] &= 127;
        fresh[31] |= 64;
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute(
            &format!("INSERT OR IGNORE INTO {table} (id, private_key, created) VALUES (1, ?1, ?2)"),
            rusqlite::params![fresh.as_slice(), to_unix(now)],
        )?;
        let stored: Zeroizing<Vec<u8>> = Zeroizing::new(tx.query_row(
            &format!("SELECT private_key FROM {table} WHERE id = 1"),
            [],
            |r| r.get(0),
        )?);
        tx.commit()?;
        let bytes: [u8; 32] = stored
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::corrupt(what, "not 32 bytes"))?;
        Ok(CoordinatorKey(Zeroizing::new(bytes)))
    }

    /// The MagicDNS base domain: the stored setting, or
    /// [`crate::names::DEFAULT_BASE_DOMAIN`] if none was set.
    pub fn base_domain(&self) -> Result<BaseDomain, StoreError> {
        match self.setting("base_domain")? {
            None => Ok(BaseDomain::default()),
            Some(text) => {
                BaseDomain::parse(&text).map_err(|e| StoreError::corrupt("base_domain setting", e))
            }
        }
    }

    /// Stores the MagicDNS base domain (`serve --base-domain D` does this, so
    /// that `nodes list` shows the names `serve` hands out).
    pub fn set_base_domain(&self, domain: &BaseDomain) -> Result<(), StoreError> {
        self.set_setting("base_domain", domain.as_str())
    }

    fn setting(&self, name: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn.lock();
        Ok(conn
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    fn set_setting(&self, name: &str, value: &str) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [name, value],
        )?;
        Ok(())
    }
}

/// Brings the schema to [`SCHEMA_VERSION`], one transaction per step.
fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    loop {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        let Some(step) = usize::try_from(version)
            .ok()
            .and_then(|v| MIGRATIONS.get(v))
        else {
            return Ok(());
        };
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", version + 1)?;
        tx.commit()?;
    }
}

/// One of the coordinator's private keys (the Noise machine key, the DERP
/// key). Its bytes never print (`Debug` shows `<redacted>`) and are wiped
/// from memory on drop.
pub struct CoordinatorKey(Zeroizing<[u8; 32]>);

impl CoordinatorKey {
    /// The 32 private key bytes, for the Noise handshake or DERP boxes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CoordinatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CoordinatorKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_dir_and_file_with_wal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a/state");
        let store = Store::open(&dir).expect("open");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(DB_FILE_NAME)), 0o600);
        store
            .set_base_domain(&BaseDomain::default())
            .expect("write");
        // WAL is on and its files are as private as the database.
        assert_eq!(mode(&dir.join("coordinator.db-wal")), 0o600);
        assert_eq!(mode(&dir.join("coordinator.db-shm")), 0o600);
        let conn = store.conn.lock();
        let jm: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("pragma");
        assert_eq!(jm, "wal");
    }

    #[test]
    fn an_existing_world_readable_database_is_made_private() {
        let tmp = tempfile::tempdir().expect("tempdir");
        drop(Store::open(tmp.path()).expect("open"));
        let db = tmp.path().join(DB_FILE_NAME);
        std::fs::set_permissions(&db, Permissions::from_mode(0o644)).expect("chmod");
        drop(Store::open(tmp.path()).expect("reopen"));
        assert_eq!(mode(&db), 0o600);
    }

    #[test]
    fn schema_version_and_too_new() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        store
            .conn
            .lock()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .expect("bump");
        drop(store);
        let err = Store::open(tmp.path()).expect_err("newer schema refused");
        assert!(
            matches!(err, StoreError::SchemaTooNew { found, .. } if found == SCHEMA_VERSION + 1)
        );
        assert!(err.to_string().contains("newer"));
    }

    #[test]
    fn reopen_runs_no_migration_twice() {
        let tmp = tempfile::tempdir().expect("tempdir");
        drop(Store::open(tmp.path()).expect("open"));
        let store = Store::open(tmp.path()).expect("reopen");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
    }

    #[test]
    fn coordinator_key_is_made_once_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let store = Store::open(tmp.path()).expect("open");
        let k1 = store.coordinator_key(now).expect("key");
        let k2 = store.coordinator_key(now).expect("key");
        assert_eq!(k1.as_bytes(), k2.as_bytes());
        assert_ne!(k1.as_bytes(), &[0u8; 32]);
        assert_eq!(format!("{k1:?}"), "CoordinatorKey(<redacted>)");
        drop(store);
        let store = Store::open(tmp.path()).expect("reopen");
        assert_eq!(
            store.coordinator_key(now).expect("key").as_bytes(),
            k1.as_bytes()
        );
    }

    #[test]
    fn derp_key_is_its_own_and_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        let store = Store::open(tmp.path()).expect("open");
        let d1 = store.derp_key(now).expect("key");
        assert_eq!(d1.as_bytes()[0] & 7, 0);
        assert_ne!(
            d1.as_bytes(),
            store.coordinator_key(now).expect("noise key").as_bytes()
        );
        assert_eq!(format!("{d1:?}"), "CoordinatorKey(<redacted>)");
        drop(store);
        let store = Store::open(tmp.path()).expect("reopen");
        assert_eq!(store.derp_key(now).expect("key").as_bytes(), d1.as_bytes());
    }

    #[test]
    fn a_version_1_database_gains_the_derp_key_table() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join(DB_FILE_NAME);
        {
            let conn = Connection::open(&path).expect("sqlite");
            conn.execute_batch(MIGRATIONS[0]).expect("v1 schema");
            conn.pragma_update(None, "user_version", 1).expect("v1");
        }
        let store = Store::open(tmp.path()).expect("migrates");
        assert_eq!(store.schema_version().expect("version"), 2);
        store
            .derp_key(SystemTime::now())
            .expect("DERP key in a migrated db");
    }

    #[test]
    fn base_domain_setting_persists() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let store = Store::open(tmp.path()).expect("open");
        assert_eq!(store.base_domain().expect("get"), BaseDomain::default());
        let d = BaseDomain::parse("us-west-1.ts.net").expect("valid");
        store.set_base_domain(&d).expect("set");
        drop(store);
        let store = Store::open(tmp.path()).expect("reopen");
        assert_eq!(store.base_domain().expect("get"), d);
    }

    #[test]
    fn unwritable_state_dir_is_a_typed_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, b"x").expect("write");
        let err = Store::open(&file.join("state")).expect_err("cannot create under a file");
        assert!(matches!(err, StoreError::StateDir { .. }), "{err}");
    }

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
    }
}
