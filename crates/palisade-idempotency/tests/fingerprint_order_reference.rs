//! Issue 16, finding 1, as the typed idempotency layer sees it: order references are fingerprinted and sent
//! exactly as given. Ids whose digit runs a Luhn-only masker turned into one `order-[REDACTED_PAN]` are two
//! different orders: two fingerprints, so the same idempotency key with the other order is a conflict, never a
//! replay of the first order's charge; and each reaches the gateway's ledger as sent.
//!
//! Nothing here depends on how precise core's card scanner is: the look-alike ids are checked against a
//! Luhn-only masker written below, and "holds a card" uses a real test PAN.

use palisade_core::card::luhn_valid;
use palisade_core::{GatewayRequest, PaymentError, Reference};
use palisade_idempotency::{Fingerprinted, IdempotencyLayer, MemoryStore};
use palisade_sim::GatewaySim;
use tower::{Layer, ServiceExt};

/// Order ids with a Luhn-valid 13-19 digit run, as in the report.
const LOOK_ALIKES: [&str; 3] = ["order-1733270400000", "order-1733270400018", "order-1796343902980048107"];

/// What a Luhn-only masker made of `text`: every Luhn-valid run of 13-19 ASCII digits replaced by
/// `[REDACTED_PAN]` (no IIN table, no guards), as core's message type once did to order references.
fn luhn_only_mask(text: &str) -> String {
    let bytes = text.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if run == 0 {
            let ch = text[i..].chars().next().unwrap_or_default();
            out.push(ch);
            i += ch.len_utf8().max(1);
        } else {
            let digits = &text[i..i + run];
            if (13..=19).contains(&run) && luhn_valid(digits.as_bytes()) {
                out.push_str("[REDACTED_PAN]");
            } else {
                out.push_str(digits);
            }
            i += run;
        }
    }
    out
}

fn charge(order: &str, key: Option<&str>) -> GatewayRequest {
    palisade_testkit::charge(order).maybe_key(key).build()
}

#[test]
fn ids_that_mask_alike_have_different_fingerprints() {
    // The premise: all three ids mask to the same text, so a fingerprint over masked text would collide.
    for id in LOOK_ALIKES {
        assert_eq!(luhn_only_mask(id), "order-[REDACTED_PAN]", "{id}");
    }
    let prints: Vec<_> = LOOK_ALIKES.iter().map(|id| charge(id, Some("k")).fingerprint()).collect();
    for (i, a) in prints.iter().enumerate() {
        for (j, b) in prints.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{} and {} collide", LOOK_ALIKES[i], LOOK_ALIKES[j]);
        }
    }
    // Stable: the same order is the same fingerprint, whatever the key.
    assert_eq!(charge(LOOK_ALIKES[0], Some("k")).fingerprint(), charge(LOOK_ALIKES[0], Some("other")).fingerprint());
    // The masked text itself is yet another order, not an alias of the real ids.
    assert!(!prints.contains(&charge("order-[REDACTED_PAN]", Some("k")).fingerprint()));
}

#[tokio::test(start_paused = true)]
async fn one_key_with_a_look_alike_order_is_a_conflict_not_a_replay() {
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(sim.clone());

    let first = svc.clone().oneshot(charge(LOOK_ALIKES[0], Some("shared-key"))).await.unwrap();
    assert_eq!(first.order_reference, LOOK_ALIKES[0]);
    for other in &LOOK_ALIKES[1..] {
        let res = svc.clone().oneshot(charge(other, Some("shared-key"))).await;
        assert_eq!(res, Err(PaymentError::IdempotencyConflict), "{other} was answered with another order's charge");
        assert!(sim.entries_for(other).is_empty(), "{other} reached the gateway: {:?}", sim.ledger());
    }
    // The first order, again: a replay, charged once.
    let again = svc.clone().oneshot(charge(LOOK_ALIKES[0], Some("shared-key"))).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(sim.ledger().len(), 1, "{:?}", sim.ledger());
}

#[tokio::test(start_paused = true)]
async fn each_order_reaches_the_ledger_exactly_as_sent() {
    let sim = GatewaySim::new();
    let svc = IdempotencyLayer::builder().store(MemoryStore::new()).build().layer(sim.clone());
    for (i, id) in LOOK_ALIKES.iter().enumerate() {
        let res = svc.clone().oneshot(charge(id, Some(&format!("key-{i}")))).await.unwrap();
        assert_eq!(res.order_reference, *id, "the answer echoes the order as sent");
        let entries = sim.entries_for(id);
        assert_eq!(entries.len(), 1, "{id}: {:?}", sim.ledger());
        assert_eq!(entries[0].order_id, *id);
    }
    assert!(sim.ledger().iter().all(|e| !e.order_id.contains("REDACTED")), "{:?}", sim.ledger());
    assert_eq!(sim.ledger().len(), LOOK_ALIKES.len());
}

#[test]
fn an_order_reference_holding_a_card_number_is_refused_before_any_request_exists() {
    for text in ["order-4242424242424242", "4242 4242 4242 4242"] {
        let refused = Reference::new(text).unwrap_err();
        let as_payment_error = PaymentError::from(refused);
        assert_eq!(as_payment_error.kind().as_str(), "invalid_request", "{text}");
        assert!(!as_payment_error.to_string().contains("4242"), "{as_payment_error}");
        // A request read from JSON is refused the same way: the typed layer never sees it.
        let json = serde_json::json!({
            "op": "charge",
            "amount": {"amount": "10.00", "currency": "USD"},
            "source": "tok_visa",
            "order_reference": text,
        });
        assert!(serde_json::from_value::<GatewayRequest>(json).is_err(), "{text}");
    }
}
