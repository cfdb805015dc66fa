//! `tailcfg.Node` and what hangs off it: `Hostinfo`, `NetInfo`, the
//! capability map, and the `PeerChange` patch.
//!
//! Field names and `omitempty` choices follow `tailcfg/tailcfg.go` at
//! v1.90.9 (`Node` L332, `Hostinfo` L829, `NetInfo` L1016, `PeerChange`
//! L3167).

use super::dns::Resolver;
use super::go_json;
use super::keys::{DiscoPublic, MachinePublic, NodePublic};
use super::serde_util::{
    is_false, is_zero_i32, is_zero_i64, map_null_values, null_as_default, opt_map_null_values,
};
use super::time::Timestamp;
use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// A node's integer ID (`tailcfg.NodeID`); never 0 for a real node.
pub type NodeId = i64;
/// A user's integer ID (`tailcfg.UserID`).
pub type UserId = i64;

/// Node capabilities and their arguments (`tailcfg.NodeCapMap`): a
/// capability name mapped to raw JSON values. A capability with no
/// arguments maps to an empty list (Go may write it as `null`).
pub type CapMap = BTreeMap<String, Vec<serde_json::Value>>;

/// The fake IP of Go's legacy `Node.DERP` string, `"127.3.3.40:<region>"`
/// (`tailcfg.DerpMagicIP`).
pub const DERP_MAGIC_IP: &str = "127.3.3.40";

/// A device in the tailnet (`tailcfg.Node`), as control sends it for the
/// self node and for each peer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// Node ID; never 0.
    #[serde(rename = "ID", default)]
    pub id: NodeId,
    /// String form of the ID, e.g. `"nABC123CNTRL"`.
    #[serde(rename = "StableID", default)]
    pub stable_id: String,
    /// MagicDNS FQDN **with** a trailing dot, e.g. `"host.tailnet.example."`.
    /// The self node's name decides the MagicDNS suffix.
    #[serde(default)]
    pub name: String,
    /// The user who owns the node.
    #[serde(default)]
    pub user: UserId,
    /// The user who shared this node, if not `user` (0 = none).
    #[serde(default, skip_serializing_if = "is_zero_i64")]
    pub sharer: UserId,
    /// WireGuard public key.
    #[serde(default)]
    pub key: NodePublic,
    /// When the node key expires; [`Timestamp::ZERO`] = never.
    #[serde(default)]
    pub key_expiry: Timestamp,
    /// Machine (Noise) public key.
    #[serde(default)]
    pub machine: MachinePublic,
    /// Disco public key; zero makes magicsock ignore the peer.
    #[serde(default)]
    pub disco_key: DiscoPublic,
    /// The node's own tailnet addresses as prefixes (`100.64.0.1/32`).
    #[serde(default, deserialize_with = "null_as_default")]
    pub addresses: Vec<IpNet>,
    /// Prefixes routed to this node. `None` (JSON `null` or absent) means
    /// "the same as `addresses`" (capver ≥ 112); see [`Node::upgrade`].
    #[serde(
        rename = "AllowedIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_ips: Option<Vec<IpNet>>,
    /// UDP endpoints (`ip:port`) to try for a direct path.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Deprecated home DERP as `"127.3.3.40:<region>"` (Go's
    /// `LegacyDERPString`, JSON `DERP`). Only old servers send it;
    /// [`Node::upgrade`] turns it into `home_derp`.
    #[serde(rename = "DERP", default, skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    /// Home DERP region ID (capver ≥ 111); 0 = not known yet.
    #[serde(rename = "HomeDERP", default, skip_serializing_if = "is_zero_i32")]
    pub home_derp: i32,
    /// What the node reports about itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    /// When the node was created.
    #[serde(default)]
    pub created: Timestamp,
    /// The node's capability version, if control knows it (0 = unknown).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub cap: i32,
    /// ACL tags, `tag:<name>`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// Subnet routes this node is the primary router for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub primary_routes: Vec<IpNet>,
    /// When the node was last online (`None` = unknown or not allowed to know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// Whether the node is connected to control (`None` = unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// Whether an admin approved the node; must be true on the self node
    /// for a Go client to reach Running.
    #[serde(default, skip_serializing_if = "is_false")]
    pub machine_authorized: bool,
    /// Deprecated capability list; see `cap_map`.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub capabilities: Vec<String>,
    /// Capabilities and their arguments.
    #[serde(
        default,
        deserialize_with = "map_null_values",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: CapMap,
    /// The node gets no network access, only its peer API.
    #[serde(
        rename = "UnsignedPeerAPIOnly",
        default,
        skip_serializing_if = "is_false"
    )]
    pub unsigned_peer_api_only: bool,
    /// Display name computed client-side (control normally leaves it out).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub computed_name: String,
    /// Display name with host, computed client-side.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub computed_name_with_host: String,
    /// Per-node data-plane audit log ID.
    #[serde(
        rename = "DataPlaneAuditLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub data_plane_audit_log_id: String,
    /// Control says the key has expired (clients also compute this).
    #[serde(default, skip_serializing_if = "is_false")]
    pub expired: bool,
    /// The IPv4 address this peer knows the self node as, if masqueraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_node_v4_masq_addr_for_this_peer: Option<IpAddr>,
    /// The IPv6 address this peer knows the self node as, if masqueraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_node_v6_masq_addr_for_this_peer: Option<IpAddr>,
    /// A plain WireGuard peer: no disco, no DERP; needs `endpoints`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_wire_guard_only: bool,
    /// The peer may not open connections to us.
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_jailed: bool,
    /// DNS resolvers to use through a WireGuard-only exit node.
    #[serde(
        rename = "ExitNodeDNSResolvers",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub exit_node_dns_resolvers: Vec<Resolver>,
}

