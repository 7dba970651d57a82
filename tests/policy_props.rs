//! Property tests of the policy stage's matchers against simple reference models: CIDR
//! containment as u128 arithmetic, scope grants as naive string rules, model patterns as string
//! rules, and scope lists surviving every form they are written in.
#![cfg(all(feature = "std", feature = "serde"))]
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use keygate::policy::{ModelPattern, Scope};
use keygate::{IpCidr, RequiredScopes, Scopes};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// Failing cases are saved where they can be committed (proptest's default looks for a
/// `lib.rs` beside the test and finds none).
fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("proptest-regressions/policy_props.txt"))),
        ..ProptestConfig::default()
    }
}

// ---- CIDR ---------------------------------------------------------------------------------

/// An address as the reference model sees it: IPv4 (also when written as `::ffff:a.b.c.d`) or
/// IPv6, as an integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    V4(u128),
    V6(u128),
}

const MAPPED: u128 = 0xffff << 32;

fn classify(bits: u128) -> Addr {
    if bits >> 32 == 0xffff { Addr::V4(bits & 0xffff_ffff) } else { Addr::V6(bits) }
}

/// Whether `a` and `b` agree on their first `len` of `width` bits.
fn same_prefix(a: u128, b: u128, len: u32, width: u32) -> bool {
    len == 0 || (a ^ b) >> (width - len) == 0
}

/// Containment by arithmetic: same family, same leading `len` bits.
fn reference_contains(net: Addr, len: u32, client: Addr) -> bool {
    match (net, client) {
        (Addr::V4(n), Addr::V4(c)) => same_prefix(n, c, len, 32),
        (Addr::V6(n), Addr::V6(c)) => same_prefix(n, c, len, 128),
        _ => false,
    }
}

fn host_mask(len: u32, width: u32) -> u128 {
    let host = width - len;
    if host == 128 { u128::MAX } else { (1u128 << host) - 1 }
}

/// An IPv6 network: a prefix length and an address with its host bits cleared, sometimes in
/// the IPv4-mapped range.
fn block() -> impl Strategy<Value = (u32, u128)> {
    let addr = prop_oneof![any::<u128>(), any::<u32>().prop_map(|v4| MAPPED | u128::from(v4))];
    (0u32..=128, addr).prop_map(|(len, a)| (len, a & !host_mask(len, 128)))
}

