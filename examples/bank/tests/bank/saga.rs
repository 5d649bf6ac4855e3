//! The transfer saga run by the real `SagaRunner` over a real store: a
//! transfer that completes, credits the target refuses and that are given
//! back, debits the source refuses, a transfer that expires, transfers
//! racing for one balance, and sagas killed right after the debit or in
//! the middle of a compensation, restarted as a new process would: each
//! transfer still ends exactly once and no account is debited or credited
//! twice; and a saga resuming from a checkpoint older than a transfer's
//! end does not keep it in flight.

use std::sync::Arc;
use std::time::Duration;

use annals_bank::account::{AccountCommand, AccountEvent};
use annals_bank::transfer::{TransferEvent, TransferStatus};
use annals_bank::{Currency, SAGA_NAME, Transfers, TransfersConfig, TransfersState};
use command_api::saga::{CHECKPOINT_EVENT_TYPE, Checkpoint, checkpoint_stream, idempotency_key};
use command_api::testkit::ManualClock;
use command_api::{CommandContext, CommandError, Fingerprint, Idempotency};
use event_store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, Timestamp, Upcasting};
use uuid::Uuid;

use crate::gate::Gate;
use crate::world::{Running, World, eur, money};

/// How many of `events` are of each kind `kind` picks.
fn count(events: &[AccountEvent], kind: fn(&AccountEvent) -> bool) -> usize {
    events.iter().filter(|e| kind(e)).count()
}

fn is_sent(e: &AccountEvent) -> bool {
    matches!(e, AccountEvent::TransferSent(_))
}

fn is_received(e: &AccountEvent) -> bool {
    matches!(e, AccountEvent::TransferReceived(_))
}

fn is_returned(e: &AccountEvent) -> bool {
    matches!(e, AccountEvent::TransferReturned(_))
}

fn is_settled(e: &AccountEvent) -> bool {
    matches!(e, AccountEvent::TransferSettled(_))
}

/// The transfer's failure: its rule and whether the debit came back.
async fn failure(world: &World, transfer: Uuid) -> (String, bool) {
    let state = world.transfer_state(transfer).await;
    assert_eq!(state.status(), Some(TransferStatus::Failed));
    let failure = state.failure().unwrap();
    assert!(
        failure.reason.len() > 10,
        "a reason in words: {:?}",
        failure.reason
    );
    (failure.rule.clone(), failure.debit_returned)
}

/// The context of the saga's command for `step` of the event at
/// `event_index` of `transfer`'s stream, as any run of the saga sends it.
async fn saga_step(
    world: &World,
    transfer: Uuid,
    event_index: usize,
    step: &str,
) -> CommandContext {
    let events = world.events(&format!("transfer-{transfer}")).await;
    let key = idempotency_key(SAGA_NAME, events[event_index].id, step).unwrap();
    CommandContext::new().with_idempotency(Idempotency {
        key,
        fingerprint: Fingerprint::of(&[b"a late command"]),
    })
}

#[tokio::test]
async fn a_transfer_between_two_accounts_completes_in_one_conversation() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 0, 10_000).await;
    let b = world.account(Currency::Eur, 0, 0).await;
    let transfer = world.transfer(a, b, eur(3_000)).await;
    let saga = Running::start(world.saga());
    saga.finish(&world, &[transfer]).await;

    assert_eq!(
        world.transfer_state(transfer).await.status(),
        Some(TransferStatus::Completed)
    );
    assert_eq!(world.balance(a).await, 7_000);
    assert_eq!(world.balance(b).await, 3_000);
    assert_eq!(world.account_state(a).await.transfers_in_flight(), 0);
    assert_eq!(
        world.types(&format!("transfer-{transfer}")).await,
        [
            "TransferRequested",
            "TransferDebited",
            "TransferCredited",
            "TransferCompleted"
        ]
    );
    assert_eq!(
        world.types(&format!("account-{a}")).await,
        [
            "AccountOpened",
            "MoneyDeposited",
            "TransferSent",
            "TransferSettled"
        ]
    );
    assert_eq!(
        world.types(&format!("account-{b}")).await,
        ["AccountOpened", "TransferReceived"]
    );

    // Every step belongs to the request's conversation and names the
    // transfer event that caused it.
    let steps = world.events(&format!("transfer-{transfer}")).await;
    let conversation = steps[0].metadata().unwrap().correlation_id;
    assert!(conversation.is_some());
    let mut caused = world.events(&format!("account-{a}")).await.split_off(2);
    caused.extend(world.events(&format!("account-{b}")).await.split_off(1));
    caused.extend(steps.iter().skip(1).cloned());
    for event in &caused {
        let metadata = event.metadata().unwrap();
        assert_eq!(
            metadata.correlation_id, conversation,
            "{}",
            event.event_type
        );
        let cause = metadata.causation_id.unwrap();
        assert!(
            steps.iter().any(|step| step.id == cause),
            "{} is caused by a transfer event",
            event.event_type
        );
    }

    let status = saga.stop().await.status();
    assert_eq!(status.events_skipped, 0);
    assert_eq!(status.last_error, None);
    assert_eq!(status.state_summary["transfers_in_flight"], 0);
}

