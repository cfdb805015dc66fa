//! Nodes: registration and lifecycle.
//!
//! # Who may register as what
//!
//! The machine key is the node's identity towards the coordinator: the
//! ts2021 Noise handshake proves it, so the networking layer passes the
//! Noise peer's static key as [`RegisterRequest::machine_key`], never a value
//! from the request body. A node key is bound to the machine that first
//! registered it. [`Store::register`] decides:
//!
//! | stored state | request | result |
//! |---|---|---|
//! | node key known, same machine key, key not expired | any auth key is ignored | [`RegisterOutcome::Existing`] (a restarted node rejoins without a key) |
//! | node key known, same machine key, key expired | good auth key | [`RegisterOutcome::Reauthenticated`] |
//! | node key known, same machine key, key expired | no key | [`RegisterError::NodeKeyExpired`] |
//! | node key known, other machine key | anything | [`RegisterError::NodeKeyInUse`] |
//! | machine key known with another node key | `old_node_key` = the stored node key, not expired | [`RegisterOutcome::Rotated`] |
//! | machine key known with another node key | good auth key | [`RegisterOutcome::Reauthenticated`] |
//! | machine key known with another node key | neither | [`RegisterError::AuthKeyRequired`] |
//! | neither known | good auth key | [`RegisterOutcome::Created`] |
//! | neither known | no key | [`RegisterError::AuthKeyRequired`] |
//!
//! A known node keeps its ID, stable ID, addresses and MagicDNS name in every
//! case. Tags and the ephemeral flag come only from the auth key (a node's
//! own `Hostinfo.RequestTags` grants nothing); re-authenticating replaces
//! them with the new key's. Redeeming the key and writing the node are one
//! transaction: a registration that fails does not spend a single-use key.

use crate::addr::{lowest_free_v4, v6_for_v4};
use crate::authkey::{redeem_in, tags_from_json, tags_to_json, AuthKeyError};
use crate::error::{random_bytes, StoreError};
use crate::names::{candidate, candidates_prefix, label_from_hostname, BaseDomain};
use crate::store::Store;
use crate::time::{from_unix, to_unix};
use crate::Key32;
use rusqlite::{params, OptionalExtension, Row, Transaction, TransactionBehavior};
use serde::Serialize;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

/// How long an ephemeral node may stay offline before
/// [`Store::remove_ephemeral_offline_since`] should remove it (the caller
/// passes `now - grace` as the cutoff). Long enough to ride out a
/// coordinator restart or a reconnect with backoff.
pub const DEFAULT_EPHEMERAL_GRACE: Duration = Duration::from_secs(5 * 60);

/// The most endpoints kept for one node. Every peer's netmap carries them,
/// so one node must not be able to inflate 1,000 netmaps; real clients
/// report a handful.
pub const MAX_ENDPOINTS: usize = 64;

const ZERO_KEY: Key32 = [0; 32];

/// A node's ID: the `tailcfg.NodeID` on the wire. Positive, never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeId(pub i64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered node, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Numeric ID (`tailcfg.Node.ID`).
    pub id: NodeId,
    /// Stable ID (`tailcfg.Node.StableID`), `n` and 16 hex digits.
    pub stable_id: String,
    /// The WireGuard public key (`nodekey:`).
    pub node_key: Key32,
    /// The Noise machine public key (`mkey:`).
    pub machine_key: Key32,
    /// The disco public key, once the node has reported one.
    pub disco_key: Option<Key32>,
    /// The hostname the node last reported.
    pub hostname: String,
    /// The MagicDNS label, unique in the tailnet.
    pub given_name: String,
    /// Tailnet IPv4 address.
    pub ipv4: Ipv4Addr,
    /// Tailnet IPv6 address.
    pub ipv6: Ipv6Addr,
    /// Tags, sorted (`tag:name`).
    pub tags: Vec<String>,
    /// Removed after it has been offline for a grace period.
    pub ephemeral: bool,
    /// The pre-auth key that registered it (or last re-authenticated it).
    pub auth_key_id: Option<String>,
    /// First registration.
    pub created: SystemTime,
    /// Last time it connected or disconnected; `None` if it never streamed.
    pub last_seen: Option<SystemTime>,
    /// Has a map stream open now.
    pub online: bool,
    /// Node key expiry; `None` = never.
    pub key_expiry: Option<SystemTime>,
    /// Its reported UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
    /// The `Hostinfo` object it last sent, as JSON.
    pub hostinfo: Option<serde_json::Value>,
}

impl Node {
    /// `<given name>.<base domain>`, no trailing dot.
    pub fn fqdn(&self, base: &BaseDomain) -> String {
        base.fqdn(&self.given_name)
    }

    /// Whether the node key has expired at `now`.
    pub fn key_expired(&self, now: SystemTime) -> bool {
        self.key_expiry.is_some_and(|e| e <= now)
    }
}

/// A `/machine/register` request, reduced to what the store needs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegisterRequest {
    /// `RegisterRequest.NodeKey`.
    pub node_key: Key32,
    /// `RegisterRequest.OldNodeKey` when set and not zero (key rotation).
    pub old_node_key: Option<Key32>,
    /// The Noise peer's static key: proven by the handshake, not read from
    /// the request body.
    pub machine_key: Key32,
    /// `Hostinfo.Hostname`.
    pub hostname: String,
    /// The whole `Hostinfo` object, stored as sent.
    pub hostinfo: Option<serde_json::Value>,
    /// `Auth.AuthKey`, if any.
    pub auth_key: Option<String>,
    /// `RegisterRequest.Ephemeral`: the node asks to be ephemeral (an
    /// ephemeral auth key makes it so regardless).
    pub ephemeral: bool,
}

/// What [`Store::register`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new node: peers must learn about it.
    Created,
    /// The node was already registered with this node key; nothing that
    /// peers see changed except perhaps its hostinfo.
    Existing,
    /// The node replaced its node key (`OldNodeKey`): peers must get the
    /// new key.
    Rotated,
    /// A known machine registered again with an auth key (new node key,
    /// the key's tags and ephemeral flag): peers must get the change.
    Reauthenticated,
}

