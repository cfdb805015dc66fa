//! Disco: the peer-discovery messages Tailscale nodes exchange to find
//! direct UDP paths (`shared/protocol/disco.md`; Go's `disco/disco.go`).
//!
//! A disco packet on the wire (UDP, or the payload of a DERP packet):
//!
//! | off | len  | field |
//! |-----|------|-------|
//! | 0   | 6    | magic `TS💬` = `54 53 F0 9F 92 AC` |
//! | 6   | 32   | the sender's disco public key |
//! | 38  | 24   | nonce |
//! | 62  | 16+n | NaCl box: Poly1305 tag, then the encrypted message |
//!
//! The box key is NaCl's `crypto_box_beforenm(peer disco public, own disco
//! private)` (X25519 then HSalsa20), the cipher XSalsa20-Poly1305; both
//! sides derive the same key ([`DiscoBox`]). The message inside is
//! `[type][version = 0][body]` ([`Message`]).
//!
//! [`classify_datagram`] tells STUN, Geneve, disco and WireGuard apart on
//! one UDP socket in Go's order (`packetLooksLike`).

use crate::key::{PrivateKey, PublicKey};
use crypto_box::aead::generic_array::GenericArray;
use crypto_box::aead::AeadInPlace;
use crypto_box::SalsaBox;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// The 6-byte magic every disco packet starts with (`TS💬`).
pub const MAGIC: [u8; 6] = [0x54, 0x53, 0xF0, 0x9F, 0x92, 0xAC];
/// Length of a key in the header.
pub const KEY_LEN: usize = 32;
/// Length of the nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag at the start of the box.
pub const TAG_LEN: usize = 16;
/// Magic plus sender key: what magicsock checks before calling a datagram
/// disco (Go's `discoHeaderLen`).
pub const HEADER_LEN: usize = MAGIC.len() + KEY_LEN;
/// Magic, key and nonce: the box starts here.
pub const BOX_OFFSET: usize = HEADER_LEN + NONCE_LEN;
/// Everything a sealed packet adds around its message.
pub const OVERHEAD: usize = BOX_OFFSET + TAG_LEN;
/// A transaction ID of a ping and its pong.
pub type TxId = [u8; 12];

/// Message type bytes.
const TYPE_PING: u8 = 0x01;
const TYPE_PONG: u8 = 0x02;
const TYPE_CALL_ME_MAYBE: u8 = 0x03;
/// Version byte we send (and the only one CallMeMaybe accepts).
const VERSION: u8 = 0;
/// Type and version.
const MSG_HEADER_LEN: usize = 2;
const TXID_LEN: usize = 12;
/// An address on the wire: 16-byte IP (IPv4 v4-mapped) + big-endian port.
const ADDR_LEN: usize = 18;
/// Pong body: TxID + address.
const PONG_LEN: usize = TXID_LEN + ADDR_LEN;
/// Largest ping padding we will build (more than any datagram holds).
pub const MAX_PADDING: usize = 65_535;

/// Why a disco packet or message was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoError {
    /// Too short for a disco packet, or the magic is wrong.
    #[error("not a disco packet")]
    NotDisco,
    /// The box did not open (wrong key, tampered, or truncated).
    #[error("disco box does not open")]
    BadBox,
    /// The decrypted message is shorter than its header or its type's body.
    #[error("disco message too short")]
    Short,
    /// The message type is not one we know.
    #[error("unknown disco message type {0:#04x}")]
    UnknownType(u8),
}

/// What a UDP datagram on the node's socket is (Go's `packetLooksLike`,
/// checked in this order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramKind {
    /// A STUN binding message (request or response).
    Stun,
    /// Geneve-encapsulated peer-relay traffic (not supported here).
    Geneve,
    /// A disco packet.
    Disco,
    /// Anything else: WireGuard (checked further by [`crate::classify`]).
    WireGuard,
}

/// Classifies a datagram received on the node's UDP socket.
pub fn classify_datagram(b: &[u8]) -> DatagramKind {
    if crate::stun::is_stun(b) && b[1] == 0x01 {
        return DatagramKind::Stun;
    }
    if looks_like_geneve(b) {
        return DatagramKind::Geneve;
    }
    if looks_like_disco(b) {
        return DatagramKind::Disco;
    }
    DatagramKind::WireGuard
}

/// Geneve as the peer-relay feature uses it (`net/packet/geneve.go`):
/// version 0, no critical options, reserved byte 0, protocol 0x7A11
/// (disco) or 0x7A12 (WireGuard).
fn looks_like_geneve(b: &[u8]) -> bool {
    b.len() >= 8
        && b[0] & 0xC0 == 0
        && b[1] & 0x3F == 0
        && b[7] == 0
        && matches!(u16::from_be_bytes([b[2], b[3]]), 0x7A11 | 0x7A12)
}

