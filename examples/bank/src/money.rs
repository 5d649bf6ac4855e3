//! Money: whole minor units (cents, pence, yen) of an ISO 4217 currency
//! the bank keeps accounts in. Never floating point, and bounded so that no
//! balance the bank computes comes near an `i64`'s limits.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount one command moves, in minor units (10^15: ten
/// trillion euros in cents).
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;

/// The largest balance an account may reach by deposits and incoming
/// transfers, in minor units. A hundred times [`AMOUNT_MAX`], and far
/// below `i64::MAX`, so that a balance plus any amount never overflows.
pub const BALANCE_MAX: i64 = 100 * AMOUNT_MAX;

/// A currency the bank keeps accounts in (ISO 4217 alphabetic codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "CHF")]
    Chf,
    #[serde(rename = "EUR")]
    Eur,
    #[serde(rename = "GBP")]
    Gbp,
    #[serde(rename = "JPY")]
    Jpy,
    #[serde(rename = "SEK")]
    Sek,
    #[serde(rename = "USD")]
    Usd,
}

impl Currency {
    pub const ALL: [Currency; 6] = [
        Currency::Chf,
        Currency::Eur,
        Currency::Gbp,
        Currency::Jpy,
        Currency::Sek,
        Currency::Usd,
    ];

    /// The currency of an ISO 4217 code, in upper case.
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_owned()))
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Chf => "CHF",
            Currency::Eur => "EUR",
            Currency::Gbp => "GBP",
            Currency::Jpy => "JPY",
            Currency::Sek => "SEK",
            Currency::Usd => "USD",
        }
    }

    /// Digits after the decimal point: how many minor units make a major
    /// one (10^digits).
    pub fn minor_digits(self) -> u32 {
        match self {
            Currency::Jpy => 0,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why an amount or a currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    #[error("unknown currency {0:?}: the bank keeps accounts in CHF, EUR, GBP, JPY, SEK and USD")]
    UnknownCurrency(String),
    #[error("an amount must not be negative (got {0} minor units)")]
    Negative(i64),
    #[error("the amount {0} is over the maximum of {AMOUNT_MAX} minor units")]
    TooLarge(i64),
}

/// A non-negative number of minor units, at most [`AMOUNT_MAX`]. Checked
/// when read from stored events too: the arithmetic on balances relies on
/// the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const ZERO: Amount = Amount(0);

    pub fn new(minor_units: i64) -> Result<Amount, MoneyError> {
        if minor_units < 0 {
            Err(MoneyError::Negative(minor_units))
        } else if minor_units > AMOUNT_MAX {
            Err(MoneyError::TooLarge(minor_units))
        } else {
            Ok(Amount(minor_units))
        }
    }

    pub fn minor_units(self) -> i64 {
        self.0
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Amount::new(i64::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// An amount in a currency: `{"amount": 1250, "currency": "EUR"}` is
/// 12.50 EUR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub amount: Amount,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor_units: i64, currency: Currency) -> Result<Money, MoneyError> {
        Ok(Money {
            amount: Amount::new(minor_units)?,
            currency,
        })
    }

    pub fn minor_units(self) -> i64 {
        self.amount.minor_units()
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_minor(f, self.minor_units(), self.currency)
    }
}

/// A signed balance as text: `-12.50 EUR`.
pub(crate) struct Balance(pub i64, pub Currency);

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_minor(f, self.0, self.1)
    }
}

fn write_minor(f: &mut fmt::Formatter<'_>, minor: i64, currency: Currency) -> fmt::Result {
    let digits = currency.minor_digits();
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if digits == 0 {
        return write!(f, "{sign}{magnitude} {currency}");
    }
    let unit = 10u64.pow(digits);
    write!(
        f,
        "{sign}{}.{:0width$} {currency}",
        magnitude / unit,
        magnitude % unit,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_bounded_on_both_sides_also_when_read() {
        assert_eq!(Amount::new(-1), Err(MoneyError::Negative(-1)));
        assert_eq!(Amount::new(AMOUNT_MAX).unwrap().minor_units(), AMOUNT_MAX);
        assert_eq!(
            Amount::new(AMOUNT_MAX + 1),
            Err(MoneyError::TooLarge(AMOUNT_MAX + 1))
        );
        assert!(serde_json::from_str::<Amount>("-5").is_err());
        assert!(serde_json::from_str::<Amount>(&(AMOUNT_MAX + 1).to_string()).is_err());
        assert_eq!(serde_json::from_str::<Amount>("5").unwrap(), Amount(5));
    }

    #[test]
    fn money_reads_and_writes_iso_codes_and_shows_minor_digits() {
        let money = Money::new(1250, Currency::Eur).unwrap();
        let json = serde_json::to_string(&money).unwrap();
        assert_eq!(json, r#"{"amount":1250,"currency":"EUR"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), money);
        assert_eq!(money.to_string(), "12.50 EUR");
        assert_eq!(Money::new(7, Currency::Jpy).unwrap().to_string(), "7 JPY");
        assert_eq!(Balance(-5, Currency::Usd).to_string(), "-0.05 USD");
        assert!(serde_json::from_str::<Money>(r#"{"amount":1,"currency":"XYZ"}"#).is_err());
        assert_eq!(Currency::parse("GBP"), Ok(Currency::Gbp));
        assert_eq!(
            Currency::parse("gbp"),
            Err(MoneyError::UnknownCurrency("gbp".into()))
        );
    }
}
