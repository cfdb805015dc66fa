//! Auth-key redaction on arbitrary text (control's error bodies end up in
//! our errors and logs): never panics, is idempotent, and no `tskey-`
//! followed by key characters survives unless it is a format placeholder
//! (`tskey-auth-<id>`) or a bare prefix (`tskey-auth-`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::control::redact_auth_keys;

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let out = redact_auth_keys(&text);
    assert_eq!(redact_auth_keys(&out), out, "not idempotent");
    for (at, _) in out.match_indices("tskey-") {
        let after = &out[at + "tskey-".len()..];
        let run = after.find(|c| !key_char(c)).unwrap_or(after.len());
        let (key, tail) = after.split_at(run);
        assert!(
            key.is_empty() || key.ends_with('-') || tail.starts_with('<'),
            "a key survived: {out:?}"
        );
    }
    // Text without the prefix is untouched.
    if !text.contains("tskey-") {
        assert_eq!(out, text);
    }
});
