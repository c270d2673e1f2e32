//! The typed mode: `IdempotencyLayer` around a gateway `Service<GatewayRequest>` (or any request type that
//! carries a gateway key).

use std::sync::Arc;

use palisade_core::{
    CaptureRequest, ChargeRequest, DefaultClassifier, GatewayKeyed, GatewayRequest, IdempotencyKey, Money,
    RefundRequest, VoidRequest,
};
use sha2::{Digest, Sha256};

use crate::config::{Settings, common_setters};
use crate::engine::Engine;
use crate::service::{FingerprintFn, IdempotencyService, KeyFn, ScopeFn, Typed};
use palisade_store::lease::Fingerprint;

/// What makes two requests "the same request" for the typed mode.
pub trait Fingerprinted {
    /// A digest of everything that must match for a replay; never of the idempotency key itself.
    fn fingerprint(&self) -> Fingerprint;
}

impl Fingerprinted for GatewayRequest {
    /// SHA-256 over every field except the gateway key: operation, amount (minor units and currency), source,
    /// customer, order, metadata; ids and amounts of captures, voids and refunds. Fields are fed straight into
    /// the hash, length-prefixed (no clone, no JSON). Operations added to core later fall back to the JSON form.
    fn fingerprint(&self) -> Fingerprint {
        let mut h = FieldHasher::new();
        h.field(self.operation().as_str().as_bytes());
        match self {
            GatewayRequest::Charge(c) | GatewayRequest::Authorize(c) => {
                // Destructured in full: a field added to core breaks this build instead of being ignored.
                let ChargeRequest { amount, source, customer, order_reference, metadata, idempotency_key: _ } = c;
                h.money(Some(amount));
                h.field(source.as_str().as_bytes());
                h.opt(customer.as_ref().map(|c| c.as_str().as_bytes()));
                h.field(order_reference.as_str().as_bytes());
                h.count(metadata.len());
                for (k, v) in metadata {
                    h.field(k.as_bytes());
                    h.field(v.as_str().as_bytes());
                }
            }
            GatewayRequest::Capture(CaptureRequest { authorization_id, amount, idempotency_key: _ }) => {
                h.field(authorization_id.as_bytes());
                h.money(amount.as_ref());
            }
            GatewayRequest::Void(VoidRequest { authorization_id, idempotency_key: _ }) => {
                h.field(authorization_id.as_bytes());
            }
            GatewayRequest::Refund(RefundRequest { payment_id, amount, idempotency_key: _ }) => {
                h.field(payment_id.as_bytes());
                h.money(amount.as_ref());
            }
            other => return Fingerprint::of_json(&other.without_key()),
        }
        h.finish()
    }
}

/// SHA-256 over length-prefixed fields, so no two field sequences hash the same input. Lengths are LEB128
/// varints (one byte below 128): a typical charge frames to under 56 bytes, one SHA-256 block.
///
/// Short fields are gathered in a stack buffer and hashed in one go: SHA-256 is a stream, so the digest is the
/// same as feeding each piece on its own, without paying the hasher's per-call bookkeeping a dozen times.
///
/// A message that fits one block with its padding (55 bytes or less, a typical charge) is padded here and
/// compressed once with [`sha2::compress256`]; the streaming hasher is only set up for longer input.
pub(crate) struct FieldHasher {
    /// `None` until the input outgrows the buffer.
    sha: Option<Sha256>,
    /// Bytes not hashed yet; zero beyond `len` while `sha` is `None`.
    buf: [u8; FIELD_BUF],
    len: usize,
}

/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// One SHA-256 block: a typical charge (about 50 bytes) fits; longer input goes to the hasher a block at a time.
const FIELD_BUF: usize = 64;

