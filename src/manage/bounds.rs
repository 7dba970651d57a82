//! Whether one key's configuration is within another's, dimension by dimension: the rule that
//! no key creates, updates or rotates a key into anything broader than itself.
//!
//! Each function answers for one dimension, `bound` being the caller's own value and `value`
//! the one it would give a key. An absent restriction (no expiry, an empty allowlist, no limit)
//! is the broadest value: it is within only an absent bound.

use crate::{Credits, IpCidr, KeyKind, KeyRecord, ModelAllowlist, RateLimits, SpendCap, SpendPeriod, Timestamp};

/// The restrictions of the caller's own key, against which every key it configures is held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) allowed_models: ModelAllowlist,
    pub(crate) allowed_providers: alloc::vec::Vec<alloc::string::String>,
    pub(crate) allowed_ips: alloc::vec::Vec<IpCidr>,
    pub(crate) rate_limit: RateLimits,
    pub(crate) spend_cap: Option<SpendCap>,
    pub(crate) credits: Option<Credits>,
}

impl Bounds {
    /// The restrictions of `record`.
    pub(crate) fn of(record: &KeyRecord) -> Self {
        Self {
            expires_at: record.expires_at,
            allowed_models: record.allowed_models.clone(),
            allowed_providers: record.allowed_providers.clone(),
            allowed_ips: record.allowed_ips.clone(),
            rate_limit: record.rate_limit,
            spend_cap: record.spend_cap,
            credits: record.credits,
        }
    }

    /// The first field of `value` broader than these bounds, in the order the fields are listed
    /// here, looking only at fields that differ from `before` (every field when `None`).
    pub(crate) fn first_wider(&self, value: &Self, before: Option<&Self>) -> Option<&'static str> {
        let changed = |same: fn(&Self, &Self) -> bool| before.is_none_or(|b| !same(b, value));
        let (limits, bound) = (&value.rate_limit, &self.rate_limit);
        let checks: [(&'static str, bool, bool); 9] = [
            (
                "expires_at",
                changed(|a, b| a.expires_at == b.expires_at),
                expiry_within(value.expires_at, self.expires_at),
            ),
            (
                "allowed_models",
                changed(|a, b| a.allowed_models == b.allowed_models),
                models_within(&value.allowed_models, &self.allowed_models),
            ),
            (
                "allowed_providers",
                changed(|a, b| a.allowed_providers == b.allowed_providers),
                providers_within(&value.allowed_providers, &self.allowed_providers),
            ),
            (
                "allowed_ips",
                changed(|a, b| a.allowed_ips == b.allowed_ips),
                ips_within(&value.allowed_ips, &self.allowed_ips),
            ),
            (
                "rate_limit.requests_per_minute",
                changed(|a, b| a.rate_limit.requests_per_minute == b.rate_limit.requests_per_minute),
                limit_within(limits.requests_per_minute, bound.requests_per_minute),
            ),
            (
                "rate_limit.tokens_per_minute",
                changed(|a, b| a.rate_limit.tokens_per_minute == b.rate_limit.tokens_per_minute),
                limit_within(limits.tokens_per_minute, bound.tokens_per_minute),
            ),
            (
                "rate_limit.concurrency",
                changed(|a, b| a.rate_limit.concurrency == b.rate_limit.concurrency),
                limit_within(limits.concurrency, bound.concurrency),
            ),
            (
                "spend_cap",
                changed(|a, b| a.spend_cap == b.spend_cap),
                spend_cap_within(value.spend_cap, self.spend_cap),
            ),
            ("credits", changed(|a, b| a.credits == b.credits), credits_within(value.credits, self.credits)),
        ];
        checks.into_iter().find(|&(_, changed, within)| changed && !within).map(|(field, _, _)| field)
    }
}

/// An expiry no later than the bound's (and present when it is).
pub(crate) fn expiry_within(value: Option<Timestamp>, bound: Option<Timestamp>) -> bool {
    match (value, bound) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(v), Some(b)) => v <= b,
    }
}

/// Every model `value` permits is permitted by `bound`.
pub(crate) fn models_within(value: &ModelAllowlist, bound: &ModelAllowlist) -> bool {
    bound.covers(value)
}

/// Every provider of `value` is in `bound` (an empty list is any provider).
pub(crate) fn providers_within(value: &[alloc::string::String], bound: &[alloc::string::String]) -> bool {
    bound.is_empty() || (!value.is_empty() && value.iter().all(|p| bound.contains(p)))
}

/// Every network of `value` lies inside a network of `bound` (an empty list is any address).
pub(crate) fn ips_within(value: &[IpCidr], bound: &[IpCidr]) -> bool {
    bound.is_empty() || (!value.is_empty() && value.iter().all(|net| bound.iter().any(|b| cidr_within(*net, *b))))
}

/// `net` is a sub-network of `bound` (blocks are stored normalised, IPv4-mapped as IPv4).
pub(crate) fn cidr_within(net: IpCidr, bound: IpCidr) -> bool {
    bound.prefix_len() <= net.prefix_len() && bound.contains(net.addr())
}

