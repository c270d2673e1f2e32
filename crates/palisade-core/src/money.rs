//! Money: a `rust_decimal::Decimal` amount in an ISO 4217 currency. No `f64` anywhere.
//!
//! Amounts are exact. Converting to integer minor units (what gateways take) fails with a typed error instead of
//! rounding when an amount is finer than the currency allows (`0.001 USD`, `1.5 JPY`). Arithmetic only combines
//! amounts of one currency. Provider quirks (Stripe's ISK and three-decimal rules) plug in through
//! [`MinorUnitRules`].

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Errors from money construction, conversion and arithmetic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not an ISO 4217 code this library knows.
    #[error("unknown currency code {0:?}: expected an ISO 4217 code such as USD")]
    UnknownCurrency(String),
    /// The amount has more decimal places than the currency's minor unit.
    #[error("{amount} {currency} is finer than the currency's minor unit (10^-{exponent}); round it explicitly first")]
    SubMinorAmount {
        /// The amount given.
        amount: Decimal,
        /// The currency.
        currency: Currency,
        /// The currency's exponent.
        exponent: u8,
    },
    /// Two currencies were mixed in one operation.
    #[error("cannot combine {left} and {right}: amounts must share one currency")]
    CurrencyMismatch {
        /// Left operand's currency.
        left: Currency,
        /// Right operand's currency.
        right: Currency,
    },
    /// The result does not fit.
    #[error("amount overflow")]
    Overflow,
    /// A provider rule refused the amount.
    #[error("{provider} refuses {amount} {currency}: {rule}")]
    ProviderRule {
        /// The provider's name.
        provider: &'static str,
        /// The amount.
        amount: Decimal,
        /// The currency.
        currency: Currency,
        /// The rule that refused it.
        rule: &'static str,
    },
    /// The amount text does not follow the amount grammar (see [`Money::parse`]).
    #[error(
        "invalid amount {0:?}: expected a plain decimal such as \"12.34\" (digits with an optional leading '-' and '.'; no '+', spaces, exponent or leading zeros)"
    )]
    InvalidAmount(String),
    /// The amount does not fit in a signed 64-bit count of minor units, which is what gateways take.
    #[error(
        "{amount} {currency} is out of range: an amount must fit in a signed 64-bit count of minor units (at most 9223372036854775807 minor units)"
    )]
    OutOfRange {
        /// The amount given.
        amount: Decimal,
        /// The currency.
        currency: Currency,
    },
}

/// An ISO 4217 currency with its minor-unit exponent.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: [u8; 3],
    exponent: u8,
}

/// ISO 4217 codes whose minor unit is not 2 decimals.
const EXPONENT_EXCEPTIONS: &[(&str, u8)] = &[
    // zero-decimal
    ("BIF", 0),
    ("CLP", 0),
    ("DJF", 0),
    ("GNF", 0),
    ("ISK", 0),
    ("JPY", 0),
    ("KMF", 0),
    ("KRW", 0),
    ("PYG", 0),
    ("RWF", 0),
    ("UGX", 0),
    ("UYI", 0),
    ("VND", 0),
    ("VUV", 0),
    ("XAF", 0),
    ("XOF", 0),
    ("XPF", 0),
    // three-decimal
    ("BHD", 3),
    ("IQD", 3),
    ("JOD", 3),
    ("KWD", 3),
    ("LYD", 3),
    ("OMR", 3),
    ("TND", 3),
    // four-decimal
    ("CLF", 4),
    ("UYW", 4),
];

/// Active ISO 4217 codes (two-decimal unless listed in the exceptions).
const ISO_CODES: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD", "BIF",
    "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLF", "CLP", "CNY", "COP",
    "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL",
    "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK",
    "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD",
    "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN",
    "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON",
    "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC",
    "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYI", "UYU",
    "UYW", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

const fn cur(code: &str, exponent: u8) -> Currency {
    let b = code.as_bytes();
    Currency { code: [b[0], b[1], b[2]], exponent }
}