/// The result of a successful registration.
#[derive(Debug, Clone, PartialEq)]
pub struct Registered {
    /// The node as now stored.
    pub node: Node,
    /// Which case applied.
    pub outcome: RegisterOutcome,
}

/// Why a registration was refused. Nothing is stored in any of these cases.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// The auth key was refused (unknown, expired, used up, malformed).
    #[error(transparent)]
    AuthKey(AuthKeyError),
    /// A new node (or a known machine with a new node key) sent no auth key.
    #[error("this node is not registered: an auth key is required")]
    AuthKeyRequired,
    /// The node key is registered to a different machine key.
    #[error("node key is registered to another machine")]
    NodeKeyInUse,
    /// The node key has expired and no auth key came with the request
    /// (`RegisterResponse.NodeKeyExpired`).
    #[error("node key has expired: log in again with an auth key")]
    NodeKeyExpired,
    /// The node key or machine key is all zeros.
    #[error("node key and machine key must not be zero")]
    ZeroKey,
    /// Every assignable address in `100.64.0.0/10` is taken.
    #[error("no free address left in 100.64.0.0/10")]
    AddressesExhausted,
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AuthKeyError> for RegisterError {
    fn from(e: AuthKeyError) -> Self {
        match e {
            AuthKeyError::Store(s) => RegisterError::Store(s),
            other => RegisterError::AuthKey(other),
        }
    }
}

impl From<rusqlite::Error> for RegisterError {
    fn from(e: rusqlite::Error) -> Self {
        RegisterError::Store(e.into())
    }
}

/// What a `/machine/map` request reports about the node. `None` fields are
/// left as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapUpdate {
    /// `MapRequest.Endpoints` (at most [`MAX_ENDPOINTS`] are kept).
    pub endpoints: Option<Vec<SocketAddr>>,
    /// `MapRequest.DiscoKey`. A zero key never replaces a known one.
    pub disco_key: Option<Key32>,
    /// `MapRequest.Hostinfo`.
    pub hostinfo: Option<serde_json::Value>,
    /// `Hostinfo.Hostname` (the MagicDNS name does not follow it).
    pub hostname: Option<String>,
}

/// Which fields a [`MapUpdate`] actually changed (what peers must be told).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapUpdateChanges {
    /// The endpoints differ from the stored ones.
    pub endpoints: bool,
    /// The disco key differs.
    pub disco_key: bool,
    /// The hostinfo or hostname differs.
    pub hostinfo: bool,
}

impl MapUpdateChanges {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        self.endpoints || self.disco_key || self.hostinfo
    }
}

const NODE_COLUMNS: &str = "id, stable_id, node_key, machine_key, disco_key, hostname, \
    given_name, ipv4, ipv6, tags, ephemeral, auth_key_id, created, last_seen, online, expiry, \
    endpoints, hostinfo";

/// A row as SQLite returns it, before decoding.
struct RawNode {
    id: i64,
    stable_id: String,
    node_key: Vec<u8>,
    machine_key: Vec<u8>,
    disco_key: Option<Vec<u8>>,
    hostname: String,
    given_name: String,
    ipv4: i64,
    ipv6: String,
    tags: String,
    ephemeral: bool,
    auth_key_id: Option<String>,
    created: i64,
    last_seen: Option<i64>,
    online: bool,
    expiry: Option<i64>,
    endpoints: String,
    hostinfo: Option<String>,
}

impl RawNode {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<RawNode> {
        Ok(RawNode {
            id: r.get(0)?,
            stable_id: r.get(1)?,
            node_key: r.get(2)?,
            machine_key: r.get(3)?,
            disco_key: r.get(4)?,
            hostname: r.get(5)?,
            given_name: r.get(6)?,
            ipv4: r.get(7)?,
            ipv6: r.get(8)?,
            tags: r.get(9)?,
            ephemeral: r.get(10)?,
            auth_key_id: r.get(11)?,
            created: r.get(12)?,
            last_seen: r.get(13)?,
            online: r.get(14)?,
            expiry: r.get(15)?,
            endpoints: r.get(16)?,
            hostinfo: r.get(17)?,
        })
    }

    fn decode(self) -> Result<Node, StoreError> {
        let key = |what: &'static str, v: &[u8]| -> Result<Key32, StoreError> {
            v.try_into()
                .map_err(|_| StoreError::corrupt(what, format!("{} bytes", v.len())))
        };
        let ipv4 = u32::try_from(self.ipv4)
            .map(Ipv4Addr::from)
            .map_err(|e| StoreError::corrupt("node ipv4", e))?;
        let ipv6 = self
            .ipv6
            .parse()
            .map_err(|e| StoreError::corrupt("node ipv6", e))?;
        let endpoints = endpoints_from_json(&self.endpoints)?;
        let hostinfo = self
            .hostinfo
            .map(|h| serde_json::from_str(&h).map_err(|e| StoreError::corrupt("node hostinfo", e)))
            .transpose()?;
        Ok(Node {
            id: NodeId(self.id),
            stable_id: self.stable_id,
            node_key: key("node key", &self.node_key)?,
            machine_key: key("machine key", &self.machine_key)?,
            disco_key: self.disco_key.map(|d| key("disco key", &d)).transpose()?,
            hostname: self.hostname,
            given_name: self.given_name,
            ipv4,
            ipv6,
            tags: tags_from_json(&self.tags)?,
            ephemeral: self.ephemeral,
            auth_key_id: self.auth_key_id,
            created: from_unix(self.created),
            last_seen: self.last_seen.map(from_unix),
            online: self.online,
            key_expiry: self.expiry.map(from_unix),
            endpoints,
            hostinfo,
        })
    }
}

fn endpoints_to_json(eps: &[SocketAddr]) -> String {
    let text: Vec<String> = eps.iter().map(|e| e.to_string()).collect();
    serde_json::to_string(&text).unwrap_or_else(|_| "[]".to_string())
}