/// A limit no higher than the bound (and present when it is).
pub(crate) fn limit_within(value: Option<u32>, bound: Option<u32>) -> bool {
    match (value, bound) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(v), Some(b)) => v <= b,
    }
}

/// A spend cap that lets a key spend, in any period of the bound, no more than the bound.
pub(crate) fn spend_cap_within(value: Option<SpendCap>, bound: Option<SpendCap>) -> bool {
    match (value, bound) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(v), Some(b)) => budget_within(v.amount_micros, Some(v.period), b.amount_micros, Some(b.period)),
    }
}

/// Credits that give a key, in any refill period of the bound (or in all, for credits that never
/// refill), no more than the bound.
pub(crate) fn credits_within(value: Option<Credits>, bound: Option<Credits>) -> bool {
    match (value, bound) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(v), Some(b)) => budget_within(v.amount, v.refill, b.amount, b.refill),
    }
}

/// Whether `amount` per `period` stays within `bound` per `bound_period` in every window of
/// `bound_period` (`None` is a single window spanning all time): the amount times the most
/// windows of `period` one window of `bound_period` touches.
fn budget_within(amount: u64, period: Option<SpendPeriod>, bound: u64, bound_period: Option<SpendPeriod>) -> bool {
    windows_touched(bound_period, period).and_then(|n| amount.checked_mul(n)).is_some_and(|total| total <= bound)
}

/// The most windows of `period` that one window of `within` touches, or `None` for unboundedly
/// many (all time against a refilling period). Days nest in weeks and months; a month touches at
/// most 6 ISO weeks (31 days from a Sunday), a week at most 2 months.
fn windows_touched(within: Option<SpendPeriod>, period: Option<SpendPeriod>) -> Option<u64> {
    use SpendPeriod::{Day, Month, Week};
    match (within, period) {
        (_, None) | (Some(Day), _) | (Some(Week), Some(Week)) | (Some(Month), Some(Month)) => Some(1),
        (None, Some(_)) => None,
        (Some(Week), Some(Day)) => Some(7),
        (Some(Week), Some(Month)) => Some(2),
        (Some(Month), Some(Day)) => Some(31),
        (Some(Month), Some(Week)) => Some(6),
    }
}

