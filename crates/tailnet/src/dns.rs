//! MagicDNS in the node: the tokio shell around `tailnet_dns::Zone`.
//!
//! A node that joined through control answers DNS at 100.100.100.100:53
//! and `[fd7a:115c:a1e0::53]:53` inside its netstack (UDP and TCP), for its
//! own sockets only, and optionally on an OS address such as
//! `127.0.0.1:5353` ([`NodeBuilder::dns_listen`](crate::NodeBuilder::dns_listen))
//! so co-located processes and `dig` can ask it. The zone is rebuilt on
//! every netmap. Names outside the tailnet are forwarded to the DNS
//! config's resolvers over the underlay (OS UDP sockets) in tasks of
//! their own, so a slow or dead upstream never delays a tailnet answer.
//!
//! [`Node::resolve`] asks the responder through the virtual interface,
//! like any application socket would.

use crate::node::Node;
use parking_lot::RwLock;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tailnet_dns::{Answer, DnsOptions, Forward, RecordType, ResponseCode, Transport, Zone};
use tailnet_netstack::{TcpListener, TcpStream, UdpSocket};
use tailnet_wire::control::Netmap;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;

pub use tailnet_dns::{
    build_query, parse_response, ClientError, ParsedResponse, QUAD_100_V4, QUAD_100_V6,
};

/// How long one upstream may take before the next is tried.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(2);
/// Most forwarded queries in flight; more are answered SERVFAIL at once.
const MAX_FORWARDS: usize = 256;
/// A TCP client silent this long is disconnected.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// DNS-over-TCP connections served at once, and from one source. A
/// connection that stops reading its answers is closed after
/// [`TCP_IDLE`] (the write side of `IdleIo`).
const TCP_MAX_CONNECTIONS: usize = 256;
const TCP_MAX_CONNECTIONS_PER_IP: usize = 32;
/// Largest UDP response on an OS socket (loopback carries it whole; the
/// client's EDNS0 size still bounds it).
const OS_UDP_MAX: u16 = 4096;
/// How long [`Node::resolve`] waits for one attempt.
const RESOLVE_ATTEMPT: Duration = Duration::from_secs(2);
/// Attempts of [`Node::resolve`] over UDP before giving up.
const RESOLVE_ATTEMPTS: u32 = 3;

/// Counters of the responder.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    queries: AtomicU64,
    local: AtomicU64,
    forwarded: AtomicU64,
    forward_failed: AtomicU64,
    truncated: AtomicU64,
    malformed: AtomicU64,
    refused: AtomicU64,
    not_ours: AtomicU64,
}

/// A snapshot of the responder's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct DnsStats {
    /// Queries received (all transports).
    pub queries: u64,
    /// Answered from the zone (including NXDOMAIN and FORMERR).
    pub answered_locally: u64,
    /// Forwarded upstream.
    pub forwarded: u64,
    /// Forwards no upstream answered in time (answered SERVFAIL).
    pub forward_failed: u64,
    /// UDP answers sent truncated (TC).
    pub truncated: u64,
    /// Malformed queries: dropped (no header, or a response) or FORMERR.
    pub malformed: u64,
    /// Answered REFUSED (outside the tailnet, no upstream).
    pub refused: u64,
    /// Datagrams and connections to port 53 of the node's own address
    /// rather than a service address (ignored: peers cannot use it).
    pub not_ours: u64,
}

/// What the responder tasks share.
pub(crate) struct Shared {
    zone: RwLock<Arc<Zone>>,
    counters: Counters,
    forwards: Semaphore,
}

impl Shared {
    fn zone(&self) -> Arc<Zone> {
        self.zone.read().clone()
    }

