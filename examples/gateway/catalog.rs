//! The models the gateway serves: each with its provider and its price.

use keygate::manage::Usd;
use keygate::policy::FREE_SUFFIX;
use serde::Serialize;

/// One model of the catalogue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Model {
    /// The name clients send as `model`.
    pub(crate) id: &'static str,
    /// Who serves it (checked against a key's `allowed_providers`).
    pub(crate) provider: &'static str,
    pub(crate) price: Price,
}

/// A price in micro-dollars per million tokens, for prompt and for completion tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Price {
    pub(crate) input: u64,
    pub(crate) output: u64,
}

impl Price {
    const FREE: Self = Self { input: 0, output: 0 };

    /// The cost of a request in micro-dollars, rounded up: any paid use costs something.
    pub(crate) fn cost(self, prompt_tokens: u32, completion_tokens: u32) -> u64 {
        let per_million = u64::from(prompt_tokens) * self.input + u64::from(completion_tokens) * self.output;
        per_million.div_ceil(1_000_000)
    }
}

/// Dollars per million tokens, written as micro-dollars.
const fn usd_per_million(input_micros: u64, output_micros: u64) -> Price {
    Price { input: input_micros, output: output_micros }
}

/// The catalogue. `:free` variants cost nothing and need no wallet balance.
pub(crate) const MODELS: &[Model] = &[
    Model { id: "gpt-4o", provider: "openai", price: usd_per_million(2_500_000, 10_000_000) },
    Model { id: "gpt-4o-mini", provider: "openai", price: usd_per_million(150_000, 600_000) },
    Model { id: "claude-3-5-sonnet", provider: "anthropic", price: usd_per_million(3_000_000, 15_000_000) },
    Model { id: "llama-3.1-8b-instruct", provider: "meta", price: usd_per_million(50_000, 80_000) },
    Model { id: "llama-3.1-8b-instruct:free", provider: "meta", price: Price::FREE },
    Model { id: "mistral-7b-instruct:free", provider: "mistral", price: Price::FREE },
];

/// The model named `id`.
pub(crate) fn find(id: &str) -> Option<&'static Model> {
    MODELS.iter().find(|m| m.id == id)
}

impl Model {
    /// Whether the model is a `:free` variant (it needs no wallet balance).
    pub(crate) fn is_free(&self) -> bool {
        self.id.ends_with(FREE_SUFFIX)
    }
}

/// `GET /v1/models`: OpenAI's list shape, with the provider and the price of each model.
pub(crate) fn list() -> String {
    let usd = |micros| Usd::from_micros(micros).map(|u| u.to_string()).unwrap_or_default();
    let data = MODELS
        .iter()
        .map(|m| Entry {
            id: m.id,
            object: "model",
            created: 1_700_000_000,
            owned_by: m.provider,
            provider: m.provider,
            pricing: Pricing {
                currency: "USD",
                unit: "1M tokens",
                input: usd(m.price.input),
                output: usd(m.price.output),
            },
        })
        .collect();
    serde_json::to_string(&List { object: "list", data }).unwrap_or_default()
}

#[derive(Serialize)]
struct List {
    object: &'static str,
    data: Vec<Entry>,
}

#[derive(Serialize)]
struct Entry {
    id: &'static str,
    object: &'static str,
    created: u64,
    owned_by: &'static str,
    provider: &'static str,
    pricing: Pricing,
}

/// Dollars per `unit`, as decimal strings.
#[derive(Serialize)]
struct Pricing {
    currency: &'static str,
    unit: &'static str,
    input: String,
    output: String,
}
