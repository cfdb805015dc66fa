//! What a running node reports about itself and its peers: the value behind
//! `inferadb-mesh status`.
//!
//! The JSON shape follows `tailscale status --json` (Go's
//! `ipn/ipnstate.Status` and `PeerStatus`, v1.90): PascalCase field names,
//! times as RFC 3339 strings with Go's zero time `0001-01-01T00:00:00Z` for
//! "never", `Peer` keyed by `nodekey:<hex>`, `Tags` left out when empty. So
//! scripts written for `tailscale status --json` keep working, e.g.
//!
//! ```text
//! inferadb-mesh status --json | jq '.Peer[] | {Name, CurAddr, Relay}'
//! ```
//!
//! One addition: every entry carries `Name`, the short host name (the
//! first label of `DNSName`, else `HostName`), which Go's `PeerStatus`
//! lacks.
//!
//! Deserialization is lenient the way Go's output needs: `null` where a
//! list or map is expected reads as empty, missing fields take defaults, and
//! unknown fields are ignored, so real `tailscale status --json` output
//! parses too.
//!
//! The node fills a [`Status`] from its netmap ([`PeerStatus::from_control_node`])
//! and its counters ([`PeerStatus::apply_stats`]); [`Status::to_table`]
//! renders the plain-text form.

use crate::stats::PeerStats;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};
use tailnet_wire::control::{Node as ControlNode, Timestamp};
use tailnet_wire::{KeyKind, PublicKey};

/// Go's zero `time.Time` as JSON: what a time that never happened reads as.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A peer whose last handshake is older than this is not `Active`
/// (WireGuard's `REJECT_AFTER_TIME`: the session is gone by then).
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(180);

/// `t` as Go writes a `time.Time` in JSON (RFC 3339, UTC, fraction trimmed);
/// `None`, or a time outside the years 0000-9999, is [`ZERO_TIME`].
pub fn go_time(t: Option<SystemTime>) -> String {
    t.and_then(Timestamp::from_system_time)
        .map_or_else(|| ZERO_TIME.to_owned(), |ts| ts.to_string())
}

/// The node's state, as Go's `ipn.State` names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BackendState {
    /// Nothing has happened yet.
    #[default]
    NoState,
    /// Control wants the node to log in (no or a rejected auth key).
    NeedsLogin,
    /// Registered; waiting for an admin to approve the machine.
    NeedsMachineAuth,
    /// Registered, waiting for the first netmap.
    Starting,
    /// Has a netmap; the data plane is up.
    Running,
    /// Shut down.
    Stopped,
}

impl BackendState {
    /// The name as JSON carries it (`"Running"`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::NoState => "NoState",
            BackendState::NeedsLogin => "NeedsLogin",
            BackendState::NeedsMachineAuth => "NeedsMachineAuth",
            BackendState::Starting => "Starting",
            BackendState::Running => "Running",
            BackendState::Stopped => "Stopped",
        }
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tailnet the node is in (Go's `ipnstate.TailnetStatus`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct TailnetStatus {
    /// The tailnet's name (e.g. `example.com` or the coordinator's name).
    pub name: String,
    /// The MagicDNS suffix, without a leading or trailing dot.
    #[serde(rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
    /// Whether MagicDNS is on.
    #[serde(rename = "MagicDNSEnabled")]
    pub magic_dns_enabled: bool,
}

/// A snapshot of a node: itself, its peers and its state (Go's
/// `ipnstate.Status`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Status {
    /// The node software's version.
    pub version: String,
    /// Where the node is in its life: `NeedsLogin`, `Starting`, `Running`, …
    pub backend_state: BackendState,
    /// A URL to visit to log in, when `BackendState` is `NeedsLogin` and
    /// control gave one; empty otherwise.
    #[serde(rename = "AuthURL")]
    pub auth_url: String,
    /// The node's own tailnet addresses.
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_as_default")]
    pub tailscale_ips: Vec<IpAddr>,
    /// The node itself.
    #[serde(rename = "Self")]
    pub self_: PeerStatus,
    /// Problems worth a human's attention, one sentence each.
    #[serde(deserialize_with = "null_as_default")]
    pub health: Vec<String>,
    /// The MagicDNS suffix, without a leading or trailing dot.
    #[serde(rename = "MagicDNSSuffix")]
    pub magic_dns_suffix: String,
    /// The tailnet, once the node has a netmap.
    pub current_tailnet: Option<TailnetStatus>,
    /// Peers by `nodekey:<hex>` (see [`peer_key`]).
    #[serde(deserialize_with = "null_as_default")]
    pub peer: BTreeMap<String, PeerStatus>,
}

