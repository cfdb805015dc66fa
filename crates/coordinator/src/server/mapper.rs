//! Map messages from stored nodes, without I/O: the self node and peers as
//! `tailcfg.Node`, the first full message of a stream, the default DERP map
//! and the MagicDNS config (`shared/protocol/control.md` §7, §8, §10;
//! `magicdns.md` §1, §4; `derp.md` §DERPMap).

use crate::names::BaseDomain;
use crate::nodes::{Node, NodeId};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::time::SystemTime;
use tailnet_wire::control::{
    self as wire, DerpMap, DerpNode, DerpRegion, DiscoPublic, DnsConfig, DnsRecord, FilterRule,
    Hostinfo, MachinePublic, MapResponse, NodePublic, PeerChange, Resolver, Timestamp, UserProfile,
};

/// The one user every node belongs to (`tailcfg.UserID`). The embedded
/// coordinator has no user accounts: auth keys are the identity.
pub const USER_ID: i64 = 1;

/// Login name shown for [`USER_ID`].
pub const USER_LOGIN: &str = "inferadb-mesh";

/// The DERP region the default map advertises (900-999 are reserved for
/// self-hosted regions, `derp.md`).
pub const DEFAULT_DERP_REGION: i32 = 900;

/// What every map message of one coordinator shares.
#[derive(Debug, Clone)]
pub struct MapContext {
    /// MagicDNS base domain: node names are `<label>.<base>.`.
    pub base_domain: BaseDomain,
    /// The DERP map sent in the first message.
    pub derp_map: DerpMap,
    /// Upstream resolvers for names outside the tailnet (none by default).
    pub dns_resolvers: Vec<Resolver>,
    /// Extra MagicDNS records (`DNSConfig.ExtraRecords`; none by default).
    pub dns_extra_records: Vec<DnsRecord>,
}

/// The default DERP map: one region, [`DEFAULT_DERP_REGION`], code
/// `inferadb`, whose one node is the coordinator itself on loopback at
/// `port` over self-signed TLS (`InsecureForTests`; `derp.md` loopback
/// recipe). STUN is off (`STUNPort: -1`); see [`default_derp_map_on`].
pub fn default_derp_map(port: u16) -> DerpMap {
    default_derp_map_on("127.0.0.1", port, None)
}

/// [`default_derp_map`] with its node at `host` (an IP address, or a DNS
/// name the nodes resolve) and STUN on UDP `stun_port` of it when given.
///
/// An IP host is dialled as given, with `InsecureForTests` (a certificate
/// for an IP address is rare: a TLS relay there is not verified) and as
/// the `STUNTestIP`, which makes Go's netcheck probe it even where its
/// interfaces report no address. A DNS name is the TLS server name and is
/// verified against the system's roots.
pub fn default_derp_map_on(host: &str, port: u16, stun_port: Option<u16>) -> DerpMap {
    let ip = host.parse::<std::net::IpAddr>().ok();
    let (ipv4, ipv6) = match ip {
        Some(std::net::IpAddr::V4(v4)) => (v4.to_string(), "none".to_string()),
        Some(std::net::IpAddr::V6(v6)) => ("none".to_string(), v6.to_string()),
        // A name: the client resolves it.
        None => (String::new(), String::new()),
    };
    let node = DerpNode {
        name: format!("{DEFAULT_DERP_REGION}a"),
        region_id: DEFAULT_DERP_REGION,
        host_name: host.to_string(),
        ipv4,
        ipv6,
        stun_port: stun_port.map_or(-1, i32::from),
        stun_test_ip: match (ip, stun_port) {
            (Some(ip), Some(_)) => ip.to_string(),
            _ => String::new(),
        },
        derp_port: i32::from(port),
        insecure_for_tests: ip.is_some(),
        ..DerpNode::default()
    };
    let region = DerpRegion {
        region_id: DEFAULT_DERP_REGION,
        region_code: "inferadb".into(),
        region_name: "InferaDB embedded".into(),
        nodes: vec![node],
        ..DerpRegion::default()
    };
    DerpMap {
        regions: Some([(DEFAULT_DERP_REGION, region)].into_iter().collect()),
        ..DerpMap::default()
    }
}

/// MagicDNS on (`Proxied`), the base domain as the search domain, and the
/// configured upstreams. The client derives the authoritative routes for
/// the base domain and the tailnet's reverse zones itself from `Proxied`
/// and the self node's name (`magicdns.md` §2), so none are sent.
pub fn dns_config(ctx: &MapContext) -> DnsConfig {
    DnsConfig {
        resolvers: ctx.dns_resolvers.clone(),
        extra_records: ctx.dns_extra_records.clone(),
        domains: vec![ctx.base_domain.as_str().to_string()],
        proxied: true,
        ..DnsConfig::default()
    }
}

