//! The request and response bodies of `/key`, `/machine/register` and
//! `/machine/map` (`tailcfg/tailcfg.go` at v1.90.9: `RegisterRequest`
//! L1246, `RegisterResponse` L1300, `MapRequest` L1364, `MapResponse`
//! L1956, `OverTLSPublicKeyResponse` L3112).

use super::derp::DerpMap;
use super::dns::DnsConfig;
use super::filter::FilterRule;
use super::keys::{DiscoPublic, MachinePublic, NodePublic};
use super::node::{Hostinfo, Node, NodeId, PeerChange, UserId};
use super::serde_util::{is_false, is_zero_i64, null_as_default};
use super::time::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

// Decoded by Go's field-name rule (`go_json`): exact, then case-insensitive.
super::go_json::go_json_messages!(
    OverTlsPublicKeyResponse,
    RegisterRequest,
    RegisterResponse,
    MapRequest,
    MapResponse,
);

/// Body of `GET /key?v=<capver>` (`tailcfg.OverTLSPublicKeyResponse`).
/// Unlike the rest of tailcfg its JSON keys are lowercase.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
pub struct OverTlsPublicKeyResponse {
    /// The pre-Noise NaCl key; zero from new servers (Headscale leaves it
    /// out).
    #[serde(rename = "legacyPublicKey", default)]
    pub legacy_public_key: MachinePublic,
    /// The server's Noise static key; must not be zero.
    #[serde(rename = "publicKey", default)]
    pub public_key: MachinePublic,
}

impl OverTlsPublicKeyResponse {
    /// The Noise key to handshake with; `None` when the server sent a zero
    /// key (the Go client then fails: "control server is too old; no noise
    /// key").
    pub fn noise_key(&self) -> Option<MachinePublic> {
        (!self.public_key.is_zero()).then_some(self.public_key)
    }
}

/// Authentication in a register request (`tailcfg.RegisterResponseAuth`;
/// the OAuth2 token of pre-1.66 Android clients is not modelled). Its
/// `Debug` output hides the auth key.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RegisterAuth {
    /// A pre-authorized key, `tskey-…`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_key: String,
}

impl fmt::Debug for RegisterAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.auth_key.is_empty() {
            ""
        } else {
            "<redacted>"
        };
        f.debug_struct("RegisterAuth")
            .field("auth_key", &shown)
            .finish()
    }
}

/// Body of `POST /machine/register` (`tailcfg.RegisterRequest`). The
/// tailnet-lock and request-signature fields are not modelled: decoding
/// ignores them and encoding leaves them out, which Go reads as unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct RegisterRequest {
    /// Client capability version (130 for Go 1.90.9; never 0).
    #[serde(default)]
    pub version: i32,
    /// The node key being registered.
    #[serde(default)]
    pub node_key: NodePublic,
    /// The previous node key during key rotation; zero otherwise.
    #[serde(default)]
    pub old_node_key: NodePublic,
    /// Auth key, if the client has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<RegisterAuth>,
    /// Requested key expiry; [`Timestamp::ZERO`] = no request. A past time
    /// with the current node key logs out (Go sends `time.Unix(123, 0)`).
    #[serde(default)]
    pub expiry: Timestamp,
    /// The earlier `AuthURL` when waiting for interactive login.
    #[serde(default)]
    pub followup: String,
    /// The client's host information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// Delete the node automatically when it goes inactive.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ephemeral: bool,
    /// Recommended or `required:` tailnet name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tailnet: String,
}

/// Body of the register reply (`tailcfg.RegisterResponse`): plain JSON,
/// at most [`MAX_REGISTER_RESPONSE`](super::MAX_REGISTER_RESPONSE) bytes.
/// Go writes every field, so this does too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct RegisterResponse {
    /// The user the node belongs to.
    #[serde(default)]
    pub user: User,
    /// The login used.
    #[serde(default)]
    pub login: Login,
    /// The node key has expired; the client makes a new one.
    #[serde(default)]
    pub node_key_expired: bool,
    /// Informational; the gate is `Node.MachineAuthorized` in the map.
    #[serde(default)]
    pub machine_authorized: bool,
    /// Non-empty: visit this URL, then re-send with `Followup` set to it.
    #[serde(rename = "AuthURL", default)]
    pub auth_url: String,
    /// Non-empty: registration failed (user-visible); ignore the rest.
    #[serde(default)]
    pub error: String,
}

