//! DERP frames: type byte, 4-byte big-endian length, payload
//! (`derp/derp.go` at v1.90.9).

use super::{DerpError, FRAME_HEADER_LEN, KEY_LEN, MAGIC, MAX_PACKET_SIZE, MAX_PING_LEN, PING_LEN};
use crate::PublicKey;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// A frame's type byte. Unknown values are valid: such frames are skipped.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FrameType(pub u8);

impl FrameType {
    /// S→C: magic + server public key.
    pub const SERVER_KEY: FrameType = FrameType(0x01);
    /// C→S: client public key + nonce + box(JSON ClientInfo).
    pub const CLIENT_INFO: FrameType = FrameType(0x02);
    /// S→C: nonce + box(JSON ServerInfo).
    pub const SERVER_INFO: FrameType = FrameType(0x03);
    /// C→S: destination key + packet.
    pub const SEND_PACKET: FrameType = FrameType(0x04);
    /// S→C: source key + packet (protocol version 2).
    pub const RECV_PACKET: FrameType = FrameType(0x05);
    /// S→C: no payload.
    pub const KEEP_ALIVE: FrameType = FrameType(0x06);
    /// C→S: one byte, 1 = this is my home region.
    pub const NOTE_PREFERRED: FrameType = FrameType(0x07);
    /// S→C: key + reason byte.
    pub const PEER_GONE: FrameType = FrameType(0x08);
    /// S→C (mesh watchers): key + 16-byte IP + BE port + flags.
    pub const PEER_PRESENT: FrameType = FrameType(0x09);
    /// Mesh: source key + destination key + packet.
    pub const FORWARD_PACKET: FrameType = FrameType(0x0a);
    /// C→S (mesh key only): subscribe to connections.
    pub const WATCH_CONNS: FrameType = FrameType(0x10);
    /// C→S (mesh key only): close a peer's connection.
    pub const CLOSE_PEER: FrameType = FrameType(0x11);
    /// Both ways: 8 bytes to echo.
    pub const PING: FrameType = FrameType(0x12);
    /// Both ways: the 8 bytes of a Ping.
    pub const PONG: FrameType = FrameType(0x13);
    /// S→C: UTF-8 problem text, empty = healthy.
    pub const HEALTH: FrameType = FrameType(0x14);
    /// S→C: BE u32 ms "reconnect in" + BE u32 ms "try for".
    pub const RESTARTING: FrameType = FrameType(0x15);

    fn name(self) -> Option<&'static str> {
        Some(match self {
            Self::SERVER_KEY => "ServerKey",
            Self::CLIENT_INFO => "ClientInfo",
            Self::SERVER_INFO => "ServerInfo",
            Self::SEND_PACKET => "SendPacket",
            Self::RECV_PACKET => "RecvPacket",
            Self::KEEP_ALIVE => "KeepAlive",
            Self::NOTE_PREFERRED => "NotePreferred",
            Self::PEER_GONE => "PeerGone",
            Self::PEER_PRESENT => "PeerPresent",
            Self::FORWARD_PACKET => "ForwardPacket",
            Self::WATCH_CONNS => "WatchConns",
            Self::CLOSE_PEER => "ClosePeer",
            Self::PING => "Ping",
            Self::PONG => "Pong",
            Self::HEALTH => "Health",
            Self::RESTARTING => "Restarting",
            _ => return None,
        })
    }
}

impl fmt::Debug for FrameType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "FrameType(0x{:02x})", self.0),
        }
    }
}

/// Why a server says a peer is not reachable through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// The peer was connected and left (sent to those it had sent to).
    Disconnected,
    /// The server does not know the destination of a packet.
    NotHere,
    /// A reason byte this module does not know.
    Other(u8),
}

impl PeerGoneReason {
    /// The wire byte.
    pub fn to_byte(self) -> u8 {
        match self {
            PeerGoneReason::Disconnected => 0x00,
            PeerGoneReason::NotHere => 0x01,
            PeerGoneReason::Other(b) => b,
        }
    }

