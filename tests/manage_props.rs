//! Property tests of key management: paging through the handler with any page sizes visits
//! every key exactly once; money survives text → micro-dollars → JSON exactly; and a caller can
//! grant exactly the scopes its own scopes cover.
#![cfg(all(feature = "std", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::collections::BTreeSet;

use keygate::{
    Caller, CreateKey, KeyKind, KeyView, MAX_USD_MICROS, ManageRequest, Manager, MemoryStore, MoneyError, Pepper,
    PepperId, Peppers, RequiredScopes, Scope, Scopes, SelectorFormat, SpendCap, SpendPeriod, Timestamp, Usd, Verifier,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;
use serde_json::Value;

/// Failing cases are saved where they can be committed.
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/manage_props.txt"))),
        ..ProptestConfig::default()
    }
}

fn verifier() -> Verifier {
    Verifier::new(SelectorFormat::new("aistats").unwrap(), Peppers::new(Pepper::new(PepperId(1), &[9; 32]).unwrap()))
}

const TEAMS: [Option<&str>; 3] = [None, Some("t0"), Some("t1")];

/// Keys as (creation second, team index); seconds from a small range so that many share a
/// creation time and the order falls back to the id.
fn keys() -> impl Strategy<Value = Vec<(u64, usize)>> {
    prop::collection::vec((0..5u64, 0..3usize), 0..60)
}