    /// Answers a query from the zone, counting; a query for upstream
    /// comes back as [`Step::Forward`] for the caller to run where it
    /// blocks nothing else.
    fn step(&self, query: &[u8], transport: Transport) -> Step {
        let c = &self.counters;
        c.queries.fetch_add(1, Ordering::Relaxed);
        match self.zone().answer(query, transport) {
            Answer::Response(r) => {
                c.local.fetch_add(1, Ordering::Relaxed);
                if r.truncated {
                    c.truncated.fetch_add(1, Ordering::Relaxed);
                }
                match r.rcode {
                    ResponseCode::FormErr => {
                        c.malformed.fetch_add(1, Ordering::Relaxed);
                    }
                    ResponseCode::Refused => {
                        c.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
                Step::Reply(r.bytes)
            }
            Answer::Drop => {
                c.malformed.fetch_add(1, Ordering::Relaxed);
                Step::Nothing
            }
            Answer::Forward(f) => {
                c.forwarded.fetch_add(1, Ordering::Relaxed);
                Step::Forward(f)
            }
        }
    }

    /// Runs a forward: the upstream's reply fitted to the transport, or
    /// SERVFAIL when no upstream answered (or too many are in flight).
    async fn forward(&self, f: &Forward, transport: Transport) -> Option<Vec<u8>> {
        let reply = match self.forwards.try_acquire() {
            Ok(_permit) => forward(f).await,
            Err(_) => None,
        };
        let reply = match reply {
            Some(r) => r,
            None => {
                self.counters.forward_failed.fetch_add(1, Ordering::Relaxed);
                Zone::servfail(&f.query)?
            }
        };
        match transport {
            Transport::Udp { max } => Zone::fit_udp(&f.query, &reply, max),
            Transport::Tcp => Some(reply),
        }
    }

    /// Both steps in one, for stream transports.
    async fn respond(&self, query: &[u8], transport: Transport) -> Option<Vec<u8>> {
        match self.step(query, transport) {
            Step::Reply(b) => Some(b),
            Step::Nothing => None,
            Step::Forward(f) => self.forward(&f, transport).await,
        }
    }

    fn stats(&self) -> DnsStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DnsStats {
            queries: g(&c.queries),
            answered_locally: g(&c.local),
            forwarded: g(&c.forwarded),
            forward_failed: g(&c.forward_failed),
            truncated: g(&c.truncated),
            malformed: g(&c.malformed),
            refused: g(&c.refused),
            not_ours: g(&c.not_ours),
        }
    }
}

enum Step {
    Reply(Vec<u8>),
    Nothing,
    Forward(Forward),
}

/// Sends `f.query` to each upstream in turn over the underlay; the first
/// reply with the query's ID wins.
async fn forward(f: &Forward) -> Option<Vec<u8>> {
    for up in &f.upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let attempt = async {
            let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
            sock.connect(up).await.ok()?;
            sock.send(&f.query).await.ok()?;
            let mut buf = vec![0u8; 65535];
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == f.id && buf[2] & 0x80 != 0 {
                    buf.truncate(n);
                    return Some(buf);
                }
            }
        };
        match tokio::time::timeout(FORWARD_TIMEOUT, attempt).await {
            Ok(Some(reply)) => return Some(reply),
            Ok(None) => tracing::debug!(upstream = %up, "DNS upstream failed"),
            Err(_) => tracing::debug!(upstream = %up, "DNS upstream timed out"),
        }
    }
    None
}

/// The running responder of a node.
pub(crate) struct DnsServer {
    shared: Arc<Shared>,
    /// The OS address it also listens on, with the real port.
    pub(crate) listen: Option<SocketAddr>,
}

impl DnsServer {
    pub(crate) fn stats(&self) -> DnsStats {
        self.shared.stats()
    }
}

