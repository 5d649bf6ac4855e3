//! An account: a balance in one currency that may go below zero down to
//! its overdraft limit, and the transfers sent from it whose outcome is
//! not known yet.
//!
//! A transfer touches an account in steps the transfer saga issues: the
//! source is debited ([`AccountCommand::SendTransfer`]) and the amount is
//! kept as in flight; the target is credited
//! ([`AccountCommand::ReceiveTransfer`]); then the source either settles
//! the transfer (it arrived) or takes the amount back
//! ([`AccountCommand::ReturnTransfer`]) when the target refused it. An
//! account with transfers in flight cannot close, so that money coming
//! back always finds it open.

use std::collections::BTreeMap;
use std::fmt;

use command_api::{
    Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent, decode_data,
    decode_data_at, upcast_value,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::money::{Amount, BALANCE_MAX, Balance, Currency, Money};

/// The prefix of account streams: `account-<uuid>`.
pub const STREAM_TYPE: &str = "account";

/// The event types of accounts.
pub const EVENT_TYPES: [&str; 9] = [
    "AccountOpened",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "TransferSent",
    "TransferReceived",
    "TransferReturned",
    "TransferSettled",
    "AccountClosed",
    "HolderForgotten",
];

/// The schema version this code writes and decodes `AccountOpened` at.
/// Version 1 named the holder `owner` and had neither currency (every
/// account was in euros) nor overdraft limit (none).
const OPENED_SCHEMA: u32 = 2;

/// The schema version of `event_type` as this code writes it.
fn schema_of(event_type: &str) -> u32 {
    if event_type == "AccountOpened" {
        OPENED_SCHEMA
    } else {
        1
    }
}

/// The name of an account's holder: personal data, encrypted in the log
/// and erased when the holder is forgotten. 1 to [`HolderName::CHARS_MAX`]
/// characters, at least one of them visible, no control characters.
///
/// Read back from events as stored, without these checks: a fact recorded
/// by older code (or [`event_store::ERASED`]) must still load.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HolderName(String);

/// Why a holder name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HolderNameError {
    #[error("a holder name needs at least one visible character")]
    Blank,
    #[error("a holder name has at most {max} characters (got {0})", max = HolderName::CHARS_MAX)]
    TooLong(usize),
    #[error("a holder name must not contain control characters")]
    ControlCharacter,
}

impl HolderName {
    pub const CHARS_MAX: usize = 200;