impl FieldHasher {
    pub(crate) fn new() -> Self {
        FieldHasher { sha: None, buf: [0; FIELD_BUF], len: 0 }
    }
    /// Bytes into the buffer: inline when they fit (a typical field), through [`spill`](Self::spill) otherwise.
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.len..self.len + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.len += bytes.len();
            }
            None => self.spill(bytes),
        }
    }
    /// [`put`](Self::put) for bytes that do not fit: the buffer goes to the streaming hasher first.
    #[inline(never)]
    fn spill(&mut self, bytes: &[u8]) {
        let sha = self.sha.get_or_insert_with(Sha256::new);
        sha.update(&self.buf[..self.len]);
        self.len = 0;
        if bytes.len() > FIELD_BUF {
            sha.update(bytes);
            return;
        }
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.len = bytes.len();
    }
    /// One byte (a tag, a short length), stored directly rather than through a copy.
    #[inline]
    fn byte(&mut self, b: u8) {
        match self.buf.get_mut(self.len) {
            Some(slot) => {
                *slot = b;
                self.len += 1;
            }
            None => self.spill(&[b]),
        }
    }
    /// A field: its length, then its bytes. A short field that fits (the usual case) is one length byte and one
    /// copy into the buffer.
    #[inline]
    pub(crate) fn field(&mut self, bytes: &[u8]) {
        if let Ok(n @ 0..0x80) = u8::try_from(bytes.len())
            && let Some(dst) = self.buf.get_mut(self.len..self.len + 1 + bytes.len())
        {
            dst[0] = n;
            dst[1..].copy_from_slice(bytes);
            self.len += 1 + bytes.len();
            return;
        }
        self.count(bytes.len());
        self.put(bytes);
    }
    /// A number (a length, a count) as an LEB128 varint.
    #[inline]
    pub(crate) fn count(&mut self, n: usize) {
        if let Ok(b @ 0..0x80) = u8::try_from(n) {
            return self.byte(b);
        }
        self.long_count(n);
    }
    #[inline(never)]
    fn long_count(&mut self, n: usize) {
        let (mut n, mut out, mut len) = (n as u64, [0u8; 10], 0);
        loop {
            let low = (n & 0x7f) as u8;
            n >>= 7;
            out[len] = if n == 0 { low } else { low | 0x80 };
            len += 1;
            if n == 0 {
                break;
            }
        }
        self.put(&out[..len]);
    }
    #[inline]
    fn opt(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            Some(b) => {
                self.byte(1);
                self.field(b);
            }
            None => self.byte(0),
        }
    }
    #[inline]
    fn money(&mut self, m: Option<&Money>) {
        let Some(m) = m else {
            self.byte(0);
            return;
        };
        self.byte(1);
        self.field(m.currency().code().as_bytes());
        match m.to_minor() {
            Ok(minor) => self.field(&minor.to_be_bytes()),
            Err(_) => self.field(m.amount().normalize().to_string().as_bytes()),
        }
    }
    // Takes the hasher by reference: by value it was copied (192 bytes) into each call.
    pub(crate) fn finish(&mut self) -> Fingerprint {
        match self.sha.take() {
            Some(mut sha) => {
                sha.update(&self.buf[..self.len]);
                Fingerprint(sha.finalize().into())
            }
            // The whole message is `buf[..len]`, and the padding fits after it: the 0x80 marker, zeros (the
            // buffer's own), and the length in bits in the last 8 bytes (FIPS 180-4, 5.1.1).
            None if self.len <= FIELD_BUF - 9 => {
                self.buf[self.len] = 0x80;
                self.buf[FIELD_BUF - 8..].copy_from_slice(&(self.len as u64 * 8).to_be_bytes());
                let mut state = SHA256_IV;
                sha2::compress256(&mut state, &[self.buf.into()]);
                let mut out = [0u8; 32];
                for (o, w) in out.chunks_exact_mut(4).zip(state) {
                    o.copy_from_slice(&w.to_be_bytes());
                }
                Fingerprint(out)
            }
            None => Fingerprint(Sha256::digest(&self.buf[..self.len]).into()),
        }
    }
}

/// Makes a typed service idempotent: one execution per key, whatever the concurrency, across every process
/// sharing the store. See the [crate docs](crate) for the protocol.
///
/// Cheap to clone. Built with [`IdempotencyLayer::builder`].
pub struct IdempotencyLayer<Req = GatewayRequest, C = DefaultClassifier> {
    shared: Arc<Typed<Req>>,
    classifier: C,
}

impl<Req, C: Clone> Clone for IdempotencyLayer<Req, C> {
    fn clone(&self) -> Self {
        IdempotencyLayer { shared: self.shared.clone(), classifier: self.classifier.clone() }
    }
}

impl<Req, C: std::fmt::Debug> std::fmt::Debug for IdempotencyLayer<Req, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("settings", &self.shared.engine.settings)
            .field("scoped", &self.shared.scope.is_some())
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl IdempotencyLayer<GatewayRequest> {
    /// A builder for the typed mode over [`GatewayRequest`]: key from the request's gateway key, no scope,
    /// [`DefaultClassifier`], a fresh [`MemoryStore`](crate::MemoryStore), 24 h TTL, 10 s lease renewed while a request runs.
    pub fn builder() -> IdempotencyLayerBuilder<GatewayRequest> {
        IdempotencyLayerBuilder::new()
    }
}

impl<S, Req, C: Clone> tower_layer::Layer<S> for IdempotencyLayer<Req, C> {
    type Service = IdempotencyService<S, Req, C>;
    fn layer(&self, inner: S) -> Self::Service {
        IdempotencyService::new(inner, self.shared.clone(), self.classifier.clone())
    }
}

