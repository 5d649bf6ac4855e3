//! The bank's command routes: each turns a request body into one command.
//!
//! | method | path | command |
//! |---|---|---|
//! | POST | `/accounts` | open an account (`201`, `Location`) |
//! | POST | `/accounts/{id}/deposits` | deposit |
//! | POST | `/accounts/{id}/withdrawals` | withdraw |
//! | POST | `/accounts/{id}/close` | close (at zero, nothing in flight) |
//! | DELETE | `/accounts/{id}/holder` | forget the holder (erase the name) |
//! | POST | `/transfers` | request a transfer (`201`); the saga does it |
//!
//! Bodies are read in two steps: serde checks the JSON's shape (unknown
//! fields and wrong types are `400 malformed-request`), then the domain's
//! parsers check every field and report all that are wrong at once (`400
//! invalid-fields`, each under its JSON pointer). The rules that need the
//! account's state (funds, currency, closed) are the aggregate's: `422`.

use command_api::{CommandRoutes, FieldErrors, NoFields, Route};
use serde::Deserialize;
use uuid::Uuid;

use crate::account::{AccountCommand, HolderName};
use crate::money::{Amount, Currency, Money};
use crate::transfer::TransferCommand;
use crate::{Account, Transfer};

/// What the erasure route does, for the OpenAPI document.
const ERASURE: &str = "Records `HolderForgotten` (the views erase their copies of the name) and \
destroys the key that encrypts the holder's name in the event store, so every stored copy reads \
as `[erased]` from then on. The account keeps working, closed accounts included. Deleting again \
is harmless (`200`, nothing new recorded): a retry after a failure finishes the erasure.";

/// The routes of [`Account`].
pub fn accounts() -> CommandRoutes<Account> {
    CommandRoutes::new("/accounts")
        .create(Route::post("/accounts", "Open an account"), open)
        .command(
            Route::post("/accounts/{id}/deposits", "Deposit money"),
            |account_id, body: MoneyBody| {
                let mut errors = FieldErrors::new();
                let amount = money(&mut errors, "", &body);
                errors.finish(|| {
                    Some(AccountCommand::Deposit {
                        account_id,
                        amount: amount?,
                    })
                })
            },
        )
        .command(
            Route::post("/accounts/{id}/withdrawals", "Withdraw money")
                .describe("Down to the account's overdraft limit (`422 insufficient-funds`)."),
            |account_id, body: MoneyBody| {
                let mut errors = FieldErrors::new();
                let amount = money(&mut errors, "", &body);
                errors.finish(|| {
                    Some(AccountCommand::Withdraw {
                        account_id,
                        amount: amount?,
                    })
                })
            },
        )
        .command(
            Route::post("/accounts/{id}/close", "Close an account")
                .describe("Only at a zero balance with no transfer in flight.")
                .optional_body(),
            |account_id, NoFields {}| Ok(AccountCommand::Close { account_id }),
        )
        .command(
            Route::delete(
                "/accounts/{id}/holder",
                "Forget the holder: erase their name (the right to be forgotten)",
            )
            .describe(ERASURE)
            .erases_personal_data(),
            |account_id, NoFields {}| Ok(AccountCommand::ForgetHolder { account_id }),
        )
}

/// The routes of [`Transfer`].
pub fn transfers() -> CommandRoutes<Transfer> {
    CommandRoutes::new("/transfers").create(
        Route::post("/transfers", "Request a transfer").describe(
            "Answers once the request is recorded; the transfer saga then debits the source and \
             credits the target, or fails the transfer (and gives the money back) when either \
             refuses. The transfers view shows how it ended.",
        ),
        request_transfer,
    )
}

