//! The bank's views: `accounts` (one row per account: holder, balance,
//! status, transfer counts) and `transfers` (one row per transfer: how far
//! it got, and why it failed), each a projection of its own with its
//! tables' DDL beside it (`view/<table>.<dialect>.sql`), and the query
//! routes that read them ([`queries`]).
//!
//! Each event is one statement or two inside the batch's transaction; the
//! projector commits them with its checkpoint, so each event takes effect
//! once. The views hold the holder's name as the store hands it over:
//! decrypted, or [`event_store::ERASED`] once the holder was forgotten; a
//! `HolderForgotten` overwrites the copy the view holds.

use async_trait::async_trait;
use command_api::DomainEvent;
use event_store::RecordedEvent;
use projector::sqlx;
use projector::{ApplyError, Projection, Schema, ViewTx};
use query_api::{Filter, FromViewRow, ItemRoute, Key, ListRoute, QueryRoutes, View, ViewRow};
use serde::Serialize;

use crate::account::{self, AccountEvent};
use crate::transfer::{self, TransferEvent, TransferStatus};

/// The name of the accounts projection and its table.
pub const ACCOUNTS: &str = "accounts";
/// The name of the transfers projection and its table.
pub const TRANSFERS: &str = "transfers";

/// Keeps the `accounts` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct AccountsView;

/// Keeps the `transfers` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct TransfersView;

/// What every event stamps on the row it changes.
struct Stamp {
    version: i64,
    at: i64,
    position: i64,
}

impl Stamp {
    fn of(event: &RecordedEvent) -> Self {
        Self {
            version: i64::try_from(event.version).unwrap_or(i64::MAX),
            at: event.timestamp.as_micros(),
            position: i64::try_from(event.position.0).unwrap_or(i64::MAX),
        }
    }
}

/// Runs `sql` with `binds` in order, for `event`, which changes exactly
/// one row.
async fn run(
    tx: &mut ViewTx<'_>,
    event: &RecordedEvent,
    sql: String,
    binds: Vec<Bind>,
) -> Result<(), ApplyError> {
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for bind in binds {
        query = match bind {
            Bind::Int(v) => query.bind(v),
            Bind::Text(v) => query.bind(v),
            Bind::OptionalText(v) => query.bind(v),
        };
    }
    let done = query.execute(tx.conn()).await?;
    // Every event but the first of a stream changes a row that exists: a
    // row missing means the view and the log disagree.
    if done.rows_affected() != 1 {
        return Err(ApplyError::event(
            event,
            format!(
                "{} changed {} rows of the view, not one",
                event.event_type,
                done.rows_affected()
            ),
        ));
    }
    Ok(())
}

enum Bind {
    Int(i64),
    Text(String),
    OptionalText(Option<String>),
}

