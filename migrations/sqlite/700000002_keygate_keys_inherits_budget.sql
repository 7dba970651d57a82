-- keygate: a rotated key continues its predecessor's limit counters (spend, credits, rates,
-- concurrency). The id whose counters a key uses; NULL means its own id.
ALTER TABLE keygate_keys ADD COLUMN inherits_budget TEXT;
