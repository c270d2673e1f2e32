//! What a rule can look at: the [`Attributes`] of one charge, and the documented names the rule language reads.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use palisade_core::{ChargeRequest, Currency, GatewayRequest, Money};

/// The facts about one charge that rules look at. Build it with [`Attributes::new`] and the setters, or let the
/// layer extract it from a [`ChargeRequest`] ([`Attributes::from_charge`]).
///
/// Unknown text attributes are the empty string in the rule language, so `card_country != ip_country` is false
/// when both are unknown and a blocklist never matches an absent value.
///
/// `Debug` masks the email and shows only the last four characters of the card fingerprint and the IP.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attributes {
    /// The amount (exact; the rule language sees `amount_minor` and `currency`).
    pub amount: Money,
    /// The customer's email.
    pub email: Option<String>,
    /// A stable fingerprint of the card (never the card number).
    pub card_fingerprint: Option<String>,
    /// The card's BIN (first six to eight digits: not a card number on its own).
    pub card_bin: Option<String>,
    /// ISO 3166 alpha-2 country of the card's issuer.
    pub card_country: Option<String>,
    /// ISO 3166 alpha-2 country of the billing address.
    pub billing_country: Option<String>,
    /// The client's IP address.
    pub ip: Option<String>,
    /// ISO 3166 alpha-2 country of the IP address.
    pub ip_country: Option<String>,
    /// The address verification result as the gateway reports it (`pass`, `fail`, `unavailable`, or the
    /// gateway's letter code).
    pub avs_result: Option<String>,
    /// The CVC check result (`pass`, `fail`, `unavailable`, ...).
    pub cvv_result: Option<String>,
    /// The merchant's customer id.
    pub customer_id: Option<String>,
    /// A risk score from outside (a model, a previous screen) that rules add to; 0 when there is none.
    pub risk_score: i64,
    /// What identifies this attempt for velocity: the idempotency key, so a retry of the same request (the same
    /// key, subjects, amount and currency) counts once; the same key with another amount or currency is another
    /// attempt. `None`: every decision is a new attempt.
    pub attempt_id: Option<String>,
    /// The customer completed a step-up authentication (3-D Secure / SCA) for this payment: a `challenge`
    /// verdict is met, and does not stop the charge. Set it only from the authentication result your gateway
    /// or 3-D Secure server verified, never from what the client says.
    pub authenticated: bool,
}

/// The charge metadata key the default extraction reads the 3-D Secure result from.
pub const THREE_D_SECURE: &str = "three_d_secure";
/// The value of [`THREE_D_SECURE`] that marks the authentication completed.
pub const AUTHENTICATED: &str = "authenticated";

impl Attributes {
    /// Attributes of a charge of `amount`, nothing else known.
    #[must_use]
    pub fn new(amount: Money) -> Self {
        Attributes {
            amount,
            email: None,
            card_fingerprint: None,
            card_bin: None,
            card_country: None,
            billing_country: None,
            ip: None,
            ip_country: None,
            avs_result: None,
            cvv_result: None,
            customer_id: None,
            risk_score: 0,
            attempt_id: None,
            authenticated: false,
        }
    }

    /// The default extraction from a charge request:
    ///
    /// | attribute | from |
    /// |---|---|
    /// | `amount`, `currency` | `amount` |
    /// | `card_fingerprint` | metadata `card_fingerprint`, else the payment token |
    /// | `customer_id` | `customer` |
    /// | `attempt_id` | the idempotency key |
    /// | `email`, `card_bin`, `card_country`, `billing_country`, `ip`, `ip_country`, `avs_result`, `cvv_result` | metadata of the same name |
    /// | `risk_score` | metadata `risk_score` (an integer), else 0 |
    /// | `authenticated` | metadata `three_d_secure` is `authenticated` (read when a rule can challenge) |
    #[must_use]
    pub fn from_charge(c: &ChargeRequest) -> Self {
        Attributes::from_charge_reading(c, FieldSet::ALL)
    }

