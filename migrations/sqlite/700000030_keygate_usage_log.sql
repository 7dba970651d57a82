-- keygate: the usage log (see src/usage_log.rs). One row per decided request, written in
-- batches off the request path; never the key, its secret or the request's body. Times are
-- nanoseconds since the Unix epoch; money is in micro-units of currency.
CREATE TABLE keygate_usage_log (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT  NOT NULL,
    key_id       TEXT,
    verified     BOOLEAN NOT NULL,
    team_id      TEXT,
    route        TEXT,
    model        TEXT,
    provider     TEXT,
    outcome      TEXT    NOT NULL,
    status       BIGINT,
    tokens       BIGINT  NOT NULL,
    tokens_in    BIGINT,
    tokens_out   BIGINT,
    cost_micros  BIGINT  NOT NULL,
    latency_us   BIGINT,
    client_ip    TEXT
);

-- A key's log, newest first; a team's or everyone's usage over a period; retention.
CREATE INDEX keygate_usage_log_key_at ON keygate_usage_log (key_id, at, id);
CREATE INDEX keygate_usage_log_team_at ON keygate_usage_log (team_id, at);
CREATE INDEX keygate_usage_log_at ON keygate_usage_log (at);

-- Spend alerts: a key's spend crossing a threshold of its cap, once per period each.
CREATE TABLE keygate_spend_alerts (
    at           BIGINT  NOT NULL,
    key_id       TEXT NOT NULL,
    team_id      TEXT,
    percent      BIGINT  NOT NULL,
    spend_micros BIGINT  NOT NULL,
    cap_micros   BIGINT  NOT NULL,
    period       TEXT    NOT NULL
);

CREATE INDEX keygate_spend_alerts_key_at ON keygate_spend_alerts (key_id, at);
CREATE INDEX keygate_spend_alerts_at ON keygate_spend_alerts (at);
