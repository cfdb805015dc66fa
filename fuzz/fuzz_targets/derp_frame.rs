//! DERP frames on arbitrary bytes: the incremental decoder never panics,
//! whatever chunking the stream arrives in; every frame it returns encodes
//! back to bytes that decode to the same frame; the upgrade-response parser
//! and the ClientInfo opener take the same bytes without panicking.
//!
//! Input: one byte choosing the chunk size (1..=64), then the stream.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::derp::{self, Decoded, DerpError, Frame, FrameReader};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let _ = derp::parse_upgrade_response(stream);
    let chunk = usize::from(chunk % 64) + 1;
    // A small limit so the fuzzer reaches "too large" cheaply, too.
    let max = if chunk % 2 == 0 { derp::MAX_FRAME_LEN } else { 4096 };
    let mut reader = FrameReader::new(max);
    let mut frames = 0usize;
    'outer: for piece in stream.chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_frame() {
                Ok(None) => break,
                Ok(Some(frame)) => {
                    frames += 1;
                    check_round_trip(&frame, max);
                    if let Frame::ClientInfo { key, sealed } = frame {
                        let _ = derp::open_client_info(&[7u8; 32], &key, sealed);
                    }
                }
                Err(DerpError::FrameTooLarge { .. }) => {
                    // Fatal, and it stays fatal.
                    assert!(matches!(
                        reader.next_frame(),
                        Err(DerpError::FrameTooLarge { .. })
                    ));
                    break 'outer;
                }
                Err(_) => {} // the bad frame was skipped; go on
            }
        }
    }
    assert!(frames <= stream.len() / derp::FRAME_HEADER_LEN);
});

fn check_round_trip(frame: &Frame<'_>, max: usize) {
    let wire = frame.to_vec();
    match derp::decode(&wire, max.max(wire.len())) {
        Ok(Decoded::Frame { frame: again, len }) => {
            assert_eq!(&again, frame);
            assert_eq!(len, wire.len());
        }
        other => panic!("{frame:?} re-encoded to {wire:?}, decoded as {other:?}"),
    }
}
