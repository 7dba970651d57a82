//! One field's value: its raw JSON text, and the rules that decode it into the request's types,
//! each error naming the field.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::value::RawValue;

use super::Kind;
use crate::events::SpendAlerts;
use crate::manage::{InvalidValue, MAX_ALLOWED_IPS, MAX_PROVIDERS, ManageError, Metadata, Usd};
use crate::{IpCidr, KeyStatus, ModelAllowlist, Scopes, SpendPeriod, Timestamp};

/// A field that was given: its name (dotted when nested, as errors show it) and its value.
pub(super) struct Field {
    pub(super) name: &'static str,
    pub(super) raw: Box<RawValue>,
}

impl Field {
    pub(super) fn kind(&self) -> Kind {
        Kind::of(&self.raw)
    }

    pub(super) fn is_null(&self) -> bool {
        self.kind() == Kind::Null
    }

    pub(super) fn bad<T>(&self, reason: InvalidValue) -> Result<T, ManageError> {
        Err(ManageError::invalid(self.name, reason))
    }

    pub(super) fn string(&self) -> Result<String, ManageError> {
        match self.kind() {
            Kind::String => serde_json::from_str(self.raw.get()).or_else(|_| self.bad(InvalidValue::Type("a string"))),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("a string")),
        }
    }

    fn strings(&self, max: usize) -> Result<Vec<String>, ManageError> {
        const WHAT: &str = "an array of strings";
        if self.kind() != Kind::Array {
            return self.bad(InvalidValue::Type(WHAT));
        }
        let items: Vec<String> =
            serde_json::from_str(self.raw.get()).or_else(|_| self.bad(InvalidValue::Type(WHAT)))?;
        if items.len() > max {
            return self.bad(InvalidValue::TooMany { max });
        }
        Ok(items)
    }

    pub(super) fn boolean(&self) -> Result<bool, ManageError> {
        match self.kind() {
            Kind::Bool => Ok(self.raw.get() == "true"),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("true or false")),
        }
    }

    /// A whole number in `min..=max`, written as plain digits.
    pub(super) fn integer(&self, min: u64, max: u64) -> Result<u64, ManageError> {
        let text = self.raw.get();
        let range = InvalidValue::OutOfRange { min, max };
        if self.is_null() {
            return self.bad(InvalidValue::Null);
        }
        if self.kind() != Kind::Number || !text.bytes().all(|c| c.is_ascii_digit()) {
            return self.bad(range);
        }
        match text.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => self.bad(range),
        }
    }

    /// A rate or concurrency limit: a whole number from 1.
    pub(super) fn limit(&self) -> Result<u32, ManageError> {
        let max = u32::MAX;
        let n = self.integer(1, u64::from(max))?;
        u32::try_from(n).or_else(|_| self.bad(InvalidValue::OutOfRange { min: 1, max: u64::from(max) }))
    }

    pub(super) fn timestamp(&self) -> Result<Timestamp, ManageError> {
        let text = self.string().or_else(|_| self.bad(InvalidValue::Timestamp(crate::time::TimestampError)))?;
        Timestamp::parse_rfc3339(&text).or_else(|e| self.bad(InvalidValue::Timestamp(e)))
    }

    pub(super) fn status(&self) -> Result<KeyStatus, ManageError> {
        let text = self.string()?;
        text.parse().or_else(|_| self.bad(InvalidValue::OneOf("active, disabled, revoked")))
    }

    /// Scopes as a string (space- or comma-separated, or a JSON array encoded as a string) or
    /// an array of strings.
    pub(super) fn scopes(&self) -> Result<Scopes, ManageError> {
        match self.kind() {
            Kind::String => Scopes::parse(&self.string()?).or_else(|e| self.bad(e.into())),
            Kind::Array => Scopes::from_scopes(self.strings(Scopes::MAX)?).or_else(|e| self.bad(e.into())),
            Kind::Null => self.bad(InvalidValue::Null),
            _ => self.bad(InvalidValue::Type("a string or an array of strings")),
        }
    }

    /// A model allowlist; `null` is the empty list (any model).
    pub(super) fn models(&self) -> Result<ModelAllowlist, ManageError> {
        match self.kind() {
            Kind::String => ModelAllowlist::parse(&self.string()?).or_else(|e| self.bad(e.into())),
            Kind::Array => ModelAllowlist::new(self.strings(ModelAllowlist::MAX)?).or_else(|e| self.bad(e.into())),
            Kind::Null => Ok(ModelAllowlist::empty()),
            _ => self.bad(InvalidValue::Type("a string or an array of strings")),
        }
    }

    /// A provider allowlist; `null` is the empty list (any provider).
    pub(super) fn providers(&self) -> Result<Vec<String>, ManageError> {
        if self.is_null() { Ok(Vec::new()) } else { self.strings(MAX_PROVIDERS) }
    }

    /// An IP allowlist; `null` is the empty list (any address).
    pub(super) fn ips(&self) -> Result<Vec<IpCidr>, ManageError> {
        if self.is_null() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for (index, text) in self.strings(MAX_ALLOWED_IPS)?.iter().enumerate() {
            out.push(text.parse().or_else(|error| self.bad(InvalidValue::Cidr { index, error }))?);
        }
        Ok(out)
    }

    /// Dollars as a JSON number or a decimal string, read exactly from the text.
    pub(super) fn usd(&self) -> Result<Usd, ManageError> {
        let parsed = match self.kind() {
            Kind::Number => Usd::parse(self.raw.get()),
            Kind::String => Usd::parse(&self.string()?),
            Kind::Null => return self.bad(InvalidValue::Null),
            _ => return self.bad(InvalidValue::Type("a number or a decimal string")),
        };
        parsed.or_else(|e| self.bad(e.into()))
    }

    pub(super) fn period(&self) -> Result<SpendPeriod, ManageError> {
        match self.string()?.as_str() {
            "day" => Ok(SpendPeriod::Day),
            "week" => Ok(SpendPeriod::Week),
            "month" => Ok(SpendPeriod::Month),
            _ => self.bad(InvalidValue::OneOf("day, week, month")),
        }
    }

    /// Spend alert thresholds: an array of at most eight distinct whole percents from 1 to 100
    /// (`[]`: no alerts).
    pub(super) fn spend_alerts(&self) -> Result<SpendAlerts, ManageError> {
        const WHAT: &str = "an array of whole percents from 1 to 100";
        if self.kind() != Kind::Array {
            return self.bad(InvalidValue::Type(WHAT));
        }
        let Ok(items) = serde_json::from_str::<Vec<&RawValue>>(self.raw.get()) else {
            return self.bad(InvalidValue::Type(WHAT));
        };
        let max = SpendAlerts::NONE.capacity();
        if items.len() > max {
            return self.bad(InvalidValue::TooMany { max });
        }
        let mut percents = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let text = item.get();
            let percent =
                text.parse::<u8>().ok().filter(|p| (1..=100).contains(p) && text.bytes().all(|c| c.is_ascii_digit()));
            match percent {
                Some(p) if !percents.contains(&p) => percents.push(p),
                Some(_) => return self.bad(InvalidValue::Entry { index, reason: "repeats an earlier threshold" }),
                None => {
                    return self.bad(InvalidValue::Entry { index, reason: "must be a whole percent from 1 to 100" });
                }
            }
        }
        Ok(SpendAlerts::new(&percents))
    }

    /// Metadata, checked from its exact text (`null` is not metadata: it clears).
    pub(super) fn metadata(&self) -> Result<Metadata, ManageError> {
        Metadata::parse(self.raw.get()).or_else(|e| self.bad(e.into()))
    }
}
