//! Scenario: log redaction. Card data typed into a support note never reaches a log line.

use palisade::core::*;
use palisade::redaction::{AuditLayer, RedactingMakeWriter, Redactor};
use palisade::sim::GatewaySim;
use palisade_testkit::LogCapture;
use tower::{ServiceBuilder, ServiceExt};

use crate::Env;
use crate::report::Report;

const NOTE: &str = "Customer called: please charge card 4111111111111111, cvv 123, exp 12/27";

pub async fn log_redaction(r: &mut Report, _env: &Env) {
    r.scenario(
        "log redaction",
        "A support agent pastes the customer's own words into the order: a card number and its CVV.\n\
         The note is logged; it cannot ride the charge as metadata (a reference holding a card is refused),\n\
         and the charge goes through the audit layer (AuditLayer) to the gateway.\n\
         Every byte the log formatter writes passes the redacting writer first, so the captured log\n\
         shows the card as ************1111 and the CVV as ***.",
    );
    let cap = LogCapture::new();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(RedactingMakeWriter::new(Redactor::new(), cap.clone()))
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    tracing::info!(order = "order-1701", note = NOTE, "support note added");
    // A third-party crate logging the same text through its own target is scrubbed too.
    tracing::warn!(target: "legacy_crm::sync", "synced ticket for order-1701: {NOTE}");

    let gw = GatewaySim::new();
    let svc = ServiceBuilder::new().layer(AuditLayer::builder().service_name("sim").build()).service(gw.clone());
    let req = GatewayRequest::Charge(
        ChargeRequest::new(
            Money::parse("18.50", Currency::USD).expect("valid amount"),
            PaymentToken::new("tok_visa").expect("valid token"),
            "order-1701".parse().expect("a reference without card data"),
        )
        .meta("support_ticket", "ticket-1701".parse().expect("a reference without card data"))
        .idempotency_key(IdempotencyKey::new("k-1701").expect("valid key")),
    );
    let res = svc.oneshot(req).await;
    let note_refused = NOTE.parse::<Reference>().is_err();

    let log = cap.contents();
    for line in log.lines() {
        r.step(line.trim_end());
    }
    r.check(
        "the charge went through: one charge for order-1701 in the ledger",
        res.is_ok() && gw.charges_for("order-1701").len() == 1,
    );
    r.check(
        "the note with the card number is refused as charge metadata, so it never reaches the gateway",
        note_refused,
    );
    r.check("the captured log shows the card as ************1111", log.contains("************1111"));
    r.check(
        "no line of the log holds a card number",
        !log.contains("4111111111111111")
            && !log.contains("4111 1111 1111 1111")
            && log.lines().all(|l| !palisade::core::card::contains_card_like(l)),
    );
    r.check(
        "no CVV: every `cvv 123` became `cvv ***`",
        !log.contains("cvv 123") && log.matches("cvv ***").count() >= 2,
    );
    r.check(
        "the audit layer recorded the call with its outcome",
        log.lines().any(|l| l.contains("palisade::audit") && l.contains("outcome=\"success\"")),
    );
}