    pub fn parse(name: &str) -> Result<HolderName, HolderNameError> {
        let chars = name.chars().count();
        if chars > Self::CHARS_MAX {
            return Err(HolderNameError::TooLong(chars));
        }
        if name.chars().any(char::is_control) {
            return Err(HolderNameError::ControlCharacter);
        }
        if name.chars().all(char::is_whitespace) {
            return Err(HolderNameError::Blank);
        }
        Ok(HolderName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True once the holder was forgotten and the name reads as erased.
    pub fn is_erased(&self) -> bool {
        self.0 == event_store::ERASED
    }
}

/// Personal data stays out of logs and panic messages.
impl fmt::Debug for HolderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HolderName(..)")
    }
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountCommand {
    Open {
        account_id: Uuid,
        holder: HolderName,
        currency: Currency,
        /// How far below zero the balance may go.
        overdraft_limit: Amount,
    },
    Deposit {
        account_id: Uuid,
        amount: Money,
    },
    Withdraw {
        account_id: Uuid,
        amount: Money,
    },
    /// The debit of a transfer: the amount leaves the balance and stays
    /// in flight until the transfer settles or comes back.
    SendTransfer {
        account_id: Uuid,
        transfer_id: Uuid,
        amount: Money,
    },
    /// The credit of a transfer.
    ReceiveTransfer {
        account_id: Uuid,
        transfer_id: Uuid,
        amount: Money,
    },
    /// Compensation: a transfer sent from this account was refused by its
    /// target; its amount comes back.
    ReturnTransfer {
        account_id: Uuid,
        transfer_id: Uuid,
    },
    /// A transfer sent from this account arrived; nothing can come back.
    SettleTransfer {
        account_id: Uuid,
        transfer_id: Uuid,
    },
    Close {
        account_id: Uuid,
    },
    /// The holder asked to be forgotten: the views erase their copies of
    /// the name, and the store destroys the key that encrypts it (see
    /// [`crate::personal_data`]). Open or closed, the account takes it, and
    /// again without effect, so that a retry can finish an erasure cut
    /// short.
    ForgetHolder {
        account_id: Uuid,
    },
}

impl AggregateCommand for AccountCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            AccountCommand::Open { account_id, .. }
            | AccountCommand::Deposit { account_id, .. }
            | AccountCommand::Withdraw { account_id, .. }
            | AccountCommand::SendTransfer { account_id, .. }
            | AccountCommand::ReceiveTransfer { account_id, .. }
            | AccountCommand::ReturnTransfer { account_id, .. }
            | AccountCommand::SettleTransfer { account_id, .. }
            | AccountCommand::Close { account_id }
            | AccountCommand::ForgetHolder { account_id } => *account_id,
        }
    }

    fn creates_aggregate(&self) -> bool {
        matches!(self, AccountCommand::Open { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            AccountCommand::Open { .. } => "OpenAccount",
            AccountCommand::Deposit { .. } => "Deposit",
            AccountCommand::Withdraw { .. } => "Withdraw",
            AccountCommand::SendTransfer { .. } => "SendTransfer",
            AccountCommand::ReceiveTransfer { .. } => "ReceiveTransfer",
            AccountCommand::ReturnTransfer { .. } => "ReturnTransfer",
            AccountCommand::SettleTransfer { .. } => "SettleTransfer",
            AccountCommand::Close { .. } => "CloseAccount",
            AccountCommand::ForgetHolder { .. } => "ForgetHolder",
        }
    }
}

