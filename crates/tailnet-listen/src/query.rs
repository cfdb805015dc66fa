//! Query strings of the requests our local HTTP endpoints take (the local
//! API's `?name=…&type=…`, `?target=…&timeout_ms=…`, `?peers=false`):
//! `key=value` pairs split on `&`, values `%XX`-decoded. Never fails: a
//! malformed escape is kept as it is, bytes that are not UTF-8 become
//! U+FFFD.

/// The decoded value of the first `key=value` pair of `query` whose key
/// is `key`; `None` if there is none (a bare `key` without `=` is none).
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(v))
}

/// True if `query` has the exact pair `pair` (`peers=false`), undecoded.
pub fn has_pair(query: &str, pair: &str) -> bool {
    query.split('&').any(|kv| kv == pair)
}

/// `%XX` escapes decoded; anything else (a `%` without two hex digits
/// after it included) as it is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    let hex = |c: u8| char::from(c).to_digit(16);
    while i < b.len() {
        match (
            b[i],
            b.get(i + 1).and_then(|c| hex(*c)),
            b.get(i + 2).and_then(|c| hex(*c)),
        ) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits: at most 255.
                out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Letters, digits and `-._` as they are, everything else `%XX`: a value
/// [`query_param`] gives back unchanged.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.bytes() {
        if c.is_ascii_alphanumeric() || b"-._".contains(&c) {
            out.push(char::from(c));
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_and_round_trip() {
        let q = "name=db%2Eexample&type=AAAA&x&name=second";
        assert_eq!(query_param(q, "name").as_deref(), Some("db.example"));
        assert_eq!(query_param(q, "type").as_deref(), Some("AAAA"));
        assert_eq!(query_param(q, "x"), None);
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%ff"), "\u{fffd}");
        let v = "a b&c=d/é%";
        let q = format!("t={}&k=1", percent_encode(v));
        assert_eq!(query_param(&q, "t").as_deref(), Some(v));
        assert!(has_pair("a=1&peers=false", "peers=false"));
        assert!(!has_pair("peers=falsey", "peers=false"));
    }
}