    /// From the wire byte.
    pub fn from_byte(b: u8) -> Self {
        match b {
            0x00 => PeerGoneReason::Disconnected,
            0x01 => PeerGoneReason::NotHere,
            b => PeerGoneReason::Other(b),
        }
    }
}

/// The flags byte of a PeerPresent frame (mesh only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerPresentFlags(pub u8);

/// One decoded frame. Byte slices borrow the input.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame<'a> {
    /// The server's greeting: its public key (bytes after it are ignored).
    ServerKey {
        /// The server's DERP public key.
        key: PublicKey,
    },
    /// The client's key and its sealed ClientInfo.
    ClientInfo {
        /// The client's node public key (its DERP address).
        key: PublicKey,
        /// Nonce followed by the box.
        sealed: &'a [u8],
    },
    /// The server's sealed ServerInfo.
    ServerInfo {
        /// Nonce followed by the box.
        sealed: &'a [u8],
    },
    /// A packet for `dst`.
    SendPacket {
        /// Destination node key.
        dst: PublicKey,
        /// The packet (at most [`MAX_PACKET_SIZE`]).
        packet: &'a [u8],
    },
    /// A packet from `src`.
    RecvPacket {
        /// Source node key.
        src: PublicKey,
        /// The packet.
        packet: &'a [u8],
    },
    /// Server keep-alive.
    KeepAlive,
    /// Whether this server is the client's home region.
    NotePreferred {
        /// True for home.
        preferred: bool,
    },
    /// `key` cannot be reached through this server.
    PeerGone {
        /// The peer.
        key: PublicKey,
        /// Why (an absent reason byte means disconnected).
        reason: PeerGoneReason,
    },
    /// A peer connected (mesh watchers only).
    PeerPresent {
        /// The peer.
        key: PublicKey,
        /// Its address, when the server sent one.
        endpoint: Option<SocketAddr>,
        /// Its flags, when the server sent them (only after an endpoint).
        flags: Option<PeerPresentFlags>,
    },
    /// A packet relayed between mesh servers.
    ForwardPacket {
        /// Source node key.
        src: PublicKey,
        /// Destination node key.
        dst: PublicKey,
        /// The packet.
        packet: &'a [u8],
    },
    /// Subscribe to connection changes (mesh only).
    WatchConns,
    /// Close `key`'s connection (mesh only).
    ClosePeer {
        /// The peer to disconnect.
        key: PublicKey,
    },
    /// Echo request; a longer payload is accepted and only its first 8
    /// bytes are kept.
    Ping {
        /// The bytes to echo.
        data: [u8; 8],
    },
    /// Echo reply.
    Pong {
        /// The echoed bytes.
        data: [u8; 8],
    },
    /// Connection health from the server; empty = healthy.
    Health {
        /// The problem text (UTF-8 by convention, not checked).
        problem: &'a [u8],
    },
    /// The server is restarting.
    Restarting {
        /// Advised wait before reconnecting, in milliseconds.
        reconnect_in_ms: u32,
        /// How long to keep trying, in milliseconds.
        try_for_ms: u32,
    },
    /// A frame type this module does not know; skip it.
    Unknown {
        /// Its type byte.
        frame_type: u8,
        /// Its payload.
        payload: &'a [u8],
    },
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not a whole frame yet: at least this many more bytes are needed.
    NeedMore(usize),
    /// A frame, and how many bytes of the buffer it took (header included).
    Frame {
        /// The frame.
        frame: Frame<'a>,
        /// Bytes consumed.
        len: usize,
    },
}

fn key_at(b: &[u8], at: usize) -> Option<PublicKey> {
    let k: [u8; KEY_LEN] = b.get(at..at + KEY_LEN)?.try_into().ok()?;
    Some(PublicKey::from_bytes(k))
}

fn malformed(frame_type: FrameType, what: &'static str) -> DerpError {
    DerpError::Malformed { frame_type, what }
}

fn packet(p: &[u8]) -> Result<&[u8], DerpError> {
    if p.len() > MAX_PACKET_SIZE {
        return Err(DerpError::PacketTooLarge { len: p.len() });
    }
    Ok(p)
}

