//! Verification: spec vectors, rotation, tolerance edges, tampering, malformed headers, sign→verify round trips.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use palisade_webhook::scheme::{parse_github_header, parse_standard_signatures, parse_stripe_header};
use palisade_webhook::{
    GitHub, ManualClock, Message, Scheme, SecretError, SignError, Signer, StandardWebhooks, Stripe, Verifier,
    VerifyError,
};
use proptest::prelude::*;

// Standard Webhooks spec vector, from the reference libraries' tests in standard-webhooks/standard-webhooks
// (libraries/python/tests/test_webhooks.py, libraries/go/webhook_test.go): the secret, message id, payload and
// the signature of `test_sign_function` / `TestWebhookSign`, and the "invalid signature" and multi-signature
// cases of their verify tests.
const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SW_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const SW_TS: i64 = 1_614_265_330;
const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
const SW_WRONG: &str = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc=";
const SW_ONE_BIT_OFF: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=";

// Stripe vector computed from the documented algorithm and cross-checked with openssl and python3 hmac (see
// src/scheme/stripe.rs): HMAC-SHA256(key = "whsec_test_secret", "1700000000.{body}").
const ST_SECRET: &str = "whsec_test_secret";
const ST_TS: i64 = 1_700_000_000;
const ST_BODY: &[u8] = br#"{"id":"evt_1","object":"event"}"#;
const ST_V1: &str = "0c8670ed117751cc551a20e35839447075c42800ea3cf3e8a2fbda99cd1e6edd";

fn standard(now: i64, secrets: &[&str]) -> Verifier {
    secrets
        .iter()
        .fold(Verifier::builder(StandardWebhooks), |b, s| b.secret(*s))
        .clock(ManualClock::new(now))
        .build()
        .unwrap()
}

fn stripe(now: i64, secrets: &[&str]) -> Verifier {
    secrets.iter().fold(Verifier::builder(Stripe), |b, s| b.secret(*s)).clock(ManualClock::new(now)).build().unwrap()
}

fn sw_headers(sig: &str) -> HeaderMap {
    StandardWebhooks.headers_from_parts(sig, Some(SW_ID), Some(&SW_TS.to_string())).unwrap()
}

