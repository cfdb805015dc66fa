//! [`Node::status`]: the netmap (identity, names, tags, online) joined with
//! the data plane's per-peer counters (path, bytes, handshakes).

use crate::node::{ControlHealth, Node};
use crate::status::{peer_key, PeerStatus, Status, TailnetStatus};
use std::time::SystemTime;

/// The MagicDNS suffix a node's FQDN implies: everything after the first
/// label, without the trailing dot.
fn suffix_of(fqdn: &str) -> String {
    fqdn.trim_end_matches('.')
        .split_once('.')
        .map(|(_, rest)| rest.to_string())
        .unwrap_or_default()
}

impl Node {
    /// A snapshot like `tailscale status --json`: the node, its peers from
    /// the netmap (or the static peer table), paths and counters.
    pub fn status(&self) -> Status {
        build(self)
    }
}

pub(crate) fn build(node: &Node) -> Status {
    let now = SystemTime::now();
    let stats = node.stats();
    let mut st = Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        backend_state: node.backend_state(),
        tailscale_ips: node.addresses().to_vec(),
        ..Status::default()
    };
    let by_key: std::collections::HashMap<_, _> =
        stats.peers.iter().map(|s| (s.public_key, s)).collect();
    let find = |key: &tailnet_wire::PublicKey| by_key.get(key).copied();
    if let Some(rx) = node.watch_netmap() {
        let netmap = rx.borrow().clone();
        if let Some(me) = netmap.self_node() {
            st.self_ = PeerStatus::from_control_node(me);
            st.self_.online = true;
            st.self_.in_engine = true;
            st.self_.in_magic_sock = true;
            st.magic_dns_suffix = suffix_of(&me.name);
        }
        let magic_dns = netmap.dns_config().is_some_and(|d| d.proxied);
        st.current_tailnet = Some(TailnetStatus {
            name: if netmap.domain().is_empty() {
                st.magic_dns_suffix.clone()
            } else {
                netmap.domain().to_string()
            },
            magic_dns_suffix: st.magic_dns_suffix.clone(),
            magic_dns_enabled: magic_dns,
        });
        let region_code = |id: i32| {
            netmap
                .derp_map()
                .and_then(|m| m.regions.as_ref())
                .and_then(|r| r.get(&id))
                .map(|r| r.region_code.clone())
                .filter(|c| !c.is_empty())
        };
        // Our home region, as `tailscale status --json` shows in Self.
        if let Some(code) = i32::try_from(stats.relay.region)
            .ok()
            .filter(|r| *r != 0)
            .and_then(region_code)
        {
            st.self_.relay = code;
        }
        for p in netmap.peers() {
            let mut ps = PeerStatus::from_control_node(p);
            if let Some(s) = find(&p.key.key()) {
                ps.apply_stats(s, now);
                if s.relay_region != 0 {
                    if let Some(code) = region_code(s.relay_region) {
                        ps.relay = code;
                    }
                }
            }
            st.peer.insert(peer_key(&p.key.key()), ps);
        }
    } else {
        // A statically configured node: no names, just keys and counters.
        st.self_ = PeerStatus {
            public_key: peer_key(&node.public_key()),
            tailscale_ips: node.addresses().to_vec(),
            online: true,
            ..PeerStatus::default()
        };
        for s in &stats.peers {
            let mut ps = PeerStatus {
                public_key: peer_key(&s.public_key),
                in_network_map: false,
                ..PeerStatus::default()
            };
            ps.apply_stats(s, now);
            // No control to say so: a peer is online while its session is.
            ps.online = ps.active;
            st.peer.insert(peer_key(&s.public_key), ps);
        }
    }
    st.self_.addrs = vec![node.listen_addr().to_string()];
    if let Some(control) = node.control_health() {
        let derp = node.watch_netmap().and_then(|rx| {
            let netmap = rx.borrow();
            let regions = netmap.derp_map()?.regions.as_ref()?.clone();
            (!regions.is_empty()).then(|| {
                let home = i32::try_from(stats.relay.region).unwrap_or(0);
                HomeDerp {
                    region: stats.relay.region,
                    code: regions
                        .get(&home)
                        .map(|r| r.region_code.clone())
                        .unwrap_or_default(),
                    connected: stats.relay.connected,
                }
            })
        });
        st.health = health(&control, derp.as_ref(), &st.peer);
    }
    st
}

