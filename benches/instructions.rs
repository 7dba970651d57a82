//! Instruction counts of the hot path, from callgrind: figures that do not move with the
//! machine's load, to back the timed ratios of `benches/authenticate.rs`.
//!
//! `cargo bench --bench instructions` runs itself once per case under
//! `valgrind --tool=callgrind`, collecting only inside the case's measured loop
//! (`--toggle-collect`), and prints each case's instructions per iteration and its ratio to the
//! baseline, one `Hmac<Sha256>` from a cloned keyed state over the same secret. Counts repeat
//! run to run up to the store's randomly seeded hasher (a probe may meet one more entry), so
//! they are averaged over many iterations. It needs valgrind (`apt-get install valgrind`).
//!
//! Valgrind's CPU has no SHA extensions, so the HMAC runs in software here (about five times the
//! instructions of the hardware path): the ratios to the HMAC are smaller than the timed ones,
//! and the last column, the instructions past one HMAC, says more about keygate's own work.
//!
//! The budgets of the performance section of the README are checked here on instructions, where
//! a check cannot flake: `authenticate` at most 1.15× the floor and the gate with its event sink
//! at most 2.0× the floor. A budget passed fails the run.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::process::Command;

use hmac::{KeyInit, Mac};
use keygate::events::UsageStats;
use keygate::format::SelectorFormat;
use keygate::limit::Limiter;
use keygate::secret::{PepperId, Peppers};
use keygate::verify::Lookup;
use keygate::{
    Gate, KeyId, KeyKind, KeyRecord, KeyStore, MemoryLimitStore, MemoryStore, ModelAllowlist, Pepper, RequiredScopes,
    Requirements, Scopes, Timestamp, Verifier,
};
use rand_chacha::ChaCha20Rng;
use rand_chacha::rand_core::SeedableRng;

const KEYS: usize = 10_000;
const ITERATIONS: u64 = 20_000;
const PEPPER: [u8; 32] = [0x5e; 32];
const BASELINE: &str = "hmac_sha256_cloned_state";
const FLOOR: &str = "floor_parse_unsynchronised_map_verify";

/// The cases, in the order printed.
const CASES: &[&str] = &[
    BASELINE,
    "parse",
    "verify_hit",
    "verify_wrong_secret",
    "authenticate_memory_store",
    FLOOR,
    "gate_check_memory_store",
    "gate_check_with_events_memory_store",
];

/// Budgets checked on instruction counts: (case, reference, most allowed).
const BUDGETS: &[(&str, &str, f64)] =
    &[("authenticate_memory_store", FLOOR, 1.15), ("gate_check_with_events_memory_store", FLOOR, 2.0)];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--case") {
        run_case(&args[i + 1]);
        return;
    }
    let filter = args.iter().skip(1).find(|a| !a.starts_with('-')).cloned();
    if args.iter().any(|a| a == "--list") {
        CASES.iter().for_each(|c| println!("{c}: benchmark"));
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut counts = Vec::new();
    for case in CASES {
        if filter.as_deref().is_some_and(|f| !case.contains(f)) && *case != BASELINE && *case != FLOOR {
            continue;
        }
        let output = Command::new("valgrind")
            .args(["--tool=callgrind", "--callgrind-out-file=/dev/null", "--toggle-collect=*measured*"])
            .arg(&exe)
            .args(["--case", case])
            .output()
            .expect("run valgrind (apt-get install valgrind)");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{case} under callgrind failed:\n{stderr}");
        let collected = stderr
            .lines()
            .find_map(|l| l.split_once("Collected :").map(|(_, n)| n.trim().parse::<u64>().unwrap()))
            .unwrap_or_else(|| panic!("no instruction count for {case}:\n{stderr}"));
        counts.push((*case, collected as f64 / ITERATIONS as f64));
    }
    let of = |name: &str| counts.iter().find(|(c, _)| *c == name).map(|(_, n)| *n);
    let baseline = of(BASELINE).unwrap();
    println!("instructions per iteration (callgrind, {ITERATIONS} iterations, {KEYS} keys)");
    println!("{:<40} {:>8} {:>8} {:>8} {:>12}", "case", "Ir", "/ hmac", "/ floor", "Ir past hmac");
    let floor = of(FLOOR).unwrap();
    for (case, n) in &counts {
        println!("{case:<40} {n:>8.0} {:>8.3} {:>8.3} {:>12.0}", n / baseline, n / floor, n - baseline);
    }
    let mut failed = false;
    for (case, reference, most) in BUDGETS {
        let (Some(n), Some(r)) = (of(case), of(reference)) else { continue };
        let ratio = n / r;
        let verdict = if ratio <= *most { "met" } else { "NOT MET" };
        failed |= ratio > *most;
        println!("budget: {case} / {reference} = {ratio:.3} (at most {most}): {verdict}");
    }
    assert!(!failed, "an instruction budget was passed");
}