impl Currency {
    /// US dollar (2).
    pub const USD: Currency = cur("USD", 2);
    /// Euro (2).
    pub const EUR: Currency = cur("EUR", 2);
    /// Pound sterling (2).
    pub const GBP: Currency = cur("GBP", 2);
    /// Japanese yen (0).
    pub const JPY: Currency = cur("JPY", 0);
    /// South Korean won (0).
    pub const KRW: Currency = cur("KRW", 0);
    /// Icelandic króna (0 in ISO 4217; Stripe wants multiples of 100 in its two-decimal form).
    pub const ISK: Currency = cur("ISK", 0);
    /// Bahraini dinar (3).
    pub const BHD: Currency = cur("BHD", 3);
    /// Kuwaiti dinar (3).
    pub const KWD: Currency = cur("KWD", 3);

    /// Looks up an ISO 4217 code (case-insensitive).
    ///
    /// # Errors
    /// [`MoneyError::UnknownCurrency`] for codes not in ISO 4217.
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        let upper = code.trim().to_ascii_uppercase();
        if upper.len() != 3 || !ISO_CODES.contains(&upper.as_str()) {
            return Err(MoneyError::UnknownCurrency(code.to_owned()));
        }
        let exponent = EXPONENT_EXCEPTIONS.iter().find(|(c, _)| *c == upper).map_or(2, |(_, e)| *e);
        Ok(cur(&upper, exponent))
    }
    /// The three-letter code.
    #[must_use]
    pub fn code(&self) -> &str {
        // The bytes come from the ASCII table above, so they are valid UTF-8.
        std::str::from_utf8(&self.code).unwrap_or("???")
    }
    /// Number of decimal places of the minor unit (2 for USD, 0 for JPY, 3 for BHD).
    #[must_use]
    pub const fn exponent(&self) -> u8 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}
impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Currency::from_code(&s).map_err(serde::de::Error::custom)
    }
}

/// An exact amount of one currency, always representable as a signed 64-bit count of the currency's minor units.
/// Kept in canonical form, with exactly the currency's number of decimals, so it prints, serializes and compares
/// one way: `12.30` USD, `100` JPY, `1.230` BHD. Serializes as `{"amount":"12.30","currency":"USD"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

#[derive(Deserialize)]
struct RawMoney<'a> {
    #[serde(borrow)]
    amount: std::borrow::Cow<'a, str>,
    currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    /// Reads the amount with [`Money::parse`]'s grammar.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMoney::deserialize(d)?;
        Money::parse(&raw.amount, raw.currency).map_err(serde::de::Error::custom)
    }
}

