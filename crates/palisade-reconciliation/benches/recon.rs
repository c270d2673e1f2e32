//! The reconciler against the straightforward Rust program (csv + serde rows, `Money::parse`, two std
//! `HashMap<String, Row>`s, one thread), and its amount reader against `Money::parse`, side by side in one run.
//!
//! Run: `cargo bench -p palisade-reconciliation --bench recon -- --warm-up-time 1 --measurement-time 5`
//! Whole-process figures against DuckDB, pandas and the seed come from `bench/recon/run.sh`.

#![allow(missing_docs)] // criterion's macros generate undocumented functions

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use palisade_core::{Currency, Money};
use palisade_reconciliation::amount::parse_minor;
use palisade_reconciliation::{CanonicalCsv, Reconciler};

const ROWS: u64 = 100_000;

/// A ledger and a report of `ROWS` rows each; every 1000th amount differs by a cent.
fn files() -> (Vec<u8>, Vec<u8>) {
    let (mut i, mut g) = (String::new(), String::new());
    for out in [&mut i, &mut g] {
        out.push_str("id,amount,currency,status,created_at\n");
    }
    for n in 0..ROWS {
        let cents = 1000 + (n * 7919) % 500_000;
        let id = format!("ch_{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let ts = format!("2024-05-{:02}T{:02}:{:02}:00Z", 1 + n % 28, n % 24, n % 60);
        i.push_str(&format!("{id},{}.{:02},USD,succeeded,{ts}\n", cents / 100, cents % 100));
        let gc = if n % 1000 == 0 { cents + 1 } else { cents };
        g.push_str(&format!("{id},{}.{:02},USD,succeeded,{ts}\n", gc / 100, gc % 100));
    }
    (i.into_bytes(), g.into_bytes())
}

#[derive(serde::Deserialize)]
struct Row {
    id: String,
    amount: String,
    currency: String,
    status: String,
    created_at: String,
}

/// The straightforward program: deserialize rows, parse money with the core, two maps, compare.
fn naive(internal: &[u8], gateway: &[u8]) -> usize {
    let read = |bytes: &[u8]| {
        let mut map: HashMap<String, (i64, Currency, String, String)> = HashMap::new();
        for row in csv::Reader::from_reader(bytes).deserialize::<Row>() {
            let row = row.expect("valid row");
            let cur = Currency::from_code(&row.currency).expect("valid currency");
            let minor = Money::parse(&row.amount, cur).and_then(|m| m.to_minor()).expect("valid amount");
            map.insert(row.id, (minor, cur, row.status, row.created_at));
        }
        map
    };
    let (i, g) = (read(internal), read(gateway));
    let mut differences = 0;
    for (id, a) in &i {
        match g.get(id) {
            Some(b) if a.0 == b.0 && a.1 == b.1 && a.2 == b.2 => {}
            _ => differences += 1,
        }
    }
    differences + g.keys().filter(|id| !i.contains_key(*id)).count()
}

fn reconcile(c: &mut Criterion) {
    let (i, g) = files();
    let mut group = c.benchmark_group("reconcile_100k_plus_100k");
    group.throughput(Throughput::Elements(2 * ROWS));
    group.sample_size(10);
    let rec = Reconciler::builder().build();
    group.bench_function("palisade", |b| {
        b.iter(|| {
            let report = rec
                .reconcile(
                    CanonicalCsv::from_reader("i.csv", std::io::Cursor::new(i.clone())).expect("header"),
                    CanonicalCsv::from_reader("g.csv", std::io::Cursor::new(g.clone())).expect("header"),
                )
                .expect("valid files");
            black_box(report.discrepancies.len())
        });
    });
    group.bench_function("naive_serde_hashmap", |b| b.iter(|| black_box(naive(&i, &g))));
    group.finish();
}

fn amounts(c: &mut Criterion) {
    let texts: Vec<String> = (0..1000u64).map(|n| format!("{}.{:02}", (n * 7919) % 100_000, n % 100)).collect();
    let mut group = c.benchmark_group("amount_1000");
    group.throughput(Throughput::Elements(texts.len() as u64));
    group.bench_function("parse_minor", |b| {
        b.iter(|| texts.iter().map(|t| parse_minor(t.as_bytes(), Currency::USD).unwrap_or(0)).sum::<i64>());
    });
    group.bench_function("money_parse_to_minor", |b| {
        b.iter(|| {
            texts.iter().map(|t| Money::parse(t, Currency::USD).and_then(|m| m.to_minor()).unwrap_or(0)).sum::<i64>()
        });
    });
    group.finish();
}

criterion_group!(benches, reconcile, amounts);
criterion_main!(benches);
