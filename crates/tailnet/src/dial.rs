//! Dialing by name: [`Node::dial`] and [`Node::dial_udp`] take
//! `"host:port"` as Go's `tsnet.Server.Dial` does, where the host is a
//! MagicDNS name (FQDN or short name), a service name, or a tailnet
//! address (IPv4, or IPv6 in brackets), and say which step failed when
//! they fail ([`DialError`]).

use crate::dns::ResolveError;
use crate::node::Node;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tailnet_netstack::{TcpStream, UdpSocket};

/// How long [`Node::dial`] waits for name resolution and the TCP
/// handshake together.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why [`Node::dial`] or [`Node::dial_udp`] did not connect; each variant
/// names the step that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DialError {
    /// The address is not `host:port` (IPv6 addresses go in brackets:
    /// `[fd7a:115c:a1e0::1]:80`).
    #[error("{0:?} is not host:port (IPv6 addresses go in brackets)")]
    BadAddress(String),
    /// MagicDNS does not know the name: NXDOMAIN, no address records, or
    /// a name outside the tailnet with no upstream resolver to ask
    /// (REFUSED).
    #[error("unknown name {name}: {source}")]
    UnknownName {
        /// The host asked for.
        name: String,
        /// What the resolver said.
        #[source]
        source: ResolveError,
    },
    /// Name resolution failed for another reason (no MagicDNS on a
    /// statically configured node, resolver timeout, SERVFAIL…).
    #[error("cannot resolve {name}: {source}")]
    Resolve {
        /// The host asked for.
        name: String,
        /// What went wrong.
        #[source]
        source: ResolveError,
    },
    /// The node has no address of the target's family (an IPv6 target
    /// from a node with only an IPv4 address, or the reverse).
    #[error("this node has no address of {0}'s family")]
    AddressFamily(SocketAddr),
    /// No peer's allowed IPs cover the address: it is not in the netmap
    /// (or not in the static peer set), so no packet could leave.
    #[error("no route to {0}: no peer of this node has that address")]
    NoRoute(IpAddr),
    /// The peer answered with a reset: nothing listens on that port.
    #[error("{0} refused the connection (nothing listens on that port)")]
    Refused(SocketAddr),
    /// No answer in time. The peer may be offline, have no path (no
    /// direct address and no relay), or its ACL filter may drop our
    /// connection: a filtered SYN is dropped silently by our nodes and, in
    /// the ways visible to us, by Go's (its TSMP "rejected" notice is not
    /// read by this node yet), so the cases look alike from here.
    #[error("no answer from {addr} within {after:?} (peer offline, no path, or its ACL drops this node)")]
    TimedOut {
        /// The address dialed.
        addr: SocketAddr,
        /// How long we waited.
        after: Duration,
    },
    /// Another socket error (e.g. the node ran out of local ports).
    #[error("dialing {addr}: {source}")]
    Io {
        /// The address dialed.
        addr: SocketAddr,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl DialError {
    /// The nearest `std::io::ErrorKind`, for callers that deal in
    /// `io::Error` (hyper, tower).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            DialError::BadAddress(_) => io::ErrorKind::InvalidInput,
            DialError::UnknownName { .. } | DialError::Resolve { .. } => io::ErrorKind::NotFound,
            DialError::AddressFamily(_) => io::ErrorKind::AddrNotAvailable,
            DialError::NoRoute(_) => io::ErrorKind::HostUnreachable,
            DialError::Refused(_) => io::ErrorKind::ConnectionRefused,
            DialError::TimedOut { .. } => io::ErrorKind::TimedOut,
            DialError::Io { source, .. } => source.kind(),
        }
    }
}

impl From<DialError> for io::Error {
    fn from(e: DialError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Splits `"host:port"`: `[v6]:port`, `v4:port` or `name:port`.
pub(crate) fn split_host_port(addr: &str) -> Result<(&str, u16), DialError> {
    let bad = || DialError::BadAddress(addr.to_string());
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, port) = rest.split_once("]:").ok_or_else(bad)?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        (host, port)
    } else {
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        // A bare IPv6 address is ambiguous with a port; a name has no ':'.
        if host.contains(':') {
            return Err(bad());
        }
        (host, port)
    };
    if host.is_empty() || port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host, port))
}

