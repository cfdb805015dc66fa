//! `Zone::fit_udp` (an upstream DNS reply relayed to a UDP client) on
//! arbitrary query and reply bytes: never panics; a reply that fits is
//! passed unchanged; anything else comes back no larger than the limit it
//! had to meet (the client's EDNS size or 512, and `max`; 512 at least).
//!
//! Input: `max` (2 bytes BE), the query length (2 bytes BE), the query,
//! then the reply.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_dns::Zone;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let max = u16::from_be_bytes([data[0], data[1]]);
    let qlen = usize::from(u16::from_be_bytes([data[2], data[3]])).min(data.len() - 4);
    let (query, reply) = data[4..].split_at(qlen);
    let Some(out) = Zone::fit_udp(query, reply, max) else {
        return;
    };
    if out != reply {
        assert!(
            out.len() <= usize::from(max).max(512).min(65_535),
            "{} bytes out for max {max}",
            out.len()
        );
    }
});