    /// [`Attributes::from_charge`] for a rule set that reads only `fields` ([`RuleSet::fields`](crate::RuleSet::fields)):
    /// the others are left unknown, so nothing is copied for them. The email is always taken (it is logged,
    /// masked, with the verdict).
    #[must_use]
    #[inline]
    pub fn from_charge_reading(c: &ChargeRequest, fields: FieldSet) -> Self {
        let meta = |f: Field| {
            if fields.contains(f) { c.metadata.get(f.as_str()).map(|v| v.as_str().to_owned()) } else { None }
        };
        // Built whole in one expression, so it is written where the caller wants it (no move of the struct).
        Attributes {
            amount: c.amount,
            email: c.metadata.get("email").map(|v| v.as_str().to_owned()),
            card_fingerprint: if fields.contains(Field::CardFingerprint) {
                meta(Field::CardFingerprint).or_else(|| Some(c.source.as_str().to_owned()))
            } else {
                None
            },
            card_bin: meta(Field::CardBin),
            card_country: meta(Field::CardCountry),
            billing_country: meta(Field::BillingCountry),
            ip: meta(Field::Ip),
            ip_country: meta(Field::IpCountry),
            avs_result: meta(Field::AvsResult),
            cvv_result: meta(Field::CvvResult),
            customer_id: if fields.contains(Field::CustomerId) {
                c.customer.as_ref().map(|r| r.as_str().to_owned())
            } else {
                None
            },
            // Always: it is the starting score, which the thresholds read whatever the rules.
            risk_score: c.metadata.get("risk_score").and_then(|s| s.as_str().parse().ok()).unwrap_or(0),
            attempt_id: if fields.attempt_id() {
                c.idempotency_key.as_ref().map(|k| k.as_str().to_owned())
            } else {
                None
            },
            authenticated: fields.authentication()
                && c.metadata.get(THREE_D_SECURE).is_some_and(|v| v.as_str() == AUTHENTICATED),
        }
    }

    /// The default extraction from a gateway request: charges and authorizations are screened
    /// ([`Attributes::from_charge`]); captures, voids and refunds are not (`None`).
    #[must_use]
    pub fn from_gateway_request(req: &GatewayRequest) -> Option<Self> {
        Attributes::from_gateway_request_reading(req, FieldSet::ALL)
    }

    /// [`Attributes::from_gateway_request`] for a rule set that reads only `fields`
    /// ([`Attributes::from_charge_reading`]).
    #[must_use]
    pub fn from_gateway_request_reading(req: &GatewayRequest, fields: FieldSet) -> Option<Self> {
        match req {
            // A charge's or an authorization's gateway key is its own idempotency key (`from_charge_reading`'s
            // attempt id).
            GatewayRequest::Charge(c) | GatewayRequest::Authorize(c) => {
                Some(Attributes::from_charge_reading(c, fields))
            }
            _ => None,
        }
    }

    /// Sets the email.
    #[must_use]
    pub fn email(mut self, v: impl Into<String>) -> Self {
        self.email = Some(v.into());
        self
    }
    /// Sets the card fingerprint.
    #[must_use]
    pub fn card_fingerprint(mut self, v: impl Into<String>) -> Self {
        self.card_fingerprint = Some(v.into());
        self
    }
    /// Sets the BIN.
    #[must_use]
    pub fn card_bin(mut self, v: impl Into<String>) -> Self {
        self.card_bin = Some(v.into());
        self
    }
    /// Sets the card's country.
    #[must_use]
    pub fn card_country(mut self, v: impl Into<String>) -> Self {
        self.card_country = Some(v.into());
        self
    }
    /// Sets the billing country.
    #[must_use]
    pub fn billing_country(mut self, v: impl Into<String>) -> Self {
        self.billing_country = Some(v.into());
        self
    }
    /// Sets the IP address.
    #[must_use]
    pub fn ip(mut self, v: impl Into<String>) -> Self {
        self.ip = Some(v.into());
        self
    }
    /// Sets the IP's country.
    #[must_use]
    pub fn ip_country(mut self, v: impl Into<String>) -> Self {
        self.ip_country = Some(v.into());
        self
    }
    /// Sets the AVS result.
    #[must_use]
    pub fn avs_result(mut self, v: impl Into<String>) -> Self {
        self.avs_result = Some(v.into());
        self
    }
    /// Sets the CVC check result.
    #[must_use]
    pub fn cvv_result(mut self, v: impl Into<String>) -> Self {
        self.cvv_result = Some(v.into());
        self
    }
    /// Sets the customer id.
    #[must_use]
    pub fn customer_id(mut self, v: impl Into<String>) -> Self {
        self.customer_id = Some(v.into());
        self
    }
    /// Sets the starting risk score.
    #[must_use]
    pub fn risk_score(mut self, v: i64) -> Self {
        self.risk_score = v;
        self
    }
    /// Sets the attempt id (normally the idempotency key).
    #[must_use]
    pub fn attempt_id(mut self, v: impl Into<String>) -> Self {
        self.attempt_id = Some(v.into());
        self
    }
    /// Marks the step-up authentication as completed ([`Attributes::authenticated`]).
    #[must_use]
    pub fn authenticated(mut self, done: bool) -> Self {
        self.authenticated = done;
        self
    }

