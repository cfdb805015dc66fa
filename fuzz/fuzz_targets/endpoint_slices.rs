//! Kubernetes EndpointSlice JSON (`inferadb_discovery::kubernetes`): a
//! list answer, then watch-stream lines, then the endpoints chosen from
//! what they built. Never panics; a watch line reports a change exactly
//! when the slices changed and one that fails changes nothing; the
//! endpoints are sorted, without duplicates, on a non-zero port (the
//! selected one when a number is selected).
//!
//! Input: a selector byte (0 the first TCP port, 1 a number from the next
//! two bytes, 2 the port named "http"), then the list body, then one
//! watch event per line.

#![no_main]

use inferadb_discovery::config::PortSelector;
use inferadb_discovery::kubernetes::{apply_watch_line, endpoints_of, parse_slice_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (port, rest) = match sel % 3 {
        0 => (None, rest),
        1 if rest.len() >= 2 => (
            Some(PortSelector::Number(u16::from_be_bytes([rest[0], rest[1]]))),
            &rest[2..],
        ),
        1 => return,
        _ => (Some(PortSelector::Name("http".into())), rest),
    };
    let mut lines = rest.split(|b| *b == b'\n');
    let Some(first) = lines.next() else { return };
    let (mut slices, mut rv) = parse_slice_list(first).unwrap_or_default();
    for line in lines {
        let (before, rv_before) = (slices.clone(), rv.clone());
        match apply_watch_line(line, &mut rv, &mut slices) {
            Ok(changed) => assert_eq!(changed, slices != before, "change misreported"),
            Err(_) => {
                assert!(
                    slices == before && rv == rv_before,
                    "a failed line changed state"
                );
            }
        }
    }
    let eps = endpoints_of(slices.values(), port.as_ref());
    assert!(eps.windows(2).all(|w| w[0] < w[1]), "not sorted and unique");
    assert!(eps.iter().all(|e| e.port() > 0));
    if let Some(PortSelector::Number(n)) = port {
        assert!(eps.iter().all(|e| e.port() == n));
    }
    assert_eq!(eps, endpoints_of(slices.values(), port.as_ref()));
});
