//! The ts2021 control transport: a Noise IK handshake and encrypted records,
//! as sans-IO state machines for the client and the coordinator.
//!
//! Go's `control/controlbase` (tailscale v1.90.9) defines the protocol; see
//! `vendor-notes/ts2021.md` for what was checked there. In short:
//!
//! 1. The client builds a 101-byte *initiation* ([`ClientHandshake::start`])
//!    and sends it base64-encoded in the [`HANDSHAKE_HEADER`] of
//!    `POST` [`UPGRADE_PATH`].
//! 2. The server answers `101 Switching Protocols`, then writes the 51-byte
//!    *response* ([`ServerHandshake::respond`]); the client reads it
//!    ([`reply_len`], [`ClientHandshake::finish`]).
//! 3. Both sides now hold a [`Transport`]: records of type `0x04`, a 2-byte
//!    big-endian length, and ChaCha20-Poly1305 ciphertext under a
//!    **big-endian** counter nonce, at most [`MAX_RECORD_LEN`] bytes each.
//! 4. The server may first send an *early payload* ([`early`]); HTTP/2 with
//!    prior knowledge follows.
//!
//! The handshake math is `snow`'s standard `Noise_IK_25519_ChaChaPoly_BLAKE2s`
//! with the prologue from [`prologue`]. The transport is ours, because
//! Tailscale's nonce is not the standard Noise one.
//!
//! ```
//! use tailnet_wire::noise::{ClientHandshake, ServerHandshake};
//! # fn public(private: [u8; 32]) -> [u8; 32] { x25519_dalek::x25519(private, x25519_dalek::X25519_BASEPOINT_BYTES) }
//! let (machine, control) = ([1u8; 32], [2u8; 32]);
//! let (client, initiation) = ClientHandshake::start(machine, public(control), 130)?;
//! let (response, mut server, peer, version) = ServerHandshake::respond(control, &initiation)?;
//! assert_eq!((peer.as_bytes(), version), (&public(machine), 130));
//! let mut client = client.finish(&response)?;
//! let wire = client.seal(b"PRI * HTTP/2.0")?;
//! assert_eq!(server.open(&wire)?, b"PRI * HTTP/2.0");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod early;
mod handshake;
mod transport;

#[cfg(test)]
mod tests;

pub use early::{EarlyPayloadError, EarlyPayloadReader, EarlyPayloadStatus};
pub use handshake::{error_frame, reply_len, ClientHandshake, HandshakeError, ServerHandshake};
pub use transport::{RecordDecoder, RecordError, Sealer, Transport};

/// The Noise protocol name; its BLAKE2s hash starts the handshake hash and
/// chaining key.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";

/// The prologue is this text followed by the protocol version in decimal.
pub const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";

/// Message type of the client's handshake initiation.
pub const MSG_TYPE_INITIATION: u8 = 0x01;
/// Message type of the server's handshake response.
pub const MSG_TYPE_RESPONSE: u8 = 0x02;
/// Message type of an unauthenticated error text the server sends instead of
/// a response.
pub const MSG_TYPE_ERROR: u8 = 0x03;
/// Message type of a transport record.
pub const MSG_TYPE_RECORD: u8 = 0x04;

/// Header of every message except the initiation: type, BE u16 length.
pub const HEADER_LEN: usize = 3;
/// Header of the initiation: BE u16 version, type, BE u16 length.
pub const INITIATION_HEADER_LEN: usize = 5;
/// Length of the whole initiation (header, ephemeral key, encrypted machine
/// key, tag).
pub const INITIATION_LEN: usize = 101;
/// Length of the whole response (header, ephemeral key, tag).
pub const RESPONSE_LEN: usize = 51;

/// The Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest transport record on the wire, header included. Go's reader
/// refuses anything larger.
pub const MAX_RECORD_LEN: usize = 4096;
/// Largest ciphertext in one record.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_RECORD_LEN - HEADER_LEN;
/// Largest plaintext in one record (4077 bytes).
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;

/// HTTP path of the protocol switch.
pub const UPGRADE_PATH: &str = "/ts2021";
/// Value of the `Upgrade` header in the request and the `101` reply.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// Request header carrying the initiation, standard base64 with padding.
pub const HANDSHAKE_HEADER: &str = "X-Tailscale-Handshake";

/// The prologue both sides mix into the handshake for `protocol_version`,
/// e.g. `Tailscale Control Protocol v130`.
pub fn prologue(protocol_version: u16) -> Vec<u8> {
    format!("{PROLOGUE_PREFIX}{protocol_version}").into_bytes()
}

/// True when X25519 with `private` and `public` gives all zeros: `public`
/// is a low-order point. Go's `curve25519.X25519` refuses such a result, so
/// both our sides refuse the key too. (With X25519's clamping the result is
/// zero for every private key or for none, so any of our keys can test.)
fn low_order(private: &[u8; 32], public: &[u8; 32]) -> bool {
    x25519_dalek::x25519(*private, *public) == [0u8; 32]
}
