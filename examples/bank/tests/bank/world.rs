//! A bank over a real store in a temporary directory, layered as a service
//! runs it (`Upcasting(Shredding(Store))` with the domain's upcasters and
//! personal-data policy), with the command handlers of both aggregates
//! and the transfer saga run by the real `SagaRunner`.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use annals_bank::account::{AccountCommand, AccountEvent, HolderName};
use annals_bank::transfer::{TransferCommand, TransferEvent};
use annals_bank::{Account, Amount, Currency, Money, Transfer, Transfers};
use command_api::{
    CommandContext, CommandHandler, DomainEvent, HandlerConfig, SagaConfig, SagaHandle, SagaRunner,
    SagaState,
};
use event_store::{
    Direction, EventStore, KeyStore, ReadFrom, RecordedEvent, Shredding, Store, StoreOptions,
    StreamId, Upcasting,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// How long any one wait may take before the test fails (CI is a loaded
/// 2-core machine).
pub const WAIT_MAX: Duration = Duration::from_secs(60);

pub fn money(minor_units: i64, currency: Currency) -> Money {
    Money::new(minor_units, currency).unwrap()
}

pub fn eur(minor_units: i64) -> Money {
    money(minor_units, Currency::Eur)
}

/// A saga configuration that checkpoints often and retries quickly, so
/// that restarts resume from recent checkpoints and tests stay short.
pub fn saga_config() -> SagaConfig {
    SagaConfig {
        checkpoint_every_events: NonZeroU64::new(4).unwrap(),
        checkpoint_interval: Duration::from_millis(20),
        retry_backoff_min: Duration::from_millis(10),
        retry_backoff_max: Duration::from_millis(200),
        ..SagaConfig::default()
    }
}

/// The domain's layers over `store`, as every process reads it.
pub fn layered(store: Store, keys: Arc<KeyStore>) -> (Shredding<Store>, Arc<dyn EventStore>) {
    let shredding = Shredding::new(store, keys, annals_bank::personal_data());
    let upcasting = Upcasting::new(shredding.clone(), annals_bank::upcasters()).unwrap();
    (shredding, Arc::new(upcasting))
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub shredding: Shredding<Store>,
    /// What the handlers and the saga use.
    pub front: Arc<dyn EventStore>,
    pub accounts: CommandHandler<Account>,
    pub transfers: CommandHandler<Transfer>,
}

impl World {
    pub async fn new() -> World {
        World::with_front(|layered| layered).await
    }

    /// The handlers (and so the sagas) over `front(layered store)`.
    pub async fn with_front(
        front: impl FnOnce(Arc<dyn EventStore>) -> Arc<dyn EventStore>,
    ) -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default())
            .await
            .unwrap();
        let keys = Arc::new(KeyStore::open(dir.path().join("keys")).unwrap());
        let (shredding, layered) = layered(store, keys);
        let front = front(layered);
        World {
            dir,
            shredding,
            accounts: CommandHandler::new(front.clone(), HandlerConfig::default()),
            transfers: CommandHandler::new(front.clone(), HandlerConfig::default()),
            front,
        }
    }

    /// The saga over this world's handlers.
    pub fn saga(&self) -> SagaRunner<Transfers> {
        let saga = Transfers::new(self.accounts.clone(), self.transfers.clone());
        SagaRunner::new(saga, self.front.clone(), saga_config())
    }

    /// The saga as a process started afresh would run it: new handlers
    /// (empty caches) over `front`.
    pub fn saga_over(front: Arc<dyn EventStore>) -> SagaRunner<Transfers> {
        let saga = Transfers::new(
            CommandHandler::new(front.clone(), HandlerConfig::default()),
            CommandHandler::new(front.clone(), HandlerConfig::default()),
        );
        SagaRunner::new(saga, front, saga_config())
    }

    /// Opens an account and deposits `initial` into it (if not zero).
    pub async fn account(&self, currency: Currency, overdraft: i64, initial: i64) -> Uuid {
        let id = Uuid::now_v7();
        let open = AccountCommand::Open {
            account_id: id,
            holder: HolderName::parse("Ada Lovelace").unwrap(),
            currency,
            overdraft_limit: Amount::new(overdraft).unwrap(),
        };
        self.accounts
            .execute(open, CommandContext::new())
            .await
            .unwrap();
        if initial > 0 {
            let deposit = AccountCommand::Deposit {
                account_id: id,
                amount: money(initial, currency),
            };
            self.accounts
                .execute(deposit, CommandContext::new())
                .await
                .unwrap();
        }
        id
    }

    pub async fn close(&self, account_id: Uuid) {
        self.accounts
            .execute(AccountCommand::Close { account_id }, CommandContext::new())
            .await
            .unwrap();
    }

    /// Requests a transfer; its id.
    pub async fn transfer(&self, from_account: Uuid, to_account: Uuid, amount: Money) -> Uuid {
        let id = Uuid::now_v7();
        let request = TransferCommand::Request {
            transfer_id: id,
            from_account,
            to_account,
            amount,
        };
        self.transfers
            .execute(request, CommandContext::new())
            .await
            .unwrap();
        id
    }

    pub async fn account_state(&self, id: Uuid) -> Account {
        self.accounts.load(id).await.unwrap().state
    }

    pub async fn balance(&self, id: Uuid) -> i64 {
        self.account_state(id).await.balance().unwrap()
    }

    pub async fn transfer_state(&self, id: Uuid) -> Transfer {
        self.transfers.load(id).await.unwrap().state
    }

    /// A stream's events as stored (decrypted and upcast).
    pub async fn events(&self, stream: &str) -> Vec<RecordedEvent> {
        self.front
            .read_stream(
                &StreamId::new(stream).unwrap(),
                ReadFrom::Start,
                Direction::Forward,
                10_000,
            )
            .await
            .unwrap()
            .events
    }

    pub async fn account_events(&self, id: Uuid) -> Vec<AccountEvent> {
        self.events(&format!("account-{id}"))
            .await
            .iter()
            .map(|e| AccountEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap())
            .collect()
    }

    pub async fn transfer_events(&self, id: Uuid) -> Vec<TransferEvent> {
        self.events(&format!("transfer-{id}"))
            .await
            .iter()
            .map(|e| TransferEvent::decode(&e.event_type, e.schema_version, &e.data).unwrap())
            .collect()
    }

    /// The event types of a stream, in order.
    pub async fn types(&self, stream: &str) -> Vec<String> {
        self.events(stream)
            .await
            .into_iter()
            .map(|e| e.event_type)
            .collect()
    }
}

