//! Verifications per second for a 1 KB body, side by side with a bare HMAC-SHA256 of the same bytes.
//!
//! `palisade_verify` is the whole `Verifier::verify`: header parsing, the MAC, the constant-time comparison,
//! the timestamp window and the event id. The peer computes HMAC-SHA256(secret, body) from scratch, as a
//! hand-written verifier would (the verifier keeps the key's HMAC state prepared instead).
//!
//! `webhook_dedup_id_1k` measures what deduplication adds before the store call (`Verifier::dedup_id`).
//!
//! `cargo bench -p palisade-webhook --bench verify -- --warm-up-time 1 --measurement-time 3`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hmac::{Hmac, Mac};
use palisade_webhook::{GitHub, ManualClock, Message, Scheme, Signer, StandardWebhooks, Stripe, Verifier};
use sha2::Sha256;

const NOW: i64 = 1_700_000_000;

fn body() -> Vec<u8> {
    let mut b = br#"{"id":"evt_1","object":"event","data":{"note":""#.to_vec();
    b.resize(1024 - 3, b'x');
    b.extend_from_slice(br#""}}"#);
    b.truncate(1024);
    b
}

fn builder(scheme: impl Scheme, secret: &str) -> Verifier {
    Verifier::builder(scheme).secret(secret).clock(ManualClock::new(NOW)).build().unwrap()
}

fn bench(c: &mut Criterion) {
    let body = body();
    assert_eq!(body.len(), 1024);
    let mut g = c.benchmark_group("webhook_verify_1k");
    g.throughput(Throughput::Elements(1));

    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let msg = Message { id: Some("msg_1"), timestamp: NOW, body: &body };
    let cases = [
        ("stripe", builder(Stripe, secret), Signer::new(Stripe, secret).unwrap().headers(&msg).unwrap()),
        (
            "standard",
            builder(StandardWebhooks, secret),
            Signer::new(StandardWebhooks, secret).unwrap().headers(&msg).unwrap(),
        ),
        ("github", builder(GitHub, secret), Signer::new(GitHub, secret).unwrap().headers(&msg).unwrap()),
    ];
    // The peer is measured right before each scheme (A B A B …), so a machine whose load drifts during the
    // run biases each ratio as little as possible.
    for (name, v, headers) in cases {
        v.verify(&headers, &body).unwrap();
        g.bench_function(format!("{name}/bare_hmac_sha256"), |b| {
            b.iter(|| {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(black_box(secret.as_bytes())).unwrap();
                m.update(black_box(&body));
                black_box(m.finalize().into_bytes())
            })
        });
        g.bench_function(format!("{name}/palisade_verify"), |b| {
            b.iter(|| black_box(v.verify(black_box(&headers), black_box(&body))))
        });
    }
    g.finish();

    // What deduplication adds per delivery before the store round trip: a clone of the signed event id (Stripe,
    // Standard Webhooks), or the SHA-256 of the body (GitHub, whose delivery id is unsigned). `verify` above
    // never pays for it.
    let mut g = c.benchmark_group("webhook_dedup_id_1k");
    g.throughput(Throughput::Elements(1));
    for (name, v, headers) in [
        ("stripe", builder(Stripe, secret), Signer::new(Stripe, secret).unwrap().headers(&msg).unwrap()),
        ("github", builder(GitHub, secret), Signer::new(GitHub, secret).unwrap().headers(&msg).unwrap()),
    ] {
        let verified = v.verify(&headers, &body).unwrap();
        g.bench_function(format!("{name}/dedup_id"), |b| {
            b.iter(|| black_box(v.dedup_id(black_box(&verified), black_box(&body))))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
