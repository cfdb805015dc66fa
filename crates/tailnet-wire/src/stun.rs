//! The STUN binding subset Tailscale uses (`net/stun/stun.go`;
//! `shared/protocol/derp.md` §7): a 40-byte binding request (the fact
//! sheet says 48; Go's `lenAttrs` is 20, so 20 + 20) with SOFTWARE
//! `tailnode` and a FINGERPRINT, answered with one XOR-MAPPED-ADDRESS. The
//! coordinator answers these beside its DERP region so clients learn their
//! UDP endpoint (and Go's netcheck sees UDP working); nodes will send them
//! in the DERP/disco work.

use std::net::{IpAddr, SocketAddr};

/// The magic cookie (RFC 5389).
pub const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
/// STUN header length.
pub const HEADER_LEN: usize = 20;
/// The SOFTWARE value Tailscale clients send and its server requires.
pub const SOFTWARE: &[u8] = b"tailnode";

const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
const BINDING_SUCCESS: [u8; 2] = [0x01, 0x01];
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const FINGERPRINT_XOR: u32 = 0x5354_554e;

/// A STUN transaction ID.
pub type TxId = [u8; 12];

/// Why a datagram is not a binding request we answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StunError {
    /// Not STUN at all (length, top bits or cookie).
    #[error("not a STUN message")]
    NotStun,
    /// STUN, but not a binding request.
    #[error("not a STUN binding request")]
    NotBindingRequest,
    /// The attributes do not add up.
    #[error("malformed STUN attributes")]
    Malformed,
    /// SOFTWARE is missing or is not `tailnode`.
    #[error("STUN request is not from a Tailscale client")]
    WrongSoftware,
    /// FINGERPRINT is missing, not last, or wrong.
    #[error("bad STUN fingerprint")]
    BadFingerprint,
}

/// Whether `b` looks like STUN (Go's `stun.Is`): at least a header, the top
/// two bits zero, the magic cookie in place.
pub fn is_stun(b: &[u8]) -> bool {
    b.len() >= HEADER_LEN && b[0] & 0xc0 == 0 && b[4..8] == MAGIC_COOKIE
}

fn fingerprint(b: &[u8]) -> u32 {
    crc32fast::hash(b) ^ FINGERPRINT_XOR
}

/// A Tailscale binding request with transaction ID `tx` (what Go's
/// `stun.Request` sends).
pub fn binding_request(tx: TxId) -> Vec<u8> {
    let mut b = Vec::with_capacity(40);
    b.extend_from_slice(&BINDING_REQUEST);
    b.extend_from_slice(&20u16.to_be_bytes());
    b.extend_from_slice(&MAGIC_COOKIE);
    b.extend_from_slice(&tx);
    b.extend_from_slice(&ATTR_SOFTWARE.to_be_bytes());
    b.extend_from_slice(&(SOFTWARE.len() as u16).to_be_bytes());
    b.extend_from_slice(SOFTWARE);
    let fp = fingerprint(&b);
    b.extend_from_slice(&ATTR_FINGERPRINT.to_be_bytes());
    b.extend_from_slice(&4u16.to_be_bytes());
    b.extend_from_slice(&fp.to_be_bytes());
    b
}

/// Checks a binding request the way Tailscale's STUN server does
/// (SOFTWARE `tailnode`, FINGERPRINT last and correct) and returns its
/// transaction ID.
pub fn parse_binding_request(b: &[u8]) -> Result<TxId, StunError> {
    if !is_stun(b) {
        return Err(StunError::NotStun);
    }
    if b[0..2] != BINDING_REQUEST {
        return Err(StunError::NotBindingRequest);
    }
    let attr_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    if HEADER_LEN + attr_len != b.len() || attr_len % 4 != 0 {
        return Err(StunError::Malformed);
    }
    let mut tx = [0u8; 12];
    tx.copy_from_slice(&b[8..20]);
    let mut off = HEADER_LEN;
    let mut software_ok = false;
    let mut fingerprint_ok = false;
    while off < b.len() {
        if fingerprint_ok {
            // FINGERPRINT must be the last attribute.
            return Err(StunError::BadFingerprint);
        }
        if off + 4 > b.len() {
            return Err(StunError::Malformed);
        }
        let typ = u16::from_be_bytes([b[off], b[off + 1]]);
        let len = usize::from(u16::from_be_bytes([b[off + 2], b[off + 3]]));
        let value_start = off + 4;
        let value_end = value_start + len;
        let padded_end = value_start + len.div_ceil(4) * 4;
        if padded_end > b.len() {
            return Err(StunError::Malformed);
        }
        let value = &b[value_start..value_end];
        match typ {
            ATTR_SOFTWARE => software_ok = value == SOFTWARE,
            ATTR_FINGERPRINT => {
                let Ok(v) = <[u8; 4]>::try_from(value) else {
                    return Err(StunError::BadFingerprint);
                };
                // The CRC covers the message up to this attribute, with the
                // header's length as sent (which already counts it).
                if u32::from_be_bytes(v) != fingerprint(&b[..off]) {
                    return Err(StunError::BadFingerprint);
                }
                fingerprint_ok = true;
            }
            _ => {}
        }
        off = padded_end;
    }
    if !software_ok {
        return Err(StunError::WrongSoftware);
    }
    if !fingerprint_ok {
        return Err(StunError::BadFingerprint);
    }
    Ok(tx)
}

