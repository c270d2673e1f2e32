//! Scenario: reconciliation. At the end of the day the shop's ledger is compared with what the gateway really
//! did (the simulated gateway's ledger); every difference is explained, and a charge the gateway never made
//! pages on-call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade::core::*;
use palisade::reconciliation::{CanonicalCsv, Discrepancy, Kind, Reconciler};
use palisade::sim::{Fault, GatewaySim};
use tower::{Service, ServiceExt};

use crate::Env;
use crate::report::Report;

/// 2024-05-01T10:00:00Z: when the day's orders were placed, one a minute.
const DAY_START: i64 = 1_714_557_600;
/// The next midnight: the cut-off finance reconciles at.
const CUT_OFF: i64 = 1_714_608_000;

fn charge(order: &str, amount: &str, token: &str) -> GatewayRequest {
    GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).expect("valid amount"),
            PaymentToken::new(token).expect("valid token"),
            order.parse().expect("a reference without card data"),
        )
        .idempotency_key(IdempotencyKey::new(format!("k-{order}")).expect("valid key")),
    )
}

fn at(minute: i64) -> String {
    palisade::reconciliation::timestamp::format_rfc3339(DAY_START + minute * 60)
}

pub async fn reconciliation(r: &mut Report, _env: &Env) {
    r.scenario(
        "reconciliation",
        "Six orders are charged during the day. Three things go wrong on the shop's side: order-1102's\n\
         response is lost after the gateway charged it, and the shop never records it; a bug marks\n\
         order-1104 paid although its card was declined; order-1105 is written to the ledger at the cart's\n\
         old price. The nightly reconciliation must surface exactly these three, and page on-call for the\n\
         payment the gateway never took.",
    );
    let mut gw = GatewaySim::new();
    // (order, amount charged, card, amount the shop writes down, whether the shop writes it down at all)
    let orders = [
        ("order-1101", "25.00", "tok_visa", "25.00", true),
        ("order-1102", "75.00", "tok_visa", "75.00", false),
        ("order-1103", "12.50", "tok_visa", "12.50", true),
        ("order-1104", "40.00", "tok_chargeDeclined", "40.00", true),
        ("order-1105", "49.99", "tok_visa", "59.99", true),
        ("order-1106", "8.00", "tok_visa", "8.00", true),
    ];
    let mut shop = String::from("id,amount,currency,status,created_at\n");
    for (minute, (order, amount, token, recorded, records)) in (0i64..).zip(orders) {
        if order == "order-1102" {
            gw.script(Operation::Charge, [Fault::FailAfterCommit]);
        }
        let res = gw.ready().await.expect("sim is always ready").call(charge(order, amount, token)).await;
        let outcome = DefaultClassifier.classify(&res);
        r.step(format!("{order}: {amount} USD with {token} → {outcome:?}"));
        if records {
            shop.push_str(&format!("{order},{recorded},USD,succeeded,{}\n", at(minute)));
        }
    }

    // What the gateway really did, as its report: one row per charge in its ledger.
    let mut gateway = String::from("id,amount,currency,status,created_at\n");
    for (minute, e) in (0i64..).zip(gw.ledger()) {
        if e.operation == Operation::Charge {
            gateway.push_str(&format!(
                "{},{},{},succeeded,{}\n",
                e.order_id,
                e.amount.amount(),
                e.amount.currency(),
                at(minute)
            ));
        }
    }
    r.step(format!(
        "the shop's ledger has {} rows, the gateway's report {}",
        shop.lines().count() - 1,
        gateway.lines().count() - 1
    ));

    let paged = Arc::new(Mutex::new(Vec::<String>::new()));
    let pager = paged.clone();
    let reconciler = Reconciler::builder()
        .as_of(CUT_OFF)
        .lag(Duration::from_secs(3600))
        .on_async(Kind::MissingGateway, move |d: Discrepancy| {
            let pager = pager.clone();
            async move {
                // A real handler would call the paging service here.
                pager.lock().expect("not poisoned").push(d.id.to_string());
            }
        })
        .build();
    let report = reconciler
        .reconcile_async(
            CanonicalCsv::from_reader("shop-ledger.csv", std::io::Cursor::new(shop.into_bytes())).expect("header"),
            CanonicalCsv::from_reader("gateway-report.csv", std::io::Cursor::new(gateway.into_bytes()))
                .expect("header"),
        )
        .await;
    let Ok(report) = report else {
        r.check("the reconciliation runs", false);
        return;
    };
    for d in &report.discrepancies {
        r.step(format!("{}: {}", d.kind, d.id));
    }
    let found: Vec<(Kind, &str)> = report.discrepancies.iter().map(|d| (d.kind, &*d.id)).collect();
    r.check(
        "exactly three discrepancies: the lost charge, the phantom payment, the wrong amount",
        found
            == [
                (Kind::MissingInternal, "order-1102"),
                (Kind::MissingGateway, "order-1104"),
                (Kind::AmountMismatch, "order-1105"),
            ],
    );
    r.check("the three orders nothing happened to match", report.matched == 3);
    r.check("on-call was paged once, for order-1104", *paged.lock().expect("not poisoned") == ["order-1104"]);
    let usd = report.totals.iter().find(|t| t.currency == Currency::USD);
    let usd_text = |v: i128| palisade::reconciliation::amount::format_minor(v, Currency::USD.exponent());
    r.step(format!(
        "USD totals: shop {}, gateway {}",
        usd_text(usd.map_or(0, |t| t.internal)),
        usd_text(usd.map_or(0, |t| t.gross))
    ));
    // Shop 25 + 12.50 + 40 + 59.99 + 8 = 145.49; gateway 25 + 75 + 12.50 + 49.99 + 8 = 170.49.
    r.check(
        "the USD totals differ by exactly what the three explain (-75.00 + 40.00 + 10.00)",
        usd.map(|t| t.difference()) == Some(-2500),
    );
}
