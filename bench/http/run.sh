#!/usr/bin/env bash
# examples/server with the whole stack vs the same server and handler with no Palisade layer (issue 22, "Speed",
# HTTP). From the repository root:
#
#   bench/http/run.sh            # CONNECTIONS=50 SECS=10 ROUNDS=2 STORES="memory redis postgres" by default
#
# Builds `examples/server` (release) and, for each round and store, starts it twice on a free port — `--bare`
# (POST /v1/checkouts runs the same checkout saga straight on the in-process simulator: no idempotency, fraud,
# breaker, retry, rate limit or audit layer) and the full stack — and drives POST /v1/checkouts with `wrk`
# (bench/http/checkout.lua: a new Idempotency-Key and order every request, so every request runs the whole saga),
# alternating which goes first. The server's gateway rate limit is raised (`--gateway-rate`) so that it measures
# the layers rather than the limit. Beside the Redis and PostgreSQL runs: `redis-benchmark` (SET, 50 clients)
# and `pgbench` (the built-in TPC-B-like script, 50 clients), in the same run, as the stores' own ceilings here.
#
# Environment: PALISADE_REDIS_URL, PALISADE_POSTGRES_URL, CONNECTIONS, SECS, ROUNDS, STORES, WRK_THREADS (2),
# CARGO_TARGET_DIR.
set -euo pipefail
export PGOPTIONS="-c client_min_messages=warning"
cd "$(dirname "$0")/../.."
REDIS=${PALISADE_REDIS_URL:-redis://127.0.0.1:6379}
PG=${PALISADE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CONNECTIONS=${CONNECTIONS:-50}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-2}
STORES=${STORES:-memory redis postgres}
WRK_THREADS=${WRK_THREADS:-2}
TARGET=${CARGO_TARGET_DIR:-target}
command -v wrk >/dev/null || { echo "wrk not found: apt-get install wrk" >&2; exit 1; }

cargo build --release -q --example server
BIN=$TARGET/release/examples/server
RESULTS=$(mktemp)
LOG=$(mktemp)
SERVER=
# What the runs leave in the stores (orders, stock holds, idempotency records, saga logs: millions of Redis keys
# after a few runs, enough to slow a test's `KEYS` past its timeout) is removed when the script ends, however it ends.
drop_data() {
    case " $STORES " in *" redis "*)
        local host port
        host=$(sed -E 's#^redis://([^:/]+).*#\1#' <<<"$REDIS"); port=$(sed -E 's#^redis://[^:]+:([0-9]+).*#\1#' <<<"$REDIS")
        redis-cli -h "$host" -p "$port" --scan --pattern "bench-http-$$:*" | xargs -r -d '\n' -n 5000 redis-cli -h "$host" -p "$port" UNLINK >/dev/null || true
        ;;
    esac
    case " $STORES " in *" postgres "*)
        psql -q -X "$PG" -c 'DROP SCHEMA IF EXISTS bench_http CASCADE' >/dev/null 2>&1 || true
        ;;
    esac
}
cleanup() { if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; fi; drop_data; rm -f "$RESULTS" "$LOG"; }
trap cleanup EXIT

store_args() { # store
    case $1 in
        memory) ;;
        redis) echo "--redis $REDIS --redis-prefix bench-http-$$:" ;;
        postgres) echo "--postgres $PG --postgres-prefix bench_http.palisade_" ;;
    esac
}

run() { # store mode(full|bare)
    local store=$1 mode=$2 port out rps errs
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # shellcheck disable=SC2046
    "$BIN" --addr "127.0.0.1:$port" $(store_args "$store") --gateway-rate 1000000 \
        $([ "$mode" = bare ] && echo --bare) >"$LOG" 2>&1 &
    SERVER=$!
    for _ in $(seq 1 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
    grep -q "listening on" "$LOG" || { cat "$LOG" >&2; exit 1; }
    out=$(wrk --latency -t "$WRK_THREADS" -c "$CONNECTIONS" -d "${SECS}s" -s bench/http/checkout.lua "http://127.0.0.1:$port")
    kill "$SERVER"; wait "$SERVER" 2>/dev/null || true; SERVER=
    rps=$(awk '/^Requests\/sec:/{print $2}' <<<"$out")
    errs=$(awk '/^statuses:/{print $2}' <<<"$out")
    echo "  $store $mode: $(printf '%.0f' "$rps") checkouts/s, p50 $(awk '/^ +50%/{print $2}' <<<"$out"), p99 $(awk '/^ +99%/{print $2}' <<<"$out"), $errs non-2xx"
    echo "$store $mode $rps" >>"$RESULTS"
}

peers() { # store
    case $1 in
        redis)
            local host port
            host=$(sed -E 's#^redis://([^:/]+).*#\1#' <<<"$REDIS"); port=$(sed -E 's#^redis://[^:]+:([0-9]+).*#\1#' <<<"$REDIS")
            redis-benchmark -h "$host" -p "$port" -c "$CONNECTIONS" -n 200000 -t set -q | tr '\r' '\n' | grep 'requests per second' | tail -n 1 | sed 's/^/  redis-benchmark (50 clients) /'
            ;;
        postgres)
            psql -q -X "$PG" -c 'CREATE SCHEMA IF NOT EXISTS bench_http' >/dev/null
            pgbench -q -i -s 1 "$PG" >/dev/null 2>&1
            pgbench -n -c "$CONNECTIONS" -j 2 -T "$SECS" "$PG" 2>&1 | awk '/^tps = /{printf "  pgbench (TPC-B-like, 5 statements per transaction): %.0f tps\n", $3}'
            psql -q -X "$PG" -c 'DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers' >/dev/null
            ;;
    esac
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); $(date -u +%F)"
echo "wrk -t $WRK_THREADS -c $CONNECTIONS -d ${SECS}s, POST /v1/checkouts (new key each)"
psql -q -X "$PG" -c 'CREATE SCHEMA IF NOT EXISTS bench_http' >/dev/null 2>&1 || true
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for store in $STORES; do
        if [ $((round % 2)) -eq 1 ]; then run "$store" full; run "$store" bare; else run "$store" bare; run "$store" full; fi
        if [ "$round" -eq 1 ]; then peers "$store"; fi
    done
done
echo "mean checkouts/s, full stack / bare:"
for store in $STORES; do
    awk -v s="$store" '$1==s && $2=="full"{f+=$3; nf++} $1==s && $2=="bare"{b+=$3; nb++}
        END{ if (nf && nb) printf "  %-8s full %.0f, bare %.0f: %.2fx\n", s, f/nf, b/nb, (f/nf)/(b/nb) }' "$RESULTS"
done
