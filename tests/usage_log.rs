//! The usage log: one contract for its stores (`MemoryLog`, SQLite in a temporary file,
//! PostgreSQL in a schema of its own), the sink in front of a gate (a record per decided
//! request, no client address unless asked for, a full buffer drops and counts, a key's own
//! spend alerts once per period), and the management endpoints (400 on bad parameters, team
//! scoping, pages of at most 250 with a cursor).
#![cfg(all(feature = "std", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[cfg(feature = "postgres")]
mod support;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use keygate::events::{RequestInfo, SpendAlerts};
use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::manage::{CreateKey, ManageRequest};
use keygate::secret::{PepperId, Peppers};
use keygate::usage_log::{
    AlertQuery, AlertRecord, GroupBy, LogBatch, LogConfig, LogQuery, LogRecord, LogStore, MAX_LOG_PAGE, MemoryLog,
    UsageLog, UsageQuery, handle_log_request,
};
use keygate::{
    Caller, DenialCode, Gate, KeyId, KeyKind, KeyRecord, KeyStore, Manager, MemoryLimitStore, MemoryStore, Pepper,
    Requirements, Scopes, SpendCap, SpendPeriod, Timestamp, Usage, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::Value;

/// 2027-01-15T08:00:00Z.
const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

fn verifier() -> Verifier {
    let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
    Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()))
}

fn kid(s: &str) -> KeyId {
    KeyId::new(s).unwrap()
}

fn record(key: KeyId, team: &str, at: Timestamp, model: &str, code: Option<DenialCode>) -> LogRecord {
    let mut r = LogRecord::new(at);
    r.key = Some(key);
    r.verified = true;
    r.team = Some(team.into());
    r.route = Some("chat.completions".into());
    r.model = Some(model.into());
    r.provider = Some("openai".into());
    r.code = code;
    r.status = Some(code.map_or(200, DenialCode::status));
    if code.is_none() {
        r.tokens = 30;
        r.tokens_in = Some(10);
        r.tokens_out = Some(20);
        r.cost_micros = 1_500;
    }
    r.latency_us = Some(420);
    r
}

// ---- the stores' contract ------------------------------------------------------------------------

