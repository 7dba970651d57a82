//! Property tests of key management: paging through the handler with any page sizes visits
//! every key exactly once; money survives text → micro-dollars → JSON exactly; a caller can
//! grant exactly the scopes its own scopes cover; and any key a caller is allowed to create,
//! rotate out or change is within the caller in every dimension.
#![cfg(all(feature = "std", feature = "json"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::collections::BTreeSet;

use std::net::IpAddr;
use std::time::Duration;

use keygate::format::SelectorFormat;
use keygate::manage::{
    CreateKey, KeyView, MAX_USD_MICROS, ManageRequest, MoneyError, Patch, RotateKey, UpdateKey, Usd, plan_create,
    plan_rotation, plan_update,
};
use keygate::policy::Scope;
use keygate::record::KeyShape;
use keygate::secret::{PepperId, Peppers, StoredDigest};
use keygate::{
    Caller, Credits, IpCidr, KeyId, KeyKind, KeyRecord, ManageConfig, Manager, MemoryStore, ModelAllowlist, Pepper,
    RateLimits, RequiredScopes, Scopes, SpendCap, SpendPeriod, Timestamp, Verifier,
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

// ---- no key configures a key beyond itself (issue 15) ----------------------------------------

const T0: Timestamp = Timestamp::from_unix_secs(1_800_000_000);
const NETWORKS: [&str; 11] = [
    "10.0.0.0/8",
    "10.0.0.0/16",
    "10.1.2.0/23",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3",
    "10.2.0.0/15",
    "192.168.0.0/16",
    "::1",
    "2001:db8::/32",
    "0.0.0.0/0",
];
const MODELS: [&str; 9] =
    ["gpt-4o", "gpt-4o-mini", "gpt-4o*", "gpt*", "*:free", "gpt-4o:free", "claude-3*", "*", "gpt*:free"];
const MODEL_PROBES: [&str; 12] = [
    "gpt-4o",
    "gpt-4o:free",
    "gpt-4o-mini",
    "gpt-4o-mini:free",
    "gpt-5",
    "gpt-5:free",
    "claude-3-opus",
    "claude-3-opus:free",
    "llama",
    "llama:free",
    "gpt",
    "gpt:free",
];
const PROVIDERS: [&str; 3] = ["openai", "anthropic", "google"];
const PERIODS: [SpendPeriod; 3] = [SpendPeriod::Day, SpendPeriod::Week, SpendPeriod::Month];

/// A key's configuration in every dimension item 1 names.
#[derive(Debug, Clone)]
struct Config {
    expires_at: Option<Timestamp>,
    ips: Vec<IpCidr>,
    models: ModelAllowlist,
    providers: Vec<String>,
    limits: RateLimits,
    spend_cap: Option<SpendCap>,
    credits: Option<Credits>,
}

fn some_of<T: Clone + std::fmt::Debug + 'static>(pool: &'static [T]) -> impl Strategy<Value = Vec<T>> {
    prop::collection::vec(prop::sample::select(pool), 0..3)
}

fn limit() -> impl Strategy<Value = Option<u32>> {
    prop_oneof![Just(None), (1..10u32).prop_map(Some)]
}

fn config_strategy() -> impl Strategy<Value = Config> {
    let expiry = prop_oneof![Just(None), (1..4_000u64).prop_map(|s| Some(T0.saturating_add(Duration::from_secs(s))))];
    let spend = prop_oneof![
        Just(None),
        (1..20u64, prop::sample::select(&PERIODS[..]))
            .prop_map(|(amount_micros, period)| Some(SpendCap { amount_micros, period }))
    ];
    let credits = prop_oneof![
        Just(None),
        (0..20u64, prop::option::of(prop::sample::select(&PERIODS[..])))
            .prop_map(|(amount, refill)| Some(Credits { amount, refill }))
    ];
    (expiry, some_of(&NETWORKS), some_of(&MODELS), some_of(&PROVIDERS), (limit(), limit(), limit()), spend, credits)
        .prop_map(|(expires_at, ips, models, providers, (rpm, tpm, concurrency), spend_cap, credits)| Config {
            expires_at,
            ips: ips.iter().map(|n| n.parse().unwrap()).collect(),
            models: ModelAllowlist::new(models).unwrap(),
            providers: providers.iter().map(|p| (*p).to_owned()).collect(),
            limits: RateLimits { requests_per_minute: rpm, tokens_per_minute: tpm, concurrency },
            spend_cap,
            credits,
        })
}