impl Money {
    /// An amount, refused when finer than the currency's minor unit or too large for 64-bit minor units.
    ///
    /// # Errors
    /// [`MoneyError::SubMinorAmount`] or [`MoneyError::OutOfRange`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let exponent = u32::from(currency.exponent);
        let normalized = amount.normalize();
        if normalized.scale() > exponent {
            return Err(MoneyError::SubMinorAmount { amount, currency, exponent: currency.exponent });
        }
        let minor = minor_units(normalized, exponent).ok_or(MoneyError::OutOfRange { amount, currency })?;
        Ok(Money::from_minor(minor, currency))
    }

    /// Parses an amount in major units (`"12.34"` USD, `"500"` JPY, `"1.234"` BHD).
    ///
    /// The one grammar for amounts, here and in every JSON or CSV field Palisade reads:
    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`. No `+`, no spaces, no exponent, no leading zeros, no bare `.5` or `5.`:
    /// an amount that reaches a gateway should never depend on how lenient a parser was. Decimals beyond the
    /// currency's exponent must be zeros (`1.000` JPY is `1`; `0.001` USD is refused), and the amount must fit
    /// in a signed 64-bit count of minor units, as gateways take it.
    ///
    /// ```
    /// use palisade_core::{Currency, Money, MoneyError};
    /// assert_eq!(Money::parse("12.3", Currency::USD).unwrap().to_string(), "12.30 USD");
    /// for bad in [" 12.34", "+12.34", ".5", "5.", "00012.34", "1e3", "12,34", ""] {
    ///     assert!(matches!(Money::parse(bad, Currency::USD), Err(MoneyError::InvalidAmount(_))), "{bad}");
    /// }
    /// assert!(matches!(Money::parse("92233720368547758.08", Currency::USD), Err(MoneyError::OutOfRange { .. })));
    /// ```
    ///
    /// # Errors
    /// [`MoneyError::InvalidAmount`], [`MoneyError::SubMinorAmount`] or [`MoneyError::OutOfRange`].
    pub fn parse(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let unsigned = text.strip_prefix('-').unwrap_or(text).as_bytes();
        let (int, frac) = match unsigned.iter().position(|&c| c == b'.') {
            Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
            None => (unsigned, None),
        };
        let int_ok = !int.is_empty() && int.iter().all(u8::is_ascii_digit) && (int.len() == 1 || int[0] != b'0');
        let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit));
        if !int_ok || !frac_ok {
            return Err(MoneyError::InvalidAmount(text.to_owned()));
        }
        // Grammatical but beyond a decimal's 28 digits: far out of range for any currency.
        let amount =
            Decimal::from_str_exact(text).map_err(|_| MoneyError::OutOfRange { amount: Decimal::MAX, currency })?;
        Money::new(amount, currency)
    }
    /// From integer minor units (cents for USD, yen for JPY, fils for BHD).
    #[must_use]
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { amount: Decimal::new(minor, u32::from(currency.exponent)), currency }
    }
    /// To integer minor units. Every `Money` fits (it is refused on construction otherwise), so this cannot fail
    /// for a `Money` built through this crate's constructors; the `Result` stays for the API's stability.
    ///
    /// # Errors
    /// [`MoneyError::Overflow`], never for a `Money` built through [`Money::new`], [`Money::parse`],
    /// [`Money::from_minor`] or the checked arithmetic.
    pub fn to_minor(&self) -> Result<i64, MoneyError> {
        minor_units(self.amount, u32::from(self.currency.exponent)).ok_or(MoneyError::Overflow)
    }
    /// The amount in major units, canonical: exactly the currency's number of decimals (`12.30`, `100`).
    #[must_use]
    pub const fn amount(&self) -> Decimal {
        self.amount
    }
    /// The currency.
    #[must_use]
    pub const fn currency(&self) -> Currency {
        self.currency
    }
    /// True for a zero amount.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.amount.is_zero()
    }
    /// True for a negative amount.
    #[must_use]
    pub fn is_negative(&self) -> bool {
        self.amount.is_sign_negative() && !self.amount.is_zero()
    }

    /// `Ok` for an amount above zero, as every amount a payment moves must be (charged, authorized, captured,
    /// refunded; Stripe's rule too: a refund of -5.00 would add to what is left to refund).
    ///
    /// # Errors
    /// [`PaymentError::InvalidRequest`](crate::PaymentError::InvalidRequest), "amount must be positive", for zero
    /// or a negative amount.
    pub fn require_positive(&self) -> Result<(), crate::PaymentError> {
        if self.is_negative() || self.is_zero() {
            return Err(crate::PaymentError::invalid_request("amount must be positive"));
        }
        Ok(())
    }

    fn same_currency(&self, other: &Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { left: self.currency, right: other.currency })
        }
    }
    /// `self + other`, same currency only.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_add(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.to_minor()?.checked_add(other.to_minor()?).ok_or(MoneyError::Overflow)?;
        Ok(Money::from_minor(minor, self.currency))
    }
    /// `self - other`, same currency only.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.to_minor()?.checked_sub(other.to_minor()?).ok_or(MoneyError::Overflow)?;
        Ok(Money::from_minor(minor, self.currency))
    }
    /// Compares two amounts of one currency.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`].
    pub fn checked_cmp(&self, other: &Money) -> Result<std::cmp::Ordering, MoneyError> {
        self.same_currency(other)?;
        Ok(self.amount.cmp(&other.amount))
    }
}

