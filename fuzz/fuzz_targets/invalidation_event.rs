//! The invalidation event JSON a receiver parses after the signature
//! check: parsing and `validate` never panic; an event that validates
//! re-encodes and decodes to itself.

#![no_main]

use inferadb_invalidation::Invalidation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(ev) = serde_json::from_slice::<Invalidation>(data) else {
        return;
    };
    if ev.validate().is_err() {
        return;
    }
    let json = serde_json::to_vec(&ev).expect("a valid event encodes");
    let back: Invalidation = serde_json::from_slice(&json).expect("and decodes");
    assert_eq!(back, ev);
    assert!(back.validate().is_ok());
});
