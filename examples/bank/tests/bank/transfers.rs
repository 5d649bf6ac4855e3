//! The transfer's rules, given/when/then: a request between two accounts,
//! then its steps strictly in order, and a failure that says whether the
//! debit was given back.

use annals_bank::Transfer;
use annals_bank::transfer::{
    TransferCommand, TransferCompleted, TransferCredited, TransferDebited, TransferError,
    TransferEvent, TransferFailed, TransferRequested, TransferStatus,
};
use command_api::testkit::given;
use uuid::Uuid;

use crate::world::eur;

const T: Uuid = Uuid::from_u128(0x7);
const FROM: Uuid = Uuid::from_u128(0xa);
const TO: Uuid = Uuid::from_u128(0xb);

fn requested() -> TransferEvent {
    TransferEvent::Requested(TransferRequested {
        transfer_id: T,
        from_account: FROM,
        to_account: TO,
        amount: eur(2_500),
    })
}

fn debited() -> TransferEvent {
    TransferEvent::Debited(TransferDebited { transfer_id: T })
}

fn credited() -> TransferEvent {
    TransferEvent::Credited(TransferCredited { transfer_id: T })
}

fn completed() -> TransferEvent {
    TransferEvent::Completed(TransferCompleted { transfer_id: T })
}

fn fail() -> TransferCommand {
    TransferCommand::Fail {
        transfer_id: T,
        rule: "account-closed".into(),
        reason: "account b is closed".into(),
    }
}

fn failed(debit_returned: bool) -> TransferEvent {
    TransferEvent::Failed(TransferFailed {
        transfer_id: T,
        rule: "account-closed".into(),
        reason: "account b is closed".into(),
        debit_returned,
    })
}

fn request(from_account: Uuid, to_account: Uuid, amount: i64) -> TransferCommand {
    TransferCommand::Request {
        transfer_id: T,
        from_account,
        to_account,
        amount: eur(amount),
    }
}

#[test]
fn a_transfer_is_requested_once_between_two_accounts_for_an_amount() {
    given::<Transfer>([])
        .when(request(FROM, TO, 2_500))
        .then_events([requested()]);
    given::<Transfer>([])
        .when(request(FROM, FROM, 2_500))
        .then_error(TransferError::SameAccount);
    given::<Transfer>([])
        .when(request(FROM, TO, 0))
        .then_rule("amount-not-positive");
    given::<Transfer>([requested()])
        .when(request(FROM, TO, 2_500))
        .then_error(TransferError::AlreadyRequested(T));
    given::<Transfer>([])
        .when(TransferCommand::RecordDebit { transfer_id: T })
        .then_error(TransferError::NotRequested(T));

    let state = given::<Transfer>([requested()]);
    let state = state.state();
    assert_eq!(state.status(), Some(TransferStatus::Requested));
    assert_eq!(
        (state.from_account(), state.to_account(), state.amount()),
        (Some(FROM), Some(TO), Some(eur(2_500)))
    );
    assert!(!state.is_finished());
}

#[test]
fn the_steps_go_debit_credit_complete_and_in_no_other_order() {
    let debit = || TransferCommand::RecordDebit { transfer_id: T };
    let credit = || TransferCommand::RecordCredit { transfer_id: T };
    let complete = || TransferCommand::Complete { transfer_id: T };
    given::<Transfer>([requested()])
        .when(debit())
        .then_events([debited()]);
    given::<Transfer>([requested(), debited()])
        .when(credit())
        .then_events([credited()]);
    given::<Transfer>([requested(), debited(), credited()])
        .when(complete())
        .then_events([completed()]);
    let done = given::<Transfer>([requested(), debited(), credited(), completed()]);
    assert_eq!(done.state().status(), Some(TransferStatus::Completed));
    assert!(done.state().is_finished());

    let invalid = |status, command| TransferError::InvalidTransition { status, command };
    given::<Transfer>([requested()])
        .when(credit())
        .then_error(invalid(TransferStatus::Requested, "RecordCredit"));
    given::<Transfer>([requested()])
        .when(complete())
        .then_rule("invalid-transition");
    given::<Transfer>([requested(), debited()])
        .when(debit())
        .then_error(invalid(TransferStatus::Debited, "RecordDebit"));
    given::<Transfer>([requested(), debited()])
        .when(complete())
        .then_rule("invalid-transition");
    for command in [debit(), credit(), complete(), fail()] {
        given::<Transfer>([requested(), debited(), credited(), completed()])
            .when(command.clone())
            .then_rule("invalid-transition");
        given::<Transfer>([requested(), failed(false)])
            .when(command)
            .then_rule("invalid-transition");
    }
}

#[test]
fn a_failure_says_whether_the_debit_was_given_back_and_comes_before_the_credit() {
    given::<Transfer>([requested()])
        .when(fail())
        .then_events([failed(false)]);
    given::<Transfer>([requested(), debited()])
        .when(fail())
        .then_events([failed(true)]);
    // The money arrived: nothing can fail the transfer any more.
    given::<Transfer>([requested(), debited(), credited()])
        .when(fail())
        .then_error(TransferError::InvalidTransition {
            status: TransferStatus::Credited,
            command: "FailTransfer",
        });

    let state = given::<Transfer>([requested(), debited(), failed(true)]);
    let failure = state.state().failure().unwrap();
    assert_eq!(failure.rule, "account-closed");
    assert!(failure.debit_returned);
    assert!(state.state().is_finished());
}
