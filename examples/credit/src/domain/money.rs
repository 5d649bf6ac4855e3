//! Money: an integer amount of minor units (cents) in an ISO 4217 currency.
//! Never floating point, and bounded so that no sum the domain computes can
//! overflow an `i64`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The largest amount the domain accepts, in minor units (10^15: ten
/// trillion euros in cents). Adding up to 9,000 such amounts still fits in an
/// `i64`, so sums of a few values never need overflow handling beyond this
/// check.
pub const AMOUNT_MAX: i64 = 1_000_000_000_000_000;

/// The ISO 4217 currencies accepted, with their number of minor units,
/// sorted by code. Funds, precious metals and withdrawn codes are left out.
const CURRENCIES: &[(&str, u8)] = &[
    ("AED", 2),
    ("AFN", 2),
    ("ALL", 2),
    ("AMD", 2),
    ("ANG", 2),
    ("AOA", 2),
    ("ARS", 2),
    ("AUD", 2),
    ("AWG", 2),
    ("AZN", 2),
    ("BAM", 2),
    ("BBD", 2),
    ("BDT", 2),
    ("BGN", 2),
    ("BHD", 3),
    ("BIF", 0),
    ("BMD", 2),
    ("BND", 2),
    ("BOB", 2),
    ("BRL", 2),
    ("BSD", 2),
    ("BTN", 2),
    ("BWP", 2),
    ("BYN", 2),
    ("BZD", 2),
    ("CAD", 2),
    ("CDF", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("COP", 2),
    ("CRC", 2),
    ("CUP", 2),
    ("CVE", 2),
    ("CZK", 2),
    ("DJF", 0),
    ("DKK", 2),
    ("DOP", 2),
    ("DZD", 2),
    ("EGP", 2),
    ("ERN", 2),
    ("ETB", 2),
    ("EUR", 2),
    ("FJD", 2),
    ("FKP", 2),
    ("GBP", 2),
    ("GEL", 2),
    ("GHS", 2),
    ("GIP", 2),
    ("GMD", 2),
    ("GNF", 0),
    ("GTQ", 2),
    ("GYD", 2),
    ("HKD", 2),
    ("HNL", 2),
    ("HTG", 2),
    ("HUF", 2),
    ("IDR", 2),
    ("ILS", 2),
    ("INR", 2),
    ("IQD", 3),
    ("IRR", 2),
    ("ISK", 0),
    ("JMD", 2),
    ("JOD", 3),
    ("JPY", 0),
    ("KES", 2),
    ("KGS", 2),
    ("KHR", 2),
    ("KMF", 0),
    ("KPW", 2),
    ("KRW", 0),
    ("KWD", 3),
    ("KYD", 2),
    ("KZT", 2),
    ("LAK", 2),
    ("LBP", 2),
    ("LKR", 2),
    ("LRD", 2),
    ("LSL", 2),
    ("LYD", 3),
    ("MAD", 2),
    ("MDL", 2),
    ("MGA", 2),
    ("MKD", 2),
    ("MMK", 2),
    ("MNT", 2),
    ("MOP", 2),
    ("MRU", 2),
    ("MUR", 2),
    ("MVR", 2),
    ("MWK", 2),
    ("MXN", 2),
    ("MYR", 2),
    ("MZN", 2),
    ("NAD", 2),
    ("NGN", 2),
    ("NIO", 2),
    ("NOK", 2),
    ("NPR", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PAB", 2),
    ("PEN", 2),
    ("PGK", 2),
    ("PHP", 2),
    ("PKR", 2),
    ("PLN", 2),
    ("PYG", 0),
    ("QAR", 2),
    ("RON", 2),
    ("RSD", 2),
    ("RUB", 2),
    ("RWF", 0),
    ("SAR", 2),
    ("SBD", 2),
    ("SCR", 2),
    ("SDG", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("SHP", 2),
    ("SLE", 2),
    ("SOS", 2),
    ("SRD", 2),
    ("SSP", 2),
    ("STN", 2),
    ("SVC", 2),
    ("SYP", 2),
    ("SZL", 2),
    ("THB", 2),
    ("TJS", 2),
    ("TMT", 2),
    ("TND", 3),
    ("TOP", 2),
    ("TRY", 2),
    ("TTD", 2),
    ("TWD", 2),
    ("TZS", 2),
    ("UAH", 2),
    ("UGX", 0),
    ("USD", 2),
    ("UYU", 2),
    ("UZS", 2),
    ("VES", 2),
    ("VND", 0),
    ("VUV", 0),
    ("WST", 2),
    ("XAF", 0),
    ("XCD", 2),
    ("XCG", 2),
    ("XOF", 0),
    ("XPF", 0),
    ("YER", 2),
    ("ZAR", 2),
    ("ZMW", 2),
    ("ZWG", 2),
];

/// Why an amount or currency was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    #[error("unknown currency {0:?}: use an ISO 4217 code in upper case, e.g. \"EUR\"")]
    UnknownCurrency(String),
    #[error("the amount must not be negative (got {0})")]
    Negative(i64),
    #[error("the amount must be greater than zero (got {0})")]
    NotPositive(i64),
    #[error("the amount {0} is over the maximum of {AMOUNT_MAX} minor units")]
    TooLarge(i128),
    #[error("currencies differ: {0} and {1}")]
    CurrencyMismatch(Currency, Currency),
}

/// An ISO 4217 currency from the accepted list.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    index: u16,
}

impl Currency {
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        CURRENCIES
            .binary_search_by(|(c, _)| (*c).cmp(code))
            .map(|index| Currency {
                index: index as u16,
            })
            .map_err(|_| MoneyError::UnknownCurrency(code.chars().take(16).collect()))
    }

    /// The three-letter code, e.g. `EUR`.
    pub fn code(self) -> &'static str {
        CURRENCIES[self.index as usize].0
    }

    /// Digits after the decimal point: 2 for EUR, 0 for JPY, 3 for KWD.
    pub fn minor_units(self) -> u8 {
        CURRENCIES[self.index as usize].1
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let code = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Currency::parse(&code).map_err(serde::de::Error::custom)
    }
}