/// A saga running in a task of its own.
pub struct Running {
    pub handle: SagaHandle,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    pub fn start(saga: SagaRunner<Transfers>) -> Running {
        let handle = saga.handle();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(saga.run(async move {
            let _ = stopped.await;
        }));
        Running { handle, stop, task }
    }

    /// Waits until every transfer of `ids` in `world` completed or failed,
    /// failing at once if the saga gave up on an event (it would never
    /// finish the transfer). No polling: each step of a transfer ends with
    /// the event that leads to the next, so the saga having handled the
    /// transfer's last event means that event is there, or the transfer
    /// is finished.
    pub async fn finish(&self, world: &World, ids: &[Uuid]) {
        for &id in ids {
            let stream = format!("transfer-{id}");
            let mut waited_for = None;
            loop {
                let latest = world.events(&stream).await.last().unwrap().position;
                if world.transfer_state(id).await.is_finished() {
                    break;
                }
                assert_ne!(
                    Some(latest),
                    waited_for,
                    "the saga handled transfer {id} up to {latest:?} and took it no further"
                );
                tokio::time::timeout(WAIT_MAX, self.handle.handled(latest))
                    .await
                    .unwrap_or_else(|_| panic!("transfer {id} not handled within {WAIT_MAX:?}"))
                    .unwrap();
                let status = self.handle.status();
                assert_eq!(status.events_skipped, 0, "{:?}", status.last_error);
                waited_for = Some(latest);
            }
        }
    }

    /// A graceful stop: the saga finishes its events and checkpoints.
    pub async fn stop(self) -> SagaHandle {
        let _ = self.stop.send(());
        tokio::time::timeout(WAIT_MAX, self.task)
            .await
            .expect("the saga stops within the limit")
            .unwrap();
        assert_eq!(self.handle.status().state, SagaState::Stopped);
        self.handle
    }

    /// A crash: the saga's task is dropped wherever it is, with the
    /// commands it was sending.
    pub async fn kill(self) {
        self.task.abort();
        let ended = tokio::time::timeout(WAIT_MAX, self.task).await;
        assert!(ended.is_ok(), "an aborted saga ends");
    }
}
