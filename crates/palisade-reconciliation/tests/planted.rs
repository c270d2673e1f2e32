//! Random ledgers with planted discrepancies of every kind, rows shuffled on both sides: the reconciler finds
//! exactly the planted set, nothing more, and the totals add up.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use palisade_core::{Currency, Money};
use palisade_reconciliation::{CanonicalCsv, Kind, Reconciler};
use proptest::prelude::*;

const AS_OF: i64 = 1_714_608_000; // 2024-05-02T00:00:00Z
const LAG: i64 = 6 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plant {
    Clean,
    MissingInternal,
    MissingGateway,
    AmountMismatch,
    CurrencyMismatch,
    StatusMismatch,
    DuplicateInternal,
    DuplicateGateway,
    PendingInternalOnly,
    PendingGatewayOnly,
}

const PLANTS: [Plant; 10] = [
    Plant::Clean,
    Plant::MissingInternal,
    Plant::MissingGateway,
    Plant::AmountMismatch,
    Plant::CurrencyMismatch,
    Plant::StatusMismatch,
    Plant::DuplicateInternal,
    Plant::DuplicateGateway,
    Plant::PendingInternalOnly,
    Plant::PendingGatewayOnly,
];

const CURRENCIES: [Currency; 4] = [Currency::USD, Currency::JPY, Currency::BHD, Currency::EUR];

/// Spellings of one status on either side: the mapping must make them one.
const SUCCEEDED: [&str; 4] = ["succeeded", "captured", "paid", "SUCCEEDED"];
const OTHER: [&str; 3] = ["refunded", "failed", "pending"];

