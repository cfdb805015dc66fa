//! Auth-key text (`coordinator::authkey::parse_key`, what `up --auth-key`
//! and a register request carry): never panics; a key it accepts is
//! exactly the canonical text of its parts (so two spellings of one key
//! cannot both pass), and a refusal is always `Malformed`, whose fixed
//! message names nothing of the text (which may be a secret).

#![no_main]

use coordinator::authkey::{format_key, parse_key, AuthKeyError, KEY_PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse_key(text) {
        Ok((id, secret)) => {
            assert!(text.trim().starts_with(KEY_PREFIX));
            assert_eq!(id.len(), 17, "id {id:?}");
            assert_eq!(format_key(id, &secret), text.trim(), "not canonical");
        }
        // The one refusal a parse gives is a fixed message.
        Err(e) => assert!(matches!(e, AuthKeyError::Malformed), "{e:?}"),
    }
});
