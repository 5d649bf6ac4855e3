//! The account's rules, given/when/then: opening, deposits and
//! withdrawals down to the overdraft limit (both sides of each bound), the
//! debit, credit, return and settlement of transfers, and closing only at
//! zero with nothing in flight, and forgetting the holder.

use annals_bank::account::{
    AccountClosed, AccountCommand, AccountError, AccountEvent, AccountOpened, HolderForgotten,
    HolderName, HolderNameError, MoneyDeposited, MoneyWithdrawn, TransferReceived,
    TransferReturned, TransferSent, TransferSettled,
};
use annals_bank::money::{AMOUNT_MAX, BALANCE_MAX};
use annals_bank::{Account, Amount, Currency};
use command_api::testkit::given;
use uuid::Uuid;

use crate::world::{eur, money};

const A: Uuid = Uuid::from_u128(0xa);
const T1: Uuid = Uuid::from_u128(0x71);
const T2: Uuid = Uuid::from_u128(0x72);

fn holder() -> HolderName {
    HolderName::parse("Grace Hopper").unwrap()
}

/// An account in euros that may go down to `-overdraft`.
fn opened(overdraft: i64) -> AccountEvent {
    AccountEvent::Opened(AccountOpened {
        account_id: A,
        holder: holder(),
        currency: Currency::Eur,
        overdraft_limit: Amount::new(overdraft).unwrap(),
    })
}

fn deposited(amount: i64) -> AccountEvent {
    AccountEvent::Deposited(MoneyDeposited {
        account_id: A,
        amount: eur(amount),
    })
}

fn sent(transfer_id: Uuid, amount: i64) -> AccountEvent {
    AccountEvent::TransferSent(TransferSent {
        account_id: A,
        transfer_id,
        amount: eur(amount),
    })
}

fn closed() -> AccountEvent {
    AccountEvent::Closed(AccountClosed { account_id: A })
}

fn withdraw(amount: i64) -> AccountCommand {
    AccountCommand::Withdraw {
        account_id: A,
        amount: eur(amount),
    }
}

fn deposit(amount: i64) -> AccountCommand {
    AccountCommand::Deposit {
        account_id: A,
        amount: eur(amount),
    }
}

fn send(transfer_id: Uuid, amount: i64) -> AccountCommand {
    AccountCommand::SendTransfer {
        account_id: A,
        transfer_id,
        amount: eur(amount),
    }
}

#[test]
fn an_account_opens_once_with_its_holder_currency_and_overdraft() {
    let open = || AccountCommand::Open {
        account_id: A,
        holder: holder(),
        currency: Currency::Eur,
        overdraft_limit: Amount::new(5_000).unwrap(),
    };
    given::<Account>([])
        .when(open())
        .then_events([opened(5_000)]);
    given::<Account>([opened(0)])
        .when(open())
        .then_error(AccountError::AlreadyOpen(A));

    let state = given::<Account>([opened(5_000)]);
    let state = state.state();
    assert!(state.is_open() && !state.is_closed());
    assert_eq!(state.currency(), Some(Currency::Eur));
    assert_eq!(state.balance(), Some(0));
    assert_eq!(state.overdraft_limit(), Some(Amount::new(5_000).unwrap()));
}

#[test]
fn an_account_never_opened_takes_no_command() {
    given::<Account>([])
        .when(deposit(1))
        .then_error(AccountError::NotOpen(A));
}

#[test]
fn withdrawals_go_down_to_the_overdraft_limit_and_no_further() {
    let history = [opened(500), deposited(1_000)];
    given::<Account>(history.clone())
        .when(withdraw(1_500))
        .then_events([AccountEvent::Withdrawn(MoneyWithdrawn {
            account_id: A,
            amount: eur(1_500),
        })]);
    given::<Account>(history.clone())
        .when(withdraw(1_501))
        .then_error(AccountError::InsufficientFunds {
            requested: eur(1_501),
            balance: 1_000,
            overdraft_limit: eur(500),
        });
    // Without an overdraft, down to zero.
    given::<Account>([opened(0), deposited(1_000)])
        .when(withdraw(1_001))
        .then_rule("insufficient-funds");
    given::<Account>([opened(0), deposited(1_000)])
        .when(withdraw(1_000))
        .then_events([AccountEvent::Withdrawn(MoneyWithdrawn {
            account_id: A,
            amount: eur(1_000),
        })]);
}

