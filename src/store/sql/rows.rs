//! A [`KeyRecord`] as one row of `keygate_keys`: the columns a query selects, filters or orders
//! on, and the policy and limits as one JSON text, `attributes`. A row that does not decode into
//! a valid record is [`StoreError::Corrupt`], never a panic.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::events::SpendAlerts;
use crate::record::{KeyShape, KeyStatus, RateLimits, SpendCap, SpendPeriod};
use crate::secret::{DIGEST_LEN, DigestScheme, PepperId, StoredDigest};
use crate::store::StoreError;
use crate::{Credits, IpCidr, KeyId, KeyKind, KeyRecord, ModelAllowlist, Scopes, Timestamp};

/// A `u64` kept bit for bit in a signed column.
pub(super) fn signed(v: u64) -> i64 {
    v.cast_signed()
}

/// Any decoding failure: [`StoreError::Corrupt`].
fn corrupt<E>(_: E) -> StoreError {
    StoreError::Corrupt
}

/// A record as one database row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Row {
    id: String,
    shape: String,
    kind: String,
    digest: Vec<u8>,
    digest_scheme: String,
    pepper_id: Option<i64>,
    revision: i64,
    name: String,
    prefix: String,
    status: String,
    soft_blocked: bool,
    team_id: Option<String>,
    created_at: i64,
    updated_at: i64,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    attributes: String,
    inherits_budget: Option<String>,
}

/// The policy and limits of a record: the `attributes` JSON column.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Attributes {
    #[serde(skip_serializing_if = "Scopes::is_empty")]
    scopes: Scopes,
    #[serde(skip_serializing_if = "ModelAllowlist::is_empty")]
    allowed_models: ModelAllowlist,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_providers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_ips: Vec<IpCidr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tokens_per_minute: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    spend_cap: Option<SpendCapJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    credits: Option<CreditsJson>,
    /// The key's own spend alert thresholds, in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    spend_alerts: Option<Vec<u8>>,
    /// The text of a JSON object, kept as text so that it comes back byte for byte.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<String>,
    /// Exact nanoseconds of the timestamps past `i64::MAX` (their columns hold `i64::MAX`).
    #[serde(skip_serializing_if = "WideTimes::is_empty")]
    wide_timestamps: WideTimes,
}

#[derive(Debug, Serialize, Deserialize)]
struct SpendCapJson {
    amount_micros: u64,
    period: SpendPeriod,
}

#[derive(Debug, Serialize, Deserialize)]
struct CreditsJson {
    amount: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refill: Option<SpendPeriod>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct WideTimes {
    #[serde(skip_serializing_if = "Option::is_none")]
    created_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_used_at: Option<u64>,
}

impl WideTimes {
    fn is_empty(&self) -> bool {
        self.created_at.is_none()
            && self.updated_at.is_none()
            && self.expires_at.is_none()
            && self.last_used_at.is_none()
    }
}

/// A timestamp's column value, and its exact value when the column cannot hold it.
fn time_column(t: Timestamp) -> (i64, Option<u64>) {
    let nanos = t.unix_nanos();
    match i64::try_from(nanos) {
        Ok(v) => (v, None),
        Err(_) => (i64::MAX, Some(nanos)),
    }
}

/// A timestamp from its column and, for a column at `i64::MAX`, its exact value.
fn time_value(column: i64, wide: Option<u64>) -> Result<Timestamp, StoreError> {
    match wide {
        Some(nanos) if column == i64::MAX && nanos > column.unsigned_abs() => Ok(Timestamp::from_unix_nanos(nanos)),
        Some(_) => Err(StoreError::Corrupt),
        None => u64::try_from(column).map(Timestamp::from_unix_nanos).map_err(|_| StoreError::Corrupt),
    }
}

/// Stored thresholds, exactly as written: each from 1 to 100, ascending, at most eight.
fn spend_alerts(percents: &[u8]) -> Result<SpendAlerts, StoreError> {
    let alerts = SpendAlerts::new(percents);
    if alerts.percents() == percents { Ok(alerts) } else { Err(StoreError::Corrupt) }
}

fn shape_str(shape: KeyShape) -> &'static str {
    match shape {
        KeyShape::Selector => "selector",
        KeyShape::Opaque => "opaque",
    }
}