/// The profile of [`USER_ID`].
pub fn user_profile() -> UserProfile {
    UserProfile {
        id: USER_ID,
        login_name: USER_LOGIN.into(),
        display_name: USER_LOGIN.into(),
        profile_pic_url: String::new(),
    }
}

fn ts(t: SystemTime) -> Timestamp {
    Timestamp::from_system_time(t).unwrap_or(Timestamp::ZERO)
}

/// The node's stored `Hostinfo`, if it decodes.
pub fn hostinfo(node: &Node) -> Option<Hostinfo> {
    node.hostinfo
        .as_ref()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
}

/// The home DERP region the node reported (`Hostinfo.NetInfo.PreferredDERP`;
/// control.md §10 step 5), 0 if none.
pub fn home_derp(hostinfo: Option<&Hostinfo>) -> i32 {
    hostinfo
        .and_then(|h| h.net_info.as_ref())
        .map_or(0, |n| n.preferred_derp)
}

/// `node` as `tailcfg.Node`, the same for the node itself and its peers:
/// FQDN name with a trailing dot, /32 and /128 prefixes, key expiry (zero =
/// never), disco key once known, online flag and last-seen time.
pub fn wire_node(node: &Node, base: &BaseDomain) -> wire::Node {
    let addresses = vec![
        IpNet::V4(Ipv4Net::from(node.ipv4)),
        IpNet::V6(Ipv6Net::from(node.ipv6)),
    ];
    let hostinfo = hostinfo(node);
    wire::Node {
        id: node.id.0,
        stable_id: node.stable_id.clone(),
        name: base.node_name(&node.given_name),
        user: USER_ID,
        key: NodePublic::from_bytes(node.node_key),
        key_expiry: node.key_expiry.map_or(Timestamp::ZERO, ts),
        machine: MachinePublic::from_bytes(node.machine_key),
        disco_key: node
            .disco_key
            .map_or(DiscoPublic::ZERO, DiscoPublic::from_bytes),
        allowed_ips: Some(addresses.clone()),
        addresses,
        endpoints: node.endpoints.clone(),
        home_derp: home_derp(hostinfo.as_ref()),
        hostinfo,
        created: ts(node.created),
        tags: node.tags.clone(),
        last_seen: node.last_seen.map(ts),
        online: Some(node.online),
        machine_authorized: true,
        ..wire::Node::default()
    }
}

/// The self-node attribute that stops Go clients probing
/// `controlplane.tailscale.com` / `login.tailscale.com` for captive portals
/// (`tailcfg/nodecap` `DisableCaptivePortalDetection`, read into
/// controlknobs from the self node's CapMap; capver ≥ 103). Our tailnet is
/// often offline or loopback-only: nothing should leave for Tailscale's
/// servers.
pub const ATTR_DISABLE_CAPTIVE_PORTAL: &str = "disable-captive-portal-detection";

/// `node` as its own `tailcfg.Node` (the map's `Node`): [`wire_node`] plus
/// the node attributes we set for every node.
pub fn self_node(node: &Node, base: &BaseDomain) -> wire::Node {
    let mut n = wire_node(node, base);
    n.cap_map
        .insert(ATTR_DISABLE_CAPTIVE_PORTAL.to_string(), Vec::new());
    n
}

/// Whether `peer` belongs in `self_id`'s peer list at `now`: every other
/// node whose key has not expired.
pub fn is_visible_peer(self_id: NodeId, peer: &Node, now: SystemTime) -> bool {
    peer.id != self_id && !peer.key_expired(now)
}

/// Most bytes of a peer's `Hostinfo` sent to other nodes. A node's own
/// Hostinfo may be up to 16 KiB (`crate::hostinfo`), but every peer's goes
/// to every node in every full map: at 10,000 nodes 16 KiB each would be
/// 160 MB, far past the client's frame limits (16 MiB on the wire, 64 MiB
/// decompressed). A larger one is sent as its hostname and home region.
pub const PEER_HOSTINFO_BUDGET: usize = 1024;