impl Node {
    /// The home DERP region: `home_derp`, or else the region in the
    /// legacy `"127.3.3.40:<region>"` string; 0 if neither is set.
    pub fn home_derp_region(&self) -> i32 {
        if self.home_derp != 0 {
            return self.home_derp;
        }
        self.legacy_derp
            .rsplit_once(':')
            .filter(|(ip, _)| *ip == DERP_MAGIC_IP)
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .map_or(0, i32::from)
    }

    /// The prefixes routed to this node: `allowed_ips`, or `addresses`
    /// when control left `AllowedIPs` out.
    pub fn effective_allowed_ips(&self) -> &[IpNet] {
        self.allowed_ips.as_deref().unwrap_or(&self.addresses)
    }

    /// Brings deprecated forms up to date the way the Go client does on
    /// receipt (`upgradeNode` in `control/controlclient/map.go`): the legacy
    /// `DERP` string becomes `home_derp` (if that is 0) and is cleared, and
    /// a missing `AllowedIPs` becomes a copy of `addresses`.
    pub fn upgrade(&mut self) {
        if !self.legacy_derp.is_empty() {
            self.home_derp = self.home_derp_region();
            self.legacy_derp.clear();
        }
        if self.allowed_ips.is_none() {
            self.allowed_ips = Some(self.addresses.clone());
        }
    }

    /// Whether the node has a capability, in `cap_map` or the deprecated
    /// `capabilities` list.
    pub fn has_cap(&self, cap: &str) -> bool {
        self.cap_map.contains_key(cap) || self.capabilities.iter().any(|c| c == cap)
    }
}

