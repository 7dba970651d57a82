//! Team wallets: a prepaid balance per team, in micro-dollars.
//!
//! Every team's wallet starts at the same balance (`--wallet-usd`); keys without a team share
//! the operator's wallet. A paid model needs a positive balance before the request runs; the
//! actual cost is debited after the reply, so the last request may take a wallet below zero
//! (it is then refused until topped up, as prepaid APIs do). `:free` models cost nothing.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use keygate::Usd;

/// The wallets, created on first use with the starting balance.
#[derive(Debug)]
pub(crate) struct Wallets {
    start: i64,
    balances: Mutex<HashMap<Option<String>, i64>>,
}

impl Wallets {
    pub(crate) fn new(start: Usd) -> Self {
        // `Usd` is at most a billion dollars: its micro-dollars fit an i64.
        let start = i64::try_from(start.micros()).unwrap_or(i64::MAX);
        Self { start, balances: Mutex::new(HashMap::new()) }
    }

    /// The balance of `team`'s wallet (`None`: the operator's) in micro-dollars.
    pub(crate) fn balance(&self, team: Option<&str>) -> i64 {
        let balances = self.balances.lock().unwrap_or_else(PoisonError::into_inner);
        balances.get(&team.map(str::to_owned)).copied().unwrap_or(self.start)
    }

    /// Takes `micros` from `team`'s wallet.
    pub(crate) fn debit(&self, team: Option<&str>, micros: u64) {
        if micros == 0 {
            return;
        }
        let mut balances = self.balances.lock().unwrap_or_else(PoisonError::into_inner);
        let balance = balances.entry(team.map(str::to_owned)).or_insert(self.start);
        *balance = balance.saturating_sub(i64::try_from(micros).unwrap_or(i64::MAX));
    }
}

/// A balance in dollars with six decimals: `9.999850`, `-0.000120`.
pub(crate) fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}
