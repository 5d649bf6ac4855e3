//! The customer aggregate: registration and a credit line that orders
//! reserve against.
//!
//! Invariant: the credit reserved by open reservations never exceeds the
//! credit limit, so the limit cannot be lowered below what is reserved.
//!
//! The state deliberately holds no personal data: no rule needs the name
//! or the e-mail address, so snapshots never contain them and erasing a
//! customer's personal data (crypto-shredding the event fields) has nothing
//! else to reach.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::money::{Currency, Money};
use command_api::aggregate::{
    Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent, decode_data_at,
    upcast_value,
};

/// The schema version the events that carry money are written at.
///
/// Version 1 is the single-currency model the credit line started with:
/// `credit_limit` (and a reservation's `amount`) was a bare integer of minor
/// units, implicitly euro cents. Version 2 is [`Money`],
/// `{"amount": <minor units>, "currency": "<ISO 4217 code>"}`. Version 1
/// events are never rewritten; [`upcasters`] brings them to version 2 on
/// every read.
pub const MONEY_SCHEMA_VERSION: u32 = 2;

/// The currency of every amount written under the single-currency model.
pub const SINGLE_CURRENCY: &str = "EUR";

/// The customer event types that carried a bare integer before
/// [`MONEY_SCHEMA_VERSION`].
const MONEY_EVENT_TYPES: &[&str] = &[
    "CustomerRegistered",
    "CreditLimitChanged",
    "CreditReserved",
    "CreditReleased",
];

/// The schema version customer events of `event_type` are written and
/// decoded at.
fn schema_of(event_type: &str) -> u32 {
    if MONEY_EVENT_TYPES.contains(&event_type) {
        MONEY_SCHEMA_VERSION
    } else {
        1
    }
}

/// Decodes a customer event's data at its type's schema version.
fn decode_data<T: serde::de::DeserializeOwned>(
    event_type: &str,
    schema_version: u32,
    data: &[u8],
) -> Result<T, DecodeError> {
    decode_data_at(schema_of(event_type), event_type, schema_version, data)
}

/// Every customer event type.
pub const EVENT_TYPES: &[&str] = &[
    "CustomerRegistered",
    "CreditLimitChanged",
    "CreditReserved",
    "CreditReleased",
    "CustomerForgotten",
];

/// Adds the customer events to `upcasters`: each type at its current
/// version (so that a version with no path to it is an error on read, not
/// something for decoding to stumble on), and for each type in
/// `MONEY_EVENT_TYPES` the step from version 1, which turns the bare integer
/// into money in [`SINGLE_CURRENCY`].
///
/// The steps are typed (`Upcasters::step_typed`): version 1 decodes as a
/// type of its own and converts into the current event, so the command
/// handler's loads of old events decode each once and write no JSON.
pub fn upcasters(upcasters: event_store::Upcasters) -> event_store::Upcasters {
    let declared = EVENT_TYPES.iter().fold(upcasters, |upcasters, event_type| {
        upcasters.current(*event_type, schema_of(event_type))
    });
    // Looked up once, not for every old event a load reads.
    let eur = Currency::parse(SINGLE_CURRENCY).map_err(|e| e.to_string());
    let (e1, e2, e3, e4) = (eur.clone(), eur.clone(), eur.clone(), eur);
    declared
        .step_typed(
            "CustomerRegistered",
            1,
            move |Object(v1): Object<RegisteredV1>| {
                Ok(CustomerRegistered {
                    customer_id: v1.customer_id,
                    personal: PersonalData {
                        name: v1.name,
                        email: v1.email,
                    },
                    credit_limit: v1.credit_limit.into_money(e1.clone()?)?,
                })
            },
        )
        .step_typed(
            "CreditLimitChanged",
            1,
            move |Object(v1): Object<LimitChangedV1>| {
                Ok(CreditLimitChanged {
                    customer_id: v1.customer_id,
                    credit_limit: v1.credit_limit.into_money(e2.clone()?)?,
                })
            },
        )
        .step_typed(
            "CreditReserved",
            1,
            move |Object(v1): Object<OrderAmountV1>| {
                v1.into_current(e3.clone()?, |customer_id, order_id, amount| {
                    CreditReserved {
                        customer_id,
                        order_id,
                        amount,
                    }
                })
            },
        )
        .step_typed(
            "CreditReleased",
            1,
            move |Object(v1): Object<OrderAmountV1>| {
                v1.into_current(e4.clone()?, |customer_id, order_id, amount| {
                    CreditReleased {
                        customer_id,
                        order_id,
                        amount,
                    }
                })
            },
        )
}

/// `CustomerRegistered` at version 1.
#[derive(Deserialize)]
struct RegisteredV1 {
    customer_id: Uuid,
    name: CustomerName,
    email: Email,
    credit_limit: SingleCurrency,
}

/// `CreditLimitChanged` at version 1.
#[derive(Deserialize)]
struct LimitChangedV1 {
    customer_id: Uuid,
    credit_limit: SingleCurrency,
}

/// `CreditReserved` and `CreditReleased` at version 1.
#[derive(Deserialize)]
struct OrderAmountV1 {
    customer_id: Uuid,
    order_id: Uuid,
    amount: SingleCurrency,
}

impl OrderAmountV1 {
    /// The version 2 event `build` makes of the ids and the amount (cents
    /// in `eur`).
    fn into_current<E>(
        self,
        eur: Currency,
        build: impl FnOnce(Uuid, Uuid, Money) -> E,
    ) -> Result<E, String> {
        Ok(build(
            self.customer_id,
            self.order_id,
            self.amount.into_money(eur)?,
        ))
    }
}