impl Node {
    /// Opens a TCP connection to `"host:port"` over the tailnet, like
    /// tsnet's `Server.Dial(ctx, "tcp", addr)`: the host is a MagicDNS
    /// name (`inferadb-control.eu-west-1.ts.net`, a node's FQDN or its
    /// short name) or a tailnet address (`100.64.0.2`, `[fd7a:…]`).
    /// Names are resolved through the node's MagicDNS; of the addresses a
    /// name has, the first one this node can route (IPv4 first) is
    /// dialed. Waits at most [`DIAL_TIMEOUT`]; see
    /// [`dial_timeout`](Self::dial_timeout).
    ///
    /// ```no_run
    /// # async fn f(node: tailnet::Node) -> Result<(), tailnet::DialError> {
    /// let stream = node.dial("inferadb-control.eu-west-1.ts.net:9090").await?;
    /// # Ok(()) }
    /// ```
    pub async fn dial(&self, addr: &str) -> Result<TcpStream, DialError> {
        self.dial_timeout(addr, DIAL_TIMEOUT).await
    }

    /// [`dial`](Self::dial) with a limit of its own on resolution and
    /// handshake together.
    pub async fn dial_timeout(
        &self,
        addr: &str,
        timeout: Duration,
    ) -> Result<TcpStream, DialError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (host, port) = split_host_port(addr)?;
        let target = match tokio::time::timeout_at(deadline, self.dial_target(host, port)).await {
            Ok(t) => t?,
            Err(_) => {
                return Err(DialError::Resolve {
                    name: host.to_string(),
                    source: ResolveError::Timeout(host.to_string()),
                })
            }
        };
        self.connect_until(target, deadline, timeout).await
    }

    /// Connects to an address already known, with the same errors as
    /// [`dial`](Self::dial).
    pub async fn dial_addr(
        &self,
        target: SocketAddr,
        timeout: Duration,
    ) -> Result<TcpStream, DialError> {
        self.check_route(target)?;
        let deadline = tokio::time::Instant::now() + timeout;
        self.connect_until(target, deadline, timeout).await
    }

    async fn connect_until(
        &self,
        target: SocketAddr,
        deadline: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<TcpStream, DialError> {
        let started = tokio::time::Instant::now();
        match tokio::time::timeout_at(deadline, self.tcp_connect(target)).await {
            Err(_) => Err(DialError::TimedOut {
                addr: target,
                after: timeout,
            }),
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // The netstack reports a reset and its own SYN timeout
                // alike; the time taken tells them apart.
                let stack_timeout = self.netstack().config().tcp_timeout;
                match stack_timeout {
                    Some(t) if started.elapsed() >= t => Err(DialError::TimedOut {
                        addr: target,
                        after: started.elapsed(),
                    }),
                    _ => Err(DialError::Refused(target)),
                }
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::AddrNotAvailable => {
                Err(DialError::AddressFamily(target))
            }
            Ok(Err(source)) => Err(DialError::Io {
                addr: target,
                source,
            }),
        }
    }

    /// Binds a UDP socket on a free port and fixes its peer to
    /// `"host:port"` (resolved as [`dial`](Self::dial) does), like tsnet's
    /// `Dial(ctx, "udp", addr)`.
    pub async fn dial_udp(&self, addr: &str) -> Result<UdpConn, DialError> {
        let (host, port) = split_host_port(addr)?;
        let target = match tokio::time::timeout(DIAL_TIMEOUT, self.dial_target(host, port)).await {
            Ok(t) => t?,
            Err(_) => {
                return Err(DialError::Resolve {
                    name: host.to_string(),
                    source: ResolveError::Timeout(host.to_string()),
                })
            }
        };
        let socket = self.udp_bind(0).map_err(|e| DialError::Io {
            addr: target,
            source: io::Error::other(e),
        })?;
        Ok(UdpConn {
            socket,
            peer: target,
        })
    }

    /// The address to dial for `host`: the host itself when it is an
    /// address, else the first routable address MagicDNS gives.
    async fn dial_target(&self, host: &str, port: u16) -> Result<SocketAddr, DialError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            let target = SocketAddr::new(ip, port);
            self.check_route(target)?;
            return Ok(target);
        }
        let ips = self.resolve(host).await.map_err(|source| match source {
            ResolveError::NxDomain(_) | ResolveError::NoAddresses(_) => DialError::UnknownName {
                name: host.to_string(),
                source,
            },
            // Outside every tailnet zone with no upstream to ask.
            ResolveError::Server { ref rcode, .. }
                if *rcode == tailnet_dns::ResponseCode::Refused.to_string() =>
            {
                DialError::UnknownName {
                    name: host.to_string(),
                    source,
                }
            }
            source => DialError::Resolve {
                name: host.to_string(),
                source,
            },
        })?;
        let mut first_err = None;
        for ip in ips {
            let target = SocketAddr::new(ip, port);
            match self.check_route(target) {
                Ok(()) => return Ok(target),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or_else(|| DialError::BadAddress(host.to_string())))
    }

    /// Whether a packet to `target` could leave: the node has an address
    /// of its family, and a peer's allowed IPs cover it (or it is one of
    /// the node's own or service addresses).
    fn check_route(&self, target: SocketAddr) -> Result<(), DialError> {
        let ip = target.ip();
        let local = self.netstack().addresses();
        if !local.iter().any(|a| a.is_ipv4() == ip.is_ipv4()) {
            return Err(DialError::AddressFamily(target));
        }
        if local.contains(&ip) || self.netstack().service_addresses().contains(&ip) {
            return Ok(());
        }
        match self.route_to(ip) {
            Some(_) => Ok(()),
            None => Err(DialError::NoRoute(ip)),
        }
    }
}