/// Addresses that share a prefix with `net` often enough to exercise both answers.
fn near(net: u128) -> impl Strategy<Value = u128> {
    prop_oneof![any::<u128>(), (0u32..128).prop_flat_map(move |k| any::<u128>().prop_map(move |r| net ^ (r >> k)))]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ipv4_blocks_agree_with_arithmetic(addr in any::<u32>(), len in 0u32..=32, client in any::<u32>(), flip in 0u32..32) {
        let net = u128::from(addr) & !host_mask(len, 32) & 0xffff_ffff;
        let v4 = Ipv4Addr::from(u32::try_from(net).unwrap());
        let cidr = IpCidr::new(IpAddr::V4(v4), u8::try_from(len).unwrap()).unwrap();
        // Parsing the canonical text gives the same block; so does the mapped IPv6 spelling.
        prop_assert_eq!(format!("{v4}/{len}").parse::<IpCidr>().unwrap(), cidr);
        prop_assert_eq!(format!("::ffff:{v4}/{}", len + 96).parse::<IpCidr>().unwrap(), cidr);
        prop_assert_eq!(cidr.to_string(), format!("{v4}/{len}"));

        // A random client and one that differs from the network in exactly one bit.
        for c in [u128::from(client), net ^ (1 << flip)] {
            let expected = reference_contains(Addr::V4(net), len, Addr::V4(c));
            let ip = Ipv4Addr::from(u32::try_from(c).unwrap());
            prop_assert_eq!(cidr.contains(IpAddr::V4(ip)), expected, "{} in {}", ip, cidr);
            prop_assert_eq!(cidr.contains(IpAddr::V6(ip.to_ipv6_mapped())), expected, "mapped {} in {}", ip, cidr);
            // IPv4-compatible `::a.b.c.d` is IPv6, not IPv4.
            prop_assert!(!cidr.contains(IpAddr::V6(ip.to_ipv6_compatible())));
        }
        // Host bits set are refused, not silently cleared.
        if len < 32 {
            let host = Ipv4Addr::from(u32::try_from(net | 1).unwrap());
            prop_assert!(IpCidr::new(IpAddr::V4(host), u8::try_from(len).unwrap()).is_err());
        }
    }

    #[test]
    fn ipv6_blocks_agree_with_arithmetic(addr in any::<u128>(), len in 0u32..=128, seed in any::<u128>()) {
        let net = addr & !host_mask(len, 128);
        let cidr = IpCidr::new(IpAddr::V6(Ipv6Addr::from(net)), u8::try_from(len).unwrap()).unwrap();
        // A block inside ::ffff:0:0/96 is the IPv4 block it spells.
        let rule = if len >= 96 && net >> 32 == 0xffff { Addr::V4(net & 0xffff_ffff) } else { Addr::V6(net) };
        let rule_len = if matches!(rule, Addr::V4(_)) { len - 96 } else { len };
        prop_assert_eq!(cidr.prefix_len(), u8::try_from(rule_len).unwrap());
        prop_assert_eq!(cidr.to_string().parse::<IpCidr>().unwrap(), cidr);

        let clients = [seed, net ^ (seed >> (seed % 128)), MAPPED | (seed & 0xffff_ffff), net];
        for c in clients {
            let expected = reference_contains(rule, rule_len, classify(c));
            let ip = IpAddr::V6(Ipv6Addr::from(c));
            prop_assert_eq!(cidr.contains(ip), expected, "{} in {}", ip, cidr);
            if let Addr::V4(v4) = classify(c) {
                let plain = IpAddr::V4(Ipv4Addr::from(u32::try_from(v4).unwrap()));
                prop_assert_eq!(cidr.contains(plain), expected, "{} in {}", plain, cidr);
            }
        }
    }

    #[test]
    fn near_misses_around_ipv6_blocks((len, net, c) in block().prop_flat_map(|(len, net)| (Just(len), Just(net), near(net)))) {
        let cidr = IpCidr::new(IpAddr::V6(Ipv6Addr::from(net)), u8::try_from(len).unwrap()).unwrap();
        let rule = if len >= 96 && net >> 32 == 0xffff { (Addr::V4(net & 0xffff_ffff), len - 96) } else { (Addr::V6(net), len) };
        prop_assert_eq!(cidr.contains(IpAddr::V6(Ipv6Addr::from(c))), reference_contains(rule.0, rule.1, classify(c)));
    }
}

// ---- Scopes -------------------------------------------------------------------------------

/// A naive reference for one grant: exact, `*`, or `prefix:*` as a string prefix test.
fn reference_grants(grant: &str, required: &str) -> bool {
    let (g, r) = (grant.to_ascii_lowercase(), required.to_ascii_lowercase());
    g == "*" || g == r || (g.ends_with(":*") && r.starts_with(&g[..g.len() - 1]))
}

/// Scopes from a tiny vocabulary so that grants and requirements collide often, in mixed case.
fn segment() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["a", "b", "Keys", "keys", "read", "READ", "x.y", "w-1", "u/v"]).prop_map(String::from)
}

fn plain_scope() -> impl Strategy<Value = String> {
    prop::collection::vec(segment(), 1..4).prop_map(|s| s.join(":"))
}

