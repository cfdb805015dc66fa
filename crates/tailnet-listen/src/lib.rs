//! The hardened server recipe every listener of inferadb-mesh uses
//! (coordinator HTTP and Noise/HTTP2, DERP, the roles' HTTP endpoints, the
//! invalidation receiver, the local API, MagicDNS over TCP).
//!
//! Pieces, each usable on its own because the listeners differ (OS TCP,
//! tailnet TCP, Unix sockets):
//!
//! - [`AcceptErrors`]: what an accept loop does when `accept()` fails
//!   (`EMFILE`, `ENFILE`, `ECONNABORTED`, …): count, log once per interval,
//!   back off, and carry on. An accept loop never ends on an error.
//! - [`ConnGate`]: a connection cap, global and per source IP; a refused
//!   connection is closed at once and counted.
//! - [`IdleIo`]: a byte stream that fails with `TimedOut` when neither
//!   direction made progress for the idle timeout.
//! - [`Limits`]: the numbers, with defaults, and [`Limits::http1`] /
//!   [`Limits::http2`] builders that apply them to hyper (a timer, so the
//!   header-read timeout actually runs; header size caps; HTTP/2 keep-alive
//!   pings and a cap on concurrent streams).
//! - [`LogLimiter`]: at most one log line per interval for events an
//!   attacker can cause, with the count of the suppressed ones.
//! - [`bind_tcp`]: a TCP listener with Go's backlog instead of tokio's 128.
//! - [`query`]: the query strings our local endpoints take, decoded
//!   without ever failing.
//! - [`proxy`]: the request parsers of the local SOCKS5 and HTTP proxies
//!   (`inferadb-mesh up --socks5`, `--http-proxy`), sans-IO.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod gate;
mod idle;
mod limiter;
pub mod proxy;
pub mod query;

pub use gate::{ConnGate, ConnPermit, GateCounters, Refused};
pub use idle::IdleIo;
pub use limiter::LogLimiter;

use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::io;
use std::time::Duration;

/// The limits of one server. The defaults suit every listener we run;
/// each server exposes them in its own config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long a client may take to send a request's headers (HTTP/1.1:
    /// from the connection's start, and between keep-alive requests). An
    /// idle or slowloris connection is closed after this.
    pub header_read_timeout: Duration,
    /// A connection on which neither direction made progress for this long
    /// is closed ([`IdleIo`]).
    pub idle_timeout: Duration,
    /// Connections open at once, all sources together.
    pub max_connections: usize,
    /// Connections open at once from one source IP address.
    pub max_connections_per_ip: usize,
    /// Largest request head (HTTP/1.1 read buffer; HTTP/2 header list).
    pub max_header_bytes: usize,
    /// HTTP/2: send a PING after this much silence.
    pub h2_keepalive_interval: Duration,
    /// HTTP/2: close the connection when a PING is not answered in time.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2: concurrent streams a client may open.
    pub h2_max_concurrent_streams: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(180),
            max_connections: 4096,
            max_connections_per_ip: 256,
            max_header_bytes: 64 * 1024,
            h2_keepalive_interval: Duration::from_secs(30),
            h2_keepalive_timeout: Duration::from_secs(20),
            h2_max_concurrent_streams: 100,
        }
    }
}

impl Limits {
    /// A [`ConnGate`] enforcing these caps.
    pub fn gate(&self) -> std::sync::Arc<ConnGate> {
        ConnGate::new(self.max_connections, self.max_connections_per_ip)
    }

    /// An HTTP/1.1 server builder with the timer, the header-read timeout
    /// and the header size cap set.
    pub fn http1(&self) -> hyper::server::conn::http1::Builder {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // hyper refuses less than 8 KiB.
            .max_buf_size(self.max_header_bytes.max(8192));
        b
    }

    /// An HTTP/2 server builder with keep-alive pings, the stream cap and
    /// the header list cap set.
    pub fn http2(&self) -> hyper::server::conn::http2::Builder<TokioExecutor> {
        let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        b.timer(TokioTimer::new())
            .keep_alive_interval(self.h2_keepalive_interval)
            .keep_alive_timeout(self.h2_keepalive_timeout)
            .max_concurrent_streams(self.h2_max_concurrent_streams)
            .max_header_list_size(u32::try_from(self.max_header_bytes).unwrap_or(u32::MAX));
        b
    }
}

/// The listen backlog of the TCP listeners we bind ([`bind_tcp`]): Go's
/// `net.Listen` asks for the kernel's `somaxconn` (4,096 on current
/// Linux, which also caps what we ask). Tokio's `TcpListener::bind` asks
/// for 128: when a fleet reconnects at once, or 5,000 connections arrive
/// faster than a debug build accepts them, the kernel drops the SYNs
/// over it and each such client waits a 1 s SYN retransmission.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A TCP listener on `addr` (`SO_REUSEADDR`, as tokio's `bind`) with a
/// backlog of [`LISTEN_BACKLOG`].
pub fn bind_tcp(addr: std::net::SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Longest pause after a failed `accept()`.
pub const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);
const FIRST_ACCEPT_BACKOFF: Duration = Duration::from_millis(5);

/// An accept loop's error handling: every error is counted and the loop
/// goes on after a pause that doubles while errors continue (5 ms up to
/// [`MAX_ACCEPT_BACKOFF`]), so running out of file descriptors neither
/// ends the server nor spins a core. One log line per interval at most.
#[derive(Debug)]
pub struct AcceptErrors {
    what: &'static str,
    backoff: Duration,
    total: u64,
    log: LogLimiter,
}

impl AcceptErrors {
    /// For the listener named `what` (in log lines).
    pub fn new(what: &'static str) -> Self {
        AcceptErrors {
            what,
            backoff: FIRST_ACCEPT_BACKOFF,
            total: 0,
            log: LogLimiter::new(Duration::from_secs(10)),
        }
    }

    /// Accept errors seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A connection was accepted: the next error starts a fresh backoff.
    pub fn success(&mut self) {
        self.backoff = FIRST_ACCEPT_BACKOFF;
    }

    /// `accept()` failed with `e`: count, maybe log, and wait before the
    /// next attempt.
    pub async fn failed(&mut self, e: &io::Error) {
        self.total += 1;
        if let Some(suppressed) = self.log.allow() {
            tracing::warn!(
                listener = self.what,
                error = %e,
                suppressed,
                total = self.total,
                "accept failed; backing off and retrying (too many open files? raise the descriptor limit)"
            );
        }
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_ACCEPT_BACKOFF);
    }
}

#[cfg(test)]
mod tests;