/// Page sizes, cycled: each page may have another size.
fn page_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1..=5usize, 1..=250usize], 1..8)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn paging_visits_every_key_exactly_once(keys in keys(), sizes in page_sizes(), team in 0..3usize, seed: u8) {
        let m = Manager::new(MemoryStore::new(), verifier());
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let mut expected = BTreeSet::new();
        for (i, (second, t)) in keys.iter().enumerate() {
            let mut r = CreateKey::new(format!("k{i}"));
            r.team_id = TEAMS[*t].map(Into::into);
            let created = m.create(&Caller::operator(), &r, Timestamp::from_unix_secs(1_800_000_000 + second), &mut rng).unwrap();
            if team == 0 || *t == team {
                expected.insert(created.record().id.to_string());
            }
        }
        // The operator pages through everything; a team's management key through its team.
        let caller = match TEAMS[team] {
            None => Caller::operator(),
            Some(t) => Caller::new(KeyKind::MANAGEMENT, Some(t.into()), Scopes::parse("read").unwrap()),
        };
        let now = Timestamp::from_unix_secs(1_900_000_000);
        let mut visited = Vec::new();
        let mut offset = 0;
        for limit in sizes.iter().cycle() {
            let query = format!("limit={limit}&offset={offset}");
            let request = ManageRequest::new("GET", "/v1/management/keys").with_query(&query);
            let response = m.handle(&caller, &request, now, &mut rng);
            prop_assert_eq!(response.status(), 200);
            let page: Value = serde_json::from_str(response.body()).unwrap();
            prop_assert_eq!(&page["total"], &Value::from(expected.len()));
            prop_assert_eq!(&page["limit"], &Value::from(*limit));
            prop_assert_eq!(&page["offset"], &Value::from(offset));
            let ids = page["keys"].as_array().unwrap();
            prop_assert!(ids.len() <= *limit);
            if ids.is_empty() {
                break;
            }
            visited.extend(ids.iter().map(|k| k["id"].as_str().unwrap().to_owned()));
            offset += ids.len();
        }
        let unique: BTreeSet<_> = visited.iter().cloned().collect();
        prop_assert_eq!(unique.len(), visited.len(), "a key was visited twice");
        prop_assert_eq!(unique, expected);
    }

    #[test]
    fn decimal_text_is_read_exactly(whole in 0..=1_000_000_000u64, frac in 0..1_000_000u64, decimals in 0..=6u32, zeros in 0..4usize) {
        // `whole.frac` with `decimals` digits of `frac`, then some trailing zeros.
        let kept = frac / 10u64.pow(6 - decimals);
        let micros = whole * 1_000_000 + kept * 10u64.pow(6 - decimals);
        let mut text = whole.to_string();
        if decimals > 0 || zeros > 0 {
            text.push('.');
            if decimals > 0 {
                text.push_str(&format!("{kept:0width$}", width = decimals as usize));
            }
            text.push_str(&"0".repeat(zeros.max(usize::from(decimals == 0))));
        }
        let parsed = Usd::parse(&text);
        if micros > MAX_USD_MICROS {
            prop_assert_eq!(parsed, Err(MoneyError::TooLarge), "{}", text);
        } else {
            prop_assert_eq!(parsed.map(Usd::micros), Ok(micros), "{}", text);
            // A seventh significant decimal is always refused.
            let finer = format!("{}.{:06}1", micros / 1_000_000, micros % 1_000_000);
            prop_assert_eq!(Usd::parse(&finer), Err(MoneyError::TooPrecise), "{}", finer);
        }
    }

    #[test]
    fn amounts_survive_json_exactly(micros in prop_oneof![0..=MAX_USD_MICROS, 0..=10_000_000u64]) {
        let usd = Usd::from_micros(micros).unwrap();
        prop_assert_eq!(Usd::parse(&usd.to_string()), Ok(usd));
        let (_, mut record) = verifier().issue(&mut ChaCha20Rng::from_seed([0; 32]), KeyKind::STANDARD, Timestamp::EPOCH).unwrap();
        record.spend_cap = Some(SpendCap { amount_micros: micros, period: SpendPeriod::Day });
        let json = serde_json::to_string(&KeyView::new(&record)).unwrap();
        let text = json.split(r#""amount_usd":"#).nth(1).unwrap().split(',').next().unwrap();
        // The number as written, read exactly, is the stored amount; so is a double's reading.
        prop_assert_eq!(Usd::parse(text).map(Usd::micros), Ok(micros), "{}", text);
        let as_double: f64 = text.parse().unwrap();
        prop_assert_eq!(as_double, micros as f64 / 1e6);
    }

    #[test]
    fn a_caller_grants_exactly_what_its_scopes_cover(granted in prop::collection::vec(scope(), 0..5), wanted in scope()) {
        let caller = Caller::new(KeyKind::MANAGEMENT, None, Scopes::from_scopes(&granted).unwrap());
        let wanted = Scope::new(&wanted).unwrap();
        // Every concrete scope `wanted` permits, among ours and one fresh name below it.
        let fresh = match wanted.as_str().strip_suffix('*') {
            Some(prefix) => format!("{prefix}fresh"),
            None => wanted.as_str().to_owned(),
        };
        let probes: Vec<String> = concrete_scopes().into_iter().chain([fresh.clone()]).collect();
        let own = Scopes::from_scopes([wanted.as_str()]).unwrap();
        let mut all_permitted = true;
        for probe in &probes {
            let required = RequiredScopes::new(probe).unwrap();
            if own.permits(&required) && !caller.scopes().permits(&required) {
                all_permitted = false;
            }
        }
        prop_assert_eq!(caller.covers(&wanted), all_permitted, "{:?} covers {}? fresh {}", granted, wanted, fresh);
        prop_assert_eq!(caller.may_grant(&own).is_ok(), all_permitted);
    }
}

/// Scopes over a tiny alphabet, so that grants and targets overlap often.
fn scope() -> impl Strategy<Value = String> {
    let segments = prop::collection::vec(prop_oneof![Just("a"), Just("b")], 1..3);
    (segments, 0..3u8).prop_map(|(segments, wild)| match wild {
        0 => "*".to_owned(),
        1 => format!("{}:*", segments.join(":")),
        _ => segments.join(":"),
    })
}

/// Every concrete scope of up to three segments over the alphabet.
fn concrete_scopes() -> Vec<String> {
    let mut out = Vec::new();
    for a in ["a", "b"] {
        out.push(a.to_owned());
        for b in ["a", "b"] {
            out.push(format!("{a}:{b}"));
            for c in ["a", "b"] {
                out.push(format!("{a}:{b}:{c}"));
            }
        }
    }
    out
}