fn endpoints_from_json(text: &str) -> Result<Vec<SocketAddr>, StoreError> {
    let strings: Vec<String> =
        serde_json::from_str(text).map_err(|e| StoreError::corrupt("node endpoints", e))?;
    strings
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| StoreError::corrupt("node endpoint", e))
        })
        .collect()
}

fn hostinfo_to_json(h: &Option<serde_json::Value>) -> Option<String> {
    h.as_ref().map(|v| v.to_string())
}

/// Endpoints as stored: at most [`MAX_ENDPOINTS`], duplicates dropped, order
/// kept.
fn normalize_endpoints(eps: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::with_capacity(eps.len().min(MAX_ENDPOINTS));
    for e in eps {
        if out.len() == MAX_ENDPOINTS {
            break;
        }
        if !out.contains(e) {
            out.push(*e);
        }
    }
    out
}

fn node_where(
    tx: &rusqlite::Connection,
    cond: &str,
    arg: &dyn rusqlite::ToSql,
) -> Result<Option<Node>, StoreError> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE {cond}");
    let mut stmt = tx.prepare_cached(&sql)?;
    let raw = stmt.query_row([arg], RawNode::from_row).optional()?;
    raw.map(RawNode::decode).transpose()
}

fn node_by_id_in(conn: &rusqlite::Connection, id: NodeId) -> Result<Node, StoreError> {
    node_where(conn, "id = ?1", &id.0)?.ok_or(StoreError::NodeNotFound(id.0))
}

/// The first free MagicDNS label for `hostname`.
fn free_name(tx: &Transaction<'_>, hostname: &str) -> Result<String, StoreError> {
    let label = label_from_hostname(hostname);
    // One indexed prefix query finds every name a candidate can collide
    // with. Labels hold only [a-z0-9-]: nothing GLOB would expand.
    let prefix = candidates_prefix(&label);
    let mut stmt = tx.prepare_cached("SELECT given_name FROM nodes WHERE given_name GLOB ?1")?;
    let taken = stmt
        .query_map([format!("{prefix}*")], |r| r.get::<_, String>(0))?
        .collect::<Result<std::collections::HashSet<String>, _>>()?;
    for n in 0u32.. {
        let name = candidate(&label, n);
        if !taken.contains(&name) {
            return Ok(name);
        }
    }
    // 2^32 names for one label cannot all be taken: the address range runs
    // out first.
    Err(StoreError::corrupt("node names", "no free name"))
}