/// A Tailscale user (`tailcfg.User`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct User {
    /// User ID.
    #[serde(rename = "ID", default)]
    pub id: UserId,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    /// Avatar URL.
    #[serde(rename = "ProfilePicURL", default)]
    pub profile_pic_url: String,
    /// When the user was created.
    #[serde(default)]
    pub created: Timestamp,
}

/// A login with one identity provider (`tailcfg.Login`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Login {
    /// Login ID (unused by clients).
    #[serde(rename = "ID", default)]
    pub id: i64,
    /// `"google"`, `"github"`, …
    #[serde(default)]
    pub provider: String,
    /// E-mail or e-mail-like name.
    #[serde(default)]
    pub login_name: String,
    /// Display name from the provider.
    #[serde(default)]
    pub display_name: String,
    /// Avatar URL from the provider.
    #[serde(rename = "ProfilePicURL", default)]
    pub profile_pic_url: String,
}

/// Display data for a user (`tailcfg.UserProfile`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    /// User ID.
    #[serde(rename = "ID", default)]
    pub id: UserId,
    /// `"alice@example.com"`, for display.
    #[serde(default)]
    pub login_name: String,
    /// `"Alice Smith"`.
    #[serde(default)]
    pub display_name: String,
    /// Avatar URL.
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
}

/// Values of `MapRequest.EndpointTypes` (`tailcfg.EndpointType`).
pub mod endpoint_type {
    /// Unknown source.
    pub const UNKNOWN: i32 = 0;
    /// A local interface address.
    pub const LOCAL: i32 = 1;
    /// Learned by STUN.
    pub const STUN: i32 = 2;
    /// A port mapping (UPnP, NAT-PMP, PCP).
    pub const PORTMAPPED: i32 = 3;
    /// STUN address with the local port (hard NAT).
    pub const STUN4_LOCAL_PORT: i32 = 4;
    /// Explicitly configured.
    pub const EXPLICIT_CONF: i32 = 5;
}

/// Body of `POST /machine/map` (`tailcfg.MapRequest`). The hardware
/// attestation fields (capver 130) are not modelled.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct MapRequest {
    /// Client capability version.
    #[serde(default)]
    pub version: i32,
    /// `"zstd"` or `""`; Go 1.90.9 always sends `"zstd"`.
    #[serde(default)]
    pub compress: String,
    /// The client wants keep-alive messages.
    #[serde(default)]
    pub keep_alive: bool,
    /// The client's node key.
    #[serde(default)]
    pub node_key: NodePublic,
    /// The client's disco key (zero = not known; never overwrite a known
    /// one with zero).
    #[serde(default)]
    pub disco_key: DiscoPublic,
    /// A long poll (true) or a one-shot lite update (false).
    #[serde(default)]
    pub stream: bool,
    /// Host information (ignorable when `stream` and version ≥ 68).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// Resume a previous map session.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    /// Last sequence number processed in that session.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub map_session_seq: i64,
    /// The client's UDP endpoints.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// The type of each endpoint, parallel to `endpoints`; see
    /// [`endpoint_type`].
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoint_types: Vec<i32>,
    /// Tailnet-lock head hash.
    #[serde(rename = "TKAHead", default, skip_serializing_if = "String::is_empty")]
    pub tka_head: String,
    /// Deprecated; always false from capver 68.
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    /// The response may leave out peers (lite updates).
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_peers: bool,
    /// Debug features to enable.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub debug_flags: Vec<String>,
    /// Opaque test connection handle.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub connection_handle_for_test: String,
}

impl MapRequest {
    /// Whether the client asked for zstd-compressed map frames.
    pub fn wants_zstd(&self) -> bool {
        self.compress == "zstd"
    }

    /// A lite update: not streaming, peers may be omitted. The server
    /// stores endpoints, disco key and hostinfo, answers 200 and must not
    /// disturb the running stream.
    pub fn is_lite_update(&self) -> bool {
        !self.stream && self.omit_peers
    }
}

