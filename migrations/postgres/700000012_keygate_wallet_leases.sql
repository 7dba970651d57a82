-- Leases of a share of a team's wallet, one per team and gateway (`holder`, a random id per
-- process). A gateway whose lease covers a request's whole cost admits it without a round trip;
-- the money was taken from the wallet when the lease was granted, so every gateway together
-- still passes a wallet by at most one request's cost (the one taken by `keygate_wallet_take`
-- while the balance was positive). A holder renews its row about once a second with what it has
-- left, returns that when it goes idle or stops, and a lease not renewed for a while (its holder
-- died) is given back to the wallet, at the amount last recorded, by whichever gateway sees it.
CREATE TABLE keygate_wallet_leases (
    team_id TEXT NOT NULL,
    holder TEXT NOT NULL,
    amount_micros BIGINT NOT NULL,
    renewed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, holder)
);

-- `keygate_wallet_reserve` and a lease in one call: the costs are taken in order, each only
-- while the balance is positive; then, if every one was taken and at least `min_balance` is
-- left, `lease` more is taken for `holder_id` (added to its lease). Returns how many costs were
-- taken and how much was leased.
CREATE FUNCTION keygate_wallet_take(
    team TEXT, start BIGINT, costs BIGINT[], holder_id TEXT, lease BIGINT, min_balance BIGINT,
    OUT taken INTEGER, OUT leased BIGINT
)
LANGUAGE plpgsql AS $$
DECLARE
    balance BIGINT;
    cost BIGINT;
BEGIN
    taken := 0;
    leased := 0;
    INSERT INTO keygate_wallets (team_id, balance_micros) VALUES (team, start)
    ON CONFLICT (team_id) DO NOTHING;
    SELECT balance_micros INTO balance FROM keygate_wallets WHERE team_id = team FOR UPDATE;
    FOREACH cost IN ARRAY costs LOOP
        EXIT WHEN balance <= 0;
        balance := balance - cost;
        taken := taken + 1;
    END LOOP;
    IF lease > 0 AND taken = coalesce(array_length(costs, 1), 0) AND balance - lease >= min_balance THEN
        balance := balance - lease;
        leased := lease;
        INSERT INTO keygate_wallet_leases (team_id, holder, amount_micros) VALUES (team, holder_id, lease)
        ON CONFLICT (team_id, holder) DO UPDATE
        SET amount_micros = keygate_wallet_leases.amount_micros + lease, renewed_at = now();
    END IF;
    IF taken > 0 OR leased > 0 THEN
        UPDATE keygate_wallets SET balance_micros = balance WHERE team_id = team;
    END IF;
END
$$;

-- A holder gives back what is left of its lease: the row goes and `amount` returns to the
-- wallet, only if the row was still there (another gateway may have reclaimed it, at the amount
-- it recorded). The wallet's row is locked first, as in `keygate_wallet_take`.
CREATE FUNCTION keygate_wallet_return(team TEXT, holder_id TEXT, amount BIGINT) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM keygate_wallets WHERE team_id = team FOR UPDATE;
    DELETE FROM keygate_wallet_leases WHERE team_id = team AND holder = holder_id;
    IF NOT FOUND THEN
        RETURN FALSE;
    END IF;
    UPDATE keygate_wallets SET balance_micros = balance_micros + amount WHERE team_id = team;
    RETURN TRUE;
END
$$;
