-- A write that only records a key's last use (`last_used_at`, and the `revision` every write
-- bumps) changes nothing a gateway decides with, so it is not announced: announcing it made
-- every gateway evict every recently used key from its cache once per last-used interval.
-- Every other change is announced as before.
CREATE OR REPLACE FUNCTION keygate_keys_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        PERFORM pg_notify('keygate_keys', NEW.id);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('keygate_keys', OLD.id);
    ELSIF (to_jsonb(NEW) - 'last_used_at' - 'revision') IS DISTINCT FROM
          (to_jsonb(OLD) - 'last_used_at' - 'revision') THEN
        PERFORM pg_notify('keygate_keys', NEW.id);
        IF NEW.id IS DISTINCT FROM OLD.id THEN
            PERFORM pg_notify('keygate_keys', OLD.id);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
