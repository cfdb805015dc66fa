//! `IpPacket::parse` on arbitrary bytes: never panics, and every accessor
//! agrees with the header it was parsed from.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::ip::tcp_flags;
use tailnet_wire::{IpPacket, IpPacketError, Protocol};

fuzz_target!(|data: &[u8]| {
    let dest = IpPacket::destination(data);
    let parsed = IpPacket::parse(data);
    let version = data.first().map(|b| b >> 4);

    let p = match parsed {
        Ok(p) => p,
        Err(e) => {
            // Errors are consistent with what the bytes are.
            match e {
                IpPacketError::Version(v) => {
                    assert_eq!(Some(v), version);
                    assert!(v != 4 && v != 6);
                    assert_eq!(dest, None, "destination() of a non-IP version");
                }
                IpPacketError::Truncated => match version {
                    None => assert!(data.is_empty()),
                    Some(4) => assert!(data.len() < 20),
                    Some(6) => assert!(data.len() < 40),
                    Some(v) => panic!("Truncated for version {v}"),
                },
                IpPacketError::HeaderLength => assert_eq!(version, Some(4)),
                IpPacketError::Length => assert!(version == Some(4) || version == Some(6)),
                _ => {}
            }
            // Formatting an error never panics.
            let _ = e.to_string();
            return;
        }
    };

    // The cheap routing lookup agrees with the full parse.
    assert_eq!(dest, Some(p.dst), "destination() disagrees with parse()");
    assert_eq!(p.src.is_ipv4(), p.dst.is_ipv4());
    match version {
        Some(4) => assert!(p.dst.is_ipv4()),
        Some(6) => {
            assert!(p.dst.is_ipv6());
            assert!(!p.is_fragment);
        }
        v => panic!("parsed a packet of version {v:?}"),
    }

    // The payload is a window of the input that ends at the IP length.
    let start = p.payload.as_ptr() as usize - data.as_ptr() as usize;
    assert!(start + p.payload.len() <= data.len());
    let end = start + p.payload.len();
    if p.dst.is_ipv4() {
        assert_eq!(start, usize::from(data[0] & 0x0f) * 4);
        assert_eq!(end, usize::from(u16::from_be_bytes([data[2], data[3]])));
        assert_eq!(p.protocol, Protocol::from(data[9]));
    } else {
        assert_eq!(start, 40);
        assert_eq!(
            end,
            40 + usize::from(u16::from_be_bytes([data[4], data[5]]))
        );
        assert_eq!(p.protocol, Protocol::from(data[6]));
    }

    // Ports: only for whole TCP/UDP headers, read from the payload's start.
    let ports = p.ports();
    match ports {
        Some((s, d)) => {
            assert!(matches!(p.protocol, Protocol::Tcp | Protocol::Udp));
            assert!(!p.is_fragment);
            assert_eq!(s, u16::from_be_bytes([p.payload[0], p.payload[1]]));
            assert_eq!(d, u16::from_be_bytes([p.payload[2], p.payload[3]]));
        }
        None => assert!(
            p.is_fragment
                || !matches!(p.protocol, Protocol::Tcp | Protocol::Udp)
                || p.payload.len() < 4
        ),
    }

    // TCP flags: only with a full 20-byte TCP header.
    let flags = p.tcp_flags();
    match flags {
        Some(f) => {
            assert_eq!(p.protocol, Protocol::Tcp);
            assert!(!p.is_fragment && p.payload.len() >= 20);
            assert_eq!(f, p.payload[13]);
            assert!(ports.is_some());
        }
        None => {
            assert!(p.protocol != Protocol::Tcp || p.is_fragment || p.payload.len() < 20)
        }
    }
    let syn = p.is_tcp_syn();
    assert_eq!(
        syn,
        flags.is_some_and(|f| f & tcp_flags::SYN != 0 && f & tcp_flags::ACK == 0)
    );

    // Bytes after the IP length are ignored.
    let mut longer = data.to_vec();
    longer.extend_from_slice(&[0xa5; 7]);
    assert_eq!(IpPacket::parse(&longer), Ok(p));
});
