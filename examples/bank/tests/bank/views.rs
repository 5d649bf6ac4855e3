//! The views from the events alone, with `annals::testkit`: a transfer
//! that completed and one that came back from a closed account, a holder
//! forgotten, folded by the real projector into SQLite and PostgreSQL, read
//! as rows and through the bank's query routes.

use annals::testkit::ProjectionTest;
use annals_bank::account::{
    AccountClosed, AccountEvent, AccountOpened, HolderForgotten, HolderName, MoneyDeposited,
    TransferReceived, TransferReturned, TransferSent, TransferSettled,
};
use annals_bank::transfer::{
    TransferCompleted, TransferCredited, TransferDebited, TransferEvent, TransferFailed,
    TransferRequested,
};
use annals_bank::view::{AccountsView, TransfersView, queries};
use annals_bank::{Account, Amount, Currency, Transfer};
use serde_json::json;
use uuid::Uuid;

use crate::world::{eur, money};

/// Alice pays Bob 25.00, tries to pay Carol 10.00 after Carol closed her
/// account and gets it back; Bob is forgotten.
struct Story {
    alice: Uuid,
    bob: Uuid,
    carol: Uuid,
    paid: Uuid,
    returned: Uuid,
}

impl Story {
    fn new() -> Story {
        // Time-ordered: the order of rows and pages.
        Story {
            alice: Uuid::now_v7(),
            bob: Uuid::now_v7(),
            carol: Uuid::now_v7(),
            paid: Uuid::now_v7(),
            returned: Uuid::now_v7(),
        }
    }

    fn opened(account_id: Uuid, holder: &str, currency: Currency) -> AccountEvent {
        AccountEvent::Opened(AccountOpened {
            account_id,
            holder: HolderName::parse(holder).unwrap(),
            currency,
            overdraft_limit: Amount::new(0).unwrap(),
        })
    }

    fn requested(&self, transfer_id: Uuid, to_account: Uuid, amount: i64) -> TransferEvent {
        TransferEvent::Requested(TransferRequested {
            transfer_id,
            from_account: self.alice,
            to_account,
            amount: eur(amount),
        })
    }

    /// The accounts' events.
    async fn accounts(&self, view: &ProjectionTest) {
        let (alice, paid, returned) = (self.alice, self.paid, self.returned);
        view.given::<Account>(
            alice,
            [
                Story::opened(alice, "Alice Adams", Currency::Eur),
                AccountEvent::Deposited(MoneyDeposited {
                    account_id: alice,
                    amount: eur(10_000),
                }),
                AccountEvent::TransferSent(TransferSent {
                    account_id: alice,
                    transfer_id: paid,
                    amount: eur(2_500),
                }),
            ],
        )
        .await;
        view.given::<Account>(
            self.bob,
            [
                Story::opened(self.bob, "Bob Brown", Currency::Eur),
                AccountEvent::TransferReceived(TransferReceived {
                    account_id: self.bob,
                    transfer_id: paid,
                    amount: eur(2_500),
                }),
                AccountEvent::HolderForgotten(HolderForgotten {
                    account_id: self.bob,
                }),
            ],
        )
        .await;
        view.given::<Account>(
            self.carol,
            [
                Story::opened(self.carol, "Carol Clark", Currency::Usd),
                AccountEvent::Closed(AccountClosed {
                    account_id: self.carol,
                }),
            ],
        )
        .await;
        view.given::<Account>(
            alice,
            [
                AccountEvent::TransferSettled(TransferSettled {
                    account_id: alice,
                    transfer_id: paid,
                }),
                AccountEvent::TransferSent(TransferSent {
                    account_id: alice,
                    transfer_id: returned,
                    amount: eur(1_000),
                }),
                AccountEvent::TransferReturned(TransferReturned {
                    account_id: alice,
                    transfer_id: returned,
                    amount: money(1_000, Currency::Eur),
                }),
            ],
        )
        .await;
    }

    /// The transfers' events.
    async fn transfers(&self, view: &ProjectionTest) {
        let paid = self.paid;
        view.given::<Transfer>(
            paid,
            [
                self.requested(paid, self.bob, 2_500),
                TransferEvent::Debited(TransferDebited { transfer_id: paid }),
                TransferEvent::Credited(TransferCredited { transfer_id: paid }),
                TransferEvent::Completed(TransferCompleted { transfer_id: paid }),
            ],
        )
        .await;
        view.given::<Transfer>(
            self.returned,
            [
                self.requested(self.returned, self.carol, 1_000),
                TransferEvent::Debited(TransferDebited {
                    transfer_id: self.returned,
                }),
                TransferEvent::Failed(TransferFailed {
                    transfer_id: self.returned,
                    rule: "account-closed".into(),
                    reason: "the account is closed".into(),
                    debit_returned: true,
                }),
            ],
        )
        .await;
    }
}

