# Palisade tasks. Nothing here is required: the README's commands work without `just`.

# Run the whole test suite (what the README says).
test:
    cargo test --workspace

# fmt check and clippy with warnings as errors.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# criterion benchmarks, side by side with the peer crates (results: docs/BENCHMARKS.md).
bench *ARGS:
    cargo bench --workspace {{ARGS}}

# `palisade recon` against DuckDB, pandas and the seed as whole processes (venvs and data under /tmp).
bench-recon *SIZES="1000000 10000000":
    SIZES="{{SIZES}}" bash bench/recon/run.sh

# Start a local Redis on 127.0.0.1:6379 if none answers.
redis:
    #!/usr/bin/env bash
    if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then echo "redis already answers on 6379"; \
    else redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no; fi

# Start (or reuse, or repair) a local Redis Cluster on 127.0.0.1:7000-7005; prints its PALISADE_REDIS_CLUSTER URL.
redis-cluster:
    .ci/redis-cluster

# The checkout walkthrough (in-memory; `just example redis` for Redis-backed stores).
example MODE="memory":
    #!/usr/bin/env bash
    if [ "{{MODE}}" = redis ]; then export PALISADE_REDIS_URL=redis://127.0.0.1:6379; fi
    cargo run --example checkout

# Exactly what CI runs.
ci:
    bash .ci/run
