//! Spend quotas and credits: calendar periods in UTC (needs `alloc`, as the record types do).
//!
//! A spend cap or a credit refill counts per period: a UTC calendar day (00:00 to 00:00), an ISO
//! 8601 week (Monday 00:00 to the next Monday 00:00) or a calendar month (the 1st, 00:00, to the
//! 1st of the next month). Each period has its own counter cell, named by the period's start
//! ([`CellId::for_period`](super::CellId::for_period)), so a new period starts at zero without a
//! reset step, and `Retry-After` on `quota_exceeded` is the time until the period's end.

#![cfg(feature = "alloc")]

use crate::Timestamp;
use crate::record::SpendPeriod;
use crate::time::Date;

const DAY_NANOS: u64 = 86_400 * 1_000_000_000;

impl SpendPeriod {
    /// The period containing `now`: its start (inclusive) and end (exclusive), in UTC.
    ///
    /// ```
    /// use keygate::{SpendPeriod, Timestamp};
    /// let t = |s| Timestamp::parse_rfc3339(s).unwrap();
    /// let now = t("2024-02-29T13:00:00Z"); // a Thursday
    /// assert_eq!(SpendPeriod::Day.bounds(now), (t("2024-02-29T00:00:00Z"), t("2024-03-01T00:00:00Z")));
    /// assert_eq!(SpendPeriod::Week.bounds(now), (t("2024-02-26T00:00:00Z"), t("2024-03-04T00:00:00Z")));
    /// assert_eq!(SpendPeriod::Month.bounds(now), (t("2024-02-01T00:00:00Z"), t("2024-03-01T00:00:00Z")));
    /// ```
    #[must_use]
    pub fn bounds(self, now: Timestamp) -> (Timestamp, Timestamp) {
        let nanos = now.unix_nanos();
        let day_start = nanos - nanos % DAY_NANOS;
        let at = Timestamp::from_unix_nanos;
        match self {
            Self::Day => (at(day_start), at(day_start.saturating_add(DAY_NANOS))),
            Self::Week => {
                let weekday = u64::from(now.date().weekday());
                let start = day_start.saturating_sub(weekday * DAY_NANOS);
                (at(start), at(day_start.saturating_add((7 - weekday) * DAY_NANOS)))
            }
            Self::Month => {
                let Date { year, month, .. } = now.date();
                let first = Date::new(year, month, 1).and_then(Timestamp::from_date).unwrap_or(at(day_start));
                let next = Date::new(year, month, 1)
                    .map(Date::next_month)
                    .and_then(Timestamp::from_date)
                    .unwrap_or(Timestamp::MAX);
                (first, next)
            }
        }
    }
}
