//! Exact amounts of US dollars: decimal text to integer micro-dollars and back, no floating point.

use core::fmt;
use core::str::FromStr;

/// Micro-dollars per dollar.
const MICROS_PER_USD: u64 = 1_000_000;

/// The largest amount a spend cap may have: one billion dollars, in micro-dollars.
///
/// Every amount up to this bound has at most 15 significant digits, so its shortest decimal text
/// names exactly one IEEE 754 double: a client that reads `amount_usd` as a double (JavaScript,
/// Python's `json`) gets back exactly the amount stored.
pub const MAX_USD_MICROS: u64 = 1_000_000_000 * MICROS_PER_USD;

/// The text is not an exact, non-negative amount of at most [`MAX_USD_MICROS`] micro-dollars.
///
/// ```
/// use keygate::manage::{MoneyError, Usd};
/// assert_eq!(Usd::parse("0.0000001"), Err(MoneyError::TooPrecise));
/// assert_eq!(Usd::parse("-1"), Err(MoneyError::Negative));
/// assert_eq!(Usd::parse("1e10"), Err(MoneyError::TooLarge));
/// assert_eq!(Usd::parse("12,5"), Err(MoneyError::Syntax));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not a decimal number in JSON's number syntax (`12`, `12.5`, `1.25e2`).
    #[error("must be a decimal number such as 12.5 or \"12.345678\"")]
    Syntax,
    /// The amount is negative.
    #[error("must not be negative")]
    Negative,
    /// The amount is not a whole number of micro-dollars (more than 6 decimal places).
    #[error("has more than 6 decimal places (the smallest unit is 0.000001 USD)")]
    TooPrecise,
    /// The amount exceeds [`MAX_USD_MICROS`].
    #[error("must be at most 1000000000 USD")]
    TooLarge,
}

/// An amount of US dollars, held exactly as integer micro-dollars (1 USD = 1 000 000).
///
/// [`Usd::parse`] reads JSON's number syntax (`12`, `12.345678`, `0.1`, `1.5e2`) exactly, digit by
/// digit, never through a floating-point number: `"0.1"` is 100 000 micro-dollars, not the
/// double nearest to a tenth. The rule: the value must be a whole number of micro-dollars (at
/// most 6 decimal places once trailing zeros are dropped: `1.2500000` is fine), not negative,
/// and at most [`MAX_USD_MICROS`]; anything else is refused rather than rounded.
/// [`Display`](fmt::Display) writes the shortest exact decimal (`12.5`, `12`, `0.000001`).
///
/// ```
/// use keygate::manage::Usd;
/// assert_eq!(Usd::parse("12.345678")?.micros(), 12_345_678);
/// assert_eq!(Usd::parse("0.1")?.micros(), 100_000);
/// assert_eq!(Usd::parse("1.5e2")?.micros(), 150_000_000);
/// assert_eq!(Usd::from_micros(12_500_000).map(|u| u.to_string()).as_deref(), Some("12.5"));
/// # Ok::<(), keygate::manage::MoneyError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Usd(u64);

impl Usd {
    /// The largest amount, [`MAX_USD_MICROS`].
    pub const MAX: Self = Self(MAX_USD_MICROS);

    /// The amount of `micros` micro-dollars, if it is at most [`MAX_USD_MICROS`].
    #[must_use]
    pub const fn from_micros(micros: u64) -> Option<Self> {
        if micros <= MAX_USD_MICROS { Some(Self(micros)) } else { None }
    }

    /// The amount in micro-dollars.
    #[must_use]
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// Parses decimal text in JSON's number syntax, exactly.
    ///
    /// # Errors
    ///
    /// A [`MoneyError`]: the syntax, a minus sign, more than 6 significant decimal places, or
    /// more than [`MAX_USD_MICROS`].
    pub fn parse(text: &str) -> Result<Self, MoneyError> {
        let Number { negative, int, frac, exp } = split_number(text.as_bytes()).ok_or(MoneyError::Syntax)?;
        if negative {
            return Err(MoneyError::Negative);
        }
        // The value is digits(int ++ frac) × 10^(exp − frac.len()).
        let digits = || int.iter().chain(frac.iter()).copied();
        let total = int.len() + frac.len();
        let Some(lead) = digits().position(|d| d != b'0') else { return Ok(Self(0)) };
        let trail = digits().rev().position(|d| d != b'0').unwrap_or(0);
        let significant = total - lead - trail;
        // Lengths are bounded by the text, which is far below i64::MAX; exponents saturate.
        let len_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        // The value is S × 10^scale with S the significant digits, without trailing zeros.
        let scale = exp.saturating_sub(len_i64(frac.len())).saturating_add(len_i64(trail));
        // S × 10^scale ≥ 10^(significant − 1 + scale): more than 10 integer digits is ≥ 1e10 USD.
        if len_i64(significant).saturating_add(scale) > 10 {
            return Err(MoneyError::TooLarge);
        }
        let shift = scale.saturating_add(6);
        if shift < 0 {
            return Err(MoneyError::TooPrecise);
        }
        // Now significant + shift ≤ 16 digits, which fits a u64.
        let mut micros = digits().skip(lead).take(significant).fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
        for _ in 0..shift {
            micros = micros.checked_mul(10).ok_or(MoneyError::TooLarge)?;
        }
        Self::from_micros(micros).ok_or(MoneyError::TooLarge)
    }
}

