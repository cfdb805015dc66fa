//! `classify` on arbitrary bytes: never panics, and says Some exactly for
//! the message shapes WireGuard defines (type byte, three zero reserved
//! bytes, the exact length of that type; data at least 32 bytes), with the
//! receiver index read from where that type keeps it.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::{classify, WgKind, WgMessage};

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The WireGuard paper's §5.4 message formats, written out independently.
fn reference(buf: &[u8]) -> Option<WgMessage> {
    if buf.len() < 4 || buf[1..4] != [0, 0, 0] {
        return None;
    }
    let (kind, receiver_index) = match (buf[0], buf.len()) {
        (1, 148) => (WgKind::HandshakeInitiation, None),
        (2, 92) => (WgKind::HandshakeResponse, Some(le32(&buf[8..12]))),
        (3, 64) => (WgKind::CookieReply, Some(le32(&buf[4..8]))),
        (4, n) if n >= 32 => (WgKind::Data, Some(le32(&buf[4..8]))),
        _ => return None,
    };
    Some(WgMessage {
        kind,
        receiver_index,
    })
}

fuzz_target!(|data: &[u8]| {
    let got = classify(data);
    assert_eq!(got, reference(data), "classify disagrees with the spec");
    if let Some(m) = got {
        // Invariants stated directly, in case the reference is wrong too.
        assert_eq!(&data[1..4], &[0, 0, 0], "reserved bytes must be zero");
        match m.kind {
            WgKind::HandshakeInitiation => {
                assert_eq!(data.len(), 148);
                assert_eq!(m.receiver_index, None);
            }
            WgKind::HandshakeResponse => assert_eq!(data.len(), 92),
            WgKind::CookieReply => assert_eq!(data.len(), 64),
            WgKind::Data => assert!(data.len() >= 32),
        }
        if m.kind != WgKind::HandshakeInitiation {
            assert!(m.receiver_index.is_some());
        }
    }
    // A fixed-length message cut by one byte is no message at all.
    if let Some(m) = got {
        if m.kind != WgKind::Data {
            assert_eq!(classify(&data[..data.len() - 1]), None);
        }
    }
});
