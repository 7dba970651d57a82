//! Decision, usage and alert events: one event per decision with the right fields, thresholds
//! that fire once each per period (also under contention), per-key counters, and no secret in any
//! event.
#![cfg(feature = "std")]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use keygate::events::{DecisionEvent, EventSink, SpendAlert, SpendAlerts, UsageEvent, UsageStats};
use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::secret::{PepperId, Peppers};
use keygate::{
    DenialCode, Gate, KeyKind, KeyRecord, KeyStatus, KeyStore, MemoryLimitStore, MemoryStore, ModelAllowlist, Pepper,
    Requirements, SpendCap, SpendPeriod, Timestamp, Usage, Verifier,
};

/// 2027-01-15T08:00:00Z.
const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

/// Records every event as text (what a log line would show) and the alert thresholds.
#[derive(Default)]
struct Recorder {
    decisions: Mutex<Vec<String>>,
    usages: Mutex<Vec<String>>,
    alerts: Mutex<Vec<(u8, u64)>>,
}

impl EventSink for Recorder {
    fn decision(&self, e: &DecisionEvent<'_>) {
        let line = format!(
            "{} kid={} verified={} team={:?} route={:?} model={:?} latency={}",
            e.outcome(),
            e.key.map_or("-".to_owned(), |k| k.to_string()),
            e.verified,
            e.team,
            e.route,
            e.model,
            e.latency.is_some()
        );
        self.decisions.lock().unwrap().push(format!("{line} {e:?}"));
    }
    fn usage(&self, e: &UsageEvent<'_>) {
        self.usages.lock().unwrap().push(format!("{e:?}"));
    }
    fn alert(&self, a: &SpendAlert<'_>) {
        self.alerts.lock().unwrap().push((a.percent, a.spend_micros));
    }
}

type TestGate = Gate<MemoryStore, MemoryLimitStore, Arc<Recorder>>;

fn setup(change: impl FnOnce(&mut KeyRecord)) -> (TestGate, Arc<Recorder>, String, KeyRecord) {
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[4; 32]).unwrap()),
    );
    let recorder = Arc::new(Recorder::default());
    let gate = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new()))
        .with_events(Arc::clone(&recorder));
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, NOW).unwrap();
    record.team_id = Some("team-a".into());
    change(&mut record);
    let record = KeyRecord::clone(&gate.store().insert(record).unwrap());
    (gate, recorder, key.token().expose_secret().to_owned(), record)
}

#[test]
fn one_event_per_decision_with_the_right_fields() {
    let (gate, rec, token, record) = setup(|r| {
        r.allowed_models = ModelAllowlist::new(["gpt-4o"]).unwrap();
        r.rate_limit.requests_per_minute = Some(2);
    });
    let header = format!("Bearer {token}");
    let kid = record.id.to_string();
    let attrs = Requirements::new().with_route("chat").with_model("gpt-4o");
    let check = |h: Option<&str>, attrs: &Requirements| {
        gate.check(h.map(str::as_bytes), attrs, NOW).map(|p| gate.finish(p, Usage::default(), NOW))
    };
    assert!(check(Some(&header), &attrs).is_ok());
    assert!(check(None, &attrs).is_err());
    let wrong = format!("{}{}", &header[..header.len() - 1], if header.ends_with('A') { 'E' } else { 'A' });
    assert!(check(Some(&wrong), &attrs).is_err());
    assert!(check(Some(&header), &attrs.clone().with_model("claude-3")).is_err());
    assert!(check(Some(&header), &attrs).is_ok());
    assert!(check(Some(&header), &attrs).is_err()); // the third request in the minute

    let lines = rec.decisions.lock().unwrap().clone();
    assert_eq!(lines.len(), 6, "one event per decision: {lines:#?}");
    let want = [
        format!(
            "allowed kid={kid} verified=true team=Some(\"team-a\") route=Some(\"chat\") model=Some(\"gpt-4o\") latency=true"
        ),
        "missing_api_key kid=- verified=false team=None route=Some(\"chat\")".to_owned(),
        format!("invalid_api_key kid={kid} verified=false team=None"),
        format!(
            "model_not_allowed kid={kid} verified=true team=Some(\"team-a\") route=Some(\"chat\") model=Some(\"claude-3\")"
        ),
        format!("allowed kid={kid} verified=true"),
        format!("rate_limited kid={kid} verified=true"),
    ];
    for (line, want) in lines.iter().zip(&want) {
        assert!(line.starts_with(want.as_str()), "{line}\n  does not start with\n{want}");
    }
    let secret = &token[31..];
    for line in lines.iter().chain(rec.usages.lock().unwrap().iter()) {
        assert!(!line.contains(secret) && !line.contains(&token), "an event contains the secret: {line}");
    }
}

#[test]
fn revoked_and_other_verified_denials_say_so() {
    let (gate, rec, token, record) = setup(|r| r.status = KeyStatus::Revoked);
    let header = format!("Bearer {token}");
    let denial = gate.check(Some(header.as_bytes()), &Requirements::new(), NOW).unwrap_err();
    assert_eq!(denial.code(), DenialCode::RevokedApiKey);
    let line = rec.decisions.lock().unwrap()[0].clone();
    assert!(line.starts_with(&format!("revoked_api_key kid={} verified=true", record.id)), "{line}");
}

