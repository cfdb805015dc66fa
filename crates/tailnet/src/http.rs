//! HTTP clients over the tailnet (feature `hyper`, on by default).
//!
//! [`Connector`] is a `tower_service::Service<http::Uri>`, which is what
//! hyper-util's legacy client calls a connector, so
//! `hyper_util::client::legacy::Client` and anything built on it reach
//! tailnet services by MagicDNS name:
//!
//! ```no_run
//! # async fn f(node: tailnet::Node) -> Result<(), Box<dyn std::error::Error>> {
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! # type Body = http_body_util::Empty<bytes::Bytes>;
//! let client: Client<_, Body> =
//!     Client::builder(TokioExecutor::new()).build(tailnet::http::Connector::new(node));
//! let resp = client.get("http://inferadb-control.eu-west-1.ts.net:9090/healthz".parse()?).await?;
//! # Ok(()) }
//! ```
//!
//! For servers, a [`TcpStream`] is a tokio `AsyncRead + AsyncWrite`:
//! hyper's server takes it through `hyper_util::rt::TokioIo`, and with
//! feature `axum`, [`Listener`](crate::Listener) is an
//! `axum::serve::Listener`.
//!
//! reqwest cannot use this connector: its `connector_layer` wraps
//! reqwest's own connector and its connection type cannot be built
//! outside reqwest (see `vendor-notes/http-clients.md`); point reqwest at
//! `inferadb-mesh up --socks5` instead.

use crate::dial::{split_host_port, DialError};
use crate::node::Node;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tailnet_netstack::TcpStream;

/// Dials the host and port of a URI over the tailnet (port 80 for
/// `http`, 443 for `https` when the URI has none). TLS for `https` is the
/// caller's: wrap this connector (e.g. with hyper-rustls).
#[derive(Debug, Clone)]
pub struct Connector {
    node: Node,
    timeout: Duration,
}

impl Connector {
    /// A connector dialing through `node`, waiting at most
    /// [`DIAL_TIMEOUT`](crate::DIAL_TIMEOUT) per connection.
    pub fn new(node: Node) -> Self {
        Connector {
            node,
            timeout: crate::dial::DIAL_TIMEOUT,
        }
    }

    /// How long resolution and handshake of one connection may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// The host and port a URI names.
fn host_port(uri: &http::Uri) -> Result<String, DialError> {
    let bad = || DialError::BadAddress(uri.to_string());
    let host = uri.host().ok_or_else(bad)?;
    let port = match uri.port_u16() {
        Some(p) => p,
        None => match uri.scheme_str() {
            Some("https") => 443,
            Some("http") | None => 80,
            Some(_) => return Err(bad()),
        },
    };
    // `Uri::host` keeps the brackets of an IPv6 literal.
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    split_host_port(&addr)?;
    Ok(addr)
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = HttpStream;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpStream, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (node, timeout) = (self.node.clone(), self.timeout);
        Box::pin(async move {
            let addr = host_port(&uri)?;
            let stream = node.dial_timeout(&addr, timeout).await?;
            Ok(HttpStream {
                io: hyper_util::rt::TokioIo::new(stream),
            })
        })
    }
}

/// A tailnet connection as hyper's I/O traits want it ([`Connector`]'s
/// response).
#[derive(Debug)]
pub struct HttpStream {
    io: hyper_util::rt::TokioIo<TcpStream>,
}

impl HttpStream {
    /// The stream inside.
    pub fn get_ref(&self) -> &TcpStream {
        self.io.inner()
    }

    /// The stream inside.
    pub fn into_inner(self) -> TcpStream {
        self.io.into_inner()
    }
}

impl hyper_util::client::legacy::connect::Connection for HttpStream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

impl hyper::rt::Read for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_to_host_port() {
        let hp = |s: &str| host_port(&s.parse().unwrap());
        assert_eq!(hp("http://web.ts.net/x").unwrap(), "web.ts.net:80");
        assert_eq!(hp("https://web.ts.net/x").unwrap(), "web.ts.net:443");
        assert_eq!(hp("http://web:8080/").unwrap(), "web:8080");
        assert_eq!(hp("http://100.64.0.2:81/").unwrap(), "100.64.0.2:81");
        assert_eq!(
            hp("http://[fd7a:115c:a1e0::1]:82/").unwrap(),
            "[fd7a:115c:a1e0::1]:82"
        );
        assert!(matches!(hp("/relative"), Err(DialError::BadAddress(_))));
        assert!(matches!(hp("ftp://web/"), Err(DialError::BadAddress(_))));
    }
}
