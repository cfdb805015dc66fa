//! Arbitrary datagrams, relayed packets, netstack packets and time steps
//! into a `tailnet_engine::Engine` that has a live WireGuard session with
//! one disco peer: nothing panics, and nothing reaches the netstack unless
//! its source is the peer's (cryptokey routing).
//!
//! Input: records of
//! - a control byte `c`: bits 0-1 the channel (0: a UDP datagram from the
//!   peer's address, 1: from a stranger's, 2: relayed from the peer's node
//!   key, 3: an IP packet from the netstack); bits 2-7 `t`, the clock moves
//!   `t² × 10` ms (up to ~40 s) and the timers run before this record;
//! - a little-endian u16 length, and that many bytes (fewer if the input
//!   ends).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tailnet_engine::{Engine, EngineConfig, PeerConfig, Transmit};
use tailnet_wire::{IpPacket, PrivateKey};

fn key(b: u8) -> PrivateKey {
    PrivateKey::from_bytes([b; 32])
}

fn peer(k: u8, d: u8, ip: &str, at: SocketAddr) -> PeerConfig {
    PeerConfig {
        public_key: tailnet_engine::config::public_of(&key(k)),
        endpoint: Some(at),
        allowed_ips: vec![ip.parse().expect("net")],
        persistent_keepalive: None,
        disco_key: Some(tailnet_wire::disco::public_of(&key(d))),
        home_derp: 1,
        endpoints: vec![at],
    }
}

fn engine(k: u8, d: u8, now: Instant, at: SocketAddr) -> Engine {
    Engine::new(
        now,
        EngineConfig {
            private_key: key(k),
            disco_key: key(d),
            endpoints: vec![at],
            seed: [k; 32],
            always_use_derp: false,
        },
    )
}

/// One process-wide starting instant (the fuzzer's only clock read).
fn epoch() -> Instant {
    static T: OnceLock<Instant> = OnceLock::new();
    *T.get_or_init(Instant::now)
}

fuzz_target!(|data: &[u8]| {
    let a_at: SocketAddr = "192.0.2.1:41641".parse().expect("addr");
    let b_at: SocketAddr = "192.0.2.2:41641".parse().expect("addr");
    let stranger: SocketAddr = "203.0.113.9:4000".parse().expect("addr");
    let mut now = epoch();
    let mut a = engine(1, 11, now, a_at);
    let mut b = engine(2, 12, now, b_at);
    a.handle_map(now, vec![peer(2, 12, "100.64.0.2/32", b_at)]);
    b.handle_map(now, vec![peer(1, 11, "100.64.0.1/32", a_at)]);
    // Let the eager handshakes complete: shuttle UDP between them.
    for _ in 0..6 {
        while let Some(t) = a.poll_transmit() {
            if let Transmit::Udp { dst, bytes } = t {
                if dst == b_at {
                    b.handle_datagram(now, a_at, &bytes);
                }
            }
        }
        while let Some(t) = b.poll_transmit() {
            if let Transmit::Udp { dst, bytes } = t {
                if dst == a_at {
                    a.handle_datagram(now, b_at, &bytes);
                }
            }
        }
    }
    let b_key = b.node_key();
    let mut rest = data;
    while let [c, l0, l1, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
        let (bytes, next) = tail.split_at(len);
        rest = next;
        let t = u64::from(c >> 2);
        if t > 0 {
            now += Duration::from_millis(t * t * 10);
            a.handle_timeout(now);
        }
        match c & 3 {
            0 => a.handle_datagram(now, b_at, bytes),
            1 => a.handle_datagram(now, stranger, bytes),
            2 => a.handle_derp(now, b_key, bytes),
            _ => a.handle_app_packet(now, bytes),
        }
        while let Some(t) = a.poll_transmit() {
            if let Transmit::ToNetstack(p) = t {
                let src = IpPacket::parse(&p).ok().map(|h| h.src);
                assert_eq!(
                    src,
                    Some("100.64.0.2".parse().expect("ip")),
                    "a packet not from the peer reached the netstack"
                );
            }
        }
        while a.poll_event().is_some() {}
    }
});
