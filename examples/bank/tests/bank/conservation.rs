//! Random deposits, withdrawals, closings and transfers between a few
//! accounts (one in another currency, one with an overdraft), issued
//! while the transfer saga runs: once every transfer has finished, no
//! money was made or lost in any currency, no balance ever went below its
//! overdraft limit, and every transfer moved its amount exactly once or
//! not at all.

use std::collections::BTreeMap;

use annals_bank::account::{AccountCommand, AccountEvent};
use annals_bank::transfer::TransferStatus;
use annals_bank::{Account, Currency, Transfer};
use command_api::aggregate::replay;
use command_api::{CommandContext, CommandError};
use proptest::prelude::*;
use uuid::Uuid;

use crate::world::{Running, World, money};

/// The accounts: currency and overdraft limit.
const ACCOUNTS: [(Currency, i64); 4] = [
    (Currency::Eur, 0),
    (Currency::Eur, 5_000),
    (Currency::Eur, 0),
    (Currency::Usd, 0),
];

/// What each account starts with.
const INITIAL: i64 = 30_000;

#[derive(Debug, Clone)]
enum Op {
    Deposit(usize, i64),
    Withdraw(usize, i64),
    /// Empty the account and close it.
    Close(usize),
    /// From, to, amount (in the source's currency).
    Transfer(usize, usize, i64),
}

fn op() -> impl Strategy<Value = Op> {
    let account = 0..ACCOUNTS.len();
    let amount = 1..20_000i64;
    prop_oneof![
        3 => (account.clone(), amount.clone()).prop_map(|(a, m)| Op::Deposit(a, m)),
        2 => (account.clone(), amount.clone()).prop_map(|(a, m)| Op::Withdraw(a, m)),
        1 => account.clone().prop_map(Op::Close),
        5 => (account.clone(), account, amount).prop_map(|(f, t, m)| Op::Transfer(f, t, m)),
    ]
}

fn cases() -> u32 {
    let long = std::env::var("ANNALS_TEST_LONG").is_ok_and(|v| !v.is_empty() && v != "0");
    if long { 256 } else { 24 }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn money_is_conserved_and_no_balance_breaks_the_overdraft_rule(
        ops in prop::collection::vec(op(), 1..30)
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(ops));
    }
}

async fn run(ops: Vec<Op>) {
    let world = World::new().await;
    let mut accounts = Vec::new();
    // What came into the bank and went out, by currency.
    let mut outside: BTreeMap<Currency, i64> = BTreeMap::new();
    for (currency, overdraft) in ACCOUNTS {
        accounts.push(world.account(currency, overdraft, INITIAL).await);
        *outside.entry(currency).or_default() += INITIAL;
    }
    let saga = Running::start(world.saga());

    let mut transfers = Vec::new();
    for op in ops {
        match op {
            Op::Deposit(a, amount) | Op::Withdraw(a, amount) => {
                let (account_id, amount_money) = (accounts[a], money(amount, ACCOUNTS[a].0));
                let (command, sign) = match op {
                    Op::Deposit(..) => (
                        AccountCommand::Deposit {
                            account_id,
                            amount: amount_money,
                        },
                        1,
                    ),
                    _ => (
                        AccountCommand::Withdraw {
                            account_id,
                            amount: amount_money,
                        },
                        -1,
                    ),
                };
                match world.accounts.execute(command, CommandContext::new()).await {
                    Ok(_) => *outside.entry(ACCOUNTS[a].0).or_default() += sign * amount,
                    Err(CommandError::Rejected(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Close(a) => {
                // Empty it first, so that closing has a chance; a transfer
                // in flight or arriving meanwhile may still refuse it.
                let balance = world.balance(accounts[a]).await;
                if balance > 0 {
                    let withdraw = AccountCommand::Withdraw {
                        account_id: accounts[a],
                        amount: money(balance, ACCOUNTS[a].0),
                    };
                    match world
                        .accounts
                        .execute(withdraw, CommandContext::new())
                        .await
                    {
                        Ok(_) => *outside.entry(ACCOUNTS[a].0).or_default() -= balance,
                        Err(CommandError::Rejected(_)) => {}
                        Err(e) => panic!("{e}"),
                    }
                }
                let close = AccountCommand::Close {
                    account_id: accounts[a],
                };
                match world.accounts.execute(close, CommandContext::new()).await {
                    Ok(_) | Err(CommandError::Rejected(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Transfer(from, to, amount) if from != to => {
                let amount = money(amount, ACCOUNTS[from].0);
                transfers.push(world.transfer(accounts[from], accounts[to], amount).await);
            }
            Op::Transfer(..) => {}
        }
    }
    saga.finish(&world, &transfers).await;
    let status = saga.stop().await.status();
    assert_eq!(status.events_skipped, 0, "{:?}", status.last_error);

    // Money is conserved per currency: what is in the accounts is what
    // came in minus what went out.
    let mut held: BTreeMap<Currency, i64> = BTreeMap::new();
    let mut histories = BTreeMap::new();
    for (i, &id) in accounts.iter().enumerate() {
        let events = world.account_events(id).await;
        let state = world.account_state(id).await;
        assert_eq!(state.transfers_in_flight(), 0, "account {i}");
        *held.entry(ACCOUNTS[i].0).or_default() += state.balance().unwrap();
        // The overdraft rule held after every single event.
        for end in 1..=events.len() {
            let balance = replay::<Account>(&events[..end]).balance().unwrap();
            assert!(
                balance >= -ACCOUNTS[i].1,
                "account {i} at {balance} after {:?}",
                events[end - 1]
            );
        }
        histories.insert(id, events);
    }
    outside.retain(|_, sum| *sum != 0);
    held.retain(|_, sum| *sum != 0);
    assert_eq!(held, outside);

    // Each transfer moved its amount once or not at all.
    for transfer in transfers {
        let state: Transfer = world.transfer_state(transfer).await;
        let (from, to) = (state.from_account().unwrap(), state.to_account().unwrap());
        let of = |account: Uuid, kind: fn(&AccountEvent, Uuid) -> bool| {
            histories[&account]
                .iter()
                .filter(|e| kind(e, transfer))
                .count()
        };
        let counts = (
            of(
                from,
                |e, t| matches!(e, AccountEvent::TransferSent(s) if s.transfer_id == t),
            ),
            of(
                to,
                |e, t| matches!(e, AccountEvent::TransferReceived(r) if r.transfer_id == t),
            ),
            of(
                from,
                |e, t| matches!(e, AccountEvent::TransferReturned(r) if r.transfer_id == t),
            ),
            of(
                from,
                |e, t| matches!(e, AccountEvent::TransferSettled(s) if s.transfer_id == t),
            ),
        );
        let expected = match (state.status(), state.failure()) {
            (Some(TransferStatus::Completed), _) => (1, 1, 0, 1),
            (Some(TransferStatus::Failed), Some(f)) if f.debit_returned => (1, 0, 1, 0),
            (Some(TransferStatus::Failed), Some(_)) => (0, 0, 0, 0),
            other => panic!("transfer {transfer} did not finish: {other:?}"),
        };
        assert_eq!(counts, expected, "sent, received, returned, settled");
    }
}