/// `node` as a peer: [`wire_node`] with its Hostinfo cut to the hostname
/// and NetInfo when it is over [`PEER_HOSTINFO_BUDGET`].
pub fn peer_node(node: &Node, base: &BaseDomain) -> wire::Node {
    let mut n = wire_node(node, base);
    let over = n
        .hostinfo
        .as_ref()
        .is_some_and(|h| serde_json::to_vec(h).map_or(true, |b| b.len() > PEER_HOSTINFO_BUDGET));
    if over {
        n.hostinfo = n.hostinfo.take().map(|h| Hostinfo {
            hostname: h.hostname,
            net_info: h.net_info,
            ..Hostinfo::default()
        });
    }
    n
}

/// The peers of `self_id` among `nodes`, as `tailcfg.Node`s sorted by ID.
pub fn peers(
    self_id: NodeId,
    nodes: &[Node],
    base: &BaseDomain,
    now: SystemTime,
) -> Vec<wire::Node> {
    let mut peers: Vec<wire::Node> = nodes
        .iter()
        .filter(|n| is_visible_peer(self_id, n, now))
        .map(|n| peer_node(n, base))
        .collect();
    peers.sort_by_key(|n| n.id);
    peers
}

/// The first message of a stream (control.md §10 step 4): the self node,
/// DERP map, packet filter, DNS config, domain, user profile, control time
/// and every peer. `Peers` empty means "no change" to a client, so a first
/// message with no peers simply has none.
pub fn full_map(
    self_node: &Node,
    nodes: &[Node],
    filter: Vec<FilterRule>,
    ctx: &MapContext,
    now: SystemTime,
) -> MapResponse {
    MapResponse {
        node: Some(self::self_node(self_node, &ctx.base_domain)),
        derp_map: Some(ctx.derp_map.clone()),
        peers: peers(self_node.id, nodes, &ctx.base_domain, now),
        dns_config: Some(dns_config(ctx)),
        domain: ctx.base_domain.as_str().to_string(),
        packet_filter: Some(filter),
        user_profiles: vec![user_profile()],
        control_time: Some(ts(now)),
        collect_services: Some(false),
        ..MapResponse::default()
    }
}

/// A delta that adds or replaces one peer.
pub fn peer_changed(peer: &Node, base: &BaseDomain) -> MapResponse {
    MapResponse {
        peers_changed: vec![peer_node(peer, base)],
        ..MapResponse::default()
    }
}

/// A delta that removes peers.
pub fn peers_removed(ids: Vec<NodeId>) -> MapResponse {
    MapResponse {
        peers_removed: ids.into_iter().map(|i| i.0).collect(),
        ..MapResponse::default()
    }
}

/// A delta that flips a peer's online flag and last-seen time.
pub fn peer_online(id: NodeId, online: bool, at: SystemTime) -> MapResponse {
    MapResponse {
        peers_changed_patch: vec![PeerChange {
            node_id: id.0,
            online: Some(online),
            last_seen: Some(ts(at)),
            ..PeerChange::default()
        }],
        ..MapResponse::default()
    }
}

/// Folds delta `next` into `batch` so that applying the one merged
/// message has the effect of applying both in order: a peer changed after
/// being removed is no longer removed, a peer removed after a change or a
/// patch is only removed, the later version of a peer or of the self node
/// wins, patches keep their order, a later packet filter wins.
pub fn merge_delta(batch: &mut MapResponse, next: MapResponse) {
    if next.node.is_some() {
        batch.node = next.node;
    }
    if next.packet_filter.is_some() {
        batch.packet_filter = next.packet_filter;
    }
    for id in next.peers_removed {
        batch.peers_changed.retain(|p| p.id != id);
        batch.peers_changed_patch.retain(|p| p.node_id != id);
        if !batch.peers_removed.contains(&id) {
            batch.peers_removed.push(id);
        }
    }
    for peer in next.peers_changed {
        batch.peers_removed.retain(|id| *id != peer.id);
        // The whole node supersedes earlier patches of it.
        batch.peers_changed_patch.retain(|p| p.node_id != peer.id);
        match batch.peers_changed.iter_mut().find(|p| p.id == peer.id) {
            Some(slot) => *slot = peer,
            None => batch.peers_changed.push(peer),
        }
    }
    batch.peers_changed_patch.extend(next.peers_changed_patch);
}