fn eight(b: &[u8]) -> Option<[u8; 8]> {
    b.get(..8)?.try_into().ok()
}

/// Reads the frame header at the start of `buf`: type and payload length.
pub(crate) fn header(buf: &[u8]) -> Option<(FrameType, usize)> {
    let h: [u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]);
    Some((FrameType(h[0]), len as usize))
}

/// Decodes the frame at the start of `buf`, refusing payloads longer than
/// `max_frame_len` as soon as the header is in.
///
/// A [`DerpError::Malformed`] or [`DerpError::PacketTooLarge`] frame was
/// complete: the stream is still in sync after skipping it (its length is
/// in the header). [`DerpError::FrameTooLarge`] is not recoverable.
pub fn decode(buf: &[u8], max_frame_len: usize) -> Result<Decoded<'_>, DerpError> {
    let Some((ft, len)) = header(buf) else {
        return Ok(Decoded::NeedMore(FRAME_HEADER_LEN - buf.len()));
    };
    if len > max_frame_len {
        return Err(DerpError::FrameTooLarge {
            len: len as u64,
            max: max_frame_len,
        });
    }
    let total = FRAME_HEADER_LEN + len;
    let Some(p) = buf.get(FRAME_HEADER_LEN..total) else {
        return Ok(Decoded::NeedMore(total - buf.len()));
    };
    let frame = parse_payload(ft, p)?;
    Ok(Decoded::Frame { frame, len: total })
}

fn parse_payload(ft: FrameType, p: &[u8]) -> Result<Frame<'_>, DerpError> {
    let short = || malformed(ft, "too short");
    Ok(match ft {
        FrameType::SERVER_KEY => {
            if p.len() < MAGIC.len() + KEY_LEN {
                return Err(short());
            }
            if p[..MAGIC.len()] != MAGIC {
                return Err(DerpError::BadMagic);
            }
            Frame::ServerKey {
                key: key_at(p, MAGIC.len()).ok_or_else(short)?,
            }
        }
        FrameType::CLIENT_INFO => {
            if p.len() < super::MIN_CLIENT_INFO_LEN {
                return Err(short());
            }
            Frame::ClientInfo {
                key: key_at(p, 0).ok_or_else(short)?,
                sealed: &p[KEY_LEN..],
            }
        }
        FrameType::SERVER_INFO => {
            if p.len() < super::NONCE_LEN {
                return Err(short());
            }
            Frame::ServerInfo { sealed: p }
        }
        FrameType::SEND_PACKET => Frame::SendPacket {
            dst: key_at(p, 0).ok_or_else(short)?,
            packet: packet(&p[KEY_LEN..])?,
        },
        FrameType::RECV_PACKET => Frame::RecvPacket {
            src: key_at(p, 0).ok_or_else(short)?,
            packet: packet(&p[KEY_LEN..])?,
        },
        FrameType::KEEP_ALIVE => Frame::KeepAlive,
        FrameType::NOTE_PREFERRED => match p {
            [b] => Frame::NotePreferred { preferred: *b != 0 },
            _ => return Err(malformed(ft, "not one byte")),
        },
        FrameType::PEER_GONE => Frame::PeerGone {
            key: key_at(p, 0).ok_or_else(short)?,
            reason: p.get(KEY_LEN).map_or(PeerGoneReason::Disconnected, |b| {
                PeerGoneReason::from_byte(*b)
            }),
        },
        FrameType::PEER_PRESENT => {
            let key = key_at(p, 0).ok_or_else(short)?;
            let rest = &p[KEY_LEN..];
            let endpoint = rest.get(..18).map(|a| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&a[..16]);
                let ip = Ipv6Addr::from(ip);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                SocketAddr::new(ip, u16::from_be_bytes([a[16], a[17]]))
            });
            let flags = endpoint
                .and_then(|_| rest.get(18))
                .map(|f| PeerPresentFlags(*f));
            Frame::PeerPresent {
                key,
                endpoint,
                flags,
            }
        }
        FrameType::FORWARD_PACKET => Frame::ForwardPacket {
            src: key_at(p, 0).ok_or_else(short)?,
            dst: key_at(p, KEY_LEN).ok_or_else(short)?,
            packet: packet(&p[2 * KEY_LEN..])?,
        },
        FrameType::WATCH_CONNS => {
            if !p.is_empty() {
                return Err(malformed(ft, "has a payload"));
            }
            Frame::WatchConns
        }
        FrameType::CLOSE_PEER => {
            if p.len() != KEY_LEN {
                return Err(malformed(ft, "not one key"));
            }
            Frame::ClosePeer {
                key: key_at(p, 0).ok_or_else(short)?,
            }
        }
        FrameType::PING => {
            if p.len() > MAX_PING_LEN {
                return Err(malformed(ft, "longer than 1000 bytes"));
            }
            Frame::Ping {
                data: eight(p).ok_or_else(short)?,
            }
        }
        FrameType::PONG => Frame::Pong {
            data: eight(p).ok_or_else(short)?,
        },
        FrameType::HEALTH => Frame::Health { problem: p },
        FrameType::RESTARTING => {
            let b = eight(p).ok_or_else(short)?;
            Frame::Restarting {
                reconnect_in_ms: u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
                try_for_ms: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            }
        }
        FrameType(t) => Frame::Unknown {
            frame_type: t,
            payload: p,
        },
    })
}