    /// The amount in minor units (every `Money` fits in `i64`, see [`Money::to_minor`]).
    #[must_use]
    pub fn amount_minor(&self) -> i64 {
        // The common case, exactly the currency's decimals (what `Money` keeps): the mantissa is the answer.
        let d = self.amount.amount();
        if d.scale() == u32::from(self.amount.currency().exponent())
            && let Ok(m) = i64::try_from(d.mantissa())
        {
            return m;
        }
        self.amount.to_minor().unwrap_or(i64::MAX)
    }
    /// The currency.
    #[must_use]
    pub fn currency(&self) -> Currency {
        self.amount.currency()
    }
    /// The value of a velocity subject, if known.
    #[must_use]
    #[inline]
    pub fn subject(&self, s: Subject) -> Option<&str> {
        match s {
            Subject::Card => self.card_fingerprint.as_deref(),
            Subject::Email => self.email.as_deref(),
            Subject::Ip => self.ip.as_deref(),
            Subject::Customer => self.customer_id.as_deref(),
        }
    }
    /// The value of a text field.
    #[must_use]
    #[inline]
    pub fn field(&self, f: Field) -> Option<&str> {
        match f {
            Field::Email => self.email.as_deref(),
            Field::CardFingerprint => self.card_fingerprint.as_deref(),
            Field::CardBin => self.card_bin.as_deref(),
            Field::CardCountry => self.card_country.as_deref(),
            Field::BillingCountry => self.billing_country.as_deref(),
            Field::Ip => self.ip.as_deref(),
            Field::IpCountry => self.ip_country.as_deref(),
            Field::AvsResult => self.avs_result.as_deref(),
            Field::CvvResult => self.cvv_result.as_deref(),
            Field::CustomerId => self.customer_id.as_deref(),
        }
    }
}

/// Masks an email for logs: `j***@example.com` (the first character and the domain). The split is at the last
/// `@`, and the domain is kept only when it reads as one (ASCII letters, digits, `-` and `.`, with a dot, no run
/// of five digits); otherwise it is masked too, so a field that holds more than an address
/// (`x@4111111111111111 cvv 123`) shows nothing of it. The same masking as [`palisade_core::mask_email`], which
/// the other layers' logs use.
///
/// ```
/// use palisade_fraud::mask_email;
/// assert_eq!(mask_email("jane.doe@example.com"), "j***@example.com");
/// assert_eq!(mask_email("x@4111111111111111 cvv 123"), "x***@***");
/// assert_eq!(mask_email("a@b@example.com"), "a***@example.com");
/// ```
#[must_use]
pub fn mask_email(email: &str) -> String {
    palisade_core::mask_email(email)
}

fn tail4(s: &str) -> String {
    let n = s.chars().count();
    let tail: String = s.chars().skip(n.saturating_sub(4)).collect();
    format!("…{tail}")
}

impl fmt::Debug for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attributes")
            .field("amount", &self.amount)
            .field("email", &self.email.as_deref().map(mask_email))
            .field("card_fingerprint", &self.card_fingerprint.as_deref().map(tail4))
            .field("card_bin", &self.card_bin)
            .field("card_country", &self.card_country)
            .field("billing_country", &self.billing_country)
            .field("ip", &self.ip.as_deref().map(tail4))
            .field("ip_country", &self.ip_country)
            .field("avs_result", &self.avs_result)
            .field("cvv_result", &self.cvv_result)
            .field("customer_id", &self.customer_id)
            .field("risk_score", &self.risk_score)
            .field("authenticated", &self.authenticated)
            .finish_non_exhaustive()
    }
}

