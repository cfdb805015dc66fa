//! Webhook signatures: `X-InferaDB-Signature: t=<unix seconds>,v1=<hex>`.
//!
//! `v1` is HMAC-SHA256, keyed with the shared secret, over the ASCII
//! timestamp, a `.`, and the raw request body (`"{t}.{body}"`). A header may
//! carry several `v1` values (a sender signing with an old and a new secret
//! during rotation); the receiver accepts the request when any of them
//! matches any of its secrets. Comparison is constant-time (`hmac`'s
//! `verify_slice`, by `subtle`). A timestamp further than the tolerance from
//! the receiver's clock, in either direction, is rejected: a captured
//! request cannot be replayed after the window, and inside it the event-id
//! dedupe makes a replay a no-op.
//!
//! The secret has no `Display`, its `Debug` is redacted, and no error in
//! this module carries key material or the expected MAC.

use hmac::{Mac, SimpleHmac};
use sha2::Sha256;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-inferadb-signature";

/// Default clock-skew / replay window: 5 minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

/// Longest header value the parser looks at.
pub const MAX_HEADER_LEN: usize = 1024;

/// Most `v1` signatures one header may carry.
pub const MAX_SIGNATURES: usize = 4;

/// Shortest accepted secret, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = SimpleHmac<Sha256>;

/// The shared webhook secret. Zeroed on drop; never printed.
#[derive(Clone)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// A secret of at least [`MIN_SECRET_LEN`] bytes (a random 32-byte
    /// value, hex or base64 text, is the intended form).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, SecretError> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort {
                len: bytes.len(),
                min: MIN_SECRET_LEN,
            });
        }
        Ok(Secret(bytes))
    }

    /// The secret from text, surrounding whitespace (a file's trailing
    /// newline) removed.
    pub fn from_text(text: &str) -> Result<Secret, SecretError> {
        Secret::new(text.trim().as_bytes().to_vec())
    }

    fn mac(&self, timestamp: u64, body: &[u8]) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A secret that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("webhook secret is {len} bytes; at least {min} are required")]
    TooShort { len: usize, min: usize },
}

/// A parsed signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureHeader {
    /// Unix seconds the sender signed at.
    pub timestamp: u64,
    /// The `v1` MACs, in header order (1 to [`MAX_SIGNATURES`]).
    pub v1: Vec<[u8; 32]>,
}

/// Why a header did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("signature header longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
    #[error("signature header is not ASCII")]
    NotAscii,
    #[error("signature header element without '='")]
    NoEquals,
    #[error("signature header has no timestamp")]
    NoTimestamp,
    #[error("signature header has more than one timestamp")]
    DuplicateTimestamp,
    #[error("signature header timestamp is not a decimal number")]
    BadTimestamp,
    #[error("signature header has no v1 signature")]
    NoSignature,
    #[error("signature header has more than {MAX_SIGNATURES} v1 signatures")]
    TooManySignatures,
    #[error("v1 signature is not 64 hex digits")]
    BadSignature,
}

impl SignatureHeader {
    /// Parses `t=<digits>,v1=<64 hex>[,v1=…]`. Elements are separated by
    /// commas and may be padded with spaces; unknown keys (future schemes)
    /// are skipped; keys are case-sensitive.
    pub fn parse(value: &str) -> Result<SignatureHeader, HeaderError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(HeaderError::TooLong);
        }
        if !value.is_ascii() {
            return Err(HeaderError::NotAscii);
        }
        let mut timestamp = None;
        let mut v1 = Vec::new();
        for element in value.split(',') {
            let element = element.trim_matches(' ');
            if element.is_empty() {
                continue;
            }
            let (key, val) = element.split_once('=').ok_or(HeaderError::NoEquals)?;
            match key {
                "t" => {
                    if timestamp.is_some() {
                        return Err(HeaderError::DuplicateTimestamp);
                    }
                    if val.is_empty() || val.len() > 19 || !val.bytes().all(|b| b.is_ascii_digit())
                    {
                        return Err(HeaderError::BadTimestamp);
                    }
                    timestamp = Some(val.parse::<u64>().map_err(|_| HeaderError::BadTimestamp)?);
                }
                "v1" => {
                    if v1.len() == MAX_SIGNATURES {
                        return Err(HeaderError::TooManySignatures);
                    }
                    let mut mac = [0u8; 32];
                    if val.len() != 64 {
                        return Err(HeaderError::BadSignature);
                    }
                    hex::decode_to_slice(val, &mut mac).map_err(|_| HeaderError::BadSignature)?;
                    v1.push(mac);
                }
                _ => {}
            }
        }
        let timestamp = timestamp.ok_or(HeaderError::NoTimestamp)?;
        if v1.is_empty() {
            return Err(HeaderError::NoSignature);
        }
        Ok(SignatureHeader { timestamp, v1 })
    }
}