impl Row {
    /// The row that stores `r`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if the attributes do not serialize (they always do).
    pub(super) fn encode(r: &KeyRecord) -> Result<Self, StoreError> {
        let (digest_scheme, pepper_id) = match r.digest.scheme {
            DigestScheme::HmacSha256(PepperId(id)) => ("hmac_sha256", Some(i64::from(id))),
            DigestScheme::Sha256 => ("sha256", None),
        };
        let (created_at, wide_created) = time_column(r.created_at);
        let (updated_at, wide_updated) = time_column(r.updated_at);
        let expires = r.expires_at.map(time_column);
        let last_used = r.last_used_at.map(time_column);
        let attributes = Attributes {
            scopes: r.scopes.clone(),
            allowed_models: r.allowed_models.clone(),
            allowed_providers: r.allowed_providers.clone(),
            allowed_ips: r.allowed_ips.clone(),
            requests_per_minute: r.rate_limit.requests_per_minute,
            tokens_per_minute: r.rate_limit.tokens_per_minute,
            concurrency: r.rate_limit.concurrency,
            spend_cap: r.spend_cap.map(|c| SpendCapJson { amount_micros: c.amount_micros, period: c.period }),
            credits: r.credits.map(|c| CreditsJson { amount: c.amount, refill: c.refill }),
            spend_alerts: r.spend_alerts.map(|a| a.percents().to_vec()),
            metadata: r.metadata.clone(),
            wide_timestamps: WideTimes {
                created_at: wide_created,
                updated_at: wide_updated,
                expires_at: expires.and_then(|(_, w)| w),
                last_used_at: last_used.and_then(|(_, w)| w),
            },
        };
        Ok(Self {
            id: r.id.as_str().to_string(),
            shape: shape_str(r.shape).to_string(),
            kind: r.kind.as_str().to_string(),
            digest: r.digest.bytes.to_vec(),
            digest_scheme: digest_scheme.to_string(),
            pepper_id,
            revision: signed(r.revision),
            name: r.name.clone(),
            prefix: r.prefix.clone(),
            status: r.status.as_str().to_string(),
            soft_blocked: r.soft_blocked,
            team_id: r.team_id.clone(),
            created_at,
            updated_at,
            expires_at: expires.map(|(c, _)| c),
            last_used_at: last_used.map(|(c, _)| c),
            attributes: serde_json::to_string(&attributes).map_err(|_| StoreError::Corrupt)?,
            inherits_budget: r.inherits_budget.map(|id| id.as_str().to_string()),
        })
    }

    /// The record this row stores.
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if any column is not a valid part of a record.
    pub(super) fn decode(self) -> Result<KeyRecord, StoreError> {
        let shape = match self.shape.as_str() {
            "selector" => KeyShape::Selector,
            "opaque" => KeyShape::Opaque,
            _ => return Err(StoreError::Corrupt),
        };
        let scheme = match (self.digest_scheme.as_str(), self.pepper_id) {
            ("hmac_sha256", Some(id)) => DigestScheme::HmacSha256(PepperId(u32::try_from(id).map_err(corrupt)?)),
            ("sha256", None) => DigestScheme::Sha256,
            _ => return Err(StoreError::Corrupt),
        };
        let bytes: [u8; DIGEST_LEN] = self.digest.as_slice().try_into().map_err(corrupt)?;
        let a: Attributes = serde_json::from_str(&self.attributes).map_err(corrupt)?;
        let wide = a.wide_timestamps;
        Ok(KeyRecord {
            id: KeyId::new(&self.id).map_err(corrupt)?,
            shape,
            kind: KeyKind::new(&self.kind).map_err(corrupt)?,
            digest: StoredDigest { scheme, bytes },
            revision: self.revision.cast_unsigned(),
            name: self.name,
            prefix: self.prefix,
            status: self.status.parse::<KeyStatus>().map_err(corrupt)?,
            soft_blocked: self.soft_blocked,
            team_id: self.team_id,
            scopes: a.scopes,
            allowed_models: a.allowed_models,
            allowed_providers: a.allowed_providers,
            allowed_ips: a.allowed_ips,
            rate_limit: RateLimits {
                requests_per_minute: a.requests_per_minute,
                tokens_per_minute: a.tokens_per_minute,
                concurrency: a.concurrency,
            },
            spend_cap: a.spend_cap.map(|c| SpendCap { amount_micros: c.amount_micros, period: c.period }),
            credits: a.credits.map(|c| Credits { amount: c.amount, refill: c.refill }),
            spend_alerts: a.spend_alerts.as_deref().map(spend_alerts).transpose()?,
            metadata: a.metadata,
            created_at: time_value(self.created_at, wide.created_at)?,
            updated_at: time_value(self.updated_at, wide.updated_at)?,
            expires_at: self.expires_at.map(|c| time_value(c, wide.expires_at)).transpose()?,
            last_used_at: self.last_used_at.map(|c| time_value(c, wide.last_used_at)).transpose()?,
            inherits_budget: self.inherits_budget.as_deref().map(KeyId::new).transpose().map_err(corrupt)?,
        })
    }

