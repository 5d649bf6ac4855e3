//! A transfer: an amount to move from one account to another, and how far
//! it got.
//!
//! ```text
//! Requested ──▶ Debited ──▶ Credited ──▶ Completed
//!     │            │
//!     └────────────┴──────▶ Failed (with the rule that refused it; after
//!                                   the debit, once it was returned)
//! ```
//!
//! The transfer cannot see the accounts (each is a consistency boundary of
//! its own): it records what the transfer saga found out, and refuses any
//! step out of order.

use command_api::{
    Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent, decode_data,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::Money;

/// The prefix of transfer streams: `transfer-<uuid>`.
pub const STREAM_TYPE: &str = "transfer";

/// The event types of transfers.
pub const EVENT_TYPES: [&str; 5] = [
    "TransferRequested",
    "TransferDebited",
    "TransferCredited",
    "TransferCompleted",
    "TransferFailed",
];

/// Where a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    /// Waiting for the source account's debit.
    Requested,
    /// Taken from the source, waiting for the target's credit.
    Debited,
    /// Arrived at the target, waiting for the source to settle it.
    Credited,
    Completed,
    Failed,
}

/// What can be asked of a transfer. Only `Request` comes from a client;
/// the saga records the other steps as it takes them.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferCommand {
    Request {
        transfer_id: Uuid,
        from_account: Uuid,
        to_account: Uuid,
        amount: Money,
    },
    RecordDebit {
        transfer_id: Uuid,
    },
    RecordCredit {
        transfer_id: Uuid,
    },
    Complete {
        transfer_id: Uuid,
    },
    /// The transfer cannot happen: `rule` is the rule that refused it (an
    /// account's, or `expired`), `reason` says why in words.
    Fail {
        transfer_id: Uuid,
        rule: String,
        reason: String,
    },
}

