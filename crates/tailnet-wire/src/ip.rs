//! A checked, zero-copy view of an IP packet's header.
//!
//! The data plane needs a packet's destination (to pick a peer) and, for
//! inbound packets, its source, protocol, ports and TCP flags (to enforce the
//! packet filter and to notice new TCP connections). [`IpPacket::parse`]
//! checks every length before any field is read, so arbitrary bytes either
//! give a view or an error, never a panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why bytes are not a usable IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpPacketError {
    /// Empty, or shorter than the fixed header of its version.
    #[error("packet shorter than its IP header")]
    Truncated,
    /// The version nibble is neither 4 nor 6.
    #[error("IP version {0} is not 4 or 6")]
    Version(u8),
    /// IPv4 header length field below 20 bytes or beyond the packet.
    #[error("bad IPv4 header length")]
    HeaderLength,
    /// The total/payload length field disagrees with the bytes present.
    #[error("IP length field larger than the packet")]
    Length,
}

/// Transport protocol numbers the node cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// 6
    Tcp,
    /// 17
    Udp,
    /// 1
    Icmp,
    /// 58
    Icmpv6,
    /// Anything else, by number.
    Other(u8),
}

impl From<u8> for Protocol {
    fn from(n: u8) -> Self {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            n => Protocol::Other(n),
        }
    }
}

/// TCP flag bits (low byte of the flags field).
pub mod tcp_flags {
    /// FIN
    pub const FIN: u8 = 0x01;
    /// SYN
    pub const SYN: u8 = 0x02;
    /// RST
    pub const RST: u8 = 0x04;
    /// ACK
    pub const ACK: u8 = 0x10;
}

/// A parsed view of one IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol (IPv6: the first next-header; extension headers
    /// are reported as [`Protocol::Other`]).
    pub protocol: Protocol,
    /// The transport header and payload.
    pub payload: &'a [u8],
    /// Whether this is a non-first IPv4 fragment (no transport header).
    pub is_fragment: bool,
}

impl<'a> IpPacket<'a> {
    /// Parses the header of `buf`; trailing bytes past the IP length are ignored.
    pub fn parse(buf: &'a [u8]) -> Result<Self, IpPacketError> {
        let first = *buf.first().ok_or(IpPacketError::Truncated)?;
        match first >> 4 {
            4 => Self::parse_v4(buf),
            6 => Self::parse_v6(buf),
            v => Err(IpPacketError::Version(v)),
        }
    }

    /// Only the destination address, for routing (cheaper than a full parse).
    pub fn destination(buf: &[u8]) -> Option<IpAddr> {
        match buf.first()? >> 4 {
            4 => {
                let b: [u8; 4] = buf.get(16..20)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            }
            6 => {
                let b: [u8; 16] = buf.get(24..40)?.try_into().ok()?;
                Some(IpAddr::V6(Ipv6Addr::from(b)))
            }
            _ => None,
        }
    }

    fn parse_v4(buf: &'a [u8]) -> Result<Self, IpPacketError> {
        if buf.len() < 20 {
            return Err(IpPacketError::Truncated);
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if ihl < 20 || ihl > buf.len() {
            return Err(IpPacketError::HeaderLength);
        }
        let total = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        if total < ihl || total > buf.len() {
            return Err(IpPacketError::Length);
        }
        let frag = u16::from_be_bytes([buf[6], buf[7]]) & 0x1fff;
        let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
        let dst = Ipv4Addr::new(buf[16], buf[17], buf[18], buf[19]);
        Ok(IpPacket {
            src: src.into(),
            dst: dst.into(),
            protocol: buf[9].into(),
            payload: &buf[ihl..total],
            is_fragment: frag != 0,
        })
    }

    fn parse_v6(buf: &'a [u8]) -> Result<Self, IpPacketError> {
        if buf.len() < 40 {
            return Err(IpPacketError::Truncated);
        }
        let plen = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
        if 40 + plen > buf.len() {
            return Err(IpPacketError::Length);
        }
        let mut s = [0u8; 16];
        s.copy_from_slice(&buf[8..24]);
        let mut d = [0u8; 16];
        d.copy_from_slice(&buf[24..40]);
        Ok(IpPacket {
            src: Ipv6Addr::from(s).into(),
            dst: Ipv6Addr::from(d).into(),
            protocol: buf[6].into(),
            payload: &buf[40..40 + plen],
            is_fragment: false,
        })
    }

    /// Source and destination ports for TCP and UDP (None for other
    /// protocols, fragments, or a transport header cut short).
    pub fn ports(&self) -> Option<(u16, u16)> {
        if self.is_fragment {
            return None;
        }
        match self.protocol {
            Protocol::Tcp | Protocol::Udp => {
                let p = self.payload.get(0..4)?;
                Some((
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                ))
            }
            _ => None,
        }
    }

    /// The TCP flags byte, for TCP packets with a full header.
    pub fn tcp_flags(&self) -> Option<u8> {
        if self.protocol != Protocol::Tcp || self.is_fragment || self.payload.len() < 20 {
            return None;
        }
        Some(self.payload[13])
    }

    /// True for a TCP segment that opens a connection (SYN without ACK).
    pub fn is_tcp_syn(&self) -> bool {
        self.tcp_flags()
            .is_some_and(|f| f & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4_tcp(flags: u8) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&40u16.to_be_bytes());
        p[9] = 6;
        p[12..16].copy_from_slice(&[100, 64, 0, 1]);
        p[16..20].copy_from_slice(&[100, 64, 0, 2]);
        p[20..22].copy_from_slice(&1234u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[33] = flags;
        p
    }

    #[test]
    fn parses_ipv4_tcp_header() {
        let p = v4_tcp(tcp_flags::SYN);
        let v = IpPacket::parse(&p).unwrap();
        assert_eq!(v.src, "100.64.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(v.dst, "100.64.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(v.ports(), Some((1234, 80)));
        assert!(v.is_tcp_syn());
        assert!(!IpPacket::parse(&v4_tcp(tcp_flags::SYN | tcp_flags::ACK))
            .unwrap()
            .is_tcp_syn());
        assert_eq!(IpPacket::destination(&p), Some(v.dst));
    }

    #[test]
    fn parses_ipv6_header() {
        let mut p = vec![0u8; 48];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&8u16.to_be_bytes());
        p[6] = 17;
        p[23] = 1;
        p[39] = 2;
        let v = IpPacket::parse(&p).unwrap();
        assert_eq!(v.protocol, Protocol::Udp);
        assert_eq!(v.dst, "::2".parse::<IpAddr>().unwrap());
        assert_eq!(v.payload.len(), 8);
    }

    #[test]
    fn rejects_truncated_and_lying_headers() {
        assert_eq!(IpPacket::parse(&[]), Err(IpPacketError::Truncated));
        assert_eq!(IpPacket::parse(&[0x45; 10]), Err(IpPacketError::Truncated));
        assert_eq!(IpPacket::parse(&[0x15; 30]), Err(IpPacketError::Version(1)));
        let mut p = v4_tcp(0);
        p[2..4].copy_from_slice(&400u16.to_be_bytes());
        assert_eq!(IpPacket::parse(&p), Err(IpPacketError::Length));
        let mut p = v4_tcp(0);
        p[0] = 0x4f; // 60-byte header in a 40-byte packet
        assert_eq!(IpPacket::parse(&p), Err(IpPacketError::HeaderLength));
    }
}
