//! The usage log's part of the management API (needs `json`): a key's log, usage summed per
//! key, model or day, and the spend alerts, each team-scoped by the rules of the other
//! management endpoints ([`Caller`]: a caller of a team sees its team only; another team's key
//! is a 404, as for `GET /v1/management/keys/{id}`).
//!
//! | method and path | query | answer |
//! |---|---|---|
//! | `GET /v1/management/keys/{id}/logs` | `from`, `to`, `limit` (1..=250, default 50), `cursor` | `{"ok":true,"key_id","logs":[...],"next_cursor"}` |
//! | `GET /v1/management/usage` | `team_id`, `key_id`, `from`, `to`, `group_by` (`key`, `model` or `day`, default `day`) | `{"ok":true,"group_by","team_id","key_id","from","to","usage":[...]}` |
//! | `GET /v1/management/alerts` | `team_id`, `key_id`, `from`, `to`, `limit` | `{"ok":true,"alerts":[...]}` |
//!
//! Times are RFC 3339 (`from` inclusive, `to` exclusive). A bad parameter is a 400 naming it.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;

use super::{
    AlertQuery, AlertRecord, Cursor, GroupBy, LogQuery, LogRecord, LogStore, MAX_LOG_PAGE, UsageQuery, UsageRow,
};
use crate::manage::{Access, DEFAULT_PAGE, InvalidValue, ManageError, ManageRequest, ManageResponse};
use crate::manage::{check_team_id, echoed_name, parse_count, percent_decode};
use crate::{AsyncKeyStore, Caller, KeyId, Manager, Timestamp};

/// One of the usage log's endpoints.
///
/// ```
/// use keygate::usage_log::LogRoute;
/// assert_eq!(LogRoute::parse("GET", "/v1/management/keys/abc/logs"), Some(Ok(LogRoute::Logs("abc"))));
/// assert_eq!(LogRoute::parse("GET", "/v1/management/usage"), Some(Ok(LogRoute::Usage)));
/// assert_eq!(LogRoute::parse("GET", "/v1/management/keys/abc"), None); // the key API's
/// assert_eq!(LogRoute::parse("POST", "/v1/management/alerts").map(|r| r.is_err()), Some(true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LogRoute<'a> {
    /// A key's log.
    Logs(&'a str),
    /// Usage summed.
    Usage,
    /// Spend alerts.
    Alerts,
}

impl<'a> LogRoute<'a> {
    /// The route of a method and path (without the query), `None` for a path that is not the
    /// usage log's.
    ///
    /// # Errors
    ///
    /// [`ManageError::MethodNotAllowed`] for a method other than `GET`.
    #[must_use]
    pub fn parse(method: &str, path: &'a str) -> Option<Result<Self, ManageError>> {
        let path = path.strip_suffix('/').unwrap_or(path);
        let route = match path {
            "/v1/management/usage" => Self::Usage,
            "/v1/management/alerts" => Self::Alerts,
            _ => {
                let id = path.strip_prefix("/v1/management/keys/")?.strip_suffix("/logs")?;
                if id.is_empty() || id.contains('/') {
                    return None;
                }
                Self::Logs(id)
            }
        };
        Some(if method == "GET" { Ok(route) } else { Err(ManageError::MethodNotAllowed("GET")) })
    }
}

/// Answers one request to the usage log's endpoints ([`LogRoute`]) for an authenticated
/// `caller`, who needs the management API's `read` scope: the key's visibility is checked
/// through `manager` (another team's key is a 404), the records are read from `log`.
pub async fn handle_log_request<K: AsyncKeyStore, L: LogStore>(
    manager: &Manager<K>,
    log: &L,
    caller: &Caller,
    request: &ManageRequest<'_>,
) -> ManageResponse {
    answer(manager, log, caller, request).await.unwrap_or_else(|e| ManageResponse::error(&e))
}