impl AggregateCommand for TransferCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            TransferCommand::Request { transfer_id, .. }
            | TransferCommand::RecordDebit { transfer_id }
            | TransferCommand::RecordCredit { transfer_id }
            | TransferCommand::Complete { transfer_id }
            | TransferCommand::Fail { transfer_id, .. } => *transfer_id,
        }
    }

    fn creates_aggregate(&self) -> bool {
        matches!(self, TransferCommand::Request { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            TransferCommand::Request { .. } => "RequestTransfer",
            TransferCommand::RecordDebit { .. } => "RecordDebit",
            TransferCommand::RecordCredit { .. } => "RecordCredit",
            TransferCommand::Complete { .. } => "CompleteTransfer",
            TransferCommand::Fail { .. } => "FailTransfer",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferRequested {
    pub transfer_id: Uuid,
    pub from_account: Uuid,
    pub to_account: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferDebited {
    pub transfer_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferCredited {
    pub transfer_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferCompleted {
    pub transfer_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferFailed {
    pub transfer_id: Uuid,
    /// The rule that refused the transfer (`insufficient-funds`,
    /// `account-closed`, `currency-mismatch`, `expired`, ...).
    pub rule: String,
    pub reason: String,
    /// Whether the source had been debited, and so got the amount back.
    pub debit_returned: bool,
}

/// What happened to a transfer.
#[derive(Debug, Clone, PartialEq)]
pub enum TransferEvent {
    Requested(TransferRequested),
    Debited(TransferDebited),
    Credited(TransferCredited),
    Completed(TransferCompleted),
    Failed(TransferFailed),
}

impl DomainEvent for TransferEvent {
    fn event_type(&self) -> &'static str {
        match self {
            TransferEvent::Requested(_) => "TransferRequested",
            TransferEvent::Debited(_) => "TransferDebited",
            TransferEvent::Credited(_) => "TransferCredited",
            TransferEvent::Completed(_) => "TransferCompleted",
            TransferEvent::Failed(_) => "TransferFailed",
        }
    }

    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            TransferEvent::Requested(e) => serde_json::to_vec(e),
            TransferEvent::Debited(e) => serde_json::to_vec(e),
            TransferEvent::Credited(e) => serde_json::to_vec(e),
            TransferEvent::Completed(e) => serde_json::to_vec(e),
            TransferEvent::Failed(e) => serde_json::to_vec(e),
        }
    }

    fn decode(event_type: &str, schema: u32, data: &[u8]) -> Result<Self, DecodeError> {
        let t = event_type;
        Ok(match event_type {
            "TransferRequested" => TransferEvent::Requested(decode_data(t, schema, data)?),
            "TransferDebited" => TransferEvent::Debited(decode_data(t, schema, data)?),
            "TransferCredited" => TransferEvent::Credited(decode_data(t, schema, data)?),
            "TransferCompleted" => TransferEvent::Completed(decode_data(t, schema, data)?),
            "TransferFailed" => TransferEvent::Failed(decode_data(t, schema, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// Declares the transfer events' current versions (all still at 1).
pub(crate) fn upcasters(upcasters: event_store::Upcasters) -> event_store::Upcasters {
    EVENT_TYPES.iter().fold(upcasters, |upcasters, event_type| {
        upcasters.current(*event_type, 1)
    })
}

/// The rules a transfer command can break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error("transfer {0} was already requested")]
    AlreadyRequested(Uuid),
    #[error("transfer {0} was never requested")]
    NotRequested(Uuid),
    #[error("a transfer goes between two different accounts")]
    SameAccount,
    #[error("an amount must be greater than zero")]
    AmountNotPositive,
    #[error("a transfer that is {status:?} cannot take {command}")]
    InvalidTransition {
        status: TransferStatus,
        command: &'static str,
    },
}

impl DomainError for TransferError {
    fn rule(&self) -> &'static str {
        match self {
            TransferError::AlreadyRequested(_) => "transfer-already-requested",
            TransferError::NotRequested(_) => "transfer-not-requested",
            TransferError::SameAccount => "same-account",
            TransferError::AmountNotPositive => "amount-not-positive",
            TransferError::InvalidTransition { .. } => "invalid-transition",
        }
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut details = serde_json::Map::new();
        if let TransferError::InvalidTransition { status, command } = self {
            details.insert("status".into(), serde_json::json!(status));
            details.insert("command".into(), (*command).into());
        }
        details
    }
}

/// A transfer as its commands need it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    requested: Option<Requested>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Requested {
    from_account: Uuid,
    to_account: Uuid,
    amount: Money,
    status: TransferStatus,
    /// Set once failed.
    failure: Option<Failure>,
}

/// Why a transfer failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub rule: String,
    pub reason: String,
    pub debit_returned: bool,
}

impl Transfer {
    pub fn status(&self) -> Option<TransferStatus> {
        self.requested.as_ref().map(|r| r.status)
    }

    pub fn from_account(&self) -> Option<Uuid> {
        self.requested.as_ref().map(|r| r.from_account)
    }

    pub fn to_account(&self) -> Option<Uuid> {
        self.requested.as_ref().map(|r| r.to_account)
    }

    pub fn amount(&self) -> Option<Money> {
        self.requested.as_ref().map(|r| r.amount)
    }

    pub fn failure(&self) -> Option<&Failure> {
        self.requested.as_ref()?.failure.as_ref()
    }

    /// Completed or failed: nothing will happen to it any more.
    pub fn is_finished(&self) -> bool {
        matches!(
            self.status(),
            Some(TransferStatus::Completed | TransferStatus::Failed)
        )
    }
}

impl Aggregate for Transfer {
    const TYPE: &'static str = STREAM_TYPE;
    const SNAPSHOT_SCHEMA: u32 = 1;

    type Command = TransferCommand;
    type Event = TransferEvent;
    type Error = TransferError;

    fn handle(&self, command: &TransferCommand) -> Result<Vec<TransferEvent>, TransferError> {
        let transfer_id = command.aggregate_id();
        if let TransferCommand::Request {
            from_account,
            to_account,
            amount,
            ..
        } = command
        {
            if self.requested.is_some() {
                return Err(TransferError::AlreadyRequested(transfer_id));
            }
            if from_account == to_account {
                return Err(TransferError::SameAccount);
            }
            if amount.amount.is_zero() {
                return Err(TransferError::AmountNotPositive);
            }
            return Ok(vec![TransferEvent::Requested(TransferRequested {
                transfer_id,
                from_account: *from_account,
                to_account: *to_account,
                amount: *amount,
            })]);
        }
        let status = self
            .status()
            .ok_or(TransferError::NotRequested(transfer_id))?;
        let from = |allowed: &[TransferStatus]| {
            if allowed.contains(&status) {
                Ok(())
            } else {
                Err(TransferError::InvalidTransition {
                    status,
                    command: command.name(),
                })
            }
        };
        use TransferStatus as S;
        let event = match command {
            TransferCommand::Request { .. } => {
                return Err(TransferError::AlreadyRequested(transfer_id));
            }
            TransferCommand::RecordDebit { .. } => {
                from(&[S::Requested])?;
                TransferEvent::Debited(TransferDebited { transfer_id })
            }
            TransferCommand::RecordCredit { .. } => {
                from(&[S::Debited])?;
                TransferEvent::Credited(TransferCredited { transfer_id })
            }
            TransferCommand::Complete { .. } => {
                from(&[S::Credited])?;
                TransferEvent::Completed(TransferCompleted { transfer_id })
            }
            TransferCommand::Fail { rule, reason, .. } => {
                // Once credited, the money arrived: nothing can fail it.
                from(&[S::Requested, S::Debited])?;
                TransferEvent::Failed(TransferFailed {
                    transfer_id,
                    rule: rule.clone(),
                    reason: reason.clone(),
                    debit_returned: status == S::Debited,
                })
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &TransferEvent) {
        if let TransferEvent::Requested(requested) = event {
            self.requested = Some(Requested {
                from_account: requested.from_account,
                to_account: requested.to_account,
                amount: requested.amount,
                status: TransferStatus::Requested,
                failure: None,
            });
            return;
        }
        let Some(requested) = self.requested.as_mut() else {
            return;
        };
        requested.status = match event {
            TransferEvent::Requested(_) => TransferStatus::Requested,
            TransferEvent::Debited(_) => TransferStatus::Debited,
            TransferEvent::Credited(_) => TransferStatus::Credited,
            TransferEvent::Completed(_) => TransferStatus::Completed,
            TransferEvent::Failed(failed) => {
                requested.failure = Some(Failure {
                    rule: failed.rule.clone(),
                    reason: failed.reason.clone(),
                    debit_returned: failed.debit_returned,
                });
                TransferStatus::Failed
            }
        };
    }
}
