//! The validation of every field a management request carries, and of the listing's query.

use alloc::string::String;
use alloc::vec::Vec;

use super::request::{MAX_ALLOWED_IPS, MAX_CREDITS, MAX_NAME_LEN, MAX_PROVIDER_LEN, MAX_PROVIDERS, MAX_TEAM_ID_LEN};
use super::{InvalidValue, MAX_USD_MICROS, ManageError, MoneyError};
use crate::{Credits, IpCidr, RateLimits, SpendCap, Timestamp};

pub(crate) fn range(min: usize, max: usize) -> InvalidValue {
    let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    InvalidValue::OutOfRange { min: wide(min), max: wide(max) }
}

/// A decimal count in `min..=max` (digits only).
pub(crate) fn parse_count(field: &'static str, text: &str, min: usize, max: usize) -> Result<usize, ManageError> {
    let out_of_range = || ManageError::invalid(field, range(min, max));
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return Err(out_of_range());
    }
    let n: usize = text.parse().map_err(|_| out_of_range())?;
    if (min..=max).contains(&n) { Ok(n) } else { Err(out_of_range()) }
}

/// Decodes `application/x-www-form-urlencoded` text: `+` is a space, `%XX` a byte. `None` if an
/// escape is malformed or the bytes are not UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3)?;
                let hi = char::from(hex[0]).to_digit(16)?;
                let lo = char::from(hex[1]).to_digit(16)?;
                out.push(u8::try_from(hi * 16 + lo).ok()?);
                i += 2;
            }
            _ => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A key name: 1 to [`MAX_NAME_LEN`] bytes, no control characters, no surrounding whitespace.
pub(crate) fn check_name(field: &'static str, name: &str) -> Result<(), ManageError> {
    let bad = |reason| Err(ManageError::invalid(field, reason));
    if name.trim().is_empty() {
        return bad(InvalidValue::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return bad(InvalidValue::TooLong { max: MAX_NAME_LEN });
    }
    if name.trim() != name {
        return bad(InvalidValue::Whitespace);
    }
    if let Some((at, _)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return bad(InvalidValue::ControlChar { at });
    }
    Ok(())
}

/// A team id: 1 to [`MAX_TEAM_ID_LEN`] bytes of ASCII letters, digits, `.`, `_`, `-` and `:`.
pub(crate) fn check_team_id(team: &str) -> Result<(), ManageError> {
    let bad = |reason| Err(ManageError::invalid("team_id", reason));
    if team.is_empty() {
        return bad(InvalidValue::Empty);
    }
    if team.len() > MAX_TEAM_ID_LEN {
        return bad(InvalidValue::TooLong { max: MAX_TEAM_ID_LEN });
    }
    if let Some((at, ch)) = team.char_indices().find(|&(_, c)| !(c.is_ascii_alphanumeric() || ".-_:".contains(c))) {
        return bad(InvalidValue::InvalidChar { at, ch, allowed: "ASCII letters, digits, '.', '_', '-' and ':'" });
    }
    Ok(())
}

/// The provider allowlist, validated, sorted and deduplicated.
pub(crate) fn check_providers(list: &[String]) -> Result<Vec<String>, ManageError> {
    let bad = |reason| Err(ManageError::invalid("allowed_providers", reason));
    if list.len() > MAX_PROVIDERS {
        return bad(InvalidValue::TooMany { max: MAX_PROVIDERS });
    }
    for (index, p) in list.iter().enumerate() {
        let reason = if p.is_empty() {
            "is empty"
        } else if p.len() > MAX_PROVIDER_LEN {
            "is longer than 64 bytes"
        } else if !p.bytes().all(|c| c.is_ascii_alphanumeric() || b"._-/:".contains(&c)) {
            "may contain only ASCII letters, digits, '.', '_', '-', '/' and ':'"
        } else {
            continue;
        };
        return bad(InvalidValue::Entry { index, reason });
    }
    let mut out = list.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// The IP allowlist, bounded, sorted and deduplicated.
pub(crate) fn check_ips(list: &[IpCidr]) -> Result<Vec<IpCidr>, ManageError> {
    if list.len() > MAX_ALLOWED_IPS {
        return Err(ManageError::invalid("allowed_ips", InvalidValue::TooMany { max: MAX_ALLOWED_IPS }));
    }
    let mut out = list.to_vec();
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Every limit, when set, is at least 1 (use no limit rather than a limit of 0).
pub(crate) fn check_rate_limits(limits: &RateLimits) -> Result<(), ManageError> {
    for (field, value) in [
        ("rate_limit.requests_per_minute", limits.requests_per_minute),
        ("rate_limit.tokens_per_minute", limits.tokens_per_minute),
        ("rate_limit.concurrency", limits.concurrency),
    ] {
        if value == Some(0) {
            return Err(ManageError::invalid(field, InvalidValue::OutOfRange { min: 1, max: u64::from(u32::MAX) }));
        }
    }
    Ok(())
}

/// The cap is at most [`MAX_USD_MICROS`].
pub(crate) fn check_spend_cap(cap: &SpendCap) -> Result<(), ManageError> {
    if cap.amount_micros > MAX_USD_MICROS {
        return Err(ManageError::invalid("spend_cap.amount_usd", InvalidValue::Money(MoneyError::TooLarge)));
    }
    Ok(())
}

/// Credits are at most [`MAX_CREDITS`].
pub(crate) fn check_credits(credits: &Credits) -> Result<(), ManageError> {
    if credits.amount > MAX_CREDITS {
        return Err(ManageError::invalid("credits.amount", InvalidValue::OutOfRange { min: 0, max: MAX_CREDITS }));
    }
    Ok(())
}

/// An expiry must be later than `now`.
pub(crate) fn check_expiry(field: &'static str, at: Option<Timestamp>, now: Timestamp) -> Result<(), ManageError> {
    match at {
        Some(at) if at <= now => Err(ManageError::invalid(field, InvalidValue::NotInFuture)),
        _ => Ok(()),
    }
}
