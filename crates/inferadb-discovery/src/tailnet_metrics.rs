//! The embedded node's own metrics under `inferadb_tailnet_…`: a
//! [`prometheus::core::Collector`] that reads `tailnet::Node::stats()`,
//! `status()` and `dns_stats()` on every scrape (nothing is copied
//! between scrapes).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `inferadb_tailnet_peers` | gauge | none |
//! | `inferadb_tailnet_peer_rx_bytes_total`, `…_tx_bytes_total` | counter | `peer` (short name), `node_key` |
//! | `inferadb_tailnet_peer_handshakes_total` | counter | `peer`, `node_key` |
//! | `inferadb_tailnet_peer_last_handshake_timestamp_seconds` | gauge | `peer`, `node_key` (absent before the first) |
//! | `inferadb_tailnet_peer_path` | gauge (1 for the path in use) | `peer`, `node_key`, `path` (`direct`, `relayed`, `none`) |
//! | `inferadb_tailnet_peer_online` | gauge | `peer`, `node_key` |
//! | `inferadb_tailnet_dataplane_drops_total` | counter | `reason` |
//! | `inferadb_tailnet_packet_filter_drops_total` | counter | `reason` |
//! | `inferadb_tailnet_control_state` | gauge (1 for the current) | `state` (Go's `ipn.State` names) |
//! | `inferadb_tailnet_control_connected` | gauge (1 while the map stream to control is up) | none (absent for a static node) |
//! | `inferadb_tailnet_health_warnings` | gauge (how many `status` Health entries) | `kind` (`control`, `derp_home`, `direct_path`) |
//! | `inferadb_tailnet_dns_queries_total` | counter | `result` (MagicDNS responder; absent without MagicDNS) |
//! | `inferadb_tailnet_derp_connected` | gauge (1 while connected) | `region` (home DERP region ID) |
//! | `inferadb_tailnet_derp_connects_total` | counter | none |
//! | `inferadb_tailnet_derp_packets_total` | counter | `direction` (`tx`, `rx`) |
//! | `inferadb_tailnet_derp_dropped_total` | counter | none |
//! | `inferadb_tailnet_derp_regions_open` | gauge | none (home plus peers' home regions in use) |
//!
//! `control_state` stays `Running` while control is unreachable (the node
//! forwards on its last netmap and reconnects, as tailscaled does);
//! `control_connected 0` and `health_warnings{kind="control"} 1` say
//! control is gone.
//!
//! The DERP metrics describe the node's connection to its home relay
//! region (`Node::stats().relay`) and are absent while it has none (a
//! static node, or a netmap without a DERP map). A peer is
//! `path="relayed"` while its packets go through that relay.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts};
use std::time::UNIX_EPOCH;
use tailnet::{BackendState, Node};

const PEER: &[&str] = &["peer", "node_key"];

/// Every state `inferadb_tailnet_control_state` enumerates.
const STATES: &[BackendState] = &[
    BackendState::NoState,
    BackendState::NeedsLogin,
    BackendState::NeedsMachineAuth,
    BackendState::Starting,
    BackendState::Running,
    BackendState::Stopped,
];

/// `inferadb_tailnet_health_warnings`' kinds and the start of the Health
/// entries of each (`tailnet`'s `Status::health`).
const HEALTH_KINDS: &[(&str, &str)] = &[
    ("control", "not connected to control"),
    ("derp_home", "no DERP home"),
    ("direct_path", "no direct path to "),
];

struct Set {
    peers: IntGauge,
    rx: IntCounterVec,
    tx: IntCounterVec,
    handshakes: IntCounterVec,
    last_handshake: IntGaugeVec,
    path: IntGaugeVec,
    online: IntGaugeVec,
    drops: IntCounterVec,
    filter_drops: IntCounterVec,
    control: IntGaugeVec,
    dns: IntCounterVec,
    derp_connected: IntGaugeVec,
    derp_connects: IntCounter,
    derp_packets: IntCounterVec,
    derp_dropped: IntCounter,
    derp_regions: IntGauge,
    control_connected: IntGauge,
    health: IntGaugeVec,
}