/// What a node reports about itself (`tailcfg.Hostinfo`, a subset).
///
/// Every field is `omitempty` in Go. Fields we do not model (TPM,
/// Location, push tokens, …) are kept in `other` and written back, so a
/// coordinator passes a client's Hostinfo on to its peers intact.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", remote = "Self")]
pub struct Hostinfo {
    /// Client version (`version.Long`).
    #[serde(
        rename = "IPNVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipn_version: String,
    /// Logtail ID of the frontend.
    #[serde(
        rename = "FrontendLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub frontend_log_id: String,
    /// Logtail ID of the backend.
    #[serde(
        rename = "BackendLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_log_id: String,
    /// Operating system (`linux`, `windows`, `macOS`, …).
    #[serde(rename = "OS", default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    /// Operating system version.
    #[serde(
        rename = "OSVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// Whether the client runs in a container (opt.Bool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<bool>,
    /// `hostinfo.EnvType` as a string.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub env: String,
    /// Linux distribution.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro: String,
    /// Distribution version.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro_version: String,
    /// Distribution code name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro_code_name: String,
    /// Embedding application (`"tsnet"`, `"k8s-operator"`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Whether a desktop was detected (opt.Bool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desktop: Option<bool>,
    /// Packaging (`"choco"`, `"appstore"`, …).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub package: String,
    /// Device model.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device_model: String,
    /// Host name of the machine.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// Blocks all incoming connections.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shields_up: bool,
    /// In the netmap only because it is shared to this user.
    #[serde(default, skip_serializing_if = "is_false")]
    pub sharee_node: bool,
    /// The user opted out of logs and support.
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_logs_no_support: bool,
    /// Wants Funnel ingress traffic.
    #[serde(default, skip_serializing_if = "is_false")]
    pub wire_ingress: bool,
    /// Has a Funnel endpoint enabled.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ingress_enabled: bool,
    /// Opted in to remote updates.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allows_update: bool,
    /// Machine type (`uname -m`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine: String,
    /// GOARCH of the client binary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_arch: String,
    /// GOARM/GOAMD64 variant.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_arch_var: String,
    /// Go version of the client binary.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_version: String,
    /// Subnet routes the node offers to route.
    #[serde(
        rename = "RoutableIPs",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_ips: Vec<IpNet>,
    /// ACL tags the node asks for.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_tags: Vec<String>,
    /// Services the node advertises.
    #[serde(
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    /// Network conditions (home DERP, NAT behaviour).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    /// SSH host keys, if Tailscale SSH is on (JSON `sshHostKeys`).
    #[serde(
        rename = "sshHostKeys",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ssh_host_keys: Vec<String>,
    /// Cloud provider, if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cloud: String,
    /// Runs in userspace (netstack) mode (opt.Bool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userspace: Option<bool>,
    /// Subnet router runs in userspace mode (opt.Bool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userspace_router: Option<bool>,
    /// Runs the app-connector service (opt.Bool).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_connector: Option<bool>,
    /// Opaque hash of the tailnet services list.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub services_hash: String,
    /// The selected exit node's stable ID.
    #[serde(
        rename = "ExitNodeID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub exit_node_id: String,
    /// Fields this type does not model, kept as JSON (written after the
    /// modelled ones, as they came).
    #[serde(flatten, skip_deserializing)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl Serialize for Hostinfo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Hostinfo::serialize(self, s)
    }
}

/// Go's field-name rule (`go_json`) with the unmodelled keys kept: each key
/// that names a modelled field (exactly, else case-insensitively) goes to
/// it under its declared name, every other key to `other`.
impl<'de> Deserialize<'de> for Hostinfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        static FIELDS: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
        let fields = *FIELDS.get_or_init(|| go_json::struct_fields(|p| Hostinfo::deserialize(p)));
        let all = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let mut known = serde_json::Map::new();
        let mut other = BTreeMap::new();
        for (key, value) in all {
            match go_json::match_field(fields, &key) {
                Some(name) => {
                    if known.insert(name.to_string(), value).is_some() {
                        return Err(D::Error::custom(format_args!("duplicate field `{name}`")));
                    }
                }
                None => {
                    other.insert(key, value);
                }
            }
        }
        let mut h = Hostinfo::deserialize(go_json::GoKeys(serde_json::Value::Object(known)))
            .map_err(D::Error::custom)?;
        h.other = other;
        Ok(h)
    }
}

/// A service a node advertises (`tailcfg.Service`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    /// `tcp`, `udp`, `peerapi4`, `peerapi6`, `peerapi-dns-proxy`.
    #[serde(default)]
    pub proto: String,
    /// Port number.
    #[serde(default)]
    pub port: u16,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Network conditions a client measured (`tailcfg.NetInfo`). The