/// An amount of minor units, `0..=AMOUNT_MAX`, in one currency. Serialized
/// as `{"amount": 1250, "currency": "EUR"}`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "MoneyFields")]
pub struct Money {
    amount: i64,
    currency: Currency,
}

/// The serialized shape, checked on the way in.
#[derive(Deserialize)]
struct MoneyFields {
    amount: i64,
    currency: Currency,
}

impl TryFrom<MoneyFields> for Money {
    type Error = MoneyError;
    fn try_from(m: MoneyFields) -> Result<Money, MoneyError> {
        Money::new(m.amount, m.currency)
    }
}

impl Money {
    /// Any amount from zero to [`AMOUNT_MAX`].
    pub fn new(amount: i64, currency: Currency) -> Result<Money, MoneyError> {
        if amount < 0 {
            return Err(MoneyError::Negative(amount));
        }
        if amount > AMOUNT_MAX {
            return Err(MoneyError::TooLarge(amount.into()));
        }
        Ok(Money { amount, currency })
    }

    /// An amount from one minor unit to [`AMOUNT_MAX`]: prices, reservations.
    pub fn positive(amount: i64, currency: Currency) -> Result<Money, MoneyError> {
        if amount <= 0 {
            return Err(MoneyError::NotPositive(amount));
        }
        Money::new(amount, currency)
    }

    pub fn zero(currency: Currency) -> Money {
        Money {
            amount: 0,
            currency,
        }
    }

    /// Minor units.
    pub fn amount(self) -> i64 {
        self.amount
    }

    pub fn currency(self) -> Currency {
        self.currency
    }

    pub fn is_zero(self) -> bool {
        self.amount == 0
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency != other.currency {
            return Err(MoneyError::CurrencyMismatch(self.currency, other.currency));
        }
        Ok(())
    }