/// Starts the responder on `node`: service addresses in the netstack, the
/// zone task following `netmap`, the netstack UDP/TCP servers and, with
/// `listen`, the OS servers. Returns the server and its tasks.
pub(crate) async fn start(
    node: &Node,
    mut netmap: watch::Receiver<Arc<Netmap>>,
    options: DnsOptions,
    listen: Option<SocketAddr>,
) -> io::Result<(DnsServer, Vec<JoinHandle<()>>)> {
    let zone = Zone::from_netmap(&netmap.borrow_and_update(), &options);
    let shared = Arc::new(Shared {
        zone: RwLock::new(Arc::new(zone)),
        counters: Counters::default(),
        forwards: Semaphore::new(MAX_FORWARDS),
    });
    let mut tasks = Vec::new();

    // OS listeners first: a bad --dns-listen fails `up`.
    let mut bound = None;
    if let Some(addr) = listen {
        let udp = tokio::net::UdpSocket::bind(addr).await?;
        let local = udp.local_addr()?;
        // TCP on the same port (the UDP bind picked it when addr had 0).
        let tcp = tokio::net::TcpListener::bind(local).await?;
        tasks.push(tokio::spawn(os_udp_loop(shared.clone(), Arc::new(udp))));
        tasks.push(tokio::spawn(os_tcp_loop(shared.clone(), tcp)));
        tracing::info!(%local, "MagicDNS listening on the OS (UDP and TCP)");
        bound = Some(local);
    }

    let ns = node.netstack().clone();
    let mut service = Vec::new();
    for ip in [IpAddr::V4(QUAD_100_V4), IpAddr::V6(QUAD_100_V6)] {
        match ns.add_service_address(ip) {
            Ok(()) => service.push(ip),
            Err(e) => tracing::warn!(error = %e, "MagicDNS: no service address"),
        }
    }
    match UdpSocket::bind(&ns, 53) {
        Ok(sock) => tasks.push(tokio::spawn(netstack_udp_loop(
            shared.clone(),
            Arc::new(sock),
            service.clone(),
        ))),
        Err(e) => tracing::warn!(error = %e, "MagicDNS: cannot bind UDP 53 in the netstack"),
    }
    match TcpListener::bind(&ns, 53) {
        Ok(l) => tasks.push(tokio::spawn(netstack_tcp_loop(
            shared.clone(),
            l,
            service.clone(),
        ))),
        Err(e) => tracing::warn!(error = %e, "MagicDNS: cannot listen on TCP 53 in the netstack"),
    }

    let zshared = shared.clone();
    tasks.push(tokio::spawn(async move {
        while netmap.changed().await.is_ok() {
            let nm = netmap.borrow_and_update().clone();
            let zone = Zone::from_netmap(&nm, &options);
            *zshared.zone.write() = Arc::new(zone);
        }
    }));

    Ok((
        DnsServer {
            shared,
            listen: bound,
        },
        tasks,
    ))
}

async fn netstack_udp_loop(shared: Arc<Shared>, sock: Arc<UdpSocket>, service: Vec<IpAddr>) {
    let transport = Transport::Udp {
        max: tailnet_dns::NETSTACK_UDP_MAX,
    };
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from, to) = match sock.recv_from_to(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "MagicDNS netstack UDP receive failed");
                continue;
            }
        };
        let Some(local) = to.filter(|a| service.contains(a)) else {
            shared.counters.not_ours.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match shared.step(&buf[..n], transport) {
            Step::Nothing => {}
            Step::Reply(reply) => {
                if let Err(e) = sock.send_from(&reply, from, local).await {
                    tracing::debug!(error = %e, "MagicDNS netstack UDP send failed");
                }
            }
            Step::Forward(f) => {
                let (shared, sock) = (shared.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Some(reply) = shared.forward(&f, transport).await {
                        let _ = sock.send_from(&reply, from, local).await;
                    }
                });
            }
        }
    }
}

async fn os_udp_loop(shared: Arc<Shared>, sock: Arc<tokio::net::UdpSocket>) {
    let transport = Transport::Udp { max: OS_UDP_MAX };
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors of earlier sends surface here; go on.
                tracing::debug!(error = %e, "MagicDNS UDP receive failed");
                continue;
            }
        };
        match shared.step(&buf[..n], transport) {
            Step::Nothing => {}
            Step::Reply(reply) => {
                let _ = sock.send_to(&reply, from).await;
            }
            Step::Forward(f) => {
                let (shared, sock) = (shared.clone(), sock.clone());
                tokio::spawn(async move {
                    if let Some(reply) = shared.forward(&f, transport).await {
                        let _ = sock.send_to(&reply, from).await;
                    }
                });
            }
        }
    }
}