async fn answer<K: AsyncKeyStore, L: LogStore>(
    manager: &Manager<K>,
    log: &L,
    caller: &Caller,
    request: &ManageRequest<'_>,
) -> Result<ManageResponse, ManageError> {
    let route = LogRoute::parse(request.method, request.path).ok_or(ManageError::RouteNotFound)??;
    caller.authorize(Access::Read, manager.config())?;
    let q = Params::parse(request.query, route.parameters())?;
    Ok(match route {
        LogRoute::Logs(id) => {
            let key = KeyId::new(id).map_err(|_| ManageError::NotFound)?;
            manager.get_async(caller, &key).await?;
            let mut query = LogQuery::new(key, q.limit()?);
            (query.from, query.to) = q.window()?;
            query.cursor = q.cursor()?;
            let page = log.records(&query).await?;
            let logs: Vec<RecordView<'_>> = page.records.iter().map(RecordView).collect();
            let next_cursor = page.next.map(|c| format!("{c}"));
            ManageResponse::json(200, &LogsBody { ok: true, key_id: key.as_str(), logs, next_cursor })
        }
        LogRoute::Usage => {
            let group_by = q.group_by()?;
            let mut query = UsageQuery::new(group_by);
            (query.team, query.key) = scope(manager, caller, q.team()?, q.key()?).await?;
            (query.from, query.to) = q.window()?;
            let rows = log.usage(&query).await?;
            let usage: Vec<UsageView<'_>> = rows.iter().map(|row| UsageView { group_by, row }).collect();
            let body = UsageBody {
                ok: true,
                group_by: group_by.as_str(),
                team_id: query.team.as_deref(),
                key_id: query.key.as_ref().map(KeyId::as_str),
                from: query.from,
                to: query.to,
                usage,
            };
            ManageResponse::json(200, &body)
        }
        LogRoute::Alerts => {
            let mut query = AlertQuery::new(q.limit()?);
            (query.team, query.key) = scope(manager, caller, q.team()?, q.key()?).await?;
            (query.from, query.to) = q.window()?;
            let alerts = log.alerts(&query).await?;
            let alerts: Vec<AlertView<'_>> = alerts.iter().map(AlertView).collect();
            ManageResponse::json(200, &AlertsBody { ok: true, alerts })
        }
    })
}

/// The team and key a summary covers: a key the caller can see (then every record of it), or
/// a team: the caller's own, or for an operator the one named (or all).
async fn scope<K: AsyncKeyStore>(
    manager: &Manager<K>,
    caller: &Caller,
    team: Option<String>,
    key: Option<KeyId>,
) -> Result<(Option<String>, Option<KeyId>), ManageError> {
    let team = match (caller.team_id(), team) {
        (Some(own), Some(t)) if own != t => return Err(ManageError::TeamMismatch),
        (Some(own), _) => Some(String::from(own)),
        (None, t) => t,
    };
    match key {
        Some(key) => {
            let record = manager.get_async(caller, &key).await?;
            if team.as_ref().is_some_and(|t| record.team_id.as_ref() != Some(t)) {
                return Err(ManageError::NotFound);
            }
            Ok((None, Some(key)))
        }
        None => Ok((team, None)),
    }
}

impl LogRoute<'_> {
    fn parameters(self) -> &'static [&'static str] {
        match self {
            Self::Logs(_) => &["from", "to", "limit", "cursor"],
            Self::Usage => &["team_id", "key_id", "from", "to", "group_by"],
            Self::Alerts => &["team_id", "key_id", "from", "to", "limit"],
        }
    }
}

/// A query's parameters, decoded; each known at most once.
struct Params(Vec<(&'static str, String)>);

impl Params {
    fn parse(query: &str, known: &'static [&'static str]) -> Result<Self, ManageError> {
        let mut out: Vec<(&'static str, String)> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name).unwrap_or_default();
            let Some(&known) = known.iter().find(|k| **k == name) else {
                return Err(ManageError::UnknownParameter(echoed_name(&name)));
            };
            if out.iter().any(|(n, _)| *n == known) {
                return Err(ManageError::UnknownParameter(name));
            }
            let value = percent_decode(raw_value)
                .ok_or(ManageError::invalid(known, InvalidValue::Type("percent-encoded UTF-8")))?;
            out.push((known, value));
        }
        Ok(Self(out))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }

    fn time(&self, name: &'static str) -> Result<Option<Timestamp>, ManageError> {
        self.get(name)
            .map(|t| Timestamp::parse_rfc3339(t).map_err(|e| ManageError::invalid(name, InvalidValue::Timestamp(e))))
            .transpose()
    }

    /// `from` and `to`; `to` must be later.
    fn window(&self) -> Result<(Option<Timestamp>, Option<Timestamp>), ManageError> {
        let (from, to) = (self.time("from")?, self.time("to")?);
        if let (Some(from), Some(to)) = (from, to)
            && to <= from
        {
            return Err(ManageError::invalid("to", InvalidValue::Type("later than `from`")));
        }
        Ok((from, to))
    }

    fn limit(&self) -> Result<usize, ManageError> {
        self.get("limit").map_or(Ok(DEFAULT_PAGE), |v| parse_count("limit", v, 1, MAX_LOG_PAGE))
    }

    fn cursor(&self) -> Result<Option<Cursor>, ManageError> {
        let bad = || ManageError::invalid("cursor", InvalidValue::Type("a cursor from a previous page"));
        self.get("cursor").map(|c| c.parse::<Cursor>().map_err(|_| bad())).transpose()
    }

    fn group_by(&self) -> Result<GroupBy, ManageError> {
        match self.get("group_by") {
            None | Some("day") => Ok(GroupBy::Day),
            Some("key") => Ok(GroupBy::Key),
            Some("model") => Ok(GroupBy::Model),
            Some(_) => Err(ManageError::invalid("group_by", InvalidValue::OneOf("key, model, day"))),
        }
    }

    fn team(&self) -> Result<Option<String>, ManageError> {
        let Some(team) = self.get("team_id") else { return Ok(None) };
        check_team_id(team)?;
        Ok(Some(String::from(team)))
    }

    fn key(&self) -> Result<Option<KeyId>, ManageError> {
        let bad = || ManageError::invalid("key_id", InvalidValue::Type("a key id"));
        self.get("key_id").map(|k| KeyId::new(k).map_err(|_| bad())).transpose()
    }
}

/// Micro-units as a decimal text with six places (`0.000123`).
fn usd(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

#[derive(Serialize)]
struct LogsBody<'a> {
    ok: bool,
    key_id: &'a str,
    logs: Vec<RecordView<'a>>,
    next_cursor: Option<String>,
}

/// A record in the API's JSON.
struct RecordView<'a>(&'a LogRecord);

