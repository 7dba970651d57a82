//! The usage log in the SQL stores: [`LogStore`] for [`SqlStore`], over the tables
//! `keygate_usage_log` and `keygate_spend_alerts` (migration 700 000 030).
//!
//! A batch is one transaction of multi-row `INSERT`s; a key's page is one indexed range read
//! on `(key_id, at, id)`, newest first, continuing after its cursor; a summary is one
//! `GROUP BY` (the day is `at / 86 400 000 000 000`). The statements are built per call with
//! the engine's placeholders, as only the filters a query has are written.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::future::Future;

use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row as _, Type};

use super::rows::signed;
use super::store::{Engine, SqlStore};
use super::{error, timed};
use crate::store::StoreError;
use crate::usage_log::{
    AlertQuery, AlertRecord, GroupBy, LogBatch, LogPage, LogQuery, LogRecord, LogStore, UsageQuery, UsageRow, day,
};
use crate::{DenialCode, KeyId, SpendPeriod, Timestamp};

/// Rows per `INSERT` (15 parameters each: well within both engines' bounds).
const CHUNK: usize = 400;

const RECORD_COLUMNS: &str = "at, key_id, verified, team_id, route, model, provider, outcome, status, tokens, \
     tokens_in, tokens_out, cost_micros, latency_us, client_ip";
const ALERT_COLUMNS: &str = "at, key_id, team_id, percent, spend_micros, cap_micros, period";

/// One value to bind.
#[derive(Debug, Clone)]
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bool(bool),
}

/// A statement being written: its text and its parameters, numbered as they are pushed.
struct Statement {
    sigil: char,
    sql: String,
    values: Vec<Value>,
}

impl Statement {
    fn new(sigil: char, sql: impl Into<String>) -> Self {
        Self { sigil, sql: sql.into(), values: Vec::new() }
    }

    /// The placeholder of a new parameter.
    fn param(&mut self, value: Value) -> String {
        self.values.push(value);
        format!("{}{}", self.sigil, self.values.len())
    }

    /// `AND <column> <op> <param>` for a filter the query has.
    fn filter(&mut self, column: &str, op: &str, value: Option<Value>) {
        if let Some(value) = value {
            let p = self.param(value);
            self.sql.push_str(&format!(" AND {column} {op} {p}"));
        }
    }
}

fn int(v: u64) -> Value {
    Value::Int(Some(signed(v)))
}

fn opt_int(v: Option<u64>) -> Value {
    Value::Int(v.map(signed))
}

fn text(v: Option<&str>) -> Value {
    Value::Text(v.map(String::from))
}

fn time(t: Option<Timestamp>) -> Option<Value> {
    t.map(|t| int(t.unix_nanos()))
}

fn unsigned<T: TryFrom<i64>>(v: i64) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::Corrupt)
}

fn period_str(p: SpendPeriod) -> &'static str {
    match p {
        SpendPeriod::Day => "day",
        SpendPeriod::Week => "week",
        SpendPeriod::Month => "month",
    }
}