impl Set {
    fn new() -> Set {
        let c = |n: &str, h: &str, l: &[&str]| {
            IntCounterVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        let g = |n: &str, h: &str, l: &[&str]| {
            IntGaugeVec::new(Opts::new(n, h), l).expect("valid metric")
        };
        Set {
            peers: IntGauge::new(
                "inferadb_tailnet_peers",
                "Peers in the node's netmap (or configured).",
            )
            .expect("valid metric"),
            rx: c(
                "inferadb_tailnet_peer_rx_bytes_total",
                "WireGuard bytes received from a peer.",
                PEER,
            ),
            tx: c(
                "inferadb_tailnet_peer_tx_bytes_total",
                "WireGuard bytes sent to a peer.",
                PEER,
            ),
            handshakes: c(
                "inferadb_tailnet_peer_handshakes_total",
                "Completed WireGuard handshakes with a peer (first and rekeys).",
                PEER,
            ),
            last_handshake: g(
                "inferadb_tailnet_peer_last_handshake_timestamp_seconds",
                "Unix time of the last completed handshake with a peer.",
                PEER,
            ),
            path: g(
                "inferadb_tailnet_peer_path",
                "The path to a peer in use: 1 for direct, relayed or none.",
                &["peer", "node_key", "path"],
            ),
            online: g(
                "inferadb_tailnet_peer_online",
                "Whether control says the peer is online.",
                PEER,
            ),
            drops: c(
                "inferadb_tailnet_dataplane_drops_total",
                "Datagrams and packets the data plane dropped, by reason.",
                &["reason"],
            ),
            filter_drops: c(
                "inferadb_tailnet_packet_filter_drops_total",
                "Inbound packets the ACL packet filter dropped, by reason.",
                &["reason"],
            ),
            control: g(
                "inferadb_tailnet_control_state",
                "The node's state with control: 1 for the current state.",
                &["state"],
            ),
            dns: c(
                "inferadb_tailnet_dns_queries_total",
                "MagicDNS responder queries, by result.",
                &["result"],
            ),
            derp_connected: g(
                "inferadb_tailnet_derp_connected",
                "Whether the connection to the home DERP relay region is up.",
                &["region"],
            ),
            derp_connects: IntCounter::new(
                "inferadb_tailnet_derp_connects_total",
                "Connections to the home DERP relay established (first and reconnects).",
            )
            .expect("valid metric"),
            derp_packets: c(
                "inferadb_tailnet_derp_packets_total",
                "Packets handed to (tx) and received through (rx) the DERP relay.",
                &["direction"],
            ),
            derp_dropped: IntCounter::new(
                "inferadb_tailnet_derp_dropped_total",
                "Packets the DERP relay connection could not take (down, queue full).",
            )
            .expect("valid metric"),
            derp_regions: IntGauge::new(
                "inferadb_tailnet_derp_regions_open",
                "DERP relay connections open: the home region's and those to peers' home regions in use.",
            )
            .expect("valid metric"),
            control_connected: IntGauge::new(
                "inferadb_tailnet_control_connected",
                "Whether the node's map stream to control is up (0: forwarding on the last netmap, reconnecting).",
            )
            .expect("valid metric"),
            health: g(
                "inferadb_tailnet_health_warnings",
                "Problems `inferadb-mesh status` lists under Health, by kind.",
                &["kind"],
            ),
        }
    }

    fn collectors(&self) -> [&dyn Collector; 18] {
        [
            &self.peers,
            &self.rx,
            &self.tx,
            &self.handshakes,
            &self.last_handshake,
            &self.path,
            &self.online,
            &self.drops,
            &self.filter_drops,
            &self.control,
            &self.dns,
            &self.derp_connected,
            &self.derp_connects,
            &self.derp_packets,
            &self.derp_dropped,
            &self.derp_regions,
            &self.control_connected,
            &self.health,
        ]
    }
}

/// The node's metrics, read at scrape time. Register with
/// `registry.register(Box::new(TailnetCollector::new(node.clone())))`.
pub struct TailnetCollector {
    node: Node,
    descs: Vec<Desc>,
}

impl TailnetCollector {
    /// A collector reading `node`.
    pub fn new(node: Node) -> Self {
        let proto = Set::new();
        let descs = proto
            .collectors()
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned())
            .collect();
        TailnetCollector { node, descs }
    }

    /// Registers a collector of `node` into `registry`.
    pub fn register(node: &Node, registry: &prometheus::Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(Self::new(node.clone())))
    }
}

