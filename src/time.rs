//! Time as a value: the core never reads a clock.
//!
//! Every function that depends on time takes `now: Timestamp` as an argument, as governor's
//! `Gcra::test_and_update(.., now)` and rustls's `TimeProvider` do, so tests drive the clock and
//! the core stays `no_std`. [`Timestamp::now`] (with `std`) is for the thin drivers around it.
//!
//! A [`Timestamp`] is nanoseconds since the Unix epoch in a `u64`, which lasts until the year 2554.
//! Arithmetic saturates instead of wrapping or panicking. Calendar conversion (UTC, proleptic
//! Gregorian, no leap seconds) uses Howard Hinnant's `days_from_civil` algorithms, and RFC 3339
//! text in the one form the management API emits (`2026-11-24T22:41:00Z`, with fractional seconds
//! only when present).

use core::fmt;
use core::time::Duration;

const NANOS_PER_SEC: u64 = 1_000_000_000;
const SECS_PER_DAY: u64 = 86_400;

/// A point in time: nanoseconds since 1970-01-01T00:00:00Z.
///
/// ```
/// use keygate::Timestamp;
/// let t = Timestamp::from_unix_secs(1_700_000_000);
/// assert_eq!(t.to_string(), "2023-11-14T22:13:20Z");
/// assert_eq!(Timestamp::parse_rfc3339("2023-11-14T22:13:20Z"), Ok(t));
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

/// The text was not an RFC 3339 UTC or offset date-time in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid RFC 3339 timestamp")]
pub struct TimestampError;

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);
    /// The largest representable instant (in the year 2554).
    pub const MAX: Self = Self(u64::MAX);

    /// From nanoseconds since the epoch.
    #[must_use]
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// From whole seconds since the epoch (saturating at [`Timestamp::MAX`]).
    #[must_use]
    pub const fn from_unix_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(NANOS_PER_SEC))
    }

    /// From milliseconds since the epoch (saturating).
    #[must_use]
    pub const fn from_unix_millis(millis: u64) -> Self {
        Self(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the epoch.
    #[must_use]
    pub const fn unix_nanos(self) -> u64 {
        self.0
    }

    /// Whole seconds since the epoch.
    #[must_use]
    pub const fn unix_secs(self) -> u64 {
        self.0 / NANOS_PER_SEC
    }

    /// Whole milliseconds since the epoch.
    #[must_use]
    pub const fn unix_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self + d`, saturating at [`Timestamp::MAX`].
    #[must_use]
    pub const fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_nanos(d)))
    }

    /// `self - d`, saturating at the epoch.
    #[must_use]
    pub const fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_nanos(d)))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[must_use]
    pub const fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The current time from the system clock.
    ///
    /// A clock before 1970 reads as the epoch. Only drivers call this; the core takes `now`.
    #[cfg(feature = "std")]
    #[must_use]
    pub fn now() -> Self {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(Self::EPOCH, |d| Self(duration_nanos(d)))
    }

    /// Days since the epoch and the nanoseconds into that day (UTC).
    #[must_use]
    pub(crate) const fn day_and_nanos(self) -> (u64, u64) {
        let day_nanos = SECS_PER_DAY * NANOS_PER_SEC;
        (self.0 / day_nanos, self.0 % day_nanos)
    }

    /// Midnight UTC at the start of `date`, or `None` before the epoch or past [`Timestamp::MAX`].
    #[must_use]
    pub const fn from_date(date: Date) -> Option<Self> {
        let days = days_from_civil(date.year, date.month, date.day);
        if days < 0 {
            return None;
        }
        #[allow(clippy::cast_sign_loss)] // checked non-negative above
        let days = days as u64;
        match days.checked_mul(SECS_PER_DAY * NANOS_PER_SEC) {
            Some(n) => Some(Self(n)),
            None => None,
        }
    }

    /// The UTC calendar date this instant falls on.
    #[must_use]
    pub const fn date(self) -> Date {
        let (day, _) = self.day_and_nanos();
        #[allow(clippy::cast_possible_wrap)] // < 2^40 days
        civil_from_days(day as i64)
    }

    /// Parses RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`), case-insensitive `T`/`Z`.
    ///
    /// # Errors
    ///
    /// [`TimestampError`] when the text is not of that form, names an impossible date or time,
    /// or lies before the epoch or after [`Timestamp::MAX`].
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimestampError> {
        let b = s.as_bytes();
        if b.len() < 20 || b.len() > 40 {
            return Err(TimestampError);
        }
        let num = |r: core::ops::Range<usize>| -> Result<u32, TimestampError> {
            b[r].iter().try_fold(0u32, |acc, &c| {
                if c.is_ascii_digit() { Ok(acc * 10 + u32::from(c - b'0')) } else { Err(TimestampError) }
            })
        };
        let sep = |i: usize, c: u8| if b[i] == c { Ok(()) } else { Err(TimestampError) };
        let year = num(0..4)?;
        sep(4, b'-')?;
        let month = num(5..7)?;
        sep(7, b'-')?;
        let day = num(8..10)?;
        if !matches!(b[10], b'T' | b't') {
            return Err(TimestampError);
        }
        let hour = num(11..13)?;
        sep(13, b':')?;
        let minute = num(14..16)?;
        sep(16, b':')?;
        let second = num(17..19)?;
        let mut i = 19;
        let mut nanos: u64 = 0;
        if b[i] == b'.' {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 9 {
                    nanos = nanos * 10 + u64::from(b[i] - b'0');
                }
                i += 1;
            }
            let digits = i - start;
            if digits == 0 {
                return Err(TimestampError);
            }
            for _ in digits..9 {
                nanos *= 10;
            }
        }
        let offset_secs: i64 = match b.get(i..) {
            Some([b'Z' | b'z']) => 0,
            Some([sign @ (b'+' | b'-'), rest @ ..]) if rest.len() == 5 && rest[2] == b':' => {
                let h = num(i + 1..i + 3)?;
                let m = num(i + 4..i + 6)?;
                if h > 23 || m > 59 {
                    return Err(TimestampError);
                }
                let off = i64::from(h * 3600 + m * 60);
                if *sign == b'-' { -off } else { off }
            }
            _ => return Err(TimestampError),
        };
        #[allow(clippy::cast_possible_wrap)] // four digits
        let date = Date::new(year as i32, month, day).ok_or(TimestampError)?;
        if hour > 23 || minute > 59 || second > 59 {
            return Err(TimestampError);
        }
        let days = days_from_civil(date.year, date.month, date.day);
        let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
        let secs = u64::try_from(secs).map_err(|_| TimestampError)?;
        secs.checked_mul(NANOS_PER_SEC).and_then(|n| n.checked_add(nanos)).map(Self).ok_or(TimestampError)
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// RFC 3339 in UTC: `2026-11-24T22:41:00Z`, with nanoseconds (trailing zeros trimmed) if any.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (_, nanos_of_day) = self.day_and_nanos();
        let Date { year, month, day } = self.date();
        let secs = nanos_of_day / NANOS_PER_SEC;
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        write!(f, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}")?;
        let mut frac = nanos_of_day % NANOS_PER_SEC;
        if frac != 0 {
            let mut width = 9;
            while frac.is_multiple_of(10) {
                frac /= 10;
                width -= 1;
            }
            write!(f, ".{frac:0width$}")?;
        }
        f.write_str("Z")
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 date-time such as \"2026-11-24T22:41:00Z\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                Timestamp::parse_rfc3339(v).map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_str(V)
    }
}