/// What every `LogStore` must do, checked on `log` (empty).
async fn contract(log: &impl LogStore) {
    let (a, b) = (kid("logKeyAAAAAAAAAA"), kid("logKeyBBBBBBBBBB"));
    let day = Duration::from_secs(86_400);
    let yesterday = NOW.saturating_sub(day);
    // 300 requests of `a` over two days (every tenth denied, some at the very same time), 5 of `b`.
    let mut batch = LogBatch::default();
    for i in 0..300u64 {
        let (base, offset) = if i < 100 { (yesterday, i) } else { (NOW, i - 100) };
        let at = base.saturating_add(Duration::from_secs(offset / 2));
        let code = (i % 10 == 9).then_some(DenialCode::RateLimited);
        batch.records.push(record(a, "team-a", at, if i % 3 == 0 { "gpt-4o" } else { "gpt-4o-mini" }, code));
    }
    for i in 0..5u64 {
        let mut r = record(b, "team-b", NOW.saturating_add(Duration::from_secs(i)), "gpt-4o", None);
        r.client_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
        batch.records.push(r);
    }
    let mut alert = AlertRecord::new(NOW, a, 80, 8_000_000, 10_000_000, SpendPeriod::Month);
    alert.team = Some("team-a".into());
    batch.alerts.push(alert);
    log.append(&batch).await.unwrap();
    log.append(&LogBatch::default()).await.unwrap();

    // Paging: newest first, every record once, pages of the limit, a cursor until the end.
    let mut seen = BTreeSet::new();
    let mut query = LogQuery::new(a, MAX_LOG_PAGE);
    let mut pages = 0;
    let mut previous: Option<(Timestamp, u64)> = None;
    loop {
        let page = log.records(&query).await.unwrap();
        pages += 1;
        assert!(page.records.len() <= MAX_LOG_PAGE);
        for r in &page.records {
            assert_eq!(r.key, Some(a));
            assert!(r.id > 0, "a stored record has an id");
            if let Some(p) = previous {
                assert!((r.at, r.id) < p, "newest first, no repeat");
            }
            previous = Some((r.at, r.id));
            assert!(seen.insert(r.id));
        }
        match page.next {
            Some(next) => query.cursor = Some(next),
            None => break,
        }
    }
    assert_eq!((seen.len(), pages), (300, 2));
    assert_eq!(LogQuery::new(a, 10_000).limit, MAX_LOG_PAGE, "a page holds at most 250");

    // The fields come back as written.
    let newest_b = log.records(&LogQuery::new(b, 1)).await.unwrap();
    assert_eq!(newest_b.records.len(), 1);
    let got = &newest_b.records[0];
    let mut want = record(b, "team-b", NOW.saturating_add(Duration::from_secs(4)), "gpt-4o", None);
    want.client_ip = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    want.id = got.id;
    assert_eq!(*got, want);
    assert!(newest_b.next.is_some());

    // A window: [from, to).
    let mut window = LogQuery::new(a, 50);
    window.from = Some(NOW);
    window.to = Some(NOW.saturating_add(Duration::from_secs(10)));
    let page = log.records(&window).await.unwrap();
    assert_eq!(page.records.len(), 20);
    assert!(page.next.is_none());

    // Sums per day, per model, per key, within a team or for one key.
    let mut by_day = UsageQuery::new(GroupBy::Day);
    by_day.key = Some(a);
    let rows = log.usage(&by_day).await.unwrap();
    let days: Vec<_> = rows.iter().map(|r| (r.group.clone().unwrap(), r.requests, r.denied)).collect();
    assert_eq!(days, [("2027-01-14".to_owned(), 100, 10), ("2027-01-15".to_owned(), 200, 20)]);
    assert_eq!(rows[1].tokens, 180 * 30);
    assert_eq!((rows[1].tokens_in, rows[1].tokens_out), (180 * 10, 180 * 20));
    assert_eq!(rows[1].cost_micros, 180 * 1_500);

    let mut by_model = UsageQuery::new(GroupBy::Model);
    by_model.team = Some("team-a".into());
    by_model.from = Some(NOW);
    let models: Vec<_> =
        log.usage(&by_model).await.unwrap().into_iter().map(|r| (r.group.unwrap(), r.requests)).collect();
    assert_eq!(models, [("gpt-4o".to_owned(), 66), ("gpt-4o-mini".to_owned(), 134)]);

    let keys: Vec<_> = log
        .usage(&UsageQuery::new(GroupBy::Key))
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.group.unwrap(), r.requests))
        .collect();
    assert_eq!(keys, [(a.to_string(), 300), (b.to_string(), 5)]);

    // Alerts by team and key.
    let mut alerts = AlertQuery::new(10);
    alerts.team = Some("team-a".into());
    assert_eq!(log.alerts(&alerts).await.unwrap(), batch.alerts);
    alerts.team = Some("team-b".into());
    assert!(log.alerts(&alerts).await.unwrap().is_empty());

    // Retention: everything before today goes, today's stays.
    let pruned = log.prune(NOW).await.unwrap();
    assert_eq!(pruned, 100);
    let rows = log.usage(&by_day).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].requests, 200);
}

#[tokio::test]
async fn memory_log_keeps_the_contract() {
    contract(&MemoryLog::new(10_000)).await;
}

