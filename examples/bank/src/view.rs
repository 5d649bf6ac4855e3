//! The bank's views: `accounts` (one row per account: holder, balance,
//! status, transfer counts) and `transfers` (one row per transfer: how far
//! it got, and why it failed), each a projection of its own with its
//! tables' DDL beside it (`view/<table>.<dialect>.sql`).
//!
//! Each event is one statement or two inside the batch's transaction; the
//! projector commits them with its checkpoint, so each event takes effect
//! once. The views hold the holder's name as the store hands it over:
//! decrypted, or [`event_store::ERASED`] once the holder was forgotten; a
//! `HolderForgotten` overwrites the copy the view holds.

use async_trait::async_trait;
use command_api::DomainEvent;
use event_store::RecordedEvent;
use projector::{ApplyError, Dialect, Projection, ViewTx};

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

impl AccountsView {
    /// The DDL of the `accounts` table in `dialect`.
    pub fn ddl(dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => include_str!("view/accounts.sqlite.sql"),
            Dialect::Postgres => include_str!("view/accounts.postgres.sql"),
        }
    }
}

impl TransfersView {
    /// The DDL of the `transfers` table in `dialect`.
    pub fn ddl(dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => include_str!("view/transfers.sqlite.sql"),
            Dialect::Postgres => include_str!("view/transfers.postgres.sql"),
        }
    }
}

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

/// The query text for `table`, run with `binds` in order.
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