fn granted_scope() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => plain_scope(),
        2 => plain_scope().prop_map(|s| format!("{s}:*")),
        1 => Just("*".to_owned()),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn scope_matching_agrees_with_the_naive_reference(
        grants in prop::collection::vec(granted_scope(), 0..5),
        required in prop::collection::vec(plain_scope(), 0..4),
    ) {
        let granted = Scopes::from_scopes(&grants).unwrap();
        let req = RequiredScopes::from_scopes(required.iter().map(String::as_str)).unwrap();
        let each = |r: &String| grants.iter().any(|g| reference_grants(g, r));
        prop_assert_eq!(granted.permits(&req), required.iter().all(each));
        let missing: Vec<&str> = granted.missing(&req).collect();
        let mut expected: Vec<String> = required.iter().filter(|r| !each(r)).map(|r| r.to_ascii_lowercase()).collect();
        let mut seen = std::collections::HashSet::new();
        expected.retain(|r| seen.insert(r.clone()));
        prop_assert_eq!(missing, expected);
    }

    #[test]
    fn scope_lists_round_trip_through_every_form(
        grants in prop::collection::vec(granted_scope(), 0..8),
        seps in prop::collection::vec(prop::sample::select(vec![" ", ",", ", ", " ,\t", "\n"]), 8),
    ) {
        let scopes = Scopes::from_scopes(&grants).unwrap();
        // Normalised: sorted, deduplicated, lowercase.
        let texts: Vec<&str> = scopes.iter().map(Scope::as_str).collect();
        let mut sorted: Vec<String> = grants.iter().map(|g| g.to_ascii_lowercase()).collect();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(&texts, &sorted);

        // Display → parse.
        prop_assert_eq!(&Scopes::parse(&scopes.to_string()).unwrap(), &scopes);
        // Any mix of separators.
        let mut joined = String::new();
        for (g, s) in grants.iter().zip(seps.iter().cycle()) {
            joined.push_str(g);
            joined.push_str(s);
        }
        prop_assert_eq!(&Scopes::parse(&joined).unwrap(), &scopes);
        // A JSON array, and a JSON array encoded as a string, through serde.
        let array = serde_json::to_string(&grants).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Scopes>(&array).unwrap(), &scopes);
        prop_assert_eq!(&Scopes::parse(&array).unwrap(), &scopes);
        let in_string = serde_json::to_string(&array).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Scopes>(&in_string).unwrap(), &scopes);
        // Serialize → deserialize.
        let out = serde_json::to_string(&scopes).unwrap();
        prop_assert_eq!(&serde_json::from_str::<Scopes>(&out).unwrap(), &scopes);
    }

    #[test]
    fn required_scopes_round_trip(required in prop::collection::vec(plain_scope(), 0..4)) {
        let r = RequiredScopes::from_scopes(required.iter().map(String::as_str)).unwrap();
        prop_assert_eq!(RequiredScopes::new(r.as_str()).unwrap(), r);
        prop_assert!(r.len() <= required.len());
        prop_assert!(r.iter().all(|s| required.iter().any(|q| q.eq_ignore_ascii_case(s))));
    }

    #[test]
    fn parsing_arbitrary_text_never_panics_and_keeps_nothing_invalid(
        text in prop_oneof!["\\PC{0,80}", "[a-zA-Z:*, \\[\\]\"\\\\/.-]{0,40}"],
    ) {
        if let Ok(scopes) = Scopes::parse(&text) {
            for s in &scopes {
                prop_assert_eq!(&Scope::new(s.as_str()).unwrap(), s);
                prop_assert!(text.to_ascii_lowercase().contains(s.as_str()) || text.contains('\\'));
            }
        }
        let _ = RequiredScopes::new(&text);
    }

    #[test]
    fn model_patterns_agree_with_string_rules(
        base in prop::sample::select(vec!["gpt-4o", "gpt-4", "llama-3", "", "claude"]),
        star in any::<bool>(),
        free in any::<bool>(),
        model_base in prop::sample::select(vec!["gpt-4o", "gpt-4o-mini", "gpt-4", "llama-3", "llama-3.1", "claude", "x", ""]),
        model_suffix in prop::sample::select(vec!["", ":free", ":nitro", ":free:free", ":fre"]),
    ) {
        let pattern = format!("{base}{}{}", if star { "*" } else { "" }, if free { ":free" } else { "" });
        let model = format!("{model_base}{model_suffix}");
        let Ok(p) = ModelPattern::new(&pattern) else {
            prop_assert!(base.is_empty() && !star, "{} refused", pattern);
            return Ok(());
        };
        prop_assert_eq!(p.to_string(), pattern.clone());
        let name_matches = |name: &str| if star { name.starts_with(base) } else { name == base };
        let stripped = model.strip_suffix(":free");
        let expected = if free {
            stripped.is_some_and(name_matches)
        } else {
            name_matches(&model) || stripped.is_some_and(name_matches)
        };
        prop_assert_eq!(p.permits(&model), expected, "{} permits {}", pattern, model);
    }
}
