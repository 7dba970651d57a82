//! Charging a request for what it used: its key's limits (tokens, spend cap) through the
//! [`Principal`], and its team's wallet.

use std::sync::Arc;

use keygate::{Principal, Usage};

use crate::catalog::Price;
use crate::wallet::{WalletError, Wallets};

/// Who pays for a request: the key (its limits) and the wallet of the key's team.
#[derive(Debug, Clone)]
pub(crate) struct Account {
    /// The key; `None` only on the benchmark's unauthenticated route.
    principal: Option<Principal>,
    wallets: Arc<Wallets>,
}

impl Account {
    pub(crate) fn new(principal: Option<Principal>, wallets: Arc<Wallets>) -> Self {
        Self { principal, wallets }
    }

    /// The team whose wallet pays (`None`: the operator's wallet, shared by keys without a team).
    pub(crate) fn team(&self) -> Option<&str> {
        self.principal.as_ref().and_then(Principal::team_id)
    }

    /// Says how the tokens split between the prompt and the completion, for the usage log.
    pub(crate) fn report_tokens(&self, prompt: u32, completion: u32) {
        if let Some(principal) = &self.principal {
            principal.report_tokens(prompt, completion);
        }
    }

    /// Reserves `cost` from the wallet if it has money left (see [`Wallets::reserve`]).
    pub(crate) async fn reserve(&self, cost: u64) -> Result<bool, WalletError> {
        if cost == 0 {
            return Ok(true);
        }
        self.wallets.reserve(self.team(), cost).await
    }

    /// Records what the request used: the key's token and spend limits are reconciled with it
    /// when the response body ends, and what the wallet's reservation did not use goes back.
    pub(crate) fn charge(&self, usage: Usage, reserved: u64) {
        if let Some(principal) = &self.principal {
            principal.report(usage);
        }
        self.wallets.refund(self.team(), reserved.saturating_sub(usage.spend_micros));
    }
}

/// Counts the tokens of one reply and charges them once: when the reply is complete, or, for a
/// stream the client left early, for what was sent (on drop).
#[derive(Debug)]
pub(crate) struct Meter {
    account: Account,
    price: Price,
    /// What was reserved from the wallet: the whole reply's cost.
    reserved: u64,
    prompt_tokens: u32,
    completion_tokens: u32,
    charged: bool,
}

impl Meter {
    pub(crate) fn new(account: Account, price: Price, reserved: u64, prompt_tokens: u32) -> Self {
        Self { account, price, reserved, prompt_tokens, completion_tokens: 0, charged: false }
    }

    /// Counts completion tokens sent to the client.
    pub(crate) fn add(&mut self, completion_tokens: u32) {
        self.completion_tokens = self.completion_tokens.saturating_add(completion_tokens);
    }

    /// Charges the tokens counted so far; later calls do nothing.
    pub(crate) fn charge(&mut self) {
        if !self.charged {
            self.charged = true;
            let cost = self.price.cost(self.prompt_tokens, self.completion_tokens);
            self.account.report_tokens(self.prompt_tokens, self.completion_tokens);
            self.account
                .charge(Usage::new(self.prompt_tokens.saturating_add(self.completion_tokens), cost), self.reserved);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.charge();
    }
}
