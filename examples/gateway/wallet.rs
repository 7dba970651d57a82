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
//! request's cost.
//!
//! - **Leases: most paid requests wait for nothing.** A gateway takes a share of a busy team's
//!   wallet (a lease: [`LEASE_REQUESTS`] times the cost of the request that asked, granted only
//!   while at least [`LEASE_SHARE`] times that stays in the wallet) and admits a request locally
//!   while its lease covers the whole cost. The money left the wallet when the lease was granted,
//!   so the bound above holds. The lease is recorded in `keygate_wallet_leases`, renewed about
//!   once a second with what is left of it ([`Wallets::maintain`]), given back when the team has
//!   been idle for a second and on shutdown ([`Wallets::release`]), and a lease whose gateway
//!   died goes back to the wallet, at the amount last recorded, once it has not been renewed
//!   for [`ABANDONED_AFTER`]: nothing of a team's money is lost, and what a dead gateway admitted
//!   in its last second is not charged. While a lease is held elsewhere a gateway may refuse a
//!   request the wallet could pay for, for at most the other gateways' leases until they go
//!   back; a small wallet (below [`LEASE_SHARE`] leases) is never leased.
//! - **Batches for the rest.** A reservation the lease does not cover waits for a round trip:
//!   a team's reservations are sent in batches (group commit). While one round trip is under way
//!   the next requests queue, and the next round trip takes them all, in arrival order, with
//!   `keygate_wallet_take` (one call, one row lock, each cost taken only while the balance is
//!   still positive, as one conditional upsert per request would, and a new lease when every
//!   cost was taken).
//!
//! Otherwise the wallets live in this process.

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
    Postgres(Arc<Shared>),
}

/// The wallets in PostgreSQL, as this gateway sees them.
#[derive(Debug)]
struct Shared {
    pool: PgPool,
    /// Reservations waiting for their round trip, by team.
    queues: Mutex<HashMap<String, Queue>>,
    /// This gateway's leases, by team.
    leases: Mutex<HashMap<String, Lease>>,
    /// This gateway's name in `keygate_wallet_leases`.
    holder: String,
}