/// `AccountOpened`, schema version 2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account_id: Uuid,
    pub holder: HolderName,
    pub currency: Currency,
    pub overdraft_limit: Amount,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyDeposited {
    pub account_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoneyWithdrawn {
    pub account_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSent {
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReceived {
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferReturned {
    pub account_id: Uuid,
    pub transfer_id: Uuid,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TransferSettled {
    pub account_id: Uuid,
    pub transfer_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountClosed {
    pub account_id: Uuid,
}

/// The holder's name is erased: views replace their copies with
/// [`event_store::ERASED`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HolderForgotten {
    pub account_id: Uuid,
}

/// What happened to an account.
#[derive(Debug, Clone, PartialEq)]
pub enum AccountEvent {
    Opened(AccountOpened),
    Deposited(MoneyDeposited),
    Withdrawn(MoneyWithdrawn),
    TransferSent(TransferSent),
    TransferReceived(TransferReceived),
    TransferReturned(TransferReturned),
    TransferSettled(TransferSettled),
    Closed(AccountClosed),
    HolderForgotten(HolderForgotten),
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::Opened(_) => "AccountOpened",
            AccountEvent::Deposited(_) => "MoneyDeposited",
            AccountEvent::Withdrawn(_) => "MoneyWithdrawn",
            AccountEvent::TransferSent(_) => "TransferSent",
            AccountEvent::TransferReceived(_) => "TransferReceived",
            AccountEvent::TransferReturned(_) => "TransferReturned",
            AccountEvent::TransferSettled(_) => "TransferSettled",
            AccountEvent::Closed(_) => "AccountClosed",
            AccountEvent::HolderForgotten(_) => "HolderForgotten",
        }
    }

    fn schema_version(&self) -> u32 {
        schema_of(self.event_type())
    }

    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            AccountEvent::Opened(e) => serde_json::to_vec(e),
            AccountEvent::Deposited(e) => serde_json::to_vec(e),
            AccountEvent::Withdrawn(e) => serde_json::to_vec(e),
            AccountEvent::TransferSent(e) => serde_json::to_vec(e),
            AccountEvent::TransferReceived(e) => serde_json::to_vec(e),
            AccountEvent::TransferReturned(e) => serde_json::to_vec(e),
            AccountEvent::TransferSettled(e) => serde_json::to_vec(e),
            AccountEvent::Closed(e) => serde_json::to_vec(e),
            AccountEvent::HolderForgotten(e) => serde_json::to_vec(e),
        }
    }

    fn decode(event_type: &str, schema: u32, data: &[u8]) -> Result<Self, DecodeError> {
        let t = event_type;
        Ok(match event_type {
            "AccountOpened" => {
                AccountEvent::Opened(decode_data_at(OPENED_SCHEMA, t, schema, data)?)
            }
            "MoneyDeposited" => AccountEvent::Deposited(decode_data(t, schema, data)?),
            "MoneyWithdrawn" => AccountEvent::Withdrawn(decode_data(t, schema, data)?),
            "TransferSent" => AccountEvent::TransferSent(decode_data(t, schema, data)?),
            "TransferReceived" => AccountEvent::TransferReceived(decode_data(t, schema, data)?),
            "TransferReturned" => AccountEvent::TransferReturned(decode_data(t, schema, data)?),
            "TransferSettled" => AccountEvent::TransferSettled(decode_data(t, schema, data)?),
            "AccountClosed" => AccountEvent::Closed(decode_data(t, schema, data)?),
            "HolderForgotten" => AccountEvent::HolderForgotten(decode_data(t, schema, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }

    /// Only `AccountOpened` has older versions; its typed step ends in
    /// [`AccountOpened`].
    fn from_upcast(event_type: &str, value: event_store::UpcastValue) -> Result<Self, DecodeError> {
        match event_type {
            "AccountOpened" => Ok(AccountEvent::Opened(upcast_value(event_type, value)?)),
            other => Err(DecodeError::UnknownType(other.to_owned())),
        }
    }
}

/// `AccountOpened` at version 1.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountOpenedV1 {
    account_id: Uuid,
    owner: HolderName,
}

/// Declares the account events' current versions on `upcasters`, with the
/// step that reads `AccountOpened` version 1 as the current event: the
/// owner is the holder, the account is in euros, without overdraft.
pub(crate) fn upcasters(upcasters: event_store::Upcasters) -> event_store::Upcasters {
    EVENT_TYPES
        .iter()
        .fold(upcasters, |upcasters, event_type| {
            upcasters.current(*event_type, schema_of(event_type))
        })
        .step_typed("AccountOpened", 1, |v1: AccountOpenedV1| {
            Ok::<_, String>(AccountOpened {
                account_id: v1.account_id,
                holder: v1.owner,
                currency: Currency::Eur,
                overdraft_limit: Amount::ZERO,
            })
        })
}

/// The rules an account command can break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    #[error("account {0} is already open")]
    AlreadyOpen(Uuid),
    #[error("account {0} was never opened")]
    NotOpen(Uuid),
    #[error("account {0} is closed")]
    Closed(Uuid),
    #[error("the account is in {account}; {given} was given")]
    CurrencyMismatch { account: Currency, given: Currency },
    #[error("an amount must be greater than zero")]
    AmountNotPositive,
    #[error(
        "taking {requested} from a balance of {} would go past the overdraft limit of \
         {overdraft_limit}",
        Balance(*.balance, .requested.currency)
    )]
    InsufficientFunds {
        requested: Money,
        balance: i64,
        overdraft_limit: Money,
    },
    #[error(
        "adding {requested} to a balance of {} would go over the largest balance an account holds",
        Balance(*.balance, .requested.currency)
    )]
    BalanceLimitExceeded { requested: Money, balance: i64 },
    #[error("transfer {0} was already sent from this account")]
    AlreadySent(Uuid),
    #[error("transfer {0} is not in flight from this account")]
    NotInFlight(Uuid),
    #[error("only an account at zero closes; the balance is {}", Balance(*.balance, *.currency))]
    BalanceNotZero { balance: i64, currency: Currency },
    #[error("{0} transfers sent from the account are still in flight")]
    TransfersInFlight(usize),
}

