//! The request parsers of the local proxies (`inferadb-mesh up --socks5`,
//! `--http-proxy`), sans-IO: bytes in, a request or "need more" out, so
//! they can be fuzzed alone.
//!
//! - SOCKS5 (RFC 1928): the method greeting and the request (CONNECT with
//!   an IPv4 or IPv6 address or a domain name); replies.
//! - HTTP proxy (RFC 9110 §9.3.6 CONNECT, and absolute-form requests of
//!   plain `http://`): the request head, and for absolute-form the head to
//!   send upstream in origin-form.
//!
//! Each parser looks at the bytes read so far and answers `Ok(None)` when
//! it needs more, `Ok(Some((value, consumed)))` once the message is whole
//! (bytes after `consumed` belong to the tunnel), or an error when the
//! bytes can never become a valid message.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Where a client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An IP address and port.
    Addr(SocketAddr),
    /// A host name (resolved by whoever dials: MagicDNS) and port.
    Name {
        /// The name, as the client sent it.
        host: String,
        /// The port.
        port: u16,
    },
}

impl fmt::Display for Target {
    /// `host:port`, IPv6 in brackets: what `tailnet::Node::dial` takes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// Longest host name accepted (DNS: 253 characters without the final dot).
pub const MAX_HOST: usize = 254;

/// Whether `host` is a plausible DNS name: 1–254 bytes of letters, digits,
/// `-`, `_` and `.`.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !host.starts_with('.')
}

/// A host and a port into a [`Target`]: an IP literal becomes an address.
fn target(host: &str, port: u16) -> Option<Target> {
    if port == 0 {
        return None;
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(Target::Addr(SocketAddr::new(ip, port)));
    }
    valid_host(host).then(|| Target::Name {
        host: host.to_string(),
        port,
    })
}

/// SOCKS5 (RFC 1928) without authentication.
pub mod socks5 {
    use super::*;

    /// The protocol version byte.
    pub const VERSION: u8 = 5;
    /// "No authentication required".
    pub const METHOD_NO_AUTH: u8 = 0;
    /// "No acceptable methods".
    pub const METHOD_NONE: u8 = 0xff;
    /// The CONNECT command.
    pub const CMD_CONNECT: u8 = 1;

    /// Why bytes are not SOCKS5.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum SocksError {
        /// Not version 5 (SOCKS4, or not SOCKS at all).
        #[error("not SOCKS5 (version byte {0})")]
        Version(u8),
        /// A greeting offering no method.
        #[error("the greeting offers no authentication method")]
        NoMethods,
        /// The reserved byte of a request is not zero.
        #[error("reserved byte is not zero")]
        Reserved,
        /// An address type other than IPv4 (1), domain name (3), IPv6 (4).
        #[error("address type {0} is not supported")]
        AddressType(u8),
        /// An empty or malformed domain name, or port 0.
        #[error("bad destination")]
        BadTarget,
    }

    /// A reply code (RFC 1928 §6).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[repr(u8)]
    pub enum Reply {
        /// Succeeded.
        Succeeded = 0,
        /// General SOCKS server failure.
        GeneralFailure = 1,
        /// Connection not allowed by ruleset.
        NotAllowed = 2,
        /// Network unreachable.
        NetworkUnreachable = 3,
        /// Host unreachable.
        HostUnreachable = 4,
        /// Connection refused.
        ConnectionRefused = 5,
        /// TTL expired.
        TtlExpired = 6,
        /// Command not supported.
        CommandNotSupported = 7,
        /// Address type not supported.
        AddressTypeNotSupported = 8,
    }

    /// The client's greeting: whether it offers "no authentication".
    pub fn greeting(buf: &[u8]) -> Result<Option<(bool, usize)>, SocksError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != VERSION {
            return Err(SocksError::Version(version));
        }
        let Some(&n) = buf.get(1) else {
            return Ok(None);
        };
        if n == 0 {
            return Err(SocksError::NoMethods);
        }
        let end = 2 + usize::from(n);
        let Some(methods) = buf.get(2..end) else {
            return Ok(None);
        };
        Ok(Some((methods.contains(&METHOD_NO_AUTH), end)))
    }

    /// A request: the command byte and the destination.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Request {
        /// `CMD` (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE).
        pub command: u8,
        /// `DST.ADDR` and `DST.PORT`.
        pub target: Target,
    }

    /// The request after the method was chosen.
    pub fn request(buf: &[u8]) -> Result<Option<(Request, usize)>, SocksError> {
        if buf.len() < 4 {
            if let Some(&v) = buf.first() {
                if v != VERSION {
                    return Err(SocksError::Version(v));
                }
            }
            return Ok(None);
        }
        let (version, command, reserved, atyp) = (buf[0], buf[1], buf[2], buf[3]);
        if version != VERSION {
            return Err(SocksError::Version(version));
        }
        if reserved != 0 {
            return Err(SocksError::Reserved);
        }
        let (host, rest_at) = match atyp {
            1 => {
                let Some(b) = buf.get(4..8) else {
                    return Ok(None);
                };
                (
                    Host::Ip(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
                    8,
                )
            }
            4 => {
                let Some(b) = buf.get(4..20) else {
                    return Ok(None);
                };
                let mut a = [0u8; 16];
                a.copy_from_slice(b);
                (Host::Ip(IpAddr::V6(Ipv6Addr::from(a))), 20)
            }
            3 => {
                let Some(&len) = buf.get(4) else {
                    return Ok(None);
                };
                let end = 5 + usize::from(len);
                let Some(name) = buf.get(5..end) else {
                    return Ok(None);
                };
                let name = std::str::from_utf8(name).map_err(|_| SocksError::BadTarget)?;
                (Host::Name(name), end)
            }
            other => return Err(SocksError::AddressType(other)),
        };
        let Some(p) = buf.get(rest_at..rest_at + 2) else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([p[0], p[1]]);
        let target = match host {
            Host::Ip(ip) if port != 0 => Target::Addr(SocketAddr::new(ip, port)),
            Host::Ip(_) => return Err(SocksError::BadTarget),
            // A domain that is an IP literal is dialed as the address.
            Host::Name(name) => target(name, port).ok_or(SocksError::BadTarget)?,
        };
        Ok(Some((Request { command, target }, rest_at + 2)))
    }

    enum Host<'a> {
        Ip(IpAddr),
        Name(&'a str),
    }

    /// The reply to a request: `code`, and the address the proxy bound
    /// (`None`: 0.0.0.0:0).
    pub fn reply(code: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
        let bound = bound.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        let mut out = vec![VERSION, code as u8, 0];
        match bound.ip() {
            IpAddr::V4(v4) => {
                out.push(1);
                out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                out.push(4);
                out.extend_from_slice(&v6.octets());
            }
        }
        out.extend_from_slice(&bound.port().to_be_bytes());
        out
    }
}

