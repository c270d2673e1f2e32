#!/usr/bin/env bash
# Palisade's saga vs the seed's `Saga`, same machine, same run (issue 20, "Speed"). From the repository root:
#
#   bench/saga/run.sh              # N=100000 sagas per round, ROUNDS=3, SIDES=2 alternations
#
# Palisade: a 4-step saga on the memory log (every step's start and end written), each step trivial async work
# with a compensation, N sagas one after the other on a current-thread tokio runtime
# (crates/palisade-saga/benches/saga.rs with SAGA_BENCH_LOOP=N). The seed: payments.saga.Saga (prod_py_utils
# 1.0.0) with the same 4 steps and no log, N sagas in one asyncio loop (bench/saga/seed_saga.py). Each side reports
# its best of ROUNDS rounds; the two sides run back to back SIDES times, alternating which goes first, and the
# script prints every run, the best per side and the ratio palisade / seed (goal ≥ 10×).
#
# Environment: N, ROUNDS, SIDES, SEED_PYTHON (default /tmp/palisade-seed/bin/python; made by
# /work/shared/seed-bench/setup.sh), CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${N:-100000}
ROUNDS=${ROUNDS:-3}
SIDES=${SIDES:-2}
PY=${SEED_PYTHON:-/tmp/palisade-seed/bin/python}
[ -x "$PY" ] || { echo "the seed's venv is missing: run /work/shared/seed-bench/setup.sh (or set SEED_PYTHON)" >&2; exit 1; }

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%Y-%m-%dT%H:%MZ)"
echo "palisade: $(rustc --version); seed: $("$PY" --version 2>&1)"

# Build once, then run the bench binary directly (cargo's output is not part of the measurement).
BIN=$(cargo bench -p palisade-saga --bench saga --no-run --message-format=json 2>/dev/null \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | grep '/saga-' | tail -1)
[ -x "$BIN" ] || { echo "could not build the saga bench" >&2; exit 1; }

ours() { SAGA_BENCH_LOOP=$N SAGA_BENCH_ROUNDS=$ROUNDS "$BIN" | tail -1; }
seed() { "$PY" bench/saga/seed_saga.py "$N" "$ROUNDS" | tail -1; }
field() { sed -n "s/.*\"$1\": \([0-9]*\).*/\1/p"; }

best_ours=0; best_seed=0
for side in $(seq "$SIDES"); do
    if [ $((side % 2)) -eq 1 ]; then order="ours seed"; else order="seed ours"; fi
    for who in $order; do
        line=$($who)
        echo "  run $side $who: $line"
        if [ "$who" = ours ]; then v=$(echo "$line" | field palisade_saga_4step_per_s); [ "$v" -gt "$best_ours" ] && best_ours=$v
        else v=$(echo "$line" | field seed_saga_4step_per_s); [ "$v" -gt "$best_seed" ] && best_seed=$v; fi
    done
done
echo "palisade (memory log): $best_ours sagas/s"
echo "seed (no log):         $best_seed sagas/s"
awk -v a="$best_ours" -v b="$best_seed" 'BEGIN { r = a / b; printf "ratio palisade / seed: %.2fx (goal >= 10x: %s)\n", r, (r >= 10 ? "met" : "not met") }'
