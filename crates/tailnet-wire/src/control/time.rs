//! RFC 3339 timestamps as Go's `time.Time` writes them in JSON.
//!
//! Go writes `time.Time` as RFC 3339 with nanoseconds and trailing zeros
//! trimmed (`2006-01-02T15:04:05.999999999Z07:00`); its zero value is
//! `0001-01-01T00:00:00Z`, which control uses for "never" (e.g. a
//! `KeyExpiry` that does not expire). Go refuses to write years outside
//! 0000-9999, so [`Timestamp`] only holds instants in that range. A
//! timestamp is kept as a UTC instant: an offset in the input is applied
//! and the value is written back in UTC (`Z`).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Why a string is not an RFC 3339 timestamp we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`.
    #[error("timestamp is not RFC 3339")]
    Format,
    /// A field is out of range (month 13, day 31 of a 30-day month, hour 24, …).
    #[error("timestamp field out of range")]
    Range,
    /// The instant falls outside the years 0000-9999 (in UTC).
    #[error("timestamp outside the years 0000-9999")]
    Year,
}

/// Unix seconds of 0000-01-01T00:00:00Z.
const MIN_SECS: i64 = -62_167_219_200;
/// Unix seconds of 10000-01-01T00:00:00Z (exclusive bound).
const END_SECS: i64 = 253_402_300_800;

/// A UTC instant with nanosecond precision, between the years 0000 and
/// 9999, written as RFC 3339 in JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp {
    secs: i64,
    nanos: u32,
}

impl Timestamp {
    /// Go's zero `time.Time`, `0001-01-01T00:00:00Z`: "unset" or "never".
    pub const ZERO: Timestamp = Timestamp {
        secs: -62_135_596_800,
        nanos: 0,
    };
    /// The Unix epoch, `1970-01-01T00:00:00Z`.
    pub const UNIX_EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// An instant from Unix seconds and nanoseconds; `None` outside the
    /// years 0000-9999 or with `nanos` ≥ 10⁹.
    pub fn from_unix(secs: i64, nanos: u32) -> Option<Self> {
        ((MIN_SECS..END_SECS).contains(&secs) && nanos < 1_000_000_000)
            .then_some(Timestamp { secs, nanos })
    }

    /// Seconds since the Unix epoch (negative before 1970).
    pub fn unix_seconds(&self) -> i64 {
        self.secs
    }

    /// The nanoseconds within the second.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }

    /// Whether this is Go's zero time, [`Timestamp::ZERO`].
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// The instant as a [`SystemTime`] (`None` if the platform cannot
    /// represent it).
    pub fn to_system_time(&self) -> Option<SystemTime> {
        if self.secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::new(self.secs.unsigned_abs(), self.nanos))
        } else {
            UNIX_EPOCH
                .checked_sub(Duration::from_secs(self.secs.unsigned_abs()))?
                .checked_add(Duration::from_nanos(u64::from(self.nanos)))
        }
    }

    /// The instant of a [`SystemTime`] (`None` outside the years 0000-9999).
    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self::from_unix(i64::try_from(d.as_secs()).ok()?, d.subsec_nanos()),
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).ok()?;
                if d.subsec_nanos() == 0 {
                    Self::from_unix(-secs, 0)
                } else {
                    Self::from_unix(-secs - 1, 1_000_000_000 - d.subsec_nanos())
                }
            }
        }
    }

    /// Parses RFC 3339 (`2024-05-06T07:08:09.5Z`, `…+02:00`). Fractions
    /// longer than nanoseconds are truncated; leap seconds are rejected,
    /// as Go rejects them.
    pub fn parse(s: &str) -> Result<Self, TimeError> {
        let b = s.as_bytes();
        if b.len() < 20 {
            return Err(TimeError::Format);
        }
        let year = digits(b, 0, 4)?;
        let month = digits(b, 5, 2)?;
        let day = digits(b, 8, 2)?;
        let hour = digits(b, 11, 2)?;
        let minute = digits(b, 14, 2)?;
        let second = digits(b, 17, 2)?;
        if b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
        {
            return Err(TimeError::Format);
        }
        if !(1..=12).contains(&month)
            || day < 1
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimeError::Range);
        }
        let mut i = 19;
        let mut nanos: u32 = 0;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            let mut scale = 100_000_000;
            while let Some(c) = b.get(i).filter(|c| c.is_ascii_digit()) {
                nanos += u32::from(c - b'0') * scale;
                scale /= 10;
                i += 1;
            }
            if i == start {
                return Err(TimeError::Format);
            }
        }
        let offset_secs: i64 = match &b[i..] {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let oh = digits(b, i + 1, 2)?;
                let om = digits(b, i + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err(TimeError::Range);
                }
                let off = i64::from(oh * 3600 + om * 60);
                if *sign == b'-' {
                    -off
                } else {
                    off
                }
            }
            _ => return Err(TimeError::Format),
        };
        let days = days_from_civil(i64::from(year), month, day);
        let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
        Self::from_unix(secs, nanos).ok_or(TimeError::Year)
    }
}