#[async_trait]
impl Projection for AccountsView {
    fn name(&self) -> &'static str {
        ACCOUNTS
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[ACCOUNTS]
    }

    fn schema(&self) -> Schema {
        Schema::new(
            include_str!("view/accounts.sqlite.sql"),
            include_str!("view/accounts.postgres.sql"),
        )
    }

    fn event_types(&self) -> &'static [&'static str] {
        &account::EVENT_TYPES
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, batch: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table(ACCOUNTS)?;
        for event in batch {
            let decoded =
                AccountEvent::decode(&event.event_type, event.schema_version, &event.data)
                    .map_err(|e| ApplyError::event(event, e.to_string()))?;
            let s = Stamp::of(event);
            let stamp = "version = $1, updated_at = $2, position = $3";
            let stamped = |mut binds: Vec<Bind>, id: uuid::Uuid| {
                binds.splice(
                    0..0,
                    [Bind::Int(s.version), Bind::Int(s.at), Bind::Int(s.position)],
                );
                binds.push(Bind::Text(id.to_string()));
                binds
            };
            let (sql, binds) = match decoded {
                AccountEvent::Opened(opened) => (
                    format!(
                        "INSERT INTO {table} (version, updated_at, position, opened_at, holder, \
                         currency, overdraft_limit, balance, status, transfers_sent, \
                         transfers_received, transfers_returned, transfers_in_flight, id) \
                         VALUES ($1, $2, $3, $2, $4, $5, $6, 0, 'open', 0, 0, 0, 0, $7)"
                    ),
                    stamped(
                        vec![
                            Bind::Text(opened.holder.as_str().to_owned()),
                            Bind::Text(opened.currency.code().to_owned()),
                            Bind::Int(opened.overdraft_limit.minor_units()),
                        ],
                        opened.account_id,
                    ),
                ),
                AccountEvent::Deposited(e) => (
                    format!("UPDATE {table} SET {stamp}, balance = balance + $4 WHERE id = $5"),
                    stamped(vec![Bind::Int(e.amount.minor_units())], e.account_id),
                ),
                AccountEvent::Withdrawn(e) => (
                    format!("UPDATE {table} SET {stamp}, balance = balance - $4 WHERE id = $5"),
                    stamped(vec![Bind::Int(e.amount.minor_units())], e.account_id),
                ),
                AccountEvent::TransferSent(e) => (
                    format!(
                        "UPDATE {table} SET {stamp}, balance = balance - $4, \
                         transfers_sent = transfers_sent + 1, \
                         transfers_in_flight = transfers_in_flight + 1 WHERE id = $5"
                    ),
                    stamped(vec![Bind::Int(e.amount.minor_units())], e.account_id),
                ),
                AccountEvent::TransferReceived(e) => (
                    format!(
                        "UPDATE {table} SET {stamp}, balance = balance + $4, \
                         transfers_received = transfers_received + 1 WHERE id = $5"
                    ),
                    stamped(vec![Bind::Int(e.amount.minor_units())], e.account_id),
                ),
                AccountEvent::TransferReturned(e) => (
                    format!(
                        "UPDATE {table} SET {stamp}, balance = balance + $4, \
                         transfers_returned = transfers_returned + 1, \
                         transfers_in_flight = transfers_in_flight - 1 WHERE id = $5"
                    ),
                    stamped(vec![Bind::Int(e.amount.minor_units())], e.account_id),
                ),
                AccountEvent::TransferSettled(e) => (
                    format!(
                        "UPDATE {table} SET {stamp}, \
                         transfers_in_flight = transfers_in_flight - 1 WHERE id = $4"
                    ),
                    stamped(vec![], e.account_id),
                ),
                AccountEvent::Closed(e) => (
                    format!("UPDATE {table} SET {stamp}, status = 'closed' WHERE id = $4"),
                    stamped(vec![], e.account_id),
                ),
                AccountEvent::HolderForgotten(e) => {
                    // The old name must leave the disk too, not only the row.
                    tx.erased_personal_data();
                    (
                        format!("UPDATE {table} SET {stamp}, holder = $4 WHERE id = $5"),
                        stamped(
                            vec![Bind::Text(event_store::ERASED.to_owned())],
                            e.account_id,
                        ),
                    )
                }
            };
            run(tx, event, sql, binds).await?;
        }
        Ok(())
    }
}

/// A transfer's status as the view spells it.
fn status_text(status: TransferStatus) -> &'static str {
    match status {
        TransferStatus::Requested => "requested",
        TransferStatus::Debited => "debited",
        TransferStatus::Credited => "credited",
        TransferStatus::Completed => "completed",
        TransferStatus::Failed => "failed",
    }
}

/// The statuses a transfer goes through, as `GET /transfers?status=`
/// takes them.
pub const TRANSFER_STATUSES: [&str; 5] =
    ["requested", "debited", "credited", "completed", "failed"];