fn record_with(id: &str, team: &str, scopes: &str, c: &Config) -> KeyRecord {
    let mut r = KeyRecord::new(
        KeyId::new(id).unwrap(),
        KeyShape::Selector,
        KeyKind::STANDARD,
        StoredDigest::sha256_of(id.as_bytes()),
        T0,
    );
    r.team_id = Some(team.into());
    r.scopes = Scopes::parse(scopes).unwrap();
    r.expires_at = c.expires_at;
    r.allowed_ips = c.ips.clone();
    r.allowed_models = c.models.clone();
    r.allowed_providers = c.providers.clone();
    r.rate_limit = c.limits;
    r.spend_cap = c.spend_cap;
    r.credits = c.credits;
    r
}

fn last_address(net: IpCidr) -> IpAddr {
    match net.addr() {
        IpAddr::V4(a) => {
            IpAddr::V4((u32::from(a) | u32::MAX.checked_shr(u32::from(net.prefix_len())).unwrap_or(0)).into())
        }
        IpAddr::V6(a) => {
            IpAddr::V6((u128::from(a) | u128::MAX.checked_shr(u32::from(net.prefix_len())).unwrap_or(0)).into())
        }
    }
}

fn ip_allowed(list: &[IpCidr], ip: IpAddr) -> bool {
    list.is_empty() || list.iter().any(|n| n.contains(ip))
}

/// The most spend of a budget (`amount` per `period`, `None` for all time) in any window of
/// `window` over two years of real calendar, found by walking it.
fn most_in_a_window(amount: u64, period: Option<SpendPeriod>, window: Option<SpendPeriod>) -> Option<u64> {
    let Some(window) = window else {
        // All time: a refilling budget has no bound, a total is itself.
        return if period.is_some() { None } else { Some(amount) };
    };
    let mut most = 0;
    let mut day = Timestamp::from_unix_secs(1_735_689_600); // 2025-01-01
    for _ in 0..(2 * 366) {
        let (from, to) = window.bounds(day);
        let mut touched = 0u64;
        let mut at = from;
        while at < to {
            touched += 1;
            at = match period {
                Some(p) => p.bounds(at).1,
                None => to,
            };
        }
        most = most.max(touched * amount);
        day = day.saturating_add(Duration::from_secs(86_400));
    }
    Some(most)
}

/// The dimension in which `key` is broader than `caller`, by an oracle that samples what each
/// allows, or `None` if it is within.
fn broader(key: &KeyRecord, caller: &KeyRecord, net_probes: &[IpAddr]) -> Option<&'static str> {
    if caller.expires_at.is_some_and(|c| key.expires_at.is_none_or(|k| k > c)) {
        return Some("expires_at");
    }
    let mut probes: Vec<IpAddr> = net_probes.to_vec();
    probes.extend(key.allowed_ips.iter().flat_map(|n| [n.addr(), last_address(*n)]));
    probes.extend(["203.0.113.9", "2001:db9::1"].map(|a| a.parse::<IpAddr>().unwrap()));
    if probes.iter().any(|ip| ip_allowed(&key.allowed_ips, *ip) && !ip_allowed(&caller.allowed_ips, *ip)) {
        return Some("allowed_ips");
    }
    if MODEL_PROBES.iter().any(|m| key.allowed_models.permits(m) && !caller.allowed_models.permits(m)) {
        return Some("allowed_models");
    }
    let provider_ok = |list: &[String], p: &str| list.is_empty() || list.iter().any(|x| x == p);
    if PROVIDERS
        .iter()
        .chain(&["mistral"])
        .any(|p| provider_ok(&key.allowed_providers, p) && !provider_ok(&caller.allowed_providers, p))
    {
        return Some("allowed_providers");
    }
    let limit_wider = |k: Option<u32>, c: Option<u32>| c.is_some_and(|c| k.is_none_or(|k| k > c));
    let (k, c) = (key.rate_limit, caller.rate_limit);
    if limit_wider(k.requests_per_minute, c.requests_per_minute)
        || limit_wider(k.tokens_per_minute, c.tokens_per_minute)
        || limit_wider(k.concurrency, c.concurrency)
    {
        return Some("rate_limit");
    }
    if let Some(c) = caller.spend_cap {
        let most = key.spend_cap.and_then(|k| most_in_a_window(k.amount_micros, Some(k.period), Some(c.period)));
        if most.is_none_or(|m| m > c.amount_micros) {
            return Some("spend_cap");
        }
    }
    if let Some(c) = caller.credits {
        let most = key.credits.and_then(|k| most_in_a_window(k.amount, k.refill, c.refill));
        if most.is_none_or(|m| m > c.amount) {
            return Some("credits");
        }
    }
    None
}

