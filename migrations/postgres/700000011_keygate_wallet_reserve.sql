-- Reservations from a team's wallet in batches: one call takes the costs of several requests in
-- the order given, each only while the balance is still positive, exactly as that many
-- conditional upserts one after the other would, under one row lock and in one round trip.
-- A wallet not yet written is created at `start`. Returns how many of the costs, from the first,
-- were taken.
CREATE FUNCTION keygate_wallet_reserve(team TEXT, start BIGINT, costs BIGINT[]) RETURNS INTEGER
LANGUAGE plpgsql AS $$
DECLARE
    balance BIGINT;
    cost BIGINT;
    taken INTEGER := 0;
BEGIN
    INSERT INTO keygate_wallets (team_id, balance_micros) VALUES (team, start)
    ON CONFLICT (team_id) DO NOTHING;
    SELECT balance_micros INTO balance FROM keygate_wallets WHERE team_id = team FOR UPDATE;
    FOREACH cost IN ARRAY costs LOOP
        EXIT WHEN balance <= 0;
        balance := balance - cost;
        taken := taken + 1;
    END LOOP;
    IF taken > 0 THEN
        UPDATE keygate_wallets SET balance_micros = balance WHERE team_id = team;
    END IF;
    RETURN taken;
END
$$;
