//! TCP buffer autotuning: each connection starts with the configured
//! buffers and doubles them, up to `tcp_buffer_max`, when they limit it;
//! what all connections together hold beyond their initial buffers is
//! capped by the node-wide `tcp_memory_budget`.
//!
//! - A receive buffer grows each time a whole buffer's worth of data
//!   arrived while the application kept up (less than a quarter of it
//!   unread): a bulk transfer that fills its window, as Linux's dynamic
//!   right-sizing grows `sk_rcvbuf` for a flow that delivers more per
//!   round trip than the buffer holds. Transfers shorter than the buffer
//!   never grow it.
//! - A send buffer grows when the application filled it and both the
//!   congestion window and the peer's advertised window have room for at
//!   least half of it: the buffer, not the network or the reader, was the
//!   limit. A reader that stopped closes its window, so once it is closed a
//!   writer to it no longer grows its buffer (it may have grown while the
//!   window was still open; never past `tcp_buffer_max`).
//! - A send buffer that stayed empty for `IDLE_SHRINK` goes back to its
//!   initial size. Receive buffers keep their size while the connection
//!   lives: shrinking would pull in the advertised window's right edge,
//!   which RFC 7323 forbids; they are freed with the connection.
//!
//! Buffers are fresh anonymous mappings (`stack::socket_buffer`): the
//! capacity counts against the budget, resident memory is only what data
//! passed through.

use crate::config::NetstackConfig;
use crate::stack::socket_buffer;
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// How often the tuner looks at the connections.
const INTERVAL: Duration = Duration::from_millis(10);
/// A send buffer idle this long shrinks back.
const IDLE_SHRINK: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct Conn {
    /// `bytes_received` when the receive buffer last grew (or was first
    /// seen).
    rx_mark: Option<u64>,
    /// Bytes beyond the initial buffers this connection holds.
    extra: usize,
    idle_since: Option<Instant>,
}

/// Per-node tuner state.
#[derive(Debug, Default)]
pub(crate) struct Tuner {
    conns: HashMap<SocketHandle, Conn>,
    /// Bytes beyond their initial buffers all connections hold.
    extra: usize,
    last: Option<Instant>,
    /// Growth refused because the node budget was spent.
    pub(crate) budget_refusals: u64,
}

impl Tuner {
    /// Forgets a socket that is being removed, returning its share of the
    /// budget.
    pub(crate) fn forget(&mut self, h: SocketHandle) {
        if let Some(c) = self.conns.remove(&h) {
            self.extra -= c.extra;
        }
    }

    /// Bytes beyond their initial buffers all connections hold.
    pub(crate) fn extra(&self) -> usize {
        self.extra
    }

    /// Looks at every established connection (at most every `INTERVAL`).
    pub(crate) fn run(
        &mut self,
        now: Instant,
        sockets: &mut SocketSet<'static>,
        cfg: &NetstackConfig,
    ) {
        if cfg.tcp_buffer_max <= cfg.tcp_rx_buffer.min(cfg.tcp_tx_buffer)
            || self.last.is_some_and(|t| now < t + INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        for (h, sock) in sockets.iter_mut() {
            let smoltcp::socket::Socket::Tcp(s) = sock else {
                continue;
            };
            if !matches!(s.state(), tcp::State::Established | tcp::State::CloseWait) {
                continue;
            }
            let c = self.conns.entry(h).or_default();
            let received = s.counters().bytes_received;
            let mark = *c.rx_mark.get_or_insert(received);
            let rx_cap = s.recv_capacity();
            if received >= mark + rx_cap as u64
                && s.recv_queue() < rx_cap / 4
                && rx_cap < cfg.tcp_buffer_max
            {
                c.rx_mark = Some(received);
                let new = (rx_cap * 2).min(cfg.tcp_buffer_max);
                if self.extra + (new - rx_cap) <= cfg.tcp_memory_budget {
                    if s.replace_recv_buffer(socket_buffer(new).into()).is_ok() {
                        c.extra += new - rx_cap;
                        self.extra += new - rx_cap;
                    }
                } else {
                    self.budget_refusals += 1;
                }
            }

            let tx_cap = s.send_capacity();
            let queued = s.send_queue();
            if queued == tx_cap
                && s.congestion_window() >= tx_cap / 2
                && s.remote_window() >= tx_cap / 2
                && tx_cap < cfg.tcp_buffer_max
            {
                let new = (tx_cap * 2).min(cfg.tcp_buffer_max);
                if self.extra + (new - tx_cap) <= cfg.tcp_memory_budget {
                    if s.replace_send_buffer(socket_buffer(new).into()).is_ok() {
                        c.extra += new - tx_cap;
                        self.extra += new - tx_cap;
                    }
                } else {
                    self.budget_refusals += 1;
                }
            }
            if queued == 0 && tx_cap > cfg.tcp_tx_buffer {
                let since = *c.idle_since.get_or_insert(now);
                if now >= since + IDLE_SHRINK
                    && s.replace_send_buffer(socket_buffer(cfg.tcp_tx_buffer).into())
                        .is_ok()
                {
                    let freed = tx_cap - cfg.tcp_tx_buffer;
                    c.extra -= freed.min(c.extra);
                    self.extra -= freed.min(self.extra);
                    c.idle_since = None;
                }
            } else {
                c.idle_since = None;
            }
        }
    }
}
