//! Decisions per second of the seed's 10-rule set (3 velocity rules), built from Palisade's rules on the memory
//! store, over the seed's 50k varied contexts; the same rules loaded from a rule file beside it.
//! `benches/seed_fraud.py` measures the seed's `FraudEngine` on the same work (see docs/BENCHMARKS.md); the
//! contexts and rules are in `benches/seed_rules.rs`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "seed_rules.rs"]
mod seed_rules;
use seed_rules::{N, builtin_engine, contexts, file_engine};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ctxs = contexts();
    let mut g = c.benchmark_group("fraud_seed_10_rules");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    for (name, engine) in [("builtin_rules_memory", builtin_engine()), ("rule_file_memory", file_engine())] {
        // Warm the store with one pass so the measured passes are retries of known attempts (steady state).
        rt.block_on(async {
            for a in &ctxs {
                black_box(engine.assess(a).await);
            }
        });
        g.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    for a in &ctxs {
                        black_box(engine.assess(a).await);
                    }
                })
            })
        });
    }
    g.finish();
}

mod group {
    #![allow(missing_docs)]
    use super::{bench, criterion_group};
    criterion_group!(benches, bench);
}
criterion_main!(group::benches);