/// Whether `b` is long enough for a disco header and starts with the magic
/// (magicsock's test; a packet this short still fails to open).
pub fn looks_like_disco(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[..MAGIC.len()] == MAGIC
}

/// The sender's disco public key of a packet that looks like disco.
pub fn sender_key(packet: &[u8]) -> Option<PublicKey> {
    if !looks_like_disco(packet) {
        return None;
    }
    let key: [u8; KEY_LEN] = packet[MAGIC.len()..HEADER_LEN].try_into().ok()?;
    Some(PublicKey::from_bytes(key))
}

/// A disco ping: "do you hear me on this path?"
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Random; the pong echoes it.
    pub tx_id: TxId,
    /// The sender's node (WireGuard) public key; very old clients omit it.
    pub node_key: Option<PublicKey>,
    /// Zero bytes after the body (path-MTU probes).
    pub padding: usize,
}

/// A disco pong: the answer to a ping, with the source the ping came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// The ping's transaction ID.
    pub tx_id: TxId,
    /// The address and port the responder saw the ping come from.
    pub src: SocketAddr,
}

/// "Ping me at these endpoints" (sent over DERP when starting discovery).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeMaybe {
    /// The sender's UDP endpoints.
    pub endpoints: Vec<SocketAddr>,
}

/// A decrypted disco message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Type 0x01.
    Ping(Ping),
    /// Type 0x02.
    Pong(Pong),
    /// Type 0x03.
    CallMeMaybe(CallMeMaybe),
}

fn read_addr(b: &[u8]) -> Option<SocketAddr> {
    let ip: [u8; 16] = b.get(..16)?.try_into().ok()?;
    let port = u16::from_be_bytes([*b.get(16)?, *b.get(17)?]);
    let ip = Ipv6Addr::from(ip);
    let ip = match ip.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(ip),
    };
    Some(SocketAddr::new(ip, port))
}

fn write_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    let ip = match a.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&a.port().to_be_bytes());
}

impl Message {
    /// Parses a decrypted message. Trailing bytes are ignored and the
    /// version byte is not checked (except by CallMeMaybe, where a version
    /// other than 0, an empty body or a length that is not a multiple of
    /// 18 reads as an empty list), as Go's `disco.Parse` does.
    pub fn parse(p: &[u8]) -> Result<Message, DiscoError> {
        if p.len() < MSG_HEADER_LEN {
            return Err(DiscoError::Short);
        }
        let (ty, ver, body) = (p[0], p[1], &p[MSG_HEADER_LEN..]);
        match ty {
            TYPE_PING => {
                let tx_id: TxId = body
                    .get(..TXID_LEN)
                    .and_then(|t| t.try_into().ok())
                    .ok_or(DiscoError::Short)?;
                let rest = &body[TXID_LEN..];
                let (node_key, padding) = match rest.get(..KEY_LEN) {
                    Some(k) => {
                        let k: [u8; KEY_LEN] = k.try_into().map_err(|_| DiscoError::Short)?;
                        (Some(PublicKey::from_bytes(k)), rest.len() - KEY_LEN)
                    }
                    // Without a key, everything after the TxID is padding.
                    None => (None, rest.len()),
                };
                Ok(Message::Ping(Ping {
                    tx_id,
                    node_key,
                    padding,
                }))
            }
            TYPE_PONG => {
                if body.len() < PONG_LEN {
                    return Err(DiscoError::Short);
                }
                let tx_id: TxId = body[..TXID_LEN].try_into().map_err(|_| DiscoError::Short)?;
                let src = read_addr(&body[TXID_LEN..PONG_LEN]).ok_or(DiscoError::Short)?;
                Ok(Message::Pong(Pong { tx_id, src }))
            }
            TYPE_CALL_ME_MAYBE => {
                let mut m = CallMeMaybe::default();
                if ver != VERSION || body.is_empty() || body.len() % ADDR_LEN != 0 {
                    return Ok(Message::CallMeMaybe(m));
                }
                m.endpoints = body.chunks_exact(ADDR_LEN).filter_map(read_addr).collect();
                Ok(Message::CallMeMaybe(m))
            }
            other => Err(DiscoError::UnknownType(other)),
        }
    }

