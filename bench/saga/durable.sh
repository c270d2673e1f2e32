#!/usr/bin/env bash
# Palisade's saga on RedisLog and PostgresLog at 50 concurrent, beside redis-benchmark and pgbench doing the same
# writes at the same concurrency, in one run (issue 20, "Speed"). From the repository root:
#
#   bench/saga/durable.sh            # REDIS_SAGAS=20000 PG_SAGAS=5000 C=50 PG_SECONDS=15
#
# A saga of 4 steps writes its log 10 times: create, each step's start and end, finished; each write is one
# round trip (one EVALSHA on Redis, one statement, committed on its own, on PostgreSQL).
#
# - Redis: the Palisade bench (crates/palisade-saga/benches/saga.rs, SAGA_BENCH_BACKEND=redis: C sagas at a
#   time over the log's one multiplexed connection, one client thread), then `redis-benchmark -c C` calling the
#   log's own append script (EVALSHA of RedisLog's APPEND, read from its source: HGET the token, RPUSH the event,
#   HSET the state) on hashes that hold a matching token, so the script does the whole write. Ratio: Palisade's
#   log writes/s to redis-benchmark's EVALSHA/s.
# - PostgreSQL: the Palisade bench (SAGA_BENCH_BACKEND=postgres, a pool of C connections), then `pgbench -c C
#   -M prepared` running the log's own statements for one saga per pgbench transaction: the INSERT of `create`,
#   then 9 times the `append` statement (UPDATE the saga row, INSERT the event, in one statement), each
#   autocommitted, as the log runs them. Same server, same durability (synchronous_commit as configured,
#   printed below). Ratio: Palisade's sagas/s to pgbench's.
#
# Environment: REDIS_SAGAS, PG_SAGAS, C, PG_SECONDS, PALISADE_REDIS_URL (default redis://127.0.0.1:6379),
# PALISADE_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), SKIP_REDIS=1, SKIP_POSTGRES=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
REDIS_SAGAS=${REDIS_SAGAS:-20000}
PG_SAGAS=${PG_SAGAS:-5000}
C=${C:-50}
PG_SECONDS=${PG_SECONDS:-15}
REDIS_URL=${PALISADE_REDIS_URL:-redis://127.0.0.1:6379}
PG_URL=${PALISADE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export PALISADE_REDIS_URL=$REDIS_URL PALISADE_POSTGRES_URL=$PG_URL

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"

BIN=$(cargo bench -p palisade-saga --bench saga --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/saga-' | tail -1)
[ -x "$BIN" ] || { echo "could not build the saga bench" >&2; exit 1; }
field() { sed -n "s/.*\"$1\": \([0-9.]*\).*/\1/p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

if [ "${SKIP_REDIS:-}" != 1 ]; then
    # host and port from the URL (redis://[user@]host:port[/db])
    hp=${REDIS_URL#redis://}; hp=${hp#*@}; hp=${hp%%/*}; RH=${hp%%:*}; RP=${hp##*:}
    rcli() { redis-cli -h "$RH" -p "$RP" "$@"; }
    echo "redis: $(rcli info server | sed -n 's/^redis_version:\(.*\)\r$/\1/p'), appendonly $(rcli config get appendonly | tail -1)"
    line=$(SAGA_BENCH_BACKEND=redis SAGA_BENCH_LOOP=$REDIS_SAGAS SAGA_BENCH_CONCURRENCY=$C "$BIN" | tail -1)
    echo "  palisade RedisLog: $line"
    ours_sagas=$(echo "$line" | field sagas_per_s); ours_writes=$(echo "$line" | field transitions_per_s)

    # RedisLog's APPEND script, read from its source (KEYS = saga hash, event list; ARGV = token, event, state,
    # terminal).
    APPEND=$(sed -n '/^const APPEND: &str = "$/,/^";$/p' crates/palisade-saga/src/log/redis.rs | sed '1d;$d')
    [ -n "$APPEND" ] || { echo "could not read RedisLog's APPEND script" >&2; exit 1; }
    sha=$(rcli script load "$APPEND")
    P="palisade:saga-peer:$$"
    KEYSPACE=1000
    # Hashes with the token the benchmark sends, for every key redis-benchmark's __rand_int__ can make
    # (12 digits, zero-padded, below KEYSPACE).
    for i in $(seq 0 $((KEYSPACE - 1))); do printf 'HSET %s:{%012d}:saga token 7 state running\n' "$P" "$i"; done | rcli >/dev/null
    n=$((REDIS_SAGAS * 10))
    out=$(redis-benchmark -h "$RH" -p "$RP" -c "$C" -n "$n" -r "$KEYSPACE" -q \
        EVALSHA "$sha" 2 "$P:{__rand_int__}:saga" "$P:{__rand_int__}:events" 7 \
        '{"event":"step_started","step":"s0","attempt":1}' running 0 2>/dev/null | tr '\r' '\n' | grep -a 'requests per second' | tail -1)
    echo "  redis-benchmark -c $C -n $n EVALSHA <RedisLog APPEND>: $out"
    peer=$(echo "$out" | sed -n 's/.*: \([0-9.]*\) requests per second.*/\1/p')
    rcli --scan --pattern "$P:*" | xargs -r -n 500 redis-cli -h "$RH" -p "$RP" del >/dev/null
    echo "REDIS: palisade $ours_sagas sagas/s = $ours_writes log writes/s; redis-benchmark $peer EVALSHA/s (= $(awk -v p="$peer" 'BEGIN { printf "%.0f", p / 10 }') sagas/s at 10 round trips a saga); ratio $(ratio "$ours_writes" "$peer")"
fi

if [ "${SKIP_POSTGRES:-}" != 1 ]; then
    psqlq() { psql "$PG_URL" -Atqc "$1"; }
    echo "postgres: $(psqlq 'show server_version'), synchronous_commit=$(psqlq 'show synchronous_commit'), fsync=$(psqlq 'show fsync'), wal_sync_method=$(psqlq 'show wal_sync_method'), commit_delay=$(psqlq 'show commit_delay')"
    line=$(SAGA_BENCH_BACKEND=postgres SAGA_BENCH_LOOP=$PG_SAGAS SAGA_BENCH_CONCURRENCY=$C "$BIN" | tail -1)
    echo "  palisade PostgresLog: $line"
    ours_sagas=$(echo "$line" | field sagas_per_s); ours_writes=$(echo "$line" | field transitions_per_s)

    # The log's statements (crates/palisade-saga/src/log/postgres.rs, prefix palisade_saga_bench_, which the
    # Palisade run migrated), one saga per pgbench transaction, each statement autocommitted.
    T=palisade_saga_bench_sagas E=palisade_saga_bench_saga_events NOW='statement_timestamp()'
    script=$(mktemp /tmp/saga-pgbench.XXXXXX.sql)
    {
        echo '\set r random(1, 1000000000000000)'
        echo "INSERT INTO $T (id, name, context, state, owner, token, seq, lease_until, created_at, updated_at) VALUES ('pgbench-' || :client_id || '-' || :r, 'bench', '{\"i\": 1}'::jsonb, 'running', 'bench', nextval('palisade_saga_bench_saga_tokens'), 0, $NOW + 10000 * interval '1 millisecond', $NOW, $NOW) ON CONFLICT (id) DO NOTHING RETURNING token"
        echo '\gset'
        for k in 1 2 3 4 5 6 7 8 9; do
            if [ "$k" = 9 ]; then st=completed; fin=true; ev='{"event":"finished","state":"completed"}'
            else st=running; fin=false; ev='{"event":"step_started","step":"s0","attempt":1}'; fi
            echo "WITH s AS (UPDATE $T SET state = '$st', seq = seq + 1, updated_at = $NOW, owner = CASE WHEN $fin THEN NULL ELSE owner END, lease_until = CASE WHEN $fin THEN $NOW ELSE lease_until END WHERE id = 'pgbench-' || :client_id || '-' || :r AND token = :token RETURNING seq) INSERT INTO $E (saga_id, seq, event, at) SELECT 'pgbench-' || :client_id || '-' || :r, s.seq, '$ev'::jsonb, $NOW FROM s;"
        done
    } > "$script"
    out=$(pgbench -n -M prepared -c "$C" -j 2 -T "$PG_SECONDS" -f "$script" "$PG_URL" 2>&1)
    peer=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    echo "  pgbench -n -M prepared -c $C -j 2 -T $PG_SECONDS (the log's create + 9 appends a transaction): $(echo "$out" | grep -E 'number of transactions actually processed|latency average|^tps' | tr '\n' ';')"
    psqlq "DELETE FROM $T WHERE id LIKE 'pgbench-%'" >/dev/null
    rm -f "$script"
    echo "POSTGRES: palisade $ours_sagas sagas/s = $ours_writes statements/s; pgbench $peer sagas/s = $(awk -v p="$peer" 'BEGIN { printf "%.0f", p * 10 }') statements/s; ratio $(ratio "$ours_sagas" "$peer")"
fi
