//! The transfer saga: takes a requested transfer through the debit of its
//! source and the credit of its target, and gives the money back when the
//! target refuses it.
//!
//! ```text
//! TransferRequested ──▶ SendTransfer(source)          the debit
//!                         ok ───────────────────────▶ RecordDebit
//!                         refused / expired ────────▶ fence the debit, Fail
//! TransferDebited   ──▶ ReceiveTransfer(target)       the credit
//!                         ok ───────────────────────▶ RecordCredit
//!                         refused ──────────────────▶ fence the credit,
//!                                                     ReturnTransfer(source), Fail
//! TransferCredited  ──▶ SettleTransfer(source), Complete
//! ```
//!
//! Each step reacts to the event the previous one recorded, so a crash
//! anywhere resumes at the first step not recorded; every command carries
//! the idempotency key of its step, so a step done before a crash is
//! answered from its record, not done twice. Before acting on "this step
//! did not happen" (failing the transfer, returning the debit) the saga
//! fences the step, so that the same command sent by a run that crashed
//! can never land afterwards. Each transfer is a lane: its events are
//! handled in order, different transfers at the same time.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use command_api::{
    Aggregate, AggregateCommand, CommandError, CommandHandler, DomainError, DomainEvent, Fenced,
    Saga, SagaContext, SagaError,
};
use event_store::{EventFilter, RecordedEvent, Timestamp};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{Account, AccountCommand, AccountError};
use crate::transfer::{
    Transfer, TransferCommand, TransferError, TransferEvent, TransferRequested, TransferStatus,
};

/// The saga's name: its checkpoint stream is `saga-transfers-checkpoint`
/// and its idempotency keys start with `transfers:`.
pub const SAGA_NAME: &str = "transfers";

/// How the transfer saga decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransfersConfig {
    /// A transfer whose source was not debited this long after the
    /// request (its commit time), because the saga was stopped or kept
    /// failing, fails with the rule `expired` instead: a payer expects a
    /// transfer to happen soon or not at all. Once debited, a transfer is
    /// always seen through.
    pub expiry: Duration,
}

impl Default for TransfersConfig {
    fn default() -> Self {
        Self {
            expiry: Duration::from_secs(15 * 60),
        }
    }
}

/// What the saga keeps: the transfers it has seen requested and not
/// finished, with the request's commit time (µs since the Unix epoch).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransfersState {
    #[serde(default)]
    pub in_flight: BTreeMap<Uuid, i64>,
}

/// The transfer saga. Build it with the command handlers of both
/// aggregates (those the command routes use, so that they share locks and
/// caches) and run it with a [`command_api::SagaRunner`].
#[derive(Debug)]
pub struct Transfers {
    accounts: CommandHandler<Account>,
    transfers: CommandHandler<Transfer>,
    config: TransfersConfig,
}

/// What one event led to, for the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Debited,
    Credited,
    Completed,
    /// Refused (or expired) before any money moved.
    Failed,
    /// Refused by the target; the source got its money back.
    Returned,
    /// Handled before (this is a redelivery): the transfer is past this
    /// step, at the status it loaded at.
    Passed(Option<TransferStatus>),
}

impl Outcome {
    /// Whether the transfer is finished after this step.
    fn finished(self) -> bool {
        match self {
            Outcome::Completed | Outcome::Failed | Outcome::Returned => true,
            Outcome::Passed(status) => matches!(
                status,
                Some(TransferStatus::Completed | TransferStatus::Failed)
            ),
            Outcome::Debited | Outcome::Credited => false,
        }
    }
}

#[async_trait]
impl Saga for Transfers {
    type State = TransfersState;

    fn name(&self) -> &'static str {
        SAGA_NAME
    }

    fn filter(&self) -> EventFilter {
        Transfers::filter()
    }

    async fn handle(
        &self,
        event: &RecordedEvent,
        context: &SagaContext<TransfersState>,
    ) -> Result<(), SagaError> {
        let decoded = TransferEvent::decode(&event.event_type, event.schema_version, &event.data)
            .map_err(|e| SagaError::Permanent(e.to_string()))?;
        let (transfer_id, outcome) = match decoded {
            TransferEvent::Requested(requested) => (
                requested.transfer_id,
                self.debit(event, &requested, context).await?,
            ),
            TransferEvent::Debited(debited) => (
                debited.transfer_id,
                self.credit(debited.transfer_id, context).await?,
            ),
            TransferEvent::Credited(credited) => (
                credited.transfer_id,
                self.settle(credited.transfer_id, context).await?,
            ),
            TransferEvent::Completed(_) | TransferEvent::Failed(_) => return Ok(()),
        };
        // Also on a redelivery: the run that finished the transfer may have
        // crashed before its state reached a checkpoint.
        if outcome.finished() {
            context.update(|s| s.in_flight.remove(&transfer_id));
        }
        tracing::debug!(position = event.position.0, %transfer_id, ?outcome, "transfer step");
        Ok(())
    }

    fn summary(&self, state: &TransfersState) -> BTreeMap<String, serde_json::Value> {
        let mut summary = BTreeMap::new();
        summary.insert("transfers_in_flight".into(), state.in_flight.len().into());
        if let Some(oldest) = state.in_flight.values().min() {
            summary.insert("oldest_in_flight_requested_at_us".into(), (*oldest).into());
        }
        summary
    }
}

