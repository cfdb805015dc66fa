//! The tailnet node's data plane as one sans-IO state machine, in the
//! shape quinn-proto and Firezone's connlib use.
//!
//! The shell (crate `tailnet`) owns the sockets, the netstack and the
//! clock, and feeds the [`Engine`]: datagrams ([`Engine::handle_datagram`]),
//! relayed packets ([`Engine::handle_derp`]), the peer list
//! ([`Engine::handle_map`]), the netstack's packets
//! ([`Engine::handle_app_packet`]) and time ([`Engine::handle_timeout`]
//! when [`Engine::poll_timeout`] says). It then takes what the engine
//! decided: [`Transmit`]s (UDP datagrams, relay packets, packets for the
//! netstack; in batches on the hot path) and [`Event`]s.
//!
//! The engine owns the peers and their WireGuard sessions (boringtun),
//! cryptokey routing, the packet filter (`tailnet_wire::filter`), disco
//! and path choice (`tailnet_wire::path`), STUN requests and per-source
//! handshake budgets. It reads no clock (boringtun's is set from `now`,
//! see [`clock`](crate::clock)), opens no socket and draws no OS
//! randomness: IDs come from a ChaCha20 generator seeded by the caller.
//!
//! Inbound: datagram → classify (STUN, disco, WireGuard) → peer (by
//! receiver index, or by static key for initiations after a MAC1 check) →
//! boringtun decrypts → source checked against the peer's allowed IPs →
//! packet filter → [`Transmit::ToNetstack`]. Outbound: IP packet →
//! longest-prefix match on allowed IPs → boringtun encrypts (or queues it
//! and starts a handshake) → the path's choice: the trusted direct
//! address, or a direct candidate and the relay while disco has not proven
//! one. A peer without a disco key is plain WireGuard: one endpoint that
//! roams to the last authenticated source.

#![forbid(unsafe_code)]

mod clock;
pub mod config;
mod disco;
mod engine;
mod inbound;
mod limit;
mod out;
mod outbound;
mod peer;
mod peers;
pub mod stats;

pub use config::PeerConfig;
pub use engine::{Engine, EngineConfig, Event, PingError, Pong, RequestId, Transmit, TICK};
pub use out::Outgoing;

/// Where unit tests' time starts (the one clock read in this crate's
/// sources, test-only; the CI check allows this line alone).
#[cfg(test)]
pub(crate) fn test_epoch() -> std::time::Instant {
    std::time::Instant::now() // test-only clock
}