/// A UTC calendar date (proleptic Gregorian).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    /// The year, e.g. 2026.
    pub year: i32,
    /// The month, 1..=12.
    pub month: u32,
    /// The day of the month, 1..=31.
    pub day: u32,
}

impl Date {
    /// A date, or `None` if no such day exists (e.g. 2025-02-29).
    #[must_use]
    pub const fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        if month == 0 || month > 12 || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        Some(Self { year, month, day })
    }

    /// The day of the week, 0 = Monday … 6 = Sunday (ISO 8601).
    #[must_use]
    pub const fn weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (3).
        let days = days_from_civil(self.year, self.month, self.day);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // 0..7
        let w = (days + 3).rem_euclid(7) as u32;
        w
    }

    /// The first day of the next month.
    #[must_use]
    pub const fn next_month(self) -> Self {
        if self.month == 12 {
            Self { year: self.year + 1, month: 1, day: 1 }
        } else {
            Self { year: self.year, month: self.month + 1, day: 1 }
        }
    }
}

/// Whether `year` is a Gregorian leap year.
#[must_use]
pub const fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// The number of days in `month` (1..=12) of `year`.
#[must_use]
pub const fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

const fn duration_nanos(d: Duration) -> u64 {
    let n = d.as_nanos();
    if n > u64::MAX as u128 {
        u64::MAX
    } else {
        #[allow(clippy::cast_possible_truncation)] // checked above
        let n = n as u64;
        n
    }
}

/// Days since 1970-01-01 of a civil date (Hinnant's `days_from_civil`).
const fn days_from_civil(year: i32, month: u32, day: u32) -> i64 {
    let y = year as i64 - if month <= 2 { 1 } else { 0 };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = month as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01 (Hinnant's `civil_from_days`).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // values are small and checked
const fn civil_from_days(z: i64) -> Date {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    Date { year: (y + if m <= 2 { 1 } else { 0 }) as i32, month: m, day: d }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn formats_and_parses_rfc3339() {
        let t = Timestamp::from_unix_secs(0);
        assert_eq!(t.to_string(), "1970-01-01T00:00:00Z");
        let t = Timestamp::from_unix_nanos(951_782_400_123_000_000); // 2000-02-29
        assert_eq!(t.to_string(), "2000-02-29T00:00:00.123Z");
        assert_eq!(Timestamp::parse_rfc3339("2000-02-29T00:00:00.123Z"), Ok(t));
        assert_eq!(Timestamp::parse_rfc3339("2000-02-29T01:00:00.123+01:00"), Ok(t));
        assert_eq!(Timestamp::parse_rfc3339("2000-02-28t19:00:00.123-05:00"), Ok(t));
        for bad in [
            "2001-02-29T00:00:00Z",
            "2000-13-01T00:00:00Z",
            "2000-01-01T24:00:00Z",
            "2000-01-01 00:00:00Z",
            "2000-01-01T00:00:00",
            "2000-01-01T00:00:00.Z",
            "1969-12-31T23:59:59Z",
            "2000-01-01T00:00:00+24:00",
            "+2000-01-01T00:00:00Z",
        ] {
            assert_eq!(Timestamp::parse_rfc3339(bad), Err(TimestampError), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip_and_weekdays() {
        for day in (0..200_000).step_by(7) {
            let t = Timestamp::from_unix_secs(day * 86_400);
            assert_eq!(Timestamp::from_date(t.date()), Some(t));
        }
        assert_eq!(Date::new(1970, 1, 1).map(Date::weekday), Some(3)); // Thursday
        assert_eq!(Date::new(2026, 11, 24).map(Date::weekday), Some(1)); // Tuesday
        assert_eq!(Date::new(2024, 2, 29).map(|d| d.next_month()), Date::new(2024, 3, 1));
        assert_eq!(Date::new(2025, 2, 29), None);
        assert!(is_leap_year(2000) && !is_leap_year(1900) && is_leap_year(2024));
    }
}