/// One node as `status` shows it (Go's `ipnstate.PeerStatus`, plus `Name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PeerStatus {
    /// The node's stable ID as control gives it (e.g. `"nABC123CNTRL"`).
    #[serde(rename = "ID")]
    pub id: String,
    /// The node key, `nodekey:<hex>`.
    pub public_key: String,
    /// The host name the node reported (its OS host name or `--hostname`).
    pub host_name: String,
    /// The short name: the first label of `DNSName`, else `HostName`.
    /// Not in Go's `PeerStatus`; added so `jq '.Peer[] | {Name}'` works.
    pub name: String,
    /// The MagicDNS FQDN with a trailing dot (`db-1.tailnet.example.`);
    /// empty if control gave none.
    #[serde(rename = "DNSName")]
    pub dns_name: String,
    /// The node's operating system (`linux`, `macOS`, …).
    #[serde(rename = "OS")]
    pub os: String,
    /// The user who owns the node (0 when unknown).
    #[serde(rename = "UserID")]
    pub user_id: i64,
    /// The node's tailnet addresses.
    #[serde(rename = "TailscaleIPs", deserialize_with = "null_as_default")]
    pub tailscale_ips: Vec<IpAddr>,
    /// Prefixes routed to the node (its addresses plus subnet routes).
    #[serde(
        rename = "AllowedIPs",
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub allowed_ips: Vec<IpNet>,
    /// ACL tags (`tag:name`); left out of the JSON when empty, as Go does.
    #[serde(
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// UDP endpoints the node advertised (`ip:port`).
    #[serde(deserialize_with = "null_as_default")]
    pub addrs: Vec<String>,
    /// The direct UDP path in use (`ip:port`): for a disco peer the best
    /// address while disco pongs keep it trusted; `""` when there is none
    /// (relayed, or no path yet).
    pub cur_addr: String,
    /// The DERP region code relaying for the node (e.g. `inferadb`) while
    /// its packets go through the relay; `""` when they go direct.
    pub relay: String,
    /// WireGuard bytes received from the node.
    pub rx_bytes: u64,
    /// WireGuard bytes sent to the node.
    pub tx_bytes: u64,
    /// When the node was created (RFC 3339; [`ZERO_TIME`] if unknown).
    pub created: String,
    /// When we last sent it data (RFC 3339; [`ZERO_TIME`] if never).
    pub last_write: String,
    /// When control last saw it online (RFC 3339; [`ZERO_TIME`] if unknown).
    pub last_seen: String,
    /// When the last WireGuard handshake with it completed (RFC 3339;
    /// [`ZERO_TIME`] if never).
    pub last_handshake: String,
    /// Whether control says the node is connected.
    pub online: bool,
    /// Whether this is the exit node in use (always false: no exit nodes).
    pub exit_node: bool,
    /// Whether the node could serve as an exit node.
    pub exit_node_option: bool,
    /// Whether there is a live WireGuard session with the node.
    pub active: bool,
    /// Whether the node is in the current netmap.
    pub in_network_map: bool,
    /// Whether the path layer (magicsock) knows the node.
    pub in_magic_sock: bool,
    /// Whether the WireGuard engine has a tunnel for the node.
    pub in_engine: bool,
    /// Whether the node key has expired.
    #[serde(skip_serializing_if = "is_false")]
    pub expired: bool,
    /// When the node key expires (RFC 3339); absent if it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<String>,
}

impl Default for PeerStatus {
    fn default() -> Self {
        PeerStatus {
            id: String::new(),
            public_key: String::new(),
            host_name: String::new(),
            name: String::new(),
            dns_name: String::new(),
            os: String::new(),
            user_id: 0,
            tailscale_ips: Vec::new(),
            allowed_ips: Vec::new(),
            tags: Vec::new(),
            addrs: Vec::new(),
            cur_addr: String::new(),
            relay: String::new(),
            rx_bytes: 0,
            tx_bytes: 0,
            created: ZERO_TIME.to_owned(),
            last_write: ZERO_TIME.to_owned(),
            last_seen: ZERO_TIME.to_owned(),
            last_handshake: ZERO_TIME.to_owned(),
            online: false,
            exit_node: false,
            exit_node_option: false,
            active: false,
            in_network_map: false,
            in_magic_sock: false,
            in_engine: false,
            expired: false,
            key_expiry: None,
        }
    }
}

