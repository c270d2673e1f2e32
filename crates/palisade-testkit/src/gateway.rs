//! Gateway requests and answers for tests: one charge builder and one instant answer, instead of a copy per
//! test file.

use palisade_core::{
    ChargeRequest, Currency, GatewayRequest, GatewayResponse, IdempotencyKey, Money, Operation, PaymentStatus,
    PaymentToken,
};

/// A charge for `order`: 10.00 USD on `tok_visa`, no gateway key. Change what a test cares about with the
/// builder's setters, then take the request with [`ChargeBuilder::build`] (a charge) or
/// [`ChargeBuilder::authorize`].
///
/// ```
/// use palisade_core::{Currency, GatewayKeyed};
/// let req = palisade_testkit::charge("order-1").amount("12.34").currency(Currency::EUR).key("k1").build();
/// assert_eq!(req.gateway_key().unwrap().as_str(), "k1");
/// ```
///
/// # Panics
/// On an amount, token, order or key that core refuses: a test set-up mistake.
pub fn charge(order: &str) -> ChargeBuilder {
    ChargeBuilder {
        order: order.to_owned(),
        amount: "10.00".to_owned(),
        currency: Currency::USD,
        token: "tok_visa".to_owned(),
        key: None,
    }
}

/// See [`charge`].
#[derive(Debug, Clone)]
#[must_use]
pub struct ChargeBuilder {
    order: String,
    amount: String,
    currency: Currency,
    token: String,
    key: Option<String>,
}

impl ChargeBuilder {
    /// The amount in major units (default `10.00`).
    pub fn amount(mut self, amount: &str) -> Self {
        amount.clone_into(&mut self.amount);
        self
    }
    /// The currency (default USD).
    pub fn currency(mut self, currency: Currency) -> Self {
        self.currency = currency;
        self
    }
    /// The payment token (default `tok_visa`; the simulator's magic tokens decline).
    pub fn token(mut self, token: &str) -> Self {
        token.clone_into(&mut self.token);
        self
    }
    /// The gateway idempotency key (default none).
    pub fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }
    /// The gateway key when there is one.
    pub fn maybe_key(mut self, key: Option<&str>) -> Self {
        self.key = key.map(str::to_owned);
        self
    }

    /// The charge request itself.
    ///
    /// # Panics
    /// See [`charge`].
    #[must_use]
    pub fn request(self) -> ChargeRequest {
        let amount = Money::parse(&self.amount, self.currency).unwrap_or_else(|e| panic!("test amount: {e}"));
        let token = PaymentToken::new(&self.token).unwrap_or_else(|e| panic!("test token: {e}"));
        let order = self.order.parse().unwrap_or_else(|e| panic!("test order: {e}"));
        let c = ChargeRequest::new(amount, token, order);
        match self.key {
            Some(k) => c.idempotency_key(IdempotencyKey::new(k).unwrap_or_else(|e| panic!("test key: {e}"))),
            None => c,
        }
    }

    /// A charge (authorize and capture in one).
    #[must_use]
    pub fn build(self) -> GatewayRequest {
        GatewayRequest::Charge(self.request())
    }

    /// An authorization.
    #[must_use]
    pub fn authorize(self) -> GatewayRequest {
        GatewayRequest::Authorize(self.request())
    }
}

/// The answer of a gateway that captures every charge at once: id `ch_1`, the request's amount and order.
///
/// # Panics
/// For requests other than charges and authorizations.
#[must_use]
pub fn captured(req: &GatewayRequest) -> GatewayResponse {
    let (GatewayRequest::Charge(c) | GatewayRequest::Authorize(c)) = req else {
        panic!("captured() answers charges and authorizations only")
    };
    GatewayResponse {
        id: "ch_1".into(),
        operation: Operation::Charge,
        status: PaymentStatus::Captured,
        amount: c.amount,
        order_reference: c.order_reference.clone(),
    }
}

/// A captured charge as a gateway returns it, with an id of Stripe's length (27 characters) and an order
/// reference: both short enough to live inline, so cloning it allocates nothing. Allocation tests and benches
/// answer with it (`InstantGateway::ok(stripe_charge())`).
///
/// # Panics
/// Never: the order reference is a constant that parses.
#[must_use]
pub fn stripe_charge() -> GatewayResponse {
    GatewayResponse {
        id: "ch_3MqBz2LkdIwHu7ix0snN0B15".into(),
        operation: palisade_core::Operation::Charge,
        status: palisade_core::PaymentStatus::Captured,
        amount: palisade_core::Money::from_minor(1234, palisade_core::Currency::USD),
        order_reference: "order-2026-11-27-000123".parse().unwrap_or_else(|e| panic!("test order: {e}")),
    }
}
