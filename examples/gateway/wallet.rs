//! Team wallets: a prepaid balance per team, in micro-dollars.
//!
//! Every team's wallet starts at the same balance (`--wallet-usd`); keys without a team share
//! the operator's wallet. A paid request reserves its whole cost before it runs, only while the
//! balance is positive, and gives back what it did not use (a stream the client left early):
//! the last request may take a wallet below zero by at most its own cost (it is then refused
//! until topped up, as prepaid APIs do). `:free` models cost nothing.
//!
//! With `--store postgres://…` the wallets live in PostgreSQL (`keygate_wallets`), and the
//! reservation is one conditional upsert: every gateway on the database spends from one wallet,
//! and all of them together pass it by at most one request's cost. Otherwise they live in this
//! process.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use keygate::manage::Usd;
use sqlx::PgPool;

/// The wallets, created on first use with the starting balance.
#[derive(Debug)]
pub(crate) struct Wallets {
    start: i64,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Local(Mutex<HashMap<Option<String>, i64>>),
    Postgres(PgPool),
}

/// A wallet could not be read or written: the request is refused (fail closed).
#[derive(Debug)]
pub(crate) struct WalletError;

impl Wallets {
    /// Wallets in this process.
    pub(crate) fn new(start: Usd) -> Self {
        Self { start: micros(start.micros()), place: Place::Local(Mutex::new(HashMap::new())) }
    }

    /// Wallets in PostgreSQL (the `keygate_wallets` table the store's migrations create).
    pub(crate) fn postgres(start: Usd, pool: PgPool) -> Self {
        Self { start: micros(start.micros()), place: Place::Postgres(pool) }
    }

    /// The balance of `team`'s wallet (`None`: the operator's) in micro-dollars.
    pub(crate) async fn balance(&self, team: Option<&str>) -> Result<i64, WalletError> {
        match &self.place {
            Place::Local(balances) => {
                let balances = balances.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(balances.get(&team.map(str::to_owned)).copied().unwrap_or(self.start))
            }
            Place::Postgres(pool) => {
                let balance: Option<i64> =
                    sqlx::query_scalar("SELECT balance_micros FROM keygate_wallets WHERE team_id = $1")
                        .bind(team.unwrap_or(""))
                        .fetch_optional(pool)
                        .await
                        .map_err(|_| WalletError)?;
                Ok(balance.unwrap_or(self.start))
            }
        }
    }

    /// Takes `cost` from `team`'s wallet if its balance is positive; `false` if it is not.
    pub(crate) async fn reserve(&self, team: Option<&str>, cost: u64) -> Result<bool, WalletError> {
        let cost = micros(cost);
        match &self.place {
            Place::Local(balances) => {
                let mut balances = balances.lock().unwrap_or_else(PoisonError::into_inner);
                let balance = balances.entry(team.map(str::to_owned)).or_insert(self.start);
                if *balance <= 0 {
                    return Ok(false);
                }
                *balance = balance.saturating_sub(cost);
                Ok(true)
            }
            Place::Postgres(_) if self.start <= 0 && cost > 0 => {
                // A wallet not yet written starts empty: only an existing positive one pays.
                self.reserve_existing(team, cost).await
            }
            Place::Postgres(pool) => {
                // Created at the starting balance minus the cost, or taken from while positive:
                // the row's lock orders every gateway's reservations.
                let row: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO keygate_wallets AS w (team_id, balance_micros) VALUES ($1, $2 - $3) \
                     ON CONFLICT (team_id) DO UPDATE SET balance_micros = w.balance_micros - $3 \
                     WHERE w.balance_micros > 0 RETURNING balance_micros",
                )
                .bind(team.unwrap_or(""))
                .bind(self.start)
                .bind(cost)
                .fetch_optional(pool)
                .await
                .map_err(|_| WalletError)?;
                Ok(row.is_some())
            }
        }
    }

    async fn reserve_existing(&self, team: Option<&str>, cost: i64) -> Result<bool, WalletError> {
        let Place::Postgres(pool) = &self.place else { return Ok(false) };
        let row: Option<i64> = sqlx::query_scalar(
            "UPDATE keygate_wallets SET balance_micros = balance_micros - $2 \
             WHERE team_id = $1 AND balance_micros > 0 RETURNING balance_micros",
        )
        .bind(team.unwrap_or(""))
        .bind(cost)
        .fetch_optional(pool)
        .await
        .map_err(|_| WalletError)?;
        Ok(row.is_some())
    }

    /// Gives `micros` back to `team`'s wallet (what a reservation did not use). In PostgreSQL
    /// the write leaves the response path.
    pub(crate) fn refund(&self, team: Option<&str>, micros_back: u64) {
        if micros_back == 0 {
            return;
        }
        let amount = micros(micros_back);
        match &self.place {
            Place::Local(balances) => {
                let mut balances = balances.lock().unwrap_or_else(PoisonError::into_inner);
                let balance = balances.entry(team.map(str::to_owned)).or_insert(self.start);
                *balance = balance.saturating_add(amount);
            }
            Place::Postgres(pool) => {
                let (pool, team) = (pool.clone(), team.unwrap_or("").to_owned());
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                runtime.spawn(async move {
                    let refund = sqlx::query(
                        "UPDATE keygate_wallets SET balance_micros = balance_micros + $2 WHERE team_id = $1",
                    )
                    .bind(&team)
                    .bind(amount)
                    .execute(&pool)
                    .await;
                    if refund.is_err() {
                        eprintln!("wallet: a refund of {amount} micro-dollars to team {team:?} failed");
                    }
                });
            }
        }
    }
}

/// Micro-dollars as an i64 (`Usd` is at most a billion dollars, a cost far less).
fn micros(micros: u64) -> i64 {
    i64::try_from(micros).unwrap_or(i64::MAX)
}

/// A balance in dollars with six decimals: `9.999850`, `-0.000120`.
pub(crate) fn format_usd(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let abs = micros.unsigned_abs();
    format!("{sign}{}.{:06}", abs / 1_000_000, abs % 1_000_000)
}