/// The HTTP proxy's request head.
pub mod http {
    use super::*;

    /// Largest request head accepted.
    pub const MAX_HEAD: usize = 16 * 1024;
    /// Most header lines accepted.
    pub const MAX_HEADERS: usize = 64;

    /// Why a request head is refused; each maps to a status code.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    pub enum HttpProxyError {
        /// The head is over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] lines.
        #[error("request head too large")]
        TooLarge,
        /// Not an HTTP/1.x request head.
        #[error("malformed request: {0}")]
        Malformed(&'static str),
        /// A target that is neither `CONNECT host:port` nor `http://…`.
        #[error("unsupported request target: {0}")]
        Unsupported(&'static str),
    }

    impl HttpProxyError {
        /// The status code to answer with.
        pub fn status(&self) -> u16 {
            match self {
                HttpProxyError::TooLarge => 431,
                HttpProxyError::Malformed(_) => 400,
                HttpProxyError::Unsupported(_) => 501,
            }
        }
    }

    /// A parsed proxy request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Request {
        /// `CONNECT host:port`: a tunnel.
        Connect(Target),
        /// An absolute-form `http://` request: send `head` (the request
        /// line in origin-form, hop-by-hop and proxy headers removed,
        /// `Connection: close`) to `target`, then the body as it comes.
        Forward {
            /// The origin server.
            target: Target,
            /// The head to send upstream.
            head: Vec<u8>,
        },
    }

