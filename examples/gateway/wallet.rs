//! Team wallets: a prepaid balance per team, in micro-dollars.
//!
//! Every team's wallet starts at the same balance (`--wallet-usd`); keys without a team share
//! the operator's wallet. A paid request reserves its whole cost before it runs, only while the
//! balance is positive, and gives back what it did not use (a stream the client left early):
//! the last request may take a wallet below zero by at most its own cost (it is then refused
//! until topped up, as prepaid APIs do). `:free` models cost nothing.
//!
//! With `--store postgres://…` the wallets live in PostgreSQL (`keygate_wallets`): every gateway
//! on the database spends from one wallet, and all of them together pass it by at most one
//! request's cost. A team's reservations are sent in batches (group commit): while one round trip
//! is under way the next requests queue, and the next round trip takes them all, in arrival
//! order, with `keygate_wallet_reserve` (one call, one row lock, each cost taken only while the
//! balance is still positive, as one conditional upsert per request would). So a busy wallet
//! costs one round trip per batch rather than one row lock per request, and a request waits for
//! at most the round trip under way and its own. Otherwise the wallets live in this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use keygate::manage::Usd;
use sqlx::PgPool;
use tokio::sync::oneshot;

/// The wallets, created on first use with the starting balance.
#[derive(Debug)]
pub(crate) struct Wallets {
    start: i64,
    place: Place,
}

#[derive(Debug)]
enum Place {
    Local(Mutex<HashMap<Option<String>, i64>>),
    Postgres(PgPool, Arc<Mutex<HashMap<String, Queue>>>),
}

/// A team's reservations waiting for their round trip.
#[derive(Debug, Default)]
struct Queue {
    /// A task is sending this team's batches; it takes what waits here when its round trip ends.
    flying: bool,
    waiting: Vec<(i64, oneshot::Sender<Result<bool, WalletError>>)>,
}

/// The most reservations one round trip takes.
const MAX_BATCH: usize = 1024;

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
        Self { start: micros(start.micros()), place: Place::Postgres(pool, Arc::default()) }
    }

    /// The balance of `team`'s wallet (`None`: the operator's) in micro-dollars.
    pub(crate) async fn balance(&self, team: Option<&str>) -> Result<i64, WalletError> {
        match &self.place {
            Place::Local(balances) => {
                let balances = balances.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(balances.get(&team.map(str::to_owned)).copied().unwrap_or(self.start))
            }
            Place::Postgres(pool, _) => {
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
            Place::Postgres(pool, queues) => {
                let team = team.unwrap_or("").to_owned();
                let (sent, answer) = oneshot::channel();
                let lead = {
                    let mut queues = queues.lock().unwrap_or_else(PoisonError::into_inner);
                    let queue = queues.entry(team.clone()).or_default();
                    queue.waiting.push((cost, sent));
                    !std::mem::replace(&mut queue.flying, true)
                };
                if lead {
                    tokio::spawn(send_batches(pool.clone(), Arc::clone(queues), team, self.start));
                }
                answer.await.unwrap_or(Err(WalletError))
            }
        }
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
            Place::Postgres(pool, _) => {
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                runtime.spawn(refund_postgres(pool.clone(), team.unwrap_or("").to_owned(), amount));
            }
        }
    }
}

/// Sends `team`'s queued reservations, a batch per round trip, until none wait.
async fn send_batches(pool: PgPool, queues: Arc<Mutex<HashMap<String, Queue>>>, team: String, start: i64) {
    loop {
        let batch: Vec<_> = {
            let mut all = queues.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(queue) = all.get_mut(&team) else { return };
            if queue.waiting.is_empty() {
                // Nothing waits: the next reservation starts a task of its own.
                all.remove(&team);
                return;
            }
            let take = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..take).collect()
        };
        let costs: Vec<i64> = batch.iter().map(|(cost, _)| *cost).collect();
        let taken: Result<i32, _> = sqlx::query_scalar("SELECT keygate_wallet_reserve($1, $2, $3)")
            .bind(&team)
            .bind(start)
            .bind(&costs)
            .fetch_one(&pool)
            .await;
        match taken {
            Ok(taken) => {
                let taken = usize::try_from(taken).unwrap_or(0);
                for (i, (cost, sent)) in batch.into_iter().enumerate() {
                    // A request that went away while it waited gives back what it took.
                    if sent.send(Ok(i < taken)).is_err() && i < taken {
                        refund_postgres(pool.clone(), team.clone(), cost).await;
                    }
                }
            }
            Err(_) => batch.into_iter().for_each(|(_, sent)| drop(sent.send(Err(WalletError)))),
        }
    }
}

/// Gives `amount` micro-dollars back to `team`'s wallet in PostgreSQL.
async fn refund_postgres(pool: PgPool, team: String, amount: i64) {
    let refund = sqlx::query("UPDATE keygate_wallets SET balance_micros = balance_micros + $2 WHERE team_id = $1")
        .bind(&team)
        .bind(amount)
        .execute(&pool)
        .await;
    if refund.is_err() {
        eprintln!("wallet: a refund of {amount} micro-dollars to team {team:?} failed");
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
