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
    /// The amount text could not be parsed as a decimal.
    #[error("invalid amount {0:?}: expected a decimal string such as \"12.34\"")]
    InvalidAmount(String),
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

/// An exact amount of one currency. Serializes as `{"amount":"12.34","currency":"USD"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Money {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

#[derive(Deserialize)]
struct RawMoney {
    #[serde(with = "rust_decimal::serde::str")]
    amount: Decimal,
    currency: Currency,
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawMoney::deserialize(d)?;
        Money::new(raw.amount, raw.currency).map_err(serde::de::Error::custom)
    }
}

impl Money {
    /// An amount, refused when finer than the currency's minor unit.
    ///
    /// # Errors
    /// [`MoneyError::SubMinorAmount`].
    pub fn new(amount: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let normalized = amount.normalize();
        if normalized.scale() > u32::from(currency.exponent) {
            return Err(MoneyError::SubMinorAmount { amount, currency, exponent: currency.exponent });
        }
        Ok(Money { amount, currency })
    }
    /// Parses `"12.34"` in `currency`.
    ///
    /// # Errors
    /// [`MoneyError::InvalidAmount`] or [`MoneyError::SubMinorAmount`].
    pub fn parse(amount: &str, currency: Currency) -> Result<Money, MoneyError> {
        let d = Decimal::from_str_exact(amount.trim()).map_err(|_| MoneyError::InvalidAmount(amount.to_owned()))?;
        Money::new(d, currency)
    }
    /// From integer minor units (cents for USD, yen for JPY, fils for BHD).
    #[must_use]
    pub fn from_minor(minor: i64, currency: Currency) -> Money {
        Money { amount: Decimal::new(minor, u32::from(currency.exponent)), currency }
    }
    /// To integer minor units.
    ///
    /// # Errors
    /// [`MoneyError::SubMinorAmount`] (cannot happen for a `Money` built through [`Money::new`]) or
    /// [`MoneyError::Overflow`].
    pub fn to_minor(&self) -> Result<i64, MoneyError> {
        // Integer arithmetic on the decimal's parts (amount = mantissa × 10^-scale): no decimal multiplication.
        // The mantissa has 96 bits and the scale is at most 28, so every power and product below fits in i128.
        let exponent = u32::from(self.currency.exponent);
        let (mantissa, scale) = (self.amount.mantissa(), self.amount.scale());
        let minor = if scale <= exponent {
            10i128.checked_pow(exponent - scale).and_then(|p| mantissa.checked_mul(p))
        } else {
            let p = 10i128.checked_pow(scale - exponent).ok_or(MoneyError::Overflow)?;
            if mantissa % p != 0 {
                return Err(MoneyError::SubMinorAmount {
                    amount: self.amount,
                    currency: self.currency,
                    exponent: self.currency.exponent,
                });
            }
            Some(mantissa / p)
        };
        minor.and_then(|m| i64::try_from(m).ok()).ok_or(MoneyError::Overflow)
    }
    /// The amount.
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
        let amount = self.amount.checked_add(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
    }
    /// `self - other`, same currency only.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] or [`MoneyError::Overflow`].
    pub fn checked_sub(&self, other: &Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let amount = self.amount.checked_sub(other.amount).ok_or(MoneyError::Overflow)?;
        Ok(Money { amount, currency: self.currency })
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

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scaled = self.amount.round_dp(u32::from(self.currency.exponent));
        let mut shown = scaled;
        shown.rescale(u32::from(self.currency.exponent));
        write!(f, "{shown} {}", self.currency)
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

    proptest! {
        /// Any decimal (sub-minor, huge, negative, every scale) gives what the decimal arithmetic gives.
        #[test]
        fn to_minor_matches_decimal_arithmetic(lo in any::<u32>(), mid in any::<u32>(), hi in any::<u32>(),
                                               negative in any::<bool>(), scale in 0u32..=28, idx in 0usize..4) {
            let cur = [Currency::USD, Currency::JPY, Currency::BHD, Currency::from_code("CLF").unwrap()][idx];
            // Small mantissas too, so whole and exact amounts are common, not only overflows.
            for (lo, mid, hi) in [(lo, mid, hi), (lo, 0, 0), (lo % 100_000, 0, 0)] {
                let m = Money { amount: Decimal::from_parts(lo, mid, hi, negative, scale), currency: cur };
                prop_assert_eq!(m.to_minor(), to_minor_by_decimal(&m), "{:?}", m);
            }
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