/// The key of a peer in [`Status::peer`]: `nodekey:<hex>`.
pub fn peer_key(key: &PublicKey) -> String {
    key.to_prefixed(KeyKind::Node)
}

/// The short name of a node: the first label of its MagicDNS name, else its
/// host name (`"db-1.tail.example."` → `"db-1"`).
pub fn short_name(dns_name: &str, host_name: &str) -> String {
    match dns_name.split('.').next() {
        Some(first) if !first.is_empty() => first.to_owned(),
        _ => host_name.to_owned(),
    }
}

impl PeerStatus {
    /// The entry for a node in the netmap: identity, names, addresses,
    /// tags, `Online`/`LastSeen` as control reports them. Path and
    /// counters are left empty; fill them with [`PeerStatus::apply_stats`].
    pub fn from_control_node(node: &ControlNode) -> PeerStatus {
        let hostinfo = node.hostinfo.as_ref();
        let host_name = hostinfo.map(|h| h.hostname.clone()).unwrap_or_default();
        let fmt_ts = |t: Timestamp| {
            if t.is_zero() {
                ZERO_TIME.to_owned()
            } else {
                t.to_string()
            }
        };
        PeerStatus {
            id: if node.stable_id.is_empty() {
                node.id.to_string()
            } else {
                node.stable_id.clone()
            },
            public_key: peer_key(&node.key.key()),
            name: short_name(&node.name, &host_name),
            host_name,
            dns_name: node.name.clone(),
            os: hostinfo.map(|h| h.os.clone()).unwrap_or_default(),
            user_id: node.user,
            tailscale_ips: node.addresses.iter().map(IpNet::addr).collect(),
            allowed_ips: node.effective_allowed_ips().to_vec(),
            tags: node.tags.clone(),
            addrs: node.endpoints.iter().map(ToString::to_string).collect(),
            created: fmt_ts(node.created),
            last_seen: node.last_seen.map_or_else(|| ZERO_TIME.to_owned(), fmt_ts),
            online: node.online.unwrap_or(false),
            expired: node.expired,
            key_expiry: (!node.key_expiry.is_zero()).then(|| node.key_expiry.to_string()),
            in_network_map: true,
            ..PeerStatus::default()
        }
    }

    /// Fills the data-plane half from the node's counters for this peer:
    /// `CurAddr` (the trusted direct address), `Relay` (the relay region's
    /// number; [`crate::Node::status`] replaces it with the region's code
    /// from the DERP map), `RxBytes`/`TxBytes`,
    /// `LastHandshake`, `InEngine`/`InMagicSock`, and `Active` (a handshake
    /// completed within [`ACTIVE_WINDOW`] of `now`).
    pub fn apply_stats(&mut self, stats: &PeerStats, now: SystemTime) {
        self.cur_addr = stats.cur_addr.map(|e| e.to_string()).unwrap_or_default();
        self.relay = if stats.relay_region != 0 {
            stats.relay_region.to_string()
        } else {
            String::new()
        };
        self.rx_bytes = stats.rx_bytes;
        self.tx_bytes = stats.tx_bytes;
        self.last_handshake = go_time(stats.last_handshake);
        self.in_engine = true;
        self.in_magic_sock = true;
        self.active = stats.last_handshake.is_some_and(|t| {
            now.duration_since(t)
                .map_or(true, |age| age <= ACTIVE_WINDOW)
        });
    }

    /// The first tailnet address, IPv4 preferred (`-` if none), as the
    /// table's first column shows it.
    pub fn first_ip(&self) -> String {
        self.tailscale_ips
            .iter()
            .find(|a| a.is_ipv4())
            .or_else(|| self.tailscale_ips.first())
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }

