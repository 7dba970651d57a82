-- keygate: one row per API key (see src/store/sql.rs for the design).
-- Timestamps are nanoseconds since the Unix epoch; `attributes` is a JSON object holding the
-- policy and limits; the secret itself is never stored, only its digest.
CREATE TABLE keygate_keys (
    id            TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    shape         TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    digest        BYTEA   NOT NULL,
    digest_scheme TEXT    NOT NULL,
    pepper_id     BIGINT,
    revision      BIGINT  NOT NULL,
    name          TEXT    NOT NULL,
    prefix        TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    soft_blocked  BOOLEAN NOT NULL,
    team_id       TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    expires_at    BIGINT,
    last_used_at  BIGINT,
    attributes    TEXT    NOT NULL
);

-- Opaque keys are found by their digest, which no two opaque keys share.
CREATE UNIQUE INDEX keygate_keys_opaque_digest ON keygate_keys (digest) WHERE shape = 'opaque';

-- The stable listing order: creation time, then the id (shorter first, then byte order).
CREATE INDEX keygate_keys_order ON keygate_keys (created_at, length(id), id);
CREATE INDEX keygate_keys_team_order ON keygate_keys (team_id, created_at, length(id), id)
    WHERE team_id IS NOT NULL;

-- Every change is announced on the channel `keygate_keys` with the key's id as payload,
-- delivered when the transaction commits, whoever made it. TRUNCATE announces '' (everything).
CREATE FUNCTION keygate_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('keygate_keys', NEW.id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('keygate_keys', OLD.id);
    ELSE
        PERFORM pg_notify('keygate_keys', NEW.id);
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            PERFORM pg_notify('keygate_keys', OLD.id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION keygate_keys_notify_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('keygate_keys', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER keygate_keys_notify
    AFTER INSERT OR UPDATE OR DELETE ON keygate_keys
    FOR EACH ROW EXECUTE FUNCTION keygate_keys_notify();

CREATE TRIGGER keygate_keys_notify_all
    AFTER TRUNCATE ON keygate_keys
    FOR EACH STATEMENT EXECUTE FUNCTION keygate_keys_notify_all();