impl Serialize for RecordView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.0;
        let mut m = s.serialize_struct("LogRecord", 17)?;
        m.serialize_field("id", &r.id)?;
        m.serialize_field("at", &r.at)?;
        m.serialize_field("key_id", &r.key.as_ref().map(KeyId::as_str))?;
        m.serialize_field("verified", &r.verified)?;
        m.serialize_field("team_id", &r.team)?;
        m.serialize_field("route", &r.route)?;
        m.serialize_field("model", &r.model)?;
        m.serialize_field("provider", &r.provider)?;
        m.serialize_field("outcome", r.outcome())?;
        m.serialize_field("status", &r.status)?;
        m.serialize_field("tokens", &r.tokens)?;
        m.serialize_field("tokens_in", &r.tokens_in)?;
        m.serialize_field("tokens_out", &r.tokens_out)?;
        m.serialize_field("cost_micros", &r.cost_micros)?;
        m.serialize_field("cost_usd", &usd(r.cost_micros))?;
        m.serialize_field("latency_us", &r.latency_us)?;
        m.serialize_field("client_ip", &r.client_ip.map(|ip| format!("{ip}")))?;
        m.end()
    }
}

#[derive(Serialize)]
struct UsageBody<'a> {
    ok: bool,
    group_by: &'static str,
    team_id: Option<&'a str>,
    key_id: Option<&'a str>,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    usage: Vec<UsageView<'a>>,
}

/// One group's sums, the group named by what it groups (`key_id`, `model` or `day`).
struct UsageView<'a> {
    group_by: GroupBy,
    row: &'a UsageRow,
}

impl Serialize for UsageView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let r = self.row;
        let mut m = s.serialize_struct("UsageRow", 8)?;
        let name = match self.group_by {
            GroupBy::Key => "key_id",
            GroupBy::Model => "model",
            GroupBy::Day => "day",
        };
        m.serialize_field(name, &r.group)?;
        m.serialize_field("requests", &r.requests)?;
        m.serialize_field("denied", &r.denied)?;
        m.serialize_field("tokens", &r.tokens)?;
        m.serialize_field("tokens_in", &r.tokens_in)?;
        m.serialize_field("tokens_out", &r.tokens_out)?;
        m.serialize_field("cost_micros", &r.cost_micros)?;
        m.serialize_field("cost_usd", &usd(r.cost_micros))?;
        m.end()
    }
}

#[derive(Serialize)]
struct AlertsBody<'a> {
    ok: bool,
    alerts: Vec<AlertView<'a>>,
}

struct AlertView<'a>(&'a AlertRecord);

impl Serialize for AlertView<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let a = self.0;
        let mut m = s.serialize_struct("Alert", 7)?;
        m.serialize_field("at", &a.at)?;
        m.serialize_field("key_id", a.key.as_str())?;
        m.serialize_field("team_id", &a.team)?;
        m.serialize_field("percent", &a.percent)?;
        m.serialize_field("spend_usd", &usd(a.spend_micros))?;
        m.serialize_field("cap_usd", &usd(a.cap_micros))?;
        m.serialize_field("period", &a.period)?;
        m.end()
    }
}
