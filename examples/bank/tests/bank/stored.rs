//! What the domain finds in a real data directory: an `AccountOpened` of
//! schema version 1 (`owner`, no currency, no overdraft), written with the
//! owner sealed as the personal-data policy says, reads as the current
//! event on both read paths (the command handler's typed decoding and the
//! JSON a stream read returns) and its account takes commands; holders'
//! names never reach the disk in clear, and a forgotten holder's account
//! keeps working with the name erased.

use std::path::Path;

use annals_bank::account::{AccountCommand, AccountEvent, AccountOpened, EVENT_TYPES, HolderName};
use annals_bank::{Amount, Currency};
use command_api::{CommandContext, CommandError, DomainEvent};
use event_store::{
    Direction, EventStore, ExpectedVersion, NewEvent, ReadFrom, StreamId, Upcasters,
};
use uuid::Uuid;

use crate::world::{World, eur};

/// The files under `dir` holding `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

/// Appends a version-1 `AccountOpened` below the upcasters, as the code
/// of that version did (its policy sealed `owner`).
async fn open_v1(world: &World, owner: &str) -> (Uuid, StreamId) {
    let id = Uuid::now_v7();
    let stream = StreamId::new(format!("account-{id}")).unwrap();
    let v1 = NewEvent::json(
        "AccountOpened",
        &serde_json::json!({"account_id": id, "owner": owner}),
    )
    .unwrap()
    .with_schema_version(1);
    world
        .shredding
        .append(&stream, ExpectedVersion::NoStream, vec![v1])
        .await
        .unwrap();
    (id, stream)
}

fn opened_in_euros(id: Uuid, holder: &str) -> AccountEvent {
    AccountEvent::Opened(AccountOpened {
        account_id: id,
        holder: HolderName::parse(holder).unwrap(),
        currency: Currency::Eur,
        overdraft_limit: Amount::ZERO,
    })
}

#[tokio::test]
async fn an_account_opened_at_version_1_reads_as_one_in_euros_without_overdraft() {
    let world = World::new().await;
    let (id, stream) = open_v1(&world, "Ada Lovelace").await;
    assert!(files_containing(world.dir.path(), b"Ada Lovelace").is_empty());

    // The JSON path: a stream read returns the event at version 2.
    let read = world.events(stream.as_str()).await;
    assert_eq!(read[0].schema_version, 2);
    let json = AccountEvent::decode(&read[0].event_type, 2, &read[0].data).unwrap();
    assert_eq!(json, opened_in_euros(id, "Ada Lovelace"));

    // The typed path: the handler decodes the stored event through the
    // typed step, which ends in the domain's own event.
    let stored = world
        .shredding
        .read_stream(&stream, ReadFrom::Start, Direction::Forward, 1)
        .await
        .unwrap()
        .events
        .remove(0);
    assert_eq!(stored.schema_version, 1);
    let typed = annals_bank::upcasters()
        .upcast_typed(&stored)
        .expect("version 1 is upcast by typed steps alone")
        .unwrap();
    let typed = AccountEvent::from_upcast("AccountOpened", typed).unwrap();
    assert_eq!(typed, json);

    // And the account works by the rules of an account in euros without
    // overdraft.
    let state = world.account_state(id).await;
    assert_eq!(
        (state.currency(), state.overdraft_limit()),
        (Some(Currency::Eur), Some(Amount::ZERO))
    );
    let deposit = AccountCommand::Deposit {
        account_id: id,
        amount: eur(1_000),
    };
    world
        .accounts
        .execute(deposit, CommandContext::new())
        .await
        .unwrap();
    let withdraw = AccountCommand::Withdraw {
        account_id: id,
        amount: eur(1_001),
    };
    match world
        .accounts
        .execute(withdraw, CommandContext::new())
        .await
    {
        Err(CommandError::Rejected(e)) => {
            assert_eq!(command_api::DomainError::rule(&e), "insufficient-funds")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_event_type_is_declared_and_a_version_1_that_does_not_read_is_an_error() {
    let upcasters: Upcasters = annals_bank::upcasters();
    upcasters.validate().unwrap();
    for event_type in EVENT_TYPES
        .iter()
        .chain(&annals_bank::transfer::EVENT_TYPES)
    {
        let expected = if *event_type == "AccountOpened" { 2 } else { 1 };
        assert_eq!(
            upcasters.current_version(event_type),
            Some(expected),
            "{event_type}"
        );
    }
    let stored = |data: serde_json::Value, version| event_store::RecordedEvent {
        id: Uuid::nil(),
        stream_id: StreamId::new("account-1").unwrap(),
        version: 1,
        position: event_store::Position(1),
        event_type: "AccountOpened".into(),
        schema_version: version,
        timestamp: event_store::Timestamp(0),
        data: bytes::Bytes::from(data.to_string()),
        metadata: bytes::Bytes::from_static(b"{}"),
    };
    let id = Uuid::nil();
    for (data, version) in [
        // Not version 1's shape: a holder where the owner belongs.
        (serde_json::json!({"account_id": id, "holder": "Ada"}), 1),
        // Written by newer code than this.
        (serde_json::json!({"account_id": id, "holder": "Ada"}), 3),
    ] {
        match upcasters.upcast(stored(data, version)) {
            Err(event_store::Error::Upcast {
                event_type,
                version: at,
                ..
            }) => assert_eq!((event_type.as_str(), at), ("AccountOpened", version)),
            other => panic!("version {version}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn holder_names_are_sealed_and_a_forgotten_holders_account_keeps_working() {
    let world = World::new().await;
    let account = world.account(Currency::Eur, 0, 500).await;
    let (old, old_stream) = open_v1(&world, "Charles Babbage").await;
    for name in [&b"Ada Lovelace"[..], b"Charles Babbage"] {
        assert!(files_containing(world.dir.path(), name).is_empty());
    }
    let stream = StreamId::new(format!("account-{account}")).unwrap();
    let Some(AccountEvent::Opened(opened)) = world.account_events(account).await.first().cloned()
    else {
        panic!("no opening");
    };
    assert_eq!(opened.holder.as_str(), "Ada Lovelace");

    for stream in [&stream, &old_stream] {
        world.front.forget_subject(stream).await.unwrap();
    }
    for (id, name) in [(account, "Ada Lovelace"), (old, "Charles Babbage")] {
        let Some(AccountEvent::Opened(opened)) = world.account_events(id).await.first().cloned()
        else {
            panic!("no opening");
        };
        assert!(opened.holder.is_erased(), "{name}");
        let deposit = AccountCommand::Deposit {
            account_id: id,
            amount: eur(100),
        };
        world
            .accounts
            .execute(deposit, CommandContext::new())
            .await
            .unwrap();
    }
    assert_eq!(world.balance(account).await, 600);
    assert_eq!(world.balance(old).await, 100);
}
