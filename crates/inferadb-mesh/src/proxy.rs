//! `up --socks5 127.0.0.1:1080` and `--http-proxy 127.0.0.1:8080`: local
//! proxies into the tailnet for programs in any language, as tailscaled's
//! userspace mode offers (and tsnet's `Loopback`): SOCKS5 (RFC 1928,
//! no authentication, CONNECT to IPv4, IPv6 or a domain name resolved
//! through MagicDNS) and an HTTP proxy (CONNECT tunnels, and absolute-form
//! `http://` requests forwarded one per connection).
//!
//! Every destination is dialed through the node (`Node::dial`): tailnet
//! names and addresses only; nothing goes to the host's network. The
//! listeners take loopback addresses only. Hardened like our other
//! servers (`tailnet-listen`): a connection cap (global and per source),
//! a handshake timeout on the client's request, an idle timeout on the
//! tunnel, and a bounded request head.

use std::net::SocketAddr;
use std::time::Duration;
use tailnet::{DialError, Node};
use tailnet_listen::proxy::{http, socks5, Target};
use tailnet_listen::{AcceptErrors, ConnGate, IdleIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The proxies' limits.
#[derive(Debug, Clone, Copy)]
pub struct ProxyLimits {
    /// How long a client may take to send its whole request (greeting and
    /// CONNECT, or the HTTP head).
    pub handshake_timeout: Duration,
    /// How long resolving and connecting through the tailnet may take.
    pub dial_timeout: Duration,
    /// A tunnel on which neither direction moved for this long is closed.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Connections open at once from one source address.
    pub max_connections_per_ip: usize,
}

impl Default for ProxyLimits {
    fn default() -> Self {
        let l = tailnet_listen::Limits::default();
        ProxyLimits {
            handshake_timeout: l.header_read_timeout,
            dial_timeout: tailnet::DIAL_TIMEOUT,
            idle_timeout: l.idle_timeout,
            max_connections: 1024,
            max_connections_per_ip: 1024,
        }
    }
}

/// Which proxy a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// SOCKS5.
    Socks5,
    /// HTTP CONNECT and absolute-form.
    Http,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Socks5 => "SOCKS5",
            Kind::Http => "HTTP",
        })
    }
}

/// Refuses a listening address that is not loopback.
pub fn check_loopback(kind: Kind, addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        anyhow::bail!(
            "{kind} proxy: {} is not a loopback address; the proxy listens on loopback only (127.0.0.1 or [::1]) so the tailnet is not opened to the network",
            addr.ip()
        );
    }
    Ok(())
}

/// Binds the proxy on `addr` (loopback only) and serves it until the
/// process ends. Returns the bound address (port 0 picks one).
pub async fn start(
    node: &Node,
    kind: Kind,
    addr: SocketAddr,
    limits: ProxyLimits,
) -> anyhow::Result<SocketAddr> {
    check_loopback(kind, addr)?;
    let listener = tailnet_listen::bind_tcp(addr)
        .map_err(|e| anyhow::anyhow!("{kind} proxy: cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let node = node.clone();
    tokio::spawn(async move {
        let gate = ConnGate::new(limits.max_connections, limits.max_connections_per_ip);
        let mut errors = AcceptErrors::new(match kind {
            Kind::Socks5 => "SOCKS5 proxy",
            Kind::Http => "HTTP proxy",
        });
        loop {
            let (stream, from) = match listener.accept().await {
                Ok(c) => {
                    errors.success();
                    c
                }
                Err(e) => {
                    errors.failed(&e).await;
                    continue;
                }
            };
            let Ok(permit) = gate.admit(Some(from.ip())) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let node = node.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let result = match kind {
                    Kind::Socks5 => serve_socks5(&node, stream, limits).await,
                    Kind::Http => serve_http(&node, stream, limits).await,
                };
                if let Err(e) = result {
                    tracing::debug!(proxy = %kind, %from, error = %e, "proxy connection ended");
                }
            });
        }
    });
    Ok(local)
}

