//! The node's relays: DERP clients bridged to the data plane's
//! [`RelayLink`], one to our home region, always, and one to each peer's
//! home region we send to, opened on demand.
//!
//! ```text
//! netmap DERPMap ─▶ home (fallback_home, then STUN latency) ─▶ Relay::start
//!   data plane ─RelayLink.outbound (key, pkt)─▶ bridge: the key's home region
//!     (routes, from the netmap's HomeDERP) ─▶ that region's DerpHandle
//!     (spawned on first use; closed after 60 s unused) ─▶ SendPacket
//!   every client's RecvPacket ─PacketSink = RelayLink.inbound─▶ data plane
//!     (straight, not through the bridge); the bridge hears the clients'
//!     other events (connected, lost, peer gone)
//! ```
//!
//! A DERP server forwards only between clients connected to it (Tailscale
//! meshes the servers of one region, not regions), so a packet for a peer
//! must go to the peer's home region, where that peer is connected: this
//! is what Go's magicsock does (`derp.md`: it connects on demand to a
//! peer's home region and closes idle non-home connections after 60 s).
//! Peers send to us through our home region, which we report to control
//! as `Hostinfo.NetInfo.PreferredDERP` and peers see as our `HomeDERP`.
//!
//! The home region: before any measurement, the lowest-numbered region
//! with a node we can dial ([`fallback_home`]); then the region whose STUN
//! server answered fastest ([`choose_home`], as Go's netcheck does), kept
//! unless another is clearly faster.

use crate::dataplane::RelayLink;
use crate::derp::{spawn_derp, DerpEvent, DerpHandle, DerpScheme, DerpTarget, PacketSink};
use crate::stats::RelayCounters;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tailnet_wire::control::{DerpMap, DerpNode};
use tailnet_wire::PublicKey;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Packets buffered from the data plane to the DERP clients.
const LINK_QUEUE: usize = 1024;
/// Batches (each at most 64 packets, one read from a relay) buffered from
/// the DERP clients to the data plane.
const INBOUND_QUEUE: usize = 64;
/// The clients' events (connected, lost, peer gone) for the bridge.
const EVENT_QUEUE: usize = 64;
/// A connection to a region other than home is closed after this long
/// without a packet sent through it (Go's `derpInactiveCleanupTime`).
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How often idle connections are looked for (Go: every 15 s).
const IDLE_CHECK: Duration = Duration::from_secs(15);
/// A home that answered is kept unless another region is faster by at
/// least this much (Go's `preferredDERPAbsoluteDiff`), and by a third.
const HOME_KEEP_ABSOLUTE: Duration = Duration::from_millis(10);

/// Node key → the peer's home region (its `HomeDERP`; absent or 0: none).
pub(crate) type Routes = Arc<HashMap<PublicKey, u16>>;

/// The first node of `region` in `map` we can dial.
fn dialable(map: &DerpMap, region: u16, scheme: &DerpScheme) -> Option<DerpNode> {
    let r = map.regions.as_ref()?.get(&i32::from(region))?;
    r.nodes
        .iter()
        .find(|n| DerpTarget::from_node(n, scheme).is_some())
        .cloned()
}

/// The home region before any measurement: the lowest-numbered region
/// with a node we can dial, skipping `NoMeasureNoHome` and `Avoid` regions
/// unless nothing else is left.
pub(crate) fn fallback_home(map: &DerpMap, scheme: &DerpScheme) -> Option<u16> {
    let regions = map.regions.as_ref()?;
    let usable = |avoid_ok: bool| {
        regions.iter().find_map(|(id, r)| {
            let id = u16::try_from(*id).ok().filter(|i| *i > 0)?;
            if !avoid_ok && (r.no_measure_no_home || r.avoid) {
                return None;
            }
            dialable(map, id, scheme).map(|_| id)
        })
    };
    usable(false).or_else(|| usable(true))
}

