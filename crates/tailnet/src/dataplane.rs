//! The data plane's shell: one tokio task that feeds the sans-IO engine
//! (`tailnet_engine::Engine`: peers, WireGuard, routing, filter, disco,
//! paths) from the UDP socket (batched receive with GRO, GSO send), the
//! relay link and the netstack, and carries out what it decides.
//!
//! The loop: wait for a command, a relay batch, a readable socket, netstack
//! work or the engine's timer; hand it to the engine with `now`; send what
//! the engine queued (UDP in GSO runs, relay packets on the link); run the
//! netstack over the engine's decrypted packets and hand its output back
//! to the engine. Receiving drains the socket in bounded rounds and lets
//! the netstack run every [`INBOUND_BATCH`] packets, so a bulk transfer is
//! ACKed per batch.

use crate::config::PeerConfig;
use crate::stats::PeerCounters;
use crate::udp::Udp;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tailnet_engine::{Engine, Event, RequestId};
use tailnet_netstack::Netstack;
use tailnet_wire::filter::Rules;
use tailnet_wire::PublicKey;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub(crate) use tailnet_engine::{PingError, Pong};

/// Decrypted packets gathered before the netstack gets a turn.
const INBOUND_BATCH: usize = 256;
/// Receive batches handled before other work gets a turn.
const RECV_ROUNDS: usize = 64;

/// A relay (DERP) connection as the data plane sees it: a channel pair
/// carrying `(peer node key, packet)`.
///
/// What the node puts on `outbound` is for the peer with that node key
/// (the relay client sends it, e.g. `DerpHandle::send(key, data)`); what
/// arrives on `inbound` came from the peer with that node key (a DERP
/// `RecvPacket`). Packets are whole WireGuard or disco datagrams. The node
/// never waits for the relay: when `outbound` is full the packet is
/// dropped and counted (`send_errors`).
///
/// Inbound packets come in batches: what one read from a relay connection
/// brought. The data plane handles a batch before its TCP stack answers,
/// so a bulk transfer gets one ACK per batch rather than one per packet or
/// two (the batching GRO gives a kernel).
#[derive(Debug)]
pub struct RelayLink {
    /// Packets to peers, by node key.
    pub outbound: mpsc::Sender<(PublicKey, Vec<u8>)>,
    /// Packets from peers, by node key, in batches.
    pub inbound: mpsc::Receiver<RelayBatch>,
}

/// Packets relayed to us, each with its sender's node key.
pub type RelayBatch = Vec<(PublicKey, Vec<u8>)>;

pub(crate) enum Command {
    SetPeers(Vec<PeerConfig>),
    /// Attach (or detach) the relay.
    SetRelay(Option<RelayLink>),
    /// Our UDP endpoints, which CallMeMaybe tells peers.
    SetEndpoints(Vec<SocketAddr>),
    /// New packet-filter rules (`None`: accept everything). Flows already
    /// recorded are kept.
    SetFilter(Option<Arc<Rules>>),
    /// A disco ping to the peer routing this tailnet address (`tailscale
    /// ping`); the first pong answers `reply`.
    Ping {
        ip: IpAddr,
        reply: oneshot::Sender<Result<Pong, PingError>>,
    },
    /// A STUN binding request to `server` from our socket; the mapped
    /// address in its response answers `reply`.
    Stun {
        server: SocketAddr,
        reply: oneshot::Sender<SocketAddr>,
    },
    Shutdown,
}

/// Peer counters shared with the node handle.
pub(crate) type PeerTable = Arc<RwLock<Vec<Arc<PeerCounters>>>>;

/// The engine's clock: tokio's (so a paused test clock drives it too).
fn now() -> std::time::Instant {
    Instant::now().into_std()
}

pub(crate) struct DataPlane {
    udp: Udp,
    relay: Option<RelayLink>,
    netstack: Netstack,
    engine: Engine,
    commands: mpsc::Receiver<Command>,
    peer_table: PeerTable,
    /// Callers waiting for a pong or a STUN response, by request.
    pings: HashMap<RequestId, oneshot::Sender<Result<Pong, PingError>>>,
    stuns: HashMap<RequestId, oneshot::Sender<SocketAddr>>,
    /// Packets the netstack emitted; handed back to it for reuse.
    outbound: Vec<Vec<u8>>,
    netstack_deadline: Option<Instant>,
}

impl DataPlane {
    pub(crate) fn new(
        udp: Udp,
        netstack: Netstack,
        engine: Engine,
        peers: Vec<PeerConfig>,
        commands: mpsc::Receiver<Command>,
        peer_table: PeerTable,
    ) -> DataPlane {
        let mut dp = DataPlane {
            udp,
            relay: None,
            netstack,
            engine,
            commands,
            peer_table,
            pings: HashMap::new(),
            stuns: HashMap::new(),
            outbound: Vec::new(),
            netstack_deadline: Some(Instant::now()),
        };
        dp.set_peers(peers);
        dp
    }

