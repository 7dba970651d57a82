//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use keygate::manage::Usd;
use keygate::usage_log::LogConfig;

use crate::backends::{LimitsUrl, StoreUrl};
use crate::formats::{self, KeyFormats};
use crate::serve::Timeouts;

pub(crate) fn help() -> String {
    HELP.replace("{formats}", formats::HELP)
}

const HELP: &str = "\
An OpenAI-compatible gateway in front of a mock model, with the AI Stats management API,
backed by keygate.

Usage: gateway [OPTIONS]

Options:
  --addr ADDR             Listen on ADDR (default 127.0.0.1:8080; port 0 picks a free port)
  --admin-key-file PATH   Where the operator's management key is kept (default keygate-admin.key):
                          written on first start (mode 0600), reused on the next ones
  --pepper-file PATH      Where the pepper is kept (hex, mode 0600); created if absent.
                          Without it the pepper lives in memory and keys die with the process
{formats}  --wallet-usd AMOUNT     Starting balance of every team's wallet, in dollars (default 10.00)
  --store STORE           Where keys live (default memory): memory, FILE.db or sqlite:PATH
                          (SQLite, created if absent), or postgres://USER@HOST/DB (shared by
                          every gateway on it). A persistent store needs --pepper-file
  --limits LIMITS         Where limit state lives (default memory): memory, or redis://HOST
                          (shared by every gateway on it: each limit holds across all of them),
                          or redis://NODE,redis://NODE,... for a Redis Cluster
  --header-timeout SECS   How long a client may take to send a request's headers, or to start
                          its next request on a kept-alive connection (default 10)
  --body-timeout SECS     How long a client may take to send a whole request body (default 30)
  --shutdown-timeout SECS How long requests in flight may run on after Ctrl-C or SIGTERM
                          (default 10)
  --usage-log on|off      Keep a record of every request in the store's usage log (default on)
  --log-retention-days N  Delete usage log records older than N days (default 30; 0 keeps all)
  --log-client-ip         Keep the client's address in the usage log (default: not kept)
  -h, --help              Print this help
";

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    pub(crate) addr: SocketAddr,
    pub(crate) admin_key_file: PathBuf,
    pub(crate) pepper_file: Option<PathBuf>,
    pub(crate) formats: KeyFormats,
    pub(crate) wallet: Usd,
    pub(crate) store: StoreUrl,
    pub(crate) limits: LimitsUrl,
    pub(crate) timeouts: Timeouts,
    pub(crate) usage_log: LogSettings,
}

/// The usage log's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogSettings {
    pub(crate) enabled: bool,
    pub(crate) retention_days: u64,
    pub(crate) client_ip: bool,
}

impl LogSettings {
    pub(crate) fn config(self) -> LogConfig {
        let mut config = LogConfig::default();
        config.retention = (self.retention_days > 0).then(|| Duration::from_secs(self.retention_days * 86_400));
        config.client_ip = self.client_ip;
        config
    }
}

impl Args {
    /// `--store` for the welcome line, without any password in the URL.
    pub(crate) fn store_display(&self) -> String {
        match &self.store {
            StoreUrl::Memory => "in memory".to_owned(),
            StoreUrl::Sqlite(path) => format!("SQLite file {path}"),
            StoreUrl::Postgres(url) => format!("PostgreSQL {}", without_password(url)),
        }
    }

    /// `--limits` for the welcome line, without any password in the URL.
    pub(crate) fn limits_display(&self) -> String {
        match &self.limits {
            LimitsUrl::Memory => "in memory".to_owned(),
            LimitsUrl::Redis(url) => format!("Redis {}", without_password(url)),
        }
    }
}

/// `scheme://user:password@host/...` as `scheme://user@host/...`.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    let (authority, path) = rest.split_once('/').map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) => format!("{}@{host}", user.split_once(':').map_or(user, |(u, _)| u)),
        None => authority.to_owned(),
    };
    path.map_or_else(|| format!("{scheme}://{authority}"), |p| format!("{scheme}://{authority}/{p}"))
}

impl Default for Args {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_key_file: PathBuf::from("keygate-admin.key"),
            pepper_file: None,
            formats: KeyFormats::default(),
            wallet: Usd::from_micros(10_000_000).unwrap_or(Usd::MAX),
            store: StoreUrl::Memory,
            limits: LimitsUrl::Memory,
            timeouts: Timeouts::default(),
            usage_log: LogSettings { enabled: true, retention_days: 30, client_ip: false },
        }
    }
}

/// Run with these settings, or print the help.
#[derive(Debug)]
pub(crate) enum Command {
    Run(Box<Args>),
    Help,
}

/// Parses the arguments (without the program name).
pub(crate) fn parse(mut args: impl Iterator<Item = String>) -> Result<Command, String> {
    let mut parsed = Args::default();
    while let Some(flag) = args.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match flag.split_once('=') {
            Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
            None => (flag, None),
        };
        let mut value = || inline.clone().or_else(|| args.next()).ok_or(format!("{flag} needs a value"));
        if let Some(taken) = parsed.formats.take(&flag, &mut value) {
            taken?;
            continue;
        }
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--addr" => parsed.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--admin-key-file" => parsed.admin_key_file = value()?.into(),
            "--pepper-file" => parsed.pepper_file = Some(value()?.into()),
            "--wallet-usd" => parsed.wallet = value()?.parse().map_err(|e| format!("--wallet-usd: {e}"))?,
            "--store" => parsed.store = StoreUrl::parse(&value()?)?,
            "--limits" => parsed.limits = LimitsUrl::parse(&value()?)?,
            "--header-timeout" => parsed.timeouts.header = seconds(&flag, &value()?)?,
            "--body-timeout" => parsed.timeouts.body = seconds(&flag, &value()?)?,
            "--shutdown-timeout" => parsed.timeouts.shutdown = seconds(&flag, &value()?)?,
            "--usage-log" => {
                parsed.usage_log.enabled = match value()?.as_str() {
                    "on" => true,
                    "off" => false,
                    other => return Err(format!("--usage-log: expected on or off, got {other:?}")),
                }
            }
            "--log-retention-days" => {
                let days = value()?;
                parsed.usage_log.retention_days = days
                    .parse()
                    .map_err(|_| format!("--log-retention-days: expected a number of days, got {days:?}"))?;
            }
            "--log-client-ip" => parsed.usage_log.client_ip = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if parsed.store.is_persistent() && parsed.pepper_file.is_none() {
        return Err("--store keeps keys across restarts, so it needs --pepper-file: with a pepper that \
                    lives in memory, no stored key would verify after a restart"
            .to_owned());
    }
    Ok(Command::Run(Box::new(parsed)))
}

/// A positive number of seconds, such as `10` or `0.5`.
fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| *s > 0.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or(format!("{flag}: expected a positive number of seconds, got {value:?}"))
}