#[tokio::test]
async fn a_credit_the_target_refuses_is_given_back_and_the_transfer_fails_with_its_rule() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 0, 10_000).await;
    let closed = world.account(Currency::Eur, 0, 0).await;
    world.close(closed).await;
    let dollars = world.account(Currency::Usd, 0, 0).await;
    let nowhere = Uuid::now_v7();
    let to_closed = world.transfer(a, closed, eur(3_000)).await;
    let to_dollars = world.transfer(a, dollars, eur(2_000)).await;
    let to_nowhere = world.transfer(a, nowhere, eur(1_000)).await;
    let saga = Running::start(world.saga());
    saga.finish(&world, &[to_closed, to_dollars, to_nowhere])
        .await;

    for (transfer, rule) in [
        (to_closed, "account-closed"),
        (to_dollars, "currency-mismatch"),
        (to_nowhere, "account-not-open"),
    ] {
        assert_eq!(failure(&world, transfer).await, (rule.to_owned(), true));
    }
    // Each transfer was debited and given back exactly once: the balance
    // is where it started.
    assert_eq!(world.balance(a).await, 10_000);
    let source = world.account_events(a).await;
    assert_eq!(count(&source, is_sent), 3);
    assert_eq!(count(&source, is_returned), 3);
    assert_eq!(count(&source, is_settled), 0);
    assert_eq!(world.account_state(a).await.transfers_in_flight(), 0);
    assert_eq!(
        world.types(&format!("account-{closed}")).await,
        ["AccountOpened", "AccountClosed"]
    );
    assert_eq!(
        world.types(&format!("account-{dollars}")).await,
        ["AccountOpened"]
    );

    // The refused credit is fenced: the same step sent late (by a run
    // that crashed, say) cannot land, even where it would be accepted.
    let late = AccountCommand::ReceiveTransfer {
        account_id: dollars,
        transfer_id: to_dollars,
        amount: money(2_000, Currency::Usd),
    };
    let context = saga_step(&world, to_dollars, 1, "credit").await;
    let refused = world.accounts.execute(late, context).await;
    assert!(
        matches!(refused, Err(CommandError::Fenced { .. })),
        "{refused:?}"
    );
    assert_eq!(world.balance(dollars).await, 0);
    saga.stop().await;
}

#[tokio::test]
async fn a_debit_the_source_refuses_fails_the_transfer_and_moves_nothing() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 500, 1_000).await;
    let b = world.account(Currency::Eur, 0, 0).await;
    let too_much = world.transfer(a, b, eur(1_501)).await;
    let from_nowhere = world.transfer(Uuid::now_v7(), b, eur(1)).await;
    let just_enough = world.transfer(a, b, eur(1_500)).await;
    let saga = Running::start(world.saga());
    saga.finish(&world, &[too_much, from_nowhere, just_enough])
        .await;

    assert_eq!(
        failure(&world, too_much).await,
        ("insufficient-funds".to_owned(), false)
    );
    assert_eq!(
        failure(&world, from_nowhere).await,
        ("account-not-open".to_owned(), false)
    );
    assert_eq!(
        world.transfer_state(just_enough).await.status(),
        Some(TransferStatus::Completed)
    );
    assert_eq!(world.balance(a).await, -500);
    assert_eq!(world.balance(b).await, 1_500);
    assert_eq!(count(&world.account_events(a).await, is_sent), 1);
    saga.stop().await;
}

