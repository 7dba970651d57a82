//! Imports existing keys into the reference gateway's store (SQLite or PostgreSQL), from a CSV
//! or JSON Lines file, through the library's import (`Manager::import_async`): each key by its
//! plaintext or its SHA-256, configured as the management API's create configures a key.
//!
//! ```sh
//! cargo run --example import --features full -- --store postgres://postgres@127.0.0.1/keys \
//!     --pepper-file keygate.pepper keys.jsonl
//! ```
//!
//! The file is read in batches of up to 1000 keys, each imported all or nothing in one
//! transaction: a batch with a refused row imports none of its rows, and every refused row is
//! reported on its own line (line number, field, code, message; never the key). `--dry-run`
//! validates everything (the file, the rules, duplicates in the file and in the store) and
//! writes nothing. The exit code is 0 when every row was imported (or would be), 1 when some were
//! refused, 2 for a usage or file error, 3 when the store failed.
#![allow(clippy::std_instead_of_core, clippy::std_instead_of_alloc, clippy::unwrap_used)]

#[path = "gateway/formats.rs"]
mod formats;
#[path = "gateway/setup.rs"]
#[allow(dead_code)]
mod setup;

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use keygate::manage::{ImportKey, ImportedSecret, MAX_IMPORT_BATCH, ManageError, RejectedEntry, plan_import};
use keygate::store::SqlConfig;
use keygate::verify::Lookup;
use keygate::{AsyncKeyStore, Caller, Manager, PostgresStore, SqliteStore, Timestamp};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::formats::KeyFormats;

const HELP: &str = "\
Imports existing keys into the gateway's store, from a CSV or JSON Lines file.

Usage: import [OPTIONS] --store STORE --pepper-file PATH FILE

Each row is one key: its plaintext (`key`) or the SHA-256 of its plaintext (`sha256`, 64 hex
digits, with an optional display `prefix`), and the fields of the management API's create:
name (required), scopes, status, team_id, expires_at, allowed_models, allowed_providers,
allowed_ips, rate_limit, spend_cap, credits, metadata. A JSON Lines row is one such JSON
object; a CSV file has a header row naming its columns, with the nested fields as
rate_limit.requests_per_minute, rate_limit.tokens_per_minute, rate_limit.concurrency,
spend_cap.amount_usd, spend_cap.period, credits.amount, credits.refill, lists separated by
spaces, and metadata as JSON text.

Options:
  --store STORE           sqlite:PATH, PATH.db or postgres://USER@HOST/DB (required)
  --pepper-file PATH      The gateway's pepper file (required; it must exist)
  --format FORMAT         csv or jsonl (default: by the file's extension; .csv is CSV)
  --batch N               Keys per batch, each imported all or nothing (1 to 1000; default 1000)
  --dry-run               Check every row, in the file and against the store; write nothing
{formats}  -h, --help              Print this help

Exit code: 0 every row imported, 1 some rows refused, 2 usage or file error, 3 store failure.
";

/// The longest row read; a longer one is refused without being read further.
const MAX_LINE: usize = 16 * 1024;

/// The command line.
struct Args {
    store: String,
    pepper_file: PathBuf,
    file: PathBuf,
    csv: bool,
    batch: usize,
    dry_run: bool,
    formats: KeyFormats,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let (mut store, mut pepper_file, mut file, mut format) = (None, None, None, None);
    let (mut batch, mut dry_run, mut formats) = (MAX_IMPORT_BATCH, false, KeyFormats::default());
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_owned(), Some(value.to_owned())),
            _ => (arg, None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
        if let Some(taken) = formats.take(&flag, &mut value) {
            taken?;
            continue;
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--store" => store = Some(value()?),
            "--pepper-file" => pepper_file = Some(PathBuf::from(value()?)),
            "--format" => format = Some(value()?),
            "--batch" => {
                batch = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_IMPORT_BATCH).contains(n))
                    .ok_or(format!("--batch: expected 1 to {MAX_IMPORT_BATCH}"))?;
            }
            "--dry-run" => dry_run = true,
            other if other.starts_with('-') => return Err(format!("unknown argument {other}")),
            _ if file.is_none() => file = Some(PathBuf::from(flag)),
            _ => return Err("one FILE only".to_owned()),
        }
    }
    let file = file.ok_or("FILE is missing")?;
    let csv = match format.as_deref() {
        Some("csv") => true,
        Some("jsonl") => false,
        Some(other) => return Err(format!("--format: {other:?} is not csv or jsonl")),
        None => file.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")),
    };
    Ok(Some(Args {
        store: store.ok_or("--store is missing")?,
        pepper_file: pepper_file.ok_or("--pepper-file is missing")?,
        file,
        csv,
        batch,
        dry_run,
        formats,
    }))
}

