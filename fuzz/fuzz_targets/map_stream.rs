//! The map stream decoder on arbitrary bytes and arbitrary chunking:
//! never panics, never yields a frame over its decoded-size limit, holds
//! at most one unfinished frame plus one chunk, and agrees with a plain
//! reference parser on uncompressed streams. A second mode encodes the
//! input as messages with `MapStreamEncoder` and checks they come back.
//!
//! Input: byte 0 = flags (bit 0: zstd, bit 1: encode mode), byte 1 =
//! wire limit, byte 2 = decoded limit, byte 3 = chunking seed; the rest is
//! the stream (raw mode) or `0xff`-separated messages (encode mode).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::control::{
    Compression, FrameLimits, MapStreamDecoder, MapStreamEncoder, MapStreamError,
};

/// Splits `data` into chunks of pseudo-random sizes from `seed`.
fn chunks(data: &[u8], seed: u8) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    let mut x = u32::from(seed) | 1;
    while !rest.is_empty() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let n = match seed % 4 {
            0 => rest.len(),
            1 => 1,
            _ => 1 + (x % 97) as usize,
        }
        .min(rest.len());
        let (c, r) = rest.split_at(n);
        out.push(c);
        rest = r;
    }
    out
}

/// Frames of an uncompressed stream, as a straightforward parser sees them.
fn reference(data: &[u8], limits: FrameLimits) -> (Vec<Vec<u8>>, Option<MapStreamError>) {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(h) = data.get(at..at + 4) {
        let len = u32::from_le_bytes(h.try_into().unwrap()) as usize;
        if len > limits.max_wire {
            let max = limits.max_wire;
            return (frames, Some(MapStreamError::FrameTooLarge { len, max }));
        }
        let Some(p) = data.get(at + 4..at + 4 + len) else {
            break;
        };
        if len > limits.max_decoded {
            let max = limits.max_decoded;
            return (frames, Some(MapStreamError::DecodedTooLarge { max }));
        }
        frames.push(p.to_vec());
        at += 4 + len;
    }
    (frames, None)
}

fn decode(
    stream: &[u8],
    seed: u8,
    compression: Compression,
    limits: FrameLimits,
) -> (Vec<Vec<u8>>, Option<MapStreamError>, MapStreamDecoder) {
    let mut dec = MapStreamDecoder::with_limits(compression, limits);
    let mut frames = Vec::new();
    for c in chunks(stream, seed) {
        dec.push(c);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    assert!(f.len() <= limits.max_decoded, "frame over the limit");
                    frames.push(f);
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_string();
                    // Errors are final.
                    assert_eq!(dec.next_frame(), Err(e.clone()));
                    assert_eq!(dec.finish(), Err(e.clone()));
                    return (frames, Some(e), dec);
                }
            }
        }
        assert!(
            dec.buffered() <= 4 + limits.max_wire + c.len(),
            "decoder holds more than a frame and a chunk"
        );
    }
    (frames, None, dec)
}

fuzz_target!(|data: &[u8]| {
    let Some((head, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let [flags, wire, decoded, seed] = *head;
    let compression = if flags & 1 == 1 {
        Compression::Zstd
    } else {
        Compression::None
    };
    let limits = FrameLimits {
        max_wire: 1 + usize::from(wire) * 16,
        max_decoded: 1 + usize::from(decoded) * 64,
    };

    if flags & 2 == 0 {
        let (frames, err, dec) = decode(body, seed, compression, limits);
        if compression == Compression::None {
            let (want, want_err) = reference(body, limits);
            assert_eq!(frames, want);
            assert_eq!(err, want_err);
        }
        if err.is_none() {
            let _ = dec.finish();
        }
        return;
    }

    // Encode mode: every message the encoder accepts comes back intact.
    let mut enc = MapStreamEncoder::with_limits(compression, limits);
    let mut stream = Vec::new();
    let mut sent = Vec::new();
    for msg in body.split(|&b| b == 0xff) {
        if enc.encode_into(msg, &mut stream).is_ok() {
            sent.push(msg.to_vec());
        }
    }
    let (frames, err, dec) = decode(&stream, seed, compression, limits);
    assert_eq!(err, None, "our own frames fail to decode");
    assert_eq!(frames, sent);
    assert_eq!(dec.finish(), Ok(()));
});