async fn netstack_tcp_loop(shared: Arc<Shared>, listener: TcpListener, service: Vec<IpAddr>) {
    let gate = tailnet_listen::ConnGate::new(TCP_MAX_CONNECTIONS, TCP_MAX_CONNECTIONS_PER_IP);
    let mut errors = tailnet_listen::AcceptErrors::new("MagicDNS netstack TCP");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(r) => {
                errors.success();
                r
            }
            Err(e) => {
                errors.failed(&e).await;
                continue;
            }
        };
        if !service.contains(&stream.local_addr().ip()) {
            shared.counters.not_ours.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(permit) = gate.admit(Some(peer.ip())) else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_tcp(shared, tailnet_listen::IdleIo::new(stream, TCP_IDLE)).await
        });
    }
}

async fn os_tcp_loop(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let gate = tailnet_listen::ConnGate::new(TCP_MAX_CONNECTIONS, TCP_MAX_CONNECTIONS_PER_IP);
    let mut errors = tailnet_listen::AcceptErrors::new("MagicDNS TCP");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                errors.success();
                let Ok(permit) = gate.admit(Some(peer.ip())) else {
                    continue;
                };
                let shared = shared.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    serve_tcp(shared, tailnet_listen::IdleIo::new(stream, TCP_IDLE)).await
                });
            }
            Err(e) => errors.failed(&e).await,
        }
    }
}

/// DNS over a stream: 2-byte big-endian length, message; in order, until
/// the client closes or is idle for [`TCP_IDLE`].
async fn serve_tcp<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, mut stream: S) {
    let mut buf = vec![0u8; 65535];
    loop {
        let read = async {
            let len = usize::from(stream.read_u16().await?);
            stream.read_exact(&mut buf[..len]).await?;
            Ok::<_, io::Error>(len)
        };
        let len = match tokio::time::timeout(TCP_IDLE, read).await {
            Ok(Ok(len)) => len,
            _ => return,
        };
        let Some(reply) = shared.respond(&buf[..len], Transport::Tcp).await else {
            // Malformed: nothing sensible to say on this stream.
            return;
        };
        let Ok(rlen) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(reply.len() + 2);
        out.extend_from_slice(&rlen.to_be_bytes());
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() || stream.flush().await.is_err() {
            return;
        }
    }
}