/// An event's data that must be a JSON object: serde's structs also read
/// arrays, which no version of these events ever was.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = T;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
            // Anything else is answered as the other read paths answer it.
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
                Err(not_an_object())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<T, E> {
                Err(not_an_object())
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<T, E> {
                Err(not_an_object())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<T, E> {
                Err(not_an_object())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<T, E> {
                Err(not_an_object())
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<T, E> {
                Err(not_an_object())
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
                Err(not_an_object())
            }
        }
        fn not_an_object<E: serde::de::Error>() -> E {
            E::custom("the data is not a JSON object")
        }
        d.deserialize_any(Visit(std::marker::PhantomData))
            .map(Object)
    }
}

/// A version 1 amount, in one of two shapes: the single-currency model's
/// integer of euro cents, or money itself, which the releases between the
/// arrival of currencies and this schema bump wrote still labelled
/// version 1. Anything else (a fraction, a string, money without a
/// currency) is refused rather than guessed at, and so is what money at
/// version 2 may not be (an amount out of range, an unknown currency):
/// the step returns the current event, which holds only valid money.
enum SingleCurrency {
    Cents(i64),
    Money(Money),
}

impl SingleCurrency {
    /// The amount as money, cents being in `eur`.
    fn into_money(self, eur: Currency) -> Result<Money, String> {
        match self {
            SingleCurrency::Cents(amount) => Money::new(amount, eur).map_err(|e| e.to_string()),
            SingleCurrency::Money(money) => Ok(money),
        }
    }
}

impl<'de> Deserialize<'de> for SingleCurrency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = SingleCurrency;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer of minor units, or money")
            }
            fn visit_i64<E: Error>(self, v: i64) -> Result<SingleCurrency, E> {
                Ok(SingleCurrency::Cents(v))
            }
            fn visit_u64<E: Error>(self, v: u64) -> Result<SingleCurrency, E> {
                i64::try_from(v)
                    .map(SingleCurrency::Cents)
                    .map_err(|_| E::custom(format!("{v} is not an integer of minor units")))
            }
            fn visit_f64<E: Error>(self, v: f64) -> Result<SingleCurrency, E> {
                Err(E::custom(format!("{v} is not an integer of minor units")))
            }
            fn visit_str<E: Error>(self, v: &str) -> Result<SingleCurrency, E> {
                Err(E::custom(format!("{v:?} is not an integer of minor units")))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<SingleCurrency, A::Error> {
                Money::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(SingleCurrency::Money)
                    .map_err(|e| {
                        A::Error::custom(format!("{e}: not an integer of minor units, nor money"))
                    })
            }
        }
        d.deserialize_any(Visit)
    }
}

/// A customer's display name: trimmed, 1 to [`CustomerName::CHARS_MAX`]
/// characters, no control characters, and at least one character that
/// shows (see [`is_visible`]).
///
/// [`CustomerName::parse`] checks input; reading a stored event does not:
/// a stored event is a fact, rules may have changed since, and a forgotten
/// customer's name reads as [`event_store::ERASED`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredText", into = "String")]
pub struct CustomerName(String);

impl CustomerName {
    pub const CHARS_MAX: usize = 200;

    pub fn parse(raw: &str) -> Result<CustomerName, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("the name must not be empty".into());
        }
        let chars = name.chars().count();
        if chars > Self::CHARS_MAX {
            return Err(format!(
                "the name is {chars} characters long; the maximum is {}",
                Self::CHARS_MAX
            ));
        }
        if name.chars().any(char::is_control) {
            return Err("the name must not contain control characters".into());
        }
        if !name.chars().any(is_visible) {
            return Err(
                "the name has no visible character (only spaces, zero-width, \
                 direction or other invisible characters)"
                    .into(),
            );
        }
        Ok(CustomerName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether a character shows on its own: a letter, digit, punctuation
/// mark or symbol. Spaces, format characters (zero-width spaces and
/// joiners, direction marks, embeddings, overrides and isolates, the byte
/// order mark), combining marks without a base, private-use and unassigned
/// code points do not, nor do the few letters and symbols that are blank
/// by definition (the Hangul fillers, the blank Braille pattern).
pub fn is_visible(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    const BLANK: [char; 5] = ['\u{115F}', '\u{1160}', '\u{3164}', '\u{FFA0}', '\u{2800}'];
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Letter
            | GeneralCategoryGroup::Number
            | GeneralCategoryGroup::Punctuation
            | GeneralCategoryGroup::Symbol
    ) && !BLANK.contains(&c)
}

impl From<StoredText> for CustomerName {
    fn from(s: StoredText) -> Self {
        CustomerName(s.0)
    }
}

impl From<CustomerName> for String {
    fn from(n: CustomerName) -> String {
        n.0
    }
}

impl std::fmt::Debug for CustomerName {
    // Personal data stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CustomerName(..)")
    }
}

/// An e-mail address in the common `local@domain.tld` form (RFC 5321
/// lengths; dot-atom local part; no quoted local parts, comments or IP
/// literals, which real sign-up forms do not see). The domain is stored in
/// lower case. Like [`CustomerName`], checked when parsed, not when read
/// back from a stored event.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "StoredText", into = "String")]
pub struct Email(String);

impl Email {
    pub const BYTES_MAX: usize = 254;
    const LOCAL_BYTES_MAX: usize = 64;
    const LABEL_BYTES_MAX: usize = 63;