#[derive(Debug, Clone)]
struct Row {
    id: String,
    amount: String,
    currency: String,
    status: &'static str,
    created_at: String,
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .expect("in range")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// Text for `minor` units, sometimes with extra trailing zeros (`12.340`), which must read the same.
fn amount_text(minor: i64, cur: Currency, pad: bool) -> String {
    let text = Money::from_minor(minor, cur).amount().to_string();
    if pad && cur.exponent() > 0 { format!("{text}0") } else { text }
}

fn csv(rows: &[Row], order: &[usize], header_variant: bool) -> String {
    let mut out = String::new();
    if header_variant {
        // Columns in another order, with extra columns that must be ignored.
        out.push_str("note,created_at,status,currency,amount,id,customer\n");
        for &i in order {
            let r = &rows[i];
            out.push_str(&format!(
                "x,{},{},{},{},{},\"cus, {i}\"\n",
                r.created_at, r.status, r.currency, r.amount, r.id
            ));
        }
    } else {
        out.push_str("id,amount,currency,status,created_at\n");
        for &i in order {
            let r = &rows[i];
            out.push_str(&format!("{},{},{},{},{}\n", r.id, r.amount, r.currency, r.status, r.created_at));
        }
    }
    out
}

fn shuffled(n: usize, keys: &[u64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| keys[i % keys.len()].wrapping_mul(i as u64 + 1).rotate_left(i as u32 % 64));
    order
}

type Case = Vec<(usize, usize, i64, u32, usize, bool)>;

fn case() -> impl Strategy<Value = (Case, Vec<u64>, Vec<u64>, bool)> {
    (
        prop::collection::vec(
            (
                0..PLANTS.len(),
                0..CURRENCIES.len(),
                -1_000_000i64..100_000_000,
                0u32..30 * 86_400,
                0usize..4,
                any::<bool>(),
            ),
            0..80,
        ),
        prop::collection::vec(any::<u64>(), 1..8),
        prop::collection::vec(any::<u64>(), 1..8),
        any::<bool>(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn finds_exactly_the_planted_set((plants, keys_i, keys_g, variant) in case()) {
        let (mut internal, mut gateway) = (Vec::new(), Vec::new());
        let mut expected = BTreeSet::new();
        let mut internal_sums: BTreeMap<String, i128> = BTreeMap::new();
        let mut matched = 0u64;
        for (n, &(plant, cur, minor, age, spelling, pad)) in plants.iter().enumerate() {
            let plant = PLANTS[plant];
            let cur = CURRENCIES[cur];
            let id = format!("ch_{n:05}");
            let pending = matches!(plant, Plant::PendingInternalOnly | Plant::PendingGatewayOnly);
            // Old records sit before the lag window; pending ones inside it (or just after the cut-off).
            let created = if pending { AS_OF - i64::from(age) % LAG + 60 } else { AS_OF - LAG - 1 - i64::from(age) };
            let row = |amount: i64, cur: Currency, status: &'static str, shift: i64| Row {
                id: id.clone(),
                amount: amount_text(amount, cur, pad),
                // Codes in either case: Stripe writes `usd`.
                currency: if pad { cur.code().to_ascii_lowercase() } else { cur.code().to_owned() },
                status,
                created_at: rfc3339(created + shift),
            };
            let ok_i = SUCCEEDED[spelling];
            let ok_g = SUCCEEDED[(spelling + 1) % SUCCEEDED.len()];
            let (i_rows, g_rows) = match plant {
                Plant::Clean => (vec![row(minor, cur, ok_i, 0)], vec![row(minor, cur, ok_g, 5)]),
                Plant::MissingInternal | Plant::PendingGatewayOnly => (vec![], vec![row(minor, cur, ok_g, 0)]),
                Plant::MissingGateway | Plant::PendingInternalOnly => (vec![row(minor, cur, ok_i, 0)], vec![]),
                Plant::AmountMismatch => (vec![row(minor, cur, ok_i, 0)], vec![row(minor + 1 + i64::from(age % 7), cur, ok_g, 0)]),
                Plant::CurrencyMismatch => {
                    let other = CURRENCIES[(CURRENCIES.iter().position(|c| *c == cur).unwrap_or(0) + 1) % CURRENCIES.len()];
                    (vec![row(minor, cur, ok_i, 0)], vec![row(minor, other, ok_g, 0)])
                }
                Plant::StatusMismatch => (vec![row(minor, cur, ok_i, 0)], vec![row(minor, cur, OTHER[spelling % OTHER.len()], 0)]),
                Plant::DuplicateInternal => (vec![row(minor, cur, ok_i, 0), row(minor, cur, ok_i, 0)], vec![row(minor, cur, ok_g, 0)]),
                Plant::DuplicateGateway => (vec![row(minor, cur, ok_i, 0)], vec![row(minor, cur, ok_g, 0), row(minor, cur, ok_g, 0)]),
            };
            let kind = match plant {
                Plant::Clean => None,
                Plant::MissingInternal => Some(Kind::MissingInternal),
                Plant::MissingGateway => Some(Kind::MissingGateway),
                Plant::AmountMismatch => Some(Kind::AmountMismatch),
                Plant::CurrencyMismatch => Some(Kind::CurrencyMismatch),
                Plant::StatusMismatch => Some(Kind::StatusMismatch),
                Plant::DuplicateInternal => Some(Kind::DuplicateInternal),
                Plant::DuplicateGateway => Some(Kind::DuplicateGateway),
                Plant::PendingInternalOnly | Plant::PendingGatewayOnly => Some(Kind::Pending),
            };
            if let Some(k) = kind {
                expected.insert((k, id.clone()));
            }
            if matches!(plant, Plant::Clean | Plant::DuplicateInternal | Plant::DuplicateGateway) {
                matched += 1;
            }
            for _ in &i_rows {
                *internal_sums.entry(cur.code().to_owned()).or_default() += i128::from(minor);
            }
            internal.extend(i_rows);
            gateway.extend(g_rows);
        }
        let i_text = csv(&internal, &shuffled(internal.len(), &keys_i), false);
        let g_text = csv(&gateway, &shuffled(gateway.len(), &keys_g), variant);
        let report = Reconciler::builder()
            .as_of(AS_OF)
            .lag(Duration::from_secs(LAG as u64))
            .build()
            .reconcile(
                CanonicalCsv::from_reader("internal.csv", std::io::Cursor::new(i_text.into_bytes())).unwrap(),
                CanonicalCsv::from_reader("gateway.csv", std::io::Cursor::new(g_text.into_bytes())).unwrap(),
            )
            .unwrap();
        let found: BTreeSet<(Kind, String)> =
            report.discrepancies.iter().chain(&report.pending).map(|d| (d.kind, d.id.to_string())).collect();
        prop_assert_eq!(report.discrepancies.len() + report.pending.len(), found.len(), "one entry per planted id");
        prop_assert_eq!(&found, &expected);
        prop_assert_eq!(report.matched, matched);
        prop_assert_eq!(report.internal.records, internal.len() as u64);
        for t in &report.totals {
            prop_assert_eq!(t.internal, internal_sums.get(t.currency.code()).copied().unwrap_or(0), "{}", t.currency);
        }
        // Each discrepancy carries the sides that have the id.
        for d in &report.discrepancies {
            match d.kind {
                Kind::MissingInternal => prop_assert!(d.internal.is_none() && d.gateway.is_some()),
                Kind::MissingGateway => prop_assert!(d.internal.is_some() && d.gateway.is_none()),
                Kind::DuplicateInternal => prop_assert!(d.internal.is_some() && d.first.is_some()),
                Kind::DuplicateGateway => prop_assert!(d.gateway.is_some() && d.first.is_some()),
                _ => prop_assert!(d.internal.is_some() && d.gateway.is_some()),
            }
        }
    }
}