    /// Reads a row selected with [`COLUMNS`](super::queries::COLUMNS).
    ///
    /// # Errors
    ///
    /// [`StoreError::Corrupt`] if a column is missing or of another type.
    pub(super) fn read<'r, R>(row: &'r R) -> Result<Self, StoreError>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let c = corrupt::<sqlx::Error>;
        Ok(Self {
            id: row.try_get(0).map_err(c)?,
            shape: row.try_get(1).map_err(c)?,
            kind: row.try_get(2).map_err(c)?,
            digest: row.try_get(3).map_err(c)?,
            digest_scheme: row.try_get(4).map_err(c)?,
            pepper_id: row.try_get(5).map_err(c)?,
            revision: row.try_get(6).map_err(c)?,
            name: row.try_get(7).map_err(c)?,
            prefix: row.try_get(8).map_err(c)?,
            status: row.try_get(9).map_err(c)?,
            soft_blocked: row.try_get(10).map_err(c)?,
            team_id: row.try_get(11).map_err(c)?,
            created_at: row.try_get(12).map_err(c)?,
            updated_at: row.try_get(13).map_err(c)?,
            expires_at: row.try_get(14).map_err(c)?,
            last_used_at: row.try_get(15).map_err(c)?,
            attributes: row.try_get(16).map_err(c)?,
            inherits_budget: row.try_get(17).map_err(c)?,
        })
    }

    /// Binds the columns in [`COLUMNS`](super::queries::COLUMNS) order, as parameters 1 to
    /// [`COLUMN_COUNT`](super::queries::COLUMN_COUNT).
    pub(super) fn bind<'q, DB>(
        self,
        q: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    ) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
    where
        DB: sqlx::Database,
        String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<String>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        q.bind(self.id)
            .bind(self.shape)
            .bind(self.kind)
            .bind(self.digest)
            .bind(self.digest_scheme)
            .bind(self.pepper_id)
            .bind(self.revision)
            .bind(self.name)
            .bind(self.prefix)
            .bind(self.status)
            .bind(self.soft_blocked)
            .bind(self.team_id)
            .bind(self.created_at)
            .bind(self.updated_at)
            .bind(self.expires_at)
            .bind(self.last_used_at)
            .bind(self.attributes)
            .bind(self.inherits_budget)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn record() -> KeyRecord {
        let id = KeyId::new("abc").unwrap();
        let digest = StoredDigest { scheme: DigestScheme::HmacSha256(PepperId(7)), bytes: [9; DIGEST_LEN] };
        KeyRecord::new(id, KeyShape::Selector, KeyKind::STANDARD, digest, Timestamp::from_unix_secs(1_700_000_000))
    }

    #[test]
    fn round_trip_plain_and_wide() {
        let mut r = record();
        assert_eq!(Row::encode(&r).unwrap().decode().unwrap(), r);
        r.inherits_budget = Some(KeyId::new("predecessor").unwrap());
        assert_eq!(Row::encode(&r).unwrap().decode().unwrap(), r);
        r.spend_alerts = Some(SpendAlerts::new(&[25, 90]));
        assert_eq!(Row::encode(&r).unwrap().decode().unwrap(), r);
        r.spend_alerts = Some(SpendAlerts::NONE);
        assert_eq!(Row::encode(&r).unwrap().decode().unwrap(), r);
        r.revision = u64::MAX;
        r.expires_at = Some(Timestamp::MAX);
        r.updated_at = Timestamp::from_unix_nanos(i64::MAX.unsigned_abs());
        let row = Row::encode(&r).unwrap();
        assert_eq!(row.expires_at, Some(i64::MAX));
        assert_eq!(row.revision, -1);
        assert_eq!(row.decode().unwrap(), r);
    }

    #[test]
    fn bad_rows_are_corrupt() {
        let good = Row::encode(&record()).unwrap();
        let cases: [fn(&mut Row); 11] = [
            |r| r.id = "not an id".into(),
            |r| r.shape = "round".into(),
            |r| r.kind = "UPPER".into(),
            |r| r.digest = vec![1, 2, 3],
            |r| r.pepper_id = None,
            |r| r.status = "zombie".into(),
            |r| r.created_at = -1,
            |r| r.attributes = "{".into(),
            |r| r.attributes = r#"{"scopes": 5}"#.into(),
            |r| r.inherits_budget = Some("not an id".into()),
            |r| r.attributes = r#"{"spend_alerts": [80, 50]}"#.into(),
        ];
        for bad in cases {
            let mut row = good.clone();
            bad(&mut row);
            assert_eq!(row.decode(), Err(StoreError::Corrupt));
        }
    }
}