#[tokio::main]
async fn main() -> ExitCode {
    let help = HELP.replace("{formats}", formats::HELP);
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("import: {e}\n\n{help}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(code) => code,
        Err(Failure(code, message)) => {
            eprintln!("import: {message}");
            ExitCode::from(code)
        }
    }
}

/// Why the import stopped: an exit code and what to say.
struct Failure(u8, String);

fn usage(e: impl std::fmt::Display) -> Failure {
    Failure(2, e.to_string())
}

fn store_failed(e: impl std::fmt::Display) -> Failure {
    Failure(3, format!("the store failed: {e}"))
}

async fn run(args: &Args) -> Result<ExitCode, Failure> {
    if !args.pepper_file.exists() {
        return Err(usage(format!("{}: no such pepper file", args.pepper_file.display())));
    }
    let pepper = setup::pepper(Some(&args.pepper_file)).map_err(usage)?;
    let verifier = args.formats.verifier(pepper).map_err(usage)?;
    println!("key formats: {}", args.formats.describe());
    let mut config = SqlConfig::default();
    config.timeout = Duration::from_secs(60);
    let store = &args.store;
    if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        let store = PostgresStore::connect(store, config).await.map_err(store_failed)?;
        import(args, Manager::new(store, verifier)).await
    } else if let Some(path) =
        store.strip_prefix("sqlite:").or_else(|| store.ends_with(".db").then_some(store.as_str()))
    {
        let store = SqliteStore::open(path.trim_start_matches("//"), config).await.map_err(store_failed)?;
        import(args, Manager::new(store, verifier)).await
    } else {
        Err(usage(format!("--store: {store:?} is not sqlite:PATH, PATH.db or a postgres:// URL")))
    }
}

/// What the import has done so far.
#[derive(Default)]
struct Tally {
    rows: usize,
    imported: usize,
    refused_rows: usize,
    /// The rows of the refused batches, refused or not.
    unimported_rows: usize,
    refused_batches: usize,
    by_sha256: usize,
}

async fn import<S: AsyncKeyStore>(args: &Args, manager: Manager<S>) -> Result<ExitCode, Failure> {
    let file = File::open(&args.file).map_err(|e| usage(format!("{}: {e}", args.file.display())))?;
    let size = file.metadata().map_or(0, |m| m.len());
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bar:40} {percent:>3}% {msg} ({elapsed}, about {eta} left)")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut rows = Rows::new(BufReader::new(file), args.csv).map_err(usage)?;
    let started = Instant::now();
    let mut tally = Tally::default();
    let mut seen = HashSet::new();
    loop {
        let batch = rows.next_batch(args.batch);
        if batch.is_empty() {
            break;
        }
        tally.rows += batch.len();
        let lines: Vec<usize> = batch.iter().map(|(line, _)| *line).collect();
        let (mut unreadable, mut readable) = (Vec::new(), Vec::new());
        let mut entries = Vec::with_capacity(batch.len());
        for (index, (_, row)) in batch.into_iter().enumerate() {
            match row {
                Ok(entry) => {
                    readable.push(index);
                    entries.push(entry);
                }
                Err(error) => unreadable.push(RejectedEntry::new(index, error)),
            }
        }
        let outcome = if !unreadable.is_empty() {
            // The batch imports nothing; the rows that did read are still checked (the rules,
            // then duplicates in the store), so that every fault of the batch is reported at once.
            if let Err(ManageError::ImportRejected(more)) = check(&manager, &entries, &mut seen.clone()).await {
                unreadable.extend(more.into_iter().map(|r| {
                    let error = match r.error {
                        ManageError::DuplicateKey { field, earlier } => {
                            ManageError::DuplicateKey { field, earlier: earlier.map(|i| readable[i]) }
                        }
                        e => e,
                    };
                    RejectedEntry::new(readable[r.index], error)
                }));
                unreadable.sort_by_key(|r| r.index);
            }
            Err(ManageError::ImportRejected(unreadable))
        } else if args.dry_run {
            check(&manager, &entries, &mut seen).await
        } else {
            manager.import_async(&Caller::operator(), &entries, Timestamp::now()).await.map(|r| r.len())
        };
        match outcome {
            Ok(n) => {
                tally.imported += n;
                tally.by_sha256 += entries.iter().filter(|e| matches!(e.secret, ImportedSecret::Sha256(_))).count();
            }
            Err(ManageError::ImportRejected(rejected)) => {
                bar.suspend(|| report(&lines, &rejected));
                tally.refused_rows += rejected.len();
                tally.unimported_rows += lines.len();
                tally.refused_batches += 1;
            }
            Err(e @ (ManageError::Store(_) | ManageError::Conflict)) => {
                bar.finish_and_clear();
                return Err(store_failed(e));
            }
            Err(e) => {
                bar.suspend(|| eprintln!("lines {}-{}: {e}", lines[0], lines[lines.len() - 1]));
                tally.refused_rows += lines.len();
                tally.unimported_rows += lines.len();
                tally.refused_batches += 1;
            }
        }
        bar.set_position(rows.consumed);
        bar.set_message(format!("{} keys", tally.imported));
    }
    bar.finish_and_clear();
    summary(args, &tally, started.elapsed());
    Ok(if tally.refused_rows == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// A dry run's checks of one batch: the import's rules, then duplicates across the file and
/// against the store (by id, and for a plaintext opaque key by its digest).
async fn check<S: AsyncKeyStore>(
    manager: &Manager<S>,
    entries: &[ImportKey],
    seen: &mut HashSet<keygate::KeyId>,
) -> Result<usize, ManageError> {
    let records = plan_import(&Caller::operator(), manager.config(), manager.verifier(), entries, Timestamp::now())?;
    let mut rejected = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let by_digest = Lookup::Digest(record.digest);
        let stored = manager.store().get(&record.id).await?.is_some()
            || (record.shape == keygate::record::KeyShape::Opaque
                && manager.store().lookup(&by_digest).await?.is_some());
        if stored || !seen.insert(record.id) {
            let field = entries[index].field();
            rejected.push(RejectedEntry::new(index, ManageError::DuplicateKey { field, earlier: None }));
        }
    }
    if rejected.is_empty() { Ok(records.len()) } else { Err(ManageError::ImportRejected(rejected)) }
}