#[async_trait]
impl Projection for TransfersView {
    fn name(&self) -> &'static str {
        TRANSFERS
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TRANSFERS]
    }

    fn schema(&self) -> Schema {
        Schema::new(
            include_str!("view/transfers.sqlite.sql"),
            include_str!("view/transfers.postgres.sql"),
        )
    }

    fn event_types(&self) -> &'static [&'static str] {
        &transfer::EVENT_TYPES
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, batch: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table(TRANSFERS)?;
        for event in batch {
            let decoded =
                TransferEvent::decode(&event.event_type, event.schema_version, &event.data)
                    .map_err(|e| ApplyError::event(event, e.to_string()))?;
            let s = Stamp::of(event);
            let stamp = [Bind::Int(s.version), Bind::Int(s.at), Bind::Int(s.position)];
            let step = |status: TransferStatus, id: uuid::Uuid| {
                (
                    format!(
                        "UPDATE {table} SET version = $1, updated_at = $2, position = $3, \
                         status = $4 WHERE id = $5"
                    ),
                    vec![
                        Bind::Text(status_text(status).to_owned()),
                        Bind::Text(id.to_string()),
                    ],
                )
            };
            let (sql, binds) = match decoded {
                TransferEvent::Requested(e) => (
                    format!(
                        "INSERT INTO {table} (version, updated_at, position, requested_at, id, \
                         from_account, to_account, amount, currency, status) \
                         VALUES ($1, $2, $3, $2, $4, $5, $6, $7, $8, 'requested')"
                    ),
                    vec![
                        Bind::Text(e.transfer_id.to_string()),
                        Bind::Text(e.from_account.to_string()),
                        Bind::Text(e.to_account.to_string()),
                        Bind::Int(e.amount.minor_units()),
                        Bind::Text(e.amount.currency.code().to_owned()),
                    ],
                ),
                TransferEvent::Debited(e) => step(TransferStatus::Debited, e.transfer_id),
                TransferEvent::Credited(e) => step(TransferStatus::Credited, e.transfer_id),
                TransferEvent::Completed(e) => step(TransferStatus::Completed, e.transfer_id),
                TransferEvent::Failed(e) => (
                    format!(
                        "UPDATE {table} SET version = $1, updated_at = $2, position = $3, \
                         status = 'failed', failure_rule = $4, failure_reason = $5 WHERE id = $6"
                    ),
                    vec![
                        Bind::OptionalText(Some(e.rule)),
                        Bind::OptionalText(Some(e.reason)),
                        Bind::Text(e.transfer_id.to_string()),
                    ],
                ),
            };
            let binds = stamp.into_iter().chain(binds).collect();
            run(tx, event, sql, binds).await?;
        }
        Ok(())
    }
}

/// The bank's query routes, over the two views.
///
/// | method | path | answers |
/// |---|---|---|
/// | GET | `/accounts/{id}` | one account (`ETag: "<stream version>"`) |
/// | GET | `/accounts?currency=&status=&limit=&cursor=` | a page of accounts, by id |
/// | GET | `/transfers/{id}` | one transfer (`ETag: "<stream version>"`) |
/// | GET | `/transfers?from_account=&status=&limit=&cursor=` | a page of transfers, by id |
pub fn queries() -> QueryRoutes {
    QueryRoutes::new()
        .list(
            ListRoute::<AccountRow>::new("/accounts", View::new(ACCOUNTS), ACCOUNT_SELECT)
                .key(Key::text("id"))
                .filter(
                    Filter::one_of("currency", &CURRENCIES)
                        .eq("currency")
                        .describe("Only accounts in this currency (ISO 4217)."),
                )
                .filter(
                    Filter::one_of("status", &ACCOUNT_STATUSES)
                        .eq("status")
                        .describe("Only accounts that are `open`, or `closed`."),
                )
                .summary("A page of accounts")
                .description("Ordered by id. Filters combine.")
                .operation_id("list_accounts")
                .tag("accounts"),
        )
        .item(
            ItemRoute::<AccountRow>::new(
                "/accounts/{id}",
                View::new(ACCOUNTS),
                &format!("{ACCOUNT_SELECT} WHERE id = $1"),
            )
            .noun("account")
            .summary("One account")
            .description(
                "An account the view does not hold is `404`. Send a command's `position` as \
                 `min_position` to be answered once the view reflects it.",
            )
            .operation_id("get_account")
            .tag("accounts"),
        )
        .list(
            ListRoute::<TransferRow>::new("/transfers", View::new(TRANSFERS), TRANSFER_SELECT)
                .key(Key::text("id"))
                .filter(
                    Filter::id("from_account")
                        .eq("from_account")
                        .describe("Only transfers sent from this account."),
                )
                .filter(
                    Filter::one_of("status", &TRANSFER_STATUSES)
                        .eq("status")
                        .describe("Only transfers at this step."),
                )
                .summary("A page of transfers")
                .description("Ordered by id. Filters combine.")
                .operation_id("list_transfers")
                .tag("transfers"),
        )
        .item(
            ItemRoute::<TransferRow>::new(
                "/transfers/{id}",
                View::new(TRANSFERS),
                &format!("{TRANSFER_SELECT} WHERE id = $1"),
            )
            .noun("transfer")
            .summary("One transfer")
            .description(
                "How far the transfer got: the saga takes it from `requested` to `completed`, \
                 or to `failed` with the rule that refused it.",
            )
            .operation_id("get_transfer")
            .tag("transfers"),
        )
}

const ACCOUNT_SELECT: &str = "SELECT id, holder, currency, balance, overdraft_limit, status, \
     transfers_sent, transfers_received, transfers_returned, transfers_in_flight, version, \
     opened_at, updated_at, position FROM accounts";