    /// The table's last column, worded as `tailscale status` words it:
    /// `active; direct 192.0.2.7:41641, tx 123 rx 456`, `active; relay
    /// "fra"`, `idle` (traffic but no live session), `idle; offline`,
    /// `offline`, or `-` (online, never talked to).
    pub fn path_summary(&self) -> String {
        let any_traffic = self.tx_bytes != 0 || self.rx_bytes != 0;
        let offline = if self.online { "" } else { "; offline" };
        if !self.active {
            return if any_traffic {
                format!("idle{offline}")
            } else if !self.online {
                "offline".to_owned()
            } else {
                "-".to_owned()
            };
        }
        let mut s = String::from("active; ");
        if !self.cur_addr.is_empty() {
            let _ = write!(s, "direct {}", self.cur_addr);
        } else if !self.relay.is_empty() {
            let _ = write!(s, "relay {:?}", self.relay);
        } else {
            s.push('-');
        }
        if any_traffic {
            let _ = write!(s, ", tx {} rx {}", self.tx_bytes, self.rx_bytes);
        }
        s.push_str(offline);
        s
    }

    pub(crate) fn display_name(&self) -> &str {
        if !self.name.is_empty() {
            &self.name
        } else if !self.host_name.is_empty() {
            &self.host_name
        } else {
            "-"
        }
    }
}

