-- The statements of crates/palisade-store/src/lease/postgres.rs (prefix
-- palisade_bench.palisade_), copied as they are. Run by run.sh: pgbench -n -M prepared -c 50 -j 2 -T 10 -D fp=\x5a.. -D resp=\xab.. -f FILE
-- (fp and resp are strings defined on the command line, so they travel as parameters, as sqlx binds them).
-- Transactional completion: claim a fresh key, then one transaction: INSERT the order, complete, COMMIT.
\set k random(1, 9223372036854775806)
\set attempt random(1, 9223372036854775806)
\set lease 30000
\set ttl 86400000
INSERT INTO palisade_bench.palisade_leases AS r (key, fingerprint, done, token, attempt, took_over, lease_until, expires_at)
VALUES ('n:' || :client_id::text || ':' || :k::text, :fp, false, nextval('palisade_bench.palisade_lease_tokens'), :attempt, false,
        statement_timestamp() + :lease::bigint * interval '1 millisecond',
        statement_timestamp() + :ttl::bigint * interval '1 millisecond')
ON CONFLICT (key) DO UPDATE SET
    fingerprint = EXCLUDED.fingerprint, done = false,
    token = GREATEST(EXCLUDED.token, r.token + 1), attempt = EXCLUDED.attempt,
    took_over = (r.expires_at > statement_timestamp()), lease_until = EXCLUDED.lease_until,
    expires_at = EXCLUDED.expires_at, response = NULL
WHERE r.expires_at <= statement_timestamp()
   OR (NOT r.done AND r.fingerprint = EXCLUDED.fingerprint AND r.lease_until <= statement_timestamp())
RETURNING token, took_over \gset
BEGIN;
INSERT INTO palisade_bench.orders (key, amount) VALUES ('n:' || :client_id::text || ':' || :k::text, 1000);
UPDATE palisade_bench.palisade_leases SET done = true, response = :resp,
    expires_at = statement_timestamp() + :ttl::bigint * interval '1 millisecond', attempt = NULL
WHERE key = 'n:' || :client_id::text || ':' || :k::text AND NOT done AND token = :token
  AND expires_at > statement_timestamp();
COMMIT;