/// One line per refused row: its line in the file, the field, the code and the message.
fn report(lines: &[usize], rejected: &[RejectedEntry]) {
    for entry in rejected {
        let e = &entry.error;
        let line = lines.get(entry.index).copied().unwrap_or_default();
        // A duplicate within a batch names the earlier entry by its line.
        let message = match e {
            ManageError::DuplicateKey { earlier: Some(i), .. } => {
                format!("the same key as line {}", lines.get(*i).copied().unwrap_or_default())
            }
            ManageError::DuplicateKey { earlier: None, .. } => {
                "the key is stored already (or is in the file twice)".into()
            }
            ManageError::Malformed(m) => m.clone(),
            e => e.to_string(),
        };
        eprintln!("line {line}: {}: {}: {message}", e.param().unwrap_or("-"), e.code());
    }
    if let (Some(first), Some(last)) = (lines.first(), lines.last()) {
        eprintln!("lines {first}-{last}: nothing of this batch was imported");
    }
}

fn summary(args: &Args, tally: &Tally, took: Duration) {
    let secs = took.as_secs_f64().max(1e-3);
    #[allow(clippy::cast_precision_loss)]
    let rate = tally.imported as f64 / secs;
    let (verb, note) = if args.dry_run { ("would import", " (dry run: nothing written)") } else { ("imported", "") };
    println!(
        "{verb} {} of {} keys ({} by SHA-256) in {secs:.2} s, {rate:.0} keys/s{note}",
        tally.imported, tally.rows, tally.by_sha256
    );
    if tally.refused_rows > 0 {
        println!(
            "refused: {} rows; their {} batches ({} rows) imported nothing",
            tally.refused_rows, tally.refused_batches, tally.unimported_rows
        );
    }
}

/// The rows of the file, each read into an import entry (or the reason it cannot be), with its
/// line number.
struct Rows<R> {
    input: R,
    /// The CSV header's columns; `None` for JSON Lines.
    columns: Option<Vec<String>>,
    line: usize,
    /// Bytes read so far, for the progress bar.
    consumed: u64,
    done: bool,
}

type Row = (usize, Result<ImportKey, ManageError>);