/// A request for the client to prove it is alive (`tailcfg.PingRequest`;
/// the TSMP payload bytes are not modelled).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PingRequest {
    /// URL to send the answer to.
    #[serde(rename = "URL", default)]
    pub url: String,
    /// The URL is reached over the Noise connection.
    #[serde(rename = "URLIsNoise", default, skip_serializing_if = "is_false")]
    pub url_is_noise: bool,
    /// Log the ping.
    #[serde(default, skip_serializing_if = "is_false")]
    pub log: bool,
    /// Comma-separated ping types (`disco`, `TSMP`, `ICMP`, `peerapi`, `c2n`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub types: String,
    /// Target IP, for the types that ping an IP. Go writes an unset
    /// address as `""`.
    #[serde(rename = "IP", default, with = "empty_string_ip")]
    pub ip: Option<IpAddr>,
}

/// `netip.Addr` text: the zero address is `""`.
mod empty_string_ip {
    use super::*;

    pub(super) fn serialize<S: Serializer>(ip: &Option<IpAddr>, s: S) -> Result<S::Ok, S::Error> {
        match ip {
            Some(ip) => s.collect_str(ip),
            None => s.serialize_str(""),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<IpAddr>, D::Error> {
        match Option::<String>::deserialize(d)?.as_deref() {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// One message of the map stream (`tailcfg.MapResponse`).
///
/// Most fields are deltas: absent means "unchanged". See
/// [`Netmap::apply`](super::Netmap::apply) for how a client folds them in.
/// `SSHPolicy`, `Health`, `DisplayMessages`, `TKAInfo`, `Debug`,
/// `ControlDialPlan`, `ClientVersion`, `DefaultAutoUpdate` and
/// `DomainDataPlaneAuditLogID` are not modelled (ignored on decode).
///
/// Unlike Go's own type, this one *can* write an empty `PacketFilter`
/// (`Some(vec![])` → `[]`, deny all): Go's `omitempty` cannot, which is why
/// Go servers marshal through a separate type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct MapResponse {
    /// Opaque handle of a resumable map session (first message only).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    /// Sequence number within the session.
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub seq: i64,
    /// A keep-alive: everything but `ping_request`, `control_time` and
    /// `pop_browser_url` is ignored.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// Ask the client to prove it is there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_request: Option<PingRequest>,
    /// A URL for the client to open.
    #[serde(
        rename = "PopBrowserURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pop_browser_url: String,
    /// The self node; `None` = unchanged (the first non-keep-alive message
    /// must have it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// DERP relays; `None` = unchanged.
    #[serde(rename = "DERPMap", default, skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    /// Non-empty: the complete peer list (sorted by ID), and every other
    /// peer field of the message is ignored. Empty or absent: a delta.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers: Vec<Node>,
    /// Peers added or replaced whole.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed: Vec<Node>,
    /// IDs of peers that are gone.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_removed: Vec<NodeId>,
    /// Field-level patches to existing peers.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Peer ID → `true`: last seen now; `false`: last-seen time cleared.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub peer_seen_change: BTreeMap<NodeId, bool>,
    /// Peer ID → new `Online` value.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub online_change: BTreeMap<NodeId, bool>,
    /// DNS settings; `None` = unchanged.
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Tailnet name; `""` = unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// Whether to report services in Hostinfo (opt.Bool; `None` = unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_services: Option<bool>,
    /// The packet filter: `None` = unchanged, `Some(vec![])` = deny all.
    /// Stored as the named filter `"base"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    /// Named filter updates: `Some(rules)` sets a name, `None` (JSON
    /// `null`) deletes it, and `"*": null` first clears all names
    /// (including `"base"`). The effective filter is every named filter in
    /// name order.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub packet_filters: BTreeMap<String, Option<Vec<FilterRule>>>,
    /// New or changed user profiles (additive).
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub user_profiles: Vec<UserProfile>,
    /// Control's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_time: Option<Timestamp>,
}

impl MapResponse {
    /// The keep-alive message, `{"KeepAlive":true}`.
    pub fn keep_alive() -> Self {
        MapResponse {
            keep_alive: true,
            ..MapResponse::default()
        }
    }

    /// Whether this message only keeps the stream alive (its netmap fields,
    /// if any, are ignored).
    pub fn is_keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// Whether this is a delta: not a keep-alive and no full `Peers` list.
    /// An empty `Peers` cannot mean "zero peers"; control says that with
    /// `PeersRemoved`.
    pub fn is_delta(&self) -> bool {
        !self.keep_alive && self.peers.is_empty()
    }
}
