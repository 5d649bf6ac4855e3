//! A bank on annals: accounts in one currency each, and transfers between
//! two of them that a saga carries out, giving the money back when the
//! target refuses it.
//!
//! - [`account`]: the [`Account`] aggregate: open (with the holder's name,
//!   personal data), deposit, withdraw down to the overdraft limit, the
//!   steps of transfers, close at zero;
//! - [`transfer`]: the [`Transfer`] aggregate: how far a transfer got;
//! - [`saga`]: the [`Transfers`] saga, which takes transfers from requested to
//!   completed or failed;
//! - [`money`]: integer minor units of an ISO 4217 currency;
//! - [`routes`]: the command routes of both aggregates, over HTTP;
//! - [`view`]: the `accounts` and `transfers` views and their query routes.
//!
//! A service hands annals what it needs to read and write this domain's
//! events: [`upcasters()`] for the stores it reads, [`personal_data()`] for
//! the encryption of holders' names, the saga built over the command
//! handlers of both aggregates, the routes and the views. `src/main.rs` is
//! the whole service.

pub mod account;
pub mod money;
pub mod routes;
pub mod saga;
pub mod transfer;
pub mod view;

pub use account::Account;
pub use money::{Amount, Currency, Money};
pub use saga::{SAGA_NAME, Transfers, TransfersConfig, TransfersState};
pub use transfer::Transfer;

/// The current schema version of every event type of the domain, with the
/// steps that read older versions as current ones. Read every store of
/// this domain through them (`event_store::Upcasting::new(store,
/// upcasters())`).
pub fn upcasters() -> event_store::Upcasters {
    transfer::upcasters(account::upcasters(event_store::Upcasters::new()))
}

/// What is personal: each account's stream belongs to its holder, and the
/// holder's name (`holder`, `owner` before schema version 2) is encrypted
/// with the holder's key. Forgetting an account's stream erases the name;
/// the account keeps working, as no rule needs it.
pub fn personal_data() -> event_store::PersonalData {
    event_store::PersonalData::new()
        .subject_streams(format!("{}-", account::STREAM_TYPE))
        .fields("AccountOpened", ["holder", "owner"])
}
