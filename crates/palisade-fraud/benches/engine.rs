//! Decisions per second of the seed's 10-rule set (3 velocity rules), built from Palisade's rules on the memory
//! store, over the seed's 50k varied contexts; the same rules loaded from a rule file beside it.
//! `benches/seed_fraud.py` measures the seed's `FraudEngine` on the same work (see docs/BENCHMARKS.md); the
//! contexts and rules are in `benches/seed_rules.rs`. Two paths: retries of known attempts (the same attempt ids
//! as a warm pass: the store reads its counts and records nothing) and new attempts on known subjects (fresh
//! attempt ids each pass, the same customers, cards, IPs and emails: every decision recorded, as in production).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

#[path = "seed_rules.rs"]
mod seed_rules;
use seed_rules::{N, builtin_engine, contexts, contexts_of, file_engine};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let ctxs = contexts();
    let mut g = c.benchmark_group("fraud_seed_10_rules");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    for (name, engine) in [("builtin_rules_memory", builtin_engine()), ("rule_file_memory", file_engine())] {
        // Warm the store with one pass so the measured passes are retries of known attempts.
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
        // Fresh attempt ids each pass, built and dropped outside the timed part: every decision is a new attempt.
        let mut pass = 0;
        g.bench_function(format!("{name}_new_attempts"), |b| {
            b.iter_batched_ref(
                || {
                    pass += 1;
                    contexts_of(pass)
                },
                |fresh| {
                    rt.block_on(async {
                        for a in fresh.iter() {
                            black_box(engine.assess(a).await);
                        }
                    })
                },
                criterion::BatchSize::LargeInput,
            )
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