impl fmt::Display for SignatureHeader {
    /// The header value, in the form [`SignatureHeader::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}", self.timestamp)?;
        for mac in &self.v1 {
            write!(f, ",v1={}", hex::encode(mac))?;
        }
        Ok(())
    }
}

/// The header value for `body` signed at `timestamp` (unix seconds) with
/// each of `secrets` (one `v1` per secret; normally one).
pub fn sign(secrets: &[Secret], timestamp: u64, body: &[u8]) -> String {
    SignatureHeader {
        timestamp,
        v1: secrets
            .iter()
            .map(|s| s.mac(timestamp, body).finalize().into_bytes().into())
            .collect(),
    }
    .to_string()
}

/// Why a request's signature was refused. Each maps to one value of the
/// receiver's `reason` metric label ([`AuthError::reason`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing {SIGNATURE_HEADER} header")]
    Missing,
    #[error("malformed {SIGNATURE_HEADER} header: {0}")]
    Malformed(#[from] HeaderError),
    #[error("signature timestamp {age_secs}s away from now, outside the {tolerance_secs}s window")]
    Stale { age_secs: i128, tolerance_secs: u64 },
    #[error("signature does not match")]
    BadSignature,
}

impl AuthError {
    /// The metric label: `missing`, `malformed`, `stale`, `bad_signature`.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) => "malformed",
            AuthError::Stale { .. } => "stale",
            AuthError::BadSignature => "bad_signature",
        }
    }
}

