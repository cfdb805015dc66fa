//! The local API's query strings (`tailnet_listen::query`): any query and
//! key decode without panicking, and any value encoded with
//! `percent_encode` comes back unchanged from the query it is put in,
//! whatever else the query holds.
//!
//! Input: a key length byte, the key, then a `0xff` byte splitting an
//! arbitrary query from a value to round-trip.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_listen::query::{has_pair, percent_decode, percent_encode, query_param};

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16).min(rest.len());
    let key = String::from_utf8_lossy(&rest[..n]).into_owned();
    let rest = &rest[n..];
    let (query, value) = match rest.iter().position(|b| *b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let query = String::from_utf8_lossy(query);
    let value = String::from_utf8_lossy(value);
    let _ = query_param(&query, &key);
    let _ = has_pair(&query, &key);
    let decoded = percent_decode(&query);
    assert!(decoded.len() <= query.len() * 3, "decoding grew the text");

    let enc = percent_encode(&value);
    assert!(enc
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || b"-._%".contains(&c)));
    // A key that an encoded pair cannot be confused with.
    if !key.is_empty() && !key.contains(['&', '=']) {
        let q = format!("{key}={enc}&{query}");
        assert_eq!(
            query_param(&q, &key).as_deref(),
            Some(&*value),
            "query {q:?}"
        );
    }
});
