//! Stripe balance rows for many charges — each a charge with its fee, some partial refunds, maybe a dispute —
//! in random order, payouts mixed in: every charge folds to one record with the charge less its refunds, the
//! right status, and totals that are the sums of the rows.

use std::time::Duration;

use palisade_core::{Currency, Money};
use palisade_reconciliation::{CanonicalCsv, Kind, Reconciler, Status, StripeBalance};
use proptest::prelude::*;

const HEADER: &str =
    "balance_transaction_id,created_utc,charge_id,currency,gross,fee,net,reporting_category,source_id\n";

fn text(minor: i64) -> String {
    Money::from_minor(minor, Currency::USD).amount().to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn charges_fold_with_their_refunds_and_fees(
        charges in prop::collection::vec((100i64..1_000_000, 0i64..500, prop::collection::vec(1i64..100, 0..4), any::<bool>()), 1..20),
        order in prop::collection::vec(any::<u64>(), 1..8),
        payouts in 0usize..3,
    ) {
        let mut rows = Vec::new();
        let mut ledger = String::from("id,amount,currency,status,created_at\n");
        let (mut gross_total, mut fee_total) = (0i128, 0i128);
        for (n, (amount, fee, refund_parts, disputed)) in charges.iter().enumerate() {
            let id = format!("ch_{n}");
            rows.push(format!("txn_c{n},2024-05-01 10:00:00,{id},usd,{},{},{},charge,{id}\n", text(*amount), text(*fee), text(amount - fee)));
            // Refunds of up to the whole amount, in parts.
            let mut left = *amount;
            for (k, part) in refund_parts.iter().enumerate() {
                let refund = (amount * part / 100).min(left);
                left -= refund;
                rows.push(format!("txn_r{n}_{k},2024-05-01 11:00:00,{id},usd,-{},0.00,-{},refund,re_{n}_{k}\n", text(refund), text(refund)));
            }
            let mut dispute = false;
            if *disputed && left > 0 {
                rows.push(format!("txn_d{n},2024-05-01 12:00:00,{id},usd,-{},15.00,-{},dispute,dp_{n}\n", text(left), text(left + 1500)));
                fee_total += 1500;
                left = 0;
                dispute = true;
            }
            let status = if dispute {
                Status::Disputed
            } else if refund_parts.is_empty() {
                Status::Succeeded
            } else if left == 0 {
                Status::Refunded
            } else {
                Status::PartiallyRefunded
            };
            ledger.push_str(&format!("{id},{},USD,{status},2024-05-01T10:00:00Z\n", text(left)));
            gross_total += i128::from(left);
            fee_total += i128::from(*fee);
        }
        for p in 0..payouts {
            rows.push(format!("txn_p{p},2024-05-01 23:00:00,,usd,-100.00,0.00,-100.00,payout,po_{p}\n"));
        }
        rows.sort_by_key(|r| order[r.len() % order.len()].wrapping_mul(r.len() as u64 + 1) ^ r.bytes().map(u64::from).sum::<u64>());
        let report_text = format!("{HEADER}{}", rows.concat());
        let report = Reconciler::builder()
            .as_of(1_714_608_000)
            .lag(Duration::from_secs(3600))
            .build()
            .reconcile(
                CanonicalCsv::from_reader("ledger.csv", std::io::Cursor::new(ledger.into_bytes())).unwrap(),
                StripeBalance::from_reader("stripe.csv", std::io::Cursor::new(report_text.into_bytes())).unwrap(),
            )
            .unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.discrepancies);
        prop_assert_eq!(report.matched, charges.len() as u64);
        prop_assert_eq!(report.gateway.skipped, payouts as u64);
        prop_assert_eq!(report.count(Kind::Pending), 0);
        let usd = report.totals.iter().find(|t| t.currency == Currency::USD).unwrap();
        prop_assert_eq!((usd.gross, usd.fee, usd.difference()), (gross_total, fee_total, 0));
        prop_assert_eq!(usd.net, gross_total - fee_total);
    }
}