#[test]
fn amounts_must_be_positive_and_in_the_accounts_currency() {
    let history = [opened(0), deposited(1_000)];
    for command in [deposit(0), withdraw(0), send(T1, 0)] {
        given::<Account>(history.clone())
            .when(command)
            .then_rule("amount-not-positive");
    }
    given::<Account>(history)
        .when(AccountCommand::Deposit {
            account_id: A,
            amount: money(10, Currency::Usd),
        })
        .then_error(AccountError::CurrencyMismatch {
            account: Currency::Eur,
            given: Currency::Usd,
        });
}

#[test]
fn deposits_stop_at_the_largest_balance() {
    // Ten below the largest balance, in deposits of at most the largest
    // amount.
    let full = (BALANCE_MAX / AMOUNT_MAX - 1) as usize;
    let near: Vec<AccountEvent> = [opened(0)]
        .into_iter()
        .chain(std::iter::repeat_n(deposited(AMOUNT_MAX), full))
        .chain([deposited(AMOUNT_MAX - 10)])
        .collect();
    given::<Account>(near.clone())
        .when(deposit(10))
        .then_events([deposited(10)]);
    given::<Account>(near.clone())
        .when(deposit(11))
        .then_rule("balance-limit-exceeded");
    given::<Account>(near)
        .when(AccountCommand::ReceiveTransfer {
            account_id: A,
            transfer_id: T1,
            amount: eur(11),
        })
        .then_rule("balance-limit-exceeded");
}

#[test]
fn a_transfer_sent_leaves_the_balance_and_stays_in_flight_until_settled_or_returned() {
    let history = [opened(100), deposited(1_000)];
    given::<Account>(history.clone())
        .when(send(T1, 1_100))
        .then_events([sent(T1, 1_100)]);
    given::<Account>(history.clone())
        .when(send(T1, 1_101))
        .then_rule("insufficient-funds");

    let sending = [opened(100), deposited(1_000), sent(T1, 600)];
    let state = given::<Account>(sending.clone());
    assert_eq!(state.state().balance(), Some(400));
    assert_eq!(state.state().in_flight(T1), Some(Amount::new(600).unwrap()));
    assert_eq!(state.state().transfers_in_flight(), 1);
    // The same transfer is sent once; the overdraft rule counts what left.
    given::<Account>(sending.clone())
        .when(send(T1, 1))
        .then_error(AccountError::AlreadySent(T1));
    given::<Account>(sending.clone())
        .when(send(T2, 501))
        .then_rule("insufficient-funds");

    let give_back = |transfer_id| AccountCommand::ReturnTransfer {
        account_id: A,
        transfer_id,
    };
    let settle = |transfer_id| AccountCommand::SettleTransfer {
        account_id: A,
        transfer_id,
    };
    let returned = AccountEvent::TransferReturned(TransferReturned {
        account_id: A,
        transfer_id: T1,
        amount: eur(600),
    });
    let settled = AccountEvent::TransferSettled(TransferSettled {
        account_id: A,
        transfer_id: T1,
    });
    given::<Account>(sending.clone())
        .when(give_back(T1))
        .then_events([returned.clone()]);
    given::<Account>(sending.clone())
        .when(settle(T1))
        .then_events([settled.clone()]);
    for command in [give_back(T2), settle(T2)] {
        given::<Account>(sending.clone())
            .when(command)
            .then_error(AccountError::NotInFlight(T2));
    }

    let after_return =
        given::<Account>([sending.as_slice(), std::slice::from_ref(&returned)].concat());
    assert_eq!(after_return.state().balance(), Some(1_000));
    assert_eq!(after_return.state().transfers_in_flight(), 0);
    let after_settle =
        given::<Account>([sending.as_slice(), std::slice::from_ref(&settled)].concat());
    assert_eq!(after_settle.state().balance(), Some(400));
    assert_eq!(after_settle.state().in_flight(T1), None);
    // Once settled or returned, nothing more comes back.
    for history in [
        [sending.as_slice(), &[returned]].concat(),
        [sending.as_slice(), &[settled]].concat(),
    ] {
        given::<Account>(history.clone())
            .when(give_back(T1))
            .then_rule("transfer-not-in-flight");
        given::<Account>(history)
            .when(settle(T1))
            .then_rule("transfer-not-in-flight");
    }
}