    /// The sum, if the currencies agree and it stays within [`AMOUNT_MAX`].
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let sum = i128::from(self.amount) + i128::from(other.amount);
        let amount = i64::try_from(sum).map_err(|_| MoneyError::TooLarge(sum))?;
        Money::new(amount, self.currency).map_err(|_| MoneyError::TooLarge(sum))
    }

    /// The difference, if the currencies agree and it is not negative.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        Money::new(self.amount - other.amount, self.currency)
    }

    /// `self × quantity`, if it stays within [`AMOUNT_MAX`].
    pub fn checked_mul(self, quantity: u32) -> Result<Money, MoneyError> {
        let product = i128::from(self.amount) * i128::from(quantity);
        let amount = i64::try_from(product).map_err(|_| MoneyError::TooLarge(product))?;
        Money::new(amount, self.currency).map_err(|_| MoneyError::TooLarge(product))
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `12.50 EUR`, `1000 JPY`: the amount in major units with the currency's
/// number of decimals.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = u32::from(self.currency.minor_units());
        if digits == 0 {
            return write!(f, "{} {}", self.amount, self.currency);
        }
        let scale = 10i64.pow(digits);
        write!(
            f,
            "{}.{:0width$} {}",
            self.amount / scale,
            self.amount % scale,
            self.currency,
            width = digits as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur() -> Currency {
        Currency::parse("EUR").unwrap()
    }

    #[test]
    fn the_currency_table_is_sorted_and_unique() {
        assert!(CURRENCIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(
            CURRENCIES
                .iter()
                .all(|(c, _)| c.len() == 3 && c.bytes().all(|b| b.is_ascii_uppercase()))
        );
    }

    #[test]
    fn currencies_parse_only_from_the_list() {
        assert_eq!(eur().code(), "EUR");
        assert_eq!(Currency::parse("JPY").unwrap().minor_units(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().minor_units(), 3);
        for bad in ["eur", "EURO", "", "XXX", "E U", "€"] {
            assert!(
                matches!(Currency::parse(bad), Err(MoneyError::UnknownCurrency(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn amounts_are_bounded_on_both_sides() {
        assert!(Money::new(0, eur()).is_ok());
        assert!(Money::new(AMOUNT_MAX, eur()).is_ok());
        assert_eq!(Money::new(-1, eur()), Err(MoneyError::Negative(-1)));
        assert_eq!(
            Money::new(AMOUNT_MAX + 1, eur()),
            Err(MoneyError::TooLarge(i128::from(AMOUNT_MAX) + 1))
        );
        assert_eq!(Money::positive(0, eur()), Err(MoneyError::NotPositive(0)));
        assert!(Money::positive(1, eur()).is_ok());
    }

    #[test]
    fn arithmetic_checks_currency_and_range() {
        let a = Money::new(AMOUNT_MAX, eur()).unwrap();
        let one = Money::new(1, eur()).unwrap();
        assert!(matches!(a.checked_add(one), Err(MoneyError::TooLarge(_))));
        assert!(matches!(one.checked_sub(a), Err(MoneyError::Negative(_))));
        assert!(matches!(a.checked_mul(2), Err(MoneyError::TooLarge(_))));
        let usd = Money::new(1, Currency::parse("USD").unwrap()).unwrap();
        assert!(matches!(
            one.checked_add(usd),
            Err(MoneyError::CurrencyMismatch(_, _))
        ));
        assert_eq!(one.checked_mul(3).unwrap().amount(), 3);
    }

    #[test]
    fn money_has_the_contract_json_shape() {
        let m = Money::new(1250, eur()).unwrap();
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"amount":1250,"currency":"EUR"}"#
        );
        let back: Money = serde_json::from_str(r#"{"amount":1250,"currency":"EUR"}"#).unwrap();
        assert_eq!(back, m);
        assert!(serde_json::from_str::<Money>(r#"{"amount":-5,"currency":"EUR"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":5,"currency":"ABC"}"#).is_err());
        assert!(serde_json::from_str::<Money>(r#"{"amount":5.5,"currency":"EUR"}"#).is_err());
        assert_eq!(m.to_string(), "12.50 EUR");
        assert_eq!(
            Money::new(7, Currency::parse("JPY").unwrap())
                .unwrap()
                .to_string(),
            "7 JPY"
        );
    }
}