#[tokio::test]
async fn a_transfer_not_debited_in_time_expires_and_its_debit_can_never_land() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 0, 10_000).await;
    let b = world.account(Currency::Eur, 0, 0).await;
    let expiry = TransfersConfig::default().expiry;
    // The saga's clock stands where the test puts it: the boundary is
    // tested to the microsecond, and nobody waits for it.
    let clock = ManualClock::starting_now();
    let saga_at = |requested: &RecordedEvent, after: Duration| {
        clock.set(Timestamp(
            requested.timestamp.as_micros() + i64::try_from(after.as_micros()).unwrap(),
        ));
        Running::start(world.saga().with_clock(Arc::new(clock.clone())))
    };

    // Exactly at its expiry, a transfer still goes through.
    let in_time = world.transfer(a, b, eur(1_000)).await;
    let requested = world.events(&format!("transfer-{in_time}")).await[0].clone();
    let saga = saga_at(&requested, expiry);
    saga.finish(&world, &[in_time]).await;
    assert_eq!(
        world.transfer_state(in_time).await.status(),
        Some(TransferStatus::Completed)
    );
    saga.stop().await;

    // A microsecond later it expires.
    let transfer = world.transfer(a, b, eur(1_000)).await;
    let requested = world.events(&format!("transfer-{transfer}")).await[0].clone();
    let saga = saga_at(&requested, expiry + Duration::from_micros(1));
    saga.finish(&world, &[transfer]).await;

    assert_eq!(
        failure(&world, transfer).await,
        ("expired".to_owned(), false)
    );
    let late = AccountCommand::SendTransfer {
        account_id: a,
        transfer_id: transfer,
        amount: eur(1_000),
    };
    let context = saga_step(&world, transfer, 0, "debit").await;
    let refused = world.accounts.execute(late, context).await;
    assert!(
        matches!(refused, Err(CommandError::Fenced { .. })),
        "{refused:?}"
    );
    let sent = count(&world.account_events(a).await, is_sent);
    assert_eq!(sent, 1, "only the transfer in time was debited");
    saga.stop().await;
}

#[tokio::test]
async fn transfers_racing_for_one_balance_never_break_the_overdraft_rule() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 0, 10_000).await;
    let b = world.account(Currency::Eur, 0, 0).await;
    let saga = Running::start(world.saga());
    let mut transfers = Vec::new();
    for _ in 0..5 {
        transfers.push(world.transfer(a, b, eur(3_000)).await);
    }
    saga.finish(&world, &transfers).await;

    let mut completed = 0;
    for &transfer in &transfers {
        let state = world.transfer_state(transfer).await;
        match state.status() {
            Some(TransferStatus::Completed) => completed += 1,
            _ => assert_eq!(
                failure(&world, transfer).await,
                ("insufficient-funds".to_owned(), false)
            ),
        }
    }
    assert_eq!(completed, 3);
    assert_eq!(world.balance(a).await, 1_000);
    assert_eq!(world.balance(b).await, 9_000);
    saga.stop().await;
}

/// A world whose saga is stopped by a [`Gate`] on `held_type`, and the
/// store a restarted process would use.
async fn gated(held_type: &'static str) -> (World, Arc<Gate>, Arc<dyn EventStore>) {
    let mut gate = None;
    let world = World::with_front(|layered| {
        let g = Gate::new(layered, held_type);
        gate = Some(g.clone());
        g
    })
    .await;
    let restarted: Arc<dyn EventStore> =
        Arc::new(Upcasting::new(world.shredding.clone(), annals_bank::upcasters()).unwrap());
    (world, gate.unwrap(), restarted)
}

