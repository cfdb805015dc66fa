//! [`Node::status`]: the netmap (identity, names, tags, online) joined with
//! the data plane's per-peer counters (path, bytes, handshakes).

use crate::node::Node;
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
    st
}

#[cfg(test)]
mod tests {
    #[test]
    fn suffix_is_everything_after_the_host_label() {
        assert_eq!(super::suffix_of("a.tailnet.internal."), "tailnet.internal");
        assert_eq!(super::suffix_of("a"), "");
    }
}
