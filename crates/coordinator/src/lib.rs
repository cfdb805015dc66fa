//! The embedded coordinator's state and admin logic.
//!
//! This crate is everything the coordination server *knows* and serves:
//! the HTTP/1.1 front door ([`http`]: `GET /key` and the `POST /ts2021`
//! upgrade into Noise, optionally over TLS) and the control server
//! ([`server`]: HTTP/2 inside Noise with `/machine/register` and
//! `/machine/map`, the hub of map streams, the ephemeral sweep), which call
//! the store to decide and to remember.
//!
//! - [`Store`]: one SQLite database, `<state_dir>/coordinator.db` (WAL,
//!   schema versioned with `PRAGMA user_version`), holding the nodes, the
//!   pre-auth keys, the coordinator's own Noise machine key and a few
//!   settings. A coordinator restart loses nothing.
//! - Pre-auth keys ([`authkey`]): `tskey-auth-<id>-<secret>`, only a SHA-256
//!   of the secret is stored; [`Store::redeem`] tells unknown, expired,
//!   used-up and malformed keys apart.
//! - Registration ([`Store::register`]): a node proves its machine key
//!   through Noise and its node key through the request; a new node needs an
//!   auth key; a known node (same node key, or same machine key rotating its
//!   node key) keeps its ID, addresses and name.
//! - Addresses ([`addr`]): IPv4 lowest-free from `100.64.0.0/10`, IPv6
//!   derived from it the way Tailscale does (`Tailscale4To6`).
//! - Names ([`names`]): MagicDNS labels from hostnames, `-1`, `-2`, … on
//!   collision, under a configurable base domain (default
//!   [`names::DEFAULT_BASE_DOMAIN`]).
//! - [`admin`]: the operations behind `inferadb-mesh coordinator authkey
//!   create` and `nodes list`.
//!
//! Every method is synchronous and short (one SQLite transaction); async
//! callers run them on a blocking thread or accept a sub-millisecond stall.
//! [`Store`] is `Send + Sync` (one connection behind a mutex), so it can be
//! shared in an `Arc`. Another process (the admin CLI) can use the same
//! database at the same time: SQLite's WAL mode and a busy timeout take care
//! of that.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod admin;
pub mod authkey;
mod error;
pub mod hostinfo;
pub mod http;
pub mod lock;
pub mod names;
mod nodes;
pub mod policy;
pub mod server;
mod store;
pub mod testing;
pub mod time;

pub use authkey::{
    AuthKeyError, AuthKeyGrant, AuthKeyInfo, AuthKeySpec, CreateAuthKeyError, NewAuthKey, TagError,
};
pub use error::StoreError;
pub use names::BaseDomain;
pub use nodes::{
    MapUpdate, MapUpdateChanges, Node, NodeId, RegisterError, RegisterOutcome, RegisterRequest,
    Registered, DEFAULT_EPHEMERAL_GRACE, MAX_ENDPOINTS,
};
pub use store::{CoordinatorKey, Store, DB_FILE_NAME, SCHEMA_VERSION};

/// 32 raw bytes of a Curve25519 key (node, machine or disco public key).
///
/// The networking layer converts from and to `tailnet_wire::PublicKey`; this
/// crate only stores and compares the bytes.
pub type Key32 = [u8; 32];