/// A text attribute, for the built-in rules (blocklists, AVS/CVV).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// `email` (compared case-insensitively).
    Email,
    /// `card_fingerprint`.
    CardFingerprint,
    /// `card_bin`.
    CardBin,
    /// `card_country`.
    CardCountry,
    /// `billing_country`.
    BillingCountry,
    /// `ip`.
    Ip,
    /// `ip_country`.
    IpCountry,
    /// `avs_result`.
    AvsResult,
    /// `cvv_result`.
    CvvResult,
    /// `customer_id`.
    CustomerId,
}

impl Field {
    /// The attribute's index in the rule language's scalar list.
    pub(crate) const fn slot(self) -> usize {
        match self {
            Field::Email => 2,
            Field::CardFingerprint => 4,
            Field::CardBin => 5,
            Field::CardCountry => 6,
            Field::BillingCountry => 7,
            Field::Ip => 8,
            Field::IpCountry => 9,
            Field::AvsResult => 10,
            Field::CvvResult => 11,
            Field::CustomerId => 12,
        }
    }
    /// The attribute's name in the rule language.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::CardFingerprint => "card_fingerprint",
            Field::CardBin => "card_bin",
            Field::CardCountry => "card_country",
            Field::BillingCountry => "billing_country",
            Field::Ip => "ip",
            Field::IpCountry => "ip_country",
            Field::AvsResult => "avs_result",
            Field::CvvResult => "cvv_result",
            Field::CustomerId => "customer_id",
        }
    }
}

/// The attributes a rule set reads, so an extraction can leave the others out (`RuleSet::fields`): a bit per
/// attribute of the rule language's scalar list (`amount`, `currency`, `email`, ..., `risk_score`), and one for
/// the attempt id. [`FieldSet::ALL`] is every attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldSet(u32);

impl FieldSet {
    /// No attribute.
    pub const EMPTY: FieldSet = FieldSet(0);
    /// Every attribute.
    pub const ALL: FieldSet = FieldSet(u32::MAX);
    const ATTEMPT_ID: u32 = 1 << 31;
    const AUTHENTICATION: u32 = 1 << 30;

    /// True when `field` is in the set.
    #[must_use]
    pub const fn contains(self, field: Field) -> bool {
        self.0 & (1 << field.slot()) != 0
    }
    /// True when the attempt id (the idempotency key) is in the set: only velocity needs it.
    #[must_use]
    pub const fn attempt_id(self) -> bool {
        self.0 & Self::ATTEMPT_ID != 0
    }
    /// True when whether the customer authenticated ([`Attributes::authenticated`]) is in the set: only a rule
    /// set that can challenge needs it.
    #[must_use]
    pub const fn authentication(self) -> bool {
        self.0 & Self::AUTHENTICATION != 0
    }
    /// Both sets.
    #[must_use]
    pub const fn union(self, other: FieldSet) -> Self {
        FieldSet(self.0 | other.0)
    }
    /// This set with `field`.
    #[must_use]
    pub const fn with(self, field: Field) -> Self {
        FieldSet(self.0 | 1 << field.slot())
    }
    /// The set of the scalar attribute at `slot` (its index in the rule language's list).
    pub(crate) const fn of_slot(slot: usize) -> Self {
        if slot < SCALAR_COUNT { FieldSet(1 << slot) } else { FieldSet(0) }
    }
    /// What a rule that can challenge needs: whether the customer authenticated.
    pub(crate) const CHALLENGE: FieldSet = FieldSet(Self::AUTHENTICATION);
    /// What velocity needs: every subject and the attempt id.
    pub(crate) const VELOCITY: FieldSet = FieldSet(
        1 << Field::CardFingerprint.slot()
            | 1 << Field::Email.slot()
            | 1 << Field::Ip.slot()
            | 1 << Field::CustomerId.slot()
            | Self::ATTEMPT_ID,
    );
}

impl Default for FieldSet {
    fn default() -> Self {
        FieldSet::EMPTY
    }
}

/// Who a velocity counter counts attempts of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Subject {
    /// The card fingerprint.
    Card,
    /// The email.
    Email,
    /// The IP address.
    Ip,
    /// The customer id.
    Customer,
}

