//! A userspace TCP/IP stack for the tailnet node: smoltcp on a virtual
//! device, with tokio-style async sockets on top.
//!
//! The stack does no I/O of its own. Whoever drives it (the `tailnet` data
//! plane) feeds it inbound IP packets with [`Netstack::ingest`], calls
//! [`Netstack::poll`] to run smoltcp and collect outbound IP packets, and
//! sleeps until the returned deadline or until [`Netstack::wait_for_work`]
//! fires (an application read, write, connect or close that needs smoltcp to
//! run). There is no busy polling.
//!
//! Applications use [`TcpStream`], [`TcpListener`] and [`UdpSocket`], bound
//! to the node's own tailnet addresses.
//!
//! How smoltcp's limits are handled (see `vendor-notes/smoltcp.md`):
//! - no listen-on-any-port socket and one socket per accepted connection: a
//!   [`TcpListener`] creates a fresh listening socket for each inbound SYN as
//!   the SYN is ingested, bounded by its backlog;
//! - window = buffer: buffers start at 4 MiB receive / 2 MiB send (grown
//!   up to 16 MiB when they limit a transfer, within a node budget), which
//!   are allocated lazily by the OS (fresh anonymous mappings; see
//!   `stack::socket_buffer` for why malloc's mmap threshold is pinned), so
//!   idle connections cost little;
//! - congestion control is on (CUBIC by default), Nagle off, delayed ACK 1 ms.

// One unsafe call in the crate: mallopt in `stack::socket_buffer`.
#![deny(unsafe_code)]

mod config;
mod stack;
mod tcp;
mod tune;
mod udp;

pub use config::{Congestion, NetstackConfig};
pub use stack::{Netstack, NetstackError, NetstackStats};
pub use tcp::{TcpInfo, TcpListener, TcpStream};
pub use udp::UdpSocket;