/// Why [`Node::resolve`] found no address.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The node did not join through control, so it has no MagicDNS.
    #[error("this node has no MagicDNS (it did not join through control)")]
    NoMagicDns,
    /// The name is not a valid DNS name.
    #[error(transparent)]
    Name(#[from] tailnet_dns::ClientError),
    /// NXDOMAIN.
    #[error("{0}: no such name")]
    NxDomain(String),
    /// The name exists but has no A or AAAA records.
    #[error("{0}: no addresses")]
    NoAddresses(String),
    /// The responder answered with another error (SERVFAIL, REFUSED…).
    #[error("{name}: the resolver answered {rcode}")]
    Server {
        /// The name asked.
        name: String,
        /// The response code, as text.
        rcode: String,
    },
    /// No answer in time.
    #[error("{0}: no answer from MagicDNS")]
    Timeout(String),
    /// The netstack refused a socket.
    #[error("cannot query MagicDNS: {0}")]
    Io(#[from] io::Error),
}

fn random_id() -> u16 {
    let mut b = [0u8; 2];
    if getrandom::fill(&mut b).is_err() {
        b = [0x4d, 0x44];
    }
    u16::from_be_bytes(b)
}

impl Node {
    /// The address the node's sockets reach MagicDNS at: 100.100.100.100
    /// when the node has an IPv4 address, else fd7a:115c:a1e0::53.
    pub fn magic_dns_addr(&self) -> SocketAddr {
        if self.ipv4().is_some() {
            SocketAddr::from((QUAD_100_V4, 53))
        } else {
            SocketAddr::from((QUAD_100_V6, 53))
        }
    }

    /// Resolves `name` through MagicDNS over the node's virtual interface
    /// (a UDP socket of the node's netstack asking 100.100.100.100), with
    /// no system resolver involved: tailnet names, service records
    /// (`inferadb-control.eu-west-1.ts.net` gives every online pod) and,
    /// through the DNS config's resolvers, outside names. IPv4 addresses
    /// come first, then IPv6.
    pub async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let (a, aaaa) = tokio::join!(
            self.dns_query(name, RecordType::A),
            self.dns_query(name, RecordType::AAAA)
        );
        let (a, aaaa) = (a?, aaaa?);
        if a.rcode == ResponseCode::NXDomain || aaaa.rcode == ResponseCode::NXDomain {
            return Err(ResolveError::NxDomain(name.to_string()));
        }
        for r in [&a, &aaaa] {
            if r.rcode != ResponseCode::NoError {
                return Err(ResolveError::Server {
                    name: name.to_string(),
                    rcode: r.rcode.to_string(),
                });
            }
        }
        let mut out = a.addresses;
        out.extend(aaaa.addresses);
        if out.is_empty() {
            return Err(ResolveError::NoAddresses(name.to_string()));
        }
        Ok(out)
    }

    /// One query to MagicDNS over the virtual interface, by UDP, retried
    /// over TCP when the answer comes back truncated.
    pub async fn dns_query(
        &self,
        name: &str,
        qtype: RecordType,
    ) -> Result<ParsedResponse, ResolveError> {
        if self.watch_netmap().is_none() {
            return Err(ResolveError::NoMagicDns);
        }
        let server = self.magic_dns_addr();
        let id = random_id();
        let query = tailnet_dns::build_query(name, qtype, id)?;
        let sock = UdpSocket::bind(self.netstack(), 0).map_err(io::Error::other)?;
        let mut buf = vec![0u8; 65535];
        for _ in 0..RESOLVE_ATTEMPTS {
            sock.send_to(&query, server).await?;
            let wait = async {
                loop {
                    let (n, from) = sock.recv_from(&mut buf).await?;
                    if from != server {
                        continue;
                    }
                    if let Ok(r) = tailnet_dns::parse_response(&buf[..n], id) {
                        return Ok::<_, io::Error>(r);
                    }
                }
            };
            match tokio::time::timeout(RESOLVE_ATTEMPT, wait).await {
                Ok(Ok(r)) if r.truncated => return self.dns_query_tcp(&query, id, server).await,
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => continue,
            }
        }
        Err(ResolveError::Timeout(name.to_string()))
    }

    async fn dns_query_tcp(
        &self,
        query: &[u8],
        id: u16,
        server: SocketAddr,
    ) -> Result<ParsedResponse, ResolveError> {
        let exchange = async {
            let mut s = TcpStream::connect(self.netstack(), server).await?;
            let len = u16::try_from(query.len()).map_err(io::Error::other)?;
            let mut out = len.to_be_bytes().to_vec();
            out.extend_from_slice(query);
            s.write_all(&out).await?;
            let n = usize::from(s.read_u16().await?);
            let mut buf = vec![0u8; n];
            s.read_exact(&mut buf).await?;
            Ok::<_, io::Error>(buf)
        };
        let bytes = tokio::time::timeout(RESOLVE_ATTEMPT * RESOLVE_ATTEMPTS, exchange)
            .await
            .map_err(|_| ResolveError::Timeout("TCP".into()))??;
        Ok(tailnet_dns::parse_response(&bytes, id)?)
    }

    /// The responder's counters (`None` when MagicDNS is not running).
    pub fn dns_stats(&self) -> Option<DnsStats> {
        self.dns_server::<DnsServer>().map(|s| s.stats())
    }

    /// The OS address MagicDNS listens on (`NodeBuilder::dns_listen`),
    /// with the real port.
    pub fn dns_listen_addr(&self) -> Option<SocketAddr> {
        self.dns_server::<DnsServer>().and_then(|s| s.listen)
    }
}