/// `base` with the dimensions `mask` picks taken from `other` (so that the configurations tried
/// are often near the caller's, where the rules decide).
fn mixed(base: &Config, other: &Config, mask: u16) -> Config {
    let on = |bit: u16| mask & (1 << bit) != 0;
    let mut c = base.clone();
    if on(0) {
        c.expires_at = other.expires_at;
    }
    if on(1) {
        c.ips.clone_from(&other.ips);
    }
    if on(2) {
        c.models = other.models.clone();
    }
    if on(3) {
        c.providers.clone_from(&other.providers);
    }
    if on(4) {
        c.limits.requests_per_minute = other.limits.requests_per_minute;
    }
    if on(5) {
        c.limits.tokens_per_minute = other.limits.tokens_per_minute;
    }
    if on(6) {
        c.limits.concurrency = other.limits.concurrency;
    }
    if on(7) {
        c.spend_cap = other.spend_cap;
    }
    if on(8) {
        c.credits = other.credits;
    }
    c
}

fn create_request(c: &Config) -> CreateKey {
    let mut r = CreateKey::new("child");
    r.scopes = Scopes::parse("read").unwrap();
    r.expires_at = c.expires_at;
    r.allowed_ips = c.ips.clone();
    r.allowed_models = c.models.clone();
    r.allowed_providers = c.providers.clone();
    r.rate_limit = c.limits;
    r.spend_cap = c.spend_cap;
    r.credits = c.credits;
    r
}

/// An update that sets each field of `c` or leaves it, as `mask` says.
fn update_request(c: &Config, mask: u16) -> UpdateKey {
    fn patch<T>(mask: u16, bit: u16, v: Option<T>) -> Patch<T> {
        if mask & (1 << bit) == 0 { Patch::Keep } else { v.map_or(Patch::Clear, Patch::Set) }
    }
    let on = |bit: u16| mask & (1 << bit) != 0;
    let mut u = UpdateKey::default();
    u.expires_at = patch(mask, 0, c.expires_at);
    u.allowed_ips = on(1).then(|| c.ips.clone());
    u.allowed_models = on(2).then(|| c.models.clone());
    u.allowed_providers = on(3).then(|| c.providers.clone());
    u.rate_limit.requests_per_minute = patch(mask, 4, c.limits.requests_per_minute);
    u.rate_limit.tokens_per_minute = patch(mask, 5, c.limits.tokens_per_minute);
    u.rate_limit.concurrency = patch(mask, 6, c.limits.concurrency);
    u.spend_cap = patch(mask, 7, c.spend_cap);
    u.credits = patch(mask, 8, c.credits);
    u
}

