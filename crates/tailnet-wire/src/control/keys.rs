//! Typed public keys as control's JSON writes them: `nodekey:<64 hex>`,
//! `mkey:<64 hex>`, `discokey:<64 hex>`.
//!
//! Go (`types/key`) always writes the prefix and 64 lowercase hex digits,
//! also for the zero key, and rejects anything else, including `""`: one
//! empty key string makes the Go client reject the whole message. These
//! wrappers therefore never write `""`; the zero key (Go's "unset") is
//! written as the prefix plus 64 zeros, the way Go writes it. Decoding
//! accepts `null` as the zero key (Go leaves the field at zero) and, like
//! Go, upper-case hex digits; it does not accept the base64 form.

use crate::key::{Key, KeyError, KeyKind, PublicKey};
use std::fmt;
use std::str::FromStr;

/// Parses exactly `<prefix>:<64 hex digits>`, as Go's `parseHex` does.
fn parse_prefixed(s: &str, kind: KeyKind) -> Result<Key, KeyError> {
    let (prefix, hex_part) = s.split_once(':').ok_or(KeyError::Format)?;
    if prefix != kind.prefix() {
        return Err(KeyError::Prefix {
            found: prefix.to_string(),
            expected: kind.prefix(),
        });
    }
    if hex_part.len() != 64 {
        return Err(KeyError::Format);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut out).map_err(|_| KeyError::Format)?;
    Ok(out)
}

macro_rules! typed_key {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(Key);

        impl $name {
            /// The all-zero key, Go's "no key".
            pub const ZERO: Self = $name([0u8; 32]);
            /// The kind of key this is, which decides its text prefix.
            pub const KIND: KeyKind = $kind;

            /// Wraps raw bytes.
            pub const fn from_bytes(bytes: Key) -> Self {
                $name(bytes)
            }
            /// The raw bytes.
            pub const fn as_bytes(&self) -> &Key {
                &self.0
            }
            /// The untyped key.
            pub const fn key(&self) -> PublicKey {
                PublicKey::from_bytes(self.0)
            }
            /// Whether this is the zero key (unset).
            pub fn is_zero(&self) -> bool {
                self.0 == [0u8; 32]
            }
            /// Parses the prefixed text form (`<prefix>:<64 hex>`) only.
            pub fn parse(s: &str) -> Result<Self, KeyError> {
                parse_prefixed(s, $kind).map($name)
            }
        }

        impl From<PublicKey> for $name {
            fn from(k: PublicKey) -> Self {
                $name(*k.as_bytes())
            }
        }

        impl From<$name> for PublicKey {
            fn from(k: $name) -> Self {
                k.key()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.key().to_prefixed($kind))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> {
                Self::parse(s)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                match Option::<String>::deserialize(d)? {
                    None => Ok(Self::ZERO),
                    Some(s) => Self::parse(&s).map_err(serde::de::Error::custom),
                }
            }
        }
    };
}

typed_key!(
    /// A node's WireGuard public key, written `nodekey:<hex>`.
    NodePublic,
    KeyKind::Node
);
typed_key!(
    /// A machine's Noise public key, written `mkey:<hex>`.
    MachinePublic,
    KeyKind::Machine
);
typed_key!(
    /// A node's disco public key, written `discokey:<hex>`.
    DiscoPublic,
    KeyKind::Disco
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_prefixed_lowercase_hex_and_reads_it_back() {
        let k = NodePublic::from_bytes([0xab; 32]);
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, format!("\"nodekey:{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<NodePublic>(&json).unwrap(), k);
        // Go accepts upper-case hex on parse.
        let upper = format!("\"nodekey:{}\"", "AB".repeat(32));
        assert_eq!(serde_json::from_str::<NodePublic>(&upper).unwrap(), k);
    }

    #[test]
    fn zero_key_is_written_in_full_never_as_empty_string() {
        let json = serde_json::to_string(&DiscoPublic::ZERO).unwrap();
        assert_eq!(json, format!("\"discokey:{}\"", "0".repeat(64)));
        assert_eq!(
            serde_json::from_str::<DiscoPublic>("null").unwrap(),
            DiscoPublic::ZERO
        );
    }

    #[test]
    fn rejects_empty_wrong_prefix_base64_and_short_keys() {
        let b64 = format!("\"{}\"", PublicKey::from_bytes([1; 32]).to_base64());
        for bad in [
            "\"\"".to_string(),
            format!("\"discokey:{}\"", "00".repeat(32)),
            b64,
            "\"mkey:00\"".to_string(),
            format!("\"mkey:{}\"", "zz".repeat(32)),
            format!("\" mkey:{}\"", "00".repeat(32)),
        ] {
            assert!(
                serde_json::from_str::<MachinePublic>(&bad).is_err(),
                "{bad} decoded"
            );
        }
    }

    #[test]
    fn converts_to_and_from_untyped_keys() {
        let k = PublicKey::from_bytes([3; 32]);
        let m = MachinePublic::from(k);
        assert_eq!(PublicKey::from(m), k);
        assert_eq!(m.to_string(), k.to_prefixed(KeyKind::Machine));
        assert!(!m.is_zero());
        assert!(MachinePublic::default().is_zero());
    }
}
