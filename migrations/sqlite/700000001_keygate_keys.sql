-- keygate: one row per API key (see src/store/sql.rs for the design).
-- Timestamps are nanoseconds since the Unix epoch; `attributes` is a JSON object holding the
-- policy and limits; the secret itself is never stored, only its digest.
CREATE TABLE keygate_keys (
    id            TEXT    NOT NULL PRIMARY KEY,
    shape         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    digest        BLOB    NOT NULL,
    digest_scheme TEXT    NOT NULL,
    pepper_id     INTEGER,
    revision      INTEGER NOT NULL,
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    soft_blocked  INTEGER NOT NULL,
    team_id       TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    expires_at    INTEGER,
    last_used_at  INTEGER,
    attributes    TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Opaque keys are found by their digest, which no two opaque keys share.
CREATE UNIQUE INDEX keygate_keys_opaque_digest ON keygate_keys (digest) WHERE shape = 'opaque';

-- The stable listing order: creation time, then the id (shorter first, then byte order).
CREATE INDEX keygate_keys_order ON keygate_keys (created_at, length(id), id);
CREATE INDEX keygate_keys_team_order ON keygate_keys (team_id, created_at, length(id), id)
    WHERE team_id IS NOT NULL;