/// A UDP socket of the node with a fixed peer ([`Node::dial_udp`]):
/// [`send`](Self::send) goes to the peer, [`recv`](Self::recv) returns
/// only the peer's datagrams.
#[derive(Debug)]
pub struct UdpConn {
    socket: UdpSocket,
    peer: SocketAddr,
}

impl UdpConn {
    /// Sends one datagram to the peer.
    pub async fn send(&self, data: &[u8]) -> io::Result<usize> {
        self.socket.send_to(data, self.peer).await
    }

    /// Receives the next datagram from the peer (datagrams from anyone
    /// else are discarded).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if from == self.peer {
                return Ok(n);
            }
        }
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// The local port.
    pub fn local_port(&self) -> u16 {
        self.socket.local_port()
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UdpSocket {
        &self.socket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert_eq!(
            split_host_port("inferadb-control.eu-west-1.ts.net:9090").unwrap(),
            ("inferadb-control.eu-west-1.ts.net", 9090)
        );
        assert_eq!(split_host_port("db:5432").unwrap(), ("db", 5432));
        assert_eq!(
            split_host_port("100.64.0.2:80").unwrap(),
            ("100.64.0.2", 80)
        );
        assert_eq!(
            split_host_port("[fd7a:115c:a1e0::1]:443").unwrap(),
            ("fd7a:115c:a1e0::1", 443)
        );
        assert_eq!(
            split_host_port("host.ts.net.:1").unwrap(),
            ("host.ts.net.", 1)
        );
        for bad in [
            "",
            "host",
            "host:",
            ":80",
            "host:http",
            "host:65536",
            "host:-1",
            "fd7a::1:80",
            "[fd7a::1]80",
            "[not-v6]:80",
            "[fd7a::1]:",
        ] {
            assert!(
                matches!(split_host_port(bad), Err(DialError::BadAddress(_))),
                "{bad:?} accepted"
            );
        }
    }
}