/// The home region after a STUN round that measured `latencies` (region,
/// round trip): the fastest region we can dial and may home at, each
/// latency scaled by the map's `HomeParams.RegionScore` as Go does. A
/// current home that answered is kept unless the best is both
/// [`HOME_KEEP_ABSOLUTE`] faster and at most two thirds of its latency
/// (Go's rule in `addReportHistoryAndSetPreferredDERP`; a home that flaps
/// makes every peer's packets to us change relay). No answers keep
/// `current`. Go also smooths latencies over 5 minutes of reports; we
/// compare one round.
pub(crate) fn choose_home(
    map: &DerpMap,
    scheme: &DerpScheme,
    current: u16,
    latencies: &[(u16, Duration)],
) -> u16 {
    let may_home = |id: u16| {
        map.regions
            .as_ref()
            .and_then(|r| r.get(&i32::from(id)))
            .is_some_and(|r| !r.no_measure_no_home && !r.avoid)
            && dialable(map, id, scheme).is_some()
    };
    let scores = map
        .home_params
        .as_ref()
        .and_then(|h| h.region_score.as_ref());
    let scaled = |id: u16, rtt: Duration| match scores.and_then(|s| s.get(&i32::from(id))) {
        Some(score) if *score > 0.0 && score.is_finite() && *score < 1e6 => rtt.mul_f64(*score),
        _ => rtt,
    };
    let Some((best, best_rtt)) = latencies
        .iter()
        .filter(|(id, _)| may_home(*id))
        .map(|(id, rtt)| (*id, scaled(*id, *rtt)))
        .min_by_key(|(_, rtt)| *rtt)
    else {
        return current;
    };
    let current_rtt = latencies
        .iter()
        .find(|(id, _)| *id == current && may_home(current))
        .map(|(id, rtt)| scaled(*id, *rtt));
    match current_rtt {
        Some(old)
            if old.saturating_sub(best_rtt) < HOME_KEEP_ABSOLUTE || best_rtt > old / 3 * 2 =>
        {
            current
        }
        _ => best,
    }
}

/// The running relays: the bridge task and what it was started for.
pub(crate) struct Relay {
    home: u16,
    map: DerpMap,
    routes: watch::Sender<Routes>,
    stop: tokio::sync::oneshot::Sender<()>,
    bridge: JoinHandle<()>,
}

impl Relay {
    /// Starts the bridge with a connection to `home` (a region of `map`)
    /// and returns the link to hand the data plane. `None` if `home` has
    /// nothing to dial.
    pub(crate) fn start(
        home: u16,
        map: &DerpMap,
        scheme: &DerpScheme,
        node_private: [u8; 32],
        counters: Arc<RelayCounters>,
        routes: Routes,
    ) -> Option<(Relay, RelayLink)> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (in_tx, in_rx) = mpsc::channel(INBOUND_QUEUE);
        let mut bridge = Bridge::new(home, map, scheme, node_private, counters, events_tx, in_tx);
        bridge.client(home)?;
        bridge.counters.region.store(u32::from(home), Relaxed);
        let (out_tx, out_rx) = mpsc::channel(LINK_QUEUE);
        let (routes_tx, routes_rx) = watch::channel(routes);
        let (stop, stop_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(bridge.run(out_rx, events, routes_rx, stop_rx));
        Some((
            Relay {
                home,
                map: map.clone(),
                routes: routes_tx,
                stop,
                bridge: task,
            },
            RelayLink {
                outbound: out_tx,
                inbound: in_rx,
            },
        ))
    }

    /// Whether this relay was started for `home` in `map`.
    pub(crate) fn serves(&self, home: u16, map: &DerpMap) -> bool {
        self.home == home && self.map == *map
    }

    /// The peers' home regions changed (a netmap).
    pub(crate) fn set_routes(&self, routes: Routes) {
        self.routes.send_replace(routes);
    }

    /// Stops the bridge once every DERP connection is closed, so a
    /// replacement never overlaps these connections.
    pub(crate) async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.bridge.await;
    }
}

/// One region's DERP client.
struct Client {
    handle: DerpHandle,
    last_send: Instant,
}

/// The bridge task's state.
struct Bridge {
    home: u16,
    map: DerpMap,
    scheme: DerpScheme,
    node_private: [u8; 32],
    counters: Arc<RelayCounters>,
    events_tx: mpsc::Sender<DerpEvent>,
    /// Where every client puts the packets relayed to us.
    sink: PacketSink,
    /// Regions of `map` with a node we can dial (looked up per packet).
    dialable: HashSet<u16>,
    clients: HashMap<u16, Client>,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        for (_, c) in self.clients.drain() {
            let h = c.handle;
            // Clients left when the loop ended without a stop (the data
            // plane went away): shutting one down waits for its task, so
            // it is done off this one.
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { h.shutdown().await });
            }
        }
        self.counters.connected.store(false, Relaxed);
        self.counters.regions_open.store(0, Relaxed);
    }
}

impl Bridge {
    fn new(
        home: u16,
        map: &DerpMap,
        scheme: &DerpScheme,
        node_private: [u8; 32],
        counters: Arc<RelayCounters>,
        events_tx: mpsc::Sender<DerpEvent>,
        inbound: mpsc::Sender<crate::dataplane::RelayBatch>,
    ) -> Bridge {
        let dialable = map
            .regions
            .iter()
            .flat_map(|r| r.keys())
            .filter_map(|id| u16::try_from(*id).ok())
            .filter(|id| dialable(map, *id, scheme).is_some())
            .collect();
        Bridge {
            home,
            map: map.clone(),
            scheme: scheme.clone(),
            node_private,
            sink: PacketSink {
                packets: inbound,
                counters: counters.clone(),
            },
            counters,
            events_tx,
            dialable,
            clients: HashMap::new(),
        }
    }