/// A message that replaces the self node.
pub fn self_changed(node: &Node, base: &BaseDomain) -> MapResponse {
    MapResponse {
        node: Some(self_node(node, base)),
        ..MapResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_derp_node_is_where_nodes_can_dial_it() {
        let only = |m: DerpMap| m.regions.unwrap()[&DEFAULT_DERP_REGION].nodes[0].clone();
        let n = only(default_derp_map(8080));
        assert_eq!(
            (n.host_name.as_str(), n.ipv4.as_str(), n.ipv6.as_str()),
            ("127.0.0.1", "127.0.0.1", "none")
        );
        assert_eq!((n.stun_port, n.stun_test_ip.as_str()), (-1, ""));
        assert!(n.insecure_for_tests);

        let n = only(default_derp_map_on("198.51.100.1", 443, Some(443)));
        assert_eq!(
            (n.ipv4.as_str(), n.ipv6.as_str(), n.derp_port),
            ("198.51.100.1", "none", 443)
        );
        assert_eq!(
            (n.stun_port, n.stun_test_ip.as_str()),
            (443, "198.51.100.1")
        );
        assert!(
            n.insecure_for_tests,
            "no certificate name to check for an IP"
        );

        let n = only(default_derp_map_on("2001:db8::1", 443, None));
        assert_eq!((n.ipv4.as_str(), n.ipv6.as_str()), ("none", "2001:db8::1"));

        // A name is resolved by the client and its certificate verified.
        let n = only(default_derp_map_on("coord.example.com", 443, Some(443)));
        assert_eq!(
            (n.host_name.as_str(), n.ipv4.as_str(), n.ipv6.as_str()),
            ("coord.example.com", "", "")
        );
        assert_eq!((n.stun_port, n.stun_test_ip.as_str()), (443, ""));
        assert!(!n.insecure_for_tests);
    }

    #[test]
    fn merged_deltas_mean_what_the_sequence_meant() {
        let base = BaseDomain::parse("tailnet.internal").unwrap();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (a, b) = (node(1, None), node(2, None));
        let mut batch = peer_online(a.id, true, at);
        merge_delta(&mut batch, peer_online(b.id, true, at));
        merge_delta(&mut batch, peer_changed(&a, &base));
        // A's whole node supersedes its earlier patch; B's patch stays.
        assert_eq!(batch.peers_changed.len(), 1);
        assert_eq!(batch.peers_changed_patch.len(), 1);
        assert_eq!(batch.peers_changed_patch[0].node_id, b.id.0);
        // Removed after the change: only removed.
        merge_delta(&mut batch, peers_removed(vec![a.id]));
        assert!(batch.peers_changed.is_empty());
        assert_eq!(batch.peers_removed, vec![a.id.0]);
        // Back again: changed, not removed.
        merge_delta(&mut batch, peer_changed(&a, &base));
        assert!(batch.peers_removed.is_empty());
        assert_eq!(batch.peers_changed.len(), 1);
        merge_delta(&mut batch, peer_online(b.id, false, at));
        assert_eq!(
            batch.peers_changed_patch.len(),
            2,
            "patches keep their order"
        );
        assert_eq!(batch.peers_changed_patch[1].online, Some(false));
    }
    use std::time::Duration;

    fn node(id: i64, expiry: Option<SystemTime>) -> Node {
        Node {
            id: NodeId(id),
            stable_id: format!("n{id:016x}"),
            node_key: [u8::try_from(id).unwrap_or(9); 32],
            machine_key: [0x40 + u8::try_from(id).unwrap_or(9); 32],
            disco_key: None,
            hostname: format!("h{id}"),
            given_name: format!("h{id}"),
            ipv4: std::net::Ipv4Addr::new(100, 64, 0, u8::try_from(id).unwrap_or(9)),
            ipv6: "fd7a:115c:a1e0:ab12:4843:cd96:6240:1".parse().expect("v6"),
            tags: vec!["tag:db".into()],
            ephemeral: false,
            auth_key_id: None,
            created: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            last_seen: None,
            online: false,
            key_expiry: expiry,
            endpoints: vec!["192.0.2.1:41641".parse().expect("ep")],
            hostinfo: Some(serde_json::json!({"Hostname": "h", "NetInfo": {"PreferredDERP": 900}})),
        }
    }

    fn ctx() -> MapContext {
        MapContext {
            base_domain: BaseDomain::default(),
            derp_map: default_derp_map(8080),
            dns_resolvers: vec![],
            dns_extra_records: vec![],
        }
    }

    /// Issue 16 finding 7: at 10,000 nodes whose Hostinfo is over the
    /// peer budget (4 KiB of barely compressible text each, within the
    /// register limits), a full map still fits the client's frame limits.
    /// Without the budget it was ~40 MB of JSON and did not encode.
    #[test]
    fn a_full_map_of_ten_thousand_large_hostinfos_fits_a_frame() {
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut noise = |len: usize| {
            (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b"0123456789abcdef"[(seed % 16) as usize])
                })
                .collect::<String>()
        };
        let nodes: Vec<Node> = (1..=10_000i64)
            .map(|id| {
                let mut n = node(1, None);
                n.id = NodeId(id);
                n.stable_id = format!("n{id:016x}");
                n.node_key[..8].copy_from_slice(&id.to_le_bytes());
                n.machine_key[..8].copy_from_slice(&id.to_le_bytes());
                let h = serde_json::json!({
                    "Hostname": noise(1000), "OSVersion": noise(1000),
                    "DeviceModel": noise(1000), "Distro": noise(1000),
                    "NetInfo": {"PreferredDERP": 900}
                });
                crate::hostinfo::check_hostinfo(&h).expect("within the register limits");
                n.hostinfo = Some(h);
                n
            })
            .collect();
        let msg = full_map(&nodes[0], &nodes, vec![], &ctx(), SystemTime::UNIX_EPOCH);
        assert_eq!(msg.peers.len(), 9_999);
        let frame =
            tailnet_wire::control::MapStreamEncoder::new(tailnet_wire::control::Compression::Zstd)
                .encode_message(&msg)
                .expect("under the client's frame limits");
        assert!(frame.len() < 16 << 20, "{} bytes", frame.len());
        let p = &msg.peers[0];
        let h = p.hostinfo.as_ref().expect("peer hostinfo");
        assert_eq!(h.hostname.len(), 1000, "the hostname stays");
        assert!(h.os_version.is_empty(), "the rest is cut");
        assert_eq!(p.home_derp, 900);
        // The node itself still gets its whole Hostinfo.
        let me = msg
            .node
            .as_ref()
            .and_then(|n| n.hostinfo.as_ref())
            .expect("self");
        assert_eq!(me.os_version.len(), 1000);
    }

    #[test]
    fn wire_node_has_what_a_go_client_needs() {
        let n = wire_node(&node(1, None), &BaseDomain::default());
        let json = serde_json::to_value(&n).expect("json");
        assert_eq!(json["Name"], "h1.tailnet.internal.");
        assert_eq!(
            json["Addresses"],
            serde_json::json!(["100.64.0.1/32", "fd7a:115c:a1e0:ab12:4843:cd96:6240:1/128"])
        );
        assert_eq!(json["KeyExpiry"], "0001-01-01T00:00:00Z");
        assert_eq!(json["MachineAuthorized"], true);
        assert_eq!(json["HomeDERP"], 900);
        assert_eq!(json["Tags"], serde_json::json!(["tag:db"]));
        assert_eq!(json["Online"], false);
        // No key is ever "" (Go rejects the whole message).
        for k in ["Key", "Machine", "DiscoKey"] {
            assert!(
                json[k].as_str().is_some_and(|s| s.len() > 60),
                "{k}: {}",
                json[k]
            );
        }
    }

    #[test]
    fn full_map_leaves_out_self_and_expired_peers() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let past = now - Duration::from_secs(10);
        let nodes = vec![node(1, None), node(2, Some(past)), node(3, None)];
        let m = full_map(
            &nodes[0],
            &nodes,
            vec![FilterRule::allow_all()],
            &ctx(),
            now,
        );
        let ids: Vec<i64> = m.peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, vec![3]);
        let json = serde_json::to_value(&m).expect("json");
        assert_eq!(
            json["PacketFilter"],
            serde_json::json!([{"SrcIPs":["*"],"DstPorts":[{"IP":"*","Ports":{"First":0,"Last":65535}}]}])
        );
        assert_eq!(json["DNSConfig"]["Proxied"], true);
        assert_eq!(
            json["DNSConfig"]["Domains"],
            serde_json::json!(["tailnet.internal"])
        );
        assert_eq!(json["Domain"], "tailnet.internal");
        let region = &json["DERPMap"]["Regions"]["900"];
        assert_eq!(region["RegionCode"], "inferadb");
        assert_eq!(region["Nodes"][0]["DERPPort"], 8080);
        assert_eq!(region["Nodes"][0]["IPv6"], "none");
        assert_eq!(region["Nodes"][0]["InsecureForTests"], true);
        assert_eq!(json["UserProfiles"][0]["ID"], USER_ID);
    }

    #[test]
    fn deltas_use_removed_and_patch() {
        let json = serde_json::to_value(peers_removed(vec![NodeId(4)])).expect("json");
        assert_eq!(json, serde_json::json!({"PeersRemoved": [4]}));
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let json = serde_json::to_value(peer_online(NodeId(2), false, at)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({"PeersChangedPatch": [{"NodeID": 2, "Online": false, "LastSeen": "2023-11-14T22:13:20Z"}]})
        );
    }
}