/// Builder for [`IdempotencyLayer`] (typed mode). Every setting has a documented default.
#[must_use]
pub struct IdempotencyLayerBuilder<Req, C = DefaultClassifier> {
    settings: Settings,
    /// `None`: the request's gateway key.
    key: Option<KeyFn<Req>>,
    scope: Option<ScopeFn<Req>>,
    fingerprint: FingerprintFn<Req>,
    classifier: C,
}

impl<Req: GatewayKeyed + Fingerprinted + 'static> Default for IdempotencyLayerBuilder<Req> {
    fn default() -> Self {
        Self::new()
    }
}

impl<Req: GatewayKeyed + Fingerprinted + 'static> IdempotencyLayerBuilder<Req> {
    /// Defaults: key = the request's gateway key ([`GatewayKeyed`]), fingerprint = [`Fingerprinted`], no scope,
    /// [`DefaultClassifier`].
    pub fn new() -> Self {
        IdempotencyLayerBuilder {
            settings: Settings::default(),
            key: None,
            scope: None,
            fingerprint: Arc::new(Req::fingerprint),
            classifier: DefaultClassifier,
        }
    }
}

impl<Req: 'static, C> IdempotencyLayerBuilder<Req, C> {
    common_setters!();

    /// Where the idempotency key comes from (default: the request's gateway key). Returning `None` means "no
    /// key" (see [`missing_key`](Self::missing_key)).
    pub fn key(mut self, f: impl Fn(&Req) -> Option<IdempotencyKey> + Send + Sync + 'static) -> Self {
        self.key = Some(Arc::new(f));
        self
    }

    /// The scope (tenant, account, user) a key belongs to: part of the storage key, so equal keys of two scopes
    /// never meet; also mixed into the gateway key. Default: no scope.
    pub fn scope(mut self, f: impl Fn(&Req) -> Option<String> + Send + Sync + 'static) -> Self {
        self.scope = Some(Arc::new(f));
        self
    }

    /// What makes two requests with the same key "the same request" (default: [`Fingerprinted`]).
    pub fn fingerprint(mut self, f: impl Fn(&Req) -> Fingerprint + Send + Sync + 'static) -> Self {
        self.fingerprint = Arc::new(f);
        self
    }

    /// How results are classified into outcomes (default: [`DefaultClassifier`]): Success and Terminal are
    /// stored and replayed, Retriable and Unknown release the key.
    pub fn classifier<C2>(self, classifier: C2) -> IdempotencyLayerBuilder<Req, C2> {
        IdempotencyLayerBuilder {
            settings: self.settings,
            key: self.key,
            scope: self.scope,
            fingerprint: self.fingerprint,
            classifier,
        }
    }

    /// Switches to the HTTP mode, as every layer's `.http()` does: the same store, TTL, lease and waiting
    /// settings, for `http::Request`s, with the HTTP builder's own defaults for what only HTTP has (methods,
    /// headers, body limit, JSON fingerprint); the typed key, scope, fingerprint and classifier do not apply.
    /// Same as [`HttpIdempotencyLayer::builder`](crate::HttpIdempotencyLayer::builder) with these settings.
    pub fn http(self) -> crate::HttpIdempotencyLayerBuilder {
        crate::HttpIdempotencyLayerBuilder::with_settings(self.settings)
    }

    /// Builds the layer.
    pub fn build(self) -> IdempotencyLayer<Req, C> {
        IdempotencyLayer {
            shared: Arc::new(Typed {
                engine: Engine::new(self.settings),
                key: self.key,
                scope: self.scope,
                fingerprint: self.fingerprint,
            }),
            classifier: self.classifier,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_core::{Currency, PaymentToken};

    fn charge(amount: &str, key: &str) -> ChargeRequest {
        ChargeRequest::new(
            Money::parse(amount, Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "o1".parse().unwrap(),
        )
        .idempotency_key(IdempotencyKey::new(key).unwrap())
    }

    #[test]
    fn order_references_are_fingerprinted_exactly() {
        // Two ids whose Luhn-valid digit runs a masking type once turned into one `order-[REDACTED_PAN]`: two
        // different orders, so two fingerprints (one is never replayed the other's charge).
        let order = |o: &str| {
            GatewayRequest::Charge(ChargeRequest::new(
                Money::parse("10.00", Currency::USD).unwrap(),
                PaymentToken::new("tok_visa").unwrap(),
                o.parse().unwrap(),
            ))
        };
        let (a, b) = (order("order-1733270400000"), order("order-1733270400018"));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.fingerprint(), order("order-1733270400000").fingerprint());
    }

    #[test]
    fn fingerprint_ignores_the_key_and_sees_every_other_field() {
        let base = GatewayRequest::Charge(charge("10.00", "a"));
        assert_eq!(base.fingerprint(), GatewayRequest::Charge(charge("10.00", "b")).fingerprint());
        assert_eq!(base.fingerprint(), GatewayRequest::Charge(charge("10.0", "a")).fingerprint(), "same amount");
        let different = [
            GatewayRequest::Charge(charge("10.01", "a")),
            GatewayRequest::Authorize(charge("10.00", "a")),
            GatewayRequest::Charge(charge("10.00", "a").customer("c".parse().unwrap())),
            GatewayRequest::Charge(charge("10.00", "a").meta("k", "v".parse().unwrap())),
            GatewayRequest::Charge(charge("10.00", "a").meta("kv", "".parse().unwrap())),
            GatewayRequest::Charge(ChargeRequest::new(
                Money::parse("10.00", Currency::EUR).unwrap(),
                PaymentToken::new("tok_visa").unwrap(),
                "o1".parse().unwrap(),
            )),
        ];
        for d in &different {
            assert_ne!(base.fingerprint(), d.fingerprint(), "{d:?}");
        }
        let refund = |amount: Option<&str>| {
            GatewayRequest::Refund(RefundRequest {
                payment_id: "ch_1".into(),
                amount: amount.map(|a| Money::parse(a, Currency::USD).unwrap()),
                idempotency_key: None,
            })
        };
        assert_ne!(refund(None).fingerprint(), refund(Some("1.00")).fingerprint());
    }

    /// LEB128, written plainly: seven bits a byte, low first, the high bit set on all but the last.
    fn leb128(mut n: usize) -> Vec<u8> {
        let mut out = vec![];
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    }

    /// The stack buffer is an optimisation only: the digest is SHA-256 of the length-prefixed fields whatever
    /// their sizes, including fields that straddle or exceed the buffer.
    #[test]
    fn field_hasher_equals_sha256_of_the_framed_fields() {
        for sizes in [
            vec![0; 100],
            vec![63, 0, 1],
            vec![0, 1, 7],
            vec![200, 100],
            vec![255, 1, 300],
            vec![1000],
            vec![248, 0, 248, 2048, 3],
        ]
        .into_iter()
        // Every message length around the one-block path (up to 55 framed bytes) and past it.
        .chain((0..130).map(|n| vec![n]))
        .chain([vec![], vec![20, 33], vec![20, 34]])
        {
            let fields: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
            let mut h = FieldHasher::new();
            let mut framed = Vec::new();
            for f in &fields {
                h.field(f);
                framed.extend_from_slice(&leb128(f.len()));
                framed.extend_from_slice(f);
            }
            assert_eq!(h.finish(), Fingerprint::of_bytes(&framed), "{sizes:?}");
        }
    }

    /// Fingerprints are stored (on Redis, across deploys): the same request must keep its digest. The vectors
    /// were computed outside Rust (Python's hashlib over the framing written out by hand); the charge frames
    /// to 50 bytes, one SHA-256 block. (Changed once, before any release, from 8-byte to LEB128 lengths.)
    #[test]
    fn fingerprints_are_stable() {
        let c = ChargeRequest::new(
            Money::parse("12.34", Currency::USD).unwrap(),
            PaymentToken::new("tok_visa").unwrap(),
            "order-1".parse().unwrap(),
        )
        .customer("cus_1".parse().unwrap())
        .meta("a", "b".parse().unwrap())
        .idempotency_key(IdempotencyKey::new("k").unwrap());
        let r = GatewayRequest::Refund(RefundRequest {
            payment_id: "ch_1".into(),
            amount: Some(Money::parse("1.5", Currency::EUR).unwrap()),
            idempotency_key: None,
        });
        assert_eq!(
            hex::encode(GatewayRequest::Charge(c).fingerprint().0),
            "842b2042ece250bdbe330facca042cac738b726e890da8695194a1538afe32bb"
        );
        assert_eq!(hex::encode(r.fingerprint().0), "04840547333df609aa5b00e201a627edd5484651a130e0c566b9f5163bb8d29d");
        // Fields are length-prefixed: the digest is SHA-256 over (LEB128 length, bytes) pairs.
        let long = "x".repeat(300);
        let mut h = FieldHasher::new();
        h.field(b"ab");
        h.field(long.as_bytes());
        h.field(b"c");
        let mut d = Sha256::new();
        for (prefix, f) in [(&[2u8][..], &b"ab"[..]), (&[0xac, 0x02], long.as_bytes()), (&[1], b"c")] {
            d.update(prefix);
            d.update(f);
        }
        assert_eq!(h.finish(), Fingerprint(d.finalize().into()));
    }
}