    /// The client of `region`, connecting to it first if needed. `None`
    /// when the map has no node of it to dial.
    fn client(&mut self, region: u16) -> Option<&mut Client> {
        if !self.clients.contains_key(&region) {
            let node = dialable(&self.map, region, &self.scheme)?;
            let mut target = DerpTarget::from_node(&node, &self.scheme)?;
            target.home = region == self.home;
            let handle = spawn_derp(
                region,
                &target,
                self.node_private,
                self.events_tx.clone(),
                self.sink.clone(),
            );
            if region != self.home {
                tracing::debug!(region, host = %node.host_name, "DERP: connecting to a peer's home region");
            }
            self.clients.insert(
                region,
                Client {
                    handle,
                    last_send: Instant::now(),
                },
            );
            self.counters
                .regions_open
                .store(self.clients.len() as u32, Relaxed);
        }
        self.clients.get_mut(&region)
    }

    /// Sends `data` to `dst` through its home region (ours when it has
    /// none or the map lacks it).
    fn send(&mut self, routes: &Routes, dst: PublicKey, data: Vec<u8>) {
        let region = routes
            .get(&dst)
            .copied()
            .filter(|r| *r != 0 && self.dialable.contains(r))
            .unwrap_or(self.home);
        let sent = match self.client(region) {
            Some(c) => {
                c.last_send = Instant::now();
                c.handle.send(dst, data)
            }
            None => false,
        };
        if sent {
            self.counters.tx_packets.fetch_add(1, Relaxed);
        } else {
            self.counters.tx_dropped.fetch_add(1, Relaxed);
        }
    }

    /// Closes connections other than home's unused for [`IDLE_CLOSE`].
    fn close_idle(&mut self, now: Instant) {
        let home = self.home;
        let idle: Vec<u16> = self
            .clients
            .iter()
            .filter(|(r, c)| {
                **r != home && now.saturating_duration_since(c.last_send) >= IDLE_CLOSE
            })
            .map(|(r, _)| *r)
            .collect();
        for region in idle {
            if let Some(c) = self.clients.remove(&region) {
                tracing::debug!(
                    region,
                    "DERP: closing an idle connection to a peer's region"
                );
                tokio::spawn(async move { c.handle.shutdown().await });
            }
        }
        self.counters
            .regions_open
            .store(self.clients.len() as u32, Relaxed);
    }