    /// Runs until shut down or the node handle is dropped.
    pub(crate) async fn run(mut self) {
        self.flush().await;
        loop {
            let timer = self
                .engine
                .poll_timeout()
                .map(Instant::from_std)
                .unwrap_or_else(|| Instant::now() + tailnet_engine::TICK);
            let wake = match self.netstack_deadline {
                Some(d) => d.min(timer),
                None => timer,
            };
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetPeers(p)) => self.set_peers(p),
                    Some(Command::SetFilter(rules)) => self.engine.set_filter(rules),
                    Some(Command::SetRelay(link)) => {
                        self.engine.set_relay(now(), link.is_some());
                        self.relay = link;
                    }
                    Some(Command::SetEndpoints(eps)) => self.engine.set_endpoints(eps),
                    Some(Command::Ping { ip, reply }) => {
                        match self.engine.ping(now(), ip) {
                            Ok(id) => {
                                self.pings.insert(id, reply);
                            }
                            Err(e) => {
                                let _ = reply.send(Err(e));
                            }
                        }
                        self.flush().await;
                    }
                    Some(Command::Stun { server, reply }) => {
                        let id = self.engine.stun(now(), server);
                        self.stuns.insert(id, reply);
                        self.flush().await;
                    }
                    Some(Command::Shutdown) | None => break,
                },
                batch = recv_relay(&mut self.relay) => match batch {
                    Some(batch) => {
                        let t = now();
                        let mut n = batch.len();
                        for (src, data) in batch {
                            self.engine.handle_derp(t, src, &data);
                        }
                        // Drain what else is queued, a bounded batch.
                        while n < INBOUND_BATCH {
                            let Some(link) = self.relay.as_mut() else { break };
                            match link.inbound.try_recv() {
                                Ok(batch) => {
                                    n += batch.len();
                                    for (src, data) in batch {
                                        self.engine.handle_derp(t, src, &data);
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                        self.flush().await;
                    }
                    None => {
                        // The relay stopped: the node is shutting down or
                        // moved home (a new link follows). Its connection
                        // problems are the DERP client's to report.
                        tracing::info!("relay link closed");
                        self.relay = None;
                        self.engine.set_relay(now(), false);
                    }
                },
                r = self.udp.readable() => {
                    if let Err(e) = r {
                        tracing::error!(error = %e, "UDP socket failed; data plane stops");
                        break;
                    }
                    self.receive().await;
                }
                _ = self.netstack.wait_for_work() => {}
                _ = tokio::time::sleep_until(wake) => {}
            }
            if Instant::now() >= timer {
                self.engine.handle_timeout(now());
                self.pings.retain(|_, tx| !tx.is_closed());
                self.stuns.retain(|_, tx| !tx.is_closed());
            }
            self.events();
            self.pump().await;
        }
        self.flush().await;
        tracing::debug!("data plane stopped");
    }

    /// Answers the callers the engine's events are for.
    fn events(&mut self) {
        while let Some(e) = self.engine.poll_event() {
            match e {
                Event::Pong { id, pong } => {
                    if let Some(tx) = self.pings.remove(&id) {
                        let _ = tx.send(Ok(pong));
                    }
                }
                Event::PingExpired(id) => {
                    self.pings.remove(&id);
                }
                Event::StunMapped { id, addr } => {
                    if let Some(tx) = self.stuns.remove(&id) {
                        let _ = tx.send(addr);
                    }
                }
                Event::StunExpired(id) => {
                    self.stuns.remove(&id);
                }
            }
        }
    }

    async fn flush(&mut self) {
        let mut failed = 0u64;
        for (dst, data) in self.engine.take_derp() {
            let sent = match &self.relay {
                Some(link) => link.outbound.try_send((dst, data)).is_ok(),
                None => false,
            };
            if !sent {
                failed += 1;
            }
        }
        let out = self.engine.udp_out();
        if !out.is_empty() {
            failed += self.udp.send_all(out).await;
        }
        if failed > 0 {
            self.engine.drops().send_errors.fetch_add(failed, Relaxed);
        }
    }

    /// Applies a new peer list: new peers get a tunnel, removed ones go,
    /// kept ones keep their sessions (flows through them are untouched)
    /// unless they restarted.
    fn set_peers(&mut self, peers: Vec<PeerConfig>) {
        self.engine.handle_map(now(), peers);
        *self.peer_table.write() = self.engine.peer_counters();
    }

    /// Drains the socket in batches, decrypting in place and handing
    /// packets to the netstack every [`INBOUND_BATCH`] packets.
    async fn receive(&mut self) {
        for _ in 0..RECV_ROUNDS {
            let t = now();
            let engine = &mut self.engine;
            match self
                .udp
                .try_recv(|from, data| engine.handle_datagram(t, from, data))
            {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "UDP receive error");
                    break;
                }
            }
            self.flush().await;
            if self.engine.to_netstack().len() >= INBOUND_BATCH {
                self.pump().await;
            }
        }
    }

    /// Runs the netstack until it has nothing more to send right now, and
    /// encrypts and sends what it produced.
    async fn pump(&mut self) {
        loop {
            let now = Instant::now();
            let delay = self
                .netstack
                .process(now, self.engine.to_netstack(), &mut self.outbound);
            self.engine
                .handle_app_packets(now.into_std(), &self.outbound);
            self.flush().await;
            match delay {
                Some(d) if d.is_zero() => continue,
                Some(d) => {
                    self.netstack_deadline = Some(now + d);
                    break;
                }
                None => {
                    self.netstack_deadline = None;
                    break;
                }
            }
        }
    }
}

/// The next packet from the relay; never ready without one.
async fn recv_relay(relay: &mut Option<RelayLink>) -> Option<RelayBatch> {
    match relay {
        Some(link) => link.inbound.recv().await,
        None => std::future::pending().await,
    }
}