/// The success response telling the client it was seen at `from`: one
/// XOR-MAPPED-ADDRESS, as Tailscale's server writes it.
pub fn binding_response(tx: TxId, from: SocketAddr) -> Vec<u8> {
    let (family, addr): (u8, Vec<u8>) = match from.ip() {
        IpAddr::V4(v4) => (1, v4.octets().to_vec()),
        IpAddr::V6(v6) => (2, v6.octets().to_vec()),
    };
    let mut xor_key = MAGIC_COOKIE.to_vec();
    xor_key.extend_from_slice(&tx);
    let attr_len = 4 + addr.len();
    let mut b = Vec::with_capacity(HEADER_LEN + 4 + attr_len);
    b.extend_from_slice(&BINDING_SUCCESS);
    b.extend_from_slice(&((4 + attr_len) as u16).to_be_bytes());
    b.extend_from_slice(&MAGIC_COOKIE);
    b.extend_from_slice(&tx);
    b.extend_from_slice(&ATTR_XOR_MAPPED_ADDRESS.to_be_bytes());
    b.extend_from_slice(&(attr_len as u16).to_be_bytes());
    b.push(0);
    b.push(family);
    b.extend_from_slice(&(from.port() ^ 0x2112).to_be_bytes());
    b.extend(addr.iter().zip(xor_key.iter()).map(|(a, k)| a ^ k));
    b
}

/// Reads the mapped address from a binding success response for `tx`.
pub fn parse_binding_response(b: &[u8], tx: &TxId) -> Option<SocketAddr> {
    if !is_stun(b) || b[0..2] != BINDING_SUCCESS || b[8..20] != tx[..] {
        return None;
    }
    let mut off = HEADER_LEN;
    while off + 4 <= b.len() {
        let typ = u16::from_be_bytes([b[off], b[off + 1]]);
        let len = usize::from(u16::from_be_bytes([b[off + 2], b[off + 3]]));
        let v = b.get(off + 4..off + 4 + len)?;
        if (typ == ATTR_XOR_MAPPED_ADDRESS || typ == 0x8020) && len >= 8 {
            let port = u16::from_be_bytes([v[2], v[3]]) ^ 0x2112;
            let mut key = MAGIC_COOKIE.to_vec();
            key.extend_from_slice(tx);
            let ip: IpAddr = match (v[1], len) {
                (1, 8) => {
                    let o: [u8; 4] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                    IpAddr::from(o)
                }
                (2, 20) => {
                    let o: [u8; 16] = std::array::from_fn(|i| v[4 + i] ^ key[i]);
                    IpAddr::from(o)
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        off += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_the_answer_names_the_sender() {
        let tx = *b"0123456789ab";
        let req = binding_request(tx);
        assert_eq!(req.len(), 40);
        assert_eq!(&req[..4], &[0, 1, 0, 20]);
        assert_eq!(parse_binding_request(&req), Ok(tx));
        for from in ["127.0.0.1:41641", "[fd00::2]:9"] {
            let from: SocketAddr = from.parse().unwrap();
            let resp = binding_response(tx, from);
            assert!(is_stun(&resp));
            assert_eq!(parse_binding_response(&resp, &tx), Some(from));
            assert_eq!(parse_binding_response(&resp, b"xxxxxxxxxxxx"), None);
        }
    }

    #[test]
    fn requests_go_refuses_are_refused() {
        let tx = [7u8; 12];
        let good = binding_request(tx);
        let mut bad_fp = good.clone();
        bad_fp[39] ^= 1;
        assert_eq!(
            parse_binding_request(&bad_fp),
            Err(StunError::BadFingerprint)
        );
        let mut bad_sw = good.clone();
        bad_sw[24] = b'X';
        // The fingerprint no longer matches either; SOFTWARE is checked
        // once every attribute parsed, so the fingerprint error comes first.
        assert!(parse_binding_request(&bad_sw).is_err());
        assert_eq!(
            parse_binding_request(&good[..30]),
            Err(StunError::Malformed)
        );
        assert_eq!(parse_binding_request(b"hello"), Err(StunError::NotStun));
        let mut not_req = good.clone();
        not_req[1] = 0x11;
        assert_eq!(
            parse_binding_request(&not_req),
            Err(StunError::NotBindingRequest)
        );
        // A WireGuard packet is not STUN.
        let mut wg = vec![1u8, 0, 0, 0];
        wg.extend_from_slice(&[0u8; 144]);
        assert!(!is_stun(&wg));
    }
}