    pub fn parse(raw: &str) -> Result<Email, String> {
        let email = raw.trim();
        if email.is_empty() {
            return Err("the e-mail address must not be empty".into());
        }
        if email.len() > Self::BYTES_MAX {
            return Err(format!(
                "the e-mail address is {} bytes long; the maximum is {}",
                email.len(),
                Self::BYTES_MAX
            ));
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("the e-mail address must contain an @".into());
        };
        let local_ok = !local.is_empty()
            && local.len() <= Self::LOCAL_BYTES_MAX
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        if !local_ok {
            return Err(format!(
                "{local:?} is not a valid mailbox name (the part before the @)"
            ));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= Self::LABEL_BYTES_MAX
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
            && labels
                .last()
                .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()));
        if !domain_ok {
            return Err(format!(
                "{domain:?} is not a valid domain (the part after the @ needs a dot, \
                 e.g. example.com)"
            ));
        }
        Ok(Email(format!("{local}@{}", domain.to_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<StoredText> for Email {
    fn from(s: StoredText) -> Self {
        Email(s.0)
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl std::fmt::Debug for Email {
    // Personal data stays out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Email(..)")
    }
}

/// Text as a stored event holds it. Private, so that the only public way to
/// a [`CustomerName`] or [`Email`] is through their parsers.
#[derive(Deserialize)]
#[serde(transparent)]
struct StoredText(String);

/// Everything personal about a customer, kept together so that it can be
/// encrypted per customer (and erased by destroying the key) as one unit.
/// Serialized flat into the event (`"name"`, `"email"`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct PersonalData {
    pub name: CustomerName,
    pub email: Email,
}

impl PersonalData {
    /// The event fields holding personal data, by event type.
    pub const FIELDS: &'static [(&'static str, &'static [&'static str])] =
        &[("CustomerRegistered", &["name", "email"])];

    /// True once the customer was forgotten and the fields read as erased.
    pub fn is_erased(&self) -> bool {
        self.name.0 == event_store::ERASED || self.email.0 == event_store::ERASED
    }
}

/// What the event store's crypto-shredding layer must encrypt: each
/// customer stream is one data subject, and [`PersonalData::FIELDS`] are
/// its personal fields. Wrap the store with
/// `event_store::Shredding::new(store, keys, customer::shredding_policy())`.
pub fn shredding_policy() -> event_store::PersonalData {
    PersonalData::FIELDS.iter().fold(
        event_store::PersonalData::new().subject_streams(format!("{}-", Customer::TYPE)),
        |policy, (event_type, fields)| policy.fields(*event_type, fields.iter().copied()),
    )
}

/// What can be asked of a customer.
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerCommand {
    Register {
        customer_id: Uuid,
        personal: PersonalData,
        credit_limit: Money,
    },
    ChangeCreditLimit {
        customer_id: Uuid,
        credit_limit: Money,
    },
    /// Holds `amount` of the credit line for an order.
    ReserveCredit {
        customer_id: Uuid,
        order_id: Uuid,
        amount: Money,
    },
    /// Frees what was reserved for an order.
    ReleaseCredit { customer_id: Uuid, order_id: Uuid },
    /// Erases the customer's personal data (the right to be forgotten):
    /// records that it happened, for the views to erase their copies; the
    /// key that encrypts the data is destroyed by the caller. The credit
    /// line stays usable.
    Forget { customer_id: Uuid },
}

impl AggregateCommand for CustomerCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            CustomerCommand::Register { customer_id, .. }
            | CustomerCommand::ChangeCreditLimit { customer_id, .. }
            | CustomerCommand::ReserveCredit { customer_id, .. }
            | CustomerCommand::ReleaseCredit { customer_id, .. }
            | CustomerCommand::Forget { customer_id } => *customer_id,
        }
    }

    fn creates_aggregate(&self) -> bool {
        matches!(self, CustomerCommand::Register { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            CustomerCommand::Register { .. } => "RegisterCustomer",
            CustomerCommand::ChangeCreditLimit { .. } => "ChangeCreditLimit",
            CustomerCommand::ReserveCredit { .. } => "ReserveCredit",
            CustomerCommand::ReleaseCredit { .. } => "ReleaseCredit",
            CustomerCommand::Forget { .. } => "ForgetCustomer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: Uuid,
    #[serde(flatten)]
    pub personal: PersonalData,
    pub credit_limit: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditLimitChanged {
    pub customer_id: Uuid,
    pub credit_limit: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditReserved {
    pub customer_id: Uuid,
    pub order_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditReleased {
    pub customer_id: Uuid,
    pub order_id: Uuid,
    pub amount: Money,
}

/// The customer's personal data was erased. Carries none itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomerForgotten {
    pub customer_id: Uuid,
}

/// The customer's events, with the type names and data of the reference
/// domain event contract (examples/credit/README.md).
#[derive(Debug, Clone, PartialEq)]
pub enum CustomerEvent {
    Registered(CustomerRegistered),
    CreditLimitChanged(CreditLimitChanged),
    CreditReserved(CreditReserved),
    CreditReleased(CreditReleased),
    Forgotten(CustomerForgotten),
}

impl DomainEvent for CustomerEvent {
    fn event_type(&self) -> &'static str {
        match self {
            CustomerEvent::Registered(_) => "CustomerRegistered",
            CustomerEvent::CreditLimitChanged(_) => "CreditLimitChanged",
            CustomerEvent::CreditReserved(_) => "CreditReserved",
            CustomerEvent::CreditReleased(_) => "CreditReleased",
            CustomerEvent::Forgotten(_) => "CustomerForgotten",
        }
    }

    fn schema_version(&self) -> u32 {
        schema_of(self.event_type())
    }

    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            CustomerEvent::Registered(e) => serde_json::to_vec(e),
            CustomerEvent::CreditLimitChanged(e) => serde_json::to_vec(e),
            CustomerEvent::CreditReserved(e) => serde_json::to_vec(e),
            CustomerEvent::CreditReleased(e) => serde_json::to_vec(e),
            CustomerEvent::Forgotten(e) => serde_json::to_vec(e),
        }
    }

    fn decode(event_type: &str, schema: u32, data: &[u8]) -> Result<Self, DecodeError> {
        Ok(match event_type {
            "CustomerRegistered" => {
                CustomerEvent::Registered(decode_data(event_type, schema, data)?)
            }
            "CreditLimitChanged" => {
                CustomerEvent::CreditLimitChanged(decode_data(event_type, schema, data)?)
            }
            "CreditReserved" => {
                CustomerEvent::CreditReserved(decode_data(event_type, schema, data)?)
            }
            "CreditReleased" => {
                CustomerEvent::CreditReleased(decode_data(event_type, schema, data)?)
            }
            "CustomerForgotten" => CustomerEvent::Forgotten(decode_data(event_type, schema, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    fn from_upcast(event_type: &str, value: event_store::UpcastValue) -> Result<Self, DecodeError> {
        Ok(match event_type {
            "CustomerRegistered" => CustomerEvent::Registered(upcast_value(event_type, value)?),
            "CreditLimitChanged" => {
                CustomerEvent::CreditLimitChanged(upcast_value(event_type, value)?)
            }
            "CreditReserved" => CustomerEvent::CreditReserved(upcast_value(event_type, value)?),
            "CreditReleased" => CustomerEvent::CreditReleased(upcast_value(event_type, value)?),
            "CustomerForgotten" => CustomerEvent::Forgotten(upcast_value(event_type, value)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// The rules a customer command can break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CustomerError {
    #[error("customer {0} is already registered")]
    AlreadyRegistered(Uuid),
    #[error("customer {0} is not registered")]
    NotRegistered(Uuid),
    #[error("the customer's credit line is in {expected}; {given} was given")]
    CurrencyMismatch { expected: Currency, given: Currency },
    #[error("a reservation must be greater than zero")]
    AmountNotPositive,
    #[error(
        "reserving {requested} would exceed the credit limit of {limit} ({reserved} already reserved)"
    )]
    CreditLimitExceeded {
        limit: Money,
        reserved: Money,
        requested: Money,
    },
    #[error("the credit limit cannot be lowered to {requested}: {reserved} is reserved")]
    LimitBelowReserved { requested: Money, reserved: Money },
    #[error("credit is already reserved for order {0}")]
    AlreadyReserved(Uuid),
    #[error("no credit is reserved for order {0}")]
    NoReservation(Uuid),
}

fn money_json(m: Money) -> serde_json::Value {
    serde_json::json!({"amount": m.amount(), "currency": m.currency().code()})
}

impl DomainError for CustomerError {
    fn rule(&self) -> &'static str {
        match self {
            CustomerError::AlreadyRegistered(_) => "customer-already-registered",
            CustomerError::NotRegistered(_) => "customer-not-registered",
            CustomerError::CurrencyMismatch { .. } => "currency-mismatch",
            CustomerError::AmountNotPositive => "amount-not-positive",
            CustomerError::CreditLimitExceeded { .. } => "credit-limit-exceeded",
            CustomerError::LimitBelowReserved { .. } => "credit-limit-below-reserved",
            CustomerError::AlreadyReserved(_) => "credit-already-reserved",
            CustomerError::NoReservation(_) => "no-credit-reserved",
        }
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        match self {
            CustomerError::CreditLimitExceeded {
                limit,
                reserved,
                requested,
            } => {
                m.insert("credit_limit".into(), money_json(*limit));
                m.insert("reserved".into(), money_json(*reserved));
                m.insert("requested".into(), money_json(*requested));
            }
            CustomerError::LimitBelowReserved {
                requested,
                reserved,
            } => {
                m.insert("requested".into(), money_json(*requested));
                m.insert("reserved".into(), money_json(*reserved));
            }
            CustomerError::CurrencyMismatch { expected, given } => {
                m.insert("expected_currency".into(), expected.code().into());
                m.insert("given_currency".into(), given.code().into());
            }
            CustomerError::AlreadyReserved(order) | CustomerError::NoReservation(order) => {
                m.insert("order_id".into(), order.to_string().into());
            }
            CustomerError::AlreadyRegistered(_)
            | CustomerError::NotRegistered(_)
            | CustomerError::AmountNotPositive => {}
        }
        m
    }
}

/// A customer as the command side needs it: the credit line and what is
/// reserved on it, per order.
///
/// Unknown fields are refused so that a snapshot of another shape fails to
/// decode (and is ignored) instead of reading as an unregistered customer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Customer {
    registered: Option<CreditLine>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreditLine {
    customer_id: Uuid,
    limit: Money,
    /// Open reservations by order. Kept sorted so that snapshots of equal
    /// states are equal bytes.
    reservations: BTreeMap<Uuid, Money>,
    /// The sum of `reservations`, kept so that a reservation is O(log n).
    reserved: Money,
    /// The customer's personal data was erased. Absent from snapshots
    /// while false, so those of customers never forgotten keep their shape.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    forgotten: bool,
}

impl Customer {
    pub fn is_registered(&self) -> bool {
        self.registered.is_some()
    }

    pub fn credit_limit(&self) -> Option<Money> {
        self.registered.as_ref().map(|c| c.limit)
    }

    /// Credit held by open reservations.
    pub fn reserved(&self) -> Option<Money> {
        self.registered.as_ref().map(|c| c.reserved)
    }

    /// True once the customer's personal data was erased.
    pub fn is_forgotten(&self) -> bool {
        self.registered.as_ref().is_some_and(|c| c.forgotten)
    }

    pub fn reservation(&self, order_id: Uuid) -> Option<Money> {
        self.registered
            .as_ref()
            .and_then(|c| c.reservations.get(&order_id).copied())
    }

    fn line(&self, customer_id: Uuid) -> Result<&CreditLine, CustomerError> {
        self.registered
            .as_ref()
            .ok_or(CustomerError::NotRegistered(customer_id))
    }
}

fn same_currency(line: &CreditLine, given: Money) -> Result<(), CustomerError> {
    if given.currency() != line.limit.currency() {
        return Err(CustomerError::CurrencyMismatch {
            expected: line.limit.currency(),
            given: given.currency(),
        });
    }
    Ok(())
}

impl Aggregate for Customer {
    const TYPE: &'static str = "customer";
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = CustomerCommand;
    type Event = CustomerEvent;
    type Error = CustomerError;

    fn handle(&self, command: &CustomerCommand) -> Result<Vec<CustomerEvent>, CustomerError> {
        match command {
            CustomerCommand::Register {
                customer_id,
                personal,
                credit_limit,
            } => {
                if self.registered.is_some() {
                    return Err(CustomerError::AlreadyRegistered(*customer_id));
                }
                Ok(vec![CustomerEvent::Registered(CustomerRegistered {
                    customer_id: *customer_id,
                    personal: personal.clone(),
                    credit_limit: *credit_limit,
                })])
            }
            CustomerCommand::ChangeCreditLimit {
                customer_id,
                credit_limit,
            } => {
                let line = self.line(*customer_id)?;
                same_currency(line, *credit_limit)?;
                if credit_limit.amount() < line.reserved.amount() {
                    return Err(CustomerError::LimitBelowReserved {
                        requested: *credit_limit,
                        reserved: line.reserved,
                    });
                }
                if *credit_limit == line.limit {
                    // Already so: nothing to record.
                    return Ok(Vec::new());
                }
                Ok(vec![CustomerEvent::CreditLimitChanged(
                    CreditLimitChanged {
                        customer_id: *customer_id,
                        credit_limit: *credit_limit,
                    },
                )])
            }
            CustomerCommand::ReserveCredit {
                customer_id,
                order_id,
                amount,
            } => {
                let line = self.line(*customer_id)?;
                same_currency(line, *amount)?;
                if amount.amount() <= 0 {
                    return Err(CustomerError::AmountNotPositive);
                }
                if line.reservations.contains_key(order_id) {
                    return Err(CustomerError::AlreadyReserved(*order_id));
                }
                // Both are at most AMOUNT_MAX, so the sum fits in an i64.
                if line.reserved.amount() + amount.amount() > line.limit.amount() {
                    return Err(CustomerError::CreditLimitExceeded {
                        limit: line.limit,
                        reserved: line.reserved,
                        requested: *amount,
                    });
                }
                Ok(vec![CustomerEvent::CreditReserved(CreditReserved {
                    customer_id: *customer_id,
                    order_id: *order_id,
                    amount: *amount,
                })])
            }
            CustomerCommand::ReleaseCredit {
                customer_id,
                order_id,
            } => {
                let line = self.line(*customer_id)?;
                let amount = line
                    .reservations
                    .get(order_id)
                    .copied()
                    .ok_or(CustomerError::NoReservation(*order_id))?;
                Ok(vec![CustomerEvent::CreditReleased(CreditReleased {
                    customer_id: *customer_id,
                    order_id: *order_id,
                    amount,
                })])
            }
            CustomerCommand::Forget { customer_id } => {
                let line = self.line(*customer_id)?;
                if line.forgotten {
                    // Already so; asking again must still succeed, so that
                    // a retry can finish destroying the key.
                    return Ok(Vec::new());
                }
                Ok(vec![CustomerEvent::Forgotten(CustomerForgotten {
                    customer_id: *customer_id,
                })])
            }
        }
    }

    fn apply(&mut self, event: &CustomerEvent) {
        match event {
            CustomerEvent::Registered(e) => {
                self.registered = Some(CreditLine {
                    customer_id: e.customer_id,
                    limit: e.credit_limit,
                    reservations: BTreeMap::new(),
                    reserved: Money::zero(e.credit_limit.currency()),
                    forgotten: false,
                });
            }
            CustomerEvent::CreditLimitChanged(e) => {
                if let Some(line) = &mut self.registered {
                    line.limit = e.credit_limit;
                }
            }
            CustomerEvent::CreditReserved(e) => {
                if let Some(line) = &mut self.registered {
                    line.reservations.insert(e.order_id, e.amount);
                    line.reserved = line.reserved.checked_add(e.amount).unwrap_or(line.reserved);
                }
            }
            CustomerEvent::CreditReleased(e) => {
                if let Some(line) = &mut self.registered
                    && let Some(held) = line.reservations.remove(&e.order_id)
                {
                    line.reserved = line.reserved.checked_sub(held).unwrap_or(line.reserved);
                }
            }
            CustomerEvent::Forgotten(_) => {
                if let Some(line) = &mut self.registered {
                    line.forgotten = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Given the customer's past events, when a command arrives, then these
    //! events (or this refusal).

    use super::*;
    use command_api::aggregate::replay;

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn usd(amount: i64) -> Money {
        Money::new(amount, Currency::parse("USD").unwrap()).unwrap()
    }

    const C: Uuid = Uuid::from_u128(0xc);
    const O1: Uuid = Uuid::from_u128(0x01);
    const O2: Uuid = Uuid::from_u128(0x02);

    fn personal() -> PersonalData {
        PersonalData {
            name: CustomerName::parse("Ada Lovelace").unwrap(),
            email: Email::parse("ada@example.com").unwrap(),
        }
    }

    fn registered(limit: i64) -> CustomerEvent {
        CustomerEvent::Registered(CustomerRegistered {
            customer_id: C,
            personal: personal(),
            credit_limit: eur(limit),
        })
    }

    fn reserved(order_id: Uuid, amount: i64) -> CustomerEvent {
        CustomerEvent::CreditReserved(CreditReserved {
            customer_id: C,
            order_id,
            amount: eur(amount),
        })
    }

    fn released(order_id: Uuid, amount: i64) -> CustomerEvent {
        CustomerEvent::CreditReleased(CreditReleased {
            customer_id: C,
            order_id,
            amount: eur(amount),
        })
    }

    fn limit_changed(amount: i64) -> CustomerEvent {
        CustomerEvent::CreditLimitChanged(CreditLimitChanged {
            customer_id: C,
            credit_limit: eur(amount),
        })
    }

    fn given(events: &[CustomerEvent]) -> Customer {
        replay::<Customer>(events)
    }

    fn reserve(order_id: Uuid, amount: Money) -> CustomerCommand {
        CustomerCommand::ReserveCredit {
            customer_id: C,
            order_id,
            amount,
        }
    }

    #[test]
    fn registering_a_new_customer_records_it() {
        let command = CustomerCommand::Register {
            customer_id: C,
            personal: personal(),
            credit_limit: eur(0),
        };
        assert_eq!(given(&[]).handle(&command), Ok(vec![registered(0)]));
    }

    #[test]
    fn forgetting_is_recorded_once_and_the_credit_line_stays() {
        let forget = CustomerCommand::Forget { customer_id: C };
        let forgotten = CustomerEvent::Forgotten(CustomerForgotten { customer_id: C });
        assert_eq!(
            given(&[]).handle(&forget),
            Err(CustomerError::NotRegistered(C))
        );
        let state = given(&[registered(100), reserved(O1, 60)]);
        assert!(!state.is_forgotten());
        assert_eq!(state.handle(&forget), Ok(vec![forgotten.clone()]));
        let state = given(&[registered(100), reserved(O1, 60), forgotten.clone()]);
        assert!(state.is_forgotten());
        // Asking again changes nothing and is not an error.
        assert_eq!(state.handle(&forget), Ok(Vec::new()));
        assert_eq!(
            state.handle(&reserve(O2, eur(40))),
            Ok(vec![reserved(O2, 40)])
        );
        // The snapshot of a customer never forgotten keeps its old shape.
        let plain = serde_json::to_string(&given(&[registered(100)])).unwrap();
        assert!(!plain.contains("forgotten"), "{plain}");
        let restored: Customer =
            serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        assert!(restored.is_forgotten());
        assert_eq!(
            CustomerEvent::decode("CustomerForgotten", 1, &forgotten.encode().unwrap()).unwrap(),
            forgotten
        );
    }

    #[test]
    fn a_customer_registers_once() {
        let command = CustomerCommand::Register {
            customer_id: C,
            personal: personal(),
            credit_limit: eur(10),
        };
        assert_eq!(
            given(&[registered(10)]).handle(&command),
            Err(CustomerError::AlreadyRegistered(C))
        );
    }

    #[test]
    fn commands_on_an_unregistered_customer_are_refused() {
        for command in [
            reserve(O1, eur(1)),
            CustomerCommand::ReleaseCredit {
                customer_id: C,
                order_id: O1,
            },
            CustomerCommand::ChangeCreditLimit {
                customer_id: C,
                credit_limit: eur(5),
            },
        ] {
            assert_eq!(
                given(&[]).handle(&command),
                Err(CustomerError::NotRegistered(C))
            );
        }
    }

    #[test]
    fn credit_can_be_reserved_up_to_the_limit_exactly() {
        let state = given(&[registered(100), reserved(O1, 60)]);
        assert_eq!(
            state.handle(&reserve(O2, eur(40))),
            Ok(vec![reserved(O2, 40)])
        );
    }

    #[test]
    fn a_reservation_over_the_limit_is_refused_with_the_figures() {
        let state = given(&[registered(100), reserved(O1, 60)]);
        let err = state.handle(&reserve(O2, eur(41))).unwrap_err();
        assert_eq!(
            err,
            CustomerError::CreditLimitExceeded {
                limit: eur(100),
                reserved: eur(60),
                requested: eur(41)
            }
        );
        assert_eq!(err.rule(), "credit-limit-exceeded");
        assert_eq!(err.details()["reserved"]["amount"], 60);
    }

    #[test]
    fn released_credit_can_be_reserved_again() {
        let state = given(&[registered(100), reserved(O1, 100), released(O1, 100)]);
        assert_eq!(state.reserved(), Some(eur(0)));
        assert_eq!(
            state.handle(&reserve(O2, eur(100))),
            Ok(vec![reserved(O2, 100)])
        );
    }

    #[test]
    fn an_order_reserves_once() {
        let state = given(&[registered(100), reserved(O1, 10)]);
        assert_eq!(
            state.handle(&reserve(O1, eur(10))),
            Err(CustomerError::AlreadyReserved(O1))
        );
    }

    #[test]
    fn reservations_must_be_positive_and_in_the_customers_currency() {
        let state = given(&[registered(100)]);
        assert_eq!(
            state.handle(&reserve(O1, eur(0))),
            Err(CustomerError::AmountNotPositive)
        );
        assert!(matches!(
            state.handle(&reserve(O1, usd(5))),
            Err(CustomerError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn releasing_returns_exactly_what_was_reserved() {
        let state = given(&[registered(100), reserved(O1, 30)]);
        let release = CustomerCommand::ReleaseCredit {
            customer_id: C,
            order_id: O1,
        };
        assert_eq!(state.handle(&release), Ok(vec![released(O1, 30)]));
        let after = given(&[registered(100), reserved(O1, 30), released(O1, 30)]);
        assert_eq!(
            after.handle(&release),
            Err(CustomerError::NoReservation(O1))
        );
    }

    #[test]
    fn the_limit_cannot_go_below_what_is_reserved() {
        let state = given(&[registered(100), reserved(O1, 70)]);
        let lower = |amount| CustomerCommand::ChangeCreditLimit {
            customer_id: C,
            credit_limit: eur(amount),
        };
        assert_eq!(
            state.handle(&lower(69)),
            Err(CustomerError::LimitBelowReserved {
                requested: eur(69),
                reserved: eur(70)
            })
        );
        assert_eq!(state.handle(&lower(70)), Ok(vec![limit_changed(70)]));
        assert_eq!(state.handle(&lower(500)), Ok(vec![limit_changed(500)]));
    }

    #[test]
    fn setting_the_current_limit_again_records_nothing() {
        let state = given(&[registered(100)]);
        let same = CustomerCommand::ChangeCreditLimit {
            customer_id: C,
            credit_limit: eur(100),
        };
        assert_eq!(state.handle(&same), Ok(vec![]));
    }

    #[test]
    fn the_limit_keeps_its_currency() {
        let state = given(&[registered(100)]);
        let change = CustomerCommand::ChangeCreditLimit {
            customer_id: C,
            credit_limit: usd(100),
        };
        assert!(matches!(
            state.handle(&change),
            Err(CustomerError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn events_have_the_contract_json_shape_and_round_trip() {
        let event = registered(2500);
        assert_eq!(event.event_type(), "CustomerRegistered");
        let json: serde_json::Value = serde_json::from_slice(&event.encode().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "customer_id": C.to_string(),
                "name": "Ada Lovelace",
                "email": "ada@example.com",
                "credit_limit": {"amount": 2500, "currency": "EUR"}
            })
        );
        for event in [
            registered(1),
            limit_changed(2),
            reserved(O1, 3),
            released(O1, 3),
        ] {
            assert_eq!(event.schema_version(), MONEY_SCHEMA_VERSION);
            let data = event.encode().unwrap();
            let back =
                CustomerEvent::decode(event.event_type(), event.schema_version(), &data).unwrap();
            assert_eq!(back, event);
        }
        let reserved_json: serde_json::Value =
            serde_json::from_slice(&reserved(O1, 3).encode().unwrap()).unwrap();
        assert_eq!(
            reserved_json,
            serde_json::json!({"customer_id": C.to_string(), "order_id": O1.to_string(),
                "amount": {"amount": 3, "currency": "EUR"}})
        );
        assert!(matches!(
            CustomerEvent::decode("CustomerDeleted", 1, b"{}"),
            Err(DecodeError::UnknownType(_))
        ));
        // Only the current version decodes: an older one must have been
        // upcast on the way, a newer one is from newer code.
        for version in [1, 3] {
            assert!(matches!(
                CustomerEvent::decode("CreditReserved", version, b"{}"),
                Err(DecodeError::UnsupportedSchema { supported: 2, .. })
            ));
        }
    }

    fn stored(
        event_type: &str,
        version: u32,
        data: serde_json::Value,
    ) -> event_store::RecordedEvent {
        event_store::RecordedEvent {
            id: Uuid::nil(),
            stream_id: event_store::StreamId::new(format!("customer-{C}")).unwrap(),
            version: 1,
            position: event_store::Position(9),
            event_type: event_type.into(),
            schema_version: version,
            timestamp: event_store::Timestamp(0),
            data: serde_json::to_vec(&data).unwrap().into(),
            metadata: bytes::Bytes::from_static(b"{}"),
        }
    }

    /// Upcasts a stored event with the domain's upcasters and decodes it,
    /// checking that the command handler's typed path reads the same.
    fn read(event: event_store::RecordedEvent) -> Result<CustomerEvent, event_store::Error> {
        let upcasters = crate::domain::upcasters();
        let via_json = upcasters.upcast(event.clone()).map(|current| {
            CustomerEvent::decode(&current.event_type, current.schema_version, &current.data)
                .unwrap()
        });
        match (&via_json, upcasters.upcast_typed(&event)) {
            (_, None) => {}
            (Ok(json), Some(Ok(value))) => assert_eq!(
                &CustomerEvent::from_upcast(&event.event_type, value).unwrap(),
                json
            ),
            // The same step refuses the same data on both paths.
            (Err(json), Some(Err(typed))) => assert_eq!(json.to_string(), typed.to_string()),
            (json, Some(typed)) => panic!("the paths disagree: {json:?} and {typed:?}"),
        }
        via_json
    }

    #[test]
    fn single_currency_events_read_as_money_in_euros() {
        crate::domain::upcasters().validate().unwrap();
        let (c, o) = (C.to_string(), O1.to_string());
        let v1 = [
            stored(
                "CustomerRegistered",
                1,
                serde_json::json!({"customer_id": c, "name": "Ada Lovelace",
                    "email": "ada@example.com", "credit_limit": 2500}),
            ),
            stored(
                "CreditLimitChanged",
                1,
                serde_json::json!({"customer_id": c, "credit_limit": 2}),
            ),
            stored(
                "CreditReserved",
                1,
                serde_json::json!({"customer_id": c, "order_id": o, "amount": 3}),
            ),
            stored(
                "CreditReleased",
                1,
                serde_json::json!({"customer_id": c, "order_id": o, "amount": 3}),
            ),
        ];
        let upcast: Vec<CustomerEvent> = v1.into_iter().map(|e| read(e).unwrap()).collect();
        assert_eq!(
            upcast,
            [
                registered(2500),
                limit_changed(2),
                reserved(O1, 3),
                released(O1, 3)
            ]
        );
        // The old customer accepts commands in the new shape.
        let state = given(&upcast[..1]);
        assert_eq!(state.credit_limit(), Some(eur(2500)));
        assert_eq!(
            state.handle(&reserve(O2, eur(2500))),
            Ok(vec![reserved(O2, 2500)])
        );
        // Current events and types that never changed pass through.
        let current = stored(
            "CreditLimitChanged",
            2,
            serde_json::json!({"customer_id": c, "credit_limit": {"amount": 7, "currency": "USD"}}),
        );
        assert_eq!(
            crate::domain::upcasters().upcast(current.clone()).unwrap(),
            current
        );
        // Money already, under the old label: kept, currency included.
        let labelled_v1 = stored(
            "CreditLimitChanged",
            1,
            serde_json::json!({"customer_id": c, "credit_limit": {"amount": 7, "currency": "USD"}}),
        );
        assert_eq!(
            read(labelled_v1).unwrap(),
            CustomerEvent::CreditLimitChanged(CreditLimitChanged {
                customer_id: C,
                credit_limit: usd(7)
            })
        );
        // A forgotten customer's registration reads erased at version 1 too.
        let erased = stored(
            "CustomerRegistered",
            1,
            serde_json::json!({"customer_id": c, "name": event_store::ERASED,
                "email": event_store::ERASED, "credit_limit": 2500}),
        );
        match read(erased).unwrap() {
            CustomerEvent::Registered(e) => {
                assert!(e.personal.is_erased());
                assert_eq!(e.credit_limit, eur(2500));
            }
            other => panic!("{other:?}"),
        }
        let forgotten = stored(
            "CustomerForgotten",
            1,
            serde_json::json!({"customer_id": c}),
        );
        assert!(matches!(read(forgotten), Ok(CustomerEvent::Forgotten(_))));
    }

    /// A version 1 amount: mostly what releases wrote, and what they did not.
    fn any_amount() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        prop_oneof![
            (0..=crate::domain::money::AMOUNT_MAX).prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            "[A-Z0-9.]{0,4}".prop_map(serde_json::Value::from),
            (
                any::<i64>(),
                prop::sample::select(vec!["EUR", "USD", "XXX", ""])
            )
                .prop_map(
                    |(amount, currency)| serde_json::json!({"amount": amount, "currency": currency})
                ),
            any::<i64>().prop_map(|amount| serde_json::json!({"amount": amount})),
            Just(serde_json::Value::Null),
        ]
    }

    proptest::proptest! {
        /// Whatever a version 1 event holds, the command handler's typed
        /// path and the JSON read paths read the same event, or both
        /// refuse it (`read` compares them); an integer in range is that
        /// many euro cents.
        #[test]
        fn both_read_paths_agree_on_any_version_1_amount(
            amount in any_amount(),
            event_type in proptest::sample::select(MONEY_EVENT_TYPES.to_vec()),
        ) {
            let field = match event_type {
                "CustomerRegistered" | "CreditLimitChanged" => "credit_limit",
                _ => "amount",
            };
            let mut data = serde_json::json!({"customer_id": C, "order_id": O1,
                "name": "Ada", "email": "ada@example.com"});
            data[field] = amount.clone();
            let read_back = read(stored(event_type, 1, data));
            if let Some(cents) = amount.as_i64().filter(|c| (0..=crate::domain::money::AMOUNT_MAX).contains(c)) {
                let event = read_back.unwrap();
                let money = match &event {
                    CustomerEvent::Registered(e) => e.credit_limit,
                    CustomerEvent::CreditLimitChanged(e) => e.credit_limit,
                    CustomerEvent::CreditReserved(e) => e.amount,
                    CustomerEvent::CreditReleased(e) => e.amount,
                    CustomerEvent::Forgotten(_) => unreachable!("{event:?}"),
                };
                proptest::prop_assert_eq!(money, eur(cents));
            }
        }
    }

    #[test]
    fn a_single_currency_event_without_an_integer_amount_is_an_error_naming_it() {
        for (data, why) in [
            (
                serde_json::json!({"customer_id": C, "credit_limit": {"amount": 1}}),
                "not an integer",
            ),
            (
                serde_json::json!({"customer_id": C, "credit_limit": "1.00"}),
                "not an integer",
            ),
            (
                serde_json::json!({"customer_id": C, "credit_limit": 1.5}),
                "not an integer",
            ),
            (serde_json::json!({"customer_id": C}), "missing"),
            (serde_json::json!([1]), "not a JSON object"),
            (serde_json::json!("x"), "not a JSON object"),
            (serde_json::json!(null), "not a JSON object"),
            // An object is judged by its members.
            (
                serde_json::json!({"customer_id": 7, "credit_limit": 1}),
                "UUID",
            ),
        ] {
            match read(stored("CreditLimitChanged", 1, data)) {
                Err(event_store::Error::Upcast {
                    event_type,
                    version,
                    detail,
                }) => {
                    assert_eq!((event_type.as_str(), version), ("CreditLimitChanged", 1));
                    assert!(detail.contains(why), "{detail}");
                }
                other => panic!("expected an upcast error, got {other:?}"),
            }
        }
    }

    #[test]
    fn every_event_builds_from_the_value_of_a_typed_upcaster() {
        let events = [
            registered(5),
            limit_changed(6),
            reserved(O1, 7),
            released(O1, 7),
            CustomerEvent::Forgotten(CustomerForgotten { customer_id: C }),
        ];
        for event in events {
            let value: event_store::UpcastValue = match event.clone() {
                CustomerEvent::Registered(e) => Box::new(e),
                CustomerEvent::CreditLimitChanged(e) => Box::new(e),
                CustomerEvent::CreditReserved(e) => Box::new(e),
                CustomerEvent::CreditReleased(e) => Box::new(e),
                CustomerEvent::Forgotten(e) => Box::new(e),
            };
            let event_type = event.event_type();
            assert_eq!(
                CustomerEvent::from_upcast(event_type, value).unwrap(),
                event
            );
            // Another type than the event's is refused, naming the one
            // expected.
            match CustomerEvent::from_upcast(event_type, Box::new(7_u8)) {
                Err(DecodeError::UpcastType {
                    event_type: t,
                    expected,
                }) => {
                    assert_eq!(t, event_type);
                    assert!(expected.contains("customer::"), "{expected}");
                }
                other => panic!("expected an upcast type error, got {other:?}"),
            }
        }
        assert!(matches!(
            CustomerEvent::from_upcast("OrderPlaced", Box::new(())),
            Err(DecodeError::UnknownType(_))
        ));
    }

    #[test]
    fn a_forgotten_customer_still_loads() {
        let erased = format!(
            r#"{{"customer_id":"{C}","name":"{e}","email":"{e}",
                "credit_limit":{{"amount":100,"currency":"EUR"}}}}"#,
            e = event_store::ERASED
        );
        let event = CustomerEvent::decode("CustomerRegistered", 2, erased.as_bytes()).unwrap();
        let CustomerEvent::Registered(registered) = &event else {
            panic!("{event:?}")
        };
        assert!(registered.personal.is_erased());
        assert!(!personal().is_erased());
        let state = given(&[event]);
        assert_eq!(
            state.handle(&reserve(O1, eur(100))),
            Ok(vec![reserved(O1, 100)])
        );
    }

    #[test]
    fn the_state_round_trips_through_a_snapshot_without_personal_data() {
        let state = given(&[registered(100), reserved(O1, 30), reserved(O2, 20)]);
        let json = serde_json::to_string(&state).unwrap();
        assert!(!json.contains("Ada") && !json.contains("example.com"));
        let back: Customer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, state);
        assert_eq!(back.reserved(), Some(eur(50)));
    }

    #[test]
    fn names_and_emails_are_validated() {
        assert_eq!(CustomerName::parse("  Ada ").unwrap().as_str(), "Ada");
        assert!(CustomerName::parse("   ").is_err());
        assert!(CustomerName::parse(&"x".repeat(201)).is_err());
        assert!(CustomerName::parse(&"é".repeat(200)).is_ok());
        assert!(CustomerName::parse("Ada\u{0}").is_err());
        assert_eq!(
            Email::parse("Ada.L+news@Example.COM").unwrap().as_str(),
            "Ada.L+news@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "ada@@example.com",
            "ada@exa mple.com",
            ".ada@example.com",
            "a..da@example.com",
            "ada@-example.com",
            "ada@example.123",
            "ada @example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long_local).is_err());
        let long = format!("a@{}.com", "b".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    /// Characters that show nothing on their own: spaces, zero-width and
    /// direction characters, the byte order mark, combining marks,
    /// variation selectors, the Hangul fillers.
    const INVISIBLE: [char; 20] = [
        ' ', '\u{00A0}', '\u{2003}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}',
        '\u{202A}', '\u{202E}', '\u{2060}', '\u{2066}', '\u{2069}', '\u{FEFF}', '\u{0301}',
        '\u{FE0F}', '\u{034F}', '\u{3164}', '\u{115F}', '\u{2800}',
    ];

    proptest::proptest! {
        /// A name made of invisible characters only is refused, whatever
        /// their mix; one visible character among them makes it a name.
        #[test]
        fn a_name_needs_one_visible_character(
            invisible in proptest::collection::vec(proptest::sample::select(INVISIBLE.to_vec()), 1..40),
            visible in proptest::sample::select(vec!['A', 'z', '7', '\u{00E9}', '\u{4E2D}', '\u{05D0}', '-', '\u{1F600}']),
            at in 0usize..40,
        ) {
            let blank: String = invisible.iter().collect();
            let refused = CustomerName::parse(&blank);
            proptest::prop_assert!(refused.is_err(), "{blank:?} was taken");
            let mut chars = invisible.clone();
            chars.insert(at.min(chars.len()), visible);
            let name: String = chars.iter().collect();
            let taken = CustomerName::parse(&name);
            proptest::prop_assert!(taken.is_ok(), "{name:?}: {taken:?}");
        }
    }
}