/// The home DERP region as health sees it.
pub(crate) struct HomeDerp {
    /// Region ID; 0 when none was chosen.
    pub(crate) region: u32,
    /// Its code in the DERP map (`inferadb`), if known.
    pub(crate) code: String,
    /// Whether the connection to it is up.
    pub(crate) connected: bool,
}

/// `Status.health`: one sentence per problem, as `tailscale status` shows
/// its health warnings. `derp` is `None` when the netmap has no DERP map
/// (nothing to be connected to).
pub(crate) fn health(
    control: &ControlHealth,
    derp: Option<&HomeDerp>,
    peers: &std::collections::BTreeMap<String, PeerStatus>,
) -> Vec<String> {
    let mut out = Vec::new();
    if !control.connected {
        let mut line = format!(
            "not connected to control since {}",
            crate::status::go_time(Some(control.since))
        );
        if let Some(e) = &control.last_error {
            line.push_str(": ");
            line.push_str(e);
        }
        out.push(line);
    }
    match derp {
        Some(d) if d.region == 0 => {
            out.push("no DERP home: no region of the DERP map is usable".to_string())
        }
        Some(d) if !d.connected => {
            let name = if d.code.is_empty() {
                d.region.to_string()
            } else {
                format!("{} ({})", d.region, d.code)
            };
            out.push(format!("no DERP home: not connected to DERP region {name}"));
        }
        _ => {}
    }
    let mut relayed: Vec<&PeerStatus> = peers
        .values()
        // A live session over the relay; a peer never talked to has no
        // path to speak of.
        .filter(|p| p.online && p.active && !p.relay.is_empty() && p.cur_addr.is_empty())
        .collect();
    relayed.sort_by(|a, b| a.display_name().cmp(b.display_name()));
    for p in relayed {
        out.push(format!(
            "no direct path to {}: relayed through DERP region {}",
            p.display_name(),
            p.relay
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn peer(name: &str, cur_addr: &str, relay: &str, online: bool) -> (String, PeerStatus) {
        (
            name.to_string(),
            PeerStatus {
                name: name.to_string(),
                cur_addr: cur_addr.to_string(),
                relay: relay.to_string(),
                online,
                active: true,
                ..PeerStatus::default()
            },
        )
    }

    /// Issue 17: with the coordinator gone, `status` said nothing.
    #[test]
    fn health_names_lost_control_no_derp_home_and_relayed_peers() {
        let up = ControlHealth {
            connected: true,
            since: UNIX_EPOCH,
            last_error: None,
        };
        let home = HomeDerp {
            region: 900,
            code: "inferadb".into(),
            connected: true,
        };
        let peers: std::collections::BTreeMap<_, _> = [
            peer("direct", "127.0.0.1:1", "", true),
            peer("offline-relayed", "", "inferadb", false),
            peer("no-path", "", "", true),
            // Relay route known, never talked to: not a problem yet.
            {
                let (k, mut p) = peer("idle-relayed", "", "inferadb", true);
                p.active = false;
                (k, p)
            },
        ]
        .into_iter()
        .collect();
        assert!(health(&up, Some(&home), &peers).is_empty());
        assert!(
            health(&up, None, &peers).is_empty(),
            "no DERP map, no DERP warning"
        );

        let down = ControlHealth {
            connected: false,
            since: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            last_error: Some("control ended the map stream".into()),
        };
        let home_down = HomeDerp {
            connected: false,
            ..home
        };
        let mut peers = peers;
        peers.extend([
            peer("b-relayed", "", "inferadb", true),
            peer("a-relayed", "", "inferadb", true),
        ]);
        assert_eq!(
            health(&down, Some(&home_down), &peers),
            [
                "not connected to control since 2027-01-15T08:00:00Z: control ended the map stream",
                "no DERP home: not connected to DERP region 900 (inferadb)",
                "no direct path to a-relayed: relayed through DERP region inferadb",
                "no direct path to b-relayed: relayed through DERP region inferadb",
            ]
        );
        let none = HomeDerp {
            region: 0,
            code: String::new(),
            connected: false,
        };
        assert_eq!(
            health(&up, Some(&none), &Default::default()),
            ["no DERP home: no region of the DERP map is usable"]
        );
    }

    #[test]
    fn suffix_is_everything_after_the_host_label() {
        assert_eq!(super::suffix_of("a.tailnet.internal."), "tailnet.internal");
        assert_eq!(super::suffix_of("a"), "");
    }
}
