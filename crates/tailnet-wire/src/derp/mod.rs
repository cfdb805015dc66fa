//! DERP, Tailscale's relay protocol, sans-IO: frames, the ServerKey /
//! ClientInfo / ServerInfo handshake with its NaCl boxes, and the HTTP/1.1
//! upgrade that starts a connection.
//!
//! Compatible with Go tailscale v1.90.9 (`derp/derp.go`,
//! `derp/derp_client.go`, `derp/derpserver/`, `derp/derphttp/`; facts in
//! `shared/protocol/derp.md`). In short:
//!
//! 1. The client sends `GET /derp` with `Upgrade: DERP`
//!    ([`upgrade_request`]); the server answers `101 Switching Protocols`
//!    ([`parse_upgrade_response`] reads it) and the connection becomes a
//!    stream of frames: 1 byte of type, a 4-byte big-endian length, the
//!    payload ([`decode`], [`FrameReader`], [`Frame::encode`]).
//! 2. The server sends [`Frame::ServerKey`] (magic + its public key). The
//!    client sends [`Frame::ClientInfo`]: its public key and a box sealed
//!    to the server ([`client_info_frame`], opened by [`open_client_info`]).
//!    The server answers [`Frame::ServerInfo`], a box sealed to the client
//!    ([`server_info_frame`], [`open_server_info`]).
//! 3. Then packets: `SendPacket{dst, data}` from a client becomes
//!    `RecvPacket{src, data}` at the destination; `PeerGone`, `Ping`/`Pong`,
//!    `KeepAlive` and the rest as in [`Frame`].
//!
//! A box is NaCl `crypto_box` (X25519, then XSalsa20-Poly1305) written as a
//! 24-byte nonce followed by the box, whose 16-byte Poly1305 tag comes
//! **first** (Go's `key.NodePrivate.SealTo`, `x/crypto/nacl/box`): see
//! [`seal`] and [`open`].
//!
//! Decoding never panics on any input (fuzz target `derp_frame`). Frames of
//! a type this module does not know decode as [`Frame::Unknown`] so callers
//! can skip them, as Go does; a frame longer than the reader's limit is an
//! error the stream cannot recover from.

mod frame;
mod handshake;

#[cfg(test)]
mod tests;

pub use frame::{decode, Decoded, Frame, FrameReader, FrameType, PeerGoneReason, PeerPresentFlags};
pub use handshake::{
    client_info_frame, open, open_client_info, open_server_info, parse_upgrade_response, seal,
    seal_with_nonce, server_info_frame, server_key_frame, upgrade_request, ClientInfo, ServerInfo,
    UpgradeResponse, MAX_UPGRADE_HEAD,
};

use std::time::Duration;