#[tokio::test]
async fn memory_log_is_a_bounded_ring() {
    let log = MemoryLog::new(3);
    let key = kid("ringKeyAAAAAAAAA");
    let mut batch = LogBatch::default();
    for i in 0..5 {
        batch.records.push(record(key, "t", NOW.saturating_add(Duration::from_secs(i)), "m", None));
    }
    log.append(&batch).await.unwrap();
    assert_eq!(log.len(), 3);
    let page = log.records(&LogQuery::new(key, 10)).await.unwrap();
    let times: Vec<_> = page.records.iter().map(|r| r.at).collect();
    assert_eq!(times, [4, 3, 2].map(|s| NOW.saturating_add(Duration::from_secs(s))), "the newest three");
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_log_keeps_the_contract() {
    let path = std::env::temp_dir().join(format!("keygate_usage_log_{}.db", std::process::id()));
    let store = keygate::SqliteStore::open(path.to_str().unwrap(), keygate::store::SqlConfig::default()).await.unwrap();
    contract(&store).await;
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_log_keeps_the_contract() {
    use sqlx::Connection as _;
    use std::str::FromStr;
    let Some(url) = support::servers::postgres_url() else { return };
    let schema = format!("kg_log_{}", std::process::id());
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut admin).await.unwrap();
    let options = sqlx::postgres::PgConnectOptions::from_str(url).unwrap().options([("search_path", schema.as_str())]);
    let store = keygate::PostgresStore::connect_with(options, keygate::store::SqlConfig::default()).await.unwrap();
    contract(&store).await;
    store.close().await;
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE")).execute(&mut admin).await.unwrap();
}

// ---- the sink in front of a gate ---------------------------------------------------------------

type LoggedGate = Gate<MemoryStore, MemoryLimitStore, UsageLog<MemoryLog>>;

fn logged_gate(
    config: LogConfig,
    change: impl FnOnce(&mut KeyRecord),
) -> (LoggedGate, UsageLog<MemoryLog>, String, KeyId) {
    let log = UsageLog::new(MemoryLog::new(1_000), config);
    let gate =
        Gate::new(verifier(), MemoryStore::new(), Limiter::new(MemoryLimitStore::new())).with_events(log.clone());
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, NOW).unwrap();
    record.team_id = Some("team-a".into());
    change(&mut record);
    let id = record.id;
    gate.store().insert(record).unwrap();
    (gate, log, key.token().expose_secret().to_owned(), id)
}

#[tokio::test]
async fn every_decided_request_becomes_a_record_after_a_flush() {
    let (gate, log, token, id) = logged_gate(LogConfig::default(), |r| r.rate_limit.requests_per_minute = Some(1));
    let header = format!("Bearer {token}");
    let client = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
    let attrs = Requirements::new().with_route("chat").with_model("gpt-4o").with_client_ip(client);
    let pass = gate.check(Some(header.as_bytes()), &attrs, NOW).unwrap();
    gate.finish(pass, Usage::new(42, 700), NOW).unwrap();
    assert!(gate.check(Some(header.as_bytes()), &attrs, NOW).is_err(), "rate limited");
    assert_eq!(log.pending(), 2, "buffered, not written");
    assert!(log.store().is_empty());

    let flushed = log.flush().await.unwrap();
    assert_eq!((flushed.written, flushed.dropped), (2, 0));
    let page = log.store().records(&LogQuery::new(id, 10)).await.unwrap();
    let outcomes: BTreeSet<_> = page.records.iter().map(LogRecord::outcome).collect();
    assert_eq!(outcomes, BTreeSet::from(["ok", "rate_limited"]));
    for r in &page.records {
        assert_eq!(r.team.as_deref(), Some("team-a"));
        assert_eq!(r.client_ip, None, "the client's address is not kept unless asked for");
        let text = format!("{r:?}");
        assert!(!text.contains(&token) && !text.contains(&token[token.len() - 20..]));
    }
    let ok = page.records.iter().find(|r| r.code.is_none()).unwrap();
    assert_eq!((ok.tokens, ok.cost_micros), (42, 700));
    let denied = page.records.iter().find(|r| r.code.is_some()).unwrap();
    assert_eq!(denied.status, Some(429));

    // With the setting on, the address is kept (the server reports it with the usage).
    let mut config = LogConfig::default();
    config.client_ip = true;
    let (gate, log, token, id) = logged_gate(config, |_| {});
    let header = format!("Bearer {token}");
    let pass = gate.check(Some(header.as_bytes()), &attrs, NOW).unwrap();
    let mut info = RequestInfo::default();
    info.client_ip = Some(client);
    gate.finish_request(pass, Usage::default(), NOW, info).unwrap();
    log.flush().await.unwrap();
    let page = log.store().records(&LogQuery::new(id, 10)).await.unwrap();
    assert_eq!(page.records[0].client_ip, Some(client));
}

#[tokio::test]
async fn a_full_buffer_drops_and_counts_and_never_refuses() {
    let mut config = LogConfig::default();
    config.capacity = 3;
    let (gate, log, token, id) = logged_gate(config, |_| {});
    let header = format!("Bearer {token}");
    for _ in 0..10 {
        let pass = gate.check(Some(header.as_bytes()), &Requirements::new(), NOW).unwrap();
        gate.finish(pass, Usage::default(), NOW).unwrap();
    }
    assert_eq!((log.pending(), log.dropped()), (3, 7));
    let flushed = log.flush().await.unwrap();
    assert_eq!((flushed.written, flushed.dropped), (3, 7));
    assert_eq!(log.flush().await.unwrap().dropped, 0, "drops are reported once");
    assert_eq!(log.store().records(&LogQuery::new(id, 50)).await.unwrap().records.len(), 3);
}

