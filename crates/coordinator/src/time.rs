//! Time helpers: how times are stored, printed and typed on the command line.
//!
//! The database stores times as whole Unix seconds (`INTEGER`); the API takes
//! and returns [`SystemTime`] and every operation that depends on "now" takes
//! it as an argument, so tests pick the clock.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whole Unix seconds of `t` (negative before 1970, saturating far out).
pub fn to_unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The time `secs` Unix seconds after (or before) 1970.
pub fn from_unix(secs: i64) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// `t` as RFC 3339 in UTC with whole seconds, e.g. `2025-01-31T12:00:00Z`
/// (the form Go's `time.Time` JSON accepts).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = to_unix(t);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // d is in [1, 31] and m in [1, 12] by construction.
    (y, m as u32, d as u32)
}

/// How long ago `then` was, short: `12s ago`, `5m ago`, `3h ago`, `2d ago`
/// (`just now` for the future or the current second).
pub fn ago(then: SystemTime, now: SystemTime) -> String {
    let secs = to_unix(now).saturating_sub(to_unix(then));
    match secs {
        i64::MIN..=0 => "just now".to_string(),
        1..=59 => format!("{secs}s ago"),
        60..=3599 => format!("{}m ago", secs / 60),
        3600..=86_399 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}

/// A bad `--expiry` value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid expiry {0:?}: use a positive whole number with a unit, e.g. 90d, 12h, 30m, 3600s")]
pub struct ExpiryError(pub String);

/// Parses a key lifetime typed on the command line: a positive whole number
/// followed by `d` (days), `h`, `m` or `s`: `90d`, `12h`, `30m`, `3600s`.
pub fn parse_expiry(text: &str) -> Result<Duration, ExpiryError> {
    let bad = || ExpiryError(text.to_string());
    let t = text.trim();
    let unit_at = t.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = (t.get(..unit_at).ok_or_else(bad)?, t.get(unit_at..));
    let per_unit: u64 = match unit {
        Some("d") => 86_400,
        Some("h") => 3600,
        Some("m") => 60,
        Some("s") => 1,
        _ => return Err(bad()),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    // Cap at 100 years: beyond that a "lifetime" is a typo, and the sum must
    // stay inside SystemTime and i64 seconds.
    let secs = n.checked_mul(per_unit).ok_or_else(bad)?;
    if n == 0 || secs > 100 * 365 * 86_400 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_round_trip() {
        for s in [0, 1, -1, 1_700_000_000, -86_401] {
            assert_eq!(to_unix(from_unix(s)), s);
        }
    }

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(from_unix(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(from_unix(951_782_400)), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(from_unix(1_700_000_000)), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(from_unix(-1)), "1969-12-31T23:59:59Z");
        assert_eq!(rfc3339(from_unix(4_102_444_799)), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn expiry_forms() {
        assert_eq!(parse_expiry("90d"), Ok(Duration::from_secs(90 * 86_400)));
        assert_eq!(parse_expiry("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert_eq!(parse_expiry("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_expiry("3600s"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_expiry(" 1d\n"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "d",
            "90",
            "0d",
            "-1d",
            "+1d",
            "1.5h",
            "90D",
            "1w",
            "1 d",
            "99999999999999999999d",
            "36501d",
            "é",
            "1é",
        ] {
            let err = parse_expiry(bad).expect_err(bad);
            assert!(err.to_string().contains("90d"), "{err}");
        }
    }

    #[test]
    fn ago_is_short() {
        let now = from_unix(1_000_000);
        assert_eq!(ago(from_unix(1_000_000), now), "just now");
        assert_eq!(ago(from_unix(1_000_010), now), "just now");
        assert_eq!(ago(from_unix(999_950), now), "50s ago");
        assert_eq!(ago(from_unix(999_700), now), "5m ago");
        assert_eq!(ago(from_unix(1_000_000 - 7200), now), "2h ago");
        assert_eq!(ago(from_unix(1_000_000 - 3 * 86_400), now), "3d ago");
    }
}