impl Subject {
    /// Every subject, in counter order.
    pub const ALL: [Subject; 4] = [Subject::Card, Subject::Email, Subject::Ip, Subject::Customer];
    /// Stable lowercase name (`card`, `email`, `ip`, `customer`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Subject::Card => "card",
            Subject::Email => "email",
            Subject::Ip => "ip",
            Subject::Customer => "customer",
        }
    }
    /// Index in [`Subject::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            Subject::Card => 0,
            Subject::Email => 1,
            Subject::Ip => 2,
            Subject::Customer => 3,
        }
    }
}

/// What a velocity counter measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Measure {
    /// Attempts (this one included; a retry — the same attempt id, subjects, amount and currency — counts once).
    Attempts,
    /// The sum of the attempts' amounts in the decision's currency, in minor units (this one included; a sum past
    /// `i64::MAX` reads `i64::MAX`).
    Amount,
    /// Declines recorded by the layer after the gateway answered (or by [`crate::FraudEngine::record_decline`]).
    Declines,
}

impl Measure {
    /// Every measure, in counter order.
    pub const ALL: [Measure; 3] = [Measure::Attempts, Measure::Amount, Measure::Declines];
    /// Stable lowercase name (`attempts`, `amount`, `declines`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Measure::Attempts => "attempts",
            Measure::Amount => "amount",
            Measure::Declines => "declines",
        }
    }
    const fn index(self) -> usize {
        match self {
            Measure::Attempts => 0,
            Measure::Amount => 1,
            Measure::Declines => 2,
        }
    }
}

/// A velocity window ([`crate::defaults::VELOCITY_WINDOWS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Window {
    /// Ten minutes (`_10m`).
    TenMinutes,
    /// One hour (`_1h`).
    Hour,
    /// One day (`_24h`).
    Day,
}

impl Window {
    /// Every window, in counter order.
    pub const ALL: [Window; 3] = [Window::TenMinutes, Window::Hour, Window::Day];
    /// The suffix in attribute names (`10m`, `1h`, `24h`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Window::TenMinutes => "10m",
            Window::Hour => "1h",
            Window::Day => "24h",
        }
    }
    /// The window's length.
    #[must_use]
    pub const fn duration(self) -> std::time::Duration {
        crate::defaults::VELOCITY_WINDOWS[self.index()]
    }
    const fn index(self) -> usize {
        match self {
            Window::TenMinutes => 0,
            Window::Hour => 1,
            Window::Day => 2,
        }
    }
}

/// One velocity attribute: `<measure>_per_<subject>_<window>`, such as `attempts_per_card_1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Velocity {
    /// What is counted.
    pub measure: Measure,
    /// Whose attempts.
    pub subject: Subject,
    /// Over which window.
    pub window: Window,
}

impl Velocity {
    /// A velocity attribute.
    #[must_use]
    pub const fn new(measure: Measure, subject: Subject, window: Window) -> Self {
        Velocity { measure, subject, window }
    }
    /// Index into [`VelocityCounts`].
    #[must_use]
    pub const fn index(self) -> usize {
        self.subject.index() * 9 + self.measure.index() * 3 + self.window.index()
    }
    /// The attribute's name (`attempts_per_card_1h`).
    #[must_use]
    pub fn name(self) -> String {
        format!("{}_per_{}_{}", self.measure.as_str(), self.subject.as_str(), self.window.as_str())
    }
}

/// Number of velocity attributes: 3 measures × 4 subjects × 3 windows.
pub const VELOCITY_ATTRIBUTES: usize = 36;

/// The velocity attributes of one decision, as the store returned them (0 for a subject the charge lacks).
/// Layout: per subject (card, email, ip, customer), per measure (attempts, amount, declines), per window
/// (10m, 1h, 24h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VelocityCounts(pub [i64; VELOCITY_ATTRIBUTES]);

impl Default for VelocityCounts {
    fn default() -> Self {
        VelocityCounts([0; VELOCITY_ATTRIBUTES])
    }
}

impl VelocityCounts {
    /// One attribute's value.
    #[must_use]
    pub fn get(&self, v: Velocity) -> i64 {
        self.0[v.index()]
    }
    /// Sets one attribute's value.
    pub fn set(&mut self, v: Velocity, value: i64) {
        self.0[v.index()] = value;
    }
}

/// A set of velocity attributes: the ones a rule set reads, so the store computes only those (see
/// [`crate::VelocityStore::record_attempt_reading`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VelocitySet(u64);

