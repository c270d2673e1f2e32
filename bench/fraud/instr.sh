#!/usr/bin/env bash
# Instructions per decision of the seed's 10-rule set on the memory velocity store (built-in rules and rule file),
# counted by callgrind: two runs with 1 and 2 measured passes over the 50k contexts, the difference divided by
# 50k. Holds on a busy machine where wall time does not. Usage: bench/fraud/instr.sh [builtin file]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p palisade-fraud --example fraud_instr
bin=target/release/examples/fraud_instr
out=$(mktemp -d)
count() { valgrind --tool=callgrind --callgrind-out-file="$out/cg.$1.$2" "$bin" "$1" "$2" >/dev/null 2>"$out/log.$1.$2";
          grep -m1 '^summary:' "$out/cg.$1.$2" | awk '{print $2}'; }
for what in "${@:-builtin file}"; do
  for w in $what; do
    a=$(count "$w" 1); b=$(count "$w" 2)
    echo "$w: $(( (b - a) / 50000 )) instructions/decision"
  done
done
echo "callgrind files in $out (callgrind_annotate $out/cg.<what>.2)"