#[tokio::test]
async fn a_keys_own_spend_alerts_are_logged_once_per_period() {
    let (gate, log, token, id) = logged_gate(LogConfig::default(), |r| {
        r.spend_cap = Some(SpendCap { amount_micros: 1_000, period: SpendPeriod::Day });
        r.spend_alerts = Some(SpendAlerts::new(&[25, 90]));
    });
    let header = format!("Bearer {token}");
    let spend = |micros: u64, at: Timestamp| {
        let pass = gate.check(Some(header.as_bytes()), &Requirements::new(), at).unwrap();
        gate.finish(pass, Usage::new(1, micros), at).unwrap();
    };
    for _ in 0..9 {
        spend(100, NOW); // 100 .. 900: 25% once, 90% once
    }
    let tomorrow = NOW.saturating_add(Duration::from_secs(86_400));
    spend(300, tomorrow); // a new period: 25% again
    log.flush().await.unwrap();
    let alerts = log.store().alerts(&AlertQuery::new(50)).await.unwrap();
    let got: Vec<_> = alerts.iter().map(|a| (a.at, a.key, a.percent, a.spend_micros, a.team.as_deref())).collect();
    assert_eq!(
        got,
        [
            (tomorrow, id, 25, 300, Some("team-a")),
            (NOW, id, 90, 900, Some("team-a")),
            (NOW, id, 25, 300, Some("team-a")),
        ],
        "newest first, each threshold once per period"
    );
}

// ---- the management endpoints ------------------------------------------------------------------

struct Api {
    manager: Manager<MemoryStore>,
    log: MemoryLog,
    a: KeyId,
    b: KeyId,
    /// A caller of team-a with `read`.
    team_a: Caller,
}

async fn api() -> Api {
    let manager = Manager::new(MemoryStore::new(), verifier());
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let create = |team: &str| {
        let mut request = CreateKey::new(format!("key of {team}"));
        request.team_id = Some(team.into());
        request.scopes = Scopes::parse("read").unwrap();
        request
    };
    let a = manager.create_async(&Caller::operator(), &create("team-a"), NOW, &mut rng).await.unwrap();
    let b = manager.create_async(&Caller::operator(), &create("team-b"), NOW, &mut rng).await.unwrap();
    let (a_id, b_id) = (a.record().id, b.record().id);
    let log = MemoryLog::new(10_000);
    let mut batch = LogBatch::default();
    for i in 0..260u64 {
        batch.records.push(record(a_id, "team-a", NOW.saturating_add(Duration::from_secs(i)), "gpt-4o", None));
    }
    batch.records.push(record(b_id, "team-b", NOW, "claude-3", Some(DenialCode::QuotaExceeded)));
    batch.alerts.push(AlertRecord::new(NOW, b_id, 50, 5, 10, SpendPeriod::Day));
    log.append(&batch).await.unwrap();
    Api { team_a: Caller::from_record(a.record()), manager, log, a: a_id, b: b_id }
}

impl Api {
    async fn get(&self, caller: &Caller, path: &str, query: &str) -> (u16, Value) {
        let request = ManageRequest::new("GET", path).with_query(query);
        let answer = handle_log_request(&self.manager, &self.log, caller, &request).await;
        (answer.status(), serde_json::from_str(answer.body()).unwrap())
    }
}

#[tokio::test]
async fn a_keys_log_pages_by_cursor_up_to_250() {
    let api = api().await;
    let path = format!("/v1/management/keys/{}/logs", api.a);
    let (status, first) = api.get(&api.team_a, &path, "limit=250").await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["ok"], true);
    assert_eq!(first["key_id"], api.a.as_str());
    let logs = first["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 250);
    let newest = &logs[0];
    assert_eq!(newest["at"], "2027-01-15T08:04:19Z");
    for field in ["outcome", "status", "tokens_in", "tokens_out", "cost_micros", "cost_usd", "latency_us", "model"] {
        assert!(newest.get(field).is_some(), "{field} in {newest}");
    }
    assert_eq!(newest["outcome"], "ok");
    assert_eq!(newest["cost_usd"], "0.001500");
    let cursor = first["next_cursor"].as_str().unwrap();
    let (status, second) = api.get(&api.team_a, &path, &format!("limit=250&cursor={cursor}")).await;
    assert_eq!(status, 200);
    assert_eq!(second["logs"].as_array().unwrap().len(), 10);
    assert_eq!(second["next_cursor"], Value::Null);
    assert_eq!(second["logs"][9]["at"], "2027-01-15T08:00:00Z");
    // The default page is 50.
    let (_, default) = api.get(&api.team_a, &path, "").await;
    assert_eq!(default["logs"].as_array().unwrap().len(), 50);
}

