//! The node's STUN client: which servers of the DERP map to ask, and
//! asking them, so a node behind a NAT learns the address and port peers
//! elsewhere can reach it at (its "STUN endpoint", reported to control
//! beside its interface addresses and sent to peers in CallMeMaybe).
//!
//! ```text
//! DERP map ─▶ targets(map, home) ─▶ resolve ─▶ Node::stun(server) ─▶ data plane:
//!   binding request from the WireGuard socket ─▶ response (same socket,
//!   classify_datagram → Stun) ─▶ XOR-MAPPED-ADDRESS ─▶ endpoint
//! ```
//!
//! The request leaves from the node's one UDP socket, so the mapping a NAT
//! creates for it is the one WireGuard and disco use (Go's netcheck does
//! the same through magicsock's socket). Like Go's netcheck we ask one
//! STUN node of every region at once, so the round trips also say which
//! region is nearest: that becomes our home ([`crate::relay::choose_home`]).

use crate::node::Node;
use std::net::SocketAddr;
use std::time::Duration;
use tailnet_wire::control::DerpMap;

/// Regions asked per probe (Tailscale's map has about 30).
const MAX_SERVERS: usize = 32;
/// How long one server has to answer.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(2);
/// A whole probe, host name lookups included.
const PROBE_LIMIT: Duration = Duration::from_secs(5);
/// STUN's port when the DERP map says 0.
const DEFAULT_STUN_PORT: u16 = 3478;

/// A STUN server named by the DERP map: a host (an IP literal, or a name
/// to resolve) and a port, and its region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) region: u16,
    pub(crate) host: String,
    pub(crate) port: u16,
}

/// What a probe learned: the distinct addresses the servers saw us at,
/// and each answering region's round trip.
#[derive(Debug, Clone, Default)]
pub(crate) struct Probe {
    pub(crate) endpoints: Vec<SocketAddr>,
    pub(crate) latencies: Vec<(u16, Duration)>,
}

/// One STUN server per region of `map`, by region ID: the first node
/// whose `STUNPort` is not -1, at its `STUNTestIP`, else its IPv4
/// address, else its host name (0 means port 3478). `NoMeasureNoHome`
/// regions are not asked.
pub(crate) fn targets(map: &DerpMap) -> Vec<Target> {
    let Some(regions) = map.regions.as_ref() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (id, region) in regions {
        let Some(region_id) = u16::try_from(*id).ok().filter(|r| *r > 0) else {
            continue;
        };
        if region.no_measure_no_home {
            continue;
        }
        for node in &region.nodes {
            let port = match node.stun_port {
                0 => DEFAULT_STUN_PORT,
                p => match u16::try_from(p) {
                    Ok(p) => p,
                    Err(_) => continue, // -1: no STUN here
                },
            };
            let ipv4_ok = node.ipv4.parse::<std::net::Ipv4Addr>().is_ok();
            let host = if !node.stun_test_ip.is_empty() {
                node.stun_test_ip.clone()
            } else if ipv4_ok {
                node.ipv4.clone()
            } else if !node.host_name.is_empty() && node.ipv4.is_empty() {
                node.host_name.clone()
            } else {
                continue;
            };
            out.push(Target {
                region: region_id,
                host,
                port,
            });
            break;
        }
    }
    out
}

/// Asks up to [`MAX_SERVERS`] of `targets` at once through `node`'s
/// socket. Servers on loopback are skipped: they can only tell a node its
/// loopback address, which no peer elsewhere can use. Only servers of the
/// socket's address family are asked.
pub(crate) async fn probe(node: Node, targets: Vec<Target>) -> Probe {
    let v6 = node.listen_addr().is_ipv6();
    let run = async {
        let mut servers = Vec::new();
        for t in targets {
            if servers.len() >= MAX_SERVERS {
                break;
            }
            let Ok(addrs) = tokio::net::lookup_host((t.host.as_str(), t.port)).await else {
                tracing::debug!(host = %t.host, "STUN server name does not resolve");
                continue;
            };
            if let Some(a) = addrs
                .into_iter()
                .find(|a| a.is_ipv6() == v6 && !a.ip().is_loopback())
            {
                servers.push((t.region, a));
            }
        }
        let mut asks = tokio::task::JoinSet::new();
        for (region, server) in servers {
            let node = node.clone();
            asks.spawn(async move {
                let sent = tokio::time::Instant::now();
                let answer = node.stun(server, ANSWER_WITHIN).await;
                (region, server, answer, sent.elapsed())
            });
        }
        let mut out = Probe::default();
        while let Some(Ok((region, server, answer, rtt))) = asks.join_next().await {
            match answer {
                Some(a) => {
                    tracing::trace!(region, %server, endpoint = %a, ?rtt, "STUN answered");
                    if !out.endpoints.contains(&a) {
                        out.endpoints.push(a);
                    }
                    out.latencies.push((region, rtt));
                }
                None => tracing::debug!(region, %server, "no STUN answer"),
            }
        }
        out.latencies.sort();
        out
    };
    tokio::time::timeout(PROBE_LIMIT, run)
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailnet_wire::control::{DerpNode, DerpRegion};

    fn region(id: i32, nodes: Vec<DerpNode>) -> (i32, DerpRegion) {
        (
            id,
            DerpRegion {
                region_id: id,
                no_measure_no_home: id == 5,
                nodes,
                ..DerpRegion::default()
            },
        )
    }

    fn node(ipv4: &str, host: &str, stun_port: i32, test_ip: &str) -> DerpNode {
        DerpNode {
            ipv4: ipv4.into(),
            host_name: host.into(),
            stun_port,
            stun_test_ip: test_ip.into(),
            ..DerpNode::default()
        }
    }

    #[test]
    fn one_server_per_region_by_the_maps_rules_for_ports_and_hosts() {
        let map = DerpMap {
            regions: Some(
                [
                    region(1, vec![node("192.0.2.1", "derp1.example", 0, "")]),
                    region(
                        7,
                        vec![
                            node("none", "derp7.example", 3479, ""),
                            node("", "derp7b.example", -1, ""),
                            node("198.51.100.7", "x", 9, "203.0.113.9"),
                        ],
                    ),
                    region(9, vec![node("", "derp9.example", 0, "")]),
                    region(5, vec![node("192.0.2.5", "", 0, "")]),
                ]
                .into_iter()
                .collect(),
            ),
            ..DerpMap::default()
        };
        let t = |region, h: &str, p| Target {
            region,
            host: h.into(),
            port: p,
        };
        assert_eq!(
            targets(&map),
            vec![
                t(1, "192.0.2.1", 3478),
                // "none" disables IPv4 and names no host to resolve instead;
                // -1 is no STUN; STUNTestIP wins over IPv4. Region 5 is
                // NoMeasureNoHome.
                t(7, "203.0.113.9", 9),
                t(9, "derp9.example", 3478),
            ]
        );
        assert!(targets(&DerpMap::default()).is_empty());
    }
}
