#!/usr/bin/env bash
# PostgresStore vs pgbench running the same statements (issue 19, "Speed"). From the repository root:
#
#   bench/postgres/run.sh            # CLIENTS=50 SECS=10 ROUNDS=2 by default
#
# Builds examples/pg_throughput (palisade-idempotency, feature postgres), migrates the schema palisade_bench,
# then for each round and each mode (new, replay, tx) resets the fixture (setup.sql: empty table, 100000 done
# rows, CHECKPOINT) before every run and runs ours and pgbench back to back, alternating which goes first
# (round 1: ours first, round 2: pgbench first). Also runs ours with sqlx's default pool test on every acquire
# (`--ping`), and ours in mode `order` (claim, INSERT order, complete, no transaction). Prints every run, then
# the mean rate per side and the ratio ours / pgbench.
#
# Environment: PALISADE_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres), CLIENTS, SECS,
# ROUNDS, THREADS (pgbench -j, default 2), CARGO_TARGET_DIR, PGBENCH (path of pgbench).
set -euo pipefail
cd "$(dirname "$0")/../.."
URL=${PALISADE_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
CLIENTS=${CLIENTS:-50}
SECS=${SECS:-10}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
PGBENCH=${PGBENCH:-$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | sort -V | tail -1)}
[ -x "$PGBENCH" ] || { echo "pgbench not found (set PGBENCH)" >&2; exit 1; }
TARGET=${CARGO_TARGET_DIR:-target}
DIR=bench/postgres

cargo build --release -q -p palisade-idempotency --features postgres --example pg_throughput
BIN=$TARGET/release/examples/pg_throughput
"$BIN" --url "$URL" --setup-only

FP='\x'$(printf '5a%.0s' $(seq 32))     # the fingerprint of every request (32 bytes)
RESP='\x'$(printf 'ab%.0s' $(seq 160))  # the stored answer (160 bytes)
RESULTS=$(mktemp)
trap 'rm -f "$RESULTS"' EXIT

reset() { PGOPTIONS="-c client_min_messages=warning" psql -q -X -v ON_ERROR_STOP=1 "$URL" -f "$DIR/setup.sql" >/dev/null; }
ours() { # mode [--ping]
    reset
    local line; line=$("$BIN" --url "$URL" --clients "$CLIENTS" --seconds "$SECS" --mode "$1" ${2:-})
    echo "  ours${2:+ $2} $line"
    echo "ours${2:+-ping} $1 $(awk '{print $2}' <<<"$line")" >>"$RESULTS"
}
pgb() { # mode
    reset
    local out tps
    out=$("$PGBENCH" -n -M prepared -c "$CLIENTS" -j "$THREADS" -T "$SECS" -D fp="$FP" -D resp="$RESP" \
        -f "$DIR/$1.sql" "$URL" 2>&1) || { echo "$out" >&2; exit 1; }
    tps=$(awk '/^tps = /{print $3}' <<<"$out")
    echo "  pgbench $1: $(printf '%.0f' "$tps") tps ($(awk '/failed transactions/{print $5}' <<<"$out") failed)"
    echo "pgbench $1 $tps" >>"$RESULTS"
}

echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'); $(psql -X -At "$URL" -c 'SHOW server_version')"
echo "clients $CLIENTS, $SECS s per run, pgbench -M prepared -j $THREADS"
for round in $(seq "$ROUNDS"); do
    echo "round $round"
    for mode in new replay tx; do
        if [ $((round % 2)) -eq 1 ]; then ours "$mode"; pgb "$mode"; else pgb "$mode"; ours "$mode"; fi
    done
    ours new --ping
    ours replay --ping
    ours order
done

echo
echo "mean over $ROUNDS rounds:"
awk '
    { sum[$1" "$2] += $3; n[$1" "$2]++ }
    END {
        split("new replay tx", modes, " ")
        goal["new"] = 0.8; goal["replay"] = 0.9
        for (i = 1; i <= 3; i++) {
            m = modes[i]; o = sum["ours " m] / n["ours " m]; p = sum["pgbench " m] / n["pgbench " m]
            line = sprintf("  %-7s ours %7.0f/s  pgbench %7.0f/s  ratio %.2f", m, o, p, o / p)
            if (m in goal) line = line sprintf(" (goal >= %.1f: %s)", goal[m], o / p >= goal[m] ? "met" : "MISSED")
            if (n["ours-ping " m]) {
                q = sum["ours-ping " m] / n["ours-ping " m]
                line = line sprintf("; with sqlx ping on acquire %.0f/s, ratio %.2f", q, q / p)
            }
            print line
        }
        o = sum["ours new"] / n["ours new"]; t = sum["ours tx"] / n["ours tx"]; r = sum["ours order"] / n["ours order"]
        printf "  transactional completion (claim + BEGIN, INSERT order, complete_in, COMMIT): %.0f/s = %.2fx plain new (%.2f ms vs %.2f ms per request at %d callers)\n", t, t / o, 1000 * '"$CLIENTS"' / t, 1000 * '"$CLIENTS"' / o, '"$CLIENTS"'
        printf "  same writes without the transaction (claim, INSERT order, complete): %.0f/s = %.2fx plain new\n", r, r / o
    }' "$RESULTS"