#[test]
fn standard_webhooks_spec_vectors() {
    let v = standard(SW_TS, &[SW_SECRET]);
    let ok = v.verify(&sw_headers(SW_SIG), SW_BODY).unwrap();
    assert_eq!(ok.event_id.as_deref(), Some(SW_ID));
    assert_eq!(ok.timestamp, Some(SW_TS));
    // The same secret without its prefix (the reference libraries accept both).
    standard(SW_TS, &["MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]).verify(&sw_headers(SW_SIG), SW_BODY).unwrap();
    assert_eq!(v.verify(&sw_headers(SW_WRONG), SW_BODY), Err(VerifyError::NoSignatureMatched));
    assert_eq!(v.verify(&sw_headers(SW_ONE_BIT_OFF), SW_BODY), Err(VerifyError::NoSignatureMatched));
    // Multi-signature header: wrong v1, a v2 entry, the valid one, wrong v1 again.
    let multi = format!("{SW_WRONG} v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {SW_SIG} {SW_WRONG}");
    v.verify(&sw_headers(&multi), SW_BODY).unwrap();
    // And it signs to the vector.
    let signed = Signer::new(StandardWebhooks, SW_SECRET)
        .unwrap()
        .signature(&Message { id: Some(SW_ID), timestamp: SW_TS, body: SW_BODY })
        .unwrap();
    assert_eq!(signed, SW_SIG);
}

#[test]
fn stripe_fixed_vector() {
    let v = stripe(ST_TS, &[ST_SECRET]);
    let header = format!("t={ST_TS},v1={ST_V1}");
    let ok = v.verify_parts(&header, None, None, ST_BODY).unwrap();
    assert_eq!(ok.event_id.as_deref(), Some("evt_1"));
    // v0 entries and unknown keys are ignored; any matching v1 passes.
    let with_noise = format!("t={ST_TS},v0={},v1={},v1={ST_V1},foo=bar", "0".repeat(64), "1".repeat(64));
    v.verify_parts(&with_noise, None, None, ST_BODY).unwrap();
    // A v0 holding the right value is not accepted as v1.
    let v0_only = format!("t={ST_TS},v0={ST_V1},v1={}", "1".repeat(64));
    assert_eq!(v.verify_parts(&v0_only, None, None, ST_BODY), Err(VerifyError::NoSignatureMatched));
    // The key is the whole secret string: without `whsec_` it is a different key.
    let wrong_key = stripe(ST_TS, &["test_secret"]);
    assert_eq!(wrong_key.verify_parts(&header, None, None, ST_BODY), Err(VerifyError::NoSignatureMatched));
}

#[test]
fn rotation_accepts_every_configured_secret_and_reports_which() {
    let now = 1_700_000_000;
    let body = br#"{"id":"evt_rot"}"#;
    let msg = Message { id: Some("msg_rot"), timestamp: now, body };
    let new = "whsec_bmV3LXNlY3JldC1ieXRlcw==";
    let old = "whsec_b2xkLXNlY3JldC1ieXRlcw==";
    let gone = "whsec_Z29uZS1zZWNyZXQtYnl0ZXM=";
    let v = standard(now, &[new, old]);
    for (secret, index) in [(new, 0), (old, 1)] {
        let h = Signer::new(StandardWebhooks, secret).unwrap().headers(&msg).unwrap();
        assert_eq!(v.verify(&h, body).unwrap().secret_index, index);
    }
    let h = Signer::new(StandardWebhooks, gone).unwrap().headers(&msg).unwrap();
    assert_eq!(v.verify(&h, body), Err(VerifyError::NoSignatureMatched));

    // Stripe during a roll: one v1 per active secret in a single header; a verifier with either secret passes.
    let sig_new = Signer::new(Stripe, "whsec_new").unwrap().signature(&msg).unwrap();
    let sig_old = Signer::new(Stripe, "whsec_old").unwrap().signature(&msg).unwrap();
    let both = format!("{sig_new},{}", sig_old.split_once(',').unwrap().1);
    for secret in ["whsec_new", "whsec_old"] {
        stripe(now, &[secret]).verify_parts(&both, None, None, body).unwrap();
    }
    assert_eq!(
        stripe(now, &["whsec_other"]).verify_parts(&both, None, None, body),
        Err(VerifyError::NoSignatureMatched)
    );
}

#[test]
fn tolerance_edges_past_and_future_separately() {
    let ts = 1_700_000_000;
    let body = b"{}";
    let h = Signer::new(Stripe, ST_SECRET).unwrap().headers(&Message { id: None, timestamp: ts, body }).unwrap();
    let clock = ManualClock::new(ts);
    let v = Verifier::builder(Stripe)
        .secret(ST_SECRET)
        .past_tolerance(Duration::from_secs(300))
        .future_tolerance(Duration::from_secs(30))
        .clock(clock.clone())
        .build()
        .unwrap();
    clock.set(ts + 300);
    v.verify(&h, body).expect("exactly 300 s old is inside");
    clock.set(ts + 301);
    assert_eq!(v.verify(&h, body), Err(VerifyError::TooOld { age_secs: 301, tolerance_secs: 300 }));
    clock.set(ts - 30);
    v.verify(&h, body).expect("exactly 30 s ahead is inside");
    clock.set(ts - 31);
    assert_eq!(v.verify(&h, body), Err(VerifyError::TooFarInFuture { ahead_secs: 31, tolerance_secs: 30 }));

    // Defaults: 300 s both ways.
    let v = stripe(ts, &[ST_SECRET]);
    assert_eq!(v.tolerance().past, Duration::from_secs(300));
    assert_eq!(v.tolerance().future, Duration::from_secs(300));

    // A window failure is reported only for a genuine signature: a forged old request is a mismatch.
    let mut forged = h.clone();
    forged.insert("stripe-signature", HeaderValue::from_str(&format!("t={ts},v1={}", "0".repeat(64))).unwrap());
    clock.set(ts + 10_000);
    assert_eq!(stripe(ts + 10_000, &[ST_SECRET]).verify(&forged, body), Err(VerifyError::NoSignatureMatched));
}

#[test]
fn github_has_no_window() {
    let body = b"{\"zen\":\"x\"}";
    let mut h = Signer::new(GitHub, "gh-secret")
        .unwrap()
        .headers(&Message { id: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"), timestamp: 0, body })
        .unwrap();
    let v = Verifier::builder(GitHub).secret("gh-secret").clock(ManualClock::new(i64::MAX / 2)).build().unwrap();
    let ok = v.verify(&h, body).unwrap();
    assert_eq!(ok.event_id.as_deref(), Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"));
    assert_eq!(ok.timestamp, None);
    h.remove("x-github-delivery");
    assert_eq!(v.verify(&h, body).unwrap().event_id, None);
}

#[test]
fn one_flipped_body_byte_is_rejected_under_every_scheme() {
    let now = 1_700_000_000;
    let body = br#"{"id":"evt_flip","amount":4999}"#.to_vec();
    let msg = Message { id: Some("msg_flip"), timestamp: now, body: &body };
    let cases: [(Box<dyn Scheme>, &str); 3] =
        [(Box::new(Stripe), ST_SECRET), (Box::new(StandardWebhooks), SW_SECRET), (Box::new(GitHub), "gh")];
    for (scheme, secret) in cases {
        let name = scheme.name();
        let key = scheme.key(secret).unwrap();
        let headers = scheme.sign_headers(&key, &msg).unwrap();
        let v = match name {
            "stripe" => stripe(now, &[secret]),
            "standard" => standard(now, &[secret]),
            _ => Verifier::builder(GitHub).secret(secret).build().unwrap(),
        };
        v.verify(&headers, &body).unwrap();
        for i in 0..body.len() {
            for bit in [0x01u8, 0x80] {
                let mut tampered = body.clone();
                tampered[i] ^= bit;
                assert_eq!(v.verify(&headers, &tampered), Err(VerifyError::NoSignatureMatched), "{name} byte {i}");
            }
        }
        let mut longer = body.clone();
        longer.push(b' ');
        assert_eq!(v.verify(&headers, &longer), Err(VerifyError::NoSignatureMatched), "{name} appended byte");
    }
}

/// Malformed headers, each with the check it must fail.
#[test]
fn malformed_header_table() {
    let hex = ST_V1;
    let stripe_cases: &[(&str, &str)] = &[
        ("", "header_malformed"),
        ("garbage", "header_malformed"),
        (&format!("v1={hex}"), "header_malformed"),
        ("t=1700000000", "header_malformed"),
        ("t=1700000000,v1=", "header_malformed"),
        ("t=1700000000,v1=zz", "header_malformed"),
        (&format!("t=1700000000,v1={}", &hex[..62]), "header_malformed"),
        (&format!("t=1700000000,v1={hex}00"), "header_malformed"),
        (&format!("t=1700000000,v0={hex}"), "header_malformed"),
        (&format!("t=1700000000,t=1700000000,v1={hex}"), "header_malformed"),
        (&format!("t=1700000000;v1={hex}"), "timestamp_malformed"),
        (&format!("t=,v1={hex}"), "timestamp_malformed"),
        (&format!("t=abc,v1={hex}"), "timestamp_malformed"),
        (&format!("t=-5,v1={hex}"), "timestamp_malformed"),
        (&format!("t=1.5,v1={hex}"), "timestamp_malformed"),
        (&format!("t=99999999999999999999,v1={hex}"), "timestamp_malformed"),
    ];
    for (value, kind) in stripe_cases {
        assert_eq!(parse_stripe_header(value).map(|_| ()).unwrap_err().kind(), *kind, "stripe {value:?}");
    }
    let sw_cases: &[(&str, &str)] = &[
        ("", "header_malformed"),
        ("v1", "header_malformed"),
        ("v1,", "header_malformed"),
        ("v1,not-base64!", "header_malformed"),
        ("v1,AAAA", "header_malformed"),
        ("v2,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "header_malformed"),
        ("v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "header_malformed"),
        ("g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "header_malformed"),
    ];
    for (value, kind) in sw_cases {
        assert_eq!(parse_standard_signatures(value).unwrap_err().kind(), *kind, "standard {value:?}");
    }
    for value in ["", "sha256", "sha256=", "sha1=0000", &format!("sha256={}", &hex[..10]), &format!("SHA256={hex}")] {
        assert_eq!(parse_github_header(value).unwrap_err().kind(), "header_malformed", "github {value:?}");
    }

    // Whole-request checks: missing headers, malformed timestamps, duplicated and non-ASCII headers.
    let v = standard(SW_TS, &[SW_SECRET]);
    for missing in ["webhook-id", "webhook-timestamp", "webhook-signature"] {
        let mut h = sw_headers(SW_SIG);
        h.remove(missing);
        assert_eq!(v.verify(&h, SW_BODY), Err(VerifyError::HeaderMissing { header: missing }), "{missing}");
    }
    for bad_ts in ["hello", "", "-1", "1614265330.0", " 1614265330"] {
        let mut h = sw_headers(SW_SIG);
        h.insert("webhook-timestamp", HeaderValue::from_str(bad_ts).unwrap());
        assert_eq!(v.verify(&h, SW_BODY), Err(VerifyError::TimestampMalformed), "{bad_ts:?}");
    }
    let mut h = sw_headers(SW_SIG);
    h.append("webhook-signature", HeaderValue::from_static(SW_SIG));
    assert_eq!(v.verify(&h, SW_BODY).unwrap_err().kind(), "header_malformed");
    let mut h = sw_headers(SW_SIG);
    h.insert("webhook-id", HeaderValue::from_bytes(b"msg_\xff").unwrap());
    assert_eq!(v.verify(&h, SW_BODY).unwrap_err().kind(), "header_malformed");
    assert_eq!(
        stripe(ST_TS, &[ST_SECRET]).verify(&HeaderMap::new(), ST_BODY),
        Err(VerifyError::HeaderMissing { header: "stripe-signature" })
    );
    assert_eq!(
        Verifier::builder(GitHub).secret("x").build().unwrap().verify(&HeaderMap::new(), b""),
        Err(VerifyError::HeaderMissing { header: "x-hub-signature-256" })
    );
}

/// Issue 16, finding 14: a signer refuses the timestamps no verifier accepts (negative, over 15 digits) instead
/// of emitting them, and what it signs at the edge of the range verifies.
#[test]
fn signers_refuse_timestamps_verifiers_never_accept() {
    let max = 999_999_999_999_999;
    for scheme_ix in 0..2 {
        let signer = match scheme_ix {
            0 => Signer::new(Stripe, ST_SECRET).unwrap(),
            _ => Signer::new(StandardWebhooks, SW_SECRET).unwrap(),
        };
        for ts in [-1, max + 1, 9_999_999_999_999_999, i64::MAX, i64::MIN] {
            let msg = Message { id: Some("msg_1"), timestamp: ts, body: b"{}" };
            assert_eq!(signer.signature(&msg), Err(SignError::TimestampOutOfRange { timestamp: ts }), "{ts}");
            assert_eq!(signer.headers(&msg), Err(SignError::TimestampOutOfRange { timestamp: ts }), "{ts}");
            assert!(Signer::check_timestamp(ts).is_err(), "{ts}");
        }
        for ts in [0, max] {
            let msg = Message { id: Some("msg_1"), timestamp: ts, body: b"{}" };
            let headers = signer.headers(&msg).unwrap();
            let verifier = match scheme_ix {
                0 => stripe(ts, &[ST_SECRET]),
                _ => standard(ts, &[SW_SECRET]),
            };
            assert_eq!(verifier.verify(&headers, b"{}").map(|v| v.timestamp), Ok(Some(ts)), "{ts}");
        }
    }
}

#[test]
fn secrets_are_checked_when_building() {
    assert_eq!(Verifier::builder(Stripe).build().unwrap_err(), SecretError::NoSecrets);
    assert_eq!(Verifier::builder(Stripe).secret("").build().unwrap_err(), SecretError::Empty);
    assert_eq!(Verifier::builder(StandardWebhooks).secret("whsec_%%%").build().unwrap_err(), SecretError::NotBase64);
    let v = stripe(0, &["whsec_do_not_print_me"]);
    assert!(!format!("{v:?}").contains("do_not_print_me"));
    let s = Signer::new(Stripe, "whsec_do_not_print_me").unwrap();
    assert!(!format!("{s:?}").contains("do_not_print_me"));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Whatever the body, id, timestamp and secret: what a Signer signs, a Verifier with that secret accepts,
    /// and a Verifier with a different secret refuses.
    #[test]
    fn sign_then_verify_round_trips(
        body in proptest::collection::vec(any::<u8>(), 0..2048),
        id in "[A-Za-z0-9_-]{1,40}",
        ts in 0i64..4_000_000_000,
        secret_bytes in proptest::collection::vec(any::<u8>(), 1..64),
        scheme_ix in 0usize..3,
    ) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&secret_bytes);
        let (scheme, secret, other): (Box<dyn Scheme>, String, String) = match scheme_ix {
            0 => (Box::new(Stripe), format!("whsec_{b64}"), format!("whsec_{b64}x")),
            1 => (Box::new(StandardWebhooks), format!("whsec_{b64}"), format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode([secret_bytes.as_slice(), b"x"].concat()))),
            _ => (Box::new(GitHub), hex::encode(&secret_bytes), format!("{}x", hex::encode(&secret_bytes))),
        };
        let msg = Message { id: Some(&id), timestamp: ts, body: &body };
        let headers = scheme.sign_headers(&scheme.key(&secret).unwrap(), &msg).unwrap();
        let verify = |s: &str| -> Result<(), VerifyError> {
            let b = match scheme_ix {
                0 => Verifier::builder(Stripe),
                1 => Verifier::builder(StandardWebhooks),
                _ => Verifier::builder(GitHub),
            };
            b.secret(s).clock(ManualClock::new(ts)).build().unwrap().verify(&headers, &body).map(|_| ())
        };
        prop_assert_eq!(verify(&secret), Ok(()));
        prop_assert_eq!(verify(&other), Err(VerifyError::NoSignatureMatched));
    }

    /// Header parsers never panic, whatever they are fed.
    #[test]
    fn parsers_never_panic(s in "\\PC{0,200}") {
        let _ = parse_stripe_header(&s);
        let _ = parse_standard_signatures(&s);
        let _ = parse_github_header(&s);
    }
}
