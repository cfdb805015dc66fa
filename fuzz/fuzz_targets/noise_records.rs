//! The ts2021 record decoder of an established transport, fed in arbitrary
//! chunks: never panics, holds less than one record between calls, opens
//! exactly what the peer sealed while the stream is untouched, and after
//! its first error answers `Closed` for good.
//!
//! Input: a byte choosing the direction (bit 0 swaps the two sides), then
//! operations until the bytes run out:
//! - `op % 3 == 0`: raw bytes: a length byte `n`, then `n` bytes fed as is;
//! - `op % 3 == 1`: a sealed message: a length byte `n` (times 97, so one
//!   message can span several 4096-byte records), sealed by the peer, fed in
//!   chunks of `op / 3 + 1` bytes;
//! - `op % 3 == 2`: a sealed message with one byte flipped (position and
//!   mask from the next two bytes), fed whole.
//!
//! The transports are built from fixed direction keys: a handshake per input
//! would cost a dozen instrumented X25519 operations (the handshake has its
//! own target, `noise_handshake`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::noise::{RecordError, Transport};

fn pair() -> (Transport, Transport) {
    (
        Transport::from_keys_for_testing([0x5a; 32], [0xa5; 32]),
        Transport::from_keys_for_testing([0xa5; 32], [0x5a; 32]),
    )
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> &'a [u8] {
    let n = n.min(input.len());
    let (head, tail) = input.split_at(n);
    *input = tail;
    head
}

fn byte(input: &mut &[u8]) -> u8 {
    take(input, 1).first().copied().unwrap_or(0)
}

fuzz_target!(|data: &[u8]| {
    let mut input = data;
    let (client, server) = pair();
    let (mut sender, mut receiver) = if byte(&mut input) & 1 == 1 {
        (server, client)
    } else {
        (client, server)
    };

    let mut clean = true; // nothing foreign has reached the decoder yet
    let mut expected = Vec::new();
    let mut got = Vec::new();
    let mut failed = false;
    let mut counter = 0u8;

    while !input.is_empty() {
        let op = byte(&mut input);
        let mut feed: Vec<(Vec<u8>, usize)> = Vec::new(); // (bytes, chunk size)
        match op % 3 {
            0 => {
                let n = usize::from(byte(&mut input));
                feed.push((take(&mut input, n).to_vec(), usize::MAX));
                clean = false;
            }
            1 => {
                let n = usize::from(byte(&mut input)) * 97;
                let msg: Vec<u8> = (0..n).map(|i| counter.wrapping_add(i as u8)).collect();
                counter = counter.wrapping_add(1);
                let wire = sender.seal(&msg).expect("seal");
                assert_eq!(wire.len(), n + n.div_ceil(4077) * 19);
                if clean {
                    expected.extend_from_slice(&msg);
                }
                feed.push((wire, usize::from(op / 3) + 1));
            }
            _ => {
                let at = usize::from(byte(&mut input));
                let mask = byte(&mut input) | 1;
                let mut wire = sender.seal(b"tampered record").expect("seal");
                let at = at % wire.len();
                wire[at] ^= mask;
                feed.push((wire, usize::MAX));
                clean = false;
            }
        }
        for (bytes, chunk) in feed {
            for piece in bytes.chunks(chunk.max(1)) {
                let r = receiver.open_into(piece, &mut got);
                if failed {
                    assert_eq!(r, Err(RecordError::Closed), "an error is final");
                }
                match r {
                    Ok(()) => assert!(receiver.decoder().buffered() < 4096),
                    Err(e) => {
                        assert!(!clean, "untouched stream failed: {e}");
                        failed = true;
                    }
                }
            }
        }
        if clean {
            assert_eq!(got, expected, "opened bytes differ from sealed bytes");
            assert_eq!(receiver.decoder().buffered(), 0);
        }
    }
    if failed {
        assert!(receiver.decoder().is_closed());
        assert_eq!(receiver.open(&[]), Err(RecordError::Closed));
    }
});