const TRANSFER_SELECT: &str = "SELECT id, from_account, to_account, amount, currency, status, \
     failure_rule, failure_reason, version, requested_at, updated_at, position FROM transfers";

/// The currencies, as `GET /accounts?currency=` takes them.
const CURRENCIES: [&str; 6] = ["CHF", "EUR", "GBP", "JPY", "SEK", "USD"];

/// An account's statuses, as `GET /accounts?status=` takes them.
const ACCOUNT_STATUSES: [&str; 2] = ["open", "closed"];

/// How many transfers an account took part in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferCounts {
    /// Sent from the account (whatever became of them).
    sent: i64,
    /// Received by the account.
    received: i64,
    /// Sent, refused by the target, and given back.
    returned: i64,
    /// Sent, and not settled or returned yet.
    in_flight: i64,
}

/// An account as the `accounts` view holds it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Account)]
pub struct AccountRow {
    #[schema(format = Uuid)]
    id: String,
    /// The holder's name; `[erased]` once the holder was forgotten.
    holder: String,
    /// ISO 4217 code of every amount of the account.
    #[schema(example = "EUR")]
    currency: String,
    /// In minor units; below zero while overdrawn.
    balance: i64,
    /// How far below zero the balance may go, in minor units.
    overdraft_limit: i64,
    /// `open` or `closed`.
    status: String,
    transfers: TransferCounts,
    /// Version of the account's stream: what to send as `If-Match`.
    version: i64,
    #[schema(format = DateTime)]
    opened_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Log position of the last event that changed the account.
    position: i64,
}

impl FromViewRow for AccountRow {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        Ok(AccountRow {
            id: row.get("id")?,
            holder: row.get("holder")?,
            currency: row.get("currency")?,
            balance: row.get("balance")?,
            overdraft_limit: row.get("overdraft_limit")?,
            status: row.get("status")?,
            transfers: TransferCounts {
                sent: row.get("transfers_sent")?,
                received: row.get("transfers_received")?,
                returned: row.get("transfers_returned")?,
                in_flight: row.get("transfers_in_flight")?,
            },
            version: row.get("version")?,
            opened_at: time(row.get("opened_at")?),
            updated_at: time(row.get("updated_at")?),
            position: row.get("position")?,
        })
    }

    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

/// An amount in a currency, as the views show it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Amount)]
pub struct AmountRow {
    /// Minor units.
    amount: i64,
    /// ISO 4217 code.
    #[schema(example = "EUR")]
    currency: String,
}

/// Why a transfer failed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransferFailure {
    /// The rule that refused it (`account-closed`, `insufficient-funds`,
    /// `currency-mismatch`, `expired`, ...).
    rule: String,
    reason: String,
}

/// A transfer as the `transfers` view holds it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TransferView)]
pub struct TransferRow {
    #[schema(format = Uuid)]
    id: String,
    #[schema(format = Uuid)]
    from_account: String,
    #[schema(format = Uuid)]
    to_account: String,
    amount: AmountRow,
    /// `requested`, `debited`, `credited`, `completed` or `failed`.
    status: String,
    /// Set once failed.
    failure: Option<TransferFailure>,
    /// Version of the transfer's stream.
    version: i64,
    #[schema(format = DateTime)]
    requested_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    /// Log position of the last event that changed the transfer.
    position: i64,
}

impl FromViewRow for TransferRow {
    fn from_row(row: &ViewRow<'_>) -> Result<Self, sqlx::Error> {
        let rule: Option<String> = row.get("failure_rule")?;
        let reason: Option<String> = row.get("failure_reason")?;
        Ok(TransferRow {
            id: row.get("id")?,
            from_account: row.get("from_account")?,
            to_account: row.get("to_account")?,
            amount: AmountRow {
                amount: row.get("amount")?,
                currency: row.get("currency")?,
            },
            status: row.get("status")?,
            failure: rule.map(|rule| TransferFailure {
                rule,
                reason: reason.unwrap_or_default(),
            }),
            version: row.get("version")?,
            requested_at: time(row.get("requested_at")?),
            updated_at: time(row.get("updated_at")?),
            position: row.get("position")?,
        })
    }

    fn version(&self) -> Option<i64> {
        Some(self.version)
    }
}

/// A time of the views (µs since the epoch) as RFC 3339.
fn time(micros: i64) -> String {
    projector::time::rfc3339(event_store::Timestamp(micros))
}