#[test]
fn thresholds_fire_once_each_per_period() {
    let (gate, rec, token, _) =
        setup(|r| r.spend_cap = Some(SpendCap { amount_micros: 100, period: SpendPeriod::Day }));
    let header = format!("Bearer {token}");
    let spend = |micros: u64, at: Timestamp| {
        let pass = gate.check(Some(header.as_bytes()), &Requirements::new(), at).unwrap();
        gate.finish(pass, Usage::new(10, micros), at).unwrap();
    };
    spend(40, NOW); // 40: nothing
    spend(40, NOW); // 80: 50% and 80%
    spend(10, NOW); // 90: nothing new
    spend(10, NOW); // 100: 100%
    assert_eq!(*rec.alerts.lock().unwrap(), [(50, 80), (80, 80), (100, 100)]);
    // At the cap the next request is refused (quota_exceeded); the next day starts over.
    let refused = gate.check(Some(header.as_bytes()), &Requirements::new(), NOW).unwrap_err();
    assert_eq!(refused.code(), DenialCode::QuotaExceeded);
    let tomorrow = NOW.saturating_add(Duration::from_secs(16 * 3600));
    spend(60, tomorrow);
    assert_eq!(rec.alerts.lock().unwrap()[3..], [(50, 60)]);
    assert_eq!(rec.usages.lock().unwrap().len(), 5);
}

#[test]
fn thresholds_fire_exactly_once_under_contention() {
    let (gate, rec, token, _) =
        setup(|r| r.spend_cap = Some(SpendCap { amount_micros: 10_000, period: SpendPeriod::Month }));
    let header = format!("Bearer {token}");
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..25 {
                    if let Ok(pass) = gate.check(Some(header.as_bytes()), &Requirements::new(), NOW) {
                        gate.finish(pass, Usage::new(1, 100), NOW).unwrap();
                    }
                }
            });
        }
    });
    let mut percents: Vec<u8> = rec.alerts.lock().unwrap().iter().map(|a| a.0).collect();
    percents.sort_unstable();
    assert_eq!(percents, [50, 80, 100], "each threshold exactly once");
}

#[test]
fn usage_stats_count_per_key_and_period() {
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[5; 32]).unwrap()),
    );
    let stats = Arc::new(UsageStats::new());
    let gate = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new()))
        .with_events(Arc::clone(&stats))
        .with_spend_alerts(SpendAlerts::NONE);
    let (key, mut record) = gate.verifier().issue(&mut keygate::OsRng, KeyKind::STANDARD, NOW).unwrap();
    record.allowed_models = ModelAllowlist::new(["gpt-4o"]).unwrap();
    let id = gate.store().insert(record).unwrap().id;
    let header = format!("Bearer {}", key.token().expose_secret());
    let attrs = Requirements::new().with_model("gpt-4o");
    for _ in 0..3 {
        let pass = gate.check(Some(header.as_bytes()), &attrs, NOW).unwrap();
        gate.finish(pass, Usage::new(100, 2_000), NOW).unwrap();
    }
    assert!(gate.check(Some(header.as_bytes()), &attrs.clone().with_model("x"), NOW).is_err());
    // Made-up kids are not counted.
    assert!(
        gate.check(
            Some(b"Bearer aistats_v1_sk_ZZZZZZZZZZZZZZZZ_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            &attrs,
            NOW
        )
        .is_err()
    );

    let usage = stats.get(&id, NOW).unwrap();
    assert_eq!((usage.day.requests, usage.day.tokens, usage.day.spend_micros), (3, 300, 6_000));
    assert_eq!((usage.month.requests, usage.month.tokens, usage.month.spend_micros), (3, 300, 6_000));
    assert_eq!(usage.month.start, Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap());
    assert_eq!(usage.day.denied(DenialCode::ModelNotAllowed), 1);
    assert_eq!(usage.last_used, Some(NOW));
    assert!(stats.get(&"ZZZZZZZZZZZZZZZZ".parse().unwrap(), NOW).is_none());
    // The next day reads as empty; the month keeps counting.
    let tomorrow = stats.get(&id, NOW.saturating_add(Duration::from_secs(86_400))).unwrap();
    assert_eq!((tomorrow.day.requests, tomorrow.month.requests), (0, 3));
}

/// A sink that says it does not read latency gets none (the gate reads no clock for it); paired
/// with a sink that does, both get it.
#[test]
fn untimed_sinks_get_no_latency() {
    #[derive(Default)]
    struct Untimed(Mutex<Vec<Option<Duration>>>);
    impl EventSink for Untimed {
        fn decision(&self, e: &DecisionEvent<'_>) {
            self.0.lock().unwrap().push(e.latency);
        }
        fn timed(&self) -> bool {
            false
        }
    }
    let verifier = Verifier::new(
        SelectorFormat::new("aistats").unwrap(),
        Peppers::new(Pepper::new(PepperId(1), &[4; 32]).unwrap()),
    );
    let untimed = Arc::new(Untimed::default());
    let recorder = Arc::new(Recorder::default());
    let alone = Gate::new(verifier.clone(), MemoryStore::new(), Limiter::new(MemoryLimitStore::new()))
        .with_events(Arc::clone(&untimed));
    let both = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new()))
        .with_events((Arc::clone(&untimed), Arc::clone(&recorder)));
    let attrs = Requirements::new();
    assert!(alone.check(None, &attrs, NOW).is_err());
    assert!(both.check(None, &attrs, NOW).is_err());
    let seen = untimed.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen[0].is_none(), "alone, an untimed sink gets no latency");
    assert!(seen[1].is_some(), "paired with a timed sink, the latency is measured");
    assert!(recorder.decisions.lock().unwrap()[0].contains("latency=true"));
    assert!(!UsageStats::new().timed());
}