/// The 8 bytes at the start of a ServerKey frame: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = *b"DERP\xf0\x9f\x94\x91";
/// The protocol version we speak: RecvPacket frames carry the source key.
pub const PROTOCOL_VERSION: u32 = 2;
/// Frame type byte plus the 4-byte big-endian length.
pub const FRAME_HEADER_LEN: usize = 5;
/// Length of a Curve25519 public key on the wire.
pub const KEY_LEN: usize = 32;
/// Length of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag inside a box.
pub const BOX_TAG_LEN: usize = 16;
/// Largest packet a SendPacket / RecvPacket carries, not counting the key.
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// Largest frame a client reads (Go's client refuses anything above 1 MiB).
pub const MAX_FRAME_LEN: usize = 1 << 20;
/// Largest JSON inside a ServerInfo box (Go's `MaxInfoLen`).
pub const MAX_INFO_LEN: usize = 1 << 20;
/// Smallest ClientInfo frame the server accepts: a key and a nonce.
pub const MIN_CLIENT_INFO_LEN: usize = KEY_LEN + NONCE_LEN;
/// Largest ClientInfo frame the server accepts (Go: 256 KiB, to bound JSON
/// from a client it does not trust yet).
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;
/// Smallest and largest Ping payload the server accepts; the Pong echoes
/// the first 8 bytes.
pub const PING_LEN: usize = 8;
/// Largest Ping payload the Go server accepts.
pub const MAX_PING_LEN: usize = 1000;
/// How often a server sends KeepAlive at least (Go adds 0..5 s of jitter).
pub const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// A client that hears nothing for this long reconnects.
pub const CLIENT_READ_TIMEOUT: Duration = Duration::from_secs(120);
/// The server's limit for the ServerKey / ClientInfo exchange.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP path of the upgrade.
pub const DERP_PATH: &str = "/derp";
/// Paths netcheck probes for latency; answered `200` on `GET` / `HEAD`.
pub const PROBE_PATHS: [&str; 2] = ["/derp/probe", "/derp/latency-check"];
/// The `Upgrade` token (compared case-insensitively by servers).
pub const UPGRADE_PROTOCOL: &str = "DERP";
/// Response header naming the protocol version.
pub const VERSION_HEADER: &str = "Derp-Version";
/// Response header with the server's public key in 64 hex digits.
pub const PUBLIC_KEY_HEADER: &str = "Derp-Public-Key";
/// Request header asking the server to skip the `101` (sent by Go clients
/// only when the server's TLS certificate carries its DERP key; ours never
/// does).
pub const FAST_START_HEADER: &str = "Derp-Fast-Start";

/// The 6 bytes that start a disco packet (`"TS💬"`).
pub const DISCO_MAGIC: [u8; 6] = *b"TS\xf0\x9f\x92\xac";
/// Shortest disco packet: magic, sender disco key, nonce.
pub const MIN_DISCO_LEN: usize = DISCO_MAGIC.len() + KEY_LEN + NONCE_LEN;

/// Whether a relayed packet is a disco message (Go's
/// `disco.LooksLikeDiscoWrapper`). Servers queue these apart from WireGuard
/// packets, and answer only these with PeerGone(not here).
pub fn looks_like_disco(packet: &[u8]) -> bool {
    packet.len() >= MIN_DISCO_LEN && packet[..DISCO_MAGIC.len()] == DISCO_MAGIC
}

/// Everything that can be wrong with DERP bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DerpError {
    /// A frame header announced more than the reader accepts; the stream
    /// cannot be resynchronised.
    #[error("DERP frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        /// Announced payload length.
        len: u64,
        /// The reader's limit.
        max: usize,
    },
    /// A known frame type with a payload of the wrong shape. The frame was
    /// consumed; the stream itself is still in sync.
    #[error("malformed DERP {frame_type:?} frame: {what}")]
    Malformed {
        /// The frame's type.
        frame_type: FrameType,
        /// What is wrong.
        what: &'static str,
    },
    /// A packet above [`MAX_PACKET_SIZE`] in a send, receive or forward
    /// frame.
    #[error("DERP packet of {len} bytes exceeds {MAX_PACKET_SIZE}")]
    PacketTooLarge {
        /// The packet's length.
        len: usize,
    },
    /// The ServerKey frame does not start with [`MAGIC`].
    #[error("DERP server greeting has no magic")]
    BadMagic,
    /// A box did not open: wrong key, tampered, or too short.
    #[error("DERP box does not open")]
    BoxOpen,
    /// ClientInfo length outside 56 bytes .. 256 KiB.
    #[error(
        "DERP ClientInfo of {len} bytes is outside {MIN_CLIENT_INFO_LEN}..={MAX_CLIENT_INFO_LEN}"
    )]
    ClientInfoLength {
        /// The frame's length.
        len: usize,
    },
    /// The JSON inside a box is not a ClientInfo / ServerInfo.
    #[error("DERP {what} JSON: {detail}")]
    Json {
        /// `ClientInfo` or `ServerInfo`.
        what: &'static str,
        /// serde's message.
        detail: String,
    },
    /// The upgrade response is not HTTP or not `101`.
    #[error("DERP upgrade refused: {0}")]
    Upgrade(String),
}
