//! The JSON shapes of the HTTP simulator (documented in `docs/sim.md`), and their conversion to and from the
//! typed gateway requests. Amounts travel as decimal strings with a separate ISO currency code.

use std::collections::BTreeMap;

use palisade_core::{
    CaptureRequest, ChargeRequest, Currency, GatewayId, GatewayRequest, GatewayResponse, Money, Operation,
    PaymentError, PaymentStatus, PaymentToken, Reference, RefundRequest, VoidRequest,
};
use serde::{Deserialize, Serialize};

use crate::LedgerEntry;

/// `POST /v1/charges` and `POST /v1/authorizations`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ChargeBody {
    pub amount: String,
    pub currency: String,
    pub source: String,
    pub order_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// `POST /v1/authorizations/{id}/capture` (an empty body captures all).
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct AmountBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// `POST /v1/refunds`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RefundBody {
    pub payment_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
}

/// The answer to a successful operation.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct PaymentBody {
    pub id: String,
    pub op: Operation,
    pub status: PaymentStatus,
    pub amount: String,
    pub currency: String,
    pub order_id: String,
}

/// One element of `GET /v1/_sim/ledger`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LedgerRow {
    pub seq: u64,
    pub op: Operation,
    pub order_id: String,
    pub amount: String,
    pub currency: String,
    pub id: String,
    pub idempotency_key: Option<String>,
}

impl From<&LedgerEntry> for LedgerRow {
    fn from(e: &LedgerEntry) -> Self {
        LedgerRow {
            seq: e.seq,
            op: e.operation,
            order_id: e.order_id.clone(),
            amount: e.amount.amount().to_string(),
            currency: e.amount.currency().code().to_owned(),
            id: e.payment_id.clone(),
            idempotency_key: e.gateway_key.clone(),
        }
    }
}

/// The error member of an error answer (the rest is a problem+json document).
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorEnvelope {
    pub error: PaymentError,
}

fn bad(what: &str, e: impl std::fmt::Display) -> PaymentError {
    PaymentError::invalid_request(format!("{what}: {e}"))
}

fn money(amount: &str, currency: &str) -> Result<Money, PaymentError> {
    let currency = Currency::from_code(currency).map_err(|e| bad("currency", e))?;
    Money::parse(amount, currency).map_err(|e| bad("amount", e))
}

fn optional_money(amount: Option<&str>, currency: Option<&str>) -> Result<Option<Money>, PaymentError> {
    match (amount, currency) {
        (None, None) => Ok(None),
        (Some(a), Some(c)) => money(a, c).map(Some),
        _ => Err(PaymentError::invalid_request("amount and currency go together")),
    }
}

fn reference(what: &str, text: &str) -> Result<Reference, PaymentError> {
    Reference::new(text).map_err(|e| bad(what, e))
}

fn money_parts(m: &Money) -> (String, String) {
    (m.amount().to_string(), m.currency().code().to_owned())
}

impl ChargeBody {
    pub(crate) fn into_request(self, authorize: bool) -> Result<GatewayRequest, PaymentError> {
        let amount = money(&self.amount, &self.currency)?;
        let source = PaymentToken::new(self.source).map_err(|e| bad("source", e))?;
        let mut c = ChargeRequest::new(amount, source, reference("order_id", &self.order_id)?);
        if let Some(customer) = self.customer {
            c = c.customer(reference("customer", &customer)?);
        }
        for (k, v) in self.metadata {
            let v = reference("metadata", &v)?;
            c = c.meta(k, v);
        }
        Ok(if authorize { GatewayRequest::Authorize(c) } else { GatewayRequest::Charge(c) })
    }
    fn from_request(c: &ChargeRequest) -> Self {
        let (amount, currency) = money_parts(&c.amount);
        ChargeBody {
            amount,
            currency,
            source: c.source.as_str().to_owned(),
            order_id: c.order_reference.as_str().to_owned(),
            customer: c.customer.as_ref().map(|r| r.as_str().to_owned()),
            metadata: c.metadata.iter().map(|(k, v)| (k.clone(), v.as_str().to_owned())).collect(),
        }
    }
}

impl AmountBody {
    pub(crate) fn into_capture(self, authorization_id: &str) -> Result<GatewayRequest, PaymentError> {
        Ok(GatewayRequest::Capture(CaptureRequest {
            authorization_id: GatewayId::from(authorization_id),
            amount: optional_money(self.amount.as_deref(), self.currency.as_deref())?,
            idempotency_key: None,
        }))
    }
    fn from_amount(m: Option<&Money>) -> Self {
        match m {
            Some(m) => {
                let (amount, currency) = money_parts(m);
                AmountBody { amount: Some(amount), currency: Some(currency) }
            }
            None => AmountBody::default(),
        }
    }
}

impl RefundBody {
    pub(crate) fn into_request(self) -> Result<GatewayRequest, PaymentError> {
        Ok(GatewayRequest::Refund(RefundRequest {
            payment_id: GatewayId::from(self.payment_id),
            amount: optional_money(self.amount.as_deref(), self.currency.as_deref())?,
            idempotency_key: None,
        }))
    }
}

pub(crate) fn void_request(authorization_id: &str) -> GatewayRequest {
    GatewayRequest::Void(VoidRequest { authorization_id: GatewayId::from(authorization_id), idempotency_key: None })
}

impl PaymentBody {
    pub(crate) fn from_response(r: &GatewayResponse) -> Self {
        let (amount, currency) = money_parts(&r.amount);
        PaymentBody {
            id: r.id.as_str().to_owned(),
            op: r.operation,
            status: r.status,
            amount,
            currency,
            order_id: r.order_reference.as_str().to_owned(),
        }
    }
    pub(crate) fn into_response(self) -> Result<GatewayResponse, PaymentError> {
        Ok(GatewayResponse {
            id: GatewayId::from(self.id),
            operation: self.op,
            status: self.status,
            amount: money(&self.amount, &self.currency)?,
            order_reference: reference("order_id", &self.order_id)?,
        })
    }
}

/// A path segment is sent as is: ids are the gateway's own (`auth_000001`); anything else is refused rather than
/// escaped.
fn segment(id: &GatewayId) -> Result<&str, PaymentError> {
    let s = id.as_str();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')) {
        return Err(PaymentError::invalid_request("gateway id has characters a URL path cannot carry"));
    }
    Ok(s)
}

/// The path and JSON body of a request.
pub(crate) fn encode(req: &GatewayRequest) -> Result<(String, Vec<u8>), PaymentError> {
    Ok(match req {
        GatewayRequest::Charge(c) => ("/v1/charges".to_owned(), json(&ChargeBody::from_request(c))),
        GatewayRequest::Authorize(c) => ("/v1/authorizations".to_owned(), json(&ChargeBody::from_request(c))),
        GatewayRequest::Capture(c) => (
            format!("/v1/authorizations/{}/capture", segment(&c.authorization_id)?),
            json(&AmountBody::from_amount(c.amount.as_ref())),
        ),
        GatewayRequest::Void(v) => (format!("/v1/authorizations/{}/void", segment(&v.authorization_id)?), Vec::new()),
        GatewayRequest::Refund(r) => {
            let mut body = AmountBody::from_amount(r.amount.as_ref());
            let body = RefundBody {
                payment_id: segment(&r.payment_id)?.to_owned(),
                amount: body.amount.take(),
                currency: body.currency.take(),
            };
            ("/v1/refunds".to_owned(), json(&body))
        }
        _ => return Err(PaymentError::invalid_request("operation not supported by the HTTP simulator")),
    })
}

/// Structs of strings and maps with string keys always serialize.
fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
