//! Classification of WireGuard datagrams before any cryptography runs.
//!
//! The data plane must decide which peer a datagram belongs to without
//! trusting it: handshake responses, cookie replies and data messages carry
//! the receiver index we assigned; handshake initiations carry none and are
//! matched by their (MAC-checked) static key later. Lengths follow the
//! WireGuard paper §5.4: initiation 148, response 92, cookie reply 64, data
//! at least 32 bytes (16 header + 16 tag). Data is not always a multiple of
//! 16: padding stops at the MTU, and wireguard-go's default 1420 is not one.

/// The four WireGuard message types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WgKind {
    /// Type 1, 148 bytes.
    HandshakeInitiation,
    /// Type 2, 92 bytes.
    HandshakeResponse,
    /// Type 3, 64 bytes.
    CookieReply,
    /// Type 4, at least 32 bytes.
    Data,
}

/// A classified datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgMessage {
    /// Its type.
    pub kind: WgKind,
    /// The receiver index for types 2–4 (the index *we* chose), None for
    /// initiations.
    pub receiver_index: Option<u32>,
}

/// Classifies `buf`; None when it cannot be a WireGuard message (wrong type,
/// non-zero reserved bytes, or a length that type never has).
pub fn classify(buf: &[u8]) -> Option<WgMessage> {
    let head: [u8; 4] = buf.get(0..4)?.try_into().ok()?;
    let ty = u32::from_le_bytes(head);
    let idx = |b: &[u8]| -> Option<u32> { Some(u32::from_le_bytes(b.get(4..8)?.try_into().ok()?)) };
    let m = |kind, receiver_index| {
        Some(WgMessage {
            kind,
            receiver_index,
        })
    };
    match (ty, buf.len()) {
        (1, 148) => m(WgKind::HandshakeInitiation, None),
        (2, 92) => {
            let r: [u8; 4] = buf.get(8..12)?.try_into().ok()?;
            m(WgKind::HandshakeResponse, Some(u32::from_le_bytes(r)))
        }
        (3, 64) => m(WgKind::CookieReply, idx(buf)),
        (4, n) if n >= 32 => m(WgKind::Data, idx(buf)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_type_and_exact_length() {
        let mut init = vec![0u8; 148];
        init[0] = 1;
        assert_eq!(classify(&init).unwrap().kind, WgKind::HandshakeInitiation);
        init.push(0);
        assert_eq!(classify(&init), None, "initiation has a fixed length");

        let mut resp = vec![0u8; 92];
        resp[0] = 2;
        resp[8..12].copy_from_slice(&0x0102_0304u32.to_le_bytes());
        assert_eq!(classify(&resp).unwrap().receiver_index, Some(0x0102_0304));

        let mut data = vec![0u8; 32 + 16 * 3];
        data[0] = 4;
        data[4..8].copy_from_slice(&77u32.to_le_bytes());
        assert_eq!(
            classify(&data),
            Some(WgMessage {
                kind: WgKind::Data,
                receiver_index: Some(77)
            })
        );
        data.truncate(31);
        assert_eq!(classify(&data), None, "data needs header and tag");
    }

    #[test]
    fn rejects_reserved_bits_and_short_buffers() {
        let mut init = vec![0u8; 148];
        init[0] = 1;
        init[1] = 1; // reserved byte set
        assert_eq!(classify(&init), None);
        assert_eq!(classify(&[4, 0, 0]), None);
        assert_eq!(classify(&[]), None);
    }
}
