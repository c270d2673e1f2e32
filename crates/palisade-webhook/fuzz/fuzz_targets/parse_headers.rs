//! Header parsing never panics, and whatever parses satisfies the parsers' promises; full verification of
//! arbitrary header values under every scheme never panics and never accepts without the secret.

#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use palisade_webhook::scheme::{parse_github_header, parse_standard_signatures, parse_stripe_header};
use palisade_webhook::{GitHub, ManualClock, StandardWebhooks, Stripe, Verifier};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(h) = parse_stripe_header(&text) {
        assert!(!h.signatures.is_empty());
        assert!(h.timestamp.1 >= 0);
        assert_eq!(h.timestamp.0.parse::<i64>().ok(), Some(h.timestamp.1));
    }
    if let Ok(sigs) = parse_standard_signatures(&text) {
        assert!(!sigs.is_empty());
    }
    let _ = parse_github_header(&text);

    // Split the input into three header values and run whole verifications.
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (a, b, c) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("stripe-signature", a),
        ("webhook-signature", a),
        ("x-hub-signature-256", a),
        ("webhook-id", b),
        ("x-github-delivery", b),
        ("webhook-timestamp", c),
    ] {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    let clock = ManualClock::new(1_700_000_000);
    let verifiers = [
        Verifier::builder(Stripe).secret("whsec_fuzz").clock(clock.clone()).build(),
        Verifier::builder(StandardWebhooks).secret("whsec_ZnV6eg==").clock(clock.clone()).build(),
        Verifier::builder(GitHub).secret("fuzz").clock(clock).build(),
    ];
    for v in verifiers.into_iter().flatten() {
        // Forging an HMAC-SHA256 by fuzzing is not expected: acceptance would mean a broken comparison.
        assert!(v.verify(&headers, data).is_err());
    }
});
