//! The command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use keygate::Usd;

pub(crate) const HELP: &str = "\
An OpenAI-compatible gateway in front of a mock model, with the AI Stats management API,
backed by keygate.

Usage: gateway [OPTIONS]

Options:
  --addr ADDR             Listen on ADDR (default 127.0.0.1:8080; port 0 picks a free port)
  --admin-key-file PATH   Where the operator's management key is kept (default keygate-admin.key):
                          written on first start (mode 0600), reused on the next ones
  --pepper-file PATH      Where the pepper is kept (hex, mode 0600); created if absent.
                          Without it the pepper lives in memory and keys die with the process
  --prefix PREFIX         Key prefix (default aistats: keys read aistats_v1_sk_<kid>_<secret>)
  --wallet-usd AMOUNT     Starting balance of every team's wallet, in dollars (default 10.00)
  --store URL             Reserved: persistent stores come in a later version
  -h, --help              Print this help
";

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    pub(crate) addr: SocketAddr,
    pub(crate) admin_key_file: PathBuf,
    pub(crate) pepper_file: Option<PathBuf>,
    pub(crate) prefix: String,
    pub(crate) wallet: Usd,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_key_file: PathBuf::from("keygate-admin.key"),
            pepper_file: None,
            prefix: "aistats".to_owned(),
            wallet: Usd::from_micros(10_000_000).unwrap_or(Usd::MAX),
        }
    }
}

/// Run with these settings, or print the help.
#[derive(Debug)]
pub(crate) enum Command {
    Run(Args),
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
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--addr" => parsed.addr = value()?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--admin-key-file" => parsed.admin_key_file = value()?.into(),
            "--pepper-file" => parsed.pepper_file = Some(value()?.into()),
            "--prefix" => parsed.prefix = value()?,
            "--wallet-usd" => parsed.wallet = value()?.parse().map_err(|e| format!("--wallet-usd: {e}"))?,
            "--store" => {
                return Err("--store is not available yet: persistent key stores come with the storage \
                            backends; this version keeps keys in memory"
                    .to_owned());
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Command::Run(parsed))
}
