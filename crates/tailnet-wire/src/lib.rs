//! Sans-IO building blocks of the tailnet node.
//!
//! Nothing in this crate touches a socket or reads a clock: it turns bytes
//! into typed views and back. Every parser here has a fuzz target in
//! `fuzz/fuzz_targets/`.
//!
//! - [`key`]: 32-byte Curve25519 keys with their text forms (WireGuard base64
//!   and Tailscale's `nodekey:<hex>` style prefixes).
//! - [`ip`]: a checked, zero-copy view of an IPv4/IPv6 packet header (source,
//!   destination, protocol, ports, TCP flags) for routing and filtering.
//! - [`prefix`]: a longest-prefix-match table from IP prefixes to values (the
//!   data plane's "allowed IPs" routing).
//! - [`wg`]: classification of a WireGuard datagram (message type, receiver
//!   index) before any cryptography runs.
//! - [`control`]: Tailscale control-protocol JSON types (register, map) and
//!   the length-prefixed zstd map stream.
//! - [`filter`]: the ACL packet filter: `tailcfg.FilterRule`s compiled into a
//!   matcher, and the Go client's per-packet decision with a UDP flow table.
//! - [`disco`]: disco packets (ping, pong, call-me-maybe) sealed with NaCl
//!   boxes, and telling STUN, disco and WireGuard apart on one socket.
//! - [`path`]: per-peer path selection (direct UDP or relay), driven by
//!   disco pings and pongs on a clock the caller passes in.
//! - [`noise`]: the ts2021 Noise IK handshake and its record framing, as
//!   sans-IO state machines for both the client and the coordinator.
//! - [`derp`]: the DERP relay protocol: frames and an incremental decoder,
//!   the ServerKey / ClientInfo / ServerInfo handshake with its NaCl boxes,
//!   the HTTP/1.1 upgrade.
//! - [`link`]: a one-direction WAN link model (delay, jitter, random loss, a
//!   rate-limited bottleneck with a tail-drop queue) on a caller's clock,
//!   for the impairment relay of `bench tunnel --wan` and simulated tests.

#![forbid(unsafe_code)]

pub mod control;
pub mod derp;
pub mod disco;
pub mod filter;
pub mod ip;
pub mod key;
pub mod link;
pub mod noise;
pub mod path;
pub mod prefix;
pub mod stun;
pub mod wg;

pub use ip::{IpPacket, IpPacketError, Protocol};
pub use key::{Key, KeyError, KeyKind, PrivateKey, PublicKey};
pub use prefix::PrefixTable;
pub use wg::{classify, WgKind, WgMessage};