fn put_header(out: &mut Vec<u8>, ft: FrameType, len: usize) {
    out.push(ft.0);
    // Frames we build are bounded by MAX_PACKET_SIZE plus keys, or by a
    // caller's payload; saturate rather than wrap for absurd sizes.
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
}

impl Frame<'_> {
    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::ServerKey { .. } => FrameType::SERVER_KEY,
            Frame::ClientInfo { .. } => FrameType::CLIENT_INFO,
            Frame::ServerInfo { .. } => FrameType::SERVER_INFO,
            Frame::SendPacket { .. } => FrameType::SEND_PACKET,
            Frame::RecvPacket { .. } => FrameType::RECV_PACKET,
            Frame::KeepAlive => FrameType::KEEP_ALIVE,
            Frame::NotePreferred { .. } => FrameType::NOTE_PREFERRED,
            Frame::PeerGone { .. } => FrameType::PEER_GONE,
            Frame::PeerPresent { .. } => FrameType::PEER_PRESENT,
            Frame::ForwardPacket { .. } => FrameType::FORWARD_PACKET,
            Frame::WatchConns => FrameType::WATCH_CONNS,
            Frame::ClosePeer { .. } => FrameType::CLOSE_PEER,
            Frame::Ping { .. } => FrameType::PING,
            Frame::Pong { .. } => FrameType::PONG,
            Frame::Health { .. } => FrameType::HEALTH,
            Frame::Restarting { .. } => FrameType::RESTARTING,
            Frame::Unknown { frame_type, .. } => FrameType(*frame_type),
        }
    }

    /// Appends the frame, header included, to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let ft = self.frame_type();
        match self {
            Frame::ServerKey { key } => {
                put_header(out, ft, MAGIC.len() + KEY_LEN);
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(key.as_bytes());
            }
            Frame::ClientInfo { key, sealed } => {
                put_header(out, ft, KEY_LEN + sealed.len());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(sealed);
            }
            Frame::ServerInfo { sealed } => {
                put_header(out, ft, sealed.len());
                out.extend_from_slice(sealed);
            }
            Frame::SendPacket { dst: key, packet } | Frame::RecvPacket { src: key, packet } => {
                put_header(out, ft, KEY_LEN + packet.len());
                out.extend_from_slice(key.as_bytes());
                out.extend_from_slice(packet);
            }
            Frame::KeepAlive | Frame::WatchConns => put_header(out, ft, 0),
            Frame::NotePreferred { preferred } => {
                put_header(out, ft, 1);
                out.push(u8::from(*preferred));
            }
            Frame::PeerGone { key, reason } => {
                put_header(out, ft, KEY_LEN + 1);
                out.extend_from_slice(key.as_bytes());
                out.push(reason.to_byte());
            }
            Frame::PeerPresent {
                key,
                endpoint,
                flags,
            } => {
                let len = KEY_LEN
                    + endpoint.map_or(0, |_| 18)
                    + usize::from(endpoint.is_some() && flags.is_some());
                put_header(out, ft, len);
                out.extend_from_slice(key.as_bytes());
                if let Some(ep) = endpoint {
                    let ip = match ep.ip() {
                        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                        IpAddr::V6(v6) => v6,
                    };
                    out.extend_from_slice(&ip.octets());
                    out.extend_from_slice(&ep.port().to_be_bytes());
                    if let Some(f) = flags {
                        out.push(f.0);
                    }
                }
            }
            Frame::ForwardPacket { src, dst, packet } => {
                put_header(out, ft, 2 * KEY_LEN + packet.len());
                out.extend_from_slice(src.as_bytes());
                out.extend_from_slice(dst.as_bytes());
                out.extend_from_slice(packet);
            }
            Frame::ClosePeer { key } => {
                put_header(out, ft, KEY_LEN);
                out.extend_from_slice(key.as_bytes());
            }
            Frame::Ping { data } | Frame::Pong { data } => {
                put_header(out, ft, PING_LEN);
                out.extend_from_slice(data);
            }
            Frame::Health { problem } => {
                put_header(out, ft, problem.len());
                out.extend_from_slice(problem);
            }
            Frame::Restarting {
                reconnect_in_ms,
                try_for_ms,
            } => {
                put_header(out, ft, 8);
                out.extend_from_slice(&reconnect_in_ms.to_be_bytes());
                out.extend_from_slice(&try_for_ms.to_be_bytes());
            }
            Frame::Unknown { payload, .. } => {
                put_header(out, ft, payload.len());
                out.extend_from_slice(payload);
            }
        }
    }

    /// The encoded frame as a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// An incremental decoder over a byte stream: push whatever the socket
