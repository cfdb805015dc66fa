//! The stack: smoltcp's interface and sockets behind one lock, a virtual
//! device made of two packet queues, and the hooks the driver calls.

use crate::config::{Congestion, NetstackConfig};
use parking_lot::{Mutex, MutexGuard};
use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;
use tailnet_wire::{IpPacket, Protocol};
use tokio::sync::Notify;

/// Errors from creating a stack or a socket on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetstackError {
    /// The stack needs at least one address and at most one per family.
    #[error("the netstack needs one IPv4 and/or one IPv6 address, got {0:?}")]
    Addresses(Vec<IpAddr>),
    /// MTU outside what IPv6 and the buffers allow.
    #[error("MTU {0} is outside 1280..=65535")]
    Mtu(usize),
    /// The port is already bound.
    #[error("port {0} is already in use on this node")]
    PortInUse(u16),
    /// No free ephemeral port is left.
    #[error("no free local port")]
    NoPorts,
    /// The interface has no room for another address (two of the node's
    /// and two service addresses at most).
    #[error("cannot add service address {0}: the interface is full")]
    ServiceAddress(IpAddr),
}

/// Counters of the netstack, for the node's status and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetstackStats {
    /// IP packets handed to smoltcp.
    pub rx_packets: u64,
    /// IP packets smoltcp emitted.
    pub tx_packets: u64,
    /// Inbound packets dropped before smoltcp: not IP, truncated, or not
    /// addressed to this node.
    pub rx_dropped_malformed: u64,
    /// Inbound SYNs dropped because the listener's backlog was full.
    pub syn_dropped_backlog: u64,
    /// Inbound packets dropped because the inbound queue was full.
    pub rx_dropped_queue_full: u64,
    /// TCP sockets currently allocated (listening, open or closing).
    pub tcp_sockets: u64,
    /// TCP segments sent again, over every connection so far.
    pub tcp_retransmitted_segments: u64,
    /// TCP retransmission timeouts that expired.
    pub tcp_timeouts: u64,
    /// Entries into TCP fast retransmit or SACK-based loss recovery.
    pub tcp_recoveries: u64,
    /// TCP tail loss probes sent.
    pub tcp_tail_loss_probes: u64,
    /// Bytes all TCP connections' buffers hold beyond their initial sizes
    /// (autotuning; capped by `tcp_memory_budget`).
    pub tcp_buffer_extra_bytes: u64,
}

impl NetstackStats {
    fn add_tcp(&mut self, c: tcp::Counters) {
        self.tcp_retransmitted_segments += c.retransmitted_segments;
        self.tcp_timeouts += c.timeouts;
        self.tcp_recoveries += c.recoveries;
        self.tcp_tail_loss_probes += c.tail_loss_probes;
    }
}

/// Most inbound packets queued for smoltcp between two polls.
const RX_QUEUE_LIMIT: usize = 8192;
/// Most outbound packets one poll produces before the driver sends them.
/// Small bursts matter to slow receivers: with 512, a wireguard-go peer with
/// its default 208 KiB socket buffer dropped so much that uploads to it
/// stalled (`bench tunnel --paths tailnet-wireguard-go`); 64 costs our own
/// path nothing measurable.
const TX_BURST: usize = 64;
/// How many times one `process` call loops packets addressed to this
/// node back into smoltcp (a query and its answer take two).
const LOOPBACK_ROUNDS: usize = 4;
/// Ephemeral port range for outbound connections (IANA dynamic ports).
const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;

pub(crate) struct VirtualDevice {
    rx: VecDeque<Vec<u8>>,
    tx: Vec<Vec<u8>>,
    /// Spent outbound buffers, reused for the next packets.
    free: Vec<Vec<u8>>,
    mtu: usize,
}

/// Spent buffers kept for reuse.
const FREE_LIMIT: usize = 2048;

pub(crate) struct RxTok(Vec<u8>);
pub(crate) struct TxTok<'a> {
    queue: &'a mut Vec<Vec<u8>>,
    free: &'a mut Vec<Vec<u8>>,
}

impl smoltcp::phy::RxToken for RxTok {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl smoltcp::phy::TxToken for TxTok<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf.resize(len, 0);
        let r = f(&mut buf);
        self.queue.push(buf);
        r
    }
}

impl Device for VirtualDevice {
    type RxToken<'a> = RxTok;
    type TxToken<'a> = TxTok<'a>;

