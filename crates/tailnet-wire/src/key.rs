//! Curve25519 keys and their text forms.
//!
//! A WireGuard static key is also the node's Tailscale *node key*. Keys are
//! written either the WireGuard way (standard base64, 44 characters) or the
//! Tailscale way (`nodekey:`, `mkey:`, `discokey:` or `privkey:` followed by
//! 64 lowercase hex digits). Both parse; each kind prints in its own form.
//!
//! Private keys never print their bytes through `Debug` or `Display`.

use base64::Engine as _;
use std::fmt;
use std::str::FromStr;

/// Errors from parsing a key's text form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The text is neither 44-character base64 nor `<prefix>:<64 hex>`.
    #[error("key is not 44-character base64 or <prefix>:<64 hex digits>")]
    Format,
    /// The prefix before `:` is not one this kind of key accepts.
    #[error("key prefix {found:?} is not {expected:?}")]
    Prefix {
        /// The prefix found in the text.
        found: String,
        /// The prefix this kind of key is written with.
        expected: &'static str,
    },
    /// The decoded key is not 32 bytes long.
    #[error("key must be 32 bytes, got {0}")]
    Length(usize),
}

/// What a key is used for; decides its Tailscale text prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// A node's WireGuard public key (`nodekey:`).
    Node,
    /// A machine's Noise public key used with control (`mkey:`).
    Machine,
    /// A disco public key (`discokey:`).
    Disco,
}

impl KeyKind {
    /// The prefix this kind is written with, without the colon.
    pub fn prefix(self) -> &'static str {
        match self {
            KeyKind::Node => "nodekey",
            KeyKind::Machine => "mkey",
            KeyKind::Disco => "discokey",
        }
    }
}

/// 32 raw key bytes.
pub type Key = [u8; 32];

fn parse_key_text(s: &str, expected_prefix: &'static str) -> Result<Key, KeyError> {
    let s = s.trim();
    let bytes = if let Some((prefix, hex_part)) = s.split_once(':') {
        if prefix != expected_prefix {
            return Err(KeyError::Prefix {
                found: prefix.to_string(),
                expected: expected_prefix,
            });
        }
        if hex_part.len() != 64 {
            return Err(KeyError::Format);
        }
        hex::decode(hex_part).map_err(|_| KeyError::Format)?
    } else {
        if s.len() != 44 {
            return Err(KeyError::Format);
        }
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|_| KeyError::Format)?
    };
    let len = bytes.len();
    bytes.try_into().map_err(|_| KeyError::Length(len))
}

/// A Curve25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublicKey(Key);

impl PublicKey {
    /// Wraps raw bytes.
    pub const fn from_bytes(bytes: Key) -> Self {
        PublicKey(bytes)
    }
    /// The raw bytes.
    pub const fn as_bytes(&self) -> &Key {
        &self.0
    }
    /// Standard base64, as `wg` prints keys.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
    /// Tailscale's text form for this kind of key, e.g. `nodekey:<hex>`.
    pub fn to_prefixed(&self, kind: KeyKind) -> String {
        format!("{}:{}", kind.prefix(), hex::encode(self.0))
    }
    /// Parses a key written as base64 or as `<kind prefix>:<hex>`.
    pub fn parse(s: &str, kind: KeyKind) -> Result<Self, KeyError> {
        parse_key_text(s, kind.prefix()).map(PublicKey)
    }
    /// A short form for logs: the first 8 base64 characters.
    pub fn short(&self) -> String {
        let mut s = self.to_base64();
        s.truncate(8);
        s
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PublicKey::parse(s, KeyKind::Node)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A Curve25519 private key. Its bytes never appear in `Debug`/`Display`
/// output, so a config or error that holds one cannot leak it into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey(Key);

impl PrivateKey {
    /// Wraps raw bytes (clamping happens in the Curve25519 code that uses it).
    pub const fn from_bytes(bytes: Key) -> Self {
        PrivateKey(bytes)
    }
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        // getrandom only fails when the OS has no entropy source at all.
        getrandom::fill(&mut b).expect("operating system random source");
        // Clamp like `wg genkey` so the stored form is canonical.
        b[0] &= 248;
        b[31] &= 127;
        b[31] |= 64;
        PrivateKey(b)
    }
    /// The raw bytes. Handle with care.
    pub fn as_bytes(&self) -> &Key {
        &self.0
    }
    /// Standard base64, as `wg genkey` prints it. Handle with care.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }
    /// Parses base64 or `privkey:<hex>`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        parse_key_text(s, "privkey").map(PrivateKey)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl FromStr for PrivateKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        PrivateKey::parse(s)
    }
}

impl serde::Serialize for PrivateKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_base64())
    }
}

impl<'de> serde::Deserialize<'de> for PrivateKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        // Do not echo the text back: it may be a private key with one typo.
        s.parse().map_err(|e: KeyError| serde::de::Error::custom(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_prefixed_forms_round_trip() {
        let k = PublicKey::from_bytes([7u8; 32]);
        assert_eq!(k.to_base64().parse::<PublicKey>().unwrap(), k);
        let text = k.to_prefixed(KeyKind::Node);
        assert!(text.starts_with("nodekey:"));
        assert_eq!(PublicKey::parse(&text, KeyKind::Node).unwrap(), k);
        assert_eq!(
            PublicKey::parse(&k.to_prefixed(KeyKind::Disco), KeyKind::Node),
            Err(KeyError::Prefix {
                found: "discokey".into(),
                expected: "nodekey"
            })
        );
    }

    #[test]
    fn malformed_keys_are_rejected() {
        for bad in ["", "abc", "nodekey:zz", &"A".repeat(44), "nodekey:00"] {
            assert!(bad.parse::<PublicKey>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn private_key_never_prints_its_bytes() {
        let k = PrivateKey::generate();
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(&k.to_base64()));
        assert!(dbg.contains("redacted"));
        assert_eq!(PrivateKey::parse(&k.to_base64()).unwrap(), k);
        // `wg genkey` clamping.
        assert_eq!(k.as_bytes()[0] & 7, 0);
        assert_eq!(k.as_bytes()[31] & 0xc0, 0x40);
    }
}