impl<E: Engine> SqlStore<E>
where
    for<'c> &'c mut <E::Db as Database>::Connection: Executor<'c, Database = E::Db>,
    for<'q> <E::Db as Database>::Arguments<'q>: IntoArguments<'q, E::Db>,
    usize: ColumnIndex<<E::Db as Database>::Row>,
    for<'q> String: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> i64: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> bool: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> Option<String>: Encode<'q, E::Db>,
    for<'q> Option<i64>: Encode<'q, E::Db>,
{
    /// The statement's query with its parameters bound.
    fn bind(statement: &Statement) -> sqlx::query::Query<'_, E::Db, <E::Db as Database>::Arguments<'_>> {
        let mut query = sqlx::query(&statement.sql);
        for value in &statement.values {
            query = match value {
                Value::Int(v) => query.bind(*v),
                Value::Text(v) => query.bind(v.clone()),
                Value::Bool(v) => query.bind(*v),
            };
        }
        query
    }

    /// The `INSERT`s of a batch.
    fn inserts(batch: &LogBatch) -> Vec<Statement> {
        let mut out = Vec::new();
        for chunk in batch.records.chunks(CHUNK) {
            let mut s = Statement::new(E::SIGIL, format!("INSERT INTO keygate_usage_log ({RECORD_COLUMNS}) VALUES "));
            let mut rows = Vec::with_capacity(chunk.len());
            for r in chunk {
                let values = [
                    int(r.at.unix_nanos()),
                    text(r.key.as_ref().map(KeyId::as_str)),
                    Value::Bool(r.verified),
                    text(r.team.as_deref()),
                    text(r.route.as_deref()),
                    text(r.model.as_deref()),
                    text(r.provider.as_deref()),
                    text(Some(r.outcome())),
                    opt_int(r.status.map(u64::from)),
                    int(u64::from(r.tokens)),
                    opt_int(r.tokens_in.map(u64::from)),
                    opt_int(r.tokens_out.map(u64::from)),
                    int(r.cost_micros),
                    opt_int(r.latency_us),
                    Value::Text(r.client_ip.map(|ip| format!("{ip}"))),
                ];
                let params: Vec<String> = values.into_iter().map(|v| s.param(v)).collect();
                rows.push(format!("({})", params.join(", ")));
            }
            s.sql.push_str(&rows.join(", "));
            out.push(s);
        }
        for chunk in batch.alerts.chunks(CHUNK) {
            let mut s = Statement::new(E::SIGIL, format!("INSERT INTO keygate_spend_alerts ({ALERT_COLUMNS}) VALUES "));
            let mut rows = Vec::with_capacity(chunk.len());
            for a in chunk {
                let values = [
                    int(a.at.unix_nanos()),
                    text(Some(a.key.as_str())),
                    text(a.team.as_deref()),
                    int(u64::from(a.percent)),
                    int(a.spend_micros),
                    int(a.cap_micros),
                    text(Some(period_str(a.period))),
                ];
                let params: Vec<String> = values.into_iter().map(|v| s.param(v)).collect();
                rows.push(format!("({})", params.join(", ")));
            }
            s.sql.push_str(&rows.join(", "));
            out.push(s);
        }
        out
    }
}

/// A record from a row selected as `id, ` + [`RECORD_COLUMNS`].
fn read_record<R>(row: &R) -> Result<LogRecord, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> bool: Decode<'r, R::Database> + Type<R::Database>,
{
    let c = |_| StoreError::Corrupt;
    let u32_of = |v: Option<i64>| v.map(unsigned::<u32>).transpose();
    let outcome: String = row.try_get(8).map_err(c)?;
    let key: Option<String> = row.try_get(2).map_err(c)?;
    let ip: Option<String> = row.try_get(15).map_err(c)?;
    let mut r = LogRecord::new(Timestamp::from_unix_nanos(unsigned(row.try_get::<i64, _>(1).map_err(c)?)?));
    r.id = unsigned(row.try_get::<i64, _>(0).map_err(c)?)?;
    r.key = key.as_deref().map(KeyId::new).transpose().map_err(|_| StoreError::Corrupt)?;
    r.verified = row.try_get(3).map_err(c)?;
    r.team = row.try_get(4).map_err(c)?;
    r.route = row.try_get(5).map_err(c)?;
    r.model = row.try_get(6).map_err(c)?;
    r.provider = row.try_get(7).map_err(c)?;
    r.code = match outcome.as_str() {
        "ok" => None,
        code => Some(code.parse::<DenialCode>().map_err(|_| StoreError::Corrupt)?),
    };
    r.status = row.try_get::<Option<i64>, _>(9).map_err(c)?.map(unsigned::<u16>).transpose()?;
    r.tokens = unsigned(row.try_get::<i64, _>(10).map_err(c)?)?;
    r.tokens_in = u32_of(row.try_get(11).map_err(c)?)?;
    r.tokens_out = u32_of(row.try_get(12).map_err(c)?)?;
    r.cost_micros = unsigned(row.try_get::<i64, _>(13).map_err(c)?)?;
    r.latency_us = row.try_get::<Option<i64>, _>(14).map_err(c)?.map(unsigned::<u64>).transpose()?;
    r.client_ip = ip.map(|ip| ip.parse().map_err(|_| StoreError::Corrupt)).transpose()?;
    Ok(r)
}