/// gave, then take frames until there are none.
///
/// ```
/// use tailnet_wire::derp::{Frame, FrameReader, MAX_FRAME_LEN};
/// let wire = Frame::Ping { data: *b"12345678" }.to_vec();
/// let mut r = FrameReader::new(MAX_FRAME_LEN);
/// r.push(&wire[..3]);
/// assert_eq!(r.next_frame()?, None);
/// r.push(&wire[3..]);
/// assert_eq!(r.next_frame()?, Some(Frame::Ping { data: *b"12345678" }));
/// assert_eq!(r.next_frame()?, None);
/// # Ok::<(), tailnet_wire::derp::DerpError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    start: usize,
    /// Length of the frame last returned, skipped on the next call.
    pending: usize,
    max_frame_len: usize,
}

impl FrameReader {
    /// A reader refusing frames whose payload exceeds `max_frame_len`.
    pub fn new(max_frame_len: usize) -> Self {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            pending: 0,
            max_frame_len,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.start += std::mem::take(&mut self.pending);
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start - self.pending
    }

    /// The next whole frame, or `None` until more bytes are pushed.
    ///
    /// After a [`DerpError::Malformed`] or [`DerpError::PacketTooLarge`]
    /// the bad frame is skipped and reading may go on;
    /// [`DerpError::FrameTooLarge`] repeats on every call.
    pub fn next_frame(&mut self) -> Result<Option<Frame<'_>>, DerpError> {
        self.start += std::mem::take(&mut self.pending);
        let unread = &self.buf[self.start..];
        match decode(unread, self.max_frame_len) {
            Ok(Decoded::NeedMore(_)) => Ok(None),
            Ok(Decoded::Frame { frame, len }) => {
                self.pending = len;
                Ok(Some(frame))
            }
            Err(e) => {
                if !matches!(e, DerpError::FrameTooLarge { .. }) {
                    // The whole frame is in: skip it.
                    if let Some((_, len)) = header(unread) {
                        self.pending = FRAME_HEADER_LEN + len;
                    }
                }
                Err(e)
            }
        }
    }
}