proptest! {
    // Many cases: most random configurations are refused somewhere, and the interesting ones sit
    // right at the caller's bounds.
    #![proptest_config(ProptestConfig { cases: 2048, ..config() })]

    /// Any key a caller is allowed to create, or to rotate out of a key it may see, is within the
    /// caller; and any update it is allowed leaves every changed field within the caller.
    #[test]
    fn any_plan_accepted_for_a_caller_is_within_the_caller(
        caller in config_strategy(),
        child in config_strategy(),
        target in config_strategy(),
        mask in 0..512u16,
        near in prop::sample::select(&[1u16, 2, 4, 8, 16, 32, 64, 128, 256, 3, 0x1ff][..]),
        offsets in prop::collection::vec(any::<u32>(), 4),
    ) {
        // The child and the target differ from the caller in one or two dimensions, or in all.
        let child = mixed(&caller, &child, near);
        let target = mixed(&caller, &target, near.rotate_left(1) & 0x1ff);
        let own = record_with("caller", "team-a", "read write", &caller);
        let who = Caller::from_record(&own);
        let config = ManageConfig::default();
        let issued = |id: &str| KeyRecord::new(KeyId::new(id).unwrap(), KeyShape::Selector, KeyKind::STANDARD, StoredDigest::sha256_of(b"new"), T0);
        // Addresses inside the networks at hand, to sample what each list allows.
        let probes: Vec<IpAddr> = NETWORKS.iter().map(|n| n.parse::<IpCidr>().unwrap()).zip(offsets.iter().cycle())
            .map(|(n, off)| match n.addr() {
                IpAddr::V4(a) => IpAddr::V4((u32::from(a) | (off & u32::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0))).into()),
                IpAddr::V6(a) => IpAddr::V6((u128::from(a) | (u128::from(*off) & u128::MAX.checked_shr(u32::from(n.prefix_len())).unwrap_or(0))).into()),
            })
            .collect();

        if let Ok(created) = plan_create(&who, &config, &create_request(&child), issued("created"), T0) {
            prop_assert_eq!(broader(&created, &own, &probes), None, "created {:?}", created);
        }
        let existing = record_with("target", "team-a", "read", &target);
        if let Ok(plan) = plan_rotation(&who, &config, Some(&existing), &RotateKey::default(), issued("successor"), T0) {
            prop_assert_eq!(broader(&plan.successor, &own, &probes), None, "successor {:?}", plan.successor);
        }
        // Rotating itself always works and gives a successor within itself.
        let itself = plan_rotation(&who, &config, Some(&own), &RotateKey::default(), issued("successor"), T0);
        prop_assert!(itself.is_ok() || caller.expires_at.is_some_and(|e| e <= T0), "{:?}", itself);

        if let Ok(Some(updated)) = plan_update(&who, &config, Some(&existing), &update_request(&child, mask), T0) {
            // Only the fields the update changed must be within: compare a record that takes
            // the unchanged ones from the caller.
            let mut changed = own.clone();
            if updated.expires_at != existing.expires_at { changed.expires_at = updated.expires_at; }
            if updated.allowed_ips != existing.allowed_ips { changed.allowed_ips.clone_from(&updated.allowed_ips); }
            if updated.allowed_models != existing.allowed_models { changed.allowed_models = updated.allowed_models.clone(); }
            if updated.allowed_providers != existing.allowed_providers { changed.allowed_providers.clone_from(&updated.allowed_providers); }
            let (u, e) = (updated.rate_limit, existing.rate_limit);
            if u.requests_per_minute != e.requests_per_minute { changed.rate_limit.requests_per_minute = u.requests_per_minute; }
            if u.tokens_per_minute != e.tokens_per_minute { changed.rate_limit.tokens_per_minute = u.tokens_per_minute; }
            if u.concurrency != e.concurrency { changed.rate_limit.concurrency = u.concurrency; }
            if updated.spend_cap != existing.spend_cap { changed.spend_cap = updated.spend_cap; }
            if updated.credits != existing.credits { changed.credits = updated.credits; }
            prop_assert_eq!(broader(&changed, &own, &probes), None, "updated {:?}", updated);
        }
        // And a child exactly as restricted as the caller is always accepted.
        prop_assert!(plan_create(&who, &config, &create_request(&caller), issued("same"), T0).is_ok() || caller.expires_at.is_some_and(|e| e <= T0));
    }
}