    fn receive(
        &mut self,
        _t: smoltcp::time::Instant,
    ) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let pkt = self.rx.pop_front()?;
        // Replies (ACKs, RSTs) to an inbound packet are never refused.
        Some((
            RxTok(pkt),
            TxTok {
                queue: &mut self.tx,
                free: &mut self.free,
            },
        ))
    }

    fn transmit(&mut self, _t: smoltcp::time::Instant) -> Option<Self::TxToken<'_>> {
        if self.tx.len() >= TX_BURST {
            return None;
        }
        Some(TxTok {
            queue: &mut self.tx,
            free: &mut self.free,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // Inbound packets were authenticated by WireGuard's AEAD, which is
        // what the Linux WireGuard driver relies on too (it marks decrypted
        // packets CHECKSUM_UNNECESSARY): verify nothing, compute on send.
        let mut ck = ChecksumCapabilities::default();
        ck.ipv4 = Checksum::Tx;
        ck.tcp = Checksum::Tx;
        ck.udp = Checksum::Tx;
        ck.icmpv4 = Checksum::Tx;
        ck.icmpv6 = Checksum::Tx;
        caps.checksum = ck;
        caps
    }
}

/// A listener's sockets: the ones still handshaking and the ones ready to
/// be accepted.
pub(crate) struct Listener {
    pub(crate) backlog: usize,
    pub(crate) pending: Vec<SocketHandle>,
    pub(crate) ready: VecDeque<SocketHandle>,
    pub(crate) waker: Option<Waker>,
    /// SYNs ingested since the last poll: each needs its own listening socket.
    pub(crate) syns_since_poll: usize,
}

pub(crate) struct State {
    iface: Interface,
    pub(crate) sockets: SocketSet<'static>,
    device: VirtualDevice,
    pub(crate) listeners: HashMap<u16, Listener>,
    /// Dropped streams finishing their close handshake.
    pub(crate) closing: Vec<SocketHandle>,
    /// Local TCP ports in use by outbound connections.
    pub(crate) tcp_ports: HashSet<u16>,
    pub(crate) udp_ports: HashSet<u16>,
    next_port: u16,
    addrs: Vec<IpAddr>,
    /// Service addresses (MagicDNS's 100.100.100.100): reachable from
    /// this node's own sockets only, never from peers.
    service_addrs: Vec<IpAddr>,
    pub(crate) stats: NetstackStats,
    pub(crate) tuner: crate::tune::Tuner,
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) work: Notify,
    pub(crate) config: NetstackConfig,
    epoch: tokio::time::Instant,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }
    /// Tells the driver that smoltcp has something to do.
    pub(crate) fn kick(&self) {
        self.work.notify_one();
    }
}

/// The userspace TCP/IP stack of one node. Cheap to clone: clones share it.
#[derive(Clone)]
pub struct Netstack {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("addresses", &self.addresses())
            .finish()
    }
}

fn smol_now(epoch: tokio::time::Instant, now: tokio::time::Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(now.saturating_duration_since(epoch).as_micros() as i64)
}