impl Transfers {
    pub fn new(accounts: CommandHandler<Account>, transfers: CommandHandler<Transfer>) -> Self {
        Self {
            accounts,
            transfers,
            config: TransfersConfig::default(),
        }
    }

    pub fn with_config(mut self, config: TransfersConfig) -> Self {
        self.config = config;
        self
    }

    /// The events the saga reacts to: the steps of transfers that lead to
    /// the next one.
    pub fn filter() -> EventFilter {
        EventFilter {
            stream_prefixes: vec![format!("{}-", Transfer::TYPE)],
            event_types: vec![
                "TransferRequested".into(),
                "TransferDebited".into(),
                "TransferCredited".into(),
            ],
        }
    }

    /// The first step: take the amount from the source.
    async fn debit(
        &self,
        event: &RecordedEvent,
        requested: &TransferRequested,
        context: &SagaContext<TransfersState>,
    ) -> Result<Outcome, SagaError> {
        let transfer_id = requested.transfer_id;
        let source = requested.from_account;
        let status = self.status(transfer_id).await?;
        let passed = Outcome::Passed(Some(status));
        // Also on a redelivery, past this step: a crash may have lost the
        // state's changes since the last checkpoint.
        if !passed.finished() {
            context.update(|s| s.in_flight.insert(transfer_id, event.timestamp.as_micros()));
        }
        if status != TransferStatus::Requested {
            return Ok(passed);
        }
        let refusal = if self.expired(event.timestamp, context.now()) {
            Some(Refusal::expired(self.config.expiry))
        } else {
            let send = AccountCommand::SendTransfer {
                account_id: source,
                transfer_id,
                amount: requested.amount,
            };
            let ids = [transfer_id.as_bytes().as_slice(), source.as_bytes()];
            match self
                .accounts
                .execute(send, context.command("debit", &ids)?)
                .await
            {
                // Sent already, under another key (the saga renamed and
                // started over): the money is in flight all the same.
                Ok(_) | Err(CommandError::Rejected(AccountError::AlreadySent(_))) => None,
                Err(e) => Some(Refusal::of(e, source)?),
            }
        };
        if let Some(refusal) = refusal {
            // A debit sent by a run that crashed may still be on its way;
            // it must never land once the transfer failed.
            match context.fence("debit", &refusal.to_string()).await? {
                Fenced::Now | Fenced::Before => {
                    self.fail(context, transfer_id, &refusal).await?;
                    return Ok(Outcome::Failed);
                }
                // It landed first: the money left the source, so the
                // transfer goes on whatever this run found.
                Fenced::Ran => {}
            }
        }
        self.record(
            context,
            "record-debit",
            TransferCommand::RecordDebit { transfer_id },
        )
        .await?;
        Ok(Outcome::Debited)
    }

    /// The second step: give the amount to the target, or back to the
    /// source when the target refuses it.
    async fn credit(
        &self,
        transfer_id: Uuid,
        context: &SagaContext<TransfersState>,
    ) -> Result<Outcome, SagaError> {
        let transfer = self.load(transfer_id).await?;
        let (Some(TransferStatus::Debited), Some(source), Some(target), Some(amount)) = (
            transfer.status(),
            transfer.from_account(),
            transfer.to_account(),
            transfer.amount(),
        ) else {
            return Ok(Outcome::Passed(transfer.status()));
        };
        let receive = AccountCommand::ReceiveTransfer {
            account_id: target,
            transfer_id,
            amount,
        };
        let ids = [transfer_id.as_bytes().as_slice(), target.as_bytes()];
        let refusal = match self
            .accounts
            .execute(receive, context.command("credit", &ids)?)
            .await
        {
            Ok(_) => None,
            Err(e) => Some(Refusal::of(e, target)?),
        };
        if let Some(refusal) = refusal {
            // Compensating while a credit of a crashed run could still land
            // would pay the amount twice: once to each account.
            match context.fence("credit", &refusal.to_string()).await? {
                Fenced::Now | Fenced::Before => {
                    self.give_back(context, transfer_id, source).await?;
                    self.fail(context, transfer_id, &refusal).await?;
                    return Ok(Outcome::Returned);
                }
                Fenced::Ran => {}
            }
        }
        self.record(
            context,
            "record-credit",
            TransferCommand::RecordCredit { transfer_id },
        )
        .await?;
        Ok(Outcome::Credited)
    }