/// The fixture every case shares: a store of [`KEYS`] keys, the measured key with a policy and
/// one request limit, and the requests.
struct Fixture {
    verifier: Verifier,
    store: MemoryStore,
    unsynchronised: hashbrown::HashMap<KeyId, KeyRecord, foldhash::quality::RandomState>,
    token: String,
    wrong: String,
    now: Timestamp,
}

fn fixture() -> Fixture {
    let format = SelectorFormat::new("aistats").unwrap();
    let verifier = Verifier::new(format, Peppers::new(Pepper::new(PepperId(1), &PEPPER).unwrap()));
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let now = Timestamp::from_unix_secs(1_800_000_000);
    let store = MemoryStore::new();
    let mut unsynchronised = hashbrown::HashMap::with_capacity_and_hasher(KEYS, Default::default());
    let mut token = String::new();
    for i in 0..KEYS {
        let (key, mut record) = verifier.issue(&mut rng, KeyKind::STANDARD, now).unwrap();
        record.name = format!("key-{i}");
        if i == KEYS / 2 {
            token = key.token().expose_secret().to_owned();
            record.scopes = Scopes::parse("chat:* models:read files:write").unwrap();
            record.allowed_models = ModelAllowlist::new(["gpt-4o", "gpt-4o-mini", "claude-3*"]).unwrap();
            record.allowed_ips = vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()];
            record.rate_limit.requests_per_minute = Some(u32::MAX);
        }
        unsynchronised.insert(record.id, record.clone());
        store.insert(record).unwrap();
    }
    let wrong = format!("{}{}", &token[..token.len() - 2], if token.ends_with("AA") { "EA" } else { "AA" });
    Fixture { verifier, store, unsynchronised, token, wrong, now }
}

/// Runs `f` [`ITERATIONS`] times; callgrind collects only in here (the name matches
/// `--toggle-collect=*measured*`).
#[inline(never)]
fn measured(mut f: impl FnMut()) {
    for _ in 0..ITERATIONS {
        f();
    }
}

fn run_case(case: &str) {
    let f = fixture();
    let (verifier, store, now) = (&f.verifier, &f.store, f.now);
    let parsed = verifier.parse(&f.token).unwrap();
    let lookup = verifier.lookup(&parsed);
    let record = store.lookup(&lookup).unwrap().unwrap();
    let wrong = verifier.parse(&f.wrong).unwrap();
    let required: RequiredScopes = "chat:write".parse().unwrap();
    let request = Requirements::new()
        .with_scopes(required)
        .with_model("claude-3-5-sonnet")
        .with_client_ip("::ffff:10.1.2.3".parse().unwrap());
    let header = format!("Bearer {}", f.token);
    let limits = MemoryLimitStore::new();
    let stats = UsageStats::new();
    match case {
        BASELINE => {
            let secret = parsed.secret().to_vec();
            let mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&PEPPER).unwrap();
            measured(|| {
                let mut m = mac.clone();
                m.update(black_box(&secret));
                black_box(m.finalize().into_bytes());
            });
        }
        "parse" => measured(|| assert!(verifier.parse(black_box(&f.token)).is_ok())),
        "verify_hit" => {
            measured(|| assert!(verifier.verify(black_box(&parsed), &lookup, Some(&*record), now).is_ok()));
        }
        "verify_wrong_secret" => measured(|| {
            let found = store.lookup(black_box(&lookup)).unwrap();
            assert!(verifier.verify(black_box(&wrong), &lookup, found, now).is_err());
        }),
        "authenticate_memory_store" => {
            measured(|| assert!(verifier.authenticate(store, black_box(&f.token), now).is_ok()));
        }
        FLOOR => measured(|| {
            let key = verifier.parse(black_box(&f.token)).unwrap();
            let lookup = verifier.lookup(&key);
            let Lookup::Kid(id) = &lookup else { unreachable!("a selector key") };
            assert!(verifier.verify(&key, &lookup, f.unsynchronised.get(id), now).is_ok());
        }),
        "gate_check_memory_store" => {
            let gate = Gate::new(verifier.clone(), store, Limiter::new(&limits));
            measured(|| {
                let pass = gate.check(Some(black_box(header.as_bytes())), black_box(&request), now);
                assert!(pass.is_ok());
            });
        }
        "gate_check_with_events_memory_store" => {
            let gate = Gate::new(verifier.clone(), store, Limiter::new(&limits)).with_events(&stats);
            measured(|| {
                let pass = gate.check(Some(black_box(header.as_bytes())), black_box(&request), now);
                assert!(pass.is_ok());
            });
        }
        other => panic!("no case {other}"),
    }
}