/// A share of a team's wallet held by this gateway.
#[derive(Debug, Default)]
struct Lease {
    /// Micro-dollars left to spend.
    left: i64,
    /// Spent from (or refunded to) since the last [`Wallets::maintain`].
    busy: bool,
    /// The size of the last share granted: below half of it left, more is asked for ahead.
    granted: i64,
    /// More is being asked for.
    refilling: bool,
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
/// A lease covers this many requests of the cost of the request that asked for it.
pub(crate) const LEASE_REQUESTS: i64 = 256;
/// A lease is granted only while at least this many more of it stay in the wallet.
pub(crate) const LEASE_SHARE: i64 = 16;
/// A lease not renewed for this long (its gateway died) goes back to its wallet.
pub(crate) const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

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
        let holder = format!("{:016x}", rand_id());
        let shared = Shared { pool, queues: Mutex::default(), leases: Mutex::default(), holder };
        Self { start: micros(start.micros()), place: Place::Postgres(Arc::new(shared)) }
    }

    /// The balance of `team`'s wallet (`None`: the operator's) in micro-dollars.
    pub(crate) async fn balance(&self, team: Option<&str>) -> Result<i64, WalletError> {
        match &self.place {
            Place::Local(balances) => {
                let balances = balances.lock().unwrap_or_else(PoisonError::into_inner);
                Ok(balances.get(&team.map(str::to_owned)).copied().unwrap_or(self.start))
            }
            Place::Postgres(shared) => {
                // The wallet, with what every lease holds: others' as they last recorded it,
                // this gateway's as it is now.
                let team = team.unwrap_or("");
                let balance: Option<i64> = sqlx::query_scalar(
                    "SELECT w.balance_micros + coalesce((SELECT sum(l.amount_micros) FROM keygate_wallet_leases l \
                     WHERE l.team_id = w.team_id AND l.holder <> $2), 0)::BIGINT \
                     FROM keygate_wallets w WHERE w.team_id = $1",
                )
                .bind(team)
                .bind(&shared.holder)
                .fetch_optional(&shared.pool)
                .await
                .map_err(|_| WalletError)?;
                let own = shared.leases().get(team).map_or(0, |l| l.left);
                Ok(balance.map_or(self.start, |b| b.saturating_add(own)))
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
            Place::Postgres(shared) => {
                let team = team.unwrap_or("");
                if shared.spend_from_lease(team, cost, self.start) {
                    return Ok(true);
                }
                let (sent, answer) = oneshot::channel();
                let lead = {
                    let mut queues = shared.queues();
                    let queue = queues.entry(team.to_owned()).or_default();
                    queue.waiting.push((cost, sent));
                    !std::mem::replace(&mut queue.flying, true)
                };
                if lead {
                    tokio::spawn(send_batches(Arc::clone(shared), team.to_owned(), self.start));
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
            Place::Postgres(shared) => {
                let team = team.unwrap_or("");
                if shared.add_to_lease(team, amount) {
                    return;
                }
                let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
                runtime.spawn(refund_postgres(shared.pool.clone(), team.to_owned(), amount));
            }
        }
    }

    /// Renews this gateway's leases with what is left of them, gives back those of teams idle
    /// since the last call, and gives back leases of other gateways not renewed for
    /// [`ABANDONED_AFTER`]. Call it about once a second. Nothing to do in memory.
    pub(crate) async fn maintain(&self) {
        if let Place::Postgres(shared) = &self.place {
            maintain(shared, self.start, false).await;
        }
    }

    /// Gives back every lease this gateway holds: call it on shutdown, after the last request.
    pub(crate) async fn release(&self) {
        if let Place::Postgres(shared) = &self.place {
            maintain(shared, self.start, true).await;
        }
    }
}

/// What [`maintain`] does with a lease.
enum Upkeep {
    /// Give back what is left.
    Return(i64),
    /// Record what is left.
    Renew(i64),
}

/// See [`Wallets::maintain`]; `all` gives back every lease (shutdown).
///
/// A team's lease is renewed or given back while this gateway sends none of the team's
/// reservations (it holds the team's queue as a batch in flight would): a lease granted by a
/// batch in flight can never be deleted by a return, nor its amount overwritten by a renewal
/// made before it.
async fn maintain(shared: &Arc<Shared>, start: i64, all: bool) {
    let teams: Vec<String> = shared.leases().keys().cloned().collect();
    for team in teams {
        if !shared.claim(&team) {
            continue; // a batch is in flight: next time
        }
        let upkeep = {
            let mut leases = shared.leases();
            match leases.get_mut(&team) {
                None => None,
                Some(lease) if all || !lease.busy => leases.remove(&team).map(|l| Upkeep::Return(l.left)),
                Some(lease) => {
                    lease.busy = false;
                    Some(Upkeep::Renew(lease.left))
                }
            }
        };
        match upkeep {
            Some(Upkeep::Return(left)) => {
                let returned = sqlx::query_scalar::<_, bool>("SELECT keygate_wallet_return($1, $2, $3)")
                    .bind(&team)
                    .bind(&shared.holder)
                    .bind(left)
                    .fetch_one(&shared.pool)
                    .await;
                if returned.is_err() {
                    // Kept (its row is still there), to be given back next time.
                    shared.leases().entry(team.clone()).or_default().left += left;
                }
            }
            Some(Upkeep::Renew(left)) => {
                let renewed = sqlx::query(
                    "UPDATE keygate_wallet_leases SET amount_micros = $3, renewed_at = now() \
                     WHERE team_id = $1 AND holder = $2",
                )
                .bind(&team)
                .bind(&shared.holder)
                .bind(left)
                .execute(&shared.pool)
                .await;
                if renewed.is_ok_and(|r| r.rows_affected() == 0) {
                    // Given back by another gateway while this one was silent: not ours any more.
                    shared.leases().remove(&team);
                }
            }
            None => {}
        }
        shared.unclaim(&team, start);
    }
    // Leases of gateways that died: back to their wallets, at the amount last recorded.
    let reclaimed = sqlx::query(
        "WITH gone AS (DELETE FROM keygate_wallet_leases WHERE renewed_at < now() - make_interval(secs => $1) \
         RETURNING team_id, amount_micros), \
         sums AS (SELECT team_id, sum(amount_micros)::BIGINT AS amount FROM gone GROUP BY team_id) \
         UPDATE keygate_wallets w SET balance_micros = w.balance_micros + sums.amount \
         FROM sums WHERE w.team_id = sums.team_id",
    )
    .bind(ABANDONED_AFTER.as_secs_f64())
    .execute(&shared.pool)
    .await;
    if let Err(e) = reclaimed {
        eprintln!("wallet: giving back abandoned leases failed: {e}");
    }
}

impl Shared {
    fn queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes `cost` from this gateway's lease of `team`'s wallet if it covers all of it; when
    /// less than half of the last share is left, asks for more ahead, so that requests keep
    /// finding the lease full enough.
    fn spend_from_lease(self: &Arc<Self>, team: &str, cost: i64, start: i64) -> bool {
        let refill = {
            let mut leases = self.leases();
            match leases.get_mut(team) {
                Some(lease) if lease.left >= cost => {
                    lease.left -= cost;
                    lease.busy = true;
                    let refill = lease.left < lease.granted / 2 && !lease.refilling;
                    lease.refilling |= refill;
                    refill.then_some(lease.granted)
                }
                _ => return false,
            }
        };
        if let Some(want) = refill {
            tokio::spawn(refill_lease(Arc::clone(self), team.to_owned(), start, want));
        }
        true
    }

    /// Holds `team`'s queue as a batch in flight does, if no batch is in flight: reservations
    /// wait in the queue meanwhile. `false` if a batch is in flight.
    fn claim(&self, team: &str) -> bool {
        let mut queues = self.queues();
        let queue = queues.entry(team.to_owned()).or_default();
        !std::mem::replace(&mut queue.flying, true)
    }

    /// Lets go of `team`'s queue: the reservations that queued meanwhile are sent.
    fn unclaim(self: &Arc<Self>, team: &str, start: i64) {
        let waiting = {
            let mut queues = self.queues();
            let waiting = queues.get(team).is_some_and(|q| !q.waiting.is_empty());
            if !waiting {
                queues.remove(team);
            }
            waiting
        };
        if waiting {
            tokio::spawn(send_batches(Arc::clone(self), team.to_owned(), start));
        }
    }

    /// Adds a share of `leased` just granted to this gateway's lease of `team`'s wallet.
    fn grant(&self, team: &str, leased: i64) {
        let mut leases = self.leases();
        let lease = leases.entry(team.to_owned()).or_default();
        lease.left = lease.left.saturating_add(leased);
        lease.granted = leased;
        lease.busy = true;
    }

    /// Adds `amount` to this gateway's lease of `team`'s wallet (money back), if it holds one.
    fn add_to_lease(&self, team: &str, amount: i64) -> bool {
        let mut leases = self.leases();
        let Some(lease) = leases.get_mut(team) else { return false };
        lease.left = lease.left.saturating_add(amount);
        lease.busy = true;
        true
    }
}

/// Asks for `want` more of `team`'s wallet for this gateway's lease, unless a batch of the
/// team's reservations is in flight (it asks for a share itself).
async fn refill_lease(shared: Arc<Shared>, team: String, start: i64, want: i64) {
    if shared.claim(&team) {
        let granted: Result<(i32, i64), _> =
            sqlx::query_as("SELECT taken, leased FROM keygate_wallet_take($1, $2, '{}', $3, $4, $5)")
                .bind(&team)
                .bind(start)
                .bind(&shared.holder)
                .bind(want)
                .bind(want.saturating_mul(LEASE_SHARE))
                .fetch_one(&shared.pool)
                .await;
        if let Ok((_, leased)) = granted
            && leased > 0
        {
            shared.grant(&team, leased);
        }
        shared.unclaim(&team, start);
    }
    if let Some(lease) = shared.leases().get_mut(&team) {
        lease.refilling = false;
    }
}

/// Sends `team`'s queued reservations, a batch per round trip, until none wait. A reservation
/// the lease now covers (one granted while it waited) is taken from the lease instead.
async fn send_batches(shared: Arc<Shared>, team: String, start: i64) {
    loop {
        let batch: Vec<_> = {
            let mut all = shared.queues();
            let Some(queue) = all.get_mut(&team) else { return };
            if queue.waiting.is_empty() {
                // Nothing waits: the next reservation starts a task of its own.
                all.remove(&team);
                return;
            }
            let take = queue.waiting.len().min(MAX_BATCH);
            queue.waiting.drain(..take).collect()
        };
        let mut to_send = Vec::with_capacity(batch.len());
        for (cost, sent) in batch {
            if shared.spend_from_lease(&team, cost, start) {
                // Nobody waits any more: back into the lease it came from.
                if sent.send(Ok(true)).is_err() && !shared.add_to_lease(&team, cost) {
                    refund_postgres(shared.pool.clone(), team.clone(), cost).await;
                }
            } else {
                to_send.push((cost, sent));
            }
        }
        if to_send.is_empty() {
            continue;
        }
        let costs: Vec<i64> = to_send.iter().map(|(cost, _)| *cost).collect();
        let lease = costs.iter().copied().max().unwrap_or(0).saturating_mul(LEASE_REQUESTS);
        let taken: Result<(i32, i64), _> =
            sqlx::query_as("SELECT taken, leased FROM keygate_wallet_take($1, $2, $3, $4, $5, $6)")
                .bind(&team)
                .bind(start)
                .bind(&costs)
                .bind(&shared.holder)
                .bind(lease)
                .bind(lease.saturating_mul(LEASE_SHARE))
                .fetch_one(&shared.pool)
                .await;
        match taken {
            Ok((taken, leased)) => {
                if leased > 0 {
                    shared.grant(&team, leased);
                }
                let taken = usize::try_from(taken).unwrap_or(0);
                for (i, (cost, sent)) in to_send.into_iter().enumerate() {
                    // A request that went away while it waited gives back what it took.
                    if sent.send(Ok(i < taken)).is_err() && i < taken {
                        refund_postgres(shared.pool.clone(), team.clone(), cost).await;
                    }
                }
            }
            Err(_) => to_send.into_iter().for_each(|(_, sent)| drop(sent.send(Err(WalletError)))),
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

/// A random id for this gateway's leases.
fn rand_id() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one((std::process::id(), std::time::SystemTime::now()))
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
