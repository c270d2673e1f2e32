#!/usr/bin/env bash
# Fraud decisions/s on Redis at 50 concurrent (examples/fraud_redis_load.rs: the seed's rules, one EVALSHA per
# decision) next to redis-benchmark running the same velocity script (EVAL, the same keys' shape: 4 subjects x 3
# keys and the snapshot key, the same arguments) at the same concurrency, one after the other, twice; then the seed's FraudEngine and
# the memory-store rates (examples/fraud_instr.rs: rate, steady, then wide: 500k subjects of each kind), same run.
# Usage: bench/fraud/run.sh [redis-url]
set -euo pipefail
cd "$(dirname "$0")/../.."
url=${1:-${PALISADE_REDIS_URL:-redis://127.0.0.1:6379}}
hostport=${url#redis://}; host=${hostport%%:*}; port=${hostport##*:}; port=${port%%/*}
c=50; n=50000
cargo build --release -q -p palisade-fraud --example fraud_redis_load --example fraud_instr
# The script, as the store sends it (the RECORD constant of src/velocity/redis.rs).
script=$(sed -n '/^const RECORD: &str = r"$/,/^";$/p' crates/palisade-fraud/src/velocity/redis.rs | sed '1d;$d')
keys=()
for s in card email ip customer; do
  for k in a m d; do keys+=("palisade-bench:fraud:{rb}:$k:$s:__rand_int__"); done
done
# The attempt's snapshot key (an attempt with an idempotency key, as every bench attempt has).
keys+=("palisade-bench:fraud:{rb}:s:k:__rand_int__")
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(date -u +%FT%TZ); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "redis: $(redis-cli -h "$host" -p "$port" INFO server | grep -m1 redis_version | tr -d '\r')"
for round in 1 2; do
  echo "--- round $round"
  target/release/examples/fraud_redis_load "$url" "$c" 1
  redis-benchmark -h "$host" -p "$port" -c "$c" -n "$n" -r 20000 --csv \
    EVAL "$script" 13 "${keys[@]}" 600000 3600000 86400000 k:__rand_int__ USD 1000 1 0 0 | tail -1 |
    awk -F'","' '{print "redis-benchmark EVAL (same script), '"$c"' clients: " $2 " requests/s"}'
  redis-cli -h "$host" -p "$port" --scan --pattern 'palisade-bench:fraud:*' | xargs -r -n 1000 redis-cli -h "$host" -p "$port" DEL >/dev/null
done
echo "--- memory store, same run"
if [ -x /tmp/palisade-seed/bin/python ]; then
  /tmp/palisade-seed/bin/python crates/palisade-fraud/benches/seed_fraud.py 3
fi
target/release/examples/fraud_instr rate 5
target/release/examples/fraud_instr steady 3
target/release/examples/fraud_instr wide 500000
if [ -x /tmp/palisade-seed/bin/python ]; then
  /tmp/palisade-seed/bin/python crates/palisade-fraud/benches/seed_fraud.py 3
fi
