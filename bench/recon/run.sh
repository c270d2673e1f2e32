#!/usr/bin/env bash
# Times `palisade recon` and its peers as whole processes on the same generated files, in one run, on this
# machine: /usr/bin/time -v for wall time and peak RSS, the median of REPEAT runs, tools interleaved per round
# so background load hits all of them alike.
#
#   bench/recon/run.sh                 # 1M + 1M: ours, DuckDB, pandas, the seed; 10M + 10M: ours, DuckDB
#   SIZES="1000000" REPEAT=5 bench/recon/run.sh
#
# Needs: python3 (venvs are made under /tmp), /usr/bin/time. Data goes to $DATA (default /tmp/recon-bench),
# never into the repository.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DATA=${DATA:-/tmp/recon-bench}
SIZES=${SIZES:-"1000000 10000000"}
REPEAT=${REPEAT:-3}
SEED=${SEED:-7}
AS_OF=2024-05-31T00:00:00Z
PEERS_VENV=${PEERS_VENV:-/tmp/recon-bench-venv}
SEED_VENV=${PALISADE_SEED_VENV:-/tmp/palisade-seed}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

if [ ! -x "$PEERS_VENV/bin/python" ]; then python3 -m venv "$PEERS_VENV"; fi
"$PEERS_VENV/bin/pip" install -q -r "$ROOT/bench/recon/requirements.txt"
if [ -x "$ROOT/../shared/seed-bench/setup.sh" ] || [ -f "$ROOT/../shared/seed-bench/setup.sh" ]; then
  bash "$ROOT/../shared/seed-bench/setup.sh" >/dev/null
fi
(cd "$ROOT" && cargo build -q --release -p palisade-cli -p palisade-reconciliation --example gen_recon)
BIN=$CARGO_TARGET_DIR/release

echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) nproc=$(nproc) cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "# duckdb $("$PEERS_VENV/bin/python" -c 'import duckdb; print(duckdb.__version__)'), pandas $("$PEERS_VENV/bin/python" -c 'import pandas; print(pandas.__version__)')"

# measure NAME ROWS CMD...: prints "NAME ROWS seconds peak_kib" for one run; the tool's stdout goes to a log.
measure() {
  local name=$1 rows=$2; shift 2
  local log="$DATA/$rows/$name.time"
  /usr/bin/time -v "$@" >"$DATA/$rows/$name.stdout" 2>"$log" || [ $? -le 1 ] || { echo "$name failed:" >&2; cat "$log" >&2; exit 1; }
  local wall rss
  wall=$(grep 'Elapsed (wall clock)' "$log" | awk '{print $NF}' | awk -F: '{ if (NF==3) print $1*3600+$2*60+$3; else print $1*60+$2 }')
  rss=$(grep 'Maximum resident set size' "$log" | awk '{print $NF}')
  echo "$name $rows $wall $rss"
}

for rows in $SIZES; do
  dir="$DATA/$rows"
  rm -f "$dir"/*.stdout "$dir"/*.time
  if [ ! -f "$dir/expected.json" ]; then
    "$BIN/examples/gen_recon" --rows "$rows" --seed "$SEED" --out-dir "$dir"
  fi
  echo "# $rows + $rows rows: $(cat "$dir/expected.json")"
  for round in $(seq "$REPEAT"); do
    measure palisade "$rows" "$BIN/palisade" recon --internal "$dir/internal.csv" --gateway "$dir/gateway.csv" \
      --as-of "$AS_OF" --out "$dir/palisade.jsonl"
    measure duckdb "$rows" "$PEERS_VENV/bin/python" "$ROOT/bench/recon/duckdb_recon.py" \
      "$dir/internal.csv" "$dir/gateway.csv" "$dir/duckdb.csv" --as-of "$AS_OF"
    if [ "$rows" -le 1000000 ]; then
      measure pandas "$rows" "$PEERS_VENV/bin/python" "$ROOT/bench/recon/pandas_recon.py" \
        "$dir/internal.csv" "$dir/gateway.csv" "$dir/pandas.csv" --as-of "$AS_OF"
      if [ -x "$SEED_VENV/bin/python" ]; then
        measure seed "$rows" "$SEED_VENV/bin/python" "$ROOT/bench/recon/seed_recon.py" \
          "$dir/internal.csv" "$dir/gateway.csv" "$dir/seed.csv"
      fi
    fi
  done
  echo "# palisade says: $(grep -m1 '^reconciled' "$dir/palisade.time")"
  for t in duckdb pandas seed; do
    if [ -f "$dir/$t.stdout" ]; then echo "# $t says: $(cat "$dir/$t.stdout")"; fi
  done
done | tee "$DATA/results.txt"

# Medians and ratios (peer time / palisade time) per size.
awk '!/^#/ { key=$1" "$2; n[key]++; t[key, n[key]]=$3; m[key, n[key]]=$4; tools[$1]=1; sizes[$2]=1 }
function median(k, arr,   i, j, v, c, tmp) { c=n[k]; for (i=1;i<=c;i++) v[i]=arr[k, i];
  for (i=1;i<=c;i++) for (j=i+1;j<=c;j++) if (v[j]<v[i]) { tmp=v[i]; v[i]=v[j]; v[j]=tmp }; return v[int((c+1)/2)] }
END { printf "| rows per side | tool | wall s (median of runs) | peak RSS MiB | ratio vs palisade |\n|---|---|---|---|---|\n";
  for (s in sizes) { ours=median("palisade " s, t);
    split("palisade duckdb pandas seed", order, " ");
    for (o=1;o<=4;o++) { k=order[o]" "s; if (!(k in n)) continue; w=median(k, t);
      printf "| %d | %s | %.2f | %.0f | %.1fx |\n", s, order[o], w, median(k, m)/1024, w/ours } } }' "$DATA/results.txt"