impl DomainError for AccountError {
    fn rule(&self) -> &'static str {
        match self {
            AccountError::AlreadyOpen(_) => "account-already-open",
            AccountError::NotOpen(_) => "account-not-open",
            AccountError::Closed(_) => "account-closed",
            AccountError::CurrencyMismatch { .. } => "currency-mismatch",
            AccountError::AmountNotPositive => "amount-not-positive",
            AccountError::InsufficientFunds { .. } => "insufficient-funds",
            AccountError::BalanceLimitExceeded { .. } => "balance-limit-exceeded",
            AccountError::AlreadySent(_) => "transfer-already-sent",
            AccountError::NotInFlight(_) => "transfer-not-in-flight",
            AccountError::BalanceNotZero { .. } => "balance-not-zero",
            AccountError::TransfersInFlight(_) => "transfers-in-flight",
        }
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut details = serde_json::Map::new();
        let mut put = |name: &str, value: serde_json::Value| {
            details.insert(name.to_owned(), value);
        };
        match self {
            AccountError::CurrencyMismatch { account, given } => {
                put("account_currency", account.code().into());
                put("given_currency", given.code().into());
            }
            AccountError::InsufficientFunds {
                requested,
                balance,
                overdraft_limit,
            } => {
                put("requested", money_json(*requested));
                put("balance", (*balance).into());
                put("overdraft_limit", money_json(*overdraft_limit));
            }
            AccountError::BalanceLimitExceeded { requested, balance } => {
                put("requested", money_json(*requested));
                put("balance", (*balance).into());
            }
            AccountError::BalanceNotZero { balance, currency } => {
                put("balance", (*balance).into());
                put("currency", currency.code().into());
            }
            AccountError::AlreadySent(transfer) | AccountError::NotInFlight(transfer) => {
                put("transfer_id", transfer.to_string().into());
            }
            AccountError::TransfersInFlight(count) => put("transfers_in_flight", (*count).into()),
            AccountError::AlreadyOpen(_)
            | AccountError::NotOpen(_)
            | AccountError::Closed(_)
            | AccountError::AmountNotPositive => {}
        }
        details
    }
}

fn money_json(money: Money) -> serde_json::Value {
    serde_json::json!({"amount": money.minor_units(), "currency": money.currency.code()})
}

/// An account as its commands need it. The holder's name is not kept:
/// no rule needs it, and so snapshots hold no personal data.
///
/// Unknown fields are refused so that a snapshot of another shape fails to
/// decode (and is ignored) instead of reading as an account never opened.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    ledger: Option<Ledger>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ledger {
    account_id: Uuid,
    currency: Currency,
    overdraft_limit: Amount,
    /// Minor units; never below `-overdraft_limit`.
    balance: i64,
    /// Transfers sent and neither settled nor returned, by transfer. Sorted
    /// so that snapshots of equal states are equal bytes.
    in_flight: BTreeMap<Uuid, Amount>,
    closed: bool,
    /// Snapshots taken before erasure existed lack it: none was forgotten.
    #[serde(default)]
    holder_forgotten: bool,
}