async fn accounts_show_balances_transfers_and_erasure(view: ProjectionTest) {
    let story = Story::new();
    story.accounts(&view).await;

    let rows = view
        .rows(
            "SELECT id, holder, currency, balance, status, transfers_sent, transfers_received, \
             transfers_returned, transfers_in_flight, version FROM accounts ORDER BY id",
        )
        .await;
    assert_eq!(
        rows,
        [
            json!({"id": story.alice.to_string(), "holder": "Alice Adams", "currency": "EUR",
                   "balance": 7_500, "status": "open", "transfers_sent": 2,
                   "transfers_received": 0, "transfers_returned": 1, "transfers_in_flight": 0,
                   "version": 6}),
            json!({"id": story.bob.to_string(), "holder": event_store::ERASED, "currency": "EUR",
                   "balance": 2_500, "status": "open", "transfers_sent": 0,
                   "transfers_received": 1, "transfers_returned": 0, "transfers_in_flight": 0,
                   "version": 3}),
            json!({"id": story.carol.to_string(), "holder": "Carol Clark", "currency": "USD",
                   "balance": 0, "status": "closed", "transfers_sent": 0,
                   "transfers_received": 0, "transfers_returned": 0, "transfers_in_flight": 0,
                   "version": 2}),
        ]
    );

    let routes = queries();
    let alice = view
        .get(&routes, &format!("/accounts/{}", story.alice))
        .await;
    assert_eq!(alice.status, 200, "{}", alice.body);
    assert_eq!(alice.header("etag"), Some("\"6\""));
    assert_eq!(alice.body["balance"], 7_500);
    assert_eq!(
        alice.body["transfers"],
        json!({"sent": 2, "received": 0, "returned": 1, "in_flight": 0})
    );
    let closed = view.get(&routes, "/accounts?status=closed").await;
    assert_eq!(closed.status, 200, "{}", closed.body);
    assert_eq!(closed.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(closed.body["items"][0]["id"], story.carol.to_string());
    let euros = view.get(&routes, "/accounts?currency=EUR&limit=1").await;
    assert_eq!(euros.body["items"][0]["id"], story.alice.to_string());
    assert!(euros.body["next_cursor"].is_string(), "{}", euros.body);
    let frozen = view.get(&routes, "/accounts?status=frozen").await;
    assert_eq!(frozen.status, 400, "{}", frozen.body);
    let unknown = view
        .get(&routes, &format!("/accounts/{}", Uuid::now_v7()))
        .await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
}

async fn transfers_show_how_far_each_got(view: ProjectionTest) {
    let story = Story::new();
    story.transfers(&view).await;

    let rows = view
        .rows("SELECT id, status, amount, currency, failure_rule FROM transfers ORDER BY id")
        .await;
    assert_eq!(
        rows,
        [
            json!({"id": story.paid.to_string(), "status": "completed", "amount": 2_500,
                   "currency": "EUR", "failure_rule": null}),
            json!({"id": story.returned.to_string(), "status": "failed", "amount": 1_000,
                   "currency": "EUR", "failure_rule": "account-closed"}),
        ]
    );

    let routes = queries();
    let failed = view.get(&routes, "/transfers?status=failed").await;
    assert_eq!(failed.status, 200, "{}", failed.body);
    let items = failed.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{}", failed.body);
    assert_eq!(
        items[0]["failure"],
        json!({"rule": "account-closed", "reason": "the account is closed"})
    );
    let from_alice = view
        .get(&routes, &format!("/transfers?from_account={}", story.alice))
        .await;
    assert_eq!(from_alice.body["items"].as_array().unwrap().len(), 2);
    let paid = view
        .get(&routes, &format!("/transfers/{}", story.paid))
        .await;
    assert_eq!(paid.status, 200, "{}", paid.body);
    assert_eq!(paid.body["status"], "completed");
    assert_eq!(
        paid.body["amount"],
        json!({"amount": 2_500, "currency": "EUR"})
    );
    assert_eq!(paid.header("etag"), Some("\"4\""));
}

#[tokio::test]
async fn accounts_show_balances_transfers_and_erasure_in_sqlite() {
    accounts_show_balances_transfers_and_erasure(ProjectionTest::sqlite(AccountsView).await).await;
}

#[tokio::test]
async fn accounts_show_balances_transfers_and_erasure_in_postgres() {
    let Some(view) = ProjectionTest::postgres(AccountsView).await else {
        return;
    };
    accounts_show_balances_transfers_and_erasure(view).await;
}

#[tokio::test]
async fn transfers_show_how_far_each_got_in_sqlite() {
    transfers_show_how_far_each_got(ProjectionTest::sqlite(TransfersView).await).await;
}

#[tokio::test]
async fn transfers_show_how_far_each_got_in_postgres() {
    let Some(view) = ProjectionTest::postgres(TransfersView).await else {
        return;
    };
    transfers_show_how_far_each_got(view).await;
}
