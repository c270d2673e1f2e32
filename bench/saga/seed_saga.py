"""The seed's saga on the work of Palisade's saga bench (issue 20, "Speed").

Runs `payments.saga.Saga` (prod_py_utils 1.0.0) with 4 steps, each `async def step(ctx): return 1` with a
compensation `async def comp(ctx, r): return None`, and **no log** (`log=None`), as
/work/shared/seed-bench/seed_bench.py's `bench_saga` does: a new `Saga` per run, built and executed, N times in
one event loop. Prints one JSON line: {"seed_saga_4step_per_s": ..., "n": ..., "seconds": ..., "rounds": [...]}.

Usage: python seed_saga.py [N] [ROUNDS]     (default 20000 sagas, 3 rounds; the best round is reported)
"""

import asyncio
import json
import logging
import sys
import time

from payments import saga


async def step(ctx):
    return 1


async def comp(ctx, result):
    return None


async def run(n: int) -> float:
    t = time.perf_counter()
    for i in range(n):
        s = saga.Saga("checkout", log=None)
        for k in range(4):
            s.add_step(f"s{k}", step, comp)
        execution = await s.execute({"i": i})
        if execution.state is not saga.SagaState.COMPLETED:
            raise SystemExit(f"saga {i} ended {execution.state}")
    return time.perf_counter() - t


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    # The seed logs every step at INFO; the bench measures the saga, not logging (as seed_bench.py does).
    logging.disable(logging.CRITICAL)
    asyncio.run(run(min(n, 1000)))  # warm-up
    times = [asyncio.run(run(n)) for _ in range(rounds)]
    best = min(times)
    print(json.dumps({
        "seed_saga_4step_per_s": int(n / best),
        "n": n,
        "seconds": round(best, 4),
        "rounds_per_s": [int(n / t) for t in times],
    }), flush=True)


if __name__ == "__main__":
    main()