    /// Headers that concern only the hop to the proxy.
    fn hop_by_hop(name: &str) -> bool {
        [
            "connection",
            "proxy-connection",
            "keep-alive",
            "proxy-authorization",
            "proxy-authenticate",
            "te",
            "trailer",
            "upgrade",
        ]
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h))
    }

    /// `host:port` or `[v6]:port` with the port required.
    fn authority(s: &str, default_port: Option<u16>) -> Option<Target> {
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) = rest.split_once(']')?;
            host.parse::<Ipv6Addr>().ok()?;
            match after.strip_prefix(':') {
                Some(p) => (host, p),
                None if after.is_empty() => (host, ""),
                None => return None,
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                Some(_) => return None,
                None => (s, ""),
            }
        };
        let port = if port.is_empty() {
            default_port?
        } else if port.bytes().all(|b| b.is_ascii_digit()) {
            port.parse().ok()?
        } else {
            return None;
        };
        target(host, port)
    }

    /// The request head, once whole.
    pub fn request(buf: &[u8]) -> Result<Option<(Request, usize)>, HttpProxyError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let consumed = match req.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => {
                return if buf.len() >= MAX_HEAD {
                    Err(HttpProxyError::TooLarge)
                } else {
                    Ok(None)
                };
            }
            Err(httparse::Error::TooManyHeaders) => return Err(HttpProxyError::TooLarge),
            Err(_) => return Err(HttpProxyError::Malformed("not an HTTP/1.x request head")),
        };
        if consumed > MAX_HEAD {
            return Err(HttpProxyError::TooLarge);
        }
        let method = req.method.ok_or(HttpProxyError::Malformed("no method"))?;
        let path = req.path.ok_or(HttpProxyError::Malformed("no target"))?;
        if method.eq_ignore_ascii_case("CONNECT") {
            let t = authority(path, None).ok_or(HttpProxyError::Malformed(
                "CONNECT needs host:port (IPv6 in brackets)",
            ))?;
            return Ok(Some((Request::Connect(t), consumed)));
        }
        let rest = match path.get(..7) {
            Some(p) if p.eq_ignore_ascii_case("http://") => &path[7..],
            _ => {
                return Err(HttpProxyError::Unsupported(
                    "only CONNECT and absolute http:// requests are proxied",
                ))
            }
        };
        let (auth, origin) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // No user information in the authority (RFC 9110 §4.2.4).
        if auth.contains('@') {
            return Err(HttpProxyError::Malformed("userinfo in the request target"));
        }
        let target = authority(auth, Some(80))
            .ok_or(HttpProxyError::Malformed("bad host in the request target"))?;
        let origin = if origin.starts_with('?') {
            format!("/{origin}")
        } else {
            origin.to_string()
        };
        let mut head = format!("{method} {origin} HTTP/1.{}\r\n", req.version.unwrap_or(1));
        let mut has_host = false;
        for h in req.headers.iter() {
            if hop_by_hop(h.name) {
                continue;
            }
            has_host |= h.name.eq_ignore_ascii_case("host");
            head.push_str(h.name);
            head.push_str(": ");
            let mut bytes = head.into_bytes();
            bytes.extend_from_slice(h.value);
            bytes.extend_from_slice(b"\r\n");
            head = String::from_utf8(bytes)
                .map_err(|_| HttpProxyError::Malformed("header value not UTF-8"))?;
        }
        if !has_host {
            head.push_str(&format!("Host: {auth}\r\n"));
        }
        head.push_str("Connection: close\r\n\r\n");
        Ok(Some((
            Request::Forward {
                target,
                head: head.into_bytes(),
            },
            consumed,
        )))
    }

    /// A short plain-text answer from the proxy itself.
    pub fn error_response(status: u16, reason: &str, text: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
            text.len() + 1
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::http::{self as hp, HttpProxyError};
    use super::socks5::{self, Reply, SocksError};
    use super::*;

    fn name(h: &str, p: u16) -> Target {
        Target::Name {
            host: h.into(),
            port: p,
        }
    }

    #[test]
    fn socks5_greeting_and_requests() {
        assert_eq!(socks5::greeting(&[]).unwrap(), None);
        assert_eq!(socks5::greeting(&[5, 2, 0]).unwrap(), None);
        assert_eq!(socks5::greeting(&[5, 2, 2, 0, 9]).unwrap(), Some((true, 4)));
        assert_eq!(socks5::greeting(&[5, 1, 2]).unwrap(), Some((false, 3)));
        assert_eq!(socks5::greeting(&[4, 1]), Err(SocksError::Version(4)));
        assert_eq!(socks5::greeting(&[5, 0]), Err(SocksError::NoMethods));

        let mut r = vec![5, 1, 0, 3, 11];
        r.extend_from_slice(b"web.ts.net.");
        r.extend_from_slice(&8080u16.to_be_bytes());
        for cut in 0..r.len() {
            assert_eq!(socks5::request(&r[..cut]).unwrap(), None, "cut {cut}");
        }
        r.push(0xaa); // tunnel bytes already sent
        let (req, n) = socks5::request(&r).unwrap().unwrap();
        assert_eq!(n, r.len() - 1);
        assert_eq!(req.command, socks5::CMD_CONNECT);
        assert_eq!(req.target, name("web.ts.net.", 8080));
        assert_eq!(req.target.to_string(), "web.ts.net.:8080");

        let v4 = [5, 1, 0, 1, 100, 64, 0, 2, 0, 80];
        let (req, _) = socks5::request(&v4).unwrap().unwrap();
        assert_eq!(req.target, Target::Addr("100.64.0.2:80".parse().unwrap()));
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&"fd7a:115c:a1e0::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[1, 187]);
        let (req, _) = socks5::request(&v6).unwrap().unwrap();
        assert_eq!(req.target.to_string(), "[fd7a:115c:a1e0::1]:443");
        // A domain that is an IP literal.
        let mut lit = vec![5, 1, 0, 3, 10];
        lit.extend_from_slice(b"100.64.0.9");
        lit.extend_from_slice(&[0, 22]);
        let (req, _) = socks5::request(&lit).unwrap().unwrap();
        assert_eq!(req.target, Target::Addr("100.64.0.9:22".parse().unwrap()));

        assert_eq!(socks5::request(&[5, 1, 1, 1]), Err(SocksError::Reserved));
        assert_eq!(
            socks5::request(&[5, 1, 0, 2]),
            Err(SocksError::AddressType(2))
        );
        assert_eq!(socks5::request(&[4]), Err(SocksError::Version(4)));
        assert_eq!(
            socks5::request(&[5, 1, 0, 3, 0, 0, 80]),
            Err(SocksError::BadTarget)
        );
        assert_eq!(
            socks5::request(&[5, 1, 0, 3, 3, b'a', b' ', b'b', 0, 80]),
            Err(SocksError::BadTarget)
        );
        assert_eq!(
            socks5::request(&[5, 1, 0, 1, 1, 2, 3, 4, 0, 0]),
            Err(SocksError::BadTarget)
        );
    }

    #[test]
    fn socks5_replies() {
        assert_eq!(
            socks5::reply(Reply::Succeeded, Some("100.64.0.1:49152".parse().unwrap())),
            vec![5, 0, 0, 1, 100, 64, 0, 1, 0xc0, 0]
        );
        assert_eq!(
            socks5::reply(Reply::HostUnreachable, None),
            vec![5, 4, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            socks5::reply(Reply::Succeeded, Some("[::1]:1".parse().unwrap())).len(),
            22
        );
    }

    #[test]
    fn http_connect_and_absolute_form() {
        let req = b"CONNECT web.ts.net:443 HTTP/1.1\r\nHost: web.ts.net:443\r\n\r\nTLS";
        for cut in 0..req.len() - 3 {
            assert_eq!(hp::request(&req[..cut]).unwrap(), None, "cut {cut}");
        }
        let (r, n) = hp::request(req).unwrap().unwrap();
        assert_eq!(r, hp::Request::Connect(name("web.ts.net", 443)));
        assert_eq!(&req[n..], b"TLS");
        let (r, _) = hp::request(b"CONNECT [fd7a::1]:22 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            r,
            hp::Request::Connect(Target::Addr("[fd7a::1]:22".parse().unwrap()))
        );

        let get = b"GET http://web:8080/a?b=1 HTTP/1.1\r\nHost: web:8080\r\nProxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\nAccept: */*\r\n\r\n";
        let (r, n) = hp::request(get).unwrap().unwrap();
        assert_eq!(n, get.len());
        let hp::Request::Forward { target, head } = r else {
            panic!("not a forward")
        };
        assert_eq!(target, name("web", 8080));
        let head = String::from_utf8(head).unwrap();
        assert_eq!(
            head,
            "GET /a?b=1 HTTP/1.1\r\nHost: web:8080\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let (r, _) = hp::request(b"GET http://100.64.0.2 HTTP/1.0\r\n\r\n")
            .unwrap()
            .unwrap();
        let hp::Request::Forward { target, head } = r else {
            panic!("not a forward")
        };
        assert_eq!(target, Target::Addr("100.64.0.2:80".parse().unwrap()));
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET / HTTP/1.0\r\nHost: 100.64.0.2\r\nConnection: close\r\n\r\n"
        );
    }

    #[test]
    fn http_errors_say_why() {
        let e = |b: &[u8]| hp::request(b).unwrap_err();
        assert_eq!(e(b"GET /local HTTP/1.1\r\n\r\n").status(), 501);
        assert_eq!(e(b"GET https://web/ HTTP/1.1\r\n\r\n").status(), 501);
        assert_eq!(e(b"CONNECT web HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(e(b"CONNECT web:0 HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(e(b"CONNECT fd7a::1:22 HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(e(b"GET http://u:p@web/ HTTP/1.1\r\n\r\n").status(), 400);
        assert_eq!(e(b"\x16\x03\x01\x00").status(), 400);
        let mut big = b"GET http://web/ HTTP/1.1\r\n".to_vec();
        big.resize(hp::MAX_HEAD + 1, b'a');
        assert_eq!(hp::request(&big), Err(HttpProxyError::TooLarge));
        let mut many = b"GET http://web/ HTTP/1.1\r\n".to_vec();
        for i in 0..=hp::MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: y\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(hp::request(&many), Err(HttpProxyError::TooLarge));
        let r = hp::error_response(502, "Bad Gateway", "no route");
        assert!(r.starts_with(b"HTTP/1.1 502 Bad Gateway\r\n"));
        assert!(r.ends_with(b"\r\n\r\nno route\n"));
    }
}
