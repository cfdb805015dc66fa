//! The ts2021 handshake on arbitrary bytes: never panics, and only the
//! genuine message is accepted. The first byte picks the side:
//! - `% 3 == 0`: the rest is an initiation for `ServerHandshake::respond`;
//!   accepted only if it is the fixed-key client's initiation, refused by
//!   the pre-crypto checks exactly when its size, type or length is wrong;
//! - `% 3 == 1`: the rest is a server reply for `ClientHandshake::finish`
//!   (after `reply_len`); accepted only if it is the fixed-key server's
//!   response;
//! - `% 3 == 2`: the rest is the server's first plaintext, pushed into the
//!   early-payload reader in chunks of `first / 3 + 1` bytes; no byte is
//!   lost or invented.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::noise::{
    early, reply_len, ClientHandshake, EarlyPayloadReader, EarlyPayloadStatus, HandshakeError,
    ServerHandshake,
};

const MACHINE: [u8; 32] = [0x11; 32];
/// X25519 public key of `MACHINE`.
const MACHINE_PUBLIC: [u8; 32] = [
    0x7b, 0x4e, 0x90, 0x9b, 0xbe, 0x7f, 0xfe, 0x44, 0xc4, 0x65, 0xa2, 0x20, 0x03, 0x7d, 0x60, 0x8e,
    0xe3, 0x58, 0x97, 0xd3, 0x1e, 0xf9, 0x72, 0xf0, 0x7f, 0x74, 0x89, 0x2c, 0xb0, 0xf7, 0x3f, 0x13,
];
const CONTROL: [u8; 32] = [0x22; 32];
/// X25519 public key of `CONTROL`.
const CONTROL_PUBLIC: [u8; 32] = [
    0x0f, 0xaa, 0x68, 0x4e, 0xd2, 0x88, 0x67, 0xb9, 0x7f, 0x4a, 0x6a, 0x2d, 0xee, 0x5d, 0xf8, 0xce,
    0x97, 0x4e, 0x76, 0xb7, 0x01, 0x8e, 0x3f, 0x22, 0xa1, 0xc4, 0xcf, 0x26, 0x78, 0x57, 0x0f, 0x20,
];
const CLIENT_EPH: [u8; 32] = [0x33; 32];
const SERVER_EPH: [u8; 32] = [0x44; 32];

fn client() -> (ClientHandshake, Vec<u8>) {
    ClientHandshake::start_with_fixed_ephemeral_for_testing(
        MACHINE,
        CONTROL_PUBLIC,
        130,
        CLIENT_EPH,
    )
    .expect("handshake start")
}

fn server(data: &[u8]) {
    match ServerHandshake::respond(CONTROL, data) {
        Ok((resp, transport, peer, version)) => {
            // Only the fixed client's initiation (for its version) can pass:
            // anything else would need its keys.
            let (_, genuine) = ClientHandshake::start_with_fixed_ephemeral_for_testing(
                MACHINE,
                CONTROL_PUBLIC,
                version,
                CLIENT_EPH,
            )
            .expect("handshake start");
            assert_eq!(data, &genuine[..], "forged initiation accepted");
            assert_eq!(peer.as_bytes(), &MACHINE_PUBLIC);
            assert_eq!(transport.peer(), peer);
            assert_eq!(&resp[..3], &[2, 0, 48]);
        }
        Err(e) => {
            let framing_ok = data.len() == 101 && data[2] == 1 && data[3..5] == [0, 96];
            assert_eq!(e.refusal_text().is_none(), framing_ok, "{e:?}");
        }
    }
}

fn reply(data: &[u8]) {
    let (c, init) = client();
    let len = reply_len(data);
    match c.finish(data) {
        Ok(transport) => {
            let (genuine, ..) = ServerHandshake::respond_with_fixed_ephemeral_for_testing(
                CONTROL, &init, SERVER_EPH,
            )
            .expect("respond");
            assert_eq!(data, &genuine[..], "forged response accepted");
            assert_eq!(len, Ok(Some(51)));
            assert_eq!(transport.peer().as_bytes(), &CONTROL_PUBLIC);
        }
        Err(e) => match len {
            Err(le) => assert_eq!(e, le),
            Ok(None) => assert!(matches!(e, HandshakeError::Truncated { needed: 3, .. })),
            Ok(Some(n)) if n > data.len() => {
                assert!(matches!(e, HandshakeError::Truncated { .. }))
            }
            Ok(Some(n)) if n < data.len() => {
                assert_eq!(e, HandshakeError::TrailingBytes(data.len() - n))
            }
            Ok(Some(_)) if data[0] == 3 => assert!(matches!(e, HandshakeError::Refused(_))),
            Ok(Some(_)) => assert!(
                matches!(e, HandshakeError::Decrypt | HandshakeError::LowOrderKey),
                "{e:?}"
            ),
        },
    }
}

fn early_payload(chunk: usize, data: &[u8]) {
    let mut r = EarlyPayloadReader::new();
    let mut fed = 0;
    for piece in data.chunks(chunk) {
        fed += piece.len();
        match r.push(piece) {
            Ok(EarlyPayloadStatus::NeedMore) => {}
            Ok(EarlyPayloadStatus::Done { payload, rest }) => {
                // Reassemble: what was recognised plus what is left is
                // exactly what came in.
                let mut again = match &payload {
                    Some(p) => early::encode(p).expect("payload under the limit"),
                    None => Vec::new(),
                };
                again.extend_from_slice(&rest);
                assert_eq!(&again[..], &data[..fed]);
                if payload.is_none() {
                    assert!(data.len() >= 9 && data[..5] != early::MAGIC);
                }
                return;
            }
            Err(e) => {
                assert!(data.len() >= 9 && data[..5] == early::MAGIC, "{e:?}");
                return;
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    match first % 3 {
        0 => server(rest),
        1 => reply(rest),
        _ => early_payload(usize::from(first / 3) + 1, rest),
    }
});
