//! Key text parsing on arbitrary UTF-8: never panics, and whatever parses
//! prints back (base64 and the kind's own prefixed form) to the same key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tailnet_wire::{KeyError, KeyKind, PrivateKey, PublicKey};

const KINDS: [KeyKind; 3] = [KeyKind::Node, KeyKind::Machine, KeyKind::Disco];

fn check_public(k: PublicKey) {
    for kind in KINDS {
        // Base64 carries no kind: it parses as every kind.
        assert_eq!(PublicKey::parse(&k.to_base64(), kind), Ok(k));
        let text = k.to_prefixed(kind);
        assert_eq!(PublicKey::parse(&text, kind), Ok(k));
        assert_eq!(
            PublicKey::parse(&format!("  {text}\n"), kind),
            Ok(k),
            "surrounding whitespace is trimmed"
        );
        for other in KINDS {
            if other != kind {
                assert!(matches!(
                    PublicKey::parse(&text, other),
                    Err(KeyError::Prefix { .. })
                ));
            }
        }
    }
    assert_eq!(k.to_base64().parse::<PublicKey>(), Ok(k));
    assert!(k.to_base64().starts_with(&k.short()));
    assert_eq!(format!("{k}"), k.to_base64());
}

fn check_private(k: &PrivateKey) {
    assert_eq!(PrivateKey::parse(&k.to_base64()).as_ref(), Ok(k));
    let mut hex = String::from("privkey:");
    for b in k.as_bytes() {
        hex.push_str(&format!("{b:02x}"));
    }
    assert_eq!(PrivateKey::parse(&hex).as_ref(), Ok(k));
    assert!(
        !format!("{k:?}").contains(&k.to_base64()),
        "Debug leaks the key"
    );
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for kind in KINDS {
        match PublicKey::parse(&text, kind) {
            Ok(k) => {
                // Only 44-character base64 or the right prefix parse.
                let t = text.trim();
                assert!(t.len() == 44 || t.starts_with(&format!("{}:", kind.prefix())));
                check_public(k);
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
    match PrivateKey::parse(&text) {
        Ok(k) => check_private(&k),
        Err(e) => {
            let _ = e.to_string();
        }
    }
    // Every 32-byte value round-trips, whatever its text looks like.
    if let Some(raw) = data.get(..32) {
        let raw: [u8; 32] = raw.try_into().unwrap();
        check_public(PublicKey::from_bytes(raw));
        check_private(&PrivateKey::from_bytes(raw));
    }
});
