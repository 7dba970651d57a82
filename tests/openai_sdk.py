"""The official OpenAI Python SDK against the reference gateway, unchanged but for base_url.

Run by tests/gateway_e2e.rs, which starts the gateway and passes, in the environment:
KEYGATE_URL (the gateway's base URL, ending in /v1), KEYGATE_KEY (a key with no limits) and
KEYGATE_LIMITED_KEY (a key allowed one request per minute). Exits non-zero on any failure.
"""

import os

import openai
from openai import OpenAI

base_url = os.environ["KEYGATE_URL"]
client = OpenAI(base_url=base_url, api_key=os.environ["KEYGATE_KEY"], max_retries=0)

# The model list.
models = [m.id for m in client.models.list()]
assert "gpt-4o-mini" in models and any(m.endswith(":free") for m in models), models
print(f"ok: models.list -> {len(models)} models")

# A chat completion.
reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello, gateway"}],
    max_tokens=64,
)
assert reply.object == "chat.completion", reply
assert reply.choices[0].message.role == "assistant"
assert reply.choices[0].message.content == "Hello from gpt-4o-mini! You said: Hello, gateway", reply
assert reply.choices[0].finish_reason == "stop"
assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens > 0
print(f"ok: chat.completions.create -> {reply.choices[0].message.content!r}, usage {reply.usage.total_tokens}")

# The same, streamed, with the usage chunk at the end.
stream = client.chat.completions.create(
    model="llama-3.1-8b-instruct:free",
    messages=[{"role": "user", "content": "Stream, please"}],
    stream=True,
    stream_options={"include_usage": True},
)
text, usage, finish = "", None, None
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    if chunk.usage is not None:
        usage = chunk.usage
assert text == "Hello from llama-3.1-8b-instruct:free! You said: Stream, please", text
assert finish == "stop" and usage is not None and usage.total_tokens > 0, (finish, usage)
print(f"ok: streamed {text!r}, usage {usage.total_tokens}")

# An invalid key: the SDK's AuthenticationError (401 invalid_api_key).
for invalid in ["aistats_v1_sk_0000000000000000_not-a-real-secret", "sk-aisa-not-a-real-key-0123456789abcdef"]:
    bad = OpenAI(base_url=base_url, api_key=invalid, max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("an invalid key was accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401 and e.code == "invalid_api_key", (e.status_code, e.code)
        print(f"ok: invalid key {invalid[:8]}... -> AuthenticationError {e.code}")

# A rate limit: the SDK's RateLimitError (429 rate_limited), not retried with max_retries=0.
limited = OpenAI(base_url=base_url, api_key=os.environ["KEYGATE_LIMITED_KEY"], max_retries=0)
limited.models.list()
try:
    limited.models.list()
    raise AssertionError("the second request in a minute was accepted")
except openai.RateLimitError as e:
    assert e.status_code == 429 and e.code == "rate_limited", (e.status_code, e.code)
    assert int(e.response.headers["retry-after"]) > 0
    print(f"ok: rate limit -> RateLimitError {e.code}, retry after {e.response.headers['retry-after']}s")

print("openai sdk: all checks passed")