impl Collector for TailnetCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let m = Set::new();
        let stats = self.node.stats();
        let status = self.node.status();
        m.peers
            .set(i64::try_from(stats.peers.len()).unwrap_or(i64::MAX));
        for p in &stats.peers {
            let key = tailnet::status::peer_key(&p.public_key);
            let st = status.peer.get(&key);
            let name = st
                .map(|s| {
                    if s.name.is_empty() {
                        s.host_name.as_str()
                    } else {
                        s.name.as_str()
                    }
                })
                .filter(|n| !n.is_empty())
                .unwrap_or(key.as_str())
                .to_string();
            let labels = [name.as_str(), key.as_str()];
            m.rx.with_label_values(&labels).inc_by(p.rx_bytes);
            m.tx.with_label_values(&labels).inc_by(p.tx_bytes);
            m.handshakes.with_label_values(&labels).inc_by(p.handshakes);
            if let Some(t) = p
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            {
                m.last_handshake
                    .with_label_values(&labels)
                    .set(i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
            }
            let relayed = st.is_some_and(|s| !s.relay.is_empty() && s.cur_addr.is_empty());
            let path = if p.endpoint.is_some() && !relayed {
                "direct"
            } else if relayed {
                "relayed"
            } else {
                "none"
            };
            for candidate in ["direct", "relayed", "none"] {
                m.path
                    .with_label_values(&[labels[0], labels[1], candidate])
                    .set(i64::from(candidate == path));
            }
            // A static node has no control: online while it has a session.
            let online = st.map_or(p.last_handshake.is_some(), |s| s.online);
            m.online.with_label_values(&labels).set(i64::from(online));
        }
        let d = stats.drops;
        for (reason, n) in [
            ("malformed", d.malformed),
            ("unknown_peer", d.unknown_peer),
            ("rejected", d.rejected),
            ("bad_source", d.bad_source),
            ("no_route", d.no_route),
            ("no_endpoint", d.no_endpoint),
            ("send_error", d.send_errors),
            ("disco_rejected", d.disco_rejected),
            ("handshake_limited", d.handshake_limited),
        ] {
            m.drops.with_label_values(&[reason]).inc_by(n);
        }
        for (reason, n) in [
            ("no_rule", d.filter_no_rule),
            ("protocol", d.filter_protocol),
            ("not_local", d.filter_not_local),
            ("special_destination", d.filter_special_destination),
            ("malformed", d.filter_malformed),
        ] {
            m.filter_drops.with_label_values(&[reason]).inc_by(n);
        }
        let current = self.node.backend_state();
        for s in STATES {
            m.control
                .with_label_values(&[s.as_str()])
                .set(i64::from(*s == current));
        }
        if let Some(dns) = self.node.dns_stats() {
            for (result, n) in [
                ("answered_locally", dns.answered_locally),
                ("forwarded", dns.forwarded),
                ("forward_failed", dns.forward_failed),
                ("truncated", dns.truncated),
                ("malformed", dns.malformed),
                ("refused", dns.refused),
                ("not_ours", dns.not_ours),
            ] {
                m.dns.with_label_values(&[result]).inc_by(n);
            }
        }
        let r = stats.relay;
        let mut families: Vec<MetricFamily> = m.collectors()[..11]
            .iter()
            .flat_map(|c| c.collect())
            .collect();
        if let Some(control) = self.node.control_health() {
            m.control_connected.set(i64::from(control.connected));
            for (kind, prefix) in HEALTH_KINDS {
                let n = status
                    .health
                    .iter()
                    .filter(|h| h.starts_with(prefix))
                    .count();
                m.health
                    .with_label_values(&[kind])
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            families.extend(m.control_connected.collect());
            families.extend(m.health.collect());
        }
        if r.region != 0 {
            m.derp_connected
                .with_label_values(&[&r.region.to_string()])
                .set(i64::from(r.connected));
            m.derp_connects.inc_by(r.connects);
            m.derp_packets
                .with_label_values(&["tx"])
                .inc_by(r.tx_packets);
            m.derp_packets
                .with_label_values(&["rx"])
                .inc_by(r.rx_packets);
            m.derp_dropped.inc_by(r.tx_dropped);
            m.derp_regions.set(i64::from(r.regions_open));
            families.extend(m.collectors()[11..16].iter().flat_map(|c| c.collect()));
        }
        families
    }
}