impl VelocitySet {
    /// No attribute.
    pub const EMPTY: VelocitySet = VelocitySet(0);
    /// All [`VELOCITY_ATTRIBUTES`] attributes.
    pub const ALL: VelocitySet = VelocitySet((1 << VELOCITY_ATTRIBUTES) - 1);

    /// This set with `v` added.
    #[must_use]
    pub const fn with(self, v: Velocity) -> Self {
        VelocitySet(self.0 | 1 << v.index())
    }
    /// Both sets.
    #[must_use]
    pub const fn union(self, other: VelocitySet) -> Self {
        VelocitySet(self.0 | other.0)
    }
    /// True when `v` is in the set.
    #[must_use]
    pub const fn contains(self, v: Velocity) -> bool {
        self.0 & 1 << v.index() != 0
    }
    /// True when no attribute is in the set.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
    /// True when the set holds an attribute of `measure` (for any subject and window).
    #[must_use]
    pub fn reads_measure(self, measure: Measure) -> bool {
        Subject::ALL.iter().any(|&s| Window::ALL.iter().any(|&w| self.contains(Velocity::new(measure, s, w))))
    }
    /// True when the set holds an attribute of `subject` (for any measure and window).
    pub(crate) const fn reads_subject(self, subject: Subject) -> bool {
        self.subject_bits(subject) != 0
    }
    /// The attributes of `subject` in the set, one bit per `measure * 3 + window` (the layout of
    /// [`VelocityCounts`] within a subject).
    pub(crate) const fn subject_bits(self, subject: Subject) -> u64 {
        (self.0 >> (subject.index() * 9)) & 0x1ff
    }
    /// The set as bits, bit `i` for the attribute at index `i` ([`Velocity::index`]).
    pub(crate) const fn bits(self) -> u64 {
        self.0
    }
    /// The set of these bits (the form [`VelocitySet::bits`] gives).
    pub(crate) const fn from_bits(bits: u64) -> Self {
        VelocitySet(bits & Self::ALL.0)
    }
    /// The attributes of this set that `other` lacks.
    pub(crate) const fn without(self, other: VelocitySet) -> Self {
        VelocitySet(self.0 & !other.0)
    }
    /// The set of the attribute at `index` in the attribute list ([`Velocity::index`]).
    pub(crate) const fn of_index(index: usize) -> Self {
        VelocitySet(1 << index)
    }
}

/// `v` trimmed, without scanning for Unicode white space when it starts and ends with a visible ASCII character
/// (the common case).
#[inline]
pub(crate) fn trimmed(v: &str) -> &str {
    let b = v.as_bytes();
    if b.first().is_some_and(u8::is_ascii_graphic) && b.last().is_some_and(u8::is_ascii_graphic) { v } else { v.trim() }
}

/// `v` trimmed and lower-cased (Unicode), borrowed when it already is.
pub(crate) fn lower(v: &str) -> Cow<'_, str> {
    let t = trimmed(v);
    // The common case, ASCII without capitals, checked eight bytes at a time.
    if !has_upper_or_non_ascii(t.as_bytes()) {
        return Cow::Borrowed(t);
    }
    let l = t.to_lowercase();
    if l == t { Cow::Borrowed(t) } else { Cow::Owned(l) }
}

/// True when `b` has an ASCII capital or a byte outside ASCII: eight bytes per step (a word with no high bit set
/// has a capital where adding `0x80 - b'A'` to a byte sets its high bit and adding `0x80 - b'Z' - 1` does not;
/// no byte below `0x80` carries into the next), then the last few one by one.
#[inline]
pub(crate) fn has_upper_or_non_ascii(b: &[u8]) -> bool {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let flagged = |c: &[u8]| {
        // Called with 8 bytes: the conversion cannot fail.
        let x = c.try_into().map_or(HIGH, u64::from_le_bytes);
        let at_least_a = x.wrapping_add(0x3f3f_3f3f_3f3f_3f3f);
        let above_z = x.wrapping_add(0x2525_2525_2525_2525);
        (x | (at_least_a & !above_z)) & HIGH != 0
    };
    if b.len() < 8 {
        return b.iter().any(|&c| !c.is_ascii() || c.is_ascii_uppercase());
    }
    let mut chunks = b.chunks_exact(8);
    // The last (partial) chunk is checked as the last eight bytes, overlapping the one before.
    chunks.any(flagged) || (!chunks.remainder().is_empty() && flagged(&b[b.len() - 8..]))
}