/// An alert from a row selected as [`ALERT_COLUMNS`].
fn read_alert<R>(row: &R) -> Result<AlertRecord, StoreError>
where
    R: sqlx::Row,
    usize: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
{
    let c = |_| StoreError::Corrupt;
    let key: String = row.try_get(1).map_err(c)?;
    let period = match row.try_get::<String, _>(6).map_err(c)?.as_str() {
        "day" => SpendPeriod::Day,
        "week" => SpendPeriod::Week,
        "month" => SpendPeriod::Month,
        _ => return Err(StoreError::Corrupt),
    };
    let mut a = AlertRecord::new(
        Timestamp::from_unix_nanos(unsigned(row.try_get::<i64, _>(0).map_err(c)?)?),
        KeyId::new(&key).map_err(|_| StoreError::Corrupt)?,
        unsigned(row.try_get::<i64, _>(3).map_err(c)?)?,
        unsigned(row.try_get::<i64, _>(4).map_err(c)?)?,
        unsigned(row.try_get::<i64, _>(5).map_err(c)?)?,
        period,
    );
    a.team = row.try_get(2).map_err(c)?;
    Ok(a)
}

impl<E: Engine> LogStore for SqlStore<E>
where
    for<'c> &'c mut <E::Db as Database>::Connection: Executor<'c, Database = E::Db>,
    for<'q> <E::Db as Database>::Arguments<'q>: IntoArguments<'q, E::Db>,
    usize: ColumnIndex<<E::Db as Database>::Row>,
    for<'q> String: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> i64: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> bool: Encode<'q, E::Db> + Decode<'q, E::Db> + Type<E::Db>,
    for<'q> Option<String>: Encode<'q, E::Db>,
    for<'q> Option<i64>: Encode<'q, E::Db>,
{
    fn append(&self, batch: &LogBatch) -> impl Future<Output = Result<(), StoreError>> + Send {
        let statements = Self::inserts(batch);
        timed(self.config.timeout, async move {
            if statements.is_empty() {
                return Ok(());
            }
            let mut tx = self.pool.begin().await.map_err(error)?;
            for statement in &statements {
                Self::bind(statement).execute(&mut *tx).await.map_err(error)?;
            }
            tx.commit().await.map_err(error)
        })
    }

    fn records(&self, query: &LogQuery) -> impl Future<Output = Result<LogPage, StoreError>> + Send {
        let mut s = Statement::new(E::SIGIL, format!("SELECT id, {RECORD_COLUMNS} FROM keygate_usage_log WHERE "));
        let key = s.param(text(Some(query.key.as_str())));
        s.sql.push_str(&format!("key_id = {key}"));
        s.filter("at", ">=", time(query.from));
        s.filter("at", "<", time(query.to));
        if let Some(c) = query.cursor {
            let (at, at_again, id) =
                (s.param(int(c.at.unix_nanos())), s.param(int(c.at.unix_nanos())), s.param(int(c.id)));
            s.sql.push_str(&format!(" AND (at < {at} OR (at = {at_again} AND id < {id}))"));
        }
        let limit = s.param(int(u64::try_from(query.limit + 1).unwrap_or(u64::MAX)));
        s.sql.push_str(&format!(" ORDER BY at DESC, id DESC LIMIT {limit}"));
        let limit = query.limit;
        timed(self.config.timeout, async move {
            let rows = Self::bind(&s).fetch_all(&self.pool).await.map_err(error)?;
            let records = rows.iter().map(read_record).collect::<Result<Vec<_>, _>>()?;
            Ok(LogPage::of(records, limit))
        })
    }

    fn usage(&self, query: &UsageQuery) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send {
        let group = match query.group_by {
            GroupBy::Key => "key_id",
            GroupBy::Model => "model",
            // As text, so that every grouping reads back the same column type.
            GroupBy::Day => "CAST(at / 86400000000000 AS TEXT)",
        };
        let sum = |column: &str| format!("CAST(COALESCE(SUM({column}), 0) AS BIGINT)");
        let mut s = Statement::new(
            E::SIGIL,
            format!(
                "SELECT {group} AS g, CAST(COUNT(*) AS BIGINT), {}, {}, {}, {}, {} FROM keygate_usage_log WHERE 1 = 1",
                sum("CASE WHEN outcome = 'ok' THEN 0 ELSE 1 END"),
                sum("tokens"),
                sum("tokens_in"),
                sum("tokens_out"),
                sum("cost_micros"),
            ),
        );
        s.filter("team_id", "=", query.team.as_deref().map(|t| text(Some(t))));
        s.filter("key_id", "=", query.key.as_ref().map(|k| text(Some(k.as_str()))));
        s.filter("at", ">=", time(query.from));
        s.filter("at", "<", time(query.to));
        s.sql.push_str(&format!(" GROUP BY {group}"));
        let by_day = query.group_by == GroupBy::Day;
        timed(self.config.timeout, async move {
            let rows = Self::bind(&s).fetch_all(&self.pool).await.map_err(error)?;
            let c = |_| StoreError::Corrupt;
            let mut out = Vec::with_capacity(rows.len());
            for row in &rows {
                let group: Option<String> = row.try_get(0).map_err(c)?;
                let group = match group {
                    Some(n) if by_day => Some(day(n.parse().map_err(|_| StoreError::Corrupt)?)),
                    other => other,
                };
                let n = |i: usize| -> Result<u64, StoreError> { unsigned(row.try_get::<i64, _>(i).map_err(c)?) };
                out.push(UsageRow {
                    group,
                    requests: n(1)?,
                    denied: n(2)?,
                    tokens: n(3)?,
                    tokens_in: n(4)?,
                    tokens_out: n(5)?,
                    cost_micros: n(6)?,
                });
            }
            out.sort_by(|a, b| a.group.cmp(&b.group));
            Ok(out)
        })
    }

    fn alerts(&self, query: &AlertQuery) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        let mut s = Statement::new(E::SIGIL, format!("SELECT {ALERT_COLUMNS} FROM keygate_spend_alerts WHERE 1 = 1"));
        s.filter("team_id", "=", query.team.as_deref().map(|t| text(Some(t))));
        s.filter("key_id", "=", query.key.as_ref().map(|k| text(Some(k.as_str()))));
        s.filter("at", ">=", time(query.from));
        s.filter("at", "<", time(query.to));
        let limit = s.param(int(u64::try_from(query.limit).unwrap_or(u64::MAX)));
        s.sql.push_str(&format!(" ORDER BY at DESC, key_id DESC, percent DESC LIMIT {limit}"));
        timed(self.config.timeout, async move {
            let rows = Self::bind(&s).fetch_all(&self.pool).await.map_err(error)?;
            rows.iter().map(read_alert).collect()
        })
    }

    fn prune(&self, before: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let before = signed(before.unix_nanos());
        timed(self.config.timeout, async move {
            let mut removed = 0;
            for table in ["keygate_usage_log", "keygate_spend_alerts"] {
                let sql = format!("DELETE FROM {table} WHERE at < {}1", E::SIGIL);
                let done = sqlx::query(&sql).bind(before).execute(&self.pool).await.map_err(error)?;
                removed += E::rows_affected(&done);
            }
            Ok(removed)
        })
    }
}