impl Status {
    /// The plain-text form, like `tailscale status`: one line per node,
    /// the node itself first, then peers by name. Columns, separated by two
    /// spaces and aligned:
    ///
    /// 1. address: the first tailnet address (IPv4 preferred);
    /// 2. name: the short host name (`Name`);
    /// 3. tags: comma-separated ACL tags, or `-`;
    /// 4. OS: as the node reported it (`-` if unknown);
    /// 5. online/path: `active; direct ADDR[, tx N rx M]`, `active; relay
    ///    "REGION"`, `idle`, `idle; offline`, `offline` or `-` (see
    ///    [`PeerStatus::path_summary`]).
    ///
    /// When the node is not `Running` a `# state: …` line comes first
    /// (with the login URL if there is one); health messages follow the
    /// table as `# health: …` lines. Every line ends in `\n`.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        if self.backend_state != BackendState::Running {
            let _ = writeln!(out, "# state: {}", self.backend_state);
            if !self.auth_url.is_empty() {
                let _ = writeln!(out, "# log in at: {}", self.auth_url);
            }
        }
        let mut peers: Vec<&PeerStatus> = self.peer.values().collect();
        peers.sort_by(|a, b| {
            (a.display_name(), &a.dns_name, &a.public_key).cmp(&(
                b.display_name(),
                &b.dns_name,
                &b.public_key,
            ))
        });
        let me = if self.self_.tailscale_ips.is_empty() && !self.tailscale_ips.is_empty() {
            PeerStatus {
                tailscale_ips: self.tailscale_ips.clone(),
                ..self.self_.clone()
            }
        } else {
            self.self_.clone()
        };
        let rows: Vec<[String; 5]> = std::iter::once(&me)
            .chain(peers)
            .map(|p| {
                [
                    p.first_ip(),
                    p.display_name().to_owned(),
                    if p.tags.is_empty() {
                        "-".to_owned()
                    } else {
                        p.tags.join(",")
                    },
                    if p.os.is_empty() {
                        "-".to_owned()
                    } else {
                        p.os.clone()
                    },
                    p.path_summary(),
                ]
            })
            .collect();
        let mut widths = [0usize; 4];
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row.iter()) {
                *w = (*w).max(cell.chars().count());
            }
        }
        for row in &rows {
            for (w, cell) in widths.iter().zip(row.iter()) {
                let _ = write!(out, "{cell:<w$}  ");
            }
            let _ = writeln!(out, "{}", row[4]);
        }
        for h in &self.health {
            let _ = writeln!(out, "# health: {h}");
        }
        out
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::net::SocketAddr;

    fn key(b: u8) -> PublicKey {
        PublicKey::from_bytes([b; 32])
    }

    fn sample() -> Status {
        let me = PeerStatus {
            id: "nSELF".into(),
            public_key: peer_key(&key(1)),
            host_name: "db-0".into(),
            name: "db-0".into(),
            dns_name: "db-0.mesh.example.".into(),
            os: "linux".into(),
            tailscale_ips: vec!["100.64.0.1".parse().unwrap()],
            online: true,
            in_network_map: true,
            ..PeerStatus::default()
        };
        let direct = PeerStatus {
            id: "nPEER2".into(),
            public_key: peer_key(&key(2)),
            host_name: "db-1".into(),
            name: "db-1".into(),
            dns_name: "db-1.mesh.example.".into(),
            os: "linux".into(),
            tailscale_ips: vec!["100.64.0.2".parse().unwrap(), "fd7a::2".parse().unwrap()],
            tags: vec!["tag:inferadb-us-west-1".into()],
            cur_addr: "127.0.0.1:41641".into(),
            rx_bytes: 456,
            tx_bytes: 123,
            last_handshake: "2025-01-31T12:00:00Z".into(),
            online: true,
            active: true,
            in_network_map: true,
            in_magic_sock: true,
            in_engine: true,
            key_expiry: Some("2025-06-01T00:00:00Z".into()),
            ..PeerStatus::default()
        };
        let offline = PeerStatus {
            id: "nPEER3".into(),
            public_key: peer_key(&key(3)),
            name: "cache".into(),
            dns_name: "cache.mesh.example.".into(),
            os: "linux".into(),
            tailscale_ips: vec!["100.64.0.3".parse().unwrap()],
            ..PeerStatus::default()
        };
        Status {
            version: "0.1.0".into(),
            backend_state: BackendState::Running,
            tailscale_ips: me.tailscale_ips.clone(),
            self_: me,
            magic_dns_suffix: "mesh.example".into(),
            current_tailnet: Some(TailnetStatus {
                name: "mesh".into(),
                magic_dns_suffix: "mesh.example".into(),
                magic_dns_enabled: true,
            }),
            peer: [direct, offline]
                .into_iter()
                .map(|p| (p.public_key.clone(), p))
                .collect(),
            ..Status::default()
        }
    }

    #[test]
    fn status_round_trips() {
        let s = sample();
        let json = serde_json::to_string_pretty(&s).unwrap();
        let back: Status = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn json_field_names_are_go_s() {
        let v = serde_json::to_value(sample()).unwrap();
        for k in [
            "Version",
            "BackendState",
            "TailscaleIPs",
            "Self",
            "Peer",
            "MagicDNSSuffix",
            "CurrentTailnet",
            "Health",
        ] {
            assert!(v.get(k).is_some(), "Status lacks {k}");
        }
        assert_eq!(v["BackendState"], "Running");
        assert_eq!(v["CurrentTailnet"]["MagicDNSEnabled"], true);
        let p = &v["Peer"][peer_key(&key(2))];
        for k in [
            "ID",
            "PublicKey",
            "HostName",
            "DNSName",
            "OS",
            "TailscaleIPs",
            "Online",
            "Active",
            "CurAddr",
            "Relay",
            "RxBytes",
            "TxBytes",
            "Created",
            "LastWrite",
            "LastSeen",
            "LastHandshake",
            "KeyExpiry",
            "ExitNode",
            "InNetworkMap",
            "InMagicSock",
            "InEngine",
        ] {
            assert!(p.get(k).is_some(), "PeerStatus lacks {k}");
        }
        assert!(p["PublicKey"].as_str().unwrap().starts_with("nodekey:"));
        assert_eq!(p["TailscaleIPs"][1], "fd7a::2");
        // Tags and KeyExpiry are omitted when empty, as Go omits them.
        let off = &v["Peer"][peer_key(&key(3))];
        assert!(off.get("Tags").is_none());
        assert!(off.get("KeyExpiry").is_none());
        assert_eq!(off["LastHandshake"], ZERO_TIME);
        assert_eq!(off["CurAddr"], "");
    }

    /// The fields of the issue's query, `jq '.Peer[] | {Name, DNSName,
    /// TailscaleIPs, Tags, Online, CurAddr, Relay, LastHandshake, RxBytes,
    /// TxBytes}'`, exist on every peer that has them, with JSON types a
    /// script can rely on.
    #[test]
    fn jq_query_fields_exist() {
        let v: Value = serde_json::from_str(&serde_json::to_string(&sample()).unwrap()).unwrap();
        let peers = v["Peer"].as_object().unwrap();
        assert_eq!(peers.len(), 2);
        for p in peers.values() {
            assert!(p["Name"].is_string());
            assert!(p["DNSName"].as_str().unwrap().ends_with('.'));
            assert!(p["TailscaleIPs"].is_array());
            assert!(p["Online"].is_boolean());
            assert!(p["CurAddr"].is_string());
            assert!(p["Relay"].is_string());
            assert!(p["LastHandshake"].is_string());
            assert!(p["RxBytes"].is_u64());
            assert!(p["TxBytes"].is_u64());
        }
        let p = &peers[&peer_key(&key(2))];
        assert_eq!(p["Name"], "db-1");
        assert_eq!(p["Tags"][0], "tag:inferadb-us-west-1");
        assert_eq!(p["CurAddr"], "127.0.0.1:41641");
        assert!(v["Self"]["Name"].is_string());
    }

    #[test]
    fn go_output_with_nulls_parses() {
        // The shape `tailscale status --json` prints, trimmed, with Go's
        // nils and fields we do not model.
        let go = r#"{
          "Version": "1.90.9-t1234",
          "TUN": true,
          "BackendState": "Running",
          "AuthURL": "",
          "TailscaleIPs": ["100.101.102.103", "fd7a:115c:a1e0::1"],
          "Self": {
            "ID": "nXYZ", "PublicKey": "nodekey:0101010101010101010101010101010101010101010101010101010101010101",
            "HostName": "laptop", "DNSName": "laptop.tail1234.ts.net.", "OS": "linux",
            "UserID": 42, "TailscaleIPs": null, "Addrs": null, "CurAddr": "", "Relay": "fra",
            "RxBytes": 0, "TxBytes": 0, "Created": "2024-01-02T03:04:05.123456789Z",
            "LastWrite": "0001-01-01T00:00:00Z", "LastSeen": "0001-01-01T00:00:00Z",
            "LastHandshake": "0001-01-01T00:00:00Z", "Online": true, "ExitNode": false,
            "ExitNodeOption": false, "Active": false, "PeerAPIURL": null,
            "InNetworkMap": true, "InMagicSock": false, "InEngine": false
          },
          "Health": null,
          "MagicDNSSuffix": "tail1234.ts.net",
          "CurrentTailnet": {"Name": "me@example.com", "MagicDNSSuffix": "tail1234.ts.net", "MagicDNSEnabled": true},
          "Peer": null,
          "User": {"42": {"ID": 42, "LoginName": "me@example.com"}},
          "ClientVersion": null
        }"#;
        let s: Status = serde_json::from_str(go).unwrap();
        assert_eq!(s.backend_state, BackendState::Running);
        assert!(s.peer.is_empty());
        assert!(s.health.is_empty());
        assert_eq!(s.self_.relay, "fra");
        assert_eq!(s.self_.user_id, 42);
        assert_eq!(s.tailscale_ips.len(), 2);
        // No Name in Go's output: it stays empty, and the table falls back
        // to HostName.
        assert!(s.self_.name.is_empty());
        assert!(s.to_table().contains("laptop"));
    }

    #[test]
    fn backend_states_are_go_strings() {
        for (st, s) in [
            (BackendState::NoState, "NoState"),
            (BackendState::NeedsLogin, "NeedsLogin"),
            (BackendState::NeedsMachineAuth, "NeedsMachineAuth"),
            (BackendState::Starting, "Starting"),
            (BackendState::Running, "Running"),
            (BackendState::Stopped, "Stopped"),
        ] {
            assert_eq!(serde_json::to_value(st).unwrap(), s);
            assert_eq!(st.to_string(), s);
            let back: BackendState = serde_json::from_value(s.into()).unwrap();
            assert_eq!(back, st);
        }
    }

    #[test]
    fn table_lines() {
        let t = sample().to_table();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        // Self first, then peers by name (cache before db-1).
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            ["100.64.0.1", "db-0", "-", "linux", "-"]
        );
        assert!(lines[1].starts_with("100.64.0.3"), "{t}");
        assert!(lines[1].ends_with("  offline"), "{t}");
        assert_eq!(
            lines[2].split_whitespace().take(4).collect::<Vec<_>>(),
            ["100.64.0.2", "db-1", "tag:inferadb-us-west-1", "linux"]
        );
        assert!(
            lines[2].ends_with("active; direct 127.0.0.1:41641, tx 123 rx 456"),
            "{t}"
        );
        // Columns line up.
        let col = |l: &str| l.find("linux").unwrap();
        assert_eq!(col(lines[0]), col(lines[1]));
        assert_eq!(col(lines[1]), col(lines[2]));
    }

    #[test]
    fn table_header_and_health() {
        let mut s = sample();
        s.backend_state = BackendState::NeedsLogin;
        s.auth_url = "https://login.example/a/b".into();
        s.health = vec!["no DERP home".into()];
        let t = s.to_table();
        assert!(t.starts_with("# state: NeedsLogin\n# log in at: https://login.example/a/b\n"));
        assert!(t.ends_with("# health: no DERP home\n"));
    }

    #[test]
    fn path_summaries() {
        let mut p = PeerStatus {
            online: true,
            ..PeerStatus::default()
        };
        assert_eq!(p.path_summary(), "-");
        p.rx_bytes = 5;
        assert_eq!(p.path_summary(), "idle");
        p.online = false;
        assert_eq!(p.path_summary(), "idle; offline");
        p.active = true;
        assert_eq!(p.path_summary(), "active; -, tx 0 rx 5; offline");
        p.relay = "fra".into();
        assert_eq!(
            p.path_summary(),
            "active; relay \"fra\", tx 0 rx 5; offline"
        );
        p.online = true;
        p.cur_addr = "192.0.2.7:41641".into();
        assert_eq!(
            p.path_summary(),
            "active; direct 192.0.2.7:41641, tx 0 rx 5"
        );
        let q = PeerStatus::default();
        assert_eq!(q.path_summary(), "offline");
    }

    #[test]
    fn from_control_node_and_stats() {
        let json = r#"{
            "ID": 7, "StableID": "n7CNTRL", "Name": "db-2.mesh.example.",
            "User": 3, "Key": "nodekey:0202020202020202020202020202020202020202020202020202020202020202",
            "KeyExpiry": "0001-01-01T00:00:00Z",
            "Addresses": ["100.64.0.7/32", "fd7a:115c:a1e0::7/128"],
            "Endpoints": ["192.0.2.7:41641"],
            "Hostinfo": {"Hostname": "db-2-host", "OS": "linux"},
            "Created": "2025-01-02T03:04:05Z",
            "Tags": ["tag:db"], "Online": true
        }"#;
        let node: ControlNode = serde_json::from_str(json).unwrap();
        let mut p = PeerStatus::from_control_node(&node);
        assert_eq!(p.id, "n7CNTRL");
        assert_eq!(p.public_key, peer_key(&key(2)));
        assert_eq!(p.name, "db-2");
        assert_eq!(p.host_name, "db-2-host");
        assert_eq!(p.dns_name, "db-2.mesh.example.");
        assert_eq!(p.os, "linux");
        assert_eq!(p.user_id, 3);
        assert_eq!(p.tailscale_ips.len(), 2);
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(p.addrs, ["192.0.2.7:41641"]);
        assert_eq!(p.tags, ["tag:db"]);
        assert!(p.online && p.in_network_map && !p.active);
        assert_eq!(p.created, "2025-01-02T03:04:05Z");
        assert_eq!(p.last_seen, ZERO_TIME);
        assert_eq!(p.key_expiry, None);

        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let endpoint: SocketAddr = "198.51.100.9:41641".parse().unwrap();
        let stats = PeerStats {
            public_key: key(2),
            rx_bytes: 10,
            tx_bytes: 20,
            rx_packets: 1,
            tx_packets: 2,
            last_handshake: Some(now - Duration::from_secs(30)),
            handshakes: 1,
            endpoint: Some(endpoint),
            cur_addr: Some(endpoint),
            relay_region: 0,
        };
        p.apply_stats(&stats, now);
        assert!(p.active && p.in_engine);
        assert_eq!(p.cur_addr, "198.51.100.9:41641");
        assert_eq!(p.relay, "");
        // Relayed: no direct address, the region (its code filled in by the
        // node from the DERP map; the number until then).
        let relayed = PeerStats {
            cur_addr: None,
            relay_region: 900,
            ..stats.clone()
        };
        p.apply_stats(&relayed, now);
        assert_eq!((p.cur_addr.as_str(), p.relay.as_str()), ("", "900"));
        assert!(p.path_summary().starts_with("active; relay \"900\""));
        assert_eq!(p.last_handshake, "2023-11-14T22:12:50Z");
        assert_eq!((p.rx_bytes, p.tx_bytes), (10, 20));
        p.apply_stats(&stats, now + ACTIVE_WINDOW);
        assert!(!p.active);
    }

    #[test]
    fn go_time_forms() {
        assert_eq!(go_time(None), ZERO_TIME);
        assert_eq!(
            go_time(Some(
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
            )),
            "2023-11-14T22:13:20.5Z"
        );
        assert_eq!(short_name("", "h"), "h");
        assert_eq!(short_name("a.b.c.", "h"), "a");
    }
}
