//! Folding a stream of [`MapResponse`]s into the current network map, by
//! the rules the Go client follows (`control/controlclient/map.go` at
//! v1.90.9: `HandleNonKeepAliveMapResponse`, `updateStateFromResponse`
//! L286, `updatePeersStateFromResponse` L457; the read loop in
//! `direct.go` L1073-1160).

use super::derp::DerpMap;
use super::dns::DnsConfig;
use super::filter::FilterRule;
use super::messages::{MapResponse, UserProfile};
use super::node::{Node, NodeId, UserId};
use super::time::Timestamp;
use std::collections::BTreeMap;

/// Why a map response cannot be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetmapError {
    /// The first message that is not a keep-alive has no `Node`; the Go
    /// client drops the stream ("initial MapResponse lacked node").
    #[error("initial MapResponse lacked node")]
    InitialLacksNode,
}

/// What one [`Netmap::apply`] changed, for deciding what to push to the
/// data plane. A field is set when the message carried that part, even
/// if the new value equals the old one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// The message was a keep-alive (only `control_time` was taken).
    pub keep_alive: bool,
    /// `Node` (the self node) was replaced.
    pub self_node: bool,
    /// A full `Peers` list replaced the peer set.
    pub full_peers: bool,
    /// Peers that were not there before.
    pub peers_added: usize,
    /// Peers removed.
    pub peers_removed: usize,
    /// Existing peers replaced or patched (counted once per operation).
    pub peers_changed: usize,
    /// `DERPMap` arrived.
    pub derp_map: bool,
    /// `DNSConfig` arrived.
    pub dns_config: bool,
    /// `PacketFilter` or `PacketFilters` arrived.
    pub packet_filter: bool,
    /// `Domain` changed.
    pub domain: bool,
    /// `UserProfiles` arrived.
    pub user_profiles: bool,
}

impl Changes {
    /// Whether the peer set or any peer changed.
    pub fn peers(&self) -> bool {
        self.full_peers || self.peers_added + self.peers_removed + self.peers_changed > 0
    }
}

/// The network map as a client sees it after a series of map responses:
/// a sans-IO value that [`Netmap::apply`] updates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Netmap {
    self_node: Option<Node>,
    peers: BTreeMap<NodeId, Node>,
    derp_map: Option<DerpMap>,
    dns_config: Option<DnsConfig>,
    domain: String,
    named_filters: BTreeMap<String, Vec<FilterRule>>,
    packet_filter: Option<Vec<FilterRule>>,
    user_profiles: BTreeMap<UserId, UserProfile>,
    collect_services: bool,
    control_time: Option<Timestamp>,
}

impl Netmap {
    /// An empty map, before the first response.
    pub fn new() -> Self {
        Self::default()
    }

    /// The self node (`None` before the first non-keep-alive message).
    pub fn self_node(&self) -> Option<&Node> {
        self.self_node.as_ref()
    }

    /// Peers, sorted by node ID.
    pub fn peers(&self) -> impl ExactSizeIterator<Item = &Node> {
        self.peers.values()
    }

    /// One peer by ID.
    pub fn peer(&self, id: NodeId) -> Option<&Node> {
        self.peers.get(&id)
    }

    /// The DERP map, merged across updates.
    pub fn derp_map(&self) -> Option<&DerpMap> {
        self.derp_map.as_ref()
    }

    /// The latest DNS configuration.
    pub fn dns_config(&self) -> Option<&DnsConfig> {
        self.dns_config.as_ref()
    }

    /// The tailnet name (`""` until control sends one).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The effective packet filter: every named filter concatenated in
    /// name order (`PacketFilter` is the name `"base"`). `None` if control
    /// never sent one; like an empty filter, that admits no new inbound
    /// flow.
    pub fn packet_filter(&self) -> Option<&[FilterRule]> {
        self.packet_filter.as_deref()
    }

    /// User profiles by user ID (accumulated; never pruned).
    pub fn user_profiles(&self) -> &BTreeMap<UserId, UserProfile> {
        &self.user_profiles
    }

    /// Whether control asked for services in Hostinfo.
    pub fn collect_services(&self) -> bool {
        self.collect_services
    }

    /// The latest `ControlTime` control sent.
    pub fn control_time(&self) -> Option<Timestamp> {
        self.control_time
    }

    /// Applies one map response, using control's clock (the latest
    /// `ControlTime`) for `PeerSeenChange`; see [`Netmap::apply_at`].
    pub fn apply(&mut self, resp: MapResponse) -> Result<Changes, NetmapError> {
        self.apply_at(resp, None)
    }