impl<R: BufRead> Rows<R> {
    fn new(input: R, csv: bool) -> Result<Self, String> {
        let mut rows = Self { input, columns: None, line: 0, consumed: 0, done: false };
        if csv {
            let header = rows.next_line().ok_or("the CSV file is empty: it needs a header row")?;
            let header = header.map_err(|e| format!("line 1: {e}"))?;
            let columns = csv_fields(&header).ok_or("the CSV header row does not parse")?;
            if let Some(unknown) = columns.iter().find(|c| !COLUMNS.contains(&c.as_str())) {
                let shown = if unknown.len() <= 40 { unknown.as_str() } else { "(a long name)" };
                return Err(format!("unknown CSV column {shown:?}; the columns are {}", COLUMNS.join(", ")));
            }
            rows.columns = Some(columns);
        }
        Ok(rows)
    }

    /// The next line without its ending (a line over [`MAX_LINE`] is skipped and refused).
    fn next_line(&mut self) -> Option<Result<Zeroizing<String>, ManageError>> {
        loop {
            if self.done {
                return None;
            }
            let mut buf = Zeroizing::new(Vec::new());
            let read = (&mut self.input).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf);
            let n = match read {
                Ok(0) | Err(_) => {
                    self.done = true;
                    return None;
                }
                Ok(n) => n,
            };
            self.consumed += n as u64;
            self.line += 1;
            if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
                // Skip the rest of the line, unread.
                let mut rest = Zeroizing::new(Vec::new());
                self.consumed += self.input.read_until(b'\n', &mut rest).unwrap_or(0) as u64;
                return Some(Err(ManageError::Malformed(format!("the line is longer than {MAX_LINE} bytes"))));
            }
            while buf.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                buf.pop();
            }
            if buf.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let text = String::from_utf8(std::mem::take(&mut *buf))
                .map(Zeroizing::new)
                .map_err(|_| ManageError::Malformed("the line is not UTF-8".into()));
            return Some(text);
        }
    }

    /// Up to `n` rows.
    fn next_batch(&mut self, n: usize) -> Vec<Row> {
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let Some(line) = self.next_line() else { break };
            let entry = line.and_then(|text| match &self.columns {
                None => ImportKey::from_json(text.as_bytes()),
                Some(columns) => csv_entry(columns, &text).and_then(|json| ImportKey::from_json(json.as_bytes())),
            });
            batch.push((self.line, entry));
        }
        batch
    }
}

/// The CSV columns, as the management API names the fields (nested ones dotted).
const COLUMNS: &[&str] = &[
    "key",
    "sha256",
    "prefix",
    "name",
    "scopes",
    "status",
    "team_id",
    "expires_at",
    "allowed_models",
    "allowed_providers",
    "allowed_ips",
    "rate_limit.requests_per_minute",
    "rate_limit.tokens_per_minute",
    "rate_limit.concurrency",
    "spend_cap.amount_usd",
    "spend_cap.period",
    "credits.amount",
    "credits.refill",
    "metadata",
];

/// The fields of one CSV line (RFC 4180: quoted fields, `""` for a quote; one line a row).
fn csv_fields(line: &str) -> Option<Vec<String>> {
    let mut reader = csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes());
    let record = reader.records().next()?.ok()?;
    Some(record.iter().map(str::to_owned).collect())
}

/// A CSV row as the JSON of an import entry: empty cells left out, dotted columns nested,
/// lists split at spaces, counts as numbers, metadata as JSON.
fn csv_entry(columns: &[String], line: &str) -> Result<Zeroizing<String>, ManageError> {
    let cells = csv_fields(line).ok_or_else(|| ManageError::Malformed("the CSV row does not parse".into()))?;
    if cells.len() != columns.len() {
        let message = format!("the CSV row has {} fields, the header {}", cells.len(), columns.len());
        return Err(ManageError::Malformed(message));
    }
    let mut entry = Map::new();
    for (column, cell) in columns.iter().zip(cells).filter(|(_, c)| !c.is_empty()) {
        let value = match column.as_str() {
            "allowed_providers" | "allowed_ips" => Value::from(cell.split_whitespace().collect::<Vec<_>>()),
            "rate_limit.requests_per_minute"
            | "rate_limit.tokens_per_minute"
            | "rate_limit.concurrency"
            | "credits.amount" => cell.parse::<u64>().map_or(Value::String(cell), Value::from),
            "metadata" => serde_json::from_str(&cell).unwrap_or(Value::String(cell)),
            _ => Value::String(cell),
        };
        match column.split_once('.') {
            Some((outer, inner)) => {
                let nested = entry.entry(outer).or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(nested) = nested {
                    nested.insert(inner.to_owned(), value);
                }
            }
            None => {
                entry.insert(column.clone(), value);
            }
        }
    }
    let json = Zeroizing::new(Value::Object(entry).to_string());
    Ok(json)
}