#[test]
fn a_transfer_received_adds_to_the_balance() {
    given::<Account>([opened(0)])
        .when(AccountCommand::ReceiveTransfer {
            account_id: A,
            transfer_id: T1,
            amount: eur(250),
        })
        .then_events([AccountEvent::TransferReceived(TransferReceived {
            account_id: A,
            transfer_id: T1,
            amount: eur(250),
        })]);
}

#[test]
fn an_account_closes_only_at_zero_with_nothing_in_flight_and_then_takes_nothing() {
    let close = || AccountCommand::Close { account_id: A };
    given::<Account>([opened(0)])
        .when(close())
        .then_events([closed()]);
    given::<Account>([opened(0), deposited(1)])
        .when(close())
        .then_error(AccountError::BalanceNotZero {
            balance: 1,
            currency: Currency::Eur,
        });
    given::<Account>([opened(100), deposited(1), sent(T2, 101)])
        .when(close())
        .then_rule("transfers-in-flight");
    // At zero, but a transfer sent from it may still come back.
    given::<Account>([opened(0), deposited(50), sent(T1, 50)])
        .when(close())
        .then_error(AccountError::TransfersInFlight(1));

    let gone = [opened(0), closed()];
    assert!(given::<Account>(gone.clone()).state().is_closed());
    for command in [
        deposit(1),
        withdraw(1),
        send(T1, 1),
        AccountCommand::ReceiveTransfer {
            account_id: A,
            transfer_id: T1,
            amount: eur(1),
        },
        close(),
    ] {
        given::<Account>(gone.clone())
            .when(command)
            .then_error(AccountError::Closed(A));
    }
}

#[test]
fn holder_names_need_a_visible_character_and_stay_out_of_logs() {
    assert_eq!(HolderName::parse(""), Err(HolderNameError::Blank));
    assert_eq!(HolderName::parse(" \u{3000} "), Err(HolderNameError::Blank));
    assert_eq!(
        HolderName::parse("Ada\nLovelace"),
        Err(HolderNameError::ControlCharacter)
    );
    let longest = "é".repeat(HolderName::CHARS_MAX);
    assert_eq!(HolderName::parse(&longest).unwrap().as_str(), longest);
    assert_eq!(
        HolderName::parse(&format!("{longest}e")),
        Err(HolderNameError::TooLong(HolderName::CHARS_MAX + 1))
    );
    let name = HolderName::parse("Ada Lovelace").unwrap();
    assert!(!format!("{:?}", opened(0)).contains("Grace"));
    assert!(!format!("{name:?}").contains("Ada"));
    assert!(!name.is_erased());
}

#[test]
fn a_holder_is_forgotten_once_open_or_closed_and_the_account_goes_on() {
    let forget = || AccountCommand::ForgetHolder { account_id: A };
    let forgotten = || AccountEvent::HolderForgotten(HolderForgotten { account_id: A });
    given::<Account>([])
        .when(forget())
        .then_rule("account-not-open");
    given::<Account>([opened(0)])
        .when(forget())
        .then_events([forgotten()]);
    given::<Account>([opened(0), closed()])
        .when(forget())
        .then_events([forgotten()]);
    // Again: accepted, nothing new, so a retry can finish the erasure.
    let history = [opened(0), deposited(10), forgotten()];
    assert!(
        given::<Account>(history.clone())
            .state()
            .is_holder_forgotten()
    );
    given::<Account>(history.clone())
        .when(forget())
        .then_events([]);
    given::<Account>([opened(0), closed(), forgotten()])
        .when(forget())
        .then_events([]);
    // No rule needs the name: money still moves.
    given::<Account>(history)
        .when(withdraw(10))
        .then_events([AccountEvent::Withdrawn(MoneyWithdrawn {
            account_id: A,
            amount: eur(10),
        })]);
}
