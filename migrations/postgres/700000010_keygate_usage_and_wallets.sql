-- State every gateway on the database shares, beside the keys.
--
-- Usage counters: one row per key, period and counter, incremented by upserts that each gateway
-- sends in batches. `period` is 'day', 'week' or 'month' with `period_start` its first instant
-- (Unix seconds, UTC); `counter` is 'requests', 'tokens', 'spend_micros' or 'denied:<code>'.
-- A key's last allowed request is the row ('all', 0, 'last_used_ms'), kept at its maximum.
CREATE TABLE keygate_usage (
    key_id TEXT NOT NULL,
    period TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    counter TEXT NOT NULL,
    value BIGINT NOT NULL,
    PRIMARY KEY (key_id, period, period_start, counter)
);

-- Team wallets, in micro-dollars; team '' is the operator's wallet (keys of no team). A request
-- reserves its cost with one conditional upsert (only while the balance is positive), so all
-- gateways together take a wallet below zero by at most one request's cost.
CREATE TABLE keygate_wallets (
    team_id TEXT PRIMARY KEY,
    balance_micros BIGINT NOT NULL
);