    async fn run(
        mut self,
        mut out_rx: mpsc::Receiver<(PublicKey, Vec<u8>)>,
        mut events: mpsc::Receiver<DerpEvent>,
        routes: watch::Receiver<Routes>,
        mut stop: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                out = out_rx.recv() => match out {
                    Some((dst, data)) => {
                        let r = routes.borrow().clone();
                        self.send(&r, dst, data);
                    }
                    // The data plane stopped.
                    None => break,
                },
                ev = events.recv() => match ev {
                    Some(DerpEvent::Connected { region }) => {
                        if region == self.home {
                            self.counters.connected.store(true, Relaxed);
                            self.counters.connects.fetch_add(1, Relaxed);
                        }
                        tracing::info!(region, home = region == self.home, "DERP relay connected");
                    }
                    Some(DerpEvent::Disconnected { region, error }) => {
                        if region == self.home {
                            self.counters.connected.store(false, Relaxed);
                        }
                        tracing::warn!(region, %error, "DERP relay connection lost; reconnecting");
                    }
                    Some(DerpEvent::PeerGone { key, not_here }) => {
                        tracing::debug!(peer = %key.short(), not_here, "relay says peer is gone");
                    }
                    None => break,
                },
                _ = idle.tick() => self.close_idle(Instant::now()),
                _ = &mut stop => {
                    for (_, c) in self.clients.drain() {
                        c.handle.shutdown().await;
                    }
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tailnet_wire::control::DerpRegion;

    fn map(regions: &[(i32, bool)]) -> DerpMap {
        DerpMap {
            regions: Some(
                regions
                    .iter()
                    .map(|(id, no_home)| {
                        (
                            *id,
                            DerpRegion {
                                region_id: *id,
                                no_measure_no_home: *no_home,
                                nodes: vec![DerpNode {
                                    name: format!("{id}a"),
                                    region_id: *id,
                                    host_name: "127.0.0.1".into(),
                                    ipv4: "127.0.0.1".into(),
                                    ..DerpNode::default()
                                }],
                                ..DerpRegion::default()
                            },
                        )
                    })
                    .collect(),
            ),
            ..DerpMap::default()
        }
    }

    /// Packets for a peer open its home region's connection; connections
    /// other than home's close after 60 s unused (home's never does), and
    /// `regions_open` follows. Relays on a closed port: the clients only
    /// retry, on the paused clock.
    #[tokio::test(start_paused = true)]
    async fn peers_regions_open_on_demand_and_close_when_idle() {
        let mut m = map(&[(1, false), (2, false), (3, false)]);
        for r in m.regions.as_mut().unwrap().values_mut() {
            r.nodes[0].derp_port = 1;
        }
        let (events_tx, _events) = mpsc::channel(16);
        let (in_tx, _in_rx) = mpsc::channel(16);
        let counters = Arc::new(RelayCounters::default());
        let mut bridge = Bridge::new(
            1,
            &m,
            &DerpScheme::default(),
            [7; 32],
            counters.clone(),
            events_tx,
            in_tx,
        );
        let (k2, k3, k9) = (
            PublicKey::from_bytes([2; 32]),
            PublicKey::from_bytes([3; 32]),
            PublicKey::from_bytes([9; 32]),
        );
        let routes: Routes = Arc::new([(k2, 2), (k3, 3), (k9, 9)].into_iter().collect());
        let open = |b: &Bridge| {
            let mut r: Vec<u16> = b.clients.keys().copied().collect();
            r.sort();
            r
        };
        // Not connected yet: the packet is dropped, but the region opens.
        bridge.send(&routes, k2, vec![0; 8]);
        // A region not in the map: our home carries it.
        bridge.send(&routes, k9, vec![0; 8]);
        assert_eq!(open(&bridge), vec![1, 2]);
        assert_eq!(counters.regions_open.load(Relaxed), 2);
        assert_eq!(counters.tx_dropped.load(Relaxed), 2);
        tokio::time::advance(Duration::from_secs(30)).await;
        bridge.send(&routes, k3, vec![0; 8]);
        bridge.close_idle(Instant::now());
        assert_eq!(open(&bridge), vec![1, 2, 3]);
        tokio::time::advance(Duration::from_secs(31)).await;
        bridge.close_idle(Instant::now());
        assert_eq!(open(&bridge), vec![1, 3], "region 2 unused for 61 s");
        tokio::time::advance(Duration::from_secs(60)).await;
        bridge.close_idle(Instant::now());
        assert_eq!(open(&bridge), vec![1], "home stays");
        assert_eq!(counters.regions_open.load(Relaxed), 1);
    }

    #[test]
    fn fallback_is_the_lowest_region_that_may_be_home() {
        assert_eq!(
            fallback_home(&map(&[(3, false), (1, false)]), &DerpScheme::default()),
            Some(1)
        );
        assert_eq!(
            fallback_home(&map(&[(1, true), (2, false)]), &DerpScheme::default()),
            Some(2)
        );
        assert_eq!(
            fallback_home(&map(&[(1, true)]), &DerpScheme::default()),
            Some(1)
        );
        assert_eq!(
            fallback_home(&DerpMap::default(), &DerpScheme::default()),
            None
        );
    }

    #[test]
    fn the_fastest_region_wins_but_a_close_home_stays() {
        let mut m = map(&[(1, false), (2, false), (3, true)]);
        let ms = Duration::from_millis;
        // Region 3 is fastest but may not be home.
        assert_eq!(
            choose_home(
                &m,
                &DerpScheme::default(),
                1,
                &[(1, ms(30)), (2, ms(10)), (3, ms(1))]
            ),
            2
        );
        // Faster by less than 10 ms, or by less than a third: home stays.
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(1, ms(9)), (2, ms(1))]),
            1
        );
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(1, ms(100)), (2, ms(70))]),
            1
        );
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(1, ms(100)), (2, ms(60))]),
            2
        );
        // The current home did not answer: the fastest that did.
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(2, ms(40))]),
            2
        );
        // Nothing answered: no change.
        assert_eq!(choose_home(&m, &DerpScheme::default(), 1, &[]), 1);
        // A region not in the map is not a home.
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(9, ms(1)), (1, ms(50))]),
            1
        );
        // A score above 1 penalises a region (below 1 favours it).
        m.home_params = Some(tailnet_wire::control::DerpHomeParams {
            region_score: Some([(2, 2.0)].into_iter().collect()),
        });
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 1, &[(1, ms(100)), (2, ms(60))]),
            1
        );
        assert_eq!(
            choose_home(&m, &DerpScheme::default(), 3, &[(1, ms(100)), (2, ms(60))]),
            1
        );
    }
}