impl Netstack {
    /// A stack answering on `addrs` (one IPv4 and/or one IPv6 address).
    pub fn new(addrs: &[IpAddr], config: NetstackConfig) -> Result<Self, NetstackError> {
        let v4: Vec<_> = addrs.iter().filter(|a| a.is_ipv4()).collect();
        let v6: Vec<_> = addrs.iter().filter(|a| a.is_ipv6()).collect();
        if addrs.is_empty() || v4.len() > 1 || v6.len() > 1 {
            return Err(NetstackError::Addresses(addrs.to_vec()));
        }
        if !(1280..=65535).contains(&config.mtu) {
            return Err(NetstackError::Mtu(config.mtu));
        }
        let mut device = VirtualDevice {
            rx: VecDeque::new(),
            tx: Vec::new(),
            free: Vec::new(),
            mtu: config.mtu,
        };
        let epoch = tokio::time::Instant::now();
        let mut icfg = IfaceConfig::new(HardwareAddress::Ip);
        // Seeds TCP initial sequence numbers; also picks where the
        // ephemeral port search starts, so a restarted node does not reuse
        // the 4-tuple of a connection its peer still holds open.
        let seed = {
            let mut b = [0u8; 8];
            b.copy_from_slice(&tailnet_wire::PrivateKey::generate().as_bytes()[8..16]);
            u64::from_le_bytes(b)
        };
        icfg.random_seed = seed;
        let mut iface = Interface::new(icfg, &mut device, smol_now(epoch, epoch));
        iface.update_ip_addrs(|ips| {
            for a in addrs {
                let cidr = match a {
                    IpAddr::V4(a) => IpCidr::new(IpAddress::Ipv4(*a), 32),
                    IpAddr::V6(a) => IpCidr::new(IpAddress::Ipv6(*a), 128),
                };
                // Capacity is two, and we checked there are at most two.
                let _ = ips.push(cidr);
            }
        });
        // Everything that is not us goes out through the device; the data
        // plane picks the peer. With an IP medium the gateway is never used
        // for neighbour resolution, so our own address serves.
        for a in addrs {
            match a {
                IpAddr::V4(a) => {
                    let _ = iface.routes_mut().add_default_ipv4_route(*a);
                }
                IpAddr::V6(a) => {
                    let _ = iface.routes_mut().add_default_ipv6_route(*a);
                }
            }
        }
        let state = State {
            iface,
            sockets: SocketSet::new(Vec::new()),
            device,
            listeners: HashMap::new(),
            closing: Vec::new(),
            tcp_ports: HashSet::new(),
            udp_ports: HashSet::new(),
            next_port: EPHEMERAL.start()
                + (seed % (u64::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1)) as u16,
            addrs: addrs.to_vec(),
            service_addrs: Vec::new(),
            stats: NetstackStats::default(),
            tuner: crate::tune::Tuner::default(),
        };
        Ok(Netstack {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                work: Notify::new(),
                config,
                epoch,
            }),
        })
    }

    /// The node's addresses this stack answers on.
    pub fn addresses(&self) -> Vec<IpAddr> {
        self.shared.lock().addrs.clone()
    }

    /// Adds a service address: the node's own sockets reach it (packets
    /// to it are looped back inside the stack, never sent), sockets bound
    /// to a port accept on it, and peers cannot reach it. Used for
    /// MagicDNS at 100.100.100.100 and fd7a:115c:a1e0::53. The node's own
    /// addresses stay the source of everything else: an IPv4 service
    /// address is a /32 after them, an IPv6 one a /48, which RFC 6724's
    /// longest-prefix rule (smoltcp's source selection) never prefers.
    pub fn add_service_address(&self, ip: IpAddr) -> Result<(), NetstackError> {
        let mut st = self.shared.lock();
        if st.addrs.contains(&ip) || st.service_addrs.contains(&ip) {
            return Ok(());
        }
        let cidr = match ip {
            IpAddr::V4(a) => IpCidr::new(IpAddress::Ipv4(a), 32),
            IpAddr::V6(a) => IpCidr::new(IpAddress::Ipv6(a), 48),
        };
        let mut full = false;
        st.iface
            .update_ip_addrs(|ips| full = ips.push(cidr).is_err());
        if full {
            return Err(NetstackError::ServiceAddress(ip));
        }
        st.service_addrs.push(ip);
        Ok(())
    }

    /// The service addresses added with [`Netstack::add_service_address`].
    pub fn service_addresses(&self) -> Vec<IpAddr> {
        self.shared.lock().service_addrs.clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetstackConfig {
        &self.shared.config
    }

    /// Counters.
    pub fn stats(&self) -> NetstackStats {
        let st = self.shared.lock();
        let mut s = st.stats;
        s.tcp_buffer_extra_bytes = st.tuner.extra() as u64;
        for (_, sock) in st.sockets.iter() {
            if let smoltcp::socket::Socket::Tcp(t) = sock {
                s.tcp_sockets += 1;
                s.add_tcp(t.counters());
            }
        }
        s
    }

    /// Resolves when an application operation needs smoltcp to run.
    pub async fn wait_for_work(&self) {
        self.shared.work.notified().await
    }

    /// Feeds inbound IP packets (already decrypted and authenticated) to the
    /// stack, runs smoltcp, and appends the IP packets it wants sent to
    /// `outbound`. Returns how long the driver may sleep before calling
    /// again if nothing else happens (None: until new input).
    ///
    /// `outbound` holds at most a burst of packets; when it comes back full
    /// ([`Netstack::burst_size`]) call again after sending them. Packets
    /// left in `outbound` from the previous call are taken back for reuse.
    pub fn process(
        &self,
        now: tokio::time::Instant,
        inbound: &mut Vec<Vec<u8>>,
        outbound: &mut Vec<Vec<u8>>,
    ) -> Option<Duration> {
        let ts = smol_now(self.shared.epoch, now);
        let mut guard = self.shared.lock();
        let st = &mut *guard;
        for spent in outbound.drain(..) {
            if st.device.free.len() < FREE_LIMIT {
                st.device.free.push(spent);
            }
        }
        for pkt in inbound.drain(..) {
            st.ingest_one(pkt, &self.shared.config, false);
        }
        st.iface.poll(ts, &mut st.device, &mut st.sockets);
        st.after_poll();
        st.tuner.run(now, &mut st.sockets, &self.shared.config);
        for _ in 0..LOOPBACK_ROUNDS {
            if !st.loop_back(&self.shared.config) {
                break;
            }
            st.iface.poll(ts, &mut st.device, &mut st.sockets);
            st.after_poll();
        }
        st.stats.tx_packets += st.device.tx.len() as u64;
        std::mem::swap(outbound, &mut st.device.tx);
        if outbound.len() >= TX_BURST {
            return Some(Duration::ZERO);
        }
        st.iface
            .poll_delay(ts, &st.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    /// How many packets one [`Netstack::process`] call emits at most.
    pub fn burst_size() -> usize {
        TX_BURST
    }
}

impl State {
    /// Moves outbound packets addressed to this node (its own or a service
    /// address) back to the inbound queue. Returns whether it moved any.
    fn loop_back(&mut self, config: &NetstackConfig) -> bool {
        let is_local = |p: &[u8]| {
            IpPacket::parse(p)
                .is_ok_and(|v| self.addrs.contains(&v.dst) || self.service_addrs.contains(&v.dst))
        };
        if !self.device.tx.iter().any(|p| is_local(p)) {
            return false;
        }
        let (local, out): (Vec<_>, Vec<_>) = std::mem::take(&mut self.device.tx)
            .into_iter()
            .partition(|p| is_local(p));
        self.device.tx = out;
        for pkt in local {
            self.ingest_one(pkt, config, true);
        }
        true
    }

    /// Queues one inbound packet for smoltcp. `local`: it comes from this
    /// node's own sockets, so service addresses are allowed.
    fn ingest_one(&mut self, pkt: Vec<u8>, config: &NetstackConfig, local: bool) {
        let Ok(view) = IpPacket::parse(&pkt) else {
            self.stats.rx_dropped_malformed += 1;
            return;
        };
        let ours =
            self.addrs.contains(&view.dst) || (local && self.service_addrs.contains(&view.dst));
        if !ours {
            self.stats.rx_dropped_malformed += 1;
            return;
        }
        if self.device.rx.len() >= RX_QUEUE_LIMIT {
            self.stats.rx_dropped_queue_full += 1;
            return;
        }
        if view.protocol == Protocol::Tcp && view.is_tcp_syn() {
            if let Some((_, dport)) = view.ports() {
                if !self.prepare_listen_socket(dport, config) {
                    self.stats.syn_dropped_backlog += 1;
                    return;
                }
            }
        }
        self.stats.rx_packets += 1;
        self.device.rx.push_back(pkt);
    }

    /// smoltcp has no listen-on-any socket and a listening socket turns into
    /// the connection on SYN, so each inbound SYN to a listened port needs a
    /// socket in Listen state of its own. Returns false when the backlog is
    /// full (the SYN is dropped and the peer retries, as Linux does).
    fn prepare_listen_socket(&mut self, port: u16, config: &NetstackConfig) -> bool {
        let Some(l) = self.listeners.get_mut(&port) else {
            return true; // smoltcp answers with RST
        };
        let listening = l
            .pending
            .iter()
            .filter(|h| self.sockets.get::<tcp::Socket>(**h).state() == tcp::State::Listen)
            .count();
        if listening > l.syns_since_poll {
            l.syns_since_poll += 1;
            return true;
        }
        if l.pending.len() + l.ready.len() >= l.backlog {
            return false;
        }
        let mut sock = new_tcp_socket(config);
        if sock.listen(port).is_err() {
            return false;
        }
        let h = self.sockets.add(sock);
        l.pending.push(h);
        l.syns_since_poll += 1;
        true
    }

    fn after_poll(&mut self) {
        let sockets = &mut self.sockets;
        for l in self.listeners.values_mut() {
            l.syns_since_poll = 0;
            let mut i = 0;
            let mut became_ready = false;
            while i < l.pending.len() {
                let h = l.pending[i];
                match sockets.get::<tcp::Socket>(h).state() {
                    tcp::State::Listen | tcp::State::SynReceived => i += 1,
                    tcp::State::Closed | tcp::State::TimeWait => {
                        // Reset during the handshake.
                        self.stats.add_tcp(sockets.get::<tcp::Socket>(h).counters());
                        self.tuner.forget(h);
                        sockets.remove(h);
                        l.pending.swap_remove(i);
                    }
                    _ => {
                        l.ready.push_back(h);
                        l.pending.swap_remove(i);
                        became_ready = true;
                    }
                }
            }
            if became_ready {
                if let Some(w) = l.waker.take() {
                    w.wake();
                }
            }
        }
        let mut i = 0;
        while i < self.closing.len() {
            let h = self.closing[i];
            let state = self.sockets.get::<tcp::Socket>(h).state();
            if matches!(state, tcp::State::Closed | tcp::State::TimeWait) {
                self.stats
                    .add_tcp(self.sockets.get::<tcp::Socket>(h).counters());
                self.tuner.forget(h);
                self.sockets.remove(h);
                self.closing.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    pub(crate) fn iface_context(&mut self) -> &mut smoltcp::iface::Context {
        self.iface.context()
    }

    pub(crate) fn alloc_port(&mut self) -> Result<u16, NetstackError> {
        let span = usize::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.tcp_ports.contains(&p) && !self.listeners.contains_key(&p) {
                self.tcp_ports.insert(p);
                return Ok(p);
            }
        }
        Err(NetstackError::NoPorts)
    }
}

/// A zeroed buffer for a socket. Large ones must come from fresh
/// anonymous mappings, whose pages the kernel zeroes lazily as they are
/// touched: a connection that moves a few KiB then costs a few pages, not
/// its full 4 + 2 MiB. glibc's malloc starts that way but raises its mmap
/// threshold the first time such a chunk is freed, after which every new
/// socket's buffers come from the heap and calloc zeroes all 6 MiB at
/// once (1.3-14 ms per connection, seen as a 14-60x slower webhook fan-out
/// in `bench invalidation`). Pinning the threshold at its initial value
/// turns that dynamic raise off, once per process.
pub(crate) fn socket_buffer(len: usize) -> Vec<u8> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static PIN: std::sync::Once = std::sync::Once::new();
        PIN.call_once(|| {
            // SAFETY: mallopt only changes an allocator tunable; it is
            // thread-safe in glibc.
            #[allow(unsafe_code)]
            let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
            if ok != 1 {
                tracing::debug!(
                    "mallopt(M_MMAP_THRESHOLD) refused; socket buffers may be zeroed eagerly"
                );
            }
        });
    }
    vec![0u8; len]
}

pub(crate) fn new_tcp_socket(config: &NetstackConfig) -> tcp::Socket<'static> {
    let rx = tcp::SocketBuffer::new(socket_buffer(config.tcp_rx_buffer));
    let tx = tcp::SocketBuffer::new(socket_buffer(config.tcp_tx_buffer));
    let mut s = tcp::Socket::new(rx, tx);
    s.set_nagle_enabled(config.nagle);
    s.set_ack_delay(config.ack_delay.map(to_smol_duration));
    s.set_timeout(config.tcp_timeout.map(to_smol_duration));
    s.set_keep_alive(config.tcp_keepalive.map(to_smol_duration));
    s.set_min_rto(to_smol_duration(config.tcp_min_rto));
    s.set_pacing(config.tcp_pacing);
    s.set_max_recv_capacity(config.tcp_buffer_max.max(config.tcp_rx_buffer));
    s.set_congestion_control(match config.congestion {
        Congestion::None => tcp::CongestionControl::None,
        Congestion::Reno => tcp::CongestionControl::Reno,
        Congestion::Cubic => tcp::CongestionControl::Cubic,
        Congestion::Bbr => tcp::CongestionControl::Bbr,
    });
    s
}

pub(crate) fn from_smol_duration(d: smoltcp::time::Duration) -> Duration {
    Duration::from_micros(d.total_micros())
}

pub(crate) fn to_smol_duration(d: Duration) -> smoltcp::time::Duration {
    smoltcp::time::Duration::from_micros(d.as_micros() as u64)
}

pub(crate) fn to_std_addr(a: IpAddress) -> IpAddr {
    match a {
        IpAddress::Ipv4(a) => IpAddr::V4(a),
        IpAddress::Ipv6(a) => IpAddr::V6(a),
    }
}

pub(crate) fn to_smol_addr(a: IpAddr) -> IpAddress {
    match a {
        IpAddr::V4(a) => IpAddress::Ipv4(a),
        IpAddr::V6(a) => IpAddress::Ipv6(a),
    }
}

impl State {
    /// This node's address of the same family as `remote`.
    pub(crate) fn addr_for(&self, remote: IpAddr) -> Option<IpAddr> {
        self.addrs
            .iter()
            .copied()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
    }
}