impl Account {
    pub fn is_open(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| !l.closed)
    }

    pub fn is_closed(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| l.closed)
    }

    /// Whether the holder was forgotten (their name erased).
    pub fn is_holder_forgotten(&self) -> bool {
        self.ledger.as_ref().is_some_and(|l| l.holder_forgotten)
    }

    pub fn currency(&self) -> Option<Currency> {
        self.ledger.as_ref().map(|l| l.currency)
    }

    /// The balance in minor units (negative while overdrawn).
    pub fn balance(&self) -> Option<i64> {
        self.ledger.as_ref().map(|l| l.balance)
    }

    pub fn overdraft_limit(&self) -> Option<Amount> {
        self.ledger.as_ref().map(|l| l.overdraft_limit)
    }

    /// What transfer `transfer_id` took from this account, while it is in
    /// flight.
    pub fn in_flight(&self, transfer_id: Uuid) -> Option<Amount> {
        self.ledger.as_ref()?.in_flight.get(&transfer_id).copied()
    }

    /// How many transfers sent from this account are in flight.
    pub fn transfers_in_flight(&self) -> usize {
        self.ledger.as_ref().map_or(0, |l| l.in_flight.len())
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = STREAM_TYPE;
    const SNAPSHOT_SCHEMA: u32 = 1;

    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, command: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let account_id = command.aggregate_id();
        if let AccountCommand::Open {
            holder,
            currency,
            overdraft_limit,
            ..
        } = command
        {
            if self.ledger.is_some() {
                return Err(AccountError::AlreadyOpen(account_id));
            }
            return Ok(vec![AccountEvent::Opened(AccountOpened {
                account_id,
                holder: holder.clone(),
                currency: *currency,
                overdraft_limit: *overdraft_limit,
            })]);
        }
        let ledger = self
            .ledger
            .as_ref()
            .ok_or(AccountError::NotOpen(account_id))?;
        if let AccountCommand::ForgetHolder { .. } = command {
            // A closed account's holder has the same right; and asking
            // again succeeds without a new event.
            if ledger.holder_forgotten {
                return Ok(Vec::new());
            }
            return Ok(vec![AccountEvent::HolderForgotten(HolderForgotten {
                account_id,
            })]);
        }
        if ledger.closed {
            return Err(AccountError::Closed(account_id));
        }
        let event = match *command {
            AccountCommand::Open { .. } => return Err(AccountError::AlreadyOpen(account_id)),
            AccountCommand::ForgetHolder { .. } => return Ok(Vec::new()),
            AccountCommand::Deposit { amount, .. } => {
                ledger.check_credit(amount)?;
                AccountEvent::Deposited(MoneyDeposited { account_id, amount })
            }
            AccountCommand::Withdraw { amount, .. } => {
                ledger.check_debit(amount)?;
                AccountEvent::Withdrawn(MoneyWithdrawn { account_id, amount })
            }
            AccountCommand::SendTransfer {
                transfer_id,
                amount,
                ..
            } => {
                if ledger.in_flight.contains_key(&transfer_id) {
                    return Err(AccountError::AlreadySent(transfer_id));
                }
                ledger.check_debit(amount)?;
                AccountEvent::TransferSent(TransferSent {
                    account_id,
                    transfer_id,
                    amount,
                })
            }
            AccountCommand::ReceiveTransfer {
                transfer_id,
                amount,
                ..
            } => {
                ledger.check_credit(amount)?;
                AccountEvent::TransferReceived(TransferReceived {
                    account_id,
                    transfer_id,
                    amount,
                })
            }
            AccountCommand::ReturnTransfer { transfer_id, .. } => {
                let amount = ledger.sent(transfer_id)?;
                // No limit refuses money coming back: it left this balance.
                // Only an `i64` overflow could, which the bounds on amounts
                // and balances keep out of reach of any real history.
                if ledger.balance.checked_add(amount.minor_units()).is_none() {
                    return Err(AccountError::BalanceLimitExceeded {
                        requested: ledger.money(amount),
                        balance: ledger.balance,
                    });
                }
                AccountEvent::TransferReturned(TransferReturned {
                    account_id,
                    transfer_id,
                    amount: ledger.money(amount),
                })
            }
            AccountCommand::SettleTransfer { transfer_id, .. } => {
                ledger.sent(transfer_id)?;
                AccountEvent::TransferSettled(TransferSettled {
                    account_id,
                    transfer_id,
                })
            }
            AccountCommand::Close { .. } => {
                if !ledger.in_flight.is_empty() {
                    return Err(AccountError::TransfersInFlight(ledger.in_flight.len()));
                }
                if ledger.balance != 0 {
                    return Err(AccountError::BalanceNotZero {
                        balance: ledger.balance,
                        currency: ledger.currency,
                    });
                }
                AccountEvent::Closed(AccountClosed { account_id })
            }
        };
        Ok(vec![event])
    }

    fn apply(&mut self, event: &AccountEvent) {
        if let AccountEvent::Opened(opened) = event {
            self.ledger = Some(Ledger {
                account_id: opened.account_id,
                currency: opened.currency,
                overdraft_limit: opened.overdraft_limit,
                balance: 0,
                in_flight: BTreeMap::new(),
                closed: false,
                holder_forgotten: false,
            });
            return;
        }
        // Events of an account that was never opened cannot have been
        // recorded by `handle`; there is nothing to fold them into.
        let Some(ledger) = self.ledger.as_mut() else {
            return;
        };
        // Saturating: `handle` keeps balances far from the `i64` limits,
        // and folding a recorded fact must never panic.
        match event {
            AccountEvent::Opened(_) => {}
            AccountEvent::Deposited(MoneyDeposited { amount, .. })
            | AccountEvent::TransferReceived(TransferReceived { amount, .. }) => {
                ledger.balance = ledger.balance.saturating_add(amount.minor_units());
            }
            AccountEvent::Withdrawn(MoneyWithdrawn { amount, .. }) => {
                ledger.balance = ledger.balance.saturating_sub(amount.minor_units());
            }
            AccountEvent::TransferSent(sent) => {
                ledger.balance = ledger.balance.saturating_sub(sent.amount.minor_units());
                ledger
                    .in_flight
                    .insert(sent.transfer_id, sent.amount.amount);
            }
            AccountEvent::TransferReturned(returned) => {
                ledger.balance = ledger.balance.saturating_add(returned.amount.minor_units());
                ledger.in_flight.remove(&returned.transfer_id);
            }
            AccountEvent::TransferSettled(settled) => {
                ledger.in_flight.remove(&settled.transfer_id);
            }
            AccountEvent::Closed(_) => ledger.closed = true,
            AccountEvent::HolderForgotten(_) => ledger.holder_forgotten = true,
        }
    }
}