impl Default for Timestamp {
    /// Go's zero time.
    fn default() -> Self {
        Self::ZERO
    }
}

/// `n` ASCII digits of `b` starting at `at`, as a number.
fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimeError> {
    let part = b.get(at..at + n).ok_or(TimeError::Format)?;
    part.iter().try_fold(0u32, |acc, &c| {
        if c.is_ascii_digit() {
            Ok(acc * 10 + u32::from(c - b'0'))
        } else {
            Err(TimeError::Format)
        }
    })
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01 (inverse of `days_from_civil`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    // Both are small and positive by construction.
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with trailing zeros of the fraction trimmed, like
    /// Go's `time.RFC3339Nano`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let days = self.secs.div_euclid(86_400);
        let sod = self.secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )?;
        if self.nanos != 0 {
            let frac = format!("{:09}", self.nanos);
            write!(f, ".{}", frac.trim_end_matches('0'))?;
        }
        f.write_str("Z")
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl std::str::FromStr for Timestamp {
    type Err = TimeError;
    fn from_str(s: &str) -> Result<Self, TimeError> {
        Self::parse(s)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    /// `null` decodes as the zero time, as in Go.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Self::ZERO),
            Some(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_zero_time_and_epoch() {
        assert_eq!(Timestamp::ZERO.to_string(), "0001-01-01T00:00:00Z");
        assert_eq!(
            Timestamp::parse("0001-01-01T00:00:00Z"),
            Ok(Timestamp::ZERO)
        );
        assert!(Timestamp::default().is_zero());
        assert_eq!(Timestamp::UNIX_EPOCH.to_string(), "1970-01-01T00:00:00Z");
        // Logout's "expire now": time.Unix(123, 0).
        assert_eq!(
            Timestamp::from_unix(123, 0).unwrap().to_string(),
            "1970-01-01T00:02:03Z"
        );
    }

    #[test]
    fn parses_offsets_and_fractions_and_writes_utc_nano() {
        let t = Timestamp::parse("2020-08-03T12:00:00.120000000+02:00").unwrap();
        assert_eq!(t.to_string(), "2020-08-03T10:00:00.12Z");
        assert_eq!(t.subsec_nanos(), 120_000_000);
        let t = Timestamp::parse("2024-02-29T23:59:59.9999999999-00:30").unwrap();
        assert_eq!(t.to_string(), "2024-03-01T00:29:59.999999999Z");
        assert_eq!(
            Timestamp::parse("2024-01-01t00:00:00z")
                .unwrap()
                .unix_seconds(),
            1_704_067_200
        );
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for (s, e) in [
            ("", TimeError::Format),
            ("2024-01-01 00:00:00Z", TimeError::Format),
            ("2024-01-01T00:00:00", TimeError::Format),
            ("2024-01-01T00:00:00.Z", TimeError::Format),
            ("2024-01-01T00:00:00+0200", TimeError::Format),
            ("2024-01-01T00:00:00Zjunk", TimeError::Format),
            ("2023-02-29T00:00:00Z", TimeError::Range),
            ("2024-13-01T00:00:00Z", TimeError::Range),
            ("2024-01-01T24:00:00Z", TimeError::Range),
            ("2024-01-01T00:00:60Z", TimeError::Range),
            ("2024-01-01T00:00:00+24:00", TimeError::Range),
            ("0000-01-01T00:00:00+00:01", TimeError::Year),
            ("9999-12-31T23:59:59-00:01", TimeError::Year),
        ] {
            assert_eq!(Timestamp::parse(s), Err(e), "{s:?}");
        }
        assert!(Timestamp::parse("0000-01-01T00:00:00Z").is_ok());
        assert!(Timestamp::parse("9999-12-31T23:59:59.999999999Z").is_ok());
    }

    #[test]
    fn every_day_round_trips_through_the_calendar() {
        // Every day of 1999-2001 plus both ends of the range.
        for days in (10_592..11_688).chain([-719_528, 2_932_896]) {
            let t = Timestamp::from_unix(days * 86_400 + 3661, 5).unwrap();
            assert_eq!(Timestamp::parse(&t.to_string()), Ok(t));
        }
    }

    #[test]
    fn system_time_conversions() {
        let t = Timestamp::from_unix(-1, 250).unwrap();
        assert_eq!(t.to_string(), "1969-12-31T23:59:59.00000025Z");
        assert_eq!(
            Timestamp::from_system_time(t.to_system_time().unwrap()),
            Some(t)
        );
        let now = SystemTime::now();
        assert_eq!(
            Timestamp::from_system_time(now).unwrap().to_system_time(),
            Some(now)
        );
    }

    #[test]
    fn json_null_is_zero_and_option_null_is_none() {
        assert_eq!(
            serde_json::from_str::<Timestamp>("null").unwrap(),
            Timestamp::ZERO
        );
        assert_eq!(
            serde_json::from_str::<Option<Timestamp>>("null").unwrap(),
            None
        );
        assert!(serde_json::from_str::<Timestamp>("\"\"").is_err());
    }
}