    /// Appends the message's bytes (type, version, body) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Message::Ping(p) => {
                out.extend_from_slice(&[TYPE_PING, VERSION]);
                out.extend_from_slice(&p.tx_id);
                if let Some(k) = &p.node_key {
                    out.extend_from_slice(k.as_bytes());
                }
                let pad = p.padding.min(MAX_PADDING);
                out.resize(out.len() + pad, 0);
            }
            Message::Pong(p) => {
                out.extend_from_slice(&[TYPE_PONG, VERSION]);
                out.extend_from_slice(&p.tx_id);
                write_addr(out, &p.src);
            }
            Message::CallMeMaybe(m) => {
                out.extend_from_slice(&[TYPE_CALL_ME_MAYBE, VERSION]);
                for e in &m.endpoints {
                    write_addr(out, e);
                }
            }
        }
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        MSG_HEADER_LEN
            + match self {
                Message::Ping(p) => {
                    TXID_LEN + p.node_key.map_or(0, |_| KEY_LEN) + p.padding.min(MAX_PADDING)
                }
                Message::Pong(_) => PONG_LEN,
                Message::CallMeMaybe(m) => ADDR_LEN * m.endpoints.len(),
            }
    }
}

/// The precomputed NaCl box between our disco key and one peer's: seals
/// packets to it and opens packets from it.
pub struct DiscoBox {
    inner: SalsaBox,
    /// Our disco public key, written into every packet we seal.
    ours: PublicKey,
    /// The peer's disco public key.
    theirs: PublicKey,
}

impl std::fmt::Debug for DiscoBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoBox")
            .field("ours", &self.ours)
            .field("theirs", &self.theirs)
            .finish_non_exhaustive()
    }
}

/// The disco public key of a disco private key.
pub fn public_of(private: &PrivateKey) -> PublicKey {
    let sk = crypto_box::SecretKey::from(*private.as_bytes());
    PublicKey::from_bytes(sk.public_key().to_bytes())
}

impl DiscoBox {
    /// `crypto_box_beforenm(theirs, ours)`: one X25519 and HSalsa20.
    pub fn new(ours: &PrivateKey, theirs: &PublicKey) -> DiscoBox {
        let sk = crypto_box::SecretKey::from(*ours.as_bytes());
        let pk = crypto_box::PublicKey::from(*theirs.as_bytes());
        DiscoBox {
            inner: SalsaBox::new(&pk, &sk),
            ours: PublicKey::from_bytes(sk.public_key().to_bytes()),
            theirs: *theirs,
        }
    }

    /// The peer's disco public key.
    pub fn peer(&self) -> &PublicKey {
        &self.theirs
    }

    /// A packet carrying `msg`, sealed with `nonce` (24 random bytes; a
    /// nonce must never repeat under one key).
    pub fn seal(&self, msg: &Message, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(OVERHEAD + msg.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(self.ours.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&[0u8; TAG_LEN]);
        msg.encode(&mut out);
        self.seal_in_place(&mut out, nonce);
        out
    }

    /// [`seal`](Self::seal) with a nonce from the operating system's
    /// random source.
    pub fn seal_random(&self, msg: &Message) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // getrandom fails only where the OS has no entropy source at all.
        getrandom::fill(&mut nonce).expect("operating system random source");
        self.seal(msg, nonce)
    }

    fn seal_in_place(&self, out: &mut [u8], nonce: [u8; NONCE_LEN]) {
        let (head, body) = out.split_at_mut(OVERHEAD);
        // Encryption of a slice this size cannot fail (the length limit is
        // far above any disco message).
        if let Ok(tag) =
            self.inner
                .encrypt_in_place_detached(GenericArray::from_slice(&nonce), b"", body)
        {
            head[BOX_OFFSET..].copy_from_slice(&tag);
        }
    }

    /// Opens a packet from this peer and parses its message. The sender
    /// key in the header must be the peer's.
    pub fn open(&self, packet: &[u8]) -> Result<Message, DiscoError> {
        let mut buf = Vec::new();
        self.open_into(packet, &mut buf)?;
        Message::parse(&buf)
    }

    /// Opens a packet into `plain` (cleared first); returns nothing but
    /// whether it opened.
    pub fn open_into(&self, packet: &[u8], plain: &mut Vec<u8>) -> Result<(), DiscoError> {
        if packet.len() < OVERHEAD || !looks_like_disco(packet) {
            return Err(DiscoError::NotDisco);
        }
        if packet[MAGIC.len()..HEADER_LEN] != self.theirs.as_bytes()[..] {
            return Err(DiscoError::BadBox);
        }
        let nonce = GenericArray::from_slice(&packet[HEADER_LEN..BOX_OFFSET]);
        let tag = GenericArray::from_slice(&packet[BOX_OFFSET..OVERHEAD]);
        plain.clear();
        plain.extend_from_slice(&packet[OVERHEAD..]);
        self.inner
            .decrypt_in_place_detached(nonce, b"", plain, tag)
            .map_err(|_| DiscoError::BadBox)
    }
}

#[cfg(test)]
mod tests;
