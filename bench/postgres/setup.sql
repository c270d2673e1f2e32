-- Fixture for bench/postgres (pgbench scripts) and the pg_throughput example, in the schema palisade_bench.
-- Run after the store's migration (`pg_throughput --setup-only` applies it), before every measured run:
-- empties the lease table, creates 100000 completed records r:1 .. r:100000 (fingerprint 32 x 0x5a, a
-- 160-byte answer, alive for a day) for the replay runs, and an empty orders table for the transactional
-- completion. No semicolon may appear except at the end of a statement (the example splits on them).
CREATE TABLE IF NOT EXISTS palisade_bench.orders (
    id         bigserial PRIMARY KEY,
    key        text NOT NULL,
    amount     bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
TRUNCATE palisade_bench.palisade_leases, palisade_bench.orders;
INSERT INTO palisade_bench.palisade_leases
    (key, fingerprint, done, token, attempt, took_over, lease_until, expires_at, response)
SELECT 'r:' || i, decode(repeat('5a', 32), 'hex'), true, nextval('palisade_bench.palisade_lease_tokens'), NULL,
       false, now(), now() + interval '1 day', decode(repeat('ab', 160), 'hex')
FROM generate_series(1, 100000) AS i;
VACUUM ANALYZE palisade_bench.palisade_leases;
VACUUM ANALYZE palisade_bench.orders;
CHECKPOINT;