    /// The last step: the source lets go of the amount, and the transfer
    /// is complete.
    async fn settle(
        &self,
        transfer_id: Uuid,
        context: &SagaContext<TransfersState>,
    ) -> Result<Outcome, SagaError> {
        let transfer = self.load(transfer_id).await?;
        let (Some(TransferStatus::Credited), Some(source)) =
            (transfer.status(), transfer.from_account())
        else {
            return Ok(Outcome::Passed(transfer.status()));
        };
        let settle = AccountCommand::SettleTransfer {
            account_id: source,
            transfer_id,
        };
        let ids = [transfer_id.as_bytes().as_slice(), source.as_bytes()];
        self.accounts
            .execute(settle, context.command("settle", &ids)?)
            .await
            .map_err(SagaError::from_command)?;
        self.record(
            context,
            "complete",
            TransferCommand::Complete { transfer_id },
        )
        .await?;
        Ok(Outcome::Completed)
    }

    /// Compensation: the amount goes back to the source.
    async fn give_back(
        &self,
        context: &SagaContext<TransfersState>,
        transfer_id: Uuid,
        source: Uuid,
    ) -> Result<(), SagaError> {
        let give_back = AccountCommand::ReturnTransfer {
            account_id: source,
            transfer_id,
        };
        let ids = [transfer_id.as_bytes().as_slice(), source.as_bytes()];
        self.accounts
            .execute(give_back, context.command("return", &ids)?)
            .await
            .map(|_| ())
            .map_err(SagaError::from_command)
    }

    async fn fail(
        &self,
        context: &SagaContext<TransfersState>,
        transfer_id: Uuid,
        refusal: &Refusal,
    ) -> Result<(), SagaError> {
        let fail = TransferCommand::Fail {
            transfer_id,
            rule: refusal.rule.clone(),
            reason: refusal.reason.clone(),
        };
        self.record(context, "fail", fail).await
    }

    /// Records a step on the transfer. One it has moved past is recorded
    /// already (by a run whose record this one did not see).
    async fn record(
        &self,
        context: &SagaContext<TransfersState>,
        step: &str,
        command: TransferCommand,
    ) -> Result<(), SagaError> {
        let transfer_id = command.aggregate_id();
        let ids = [transfer_id.as_bytes().as_slice()];
        match self
            .transfers
            .execute(command, context.command(step, &ids)?)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(TransferError::InvalidTransition { .. })) => Ok(()),
            Err(e) => Err(SagaError::from_command(e)),
        }
    }

    async fn load(&self, transfer_id: Uuid) -> Result<Transfer, SagaError> {
        self.transfers
            .load(transfer_id)
            .await
            .map(|loaded| loaded.state)
            .map_err(SagaError::from_command)
    }

    async fn status(&self, transfer_id: Uuid) -> Result<TransferStatus, SagaError> {
        self.load(transfer_id).await?.status().ok_or_else(|| {
            SagaError::Permanent(format!(
                "transfer {transfer_id} has a TransferRequested event but does not load as requested"
            ))
        })
    }

    /// Whether a transfer requested at `requested_at` is past its expiry
    /// at `now` (the saga runner's clock).
    fn expired(&self, requested_at: Timestamp, now: Timestamp) -> bool {
        let age_us = now.as_micros().saturating_sub(requested_at.as_micros());
        let expiry_us = i64::try_from(self.config.expiry.as_micros()).unwrap_or(i64::MAX);
        age_us > expiry_us
    }
}

/// Why a step of a transfer cannot happen: an account's rule, or the
/// transfer's expiry. Kept in the step's fence as `<rule>: <reason>`, so
/// that a later run that finds the fence fails the transfer the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Refusal {
    rule: String,
    reason: String,
}

impl Refusal {
    fn expired(expiry: Duration) -> Refusal {
        Refusal {
            rule: "expired".into(),
            reason: format!(
                "the source was not debited within {} ms of the request",
                expiry.as_millis()
            ),
        }
    }

    /// The refusal an account command's failure means, or the saga's
    /// error when it is no refusal (the store failing, say).
    fn of(error: CommandError<AccountError>, account: Uuid) -> Result<Refusal, SagaError> {
        match error {
            CommandError::Rejected(rule) => Ok(Refusal::by(&rule)),
            CommandError::NotFound { .. } => Ok(Refusal::by(&AccountError::NotOpen(account))),
            // An earlier run decided the step must not happen, and was on
            // its way to say so.
            CommandError::Fenced { reason, .. } => Ok(Refusal::from_fence(&reason)),
            other => Err(SagaError::from_command(other)),
        }
    }

    fn by(error: &AccountError) -> Refusal {
        Refusal {
            rule: error.rule().to_owned(),
            reason: error.to_string(),
        }
    }

    fn from_fence(text: &str) -> Refusal {
        match text.split_once(": ") {
            Some((rule, reason)) => Refusal {
                rule: rule.to_owned(),
                reason: reason.to_owned(),
            },
            None => Refusal {
                rule: "abandoned".into(),
                reason: text.to_owned(),
            },
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.reason)
    }
}