/// tri-state fields are Go `opt.Bool`s (`None` = unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetInfo {
    /// NAT mapping varies by destination (hard NAT).
    #[serde(
        rename = "MappingVariesByDestIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// The router hairpins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hair_pinning: Option<bool>,
    /// IPv6 works.
    #[serde(
        rename = "WorkingIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_ipv6: Option<bool>,
    /// The OS has IPv6.
    #[serde(rename = "OSHasIPv6", default, skip_serializing_if = "Option::is_none")]
    pub os_has_ipv6: Option<bool>,
    /// UDP works.
    #[serde(
        rename = "WorkingUDP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_udp: Option<bool>,
    /// ICMPv4 works.
    #[serde(
        rename = "WorkingICMPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_icmpv4: Option<bool>,
    /// A port mapping is active.
    #[serde(default, skip_serializing_if = "is_false")]
    pub have_port_map: bool,
    /// UPnP is available.
    #[serde(rename = "UPnP", default, skip_serializing_if = "Option::is_none")]
    pub upnp: Option<bool>,
    /// NAT-PMP is available.
    #[serde(rename = "PMP", default, skip_serializing_if = "Option::is_none")]
    pub pmp: Option<bool>,
    /// PCP is available.
    #[serde(rename = "PCP", default, skip_serializing_if = "Option::is_none")]
    pub pcp: Option<bool>,
    /// The home DERP region the client picked (0 = none yet). Control
    /// passes it to peers as `Node.HomeDERP`.
    #[serde(rename = "PreferredDERP", default)]
    pub preferred_derp: i32,
    /// `wired`, `wifi`, `mobile`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_type: String,
    /// Latency per DERP region (seconds), keyed like `"1-v4"`.
    #[serde(
        rename = "DERPLatency",
        default,
        deserialize_with = "null_as_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub derp_latency: BTreeMap<String, f64>,
    /// Linux firewall mode.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub firewall_mode: String,
}

/// A patch to one peer (`tailcfg.PeerChange`), sent in
/// `MapResponse.PeersChangedPatch`. Each set field replaces the peer's
/// field; unset fields leave it alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    /// The peer to change; unknown IDs are ignored.
    #[serde(rename = "NodeID", default)]
    pub node_id: NodeId,
    /// New home DERP region (0 = unchanged).
    #[serde(rename = "DERPRegion", default, skip_serializing_if = "is_zero_i32")]
    pub derp_region: i32,
    /// New capability version (0 = unchanged).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub cap: i32,
    /// New capability map (`None` = unchanged).
    #[serde(
        default,
        deserialize_with = "opt_map_null_values",
        skip_serializing_if = "Option::is_none"
    )]
    pub cap_map: Option<CapMap>,
    /// New endpoints (`None` = unchanged; the Go client also applies an
    /// empty list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    /// New node key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<NodePublic>,
    /// New disco key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    /// New online state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    /// New last-seen time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Timestamp>,
    /// New key expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<Timestamp>,
}

impl PeerChange {
    /// Applies this patch to `node` the way the Go client does
    /// (`updatePeersStateFromResponse`, map.go L533-571). The caller checks
    /// that `node.id == self.node_id`.
    pub fn apply_to(&self, node: &mut Node) {
        if self.derp_region != 0 {
            node.home_derp = self.derp_region;
        }
        if self.cap != 0 {
            node.cap = self.cap;
        }
        if let Some(e) = &self.endpoints {
            node.endpoints.clone_from(e);
        }
        if let Some(k) = self.key {
            node.key = k;
        }
        if let Some(k) = self.disco_key {
            node.disco_key = k;
        }
        if let Some(o) = self.online {
            node.online = Some(o);
        }
        if let Some(t) = self.last_seen {
            node.last_seen = Some(t);
        }
        if let Some(t) = self.key_expiry {
            node.key_expiry = t;
        }
        if let Some(m) = &self.cap_map {
            node.cap_map.clone_from(m);
        }
    }
}