/// The parts of a number in JSON's syntax: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
struct Number<'a> {
    negative: bool,
    int: &'a [u8],
    frac: &'a [u8],
    /// The exponent, saturated far beyond any amount's range.
    exp: i64,
}

fn split_number(b: &[u8]) -> Option<Number<'_>> {
    let digits_end =
        |from: usize| b.get(from..).map_or(from, |r| from + r.iter().take_while(|c| c.is_ascii_digit()).count());
    let negative = b.first() == Some(&b'-');
    let int_start = usize::from(negative);
    let int_end = digits_end(int_start);
    let int = b.get(int_start..int_end)?;
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    let mut i = int_end;
    let mut frac: &[u8] = &[];
    if b.get(i) == Some(&b'.') {
        let end = digits_end(i + 1);
        frac = b.get(i + 1..end)?;
        if frac.is_empty() {
            return None;
        }
        i = end;
    }
    let mut exp = 0i64;
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        let minus = match b.get(i) {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let end = digits_end(i);
        let e = b.get(i..end)?;
        if e.is_empty() {
            return None;
        }
        // Saturate: any exponent beyond ±10^12 is as good as infinite here.
        let magnitude = e.iter().fold(0i64, |acc, d| acc.saturating_mul(10).saturating_add(i64::from(d - b'0')));
        exp = if minus { -magnitude.min(1_000_000_000_000) } else { magnitude.min(1_000_000_000_000) };
        i = end;
    }
    (i == b.len()).then_some(Number { negative, int, frac, exp })
}

impl FromStr for Usd {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, MoneyError> {
        Self::parse(s)
    }
}

impl fmt::Display for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, mut frac) = (self.0 / MICROS_PER_USD, self.0 % MICROS_PER_USD);
        if frac == 0 {
            return write!(f, "{whole}");
        }
        let mut width = 6;
        while frac % 10 == 0 {
            frac /= 10;
            width -= 1;
        }
        write!(f, "{whole}.{frac:0width$}")
    }
}

impl fmt::Debug for Usd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Usd({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn exact_amounts() {
        for (text, micros) in [
            ("0", 0),
            ("0.0", 0),
            ("0e999999999999999999999", 0),
            ("12.345678", 12_345_678),
            ("12.5", 12_500_000),
            ("0.1", 100_000),
            ("0.000001", 1),
            ("1.2500000000", 1_250_000),
            ("1e-6", 1),
            ("1E+3", 1_000_000_000),
            ("123.4e-2", 1_234_000),
            ("1000000000", MAX_USD_MICROS),
            ("999999999.999999", MAX_USD_MICROS - 1),
            ("0.00000100000000000000000000", 1),
        ] {
            assert_eq!(Usd::parse(text).map(Usd::micros), Ok(micros), "{text}");
        }
    }

    #[test]
    fn refusals() {
        for (text, e) in [
            ("", MoneyError::Syntax),
            ("-", MoneyError::Syntax),
            ("+1", MoneyError::Syntax),
            ("01", MoneyError::Syntax),
            ("1.", MoneyError::Syntax),
            (".5", MoneyError::Syntax),
            ("1e", MoneyError::Syntax),
            ("1e+", MoneyError::Syntax),
            (" 1", MoneyError::Syntax),
            ("1 ", MoneyError::Syntax),
            ("NaN", MoneyError::Syntax),
            ("1_000", MoneyError::Syntax),
            ("-1", MoneyError::Negative),
            ("-0.5", MoneyError::Negative),
            ("0.0000001", MoneyError::TooPrecise),
            ("12.3456789", MoneyError::TooPrecise),
            ("1e-7", MoneyError::TooPrecise),
            ("0.1000000000000000055511151231257827", MoneyError::TooPrecise),
            ("1000000000.000001", MoneyError::TooLarge),
            ("1e10", MoneyError::TooLarge),
            ("1e999999999999999999", MoneyError::TooLarge),
            ("18446744073709551616", MoneyError::TooLarge),
            ("99999999999999999999.1234567", MoneyError::TooLarge),
        ] {
            assert_eq!(Usd::parse(text), Err(e), "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for m in [0, 1, 10, 100_000, 1_000_000, 12_345_678, 12_500_000, MAX_USD_MICROS - 1, MAX_USD_MICROS] {
            let u = Usd::from_micros(m).unwrap();
            assert_eq!(Usd::parse(&u.to_string()), Ok(u), "{u}");
        }
        assert_eq!(Usd(12_500_000).to_string(), "12.5");
        assert_eq!(Usd(1).to_string(), "0.000001");
        assert_eq!(Usd(7_000_000).to_string(), "7");
        assert_eq!(Usd::from_micros(MAX_USD_MICROS + 1), None);
    }
}