#[tokio::test]
async fn a_saga_killed_between_any_two_steps_completes_the_transfer_once_after_a_restart() {
    // The step that is held back, where the transfer then stands, and the
    // balances of source and target at that point.
    for (held, status, balances) in [
        ("TransferDebited", TransferStatus::Requested, (6_000, 0)),
        ("TransferCredited", TransferStatus::Debited, (6_000, 4_000)),
        (
            "TransferCompleted",
            TransferStatus::Credited,
            (6_000, 4_000),
        ),
    ] {
        let (world, gate, restarted) = gated(held).await;
        let a = world.account(Currency::Eur, 0, 10_000).await;
        let b = world.account(Currency::Eur, 0, 0).await;
        let transfer = world.transfer(a, b, eur(4_000)).await;

        let first = Running::start(world.saga());
        gate.caught().await;
        assert_eq!(
            world.transfer_state(transfer).await.status(),
            Some(status),
            "{held}"
        );
        assert_eq!(
            (world.balance(a).await, world.balance(b).await),
            balances,
            "{held}"
        );
        first.kill().await;

        let second = Running::start(World::saga_over(restarted));
        second.finish(&world, &[transfer]).await;
        assert_eq!(
            world.transfer_state(transfer).await.status(),
            Some(TransferStatus::Completed),
            "{held}"
        );
        assert_eq!(
            (world.balance(a).await, world.balance(b).await),
            (6_000, 4_000),
            "{held}"
        );
        let (source, target) = (world.account_events(a).await, world.account_events(b).await);
        assert_eq!(
            (
                count(&source, is_sent),
                count(&target, is_received),
                count(&source, is_settled)
            ),
            (1, 1, 1),
            "{held}"
        );
        assert_eq!(
            world.types(&format!("transfer-{transfer}")).await,
            [
                "TransferRequested",
                "TransferDebited",
                "TransferCredited",
                "TransferCompleted"
            ],
            "{held}"
        );
        let status = second.stop().await.status();
        assert_eq!(status.events_skipped, 0, "{held}");
    }
}

#[tokio::test]
async fn a_saga_killed_in_the_middle_of_a_compensation_gives_the_money_back_once() {
    // The step held back, and the source's balance at that point.
    for (held, balance) in [("TransferReturned", 6_000), ("TransferFailed", 10_000)] {
        let (world, gate, restarted) = gated(held).await;
        let a = world.account(Currency::Eur, 0, 10_000).await;
        let b = world.account(Currency::Eur, 0, 0).await;
        world.close(b).await;
        let transfer = world.transfer(a, b, eur(4_000)).await;

        let first = Running::start(world.saga());
        gate.caught().await;
        // The credit was refused and fenced; the transfer has not failed.
        assert_eq!(world.balance(a).await, balance, "{held}");
        assert_eq!(
            world.transfer_state(transfer).await.status(),
            Some(TransferStatus::Debited),
            "{held}"
        );
        first.kill().await;

        let second = Running::start(World::saga_over(restarted));
        second.finish(&world, &[transfer]).await;
        assert_eq!(
            failure(&world, transfer).await,
            ("account-closed".to_owned(), true),
            "{held}"
        );
        assert_eq!(world.balance(a).await, 10_000, "{held}");
        let source = world.account_events(a).await;
        assert_eq!(
            (count(&source, is_sent), count(&source, is_returned)),
            (1, 1),
            "{held}"
        );
        assert_eq!(count(&world.account_events(b).await, is_received), 0);
        let failed = world
            .transfer_events(transfer)
            .await
            .into_iter()
            .filter(|e| matches!(e, TransferEvent::Failed(_)))
            .count();
        assert_eq!(failed, 1, "{held}");
        second.stop().await;
    }
}

#[tokio::test]
async fn transfers_finished_after_the_last_checkpoint_leave_the_sagas_state_after_a_crash() {
    let world = World::new().await;
    let a = world.account(Currency::Eur, 0, 10_000).await;
    let b = world.account(Currency::Eur, 0, 0).await;
    let transfer = world.transfer(a, b, eur(1_000)).await;
    let first = Running::start(world.saga());
    first.finish(&world, &[transfer]).await;
    first.stop().await;

    // The checkpoint a crash right after the debit leaves: the transfer in
    // flight, every event of it still to handle.
    let stale = Checkpoint {
        position: 0,
        state: TransfersState {
            in_flight: [(transfer, 1)].into(),
        },
    };
    let event = NewEvent::json(CHECKPOINT_EVENT_TYPE, &stale).unwrap();
    world
        .front
        .append(
            &checkpoint_stream(SAGA_NAME).unwrap(),
            ExpectedVersion::Any,
            vec![event],
        )
        .await
        .unwrap();

    let second = Running::start(world.saga());
    let handle = second.handle.clone();
    let filter = Transfers::filter();
    let last = world
        .events(&format!("transfer-{transfer}"))
        .await
        .into_iter()
        .filter(|e| filter.matches(e.stream_id.as_str(), &e.event_type))
        .map(|e| e.position)
        .max()
        .unwrap();
    tokio::time::timeout(crate::world::WAIT_MAX, handle.handled(last))
        .await
        .expect("the saga handles the transfer's events again")
        .unwrap();
    let status = second.stop().await.status();
    assert_eq!(status.state_summary["transfers_in_flight"], 0);
    assert_eq!(count(&world.account_events(b).await, is_received), 1);
}
