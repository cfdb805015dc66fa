//! `tailnet_dns::parse_response` (what `dns query` and the tests read) on
//! arbitrary bytes: never panics; whatever it accepts has no more
//! addresses than A/AAAA answers and carries the ID it was asked for.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_dns::{parse_response, RecordType};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let id = u16::from_be_bytes([data[0], data[1]]);
    let Ok(r) = parse_response(data, id) else {
        return;
    };
    let a = r
        .answers
        .iter()
        .filter(|(_, t, _, _)| matches!(*t, RecordType::A | RecordType::AAAA))
        .count();
    assert!(r.addresses.len() <= a);
    // The same bytes asked with another ID are a mismatch, not a parse.
    assert!(parse_response(data, id.wrapping_add(1)).is_err());
});