/// `amount` (`mantissa × 10^-scale`) as a count of `10^-exponent` units, when it is a whole count that fits in
/// an `i64`. Integer arithmetic on the decimal's parts: the mantissa has 96 bits and the scale is at most 28, so
/// every power and product below fits in an `i128`.
fn minor_units(amount: Decimal, exponent: u32) -> Option<i64> {
    let (mantissa, scale) = (amount.mantissa(), amount.scale());
    let minor = if scale <= exponent {
        mantissa.checked_mul(10i128.checked_pow(exponent - scale)?)?
    } else {
        let p = 10i128.checked_pow(scale - exponent)?;
        if mantissa % p != 0 {
            return None;
        }
        mantissa / p
    };
    i64::try_from(minor).ok()
}

impl fmt::Display for Money {
    /// `12.30 USD`, `100 JPY`: the canonical amount and the currency code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount, self.currency)
    }
}
impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A payment provider's rules for turning [`Money`] into the integer it sends on the wire.
pub trait MinorUnitRules {
    /// The provider's name, for errors.
    fn provider(&self) -> &'static str;
    /// Integer amount as the provider expects it.
    ///
    /// # Errors
    /// A [`MoneyError`] when the provider cannot represent the amount.
    fn to_provider_minor(&self, money: &Money) -> Result<i64, MoneyError>;
}

/// ISO 4217 minor units, no provider quirks.
#[derive(Debug, Clone, Copy, Default)]
pub struct IsoRules;

impl MinorUnitRules for IsoRules {
    fn provider(&self) -> &'static str {
        "iso4217"
    }
    fn to_provider_minor(&self, money: &Money) -> Result<i64, MoneyError> {
        money.to_minor()
    }
}

/// Stripe's documented quirks: ISK is sent in a two-decimal form and must be a whole number of krónur
/// (a multiple of 100 on the wire); three-decimal currencies must be sent with the last digit 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeRules;