/// A caller of `caller` kind may give a key `kind` if it is the standard kind or its own (the
/// operator, of no kind, any).
pub(crate) fn kind_within(kind: KeyKind, caller: Option<KeyKind>) -> bool {
    kind == KeyKind::STANDARD || caller.is_none_or(|c| c == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::vec::Vec;
    use core::time::Duration;

    const fn t(s: u64) -> Timestamp {
        Timestamp::from_unix_secs(1_800_000_000 + s)
    }

    #[test]
    fn expiry() {
        assert!(expiry_within(None, None) && expiry_within(Some(t(1)), None));
        assert!(expiry_within(Some(t(1)), Some(t(1))) && expiry_within(Some(t(0)), Some(t(1))));
        assert!(!expiry_within(Some(t(2)), Some(t(1))) && !expiry_within(None, Some(t(1))));
    }

    #[test]
    fn limits() {
        assert!(limit_within(None, None) && limit_within(Some(9), None) && limit_within(Some(5), Some(5)));
        assert!(!limit_within(Some(6), Some(5)) && !limit_within(None, Some(5)));
    }

    #[test]
    fn providers() {
        let l = |s: &[&str]| s.iter().map(|p| String::from(*p)).collect::<Vec<_>>();
        assert!(providers_within(&l(&[]), &l(&[])) && providers_within(&l(&["a"]), &l(&[])));
        assert!(providers_within(&l(&["a"]), &l(&["a", "b"])) && providers_within(&l(&["b", "a"]), &l(&["a", "b"])));
        assert!(!providers_within(&l(&[]), &l(&["a"])) && !providers_within(&l(&["a", "c"]), &l(&["a", "b"])));
        assert!(!providers_within(&l(&["A"]), &l(&["a"])), "names are exact");
    }

    #[test]
    fn networks() {
        let l = |s: &[&str]| s.iter().map(|p| p.parse().unwrap()).collect::<Vec<IpCidr>>();
        for (value, bound) in [
            (&["10.1.2.0/24"][..], &["10.0.0.0/8"][..]),
            (&["10.0.0.0/8"], &["10.0.0.0/8"]),
            (&["10.1.2.3"], &["10.1.0.0/16", "::1"]),
            (&["::1", "10.9.9.9"], &["10.0.0.0/8", "::/0"]),
            (&["::ffff:10.1.2.0/120"], &["10.1.2.0/24"]),
            (&[], &[]),
            (&["1.2.3.4"], &[]),
        ] {
            assert!(ips_within(&l(value), &l(bound)), "{value:?} within {bound:?}");
        }
        for (value, bound) in [
            (&["10.0.0.0/8"][..], &["10.1.0.0/16"][..]),
            (&["11.0.0.0/24"], &["10.0.0.0/8"]),
            (&["10.1.2.0/24", "11.0.0.1"], &["10.0.0.0/8"]),
            (&["::/0"], &["0.0.0.0/0"]),
            (&["0.0.0.0/0"], &["::/0"]),
            (&[], &["10.0.0.0/8"]),
        ] {
            assert!(!ips_within(&l(value), &l(bound)), "{value:?} not within {bound:?}");
        }
    }

    #[test]
    fn budgets_across_periods() {
        use SpendPeriod::{Day, Month, Week};
        let cap = |amount_micros, period| Some(SpendCap { amount_micros, period });
        assert!(spend_cap_within(None, None) && spend_cap_within(cap(1, Day), None));
        assert!(!spend_cap_within(None, cap(1, Day)));
        // The same period: no higher.
        for p in [Day, Week, Month] {
            assert!(spend_cap_within(cap(10, p), cap(10, p)) && !spend_cap_within(cap(11, p), cap(10, p)));
        }
        // A longer period is within a shorter one's cap at the same amount, when it nests.
        assert!(spend_cap_within(cap(10, Week), cap(10, Day)) && spend_cap_within(cap(10, Month), cap(10, Day)));
        // A week spans at most two months: $5 a month is $10 in one week at most.
        assert!(spend_cap_within(cap(5, Month), cap(10, Week)) && !spend_cap_within(cap(6, Month), cap(10, Week)));
        // A shorter period multiplies: 7 days a week, 31 a month, 6 weeks a month.
        assert!(spend_cap_within(cap(10, Day), cap(70, Week)) && !spend_cap_within(cap(10, Day), cap(69, Week)));
        assert!(spend_cap_within(cap(10, Day), cap(310, Month)) && !spend_cap_within(cap(10, Day), cap(309, Month)));
        assert!(spend_cap_within(cap(10, Week), cap(60, Month)) && !spend_cap_within(cap(10, Week), cap(59, Month)));
        assert!(!spend_cap_within(cap(u64::MAX, Day), cap(u64::MAX, Month)), "no overflow");

        let credits = |amount, refill| Some(Credits { amount, refill });
        assert!(
            credits_within(credits(5, None), credits(5, None)) && !credits_within(credits(6, None), credits(5, None))
        );
        assert!(credits_within(credits(5, None), credits(5, Some(Day))), "a total within each day's");
        assert!(!credits_within(credits(1, Some(Month)), credits(1_000, None)), "a refill is unbounded in all");
        assert!(credits_within(credits(10, Some(Day)), credits(70, Some(Week))));
        assert!(!credits_within(None, credits(1, None)) && credits_within(None, None));
    }

    /// The multipliers are the real maxima: count the windows a window touches over 8 years.
    #[test]
    fn windows_touched_are_exact() {
        use SpendPeriod::{Day, Month, Week};
        let day = Duration::from_secs(86_400);
        for within in [Day, Week, Month] {
            for period in [Day, Week, Month] {
                let mut most = 0;
                let mut start = Timestamp::from_unix_secs(1_704_067_200); // 2024-01-01
                for _ in 0..(8 * 366) {
                    let (from, to) = within.bounds(start);
                    let (mut n, mut at) = (0, from);
                    while at < to {
                        n += 1;
                        at = period.bounds(at).1;
                    }
                    most = most.max(n);
                    start = start.saturating_add(day);
                }
                assert_eq!(Some(most), windows_touched(Some(within), Some(period)), "{within:?} {period:?}");
            }
        }
    }

    #[test]
    fn kinds() {
        let mk = KeyKind::MANAGEMENT;
        assert!(kind_within(KeyKind::STANDARD, Some(KeyKind::STANDARD)) && kind_within(mk, Some(mk)));
        assert!(kind_within(mk, None) && !kind_within(mk, Some(KeyKind::STANDARD)));
    }

    #[test]
    fn the_first_wider_field_among_those_changed() {
        let bound = Bounds {
            expires_at: Some(t(10)),
            rate_limit: RateLimits { concurrency: Some(2), ..RateLimits::default() },
            ..Bounds::default()
        };
        let base = Bounds::default();
        assert_eq!(bound.first_wider(&base, None), Some("expires_at"));
        let mut r = base.clone();
        r.expires_at = Some(t(5));
        assert_eq!(bound.first_wider(&r, None), Some("rate_limit.concurrency"));
        r.rate_limit.concurrency = Some(1);
        assert_eq!(bound.first_wider(&r, None), None);
        // Only changes count: an unchanged wide field is left as it is.
        let mut changed = base.clone();
        assert_eq!(bound.first_wider(&changed, Some(&base)), None);
        changed.rate_limit.concurrency = Some(3);
        assert_eq!(bound.first_wider(&changed, Some(&base)), Some("rate_limit.concurrency"));
        changed.rate_limit.concurrency = Some(2);
        changed.spend_cap = Some(SpendCap { amount_micros: 1, period: SpendPeriod::Day });
        assert_eq!(bound.first_wider(&changed, Some(&base)), None, "a new cap where the bound has none");
    }
}