/// An account to open.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenAccount {
    /// The new account's id; generated when absent. Opening an id again
    /// is `422` (`account-already-open`).
    #[serde(default)]
    #[schema(format = Uuid)]
    account_id: Option<String>,
    /// The holder's name: personal data, encrypted in the log. 1 to 200
    /// characters, not all blank, no control characters.
    #[schema(example = "Ada Lovelace", max_length = 200)]
    holder: String,
    /// ISO 4217 code of the account's currency.
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
    /// How far below zero the balance may go, in minor units; 0 when
    /// absent.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 0)]
    overdraft_limit: Option<i64>,
}

fn open(new_id: Uuid, body: OpenAccount) -> Result<AccountCommand, FieldErrors> {
    let mut errors = FieldErrors::new();
    let account_id = match &body.account_id {
        Some(raw) => uuid(&mut errors, "/account_id", raw),
        None => Some(new_id),
    };
    let holder = errors.check("/holder", HolderName::parse(&body.holder));
    let currency = errors.check("/currency", Currency::parse(&body.currency));
    let overdraft_limit = errors.check(
        "/overdraft_limit",
        Amount::new(body.overdraft_limit.unwrap_or(0)),
    );
    errors.finish(|| {
        Some(AccountCommand::Open {
            account_id: account_id?,
            holder: holder?,
            currency: currency?,
            overdraft_limit: overdraft_limit?,
        })
    })
}

/// An amount of money: whole minor units of a currency. `{"amount": 1250,
/// "currency": "EUR"}` is 12.50 EUR.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Money)]
pub struct MoneyBody {
    /// Minor units, more than 0; in the account's currency.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_000_i64, example = 1250)]
    amount: i64,
    /// ISO 4217 code; the account's (`422 currency-mismatch` otherwise).
    #[schema(example = "EUR", pattern = "^[A-Z]{3}$")]
    currency: String,
}

/// The money of `body`, whose fields are under `pointer`: a known
/// currency and an amount above zero.
fn money(errors: &mut FieldErrors, pointer: &str, body: &MoneyBody) -> Option<Money> {
    let currency = errors.check(
        &format!("{pointer}/currency"),
        Currency::parse(&body.currency),
    );
    let amount = errors.check(
        &format!("{pointer}/amount"),
        Amount::new(body.amount)
            .map_err(|e| e.to_string())
            .and_then(|amount| {
                if amount.is_zero() {
                    Err("an amount must be greater than zero".to_owned())
                } else {
                    Ok(amount)
                }
            }),
    );
    Some(Money {
        amount: amount?,
        currency: currency?,
    })
}

/// A transfer to request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestTransfer {
    /// The new transfer's id; generated when absent. Requesting an id
    /// again is `422` (`transfer-already-requested`).
    #[serde(default)]
    #[schema(format = Uuid)]
    transfer_id: Option<String>,
    /// The account the money leaves.
    #[schema(format = Uuid)]
    from_account: String,
    /// The account the money goes to; not the source.
    #[schema(format = Uuid)]
    to_account: String,
    /// In the currency of both accounts.
    amount: MoneyBody,
}

fn request_transfer(new_id: Uuid, body: RequestTransfer) -> Result<TransferCommand, FieldErrors> {
    let mut errors = FieldErrors::new();
    let transfer_id = match &body.transfer_id {
        Some(raw) => uuid(&mut errors, "/transfer_id", raw),
        None => Some(new_id),
    };
    let from_account = uuid(&mut errors, "/from_account", &body.from_account);
    let to_account = uuid(&mut errors, "/to_account", &body.to_account);
    if let (Some(from), Some(to)) = (from_account, to_account)
        && from == to
    {
        errors.add(
            "/to_account",
            "a transfer goes between two different accounts",
        );
    }
    let amount = money(&mut errors, "/amount", &body.amount);
    errors.finish(|| {
        Some(TransferCommand::Request {
            transfer_id: transfer_id?,
            from_account: from_account?,
            to_account: to_account?,
            amount: amount?,
        })
    })
}

/// An id in the body, spelled as in paths.
fn uuid(errors: &mut FieldErrors, pointer: &str, raw: &str) -> Option<Uuid> {
    errors.check(pointer, http_edge::ids::parse_id(raw))
}
