//! The mock model: a deterministic reply with its token counts, in OpenAI's chat completion
//! shapes (one JSON body, or server-sent event chunks).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest reply the mock writes, in tokens (also the token estimate of a request that
/// names no `max_tokens`).
pub(crate) const MAX_COMPLETION_TOKENS: u32 = 1024;

/// The fields of a chat completion request the mock reads; others (temperature, tools, ...)
/// are accepted and ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ChatRequest {
    pub(crate) model: String,
    pub(crate) messages: Vec<Message>,
    #[serde(default)]
    pub(crate) stream: bool,
    pub(crate) stream_options: Option<StreamOptions>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Message {
    role: String,
    /// A string, an array of content parts, or null.
    #[serde(default)]
    content: Value,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StreamOptions {
    #[serde(default)]
    pub(crate) include_usage: bool,
}

impl ChatRequest {
    /// Whether a streamed reply ends with a usage chunk.
    pub(crate) fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }

    fn max_tokens(&self) -> u32 {
        self.max_completion_tokens.or(self.max_tokens).unwrap_or(MAX_COMPLETION_TOKENS).min(MAX_COMPLETION_TOKENS)
    }
}

/// Tokens in `text`: one per four characters, rounded up (OpenAI's rule of thumb).
pub(crate) fn tokens(text: &str) -> u32 {
    u32::try_from(text.chars().count().div_ceil(4)).unwrap_or(u32::MAX)
}

/// The text of a message's content: a string, or the `text` of each content part.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

/// What the mock answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) text: String,
    /// `stop`, or `length` when `max_tokens` cut the reply.
    pub(crate) finish_reason: &'static str,
    pub(crate) prompt_tokens: u32,
    pub(crate) completion_tokens: u32,
}

/// The reply to `request`: a greeting that repeats the last user message, cut at `max_tokens`.
/// Prompt tokens count each message's content plus 3 per message and 3 to prime the reply.
pub(crate) fn complete(request: &ChatRequest) -> Completion {
    let prompt_tokens =
        request.messages.iter().fold(3u32, |sum, m| sum.saturating_add(3).saturating_add(tokens(&text_of(&m.content))));
    let said = request.messages.iter().rev().find(|m| m.role == "user").map(|m| text_of(&m.content));
    let mut text = match said {
        Some(said) => format!("Hello from {}! You said: {said}", request.model),
        None => format!("Hello from {}!", request.model),
    };
    let limit = usize::try_from(request.max_tokens()).unwrap_or(usize::MAX).saturating_mul(4);
    let finish_reason = match text.char_indices().nth(limit) {
        Some((cut, _)) => {
            text.truncate(cut);
            "length"
        }
        None => "stop",
    };
    let completion_tokens = tokens(&text);
    Completion { text, finish_reason, prompt_tokens, completion_tokens }
}

impl Completion {
    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_tokens,
            completion_tokens: self.completion_tokens,
            total_tokens: self.prompt_tokens.saturating_add(self.completion_tokens),
        }
    }

    /// The `chat.completion` body.
    pub(crate) fn to_json(&self, id: &str, created: u64, model: &str) -> String {
        let message = AssistantMessage { role: "assistant", content: &self.text };
        let choice = Choice { index: 0, message, finish_reason: self.finish_reason };
        let body =
            ChatCompletion { id, object: "chat.completion", created, model, choices: [choice], usage: self.usage() };
        serde_json::to_string(&body).unwrap_or_default()
    }

    /// The reply as server-sent events, each with the completion tokens it carries: a first
    /// chunk with the role, one chunk per word, a chunk with the finish reason, the usage chunk
    /// if asked for, and `data: [DONE]`.
    pub(crate) fn to_events(&self, id: &str, created: u64, model: &str, include_usage: bool) -> Vec<(String, u32)> {
        // With `include_usage`, every chunk has a `usage` field: null, except in the last one.
        let usage = include_usage.then_some(None);
        let chunk = |delta: Delta<'_>, finish_reason: Option<&str>| {
            let choice = ChunkChoice { index: 0, delta, finish_reason };
            event(&Chunk { id, object: "chat.completion.chunk", created, model, choices: vec![choice], usage })
        };
        let mut events = vec![(chunk(Delta { role: Some("assistant"), content: Some("") }, None), 0)];
        let (mut sent, mut so_far) = (0, String::new());
        for word in self.text.split_inclusive(' ') {
            so_far.push_str(word);
            let total = tokens(&so_far);
            events.push((chunk(Delta { role: None, content: Some(word) }, None), total - sent));
            sent = total;
        }
        events.push((chunk(Delta { role: None, content: None }, Some(self.finish_reason)), 0));
        if include_usage {
            let last = Chunk {
                id,
                object: "chat.completion.chunk",
                created,
                model,
                choices: vec![],
                usage: Some(Some(self.usage())),
            };
            events.push((event(&last), 0));
        }
        events.push(("data: [DONE]\n\n".to_owned(), 0));
        events
    }
}

/// One server-sent event carrying `data` as JSON.
fn event(data: &impl Serialize) -> String {
    format!("data: {}\n\n", serde_json::to_string(data).unwrap_or_default())
}

// OpenAI's response shapes, fields in OpenAI's order.

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    finish_reason: &'a str,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    content: &'a str,
}

#[derive(Serialize, Clone, Copy)]
struct Usage {
    prompt_tokens: u32,
    completion_tokens: u32,
    total_tokens: u32,
}

#[derive(Serialize)]
struct Chunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChunkChoice<'a>>,
    /// Absent, or (with `include_usage`) null until the last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Option<Usage>>,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
}
