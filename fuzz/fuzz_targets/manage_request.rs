//! The management handler on arbitrary requests from a team's management key: it never panics,
//! always answers a JSON object with a documented status, never touches another team's key, and
//! never shows a stored key's token; only a create or rotate response holds a (new) token.
#![no_main]

use std::sync::OnceLock;

use keygate::format::SelectorFormat;
use keygate::manage::ManageRequest;
use keygate::secret::{PepperId, Peppers};
use keygate::{Caller, KeyKind, KeyRecord, KeyStore, Manager, MemoryStore, Pepper, Scopes, Timestamp, Verifier};
use libfuzzer_sys::fuzz_target;

const NOW: Timestamp = Timestamp::from_unix_secs(1_800_000_000);

struct World {
    verifier: Verifier,
    /// (record, token) of a key of the caller's team and of another team.
    own: (KeyRecord, String),
    other: (KeyRecord, String),
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let format = SelectorFormat::new("aistats").unwrap().with_kinds(&["sk", "mk"]).unwrap();
        let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &[1; 32]).unwrap()));
        let key = |team: &str| {
            let (key, mut record) = verifier.issue(&mut keygate::OsRng, KeyKind::STANDARD, NOW).unwrap();
            record.team_id = Some(team.into());
            record.name = "seeded".into();
            (record, key.token().expose_secret().to_owned())
        };
        let (own, other) = (key("team-a"), key("team-b"));
        World { verifier, own, other }
    })
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let [method, path, rest @ ..] = data else { return };
    let method = ["GET", "POST", "PATCH", "DELETE", "PUT"][usize::from(*method) % 5];
    let (query, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let Ok(query) = core::str::from_utf8(query) else { return };
    let (own, other) = (w.own.0.id.as_str(), w.other.0.id.as_str());
    let path = match path % 6 {
        0 => "/v1/management/keys".to_owned(),
        1 => format!("/v1/management/keys/{own}"),
        2 => format!("/v1/management/keys/{other}"),
        3 => format!("/v1/management/keys/{own}/rotate"),
        4 => format!("/v1/management/keys/{other}/rotate"),
        _ => format!("/v1/management/keys/{query}"),
    };

    let store = MemoryStore::new();
    store.insert(w.own.0.clone()).unwrap();
    store.insert(w.other.0.clone()).unwrap();
    let manager = Manager::new(store, w.verifier.clone());
    let caller = Caller::new(KeyKind::MANAGEMENT, Some("team-a".into()), Scopes::parse("read write").unwrap());
    let request = ManageRequest::new(method, &path).with_query(query).with_body(body);
    let response = manager.handle(&caller, &request, NOW, &mut keygate::OsRng);

    assert!([200, 201, 400, 403, 404, 405, 409, 413].contains(&response.status()), "{}", response.status());
    let text = response.body();
    assert!(text.starts_with('{') && text.ends_with('}'), "{text}");
    assert_eq!(response.contains_secret(), response.status() == 201);
    // A stored key's secret never shows, unless the request carried it itself (a name may be any
    // text, and the fuzzer learns the secrets from these very comparisons). The whole secret is
    // compared: base64url has `_` in its alphabet, so the text after the token's last `_` can be
    // a fragment of a few characters that a response holds by chance.
    for (_, token) in [&w.own, &w.other] {
        let secret = w.verifier.parse(token).unwrap().secret();
        let holds = |bytes: &[u8]| bytes.windows(secret.len()).any(|window| window == secret);
        let echoed = holds(query.as_bytes()) || holds(body);
        assert!(echoed || !holds(text.as_bytes()), "a stored key's secret in {text}");
    }
    let untouched = manager.store().get(&w.other.0.id).unwrap();
    assert_eq!(untouched.as_deref(), Some(&w.other.0), "another team's key changed");
});