impl MinorUnitRules for StripeRules {
    fn provider(&self) -> &'static str {
        "stripe"
    }
    fn to_provider_minor(&self, money: &Money) -> Result<i64, MoneyError> {
        let cur = money.currency();
        if cur.code() == "ISK" {
            let whole = money.to_minor()?; // ISK has exponent 0, so whole krónur
            return whole.checked_mul(100).ok_or(MoneyError::Overflow);
        }
        let minor = money.to_minor()?;
        if cur.exponent() == 3 && minor % 10 != 0 {
            return Err(MoneyError::ProviderRule {
                provider: "stripe",
                amount: money.amount(),
                currency: cur,
                rule: "three-decimal amounts must end in 0",
            });
        }
        Ok(minor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn exponent_table() {
        for (code, exp) in [
            ("USD", 2),
            ("EUR", 2),
            ("JPY", 0),
            ("KRW", 0),
            ("CLP", 0),
            ("VND", 0),
            ("ISK", 0),
            ("BHD", 3),
            ("KWD", 3),
            ("OMR", 3),
            ("JOD", 3),
            ("TND", 3),
            ("CLF", 4),
        ] {
            assert_eq!(Currency::from_code(code).unwrap().exponent(), exp, "{code}");
        }
        assert_eq!(Currency::from_code("usd").unwrap(), Currency::USD);
        assert!(matches!(Currency::from_code("XYZ"), Err(MoneyError::UnknownCurrency(_))));
        assert!(Currency::from_code("US").is_err());
        // constants agree with the table
        for c in [
            Currency::USD,
            Currency::EUR,
            Currency::GBP,
            Currency::JPY,
            Currency::KRW,
            Currency::ISK,
            Currency::BHD,
            Currency::KWD,
        ] {
            assert_eq!(Currency::from_code(c.code()).unwrap(), c);
        }
    }

    #[test]
    fn minor_units() {
        assert_eq!(Money::parse("12.34", Currency::USD).unwrap().to_minor().unwrap(), 1234);
        assert_eq!(Money::parse("500", Currency::JPY).unwrap().to_minor().unwrap(), 500);
        assert_eq!(Money::parse("1.234", Currency::BHD).unwrap().to_minor().unwrap(), 1234);
        assert_eq!(Money::parse("12.30", Currency::USD).unwrap().to_minor().unwrap(), 1230);
        assert_eq!(Money::from_minor(1234, Currency::BHD).amount(), d("1.234"));
        assert_eq!(Money::from_minor(500, Currency::JPY).amount(), d("500"));
    }

    #[test]
    fn refuses_sub_minor() {
        assert!(matches!(Money::parse("0.001", Currency::USD), Err(MoneyError::SubMinorAmount { .. })));
        assert!(matches!(Money::parse("1.5", Currency::JPY), Err(MoneyError::SubMinorAmount { .. })));
        assert!(matches!(Money::parse("1.2345", Currency::BHD), Err(MoneyError::SubMinorAmount { .. })));
        // trailing zeros are not finer
        assert!(Money::parse("1.000", Currency::JPY).is_ok());
        assert!(matches!(Money::parse("abc", Currency::USD), Err(MoneyError::InvalidAmount(_))));
        assert!(matches!(Money::parse("12.340", Currency::USD), Ok(m) if m.to_minor() == Ok(1234)));
        let e = serde_json::from_str::<Money>(r#"{"amount":"1.001","currency":"USD"}"#).unwrap_err();
        assert!(e.to_string().contains("finer"), "{e}");
    }

    #[test]
    fn arithmetic_within_one_currency() {
        let a = Money::parse("10.00", Currency::USD).unwrap();
        let b = Money::parse("2.50", Currency::USD).unwrap();
        assert_eq!(a.checked_add(&b).unwrap().amount(), d("12.50"));
        assert_eq!(a.checked_sub(&b).unwrap().amount(), d("7.50"));
        let y = Money::parse("10", Currency::JPY).unwrap();
        assert!(matches!(a.checked_add(&y), Err(MoneyError::CurrencyMismatch { .. })));
        assert!(matches!(a.checked_cmp(&y), Err(MoneyError::CurrencyMismatch { .. })));
    }

    #[test]
    fn stripe_rules() {
        let isk = Money::parse("1000", Currency::ISK).unwrap();
        assert_eq!(StripeRules.to_provider_minor(&isk).unwrap(), 100_000);
        assert!(Money::parse("10.5", Currency::ISK).is_err());
        let ok = Money::parse("1.230", Currency::KWD).unwrap();
        assert_eq!(StripeRules.to_provider_minor(&ok).unwrap(), 1230);
        let bad = Money::parse("1.234", Currency::KWD).unwrap();
        assert!(matches!(StripeRules.to_provider_minor(&bad), Err(MoneyError::ProviderRule { .. })));
        assert_eq!(IsoRules.to_provider_minor(&bad).unwrap(), 1234);
    }

    #[test]
    fn serde_as_decimal_strings() {
        let m = Money::parse("12.34", Currency::USD).unwrap();
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"amount":"12.34","currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&s).unwrap(), m);
        assert_eq!(format!("{}", Money::from_minor(5, Currency::USD)), "0.05 USD");
    }

    #[test]
    fn one_grammar() {
        for bad in [
            " 12.34", "12.34 ", "+12.34", ".5", "5.", "00012.34", "01", "-", "-.5", "1e3", "1E3", "12,34", "1_000", "",
            ".", "--1", "- 1", "0x10", "١٢", "NaN", "inf",
        ] {
            assert!(matches!(Money::parse(bad, Currency::USD), Err(MoneyError::InvalidAmount(_))), "{bad:?}");
            let json = format!(r#"{{"amount":{},"currency":"USD"}}"#, serde_json::to_string(bad).unwrap());
            assert!(serde_json::from_str::<Money>(&json).is_err(), "{bad:?}");
        }
        for good in ["0", "0.5", "12.34", "-12.34", "100", "10.0", "0.00"] {
            assert!(Money::parse(good, Currency::USD).is_ok(), "{good}");
        }
    }

    #[test]
    fn amounts_must_fit_minor_units() {
        for huge in
            ["99999999999999999999999", "92233720368547758.08", "-92233720368547758.09", "1".repeat(40).as_str()]
        {
            assert!(matches!(Money::parse(huge, Currency::USD), Err(MoneyError::OutOfRange { .. })), "{huge}");
        }
        let json = r#"{"amount":"92233720368547758.08","currency":"USD"}"#;
        assert!(serde_json::from_str::<Money>(json).unwrap_err().to_string().contains("out of range"));
        assert_eq!(Money::parse("92233720368547758.07", Currency::USD).unwrap().to_minor(), Ok(i64::MAX));
        assert_eq!(Money::parse("-92233720368547758.08", Currency::USD).unwrap().to_minor(), Ok(i64::MIN));
        assert_eq!(Money::parse("9223372036854775807", Currency::JPY).unwrap().to_minor(), Ok(i64::MAX));
        assert!(matches!(Money::parse("9223372036854775808", Currency::JPY), Err(MoneyError::OutOfRange { .. })));
        let max = Money::from_minor(i64::MAX, Currency::USD);
        assert_eq!(max.checked_add(&Money::from_minor(1, Currency::USD)), Err(MoneyError::Overflow));
        assert!(matches!(Money::new(Decimal::MAX, Currency::USD), Err(MoneyError::OutOfRange { .. })));
    }

    #[test]
    fn prints_canonically_for_the_currency() {
        for (text, cur, shown) in [
            ("100", Currency::JPY, "100 JPY"),
            ("100.000", Currency::JPY, "100 JPY"),
            ("12.3", Currency::USD, "12.30 USD"),
            ("12", Currency::USD, "12.00 USD"),
            ("1.23", Currency::BHD, "1.230 BHD"),
            ("0", Currency::USD, "0.00 USD"),
        ] {
            let m = Money::parse(text, cur).unwrap();
            assert_eq!(m.to_string(), shown);
            let amount = shown.split(' ').next().unwrap();
            assert_eq!(m.amount().to_string(), amount);
            assert_eq!(serde_json::to_value(m).unwrap()["amount"], amount);
        }
        assert_eq!(Money::parse("12.3", Currency::USD), Money::parse("12.30", Currency::USD));
    }

    /// The decimal arithmetic `to_minor` replaced: scale by 10^exponent, refuse a fraction, convert.
    fn to_minor_by_decimal(m: &Money) -> Result<i64, MoneyError> {
        let scaled = m
            .amount
            .checked_mul(Decimal::from(10i64.pow(u32::from(m.currency.exponent))))
            .ok_or(MoneyError::Overflow)?;
        if !scaled.fract().is_zero() {
            return Err(MoneyError::SubMinorAmount {
                amount: m.amount,
                currency: m.currency,
                exponent: m.currency.exponent,
            });
        }
        i64::try_from(scaled).map_err(|_| MoneyError::Overflow)
    }

    /// What the grammar says `text` (grammatical by construction) is in `cur`, worked out on its digits with
    /// integer arithmetic, apart from `Decimal`: the count of minor units, or why there is none. Sub-minor wins
    /// over out of range, as in [`Money::new`].
    fn expected_minor(text: &str, cur: Currency) -> Result<i64, &'static str> {
        let (negative, unsigned) = text.strip_prefix('-').map_or((false, text), |u| (true, u));
        let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let exponent = usize::from(cur.exponent());
        let (kept, dropped) = frac.split_at(frac.len().min(exponent));
        if dropped.bytes().any(|b| b != b'0') {
            return Err("sub-minor");
        }
        let digits = format!("{int}{kept:0<exponent$}");
        let magnitude: i128 = digits.parse().unwrap();
        i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| "out of range")
    }

    proptest! {
        /// Any decimal (sub-minor, huge, negative, every scale) is accepted exactly when the decimal arithmetic
        /// finds a whole count of minor units that fits, and then to that count.
        #[test]
        fn new_matches_decimal_arithmetic(lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(),
                                          negative in any::<bool>(), scale in 0u32..=28, idx in 0usize..4) {
            let cur = [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").unwrap()][idx];
            // Small mantissas too, so whole and exact amounts are common, not only overflows.
            for (lo, mid, hi) in [(lo, mid, hi), (lo, 0, 0), (lo % 100_000, 0, 0)] {
                let amount = Decimal::from_parts(lo, mid, hi, negative, scale);
                let expected = to_minor_by_decimal(&Money { amount, currency: cur });
                match Money::new(amount, cur) {
                    Ok(m) => prop_assert_eq!(Ok(m.to_minor().unwrap()), expected),
                    Err(MoneyError::SubMinorAmount { .. }) => {
                        let sub_minor = matches!(expected, Err(MoneyError::SubMinorAmount { .. }));
                        prop_assert!(sub_minor, "{:?}", expected);
                    }
                    Err(MoneyError::OutOfRange { .. }) => prop_assert_eq!(expected, Err(MoneyError::Overflow)),
                    Err(e) => prop_assert!(false, "unexpected {e}"),
                }
            }
        }

        /// Every amount prints in a form the grammar reads back to the same amount.
        #[test]
        fn canonical_text_round_trips(minor in any::<i64>(), idx in 0usize..4) {
            let cur = [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").unwrap()][idx];
            let m = Money::from_minor(minor, cur);
            let text = m.amount().to_string();
            prop_assert_eq!(Money::parse(&text, cur).unwrap(), m);
            prop_assert_eq!(Money::parse(&text, cur).unwrap().to_minor().unwrap(), minor);
        }

        /// Every text of the grammar is read exactly: accepted with the count of minor units its digits say
        /// (so every accepted amount fits minor units), or refused as sub-minor or out of range, never as
        /// malformed. What is accepted prints canonically (the currency's decimals) and reads back to itself.
        #[test]
        fn grammatical_text_is_read_exactly(text in "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{1,6})?", idx in 0usize..4) {
            let cur = [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").unwrap()][idx];
            match (Money::parse(&text, cur), expected_minor(&text, cur)) {
                (Ok(m), Ok(minor)) => {
                    prop_assert_eq!(m.to_minor(), Ok(minor));
                    let shown = m.amount().to_string();
                    let decimals = shown.split_once('.').map_or(0, |(_, f)| f.len());
                    prop_assert_eq!(decimals, usize::from(cur.exponent()), "{}", shown);
                    prop_assert_eq!(Money::parse(&shown, cur), Ok(m));
                    prop_assert_eq!(m.to_string(), format!("{shown} {cur}"));
                }
                (Err(MoneyError::SubMinorAmount { .. }), Err("sub-minor"))
                | (Err(MoneyError::OutOfRange { .. }), Err("out of range")) => {}
                (got, expected) => prop_assert!(false, "{text:?} {cur}: got {got:?}, expected {expected:?}"),
            }
        }

        /// Text one edit away from the grammar (a sign, a space, a leading zero, a bare or dangling point, an
        /// exponent, a comma) is refused as malformed, whatever its value.
        #[test]
        fn text_off_the_grammar_is_refused(text in "-?(0|[1-9][0-9]{0,21})(\\.[0-9]{1,6})?", edit in 0usize..9) {
            let (sign, unsigned) = if let Some(u) = text.strip_prefix('-') { ("-", u) } else { ("", text.as_str()) };
            let (int, frac) = unsigned.split_once('.').map_or((unsigned, None), |(i, f)| (i, Some(f)));
            let frac_or_5 = frac.unwrap_or("5");
            let bad = match edit {
                0 => format!("+{unsigned}"),
                1 => format!(" {text}"),
                2 => format!("{text} "),
                3 => format!("{sign}0{unsigned}"),
                4 => format!("{sign}.{frac_or_5}"),
                5 => format!("{sign}{int}."),
                6 => format!("{text}e0"),
                7 => format!("{sign}{int},{frac_or_5}"),
                _ => format!("--{unsigned}"),
            };
            let refused = matches!(Money::parse(&bad, Currency::USD), Err(MoneyError::InvalidAmount(_)));
            prop_assert!(refused, "{:?} was not refused as malformed", bad);
        }

        #[test]
        fn minor_round_trip(minor in -1_000_000_000_000i64..1_000_000_000_000i64, idx in 0usize..4) {
            let cur = [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").unwrap()][idx];
            let m = Money::from_minor(minor, cur);
            prop_assert_eq!(m.to_minor().unwrap(), minor);
            let text = serde_json::to_string(&m).unwrap();
            let back: Money = serde_json::from_str(&text).unwrap();
            prop_assert_eq!(back.to_minor().unwrap(), minor);
        }
    }
}