impl Ledger {
    fn money(&self, amount: Amount) -> Money {
        Money {
            amount,
            currency: self.currency,
        }
    }

    fn check_amount(&self, amount: Money) -> Result<(), AccountError> {
        if amount.currency != self.currency {
            return Err(AccountError::CurrencyMismatch {
                account: self.currency,
                given: amount.currency,
            });
        }
        if amount.amount.is_zero() {
            return Err(AccountError::AmountNotPositive);
        }
        Ok(())
    }

    /// The overdraft rule: no debit takes the balance below
    /// `-overdraft_limit`.
    fn check_debit(&self, amount: Money) -> Result<(), AccountError> {
        self.check_amount(amount)?;
        if self.balance - amount.minor_units() < -self.overdraft_limit.minor_units() {
            return Err(AccountError::InsufficientFunds {
                requested: amount,
                balance: self.balance,
                overdraft_limit: self.money(self.overdraft_limit),
            });
        }
        Ok(())
    }

    fn check_credit(&self, amount: Money) -> Result<(), AccountError> {
        self.check_amount(amount)?;
        if self.balance > BALANCE_MAX - amount.minor_units() {
            return Err(AccountError::BalanceLimitExceeded {
                requested: amount,
                balance: self.balance,
            });
        }
        Ok(())
    }

    /// What transfer `transfer_id` took from this account, while in flight.
    fn sent(&self, transfer_id: Uuid) -> Result<Amount, AccountError> {
        self.in_flight
            .get(&transfer_id)
            .copied()
            .ok_or(AccountError::NotInFlight(transfer_id))
    }
}