    /// Applies one map response.
    ///
    /// - A keep-alive changes nothing but `control_time`.
    /// - The first other message must carry `Node`, else
    ///   [`NetmapError::InitialLacksNode`] and nothing changes.
    /// - Nodes are upgraded first ([`Node::upgrade`]: legacy `DERP` →
    ///   `HomeDERP`, missing `AllowedIPs` → `Addresses`); the self node's
    ///   deprecated `Capabilities` are added to its `CapMap`.
    /// - Non-empty `Peers` replaces the peer set, and every other peer
    ///   field of the message is ignored. Otherwise, in this order:
    ///   `PeersRemoved` removes, `PeersChanged` upserts whole nodes,
    ///   `PeerSeenChange` sets `LastSeen` to `now` (true) or clears it
    ///   (false), `OnlineChange` sets `Online`, and `PeersChangedPatch`
    ///   patches fields. Changes naming unknown peers are ignored.
    /// - `DERPMap`: replaces, except that absent `Regions` keep the old
    ///   regions (and `omitDefaultRegions`), and absent `HomeParams` /
    ///   `RegionScore` keep the old ones.
    /// - `PacketFilter`: absent = unchanged, `[]` = deny all; it is the
    ///   named filter `"base"`. `PacketFilters` then sets (`rules`) or
    ///   deletes (`null`) names, `"*": null` first clearing all of them.
    /// - `DNSConfig` replaces when present; `Domain` when non-empty;
    ///   `CollectServices` when set; `UserProfiles` are added by ID.
    ///
    /// `now` is the client's clock for `PeerSeenChange`; with `None` the
    /// latest `ControlTime` (this message's or an earlier one) is used,
    /// and if control never sent one, `LastSeen` is left as it is.
    pub fn apply_at(
        &mut self,
        mut resp: MapResponse,
        now: Option<Timestamp>,
    ) -> Result<Changes, NetmapError> {
        if !resp.keep_alive && self.self_node.is_none() && resp.node.is_none() {
            return Err(NetmapError::InitialLacksNode);
        }
        if let Some(t) = resp.control_time.filter(|t| !t.is_zero()) {
            self.control_time = Some(t);
        }
        let mut ch = Changes::default();
        if resp.keep_alive {
            ch.keep_alive = true;
            return Ok(ch);
        }

        if let Some(mut node) = resp.node.take() {
            node.upgrade();
            for c in &node.capabilities {
                node.cap_map.entry(c.clone()).or_default();
            }
            self.self_node = Some(node);
            ch.self_node = true;
        }

        let now = now.or(self.control_time);
        self.apply_peers(&mut resp, now, &mut ch);

        for up in resp.user_profiles.drain(..) {
            self.user_profiles.insert(up.id, up);
            ch.user_profiles = true;
        }

        if let Some(dm) = resp.derp_map.take() {
            self.merge_derp_map(dm);
            ch.derp_map = true;
        }

        ch.packet_filter = self.apply_filters(&mut resp);

        if let Some(dns) = resp.dns_config.take() {
            self.dns_config = Some(dns);
            ch.dns_config = true;
        }
        if let Some(c) = resp.collect_services {
            self.collect_services = c;
        }
        if !resp.domain.is_empty() && resp.domain != self.domain {
            self.domain = std::mem::take(&mut resp.domain);
            ch.domain = true;
        }
        Ok(ch)
    }

    fn apply_peers(&mut self, resp: &mut MapResponse, now: Option<Timestamp>, ch: &mut Changes) {
        if !resp.peers.is_empty() {
            ch.full_peers = true;
            let old = std::mem::take(&mut self.peers);
            for mut n in resp.peers.drain(..) {
                n.upgrade();
                if old.contains_key(&n.id) {
                    ch.peers_changed += 1;
                } else if !self.peers.contains_key(&n.id) {
                    ch.peers_added += 1;
                }
                self.peers.insert(n.id, n);
            }
            ch.peers_removed = old.keys().filter(|id| !self.peers.contains_key(id)).count();
            return;
        }

        for id in &resp.peers_removed {
            if self.peers.remove(id).is_some() {
                ch.peers_removed += 1;
            }
        }
        for mut n in resp.peers_changed.drain(..) {
            n.upgrade();
            if self.peers.insert(n.id, n).is_some() {
                ch.peers_changed += 1;
            } else {
                ch.peers_added += 1;
            }
        }
        for (id, seen) in &resp.peer_seen_change {
            if let Some(p) = self.peers.get_mut(id) {
                if !*seen {
                    p.last_seen = None;
                } else if let Some(t) = now {
                    p.last_seen = Some(t);
                }
                ch.peers_changed += 1;
            }
        }
        for (id, online) in &resp.online_change {
            if let Some(p) = self.peers.get_mut(id) {
                p.online = Some(*online);
                ch.peers_changed += 1;
            }
        }
        for pc in &resp.peers_changed_patch {
            if let Some(p) = self.peers.get_mut(&pc.node_id) {
                pc.apply_to(p);
                ch.peers_changed += 1;
            }
        }
    }

    fn merge_derp_map(&mut self, mut dm: DerpMap) {
        if let Some(old) = self.derp_map.take() {
            if dm.regions.is_none() {
                dm.regions = old.regions;
                dm.omit_default_regions = old.omit_default_regions;
            }
            match (&mut dm.home_params, old.home_params) {
                (None, old_hp) => dm.home_params = old_hp,
                (Some(hp), Some(old_hp)) if hp.region_score.is_none() => {
                    hp.region_score = old_hp.region_score;
                }
                _ => {}
            }
        }
        self.derp_map = Some(dm);
    }

    /// Returns whether any filter field arrived.
    fn apply_filters(&mut self, resp: &mut MapResponse) -> bool {
        let mut changed = false;
        if let Some(pf) = resp.packet_filter.take() {
            self.named_filters.insert("base".to_string(), pf);
            changed = true;
        }
        if !resp.packet_filters.is_empty() {
            changed = true;
            if matches!(resp.packet_filters.get("*"), Some(None)) {
                self.named_filters.clear();
            }
            for (name, rules) in std::mem::take(&mut resp.packet_filters) {
                if name == "*" {
                    continue;
                }
                match rules {
                    Some(r) => {
                        self.named_filters.insert(name, r);
                    }
                    None => {
                        self.named_filters.remove(&name);
                    }
                }
            }
        }
        if changed {
            self.packet_filter = Some(self.named_filters.values().flatten().cloned().collect());
        }
        changed
    }
}