/// An IP address in one form, so one address is one value to blocklists, velocity and rules: trimmed, and when
/// it parses as an address, written as std writes it — an IPv4-mapped IPv6 address (`::ffff:203.0.113.7`) as
/// its IPv4 address, IPv6 lower-case with zeros compressed (`2001:DB8:0::1` → `2001:db8::1`). Text that is not
/// an address is kept as given (trimmed). Borrowed when already in that form. Only text with a `:` in its first
/// five bytes is parsed: every IPv6 address has one there (a group is at most four digits), and as IPv4 std
/// reads only the canonical form (no leading zeros), so any other text stays as it is either way.
#[inline]
pub(crate) fn ip_form(v: &str) -> Cow<'_, str> {
    let t = trimmed(v);
    if t.bytes().take(5).any(|b| b == b':') { ipv6_form(t) } else { Cow::Borrowed(t) }
}

/// The IP as velocity counts it: [`ip_form`], except that an IPv6 address counts as its /64 network
/// (`2001:db8:1:2::/64`). One host is handed a whole /64 and can send every attempt from a new address in it; a
/// count per address would never reach a limit.
#[inline]
pub(crate) fn ip_velocity_form(v: &str) -> Cow<'_, str> {
    let t = trimmed(v);
    if t.bytes().take(5).any(|b| b == b':') { ipv6_network(t) } else { Cow::Borrowed(t) }
}

/// [`ip_velocity_form`] of text that may be an IPv6 address.
#[cold]
#[inline(never)]
fn ipv6_network(t: &str) -> Cow<'_, str> {
    match t.parse::<std::net::Ipv6Addr>().map(|ip| ip.to_canonical()) {
        Ok(std::net::IpAddr::V6(ip)) => {
            let [a, b, c, d, ..] = ip.segments();
            Cow::Owned(format!("{}/64", std::net::Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0)))
        }
        Ok(v4) => Cow::Owned(v4.to_string()),
        Err(_) => Cow::Borrowed(t),
    }
}

/// [`ip_form`] of text that may be an IPv6 address.
#[cold]
#[inline(never)]
fn ipv6_form(t: &str) -> Cow<'_, str> {
    match t.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => {
            let c = ip.to_canonical().to_string();
            if c == t { Cow::Borrowed(t) } else { Cow::Owned(c) }
        }
        Err(_) => Cow::Borrowed(t),
    }
}

/// The email as velocity counts it: trimmed and lower-cased ([`lower`]), and without the `+tag` of its local part
/// (`a+shop@x.com` counts as `a@x.com`): one mailbox takes mail for every tag, and a count per tag would let one
/// person make attempt after attempt under new addresses. Blocklists and rules see the address with its tag.
/// Borrowed (the trimmed input itself, the common case) exactly when it is also [`lower`]'s form.
pub(crate) fn email_velocity_form(v: &str) -> Cow<'_, str> {
    let email = lower(v);
    let b = email.as_bytes();
    let Some(at) = b.iter().rposition(|&c| c == b'@') else { return email };
    let Some(plus) = b[..at].iter().position(|&c| c == b'+') else { return email };
    Cow::Owned(format!("{}{}", &email[..plus], &email[at..]))
}

/// `v` trimmed and ASCII lower-cased, borrowed when it already is.
pub(crate) fn ascii_lower(v: &str) -> Cow<'_, str> {
    let t = trimmed(v);
    if t.bytes().any(|c| c.is_ascii_uppercase()) { Cow::Owned(t.to_ascii_lowercase()) } else { Cow::Borrowed(t) }
}

/// `v` trimmed and ASCII upper-cased, borrowed when it already is.
pub(crate) fn ascii_upper(v: &str) -> Cow<'_, str> {
    let t = trimmed(v);
    if t.bytes().any(|c| c.is_ascii_lowercase()) { Cow::Owned(t.to_ascii_uppercase()) } else { Cow::Borrowed(t) }
}

/// The type of an attribute in the rule language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttrType {
    /// A 64-bit integer.
    Int,
    /// A string (empty when unknown).
    Text,
    /// An amount: only in a comparison with a money literal (`amount > 500 USD`).
    Money,
}