/// Checks `header` (the raw value, `None` when absent) against `body` with
/// any of `secrets`, at `now`, allowing `tolerance` of clock skew.
pub fn verify(
    secrets: &[Secret],
    header: Option<&[u8]>,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), AuthError> {
    let raw = header.ok_or(AuthError::Missing)?;
    let text = std::str::from_utf8(raw).map_err(|_| HeaderError::NotAscii)?;
    let parsed = SignatureHeader::parse(text)?;
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i128,
        Err(e) => -(e.duration().as_secs() as i128),
    };
    let age = now_secs - parsed.timestamp as i128;
    if age.unsigned_abs() > tolerance.as_secs() as u128 {
        return Err(AuthError::Stale {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    // Every (secret, signature) pair is checked, so the time taken does not
    // tell which one matched.
    let mut ok = false;
    for secret in secrets {
        for mac in &parsed.v1 {
            ok |= secret.mac(parsed.timestamp, body).verify_slice(mac).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Unix seconds of `t` (0 before the epoch).
pub(crate) fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::new(s.as_bytes().to_vec()).unwrap()
    }

    #[test]
    fn sign_then_verify() {
        let s = secret("0123456789abcdef0123");
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let h = sign(std::slice::from_ref(&s), 1_700_000_000, b"{}");
        assert!(h.starts_with("t=1700000000,v1="), "{h}");
        assert_eq!(h.len(), "t=1700000000,v1=".len() + 64);
        verify(
            std::slice::from_ref(&s),
            Some(h.as_bytes()),
            b"{}",
            now,
            DEFAULT_TOLERANCE,
        )
        .unwrap();
        // Within the window either way.
        for skew in [-299i64, 299] {
            let t = UNIX_EPOCH + Duration::from_secs((1_700_000_000 + skew) as u64);
            verify(
                std::slice::from_ref(&s),
                Some(h.as_bytes()),
                b"{}",
                t,
                DEFAULT_TOLERANCE,
            )
            .unwrap();
        }
    }

    #[test]
    fn known_vector() {
        // HMAC-SHA256(key="0123456789abcdef", "1700000000.hello") computed
        // independently (python3 hmac).
        let s = secret("0123456789abcdef");
        let h = sign(&[s], 1_700_000_000, b"hello");
        assert_eq!(
            h,
            "t=1700000000,v1=".to_string()
                + "adc6dd484b44cd99e9825b07b9475d45999b82cf8071c60272358d4a51fe73e9"
        );
    }

    #[test]
    fn rejections() {
        let s = secret("0123456789abcdef0123");
        let other = secret("fedcba9876543210fedc");
        let t0 = 1_700_000_000u64;
        let now = UNIX_EPOCH + Duration::from_secs(t0);
        let h = sign(std::slice::from_ref(&s), t0, b"body");
        let v = |secrets: &[Secret], h: Option<&str>, body: &[u8], now| {
            verify(secrets, h.map(str::as_bytes), body, now, DEFAULT_TOLERANCE)
        };
        assert_eq!(
            v(std::slice::from_ref(&s), None, b"body", now),
            Err(AuthError::Missing)
        );
        assert_eq!(
            v(std::slice::from_ref(&s), Some(&h), b"bodY", now),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v(std::slice::from_ref(&other), Some(&h), b"body", now),
            Err(AuthError::BadSignature)
        );
        // Rotation: the receiver knows both secrets.
        v(&[other.clone(), s.clone()], Some(&h), b"body", now).unwrap();
        // A header signed with both verifies with either.
        let both = sign(&[other.clone(), s.clone()], t0, b"body");
        v(std::slice::from_ref(&s), Some(&both), b"body", now).unwrap();
        let late = UNIX_EPOCH + Duration::from_secs(t0 + 301);
        assert!(matches!(
            v(std::slice::from_ref(&s), Some(&h), b"body", late),
            Err(AuthError::Stale { age_secs: 301, .. })
        ));
        let early = UNIX_EPOCH + Duration::from_secs(t0 - 301);
        assert_eq!(
            v(std::slice::from_ref(&s), Some(&h), b"body", early)
                .unwrap_err()
                .reason(),
            "stale"
        );
        // A stale header re-timestamped without re-signing fails the MAC.
        let forged = h.replace("t=1700000000", "t=1700000301");
        assert_eq!(
            v(std::slice::from_ref(&s), Some(&forged), b"body", late),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            v(&[s], Some("v1=00"), b"body", now).unwrap_err().reason(),
            "malformed"
        );
    }

    #[test]
    fn parser() {
        let mac = "ab".repeat(32);
        let ok = SignatureHeader::parse(&format!(" t=5 , v1={mac},v0=zz,,")).unwrap();
        assert_eq!(ok.timestamp, 5);
        assert_eq!(ok.v1, vec![[0xab; 32]]);
        assert_eq!(SignatureHeader::parse(&ok.to_string()).unwrap(), ok);
        use HeaderError::*;
        for (input, err) in [
            ("", NoTimestamp),
            ("t=1", NoSignature),
            (&*format!("v1={mac}"), NoTimestamp),
            (&*format!("t=1,t=2,v1={mac}"), DuplicateTimestamp),
            (&*format!("t=-1,v1={mac}"), BadTimestamp),
            (&*format!("t=+1,v1={mac}"), BadTimestamp),
            (&*format!("t=,v1={mac}"), BadTimestamp),
            (&*format!("t=99999999999999999999,v1={mac}"), BadTimestamp),
            (&*format!("t=18446744073709551616,v1={mac}"), BadTimestamp),
            ("t=1,v1=abc", BadSignature),
            (&*format!("t=1,v1={}", "g".repeat(64)), BadSignature),
            ("t=1,garbage", NoEquals),
            (&*format!("t=1,v1={mac}é"), NotAscii),
            (&*"t=1,".repeat(300), TooLong),
        ] {
            assert_eq!(SignatureHeader::parse(input), Err(err), "{input:?}");
        }
        let five = format!("t=1{}", format!(",v1={mac}").repeat(5));
        assert_eq!(SignatureHeader::parse(&five), Err(TooManySignatures));
    }

    #[test]
    fn secret_is_never_printed() {
        let s = secret("super-secret-value-123");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let e = Secret::new(b"short".to_vec()).unwrap_err();
        assert!(!e.to_string().contains("short"), "{e}");
    }
}
