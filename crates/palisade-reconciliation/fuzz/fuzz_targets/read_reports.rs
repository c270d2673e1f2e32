//! Arbitrary bytes as a ledger and as each report format never panic: every row is either a record or a row
//! error with a line and a column, and the reject sink sees exactly the rows counted as rejected. Amount text is
//! read to the same minor units as `Money::parse`, or refused as it refuses.

#![no_main]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use palisade_core::{Currency, Money};
use palisade_reconciliation::amount::parse_minor;
use palisade_reconciliation::{AdyenSettlement, CanonicalCsv, Reconciler, Source, StripeBalance};

fn cursor(data: &[u8]) -> std::io::Cursor<Vec<u8>> {
    std::io::Cursor::new(data.to_vec())
}

fuzz_target!(|data: &[u8]| {
    for cur in [Currency::USD, Currency::JPY, Currency::BHD] {
        let core = std::str::from_utf8(data).ok().map(|t| Money::parse(t, cur).and_then(|m| m.to_minor()));
        match core {
            Some(expected) => assert_eq!(parse_minor(data, cur), expected),
            None => assert!(parse_minor(data, cur).is_err()),
        }
    }

    let mut parts = data.splitn(2, |b| *b == 0);
    let (ledger, report) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let rec = Reconciler::builder()
        .reject(move |e| {
            assert!(e.line >= 1);
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .build();
    let gateways: [Option<Box<dyn Source>>; 3] = [
        CanonicalCsv::from_reader("g.csv", cursor(report)).ok().map(|s| Box::new(s) as Box<dyn Source>),
        StripeBalance::from_reader("s.csv", cursor(report)).ok().map(|s| Box::new(s) as Box<dyn Source>),
        AdyenSettlement::from_reader("a.csv", cursor(report)).ok().map(|s| Box::new(s) as Box<dyn Source>),
    ];
    for gateway in gateways.into_iter().flatten() {
        let Ok(internal) = CanonicalCsv::from_reader("i.csv", cursor(ledger)) else { return };
        seen.store(0, Ordering::Relaxed);
        if let Ok(report) = rec.reconcile(internal, gateway) {
            assert_eq!(report.internal.rejected + report.gateway.rejected, seen.load(Ordering::Relaxed));
        }
    }
});