fn free_v4(tx: &Transaction<'_>) -> Result<Option<Ipv4Addr>, StoreError> {
    let mut stmt = tx.prepare_cached("SELECT ipv4 FROM nodes ORDER BY ipv4")?;
    let used = stmt
        .query_map([], |r| r.get::<_, i64>(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(lowest_free_v4(
        used.into_iter().filter_map(|u| u32::try_from(u).ok()),
    ))
}

fn new_stable_id() -> Result<String, StoreError> {
    let mut b = [0u8; 8];
    random_bytes(&mut b)?;
    Ok(format!("n{}", hex::encode(b)))
}

impl Store {
    /// Registers a node or recognises a known one (see the module docs for
    /// the rules). One transaction: the auth key is spent only if the node
    /// is written.
    pub fn register(
        &self,
        req: &RegisterRequest,
        now: SystemTime,
    ) -> Result<Registered, RegisterError> {
        if req.node_key == ZERO_KEY || req.machine_key == ZERO_KEY {
            return Err(RegisterError::ZeroKey);
        }
        let old_node_key = req.old_node_key.filter(|k| *k != ZERO_KEY);
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let hostinfo = hostinfo_to_json(&req.hostinfo);

        let outcome = if let Some(node) =
            node_where(&tx, "node_key = ?1", &req.node_key.as_slice())?
        {
            if node.machine_key != req.machine_key {
                return Err(RegisterError::NodeKeyInUse);
            }
            if node.key_expired(now) {
                let Some(key) = &req.auth_key else {
                    return Err(RegisterError::NodeKeyExpired);
                };
                let grant = redeem_in(&tx, key, now)?;
                reauthenticate(&tx, node.id, req, &grant, hostinfo.as_deref())?;
                (node.id, RegisterOutcome::Reauthenticated)
            } else {
                tx.execute(
                    "UPDATE nodes SET hostname = ?2, hostinfo = COALESCE(?3, hostinfo) WHERE id = ?1",
                    params![node.id.0, req.hostname, hostinfo],
                )?;
                (node.id, RegisterOutcome::Existing)
            }
        } else if let Some(node) = node_where(&tx, "machine_key = ?1", &req.machine_key.as_slice())?
        {
            if old_node_key == Some(node.node_key) && !node.key_expired(now) {
                tx.execute(
                    "UPDATE nodes SET node_key = ?2, hostname = ?3, hostinfo = COALESCE(?4, hostinfo)
                     WHERE id = ?1",
                    params![node.id.0, req.node_key.as_slice(), req.hostname, hostinfo],
                )?;
                (node.id, RegisterOutcome::Rotated)
            } else {
                let Some(key) = &req.auth_key else {
                    return Err(RegisterError::AuthKeyRequired);
                };
                let grant = redeem_in(&tx, key, now)?;
                reauthenticate(&tx, node.id, req, &grant, hostinfo.as_deref())?;
                (node.id, RegisterOutcome::Reauthenticated)
            }
        } else {
            let Some(key) = &req.auth_key else {
                return Err(RegisterError::AuthKeyRequired);
            };
            let grant = redeem_in(&tx, key, now)?;
            let ipv4 = free_v4(&tx)?.ok_or(RegisterError::AddressesExhausted)?;
            let ipv6 = v6_for_v4(ipv4);
            let given_name = free_name(&tx, &req.hostname)?;
            tx.execute(
                "INSERT INTO nodes (stable_id, node_key, machine_key, hostname, given_name,
                     ipv4, ipv6, tags, ephemeral, auth_key_id, created, hostinfo)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    new_stable_id()?,
                    req.node_key.as_slice(),
                    req.machine_key.as_slice(),
                    req.hostname,
                    given_name,
                    i64::from(u32::from(ipv4)),
                    ipv6.to_string(),
                    tags_to_json(&grant.tags),
                    grant.ephemeral || req.ephemeral,
                    grant.key_id,
                    to_unix(now),
                    hostinfo,
                ],
            )?;
            (NodeId(tx.last_insert_rowid()), RegisterOutcome::Created)
        };
        let node = node_by_id_in(&tx, outcome.0)?;
        tx.commit()?;
        Ok(Registered {
            node,
            outcome: outcome.1,
        })
    }

    /// The node with this ID.
    pub fn node(&self, id: NodeId) -> Result<Option<Node>, StoreError> {
        node_where(&self.conn.lock(), "id = ?1", &id.0)
    }

    /// The node registered with this node key (unique index).
    pub fn node_by_node_key(&self, key: &Key32) -> Result<Option<Node>, StoreError> {
        node_where(&self.conn.lock(), "node_key = ?1", &key.as_slice())
    }

    /// The node registered from this machine key (unique index).
    pub fn node_by_machine_key(&self, key: &Key32) -> Result<Option<Node>, StoreError> {
        node_where(&self.conn.lock(), "machine_key = ?1", &key.as_slice())
    }

    /// Every node, by ID.
    pub fn nodes(&self) -> Result<Vec<Node>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id"))?;
        let raws = stmt
            .query_map([], RawNode::from_row)?
            .collect::<Result<Vec<_>, _>>()?;
        drop(stmt);
        drop(conn);
        raws.into_iter().map(RawNode::decode).collect()
    }

    /// How many nodes are registered.
    pub fn node_count(&self) -> Result<usize, StoreError> {
        let conn = self.conn.lock();
        let n: i64 = conn.query_row("SELECT count(*) FROM nodes", [], |r| r.get(0))?;
        usize::try_from(n).map_err(|e| StoreError::corrupt("node count", e))
    }

    /// Replaces the node's endpoints. Returns whether they changed.
    pub fn set_endpoints(&self, id: NodeId, endpoints: &[SocketAddr]) -> Result<bool, StoreError> {
        let changes = self.apply_map_update(
            id,
            &MapUpdate {
                endpoints: Some(endpoints.to_vec()),
                ..MapUpdate::default()
            },
        )?;
        Ok(changes.endpoints)
    }

    /// Stores what a map request reported (endpoints, disco key, hostinfo)
    /// and says what changed, so the caller pushes a delta only when peers
    /// would see a difference.
    pub fn apply_map_update(
        &self,
        id: NodeId,
        update: &MapUpdate,
    ) -> Result<MapUpdateChanges, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let node = node_by_id_in(&tx, id)?;
        let mut changes = MapUpdateChanges::default();
        if let Some(eps) = &update.endpoints {
            let eps = normalize_endpoints(eps);
            if eps != node.endpoints {
                tx.execute(
                    "UPDATE nodes SET endpoints = ?2 WHERE id = ?1",
                    params![id.0, endpoints_to_json(&eps)],
                )?;
                changes.endpoints = true;
            }
        }
        if let Some(dk) = update.disco_key.filter(|k| *k != ZERO_KEY) {
            if node.disco_key != Some(dk) {
                tx.execute(
                    "UPDATE nodes SET disco_key = ?2 WHERE id = ?1",
                    params![id.0, dk.as_slice()],
                )?;
                changes.disco_key = true;
            }
        }
        if let Some(h) = &update.hostinfo {
            if node.hostinfo.as_ref() != Some(h) {
                tx.execute(
                    "UPDATE nodes SET hostinfo = ?2 WHERE id = ?1",
                    params![id.0, h.to_string()],
                )?;
                changes.hostinfo = true;
            }
        }
        if let Some(name) = &update.hostname {
            if *name != node.hostname {
                tx.execute(
                    "UPDATE nodes SET hostname = ?2 WHERE id = ?1",
                    params![id.0, name],
                )?;
                changes.hostinfo = true;
            }
        }
        tx.commit()?;
        Ok(changes)
    }

    /// Marks the node online (a map stream opened) or offline (it closed),
    /// and sets its last-seen time to `now` either way. Returns whether the
    /// online flag changed.
    pub fn set_online(
        &self,
        id: NodeId,
        online: bool,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let was: Option<bool> = tx
            .query_row("SELECT online FROM nodes WHERE id = ?1", [id.0], |r| {
                r.get(0)
            })
            .optional()?;
        let Some(was) = was else {
            return Err(StoreError::NodeNotFound(id.0));
        };
        tx.execute(
            "UPDATE nodes SET online = ?2, last_seen = ?3 WHERE id = ?1",
            params![id.0, online, to_unix(now)],
        )?;
        tx.commit()?;
        Ok(was != online)
    }

    /// Marks every online node offline with last-seen `now`; returns their
    /// IDs. Call it when the coordinator starts: no stream survived the
    /// restart, and the fresh last-seen time gives ephemeral nodes a full
    /// grace period to reconnect however long the coordinator was down.
    pub fn mark_all_offline(&self, now: SystemTime) -> Result<Vec<NodeId>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "UPDATE nodes SET online = 0, last_seen = ?1 WHERE online = 1 RETURNING id",
        )?;
        let mut ids = stmt
            .query_map([to_unix(now)], |r| r.get::<_, i64>(0).map(NodeId))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }

    /// Sets (or clears, with `None`) the node key's expiry. A time in the
    /// past expires it now: that is how a logout is recorded.
    pub fn set_key_expiry(&self, id: NodeId, expiry: Option<SystemTime>) -> Result<(), StoreError> {
        let conn = self.conn.lock();
        let n = conn.execute(
            "UPDATE nodes SET expiry = ?2 WHERE id = ?1",
            params![id.0, expiry.map(to_unix)],
        )?;
        if n == 0 {
            return Err(StoreError::NodeNotFound(id.0));
        }
        Ok(())
    }

    /// Gives the node the MagicDNS label `name` (already validated by the
    /// caller: see [`crate::names::label_from_hostname`]). Fails with
    /// [`StoreError::NameTaken`] when another node has it, and
    /// [`StoreError::NodeNotFound`] when the node is gone. The name stays
    /// until the next rename: later hostname changes do not touch it.
    pub fn rename(&self, id: NodeId, name: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let holder: Option<i64> = tx
            .query_row("SELECT id FROM nodes WHERE given_name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?;
        match holder {
            Some(h) if h == id.0 => return Ok(()),
            Some(_) => return Err(StoreError::NameTaken(name.to_string())),
            None => {}
        }
        let n = tx.execute(
            "UPDATE nodes SET given_name = ?2 WHERE id = ?1",
            params![id.0, name],
        )?;
        if n == 0 {
            return Err(StoreError::NodeNotFound(id.0));
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the node; its addresses and name become free. Returns whether
    /// it existed.
    pub fn remove(&self, id: NodeId) -> Result<bool, StoreError> {
        let conn = self.conn.lock();
        Ok(conn.execute("DELETE FROM nodes WHERE id = ?1", [id.0])? > 0)
    }

    /// Deletes every ephemeral node that is offline and was last seen (or,
    /// if it never connected, created) before `cutoff`; returns their IDs
    /// for `PeersRemoved`. Call it periodically with `now - grace`.
    pub fn remove_ephemeral_offline_since(
        &self,
        cutoff: SystemTime,
    ) -> Result<Vec<NodeId>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare_cached(
            "DELETE FROM nodes
             WHERE ephemeral = 1 AND online = 0 AND COALESCE(last_seen, created) < ?1
             RETURNING id",
        )?;
        let mut ids = stmt
            .query_map([to_unix(cutoff)], |r| r.get::<_, i64>(0).map(NodeId))?
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort();
        Ok(ids)
    }
}

/// A known machine logs in again with a good key: new node key, the key's
/// tags and ephemeral flag, expiry cleared; ID, addresses and name kept.
fn reauthenticate(
    tx: &Transaction<'_>,
    id: NodeId,
    req: &RegisterRequest,
    grant: &crate::AuthKeyGrant,
    hostinfo: Option<&str>,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE nodes SET node_key = ?2, hostname = ?3, hostinfo = COALESCE(?4, hostinfo),
             tags = ?5, ephemeral = ?6, auth_key_id = ?7, expiry = NULL
         WHERE id = ?1",
        params![
            id.0,
            req.node_key.as_slice(),
            req.hostname,
            hostinfo,
            tags_to_json(&grant.tags),
            grant.ephemeral || req.ephemeral,
            grant.key_id,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authkey::{AuthKeySpec, NewAuthKey};
    use crate::time::from_unix;
    use std::time::Instant;

    const T0: i64 = 1_700_000_000;

    fn t(secs: i64) -> SystemTime {
        from_unix(T0 + secs)
    }

    /// A distinct non-zero key per (kind, n).
    fn key(kind: u8, n: u16) -> Key32 {
        let mut k = [kind; 32];
        k[..2].copy_from_slice(&n.to_be_bytes());
        k
    }
    fn nk(n: u16) -> Key32 {
        key(0x11, n)
    }
    fn mk(n: u16) -> Key32 {
        key(0x22, n)
    }

    fn open() -> (tempfile::TempDir, Store) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Store::open(tmp.path()).expect("open");
        (tmp, s)
    }

    fn authkey(s: &Store, reusable: bool, ephemeral: bool, tags: &[&str]) -> NewAuthKey {
        s.create_auth_key(
            &AuthKeySpec {
                reusable,
                ephemeral,
                tags: tags.iter().map(|t| t.to_string()).collect(),
                expiry: None,
            },
            t(0),
        )
        .expect("create key")
    }

    fn req(n: u16, hostname: &str, key: Option<&NewAuthKey>) -> RegisterRequest {
        RegisterRequest {
            node_key: nk(n),
            machine_key: mk(n),
            hostname: hostname.to_string(),
            hostinfo: Some(serde_json::json!({ "Hostname": hostname, "OS": "linux" })),
            auth_key: key.map(|k| k.key.clone()),
            ..RegisterRequest::default()
        }
    }

    fn register(s: &Store, r: &RegisterRequest) -> Registered {
        s.register(r, t(1)).expect("register")
    }

    #[test]
    fn first_node_gets_the_first_addresses_name_and_the_keys_grant() {
        let (_d, s) = open();
        let k = authkey(&s, false, true, &["tag:inferadb-us-west-1"]);
        let r = register(&s, &req(1, "Engine-0", Some(&k)));
        assert_eq!(r.outcome, RegisterOutcome::Created);
        let n = r.node;
        assert_eq!(n.id, NodeId(1));
        assert_eq!(n.ipv4, Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(n.ipv6.to_string(), "fd7a:115c:a1e0:ab12:4843:cd96:6240:1");
        assert_eq!(n.given_name, "engine-0");
        assert_eq!(n.hostname, "Engine-0");
        assert_eq!(n.fqdn(&BaseDomain::default()), "engine-0.tailnet.internal");
        assert_eq!(n.tags, vec!["tag:inferadb-us-west-1"]);
        assert!(n.ephemeral);
        assert_eq!(n.auth_key_id.as_deref(), Some(k.id.as_str()));
        assert_eq!(n.node_key, nk(1));
        assert_eq!(n.machine_key, mk(1));
        assert_eq!(n.created, t(1));
        assert_eq!(n.last_seen, None);
        assert!(!n.online);
        assert!(n.stable_id.starts_with('n') && n.stable_id.len() == 17);
        assert_eq!(
            n.hostinfo.as_ref().and_then(|h| h["OS"].as_str()),
            Some("linux")
        );
    }

    #[test]
    fn refusals_store_nothing() {
        let (_d, s) = open();
        let single = authkey(&s, false, false, &[]);
        let r = s.register(&req(1, "a", None), t(1));
        assert!(matches!(r, Err(RegisterError::AuthKeyRequired)), "{r:?}");
        let mut bad = req(1, "a", None);
        bad.auth_key = Some("tskey-auth-nope".into());
        let r = s.register(&bad, t(1));
        assert!(
            matches!(r, Err(RegisterError::AuthKey(AuthKeyError::Malformed))),
            "{r:?}"
        );
        let mut zero = req(1, "a", Some(&single));
        zero.node_key = [0; 32];
        assert!(matches!(
            s.register(&zero, t(1)),
            Err(RegisterError::ZeroKey)
        ));
        let mut zero = req(1, "a", Some(&single));
        zero.machine_key = [0; 32];
        assert!(matches!(
            s.register(&zero, t(1)),
            Err(RegisterError::ZeroKey)
        ));
        assert_eq!(s.node_count().expect("count"), 0);
        // The single-use key was not spent by any of these.
        register(&s, &req(1, "a", Some(&single)));
        let r = s.register(&req(2, "b", Some(&single)), t(1));
        assert!(
            matches!(r, Err(RegisterError::AuthKey(AuthKeyError::UsedUp))),
            "{r:?}"
        );
        assert_eq!(s.node_count().expect("count"), 1);
        assert!(RegisterError::AuthKeyRequired
            .to_string()
            .contains("auth key"));
    }

    #[test]
    fn known_node_rejoins_without_a_key_and_keeps_everything() {
        let (_d, s) = open();
        let single = authkey(&s, false, false, &["tag:x"]);
        let first = register(&s, &req(1, "web", Some(&single))).node;
        // Restarted node: no key, or its old (now used-up) key: both fine.
        for key in [None, Some(&single)] {
            let mut again = req(1, "web-renamed", key);
            again.hostinfo = None;
            let r = s.register(&again, t(50)).expect("rejoin");
            assert_eq!(r.outcome, RegisterOutcome::Existing);
            assert_eq!(r.node.id, first.id);
            assert_eq!(r.node.ipv4, first.ipv4);
            assert_eq!(r.node.ipv6, first.ipv6);
            assert_eq!(r.node.given_name, "web", "the MagicDNS name does not move");
            assert_eq!(r.node.hostname, "web-renamed");
            assert_eq!(r.node.tags, vec!["tag:x"]);
            assert_eq!(
                r.node.hostinfo, first.hostinfo,
                "no hostinfo keeps the old one"
            );
        }
        assert_eq!(s.node_count().expect("count"), 1);
    }

    #[test]
    fn no_node_can_register_as_anothers_node_key() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &[]);
        register(&s, &req(1, "victim", Some(&k)));
        let mut thief = req(2, "thief", Some(&k));
        thief.node_key = nk(1);
        let r = s.register(&thief, t(2));
        assert!(matches!(r, Err(RegisterError::NodeKeyInUse)), "{r:?}");
        assert_eq!(s.node_count().expect("count"), 1);
        let victim = s
            .node_by_node_key(&nk(1))
            .expect("get")
            .expect("still there");
        assert_eq!(victim.machine_key, mk(1));
    }

    #[test]
    fn node_key_rotation_keeps_the_node() {
        let (_d, s) = open();
        let k = authkey(&s, false, false, &[]);
        let first = register(&s, &req(1, "db", Some(&k))).node;
        let mut rotate = req(1, "db", None);
        rotate.node_key = nk(100);
        rotate.old_node_key = Some(nk(1));
        let r = s.register(&rotate, t(5)).expect("rotate");
        assert_eq!(r.outcome, RegisterOutcome::Rotated);
        assert_eq!(r.node.id, first.id);
        assert_eq!(r.node.ipv4, first.ipv4);
        assert_eq!(r.node.given_name, first.given_name);
        assert_eq!(r.node.node_key, nk(100));
        assert!(s.node_by_node_key(&nk(1)).expect("get").is_none());
        assert_eq!(
            s.node_by_machine_key(&mk(1)).expect("get").map(|n| n.id),
            Some(first.id)
        );
        // A wrong old key proves nothing.
        let mut wrong = req(1, "db", None);
        wrong.node_key = nk(101);
        wrong.old_node_key = Some(nk(55));
        assert!(matches!(
            s.register(&wrong, t(6)),
            Err(RegisterError::AuthKeyRequired)
        ));
    }

    #[test]
    fn known_machine_with_a_new_key_and_an_auth_key_reauthenticates() {
        let (_d, s) = open();
        let k1 = authkey(&s, false, false, &["tag:old"]);
        let first = register(&s, &req(1, "svc", Some(&k1))).node;
        let k2 = authkey(&s, false, true, &["tag:new"]);
        let mut again = req(1, "svc", Some(&k2));
        again.node_key = nk(9);
        let r = s.register(&again, t(9)).expect("re-auth");
        assert_eq!(r.outcome, RegisterOutcome::Reauthenticated);
        assert_eq!(r.node.id, first.id);
        assert_eq!(r.node.ipv4, first.ipv4);
        assert_eq!(r.node.tags, vec!["tag:new"]);
        assert!(r.node.ephemeral);
        assert_eq!(r.node.auth_key_id.as_deref(), Some(k2.id.as_str()));
        assert_eq!(r.node.node_key, nk(9));
    }

    #[test]
    fn expired_node_key_needs_an_auth_key() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &[]);
        let n = register(&s, &req(1, "old", Some(&k))).node;
        assert!(!n.key_expired(t(100)));
        // A logout: expiry in the past.
        s.set_key_expiry(n.id, Some(t(10))).expect("expire");
        assert!(s.node(n.id).expect("get").expect("node").key_expired(t(10)));
        let r = s.register(&req(1, "old", None), t(20));
        assert!(matches!(r, Err(RegisterError::NodeKeyExpired)), "{r:?}");
        // Rotation from an expired key is not allowed either.
        let mut rotate = req(1, "old", None);
        rotate.node_key = nk(2);
        rotate.old_node_key = Some(nk(1));
        assert!(matches!(
            s.register(&rotate, t(20)),
            Err(RegisterError::AuthKeyRequired)
        ));
        let r = s
            .register(&req(1, "old", Some(&k)), t(20))
            .expect("re-auth");
        assert_eq!(r.outcome, RegisterOutcome::Reauthenticated);
        assert_eq!(r.node.key_expiry, None);
        assert_eq!(r.node.ipv4, n.ipv4);
        assert!(matches!(
            s.set_key_expiry(NodeId(999), None),
            Err(StoreError::NodeNotFound(999))
        ));
    }

    #[test]
    fn name_collisions_get_numbered() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &[]);
        let names: Vec<String> = ["web", "WEB", "web", "Web Server", "", "web-1"]
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let n = u16::try_from(i).expect("small");
                register(&s, &req(n + 1, h, Some(&k))).node.given_name
            })
            .collect();
        assert_eq!(
            names,
            ["web", "web-1", "web-2", "web-server", "node", "web-1-1"]
        );
        // A removed node's name is free again.
        let web1 = s.node_by_node_key(&nk(2)).expect("get").expect("node");
        assert!(s.remove(web1.id).expect("remove"));
        assert_eq!(
            register(&s, &req(20, "web", Some(&k))).node.given_name,
            "web-1"
        );
    }

    #[test]
    fn addresses_are_lowest_free_and_survive_a_restart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let before = {
            let s = Store::open(tmp.path()).expect("open");
            let k = authkey(&s, true, false, &[]);
            for n in 1..=3 {
                register(&s, &req(n, "n", Some(&k)));
            }
            let second = s.node_by_node_key(&nk(2)).expect("get").expect("node");
            assert_eq!(second.ipv4, Ipv4Addr::new(100, 64, 0, 2));
            assert!(s.remove(second.id).expect("remove"));
            assert!(!s.remove(second.id).expect("remove again"));
            let fourth = register(&s, &req(4, "n", Some(&k))).node;
            assert_eq!(
                fourth.ipv4,
                Ipv4Addr::new(100, 64, 0, 2),
                "the hole is reused"
            );
            assert_eq!(fourth.id, NodeId(4), "IDs are never reused");
            s.set_endpoints(fourth.id, &["192.0.2.1:41641".parse().expect("addr")])
                .expect("endpoints");
            s.set_online(fourth.id, true, t(30)).expect("online");
            s.nodes().expect("list")
        };
        // A coordinator restart loses nothing.
        let s = Store::open(tmp.path()).expect("reopen");
        assert_eq!(s.nodes().expect("list"), before);
        // A known node rejoins with its addresses; a new one takes the next.
        let again = register(&s, &req(1, "n", None)).node;
        assert_eq!(again.ipv4, Ipv4Addr::new(100, 64, 0, 1));
        let k = authkey(&s, false, false, &[]);
        assert_eq!(
            register(&s, &req(5, "n", Some(&k))).node.ipv4,
            Ipv4Addr::new(100, 64, 0, 4)
        );
    }

    #[test]
    fn two_processes_registering_at_once_get_distinct_addresses() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let a = Store::open(tmp.path()).expect("a");
        let b = Store::open(tmp.path()).expect("b");
        let k = authkey(&a, true, false, &[]);
        std::thread::scope(|sc| {
            for (store, base) in [(&a, 0u16), (&b, 100u16)] {
                let k = &k;
                sc.spawn(move || {
                    for i in 0..20 {
                        register(store, &req(base + i, "same", Some(k)));
                    }
                });
            }
        });
        let nodes = a.nodes().expect("list");
        assert_eq!(nodes.len(), 40);
        let mut v4: Vec<_> = nodes.iter().map(|n| n.ipv4).collect();
        let mut names: Vec<_> = nodes.iter().map(|n| n.given_name.clone()).collect();
        v4.sort();
        v4.dedup();
        names.sort();
        names.dedup();
        assert_eq!((v4.len(), names.len()), (40, 40));
    }

    #[test]
    fn endpoints_and_map_updates_report_changes() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &[]);
        let id = register(&s, &req(1, "e", Some(&k))).node.id;
        let e1: SocketAddr = "192.0.2.1:41641".parse().expect("addr");
        let e2: SocketAddr = "[2001:db8::1]:41641".parse().expect("addr");
        assert!(s.set_endpoints(id, &[e1, e2, e1]).expect("set"));
        assert!(!s.set_endpoints(id, &[e1, e2]).expect("same"));
        assert_eq!(
            s.node(id).expect("get").expect("node").endpoints,
            vec![e1, e2]
        );
        let many: Vec<SocketAddr> = (1..=200u16)
            .map(|p| SocketAddr::from(([192, 0, 2, 1], p)))
            .collect();
        s.set_endpoints(id, &many).expect("many");
        assert_eq!(
            s.node(id).expect("get").expect("node").endpoints.len(),
            MAX_ENDPOINTS
        );

        let disco = key(0x33, 1);
        let c = s
            .apply_map_update(
                id,
                &MapUpdate {
                    disco_key: Some(disco),
                    ..MapUpdate::default()
                },
            )
            .expect("disco");
        assert_eq!(
            c,
            MapUpdateChanges {
                disco_key: true,
                ..MapUpdateChanges::default()
            }
        );
        // A zero disco key never replaces a known one.
        let c = s
            .apply_map_update(
                id,
                &MapUpdate {
                    disco_key: Some([0; 32]),
                    ..MapUpdate::default()
                },
            )
            .expect("zero");
        assert!(!c.any());
        assert_eq!(
            s.node(id).expect("get").expect("node").disco_key,
            Some(disco)
        );
        let hi = serde_json::json!({ "Hostname": "e", "NetInfo": { "PreferredDERP": 1 } });
        let update = MapUpdate {
            endpoints: Some(vec![e2]),
            hostinfo: Some(hi.clone()),
            hostname: Some("e2".into()),
            disco_key: Some(disco),
        };
        let c = s.apply_map_update(id, &update).expect("update");
        assert_eq!(
            c,
            MapUpdateChanges {
                endpoints: true,
                disco_key: false,
                hostinfo: true
            }
        );
        assert!(!s.apply_map_update(id, &update).expect("again").any());
        let n = s.node(id).expect("get").expect("node");
        assert_eq!(n.hostinfo, Some(hi));
        assert_eq!(n.hostname, "e2");
        assert_eq!(n.given_name, "e");
        assert!(matches!(
            s.set_endpoints(NodeId(77), &[e1]),
            Err(StoreError::NodeNotFound(77))
        ));
    }

    #[test]
    fn online_offline_and_restart() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &[]);
        let a = register(&s, &req(1, "a", Some(&k))).node.id;
        let b = register(&s, &req(2, "b", Some(&k))).node.id;
        assert!(s.set_online(a, true, t(10)).expect("on"));
        assert!(!s.set_online(a, true, t(11)).expect("still on"));
        let n = s.node(a).expect("get").expect("node");
        assert!(n.online);
        assert_eq!(n.last_seen, Some(t(11)));
        assert!(s.set_online(b, true, t(12)).expect("on"));
        assert!(s.set_online(b, false, t(13)).expect("off"));
        assert_eq!(s.mark_all_offline(t(100)).expect("reset"), vec![a]);
        let n = s.node(a).expect("get").expect("node");
        assert!(!n.online);
        assert_eq!(n.last_seen, Some(t(100)));
        assert_eq!(
            s.node(b).expect("get").expect("node").last_seen,
            Some(t(13)),
            "an offline node keeps its last-seen time"
        );
        assert!(matches!(
            s.set_online(NodeId(42), true, t(1)),
            Err(StoreError::NodeNotFound(42))
        ));
    }

    #[test]
    fn ephemeral_nodes_go_after_the_grace_period() {
        let (_d, s) = open();
        let eph = authkey(&s, true, true, &[]);
        let keep = authkey(&s, true, false, &[]);
        // t(1): every node registered.
        let gone = register(&s, &req(1, "gone", Some(&eph))).node.id;
        let online = register(&s, &req(2, "online", Some(&eph))).node.id;
        let recent = register(&s, &req(3, "recent", Some(&eph))).node.id;
        let never = register(&s, &req(4, "never", Some(&eph))).node.id;
        let durable = register(&s, &req(5, "durable", Some(&keep))).node.id;
        let mut asks = req(6, "asks", Some(&keep));
        asks.ephemeral = true;
        let asks = register(&s, &asks).node;
        assert!(asks.ephemeral, "the node's own Ephemeral flag counts");
        s.set_online(gone, false, t(10)).expect("off");
        s.set_online(online, true, t(10)).expect("on");
        s.set_online(recent, false, t(500)).expect("off");
        s.set_online(durable, false, t(10)).expect("off");
        s.set_online(asks.id, false, t(10)).expect("off");
        let grace = i64::try_from(DEFAULT_EPHEMERAL_GRACE.as_secs()).expect("secs");
        let now = t(400);
        let removed = s
            .remove_ephemeral_offline_since(now - DEFAULT_EPHEMERAL_GRACE)
            .expect("sweep");
        assert_eq!(now, t(100 + grace));
        assert_eq!(removed, vec![gone, never, asks.id]);
        let left: Vec<NodeId> = s.nodes().expect("list").iter().map(|n| n.id).collect();
        assert_eq!(left, vec![online, recent, durable]);
        assert!(s
            .remove_ephemeral_offline_since(now - DEFAULT_EPHEMERAL_GRACE)
            .expect("again")
            .is_empty());
    }

    #[test]
    fn a_thousand_nodes() {
        let (_d, s) = open();
        let k = authkey(&s, true, false, &["tag:load"]);
        let start = Instant::now();
        for n in 1..=1000u16 {
            let mut r = req(n, "pod", Some(&k));
            r.hostinfo = Some(serde_json::json!({
                "Hostname": "pod", "OS": "linux", "GoVersion": "go1.25", "NetInfo": { "PreferredDERP": 1 }
            }));
            register(&s, &r);
        }
        let registered = start.elapsed();
        let start = Instant::now();
        let nodes = s.nodes().expect("list");
        let listed = start.elapsed();
        let start = Instant::now();
        for n in 1..=1000u16 {
            let node = s.node_by_node_key(&nk(n)).expect("get").expect("node");
            assert_eq!(node.machine_key, mk(n));
        }
        let looked_up = start.elapsed();
        eprintln!(
            "1000 nodes: register {registered:?}, list {listed:?}, 1000 lookups {looked_up:?}"
        );
        assert_eq!(nodes.len(), 1000);
        let mut v4: Vec<u32> = nodes.iter().map(|n| u32::from(n.ipv4)).collect();
        v4.dedup();
        assert_eq!(
            v4.len(),
            1000,
            "listed by ID, which follows address order here"
        );
        assert_eq!(nodes[999].given_name, "pod-999");
        // 254 per /24 (.0 and .255 are skipped): the 1000th is 100.64.3.238.
        assert_eq!(nodes[999].ipv4, Ipv4Addr::new(100, 64, 3, 238));
    }

    #[test]
    fn lookups_use_the_unique_indexes() {
        let (_d, s) = open();
        let conn = s.conn.lock();
        for col in ["node_key", "machine_key"] {
            let plan: String = conn
                .query_row(
                    &format!(
                        "EXPLAIN QUERY PLAN SELECT {NODE_COLUMNS} FROM nodes WHERE {col} = ?1"
                    ),
                    [[0u8; 32].as_slice()],
                    |r| r.get(3),
                )
                .expect("plan");
            assert!(plan.contains("USING INDEX"), "{col}: {plan}");
        }
    }
}
