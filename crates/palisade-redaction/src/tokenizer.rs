//! [`Tokenizer`]: swap a card number for a token, and back; [`EphemeralTokenizer`] for tests and development.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};

use palisade_core::PaymentError;

use crate::sensitive::Sensitive;
use palisade_core::card::{Brand, brand, is_pan};

/// A token standing for a card number, with the parts PCI DSS allows to show. Safe to log.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CardToken {
    id: String,
    last4: String,
    brand: Option<Brand>,
}

impl CardToken {
    /// A token as a vault returned it.
    #[must_use]
    pub fn new(id: impl Into<String>, last4: impl Into<String>, brand: Option<Brand>) -> Self {
        CardToken { id: id.into(), last4: last4.into(), brand }
    }
    /// The token.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The card's last four digits.
    #[must_use]
    pub fn last4(&self) -> &str {
        &self.last4
    }
    /// The card's brand.
    #[must_use]
    pub fn brand(&self) -> Option<Brand> {
        self.brand
    }
}

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CardToken({} {:?} …{})", self.id, self.brand, self.last4)
    }
}

impl fmt::Display for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Why a tokenizer refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenizeError {
    /// The input is not a card number (Luhn or IIN/length table failed).
    #[error("not a card number: pass 13-19 digits that pass Luhn and belong to a known card brand")]
    NotACard,
    /// The token is unknown (never issued, or deleted).
    #[error("unknown card token: it was never issued here or has been deleted; tokenize the card again")]
    UnknownToken,
    /// The vault could not be reached.
    #[error("token vault unavailable: {0}; nothing was tokenized, try again later")]
    Unavailable(String),
}

impl From<TokenizeError> for PaymentError {
    fn from(e: TokenizeError) -> Self {
        match e {
            TokenizeError::Unavailable(_) => PaymentError::store_unavailable(e.to_string()),
            TokenizeError::NotACard | TokenizeError::UnknownToken => PaymentError::invalid_request(e.to_string()),
        }
    }
}

/// A card vault: tokenize a PAN, detokenize a token, delete a token.
pub trait Tokenizer: Send + Sync {
    /// Stores `pan` (digits, spaces and dashes allowed) and returns its token.
    fn tokenize(&self, pan: &str) -> impl Future<Output = Result<CardToken, TokenizeError>> + Send;
    /// The card number behind `token`.
    fn detokenize(&self, token: &CardToken) -> impl Future<Output = Result<Sensitive<String>, TokenizeError>> + Send;
    /// Forgets `token`; true when it existed.
    fn delete(&self, token: &CardToken) -> impl Future<Output = Result<bool, TokenizeError>> + Send;
}

#[derive(Default)]
struct Vault {
    by_token: HashMap<String, String>,
    by_pan: HashMap<String, String>,
}

/// An in-memory [`Tokenizer`] for tests and development: tokens live as long as the process. The same card
/// gets the same token until it is deleted. Tokens are `tok_` and 32 letters (no digits, so no token ever
/// looks like a card to the scanner). Never use it in production: a restart loses every card.
#[derive(Clone, Default)]
pub struct EphemeralTokenizer {
    vault: Arc<Mutex<Vault>>,
}

impl fmt::Debug for EphemeralTokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.vault.lock().map(|v| v.by_token.len()).unwrap_or(0);
        f.debug_struct("EphemeralTokenizer").field("tokens", &n).finish()
    }
}

impl EphemeralTokenizer {
    /// An empty vault.
    #[must_use]
    pub fn new() -> Self {
        EphemeralTokenizer::default()
    }

    fn vault(&self) -> Result<std::sync::MutexGuard<'_, Vault>, TokenizeError> {
        self.vault.lock().map_err(|_| TokenizeError::Unavailable("vault lock poisoned".into()))
    }

    fn tokenize_now(&self, pan: &str) -> Result<CardToken, TokenizeError> {
        let digits: String = pan.chars().filter(|c| *c != ' ' && *c != '-').collect();
        if !digits.bytes().all(|b| b.is_ascii_digit()) || !is_pan(digits.as_bytes()) {
            return Err(TokenizeError::NotACard);
        }
        let last4 = digits[digits.len() - 4..].to_owned();
        let brand = brand(digits.as_bytes());
        let mut v = self.vault()?;
        if let Some(id) = v.by_pan.get(&digits) {
            return Ok(CardToken { id: id.clone(), last4, brand });
        }
        let raw = uuid::Uuid::new_v4();
        let mut id = String::with_capacity(36);
        id.push_str("tok_");
        for b in raw.as_bytes() {
            id.push(char::from(b'a' + (b >> 4)));
            id.push(char::from(b'a' + (b & 0x0f)));
        }
        v.by_token.insert(id.clone(), digits.clone());
        v.by_pan.insert(digits, id.clone());
        Ok(CardToken { id, last4, brand })
    }
}

impl Tokenizer for EphemeralTokenizer {
    async fn tokenize(&self, pan: &str) -> Result<CardToken, TokenizeError> {
        self.tokenize_now(pan)
    }

    async fn detokenize(&self, token: &CardToken) -> Result<Sensitive<String>, TokenizeError> {
        self.vault()?.by_token.get(&token.id).cloned().map(Sensitive::new).ok_or(TokenizeError::UnknownToken)
    }

    async fn delete(&self, token: &CardToken) -> Result<bool, TokenizeError> {
        let mut v = self.vault()?;
        match v.by_token.remove(&token.id) {
            Some(pan) => {
                v.by_pan.remove(&pan);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_delete() {
        let t = EphemeralTokenizer::new();
        let tok = t.tokenize("4242 4242 4242 4242").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tok.last4(), "4242");
        assert_eq!(tok.brand(), Some(Brand::Visa));
        assert!(tok.id().starts_with("tok_") && !tok.id().bytes().any(|b| b.is_ascii_digit()));
        assert!(!format!("{tok:?}").contains("424242"));
        let again = t.tokenize("4242424242424242").await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(again, tok);
        let pan = t.detokenize(&tok).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pan.expose(), "4242424242424242");
        assert_eq!(format!("{pan:?}"), "[REDACTED]");
        assert_eq!(t.delete(&tok).await, Ok(true));
        assert_eq!(t.delete(&tok).await, Ok(false));
        assert_eq!(t.detokenize(&tok).await, Err(TokenizeError::UnknownToken));
        assert_eq!(t.tokenize("4242424242424241").await, Err(TokenizeError::NotACard));
        assert_eq!(t.tokenize("1700000000004").await, Err(TokenizeError::NotACard));
        let e: PaymentError = TokenizeError::NotACard.into();
        assert_eq!(e.kind(), palisade_core::ErrorKind::InvalidRequest);
    }
}