/// Reads until `parse` has a whole message or the buffer reaches `max`.
async fn read_message<S, T, E>(
    s: &mut S,
    buf: &mut Vec<u8>,
    max: usize,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
) -> anyhow::Result<Result<(T, usize), E>>
where
    S: AsyncRead + Unpin,
{
    loop {
        match parse(buf) {
            Ok(Some(done)) => return Ok(Ok(done)),
            Err(e) => return Ok(Err(e)),
            Ok(None) => {}
        }
        if buf.len() >= max {
            anyhow::bail!("request larger than {max} bytes");
        }
        let mut chunk = [0u8; 2048];
        let room = (max - buf.len()).min(chunk.len());
        let n = s.read(&mut chunk[..room]).await?;
        if n == 0 {
            anyhow::bail!("client closed before its request was complete");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn dial(
    node: &Node,
    target: &Target,
    timeout: Duration,
) -> Result<tailnet::TcpStream, DialError> {
    node.dial_timeout(&target.to_string(), timeout).await
}

/// Carries bytes both ways until either side closes or the tunnel idles.
async fn tunnel<S>(
    client: S,
    mut remote: tailnet::TcpStream,
    early: &[u8],
    idle: Duration,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if !early.is_empty() {
        remote.write_all(early).await?;
    }
    let mut client = IdleIo::new(client, idle);
    tokio::io::copy_bidirectional(&mut client, &mut remote).await?;
    Ok(())
}

/// The SOCKS5 reply for a failed dial.
fn socks_reply(e: &DialError) -> socks5::Reply {
    use socks5::Reply;
    match e {
        DialError::UnknownName { .. } | DialError::Resolve { .. } => Reply::HostUnreachable,
        DialError::NoRoute(_) => Reply::NetworkUnreachable,
        DialError::Refused(_) => Reply::ConnectionRefused,
        DialError::TimedOut { .. } => Reply::TtlExpired,
        DialError::AddressFamily(_) => Reply::AddressTypeNotSupported,
        _ => Reply::GeneralFailure,
    }
}

/// Largest SOCKS5 message: greeting 2 + 255 methods; request 7 + 255.
const SOCKS_MAX: usize = 512;

async fn serve_socks5<S: AsyncRead + AsyncWrite + Unpin>(
    node: &Node,
    mut s: S,
    limits: ProxyLimits,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(64);
    let handshake = async {
        let (no_auth, n) = match read_message(&mut s, &mut buf, SOCKS_MAX, socks5::greeting).await?
        {
            Ok(g) => g,
            Err(e) => anyhow::bail!("SOCKS5 greeting: {e}"),
        };
        buf.drain(..n);
        if !no_auth {
            s.write_all(&[socks5::VERSION, socks5::METHOD_NONE]).await?;
            anyhow::bail!("the client offers no method we take (no authentication)");
        }
        s.write_all(&[socks5::VERSION, socks5::METHOD_NO_AUTH])
            .await?;
        match read_message(&mut s, &mut buf, SOCKS_MAX, socks5::request).await? {
            Ok((req, n)) => {
                buf.drain(..n);
                Ok(Ok(req))
            }
            Err(e) => Ok(Err(e)),
        }
    };
    let req = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
        Err(_) => anyhow::bail!("SOCKS5 handshake timed out"),
        Ok(r) => r?,
    };
    let req = match req {
        Ok(r) => r,
        Err(e) => {
            let code = match e {
                socks5::SocksError::AddressType(_) => socks5::Reply::AddressTypeNotSupported,
                _ => socks5::Reply::GeneralFailure,
            };
            s.write_all(&socks5::reply(code, None)).await?;
            anyhow::bail!("SOCKS5 request: {e}");
        }
    };
    if req.command != socks5::CMD_CONNECT {
        s.write_all(&socks5::reply(socks5::Reply::CommandNotSupported, None))
            .await?;
        anyhow::bail!(
            "SOCKS5 command {} is not supported (CONNECT only)",
            req.command
        );
    }
    let remote = match dial(node, &req.target, limits.dial_timeout).await {
        Ok(r) => r,
        Err(e) => {
            s.write_all(&socks5::reply(socks_reply(&e), None)).await?;
            anyhow::bail!("SOCKS5 CONNECT {}: {e}", req.target);
        }
    };
    s.write_all(&socks5::reply(
        socks5::Reply::Succeeded,
        Some(remote.local_addr()),
    ))
    .await?;
    tracing::debug!(target = %req.target, "SOCKS5 tunnel open");
    tunnel(s, remote, &buf, limits.idle_timeout).await
}

/// The status line and text for a failed dial.
fn http_failure(e: &DialError) -> (u16, &'static str) {
    match e {
        DialError::TimedOut { .. } => (504, "Gateway Timeout"),
        _ => (502, "Bad Gateway"),
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    node: &Node,
    mut s: S,
    limits: ProxyLimits,
) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let head = tokio::time::timeout(
        limits.handshake_timeout,
        read_message(&mut s, &mut buf, http::MAX_HEAD, http::request),
    )
    .await;
    let (req, n) = match head {
        Err(_) => {
            let _ = s
                .write_all(&http::error_response(
                    408,
                    "Request Timeout",
                    "request head timed out",
                ))
                .await;
            anyhow::bail!("HTTP proxy: request head timed out");
        }
        // The client closed or the socket failed: nobody to answer.
        Ok(Err(e)) => return Err(e),
        Ok(Ok(Err(e))) => {
            let reason = match e.status() {
                431 => "Request Header Fields Too Large",
                501 => "Not Implemented",
                _ => "Bad Request",
            };
            s.write_all(&http::error_response(e.status(), reason, &e.to_string()))
                .await?;
            anyhow::bail!("HTTP proxy: {e}");
        }
        Ok(Ok(Ok(r))) => r,
    };
    let early = buf.split_off(n);
    match req {
        http::Request::Connect(target) => {
            let remote = match dial(node, &target, limits.dial_timeout).await {
                Ok(r) => r,
                Err(e) => {
                    let (status, reason) = http_failure(&e);
                    s.write_all(&http::error_response(status, reason, &e.to_string()))
                        .await?;
                    anyhow::bail!("HTTP CONNECT {target}: {e}");
                }
            };
            s.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?;
            tracing::debug!(%target, "HTTP CONNECT tunnel open");
            tunnel(s, remote, &early, limits.idle_timeout).await
        }
        http::Request::Forward { target, head } => {
            let mut remote = match dial(node, &target, limits.dial_timeout).await {
                Ok(r) => r,
                Err(e) => {
                    let (status, reason) = http_failure(&e);
                    s.write_all(&http::error_response(status, reason, &e.to_string()))
                        .await?;
                    anyhow::bail!("HTTP proxy GET {target}: {e}");
                }
            };
            remote.write_all(&head).await?;
            tracing::debug!(%target, "HTTP request forwarded");
            tunnel(s, remote, &early, limits.idle_timeout).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node with no peers (no control): the proxies' handshakes and
    /// limits need no tailnet.
    async fn lone_node() -> Node {
        let key = tailnet::PrivateKey::generate();
        let mut config = tailnet::NodeConfig::new(key, vec!["100.64.0.1".parse().unwrap()]);
        config.listen = "127.0.0.1:0".parse().unwrap();
        Node::start(config).await.unwrap()
    }

    async fn closed_within(s: &mut tokio::net::TcpStream, limit: Duration) -> Vec<u8> {
        let mut got = Vec::new();
        tokio::time::timeout(limit, s.read_to_end(&mut got))
            .await
            .expect("the proxy closes the connection in time")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
        let node = lone_node().await;
        let limits = ProxyLimits {
            handshake_timeout: Duration::from_millis(200),
            ..ProxyLimits::default()
        };
        for kind in [Kind::Socks5, Kind::Http] {
            let addr = start(&node, kind, "127.0.0.1:0".parse().unwrap(), limits)
                .await
                .unwrap();
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let t = std::time::Instant::now();
            let got = closed_within(&mut s, Duration::from_secs(5)).await;
            assert!(
                t.elapsed() >= Duration::from_millis(150),
                "{kind}: closed early"
            );
            if kind == Kind::Http {
                assert!(
                    got.starts_with(b"HTTP/1.1 408 "),
                    "{:?}",
                    String::from_utf8_lossy(&got)
                );
            }
        }
        node.shutdown().await;
    }

    #[tokio::test]
    async fn the_connection_cap_closes_the_extra_client_at_once() {
        let node = lone_node().await;
        let limits = ProxyLimits {
            max_connections: 1,
            ..ProxyLimits::default()
        };
        let addr = start(&node, Kind::Socks5, "127.0.0.1:0".parse().unwrap(), limits)
            .await
            .unwrap();
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The first is admitted: the greeting is answered.
        first.write_all(&[5, 1, 0]).await.unwrap();
        let mut answer = [0u8; 2];
        first.read_exact(&mut answer).await.unwrap();
        assert_eq!(answer, [5, 0]);
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        let got = closed_within(&mut second, Duration::from_secs(5)).await;
        assert!(got.is_empty());
        node.shutdown().await;
    }

    #[tokio::test]
    async fn bad_requests_get_their_answer() {
        let node = lone_node().await;
        let limits = ProxyLimits::default();
        let socks = start(&node, Kind::Socks5, "127.0.0.1:0".parse().unwrap(), limits)
            .await
            .unwrap();
        let http = start(&node, Kind::Http, "127.0.0.1:0".parse().unwrap(), limits)
            .await
            .unwrap();
        // Username/password only: no acceptable method.
        let mut s = tokio::net::TcpStream::connect(socks).await.unwrap();
        s.write_all(&[5, 1, 2]).await.unwrap();
        assert_eq!(
            closed_within(&mut s, Duration::from_secs(5)).await,
            vec![5, 0xff]
        );
        // BIND: not supported.
        let mut s = tokio::net::TcpStream::connect(socks).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 2, 0, 1, 100, 64, 0, 2, 0, 80])
            .await
            .unwrap();
        let got = closed_within(&mut s, Duration::from_secs(5)).await;
        assert_eq!(&got[..4], &[5, 0, 5, 7], "{got:?}");
        // An address no peer has: network unreachable, at once.
        let mut s = tokio::net::TcpStream::connect(socks).await.unwrap();
        s.write_all(&[5, 1, 0, 5, 1, 0, 1, 100, 64, 0, 2, 0, 80])
            .await
            .unwrap();
        let got = closed_within(&mut s, Duration::from_secs(5)).await;
        assert_eq!(&got[..4], &[5, 0, 5, 3], "{got:?}");
        // HTTP: an origin-form request is not a proxy request.
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let got = closed_within(&mut s, Duration::from_secs(5)).await;
        assert!(
            got.starts_with(b"HTTP/1.1 501 "),
            "{:?}",
            String::from_utf8_lossy(&got)
        );
        // CONNECT to an address no peer has: 502 with the reason.
        let mut s = tokio::net::TcpStream::connect(http).await.unwrap();
        s.write_all(b"CONNECT 100.64.0.2:80 HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        let got = String::from_utf8(closed_within(&mut s, Duration::from_secs(5)).await).unwrap();
        assert!(
            got.starts_with("HTTP/1.1 502 ") && got.contains("no route to 100.64.0.2"),
            "{got}"
        );
        // Not loopback: refused before binding.
        let e = start(&node, Kind::Http, "0.0.0.0:0".parse().unwrap(), limits)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not a loopback address"), "{e}");
        node.shutdown().await;
    }
}