/// An attribute of the rule language: its name, type and what it means.
#[derive(Debug, Clone)]
pub struct AttributeDoc {
    /// Its name in rules.
    pub name: String,
    /// Its type.
    pub ty: AttrType,
    /// What it means.
    pub doc: String,
}

/// Index of each scalar attribute in the evaluation context (velocity attributes follow).
pub(crate) const SCALARS: &[(&str, AttrType, &str)] = &[
    ("amount_minor", AttrType::Int, "the amount in minor units of `currency` (cents for USD, yen for JPY)"),
    ("currency", AttrType::Text, "ISO 4217 code, upper case (`USD`)"),
    ("email", AttrType::Text, "the customer's email, lower case"),
    ("email_domain", AttrType::Text, "the part of the email after `@`, lower case"),
    ("card_fingerprint", AttrType::Text, "a stable fingerprint of the card"),
    ("card_bin", AttrType::Text, "the card's BIN"),
    ("card_country", AttrType::Text, "issuer country, ISO 3166 alpha-2"),
    ("billing_country", AttrType::Text, "billing address country"),
    ("ip", AttrType::Text, "the client IP, in one form (IPv4-mapped IPv6 as IPv4, IPv6 compressed lower-case)"),
    ("ip_country", AttrType::Text, "the IP's country"),
    ("avs_result", AttrType::Text, "address verification result"),
    ("cvv_result", AttrType::Text, "CVC check result"),
    ("customer_id", AttrType::Text, "the merchant's customer id"),
    ("risk_score", AttrType::Int, "the risk score so far: the starting score plus the `score` rules matched above"),
];

pub(crate) const RISK_SCORE_SLOT: usize = 13;
pub(crate) const SCALAR_COUNT: usize = 14;

/// Every attribute the rule language knows, in context order, plus `amount` (money comparisons only).
pub(crate) static NAMES: LazyLock<Vec<(String, AttrType)>> = LazyLock::new(|| {
    let mut v: Vec<(String, AttrType)> = SCALARS.iter().map(|(n, t, _)| ((*n).to_owned(), *t)).collect();
    for s in Subject::ALL {
        for m in Measure::ALL {
            for w in Window::ALL {
                v.push((Velocity::new(m, s, w).name(), AttrType::Int));
            }
        }
    }
    v
});

pub(crate) static INDEX: LazyLock<std::collections::HashMap<&'static str, usize>> =
    LazyLock::new(|| NAMES.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect());

/// True for the attributes a money literal may be compared with: `amount` and `amount_per_*`.
pub(crate) fn is_money_attribute(name: &str) -> bool {
    name == "amount" || name.starts_with("amount_per_")
}

/// The documented attribute set of the rule language, for docs, editors and error messages.
#[must_use]
pub fn attribute_docs() -> Vec<AttributeDoc> {
    let mut out: Vec<AttributeDoc> = vec![AttributeDoc {
        name: "amount".to_owned(),
        ty: AttrType::Money,
        doc: "the amount, only compared with a money literal: `amount > 500 USD`".to_owned(),
    }];
    out.extend(SCALARS.iter().map(|(n, t, d)| AttributeDoc { name: (*n).to_owned(), ty: *t, doc: (*d).to_owned() }));
    for s in Subject::ALL {
        for m in Measure::ALL {
            for w in Window::ALL {
                let v = Velocity::new(m, s, w);
                let what = match m {
                    Measure::Attempts => "attempts (this one included)",
                    Measure::Amount => {
                        "sum of attempted amounts in this currency, minor units (this one included; a negative amount adds 0; saturates at i64::MAX)"
                    }
                    Measure::Declines => "declines",
                };
                out.push(AttributeDoc {
                    name: v.name(),
                    ty: AttrType::Int,
                    doc: format!("{what} per {} over the last {}", s.as_str(), w.as_str()),
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::has_upper_or_non_ascii;

    /// The word-at-a-time check says what the byte-by-byte one says: every byte value at every position of
    /// strings around the word size.
    #[test]
    fn upper_or_non_ascii_check_matches_the_plain_one() {
        let plain = |b: &[u8]| b.iter().any(|&c| !c.is_ascii() || c.is_ascii_uppercase());
        for len in 1..20 {
            for pos in 0..len {
                for byte in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[pos] = byte;
                    assert_eq!(has_upper_or_non_ascii(&b), plain(&b), "{b:?}");
                }
            }
        }
    }
}
