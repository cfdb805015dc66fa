//! The webhook signature header (`X-InferaDB-Signature: t=…,v1=…`) on
//! arbitrary bytes: parsing and verification never panic, whatever parses
//! prints back to the same value, and verification accepts exactly when
//! one `v1` is the real MAC of the body at the header's timestamp.

#![no_main]

use inferadb_invalidation::signature::{
    sign, verify, AuthError, SignatureHeader, DEFAULT_TOLERANCE, MAX_HEADER_LEN, MAX_SIGNATURES,
};
use inferadb_invalidation::Secret;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

const BODY: &[u8] = br#"{"id":"e1","kind":"vault_created","vault_id":"12345"}"#;

fuzz_target!(|data: &[u8]| {
    let secret = Secret::new(b"fuzz-secret-0123456789".to_vec()).expect("long enough");
    let secrets = std::slice::from_ref(&secret);
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let verdict = verify(secrets, Some(data), BODY, now, DEFAULT_TOLERANCE);

    let Ok(text) = std::str::from_utf8(data) else {
        assert!(matches!(verdict, Err(AuthError::Malformed(_))));
        return;
    };
    let Ok(h) = SignatureHeader::parse(text) else {
        assert!(matches!(verdict, Err(AuthError::Malformed(_))));
        return;
    };
    assert!(text.len() <= MAX_HEADER_LEN);
    assert!(!h.v1.is_empty() && h.v1.len() <= MAX_SIGNATURES);
    let printed = h.to_string();
    assert_eq!(SignatureHeader::parse(&printed).as_ref(), Ok(&h));

    // The oracle: the real MAC at the header's timestamp.
    let real = SignatureHeader::parse(&sign(secrets, h.timestamp, BODY)).expect("own output parses");
    let in_window = h.timestamp.abs_diff(1_700_000_000) <= DEFAULT_TOLERANCE.as_secs();
    let matches = h.v1.contains(&real.v1[0]);
    match verdict {
        Ok(()) => assert!(in_window && matches),
        Err(AuthError::Stale { .. }) => assert!(!in_window),
        Err(AuthError::BadSignature) => assert!(in_window && !matches),
        Err(e) => panic!("parsed header refused as {e:?}"),
    }
    // A header made by the sender always verifies at its own time (when
    // that time is one this platform's clock can hold).
    if let Some(t_now) = UNIX_EPOCH.checked_add(Duration::from_secs(h.timestamp)) {
        let own = sign(secrets, h.timestamp, data);
        assert_eq!(verify(secrets, Some(own.as_bytes()), data, t_now, DEFAULT_TOLERANCE), Ok(()));
    }
});