#[tokio::test]
async fn bad_parameters_are_400_naming_the_parameter() {
    let api = api().await;
    let logs = format!("/v1/management/keys/{}/logs", api.a);
    let operator = Caller::operator();
    for (path, query, param) in [
        (logs.as_str(), "limit=251", "limit"),
        (logs.as_str(), "limit=0", "limit"),
        (logs.as_str(), "limit=ten", "limit"),
        (logs.as_str(), "cursor=yesterday", "cursor"),
        (logs.as_str(), "from=2027-13-01", "from"),
        (logs.as_str(), "from=2027-01-02T00:00:00Z&to=2027-01-01T00:00:00Z", "to"),
        (logs.as_str(), "page=2", "page"),
        (logs.as_str(), "limit=1&limit=2", "limit"),
        ("/v1/management/usage", "group_by=week", "group_by"),
        ("/v1/management/usage", "key_id=no%20such%20key!", "key_id"),
        ("/v1/management/usage", "to=soon", "to"),
        ("/v1/management/alerts", "limit=1000", "limit"),
    ] {
        let (status, body) = api.get(&operator, path, query).await;
        assert_eq!(status, 400, "{path}?{query}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{path}?{query}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_team_sees_its_own_keys_usage_and_alerts_only() {
    let api = api().await;
    // Another team's key: 404, as `GET /v1/management/keys/{id}` answers.
    let (status, body) = api.get(&api.team_a, &format!("/v1/management/keys/{}/logs", api.b), "").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = api.get(&api.team_a, "/v1/management/usage", &format!("key_id={}", api.b)).await;
    assert_eq!(status, 404);
    // Naming another team: refused.
    let (status, body) = api.get(&api.team_a, "/v1/management/usage", "team_id=team-b").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "team_mismatch");
    // Without a team: the caller's own.
    let (status, body) = api.get(&api.team_a, "/v1/management/usage", "group_by=model").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["team_id"], "team-a");
    assert_eq!(body["group_by"], "model");
    assert_eq!(
        body["usage"],
        serde_json::json!([{
            "model": "gpt-4o", "requests": 260, "denied": 0, "tokens": 7800, "tokens_in": 2600, "tokens_out": 5200,
            "cost_micros": 390_000, "cost_usd": "0.390000"
        }])
    );
    let (_, alerts) = api.get(&api.team_a, "/v1/management/alerts", "").await;
    assert_eq!(alerts["alerts"], serde_json::json!([]));
    // The operator sees every team, or the one named.
    let (_, body) = api.get(&Caller::operator(), "/v1/management/usage", "group_by=key").await;
    assert_eq!(body["usage"].as_array().unwrap().len(), 2);
    let (_, body) = api.get(&Caller::operator(), "/v1/management/usage", "group_by=day&team_id=team-b").await;
    assert_eq!(body["usage"][0]["day"], "2027-01-15");
    assert_eq!(body["usage"][0]["denied"], 1);
    let (_, alerts) = api.get(&Caller::operator(), "/v1/management/alerts", "").await;
    assert_eq!(alerts["alerts"][0]["key_id"], api.b.as_str());
    assert_eq!(alerts["alerts"][0]["percent"], 50);
}

#[tokio::test]
async fn reading_the_log_needs_the_read_scope_and_get() {
    let api = api().await;
    let nobody = Caller::new(KeyKind::STANDARD, Some("team-a".into()), Scopes::default());
    let (status, body) = api.get(&nobody, "/v1/management/usage", "").await;
    assert_eq!(status, 403, "{body}");
    let request = ManageRequest::new("POST", "/v1/management/alerts");
    let answer = handle_log_request(&api.manager, &api.log, &Caller::operator(), &request).await;
    assert_eq!(answer.status(), 405);
}
