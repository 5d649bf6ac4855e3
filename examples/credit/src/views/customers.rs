//! The `customers` view: one row per registered customer with its credit
//! position, kept so that "customers whose credit is used up" is the plain
//! indexed query `WHERE available = 0`.

use projector::sqlx;
use std::collections::HashMap;

use async_trait::async_trait;
use event_store::RecordedEvent;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::events::{
    self, CreditLimitChanged, CreditMovement, CustomerForgotten, CustomerRegistered, OrderRef,
};
use super::rows::{self, AnyQuery, Stamp, ViewRow};
use super::sql;
use projector::Schema;
use projector::personal::PersonalData;
use projector::{ApplyError, Projection, ViewTx};

/// Builds the `customers` table.
#[derive(Debug, Clone, Copy, Default)]
pub struct CustomersProjection;

/// The columns of `customers`, in the order rows are read and written.
pub const COLUMNS: [&str; 16] = [
    "id",
    "name",
    "name_folded",
    "email",
    "currency",
    "credit_limit",
    "reserved",
    "available",
    "orders_placed",
    "orders_approved",
    "orders_rejected",
    "orders_cancelled",
    "version",
    "registered_at",
    "updated_at",
    "position",
];

/// Columns set when a customer registers that only `CustomerForgotten`
/// changes afterwards (a second registration is refused): the upsert
/// leaves them, and the name index, alone, and an erasure rewrites the
/// personal ones with a statement of its own. A new event that changes one
/// must take it out of here.
const FIXED_COLUMNS: [&str; 4] = ["name", "name_folded", "email", "registered_at"];

/// What an erasure rewrites.
const PERSONAL_COLUMNS: [&str; 3] = ["name", "name_folded", "email"];

#[derive(Debug, Clone, PartialEq)]
struct Customer {
    id: String,
    personal: PersonalData,
    currency: String,
    credit_limit: i64,
    reserved: i64,
    placed: i64,
    approved: i64,
    rejected: i64,
    cancelled: i64,
    registered_at: i64,
    stamp: Stamp,
}

impl Customer {
    /// Credit left: never below zero (a limit lowered under the
    /// reservations leaves nothing to reserve, not a debt).
    fn available(&self) -> i64 {
        self.credit_limit.saturating_sub(self.reserved).max(0)
    }

    /// Marks the row as changed by `event`.
    fn touched_by(&mut self, event: &RecordedEvent) {
        self.stamp.touched_by(event, events::CUSTOMER_STREAM_PREFIX);
    }
}

impl ViewRow for Customer {
    const KIND: &'static str = "customer";
    const COLUMNS: &'static [&'static str] = &COLUMNS;
    const FIXED_COLUMNS: &'static [&'static str] = &FIXED_COLUMNS;

    fn id(&self) -> &str {
        &self.id
    }

    fn from_row(row: &AnyRow) -> Result<Self, ApplyError> {
        let name: String = row.try_get(1)?;
        let name_folded: String = row.try_get(2)?;
        let email: String = row.try_get(3)?;
        Ok(Self {
            id: row.try_get(0)?,
            personal: PersonalData {
                name,
                name_folded,
                email,
            },
            currency: row.try_get(4)?,
            credit_limit: row.try_get(5)?,
            reserved: row.try_get(6)?,
            placed: row.try_get(8)?,
            approved: row.try_get(9)?,
            rejected: row.try_get(10)?,
            cancelled: row.try_get(11)?,
            registered_at: row.try_get(13)?,
            stamp: Stamp {
                version: row.try_get(12)?,
                updated_at: row.try_get(14)?,
                position: row.try_get(15)?,
            },
        })
    }

    fn bind(&self, query: AnyQuery) -> AnyQuery {
        query
            .bind(self.id.clone())
            .bind(self.personal.name.clone())
            .bind(self.personal.name_folded.clone())
            .bind(self.personal.email.clone())
            .bind(self.currency.clone())
            .bind(self.credit_limit)
            .bind(self.reserved)
            .bind(self.available())
            .bind(self.placed)
            .bind(self.approved)
            .bind(self.rejected)
            .bind(self.cancelled)
            .bind(self.stamp.version)
            .bind(self.registered_at)
            .bind(self.stamp.updated_at)
            .bind(self.stamp.position)
    }
}

/// A decoded event, reduced to what the view needs.
enum Change {
    Registered(CustomerRegistered),
    Forgotten(CustomerForgotten),
    LimitChanged(CreditLimitChanged),
    Reserved(CreditMovement),
    Released(CreditMovement),
    Placed(OrderRef),
    Approved(OrderRef),
    Rejected(OrderRef),
    Cancelled(OrderRef),
}

impl Change {
    fn decode(event: &RecordedEvent) -> Result<Option<Self>, ApplyError> {
        let bad = |e: serde_json::Error| {
            ApplyError::event(event, format!("{} does not decode: {e}", event.event_type))
        };
        Ok(Some(match event.event_type.as_str() {
            events::CUSTOMER_REGISTERED => Change::Registered(event.data_as().map_err(bad)?),
            events::CUSTOMER_FORGOTTEN => Change::Forgotten(event.data_as().map_err(bad)?),
            events::CREDIT_LIMIT_CHANGED => Change::LimitChanged(event.data_as().map_err(bad)?),
            events::CREDIT_RESERVED => Change::Reserved(event.data_as().map_err(bad)?),
            events::CREDIT_RELEASED => Change::Released(event.data_as().map_err(bad)?),
            events::ORDER_PLACED => Change::Placed(event.data_as().map_err(bad)?),
            events::ORDER_APPROVED => Change::Approved(event.data_as().map_err(bad)?),
            events::ORDER_REJECTED => Change::Rejected(event.data_as().map_err(bad)?),
            events::ORDER_CANCELLED => Change::Cancelled(event.data_as().map_err(bad)?),
            _ => return Ok(None),
        }))
    }

    fn customer_id(&self) -> &str {
        match self {
            Change::Registered(e) => &e.customer_id,
            Change::Forgotten(e) => &e.customer_id,
            Change::LimitChanged(e) => &e.customer_id,
            Change::Reserved(e) | Change::Released(e) => &e.customer_id,
            Change::Placed(e)
            | Change::Approved(e)
            | Change::Rejected(e)
            | Change::Cancelled(e) => &e.customer_id,
        }
    }
}

#[async_trait]
impl Projection for CustomersProjection {
    fn name(&self) -> &'static str {
        "customers"
    }

    fn version(&self) -> u32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["customers"]
    }

    fn schema(&self) -> Schema {
        // The handler finds rows by their id only: the other indexes are
        // built after a rebuild's load.
        Schema::new(
            include_str!("schema/customers.sqlite.sql"),
            include_str!("schema/customers.postgres.sql"),
        )
        .indexes_after_load()
    }

    fn event_types(&self) -> &'static [&'static str] {
        &[
            events::CUSTOMER_REGISTERED,
            events::CUSTOMER_FORGOTTEN,
            events::CREDIT_LIMIT_CHANGED,
            events::CREDIT_RESERVED,
            events::CREDIT_RELEASED,
            events::ORDER_PLACED,
            events::ORDER_APPROVED,
            events::ORDER_REJECTED,
            events::ORDER_CANCELLED,
        ]
    }

    async fn apply(&self, tx: &mut ViewTx<'_>, batch: &[RecordedEvent]) -> Result<(), ApplyError> {
        let table = tx.table("customers")?;
        let changes = rows::decode_batch(batch, Change::decode)?;
        let ids = rows::distinct(changes.iter().map(|(_, c)| c.customer_id()).collect());
        let mut customers: HashMap<String, Customer> = rows::load(tx, table, &ids).await?;
        let mut changed: Vec<String> = Vec::with_capacity(ids.len());
        let mut forgotten: Vec<String> = Vec::new();
        for (event, change) in changes {
            let id = change.customer_id().to_owned();
            if let Change::Forgotten(e) = &change {
                forgotten.push(e.customer_id.clone());
            }
            if fold(&mut customers, event, change)? {
                changed.push(id);
            }
        }
        rows::write(tx, table, &rows::distinct(changed), &customers).await?;
        erase(tx, table, &rows::distinct(forgotten)).await?;
        Ok(())
    }
}

/// Folds one event into the rows of the batch; true when it changed one.
///
/// Orders name their customer without the command side checking that the
/// customer exists (placing an order touches the order alone; the saga
/// finds out and rejects it), so an order event may name an id nobody
/// registered, or not yet: the customers view has no row to count it on
/// and leaves it to the orders view. Credit events, limit changes and
/// erasures are decided by the customer aggregate itself and only ever
/// name a registered customer: one that does not is an event the command
/// side cannot produce, and stops the projection.
fn fold(
    customers: &mut HashMap<String, Customer>,
    event: &RecordedEvent,
    change: Change,
) -> Result<bool, ApplyError> {
    let unknown = |id: &str| {
        ApplyError::event(
            event,
            format!(
                "{} for customer {id}, who is not registered",
                event.event_type
            ),
        )
    };
    if let Change::Registered(e) = change {
        if customers.contains_key(&e.customer_id) {
            return Err(ApplyError::event(
                event,
                format!("customer {} is already registered", e.customer_id),
            ));
        }
        let mut customer = Customer {
            id: e.customer_id.clone(),
            personal: PersonalData::new(&e.name, &e.email),
            currency: e.credit_limit.currency,
            credit_limit: e.credit_limit.amount,
            reserved: 0,
            placed: 0,
            approved: 0,
            rejected: 0,
            cancelled: 0,
            registered_at: event.timestamp.0,
            stamp: Stamp::default(),
        };
        customer.touched_by(event);
        customers.insert(e.customer_id, customer);
        return Ok(true);
    }
    let id = change.customer_id().to_owned();
    let Some(customer) = customers.get_mut(&id) else {
        return match change {
            Change::Placed(_)
            | Change::Approved(_)
            | Change::Rejected(_)
            | Change::Cancelled(_) => Ok(false),
            _ => Err(unknown(&id)),
        };
    };
    let same_currency = |customer: &Customer, currency: &str| {
        if customer.currency == currency {
            Ok(())
        } else {
            Err(ApplyError::event(
                event,
                format!(
                    "{} in {currency} for customer {id}, whose credit is in {}",
                    event.event_type, customer.currency
                ),
            ))
        }
    };
    match change {
        Change::Registered(_) => {}
        Change::Forgotten(_) => customer.personal = PersonalData::erased(),
        Change::LimitChanged(e) => {
            // A currency change only makes sense with nothing reserved in
            // the old one.
            if customer.reserved != 0 {
                same_currency(customer, &e.credit_limit.currency)?;
            }
            customer.currency = e.credit_limit.currency;
            customer.credit_limit = e.credit_limit.amount;
        }
        Change::Reserved(e) => {
            same_currency(customer, &e.amount.currency)?;
            customer.reserved = customer.reserved.saturating_add(e.amount.amount);
        }
        Change::Released(e) => {
            same_currency(customer, &e.amount.currency)?;
            customer.reserved = customer.reserved.saturating_sub(e.amount.amount);
        }
        Change::Placed(_) => customer.placed += 1,
        Change::Approved(_) => customer.approved += 1,
        Change::Rejected(_) => customer.rejected += 1,
        Change::Cancelled(_) => customer.cancelled += 1,
    }
    customer.touched_by(event);
    Ok(true)
}

/// Rewrites the personal columns of forgotten customers, which the upsert
/// leaves alone.
async fn erase(tx: &mut ViewTx<'_>, table: &str, forgotten: &[String]) -> Result<(), ApplyError> {
    if forgotten.is_empty() {
        return Ok(());
    }
    // The old values must leave the disk too, not only the row.
    tx.erased_personal_data();
    let statement = sql::update_by_id(tx.dialect(), table, &PERSONAL_COLUMNS);
    let erased = PersonalData::erased();
    for id in forgotten {
        sqlx::query(sqlx::AssertSqlSafe(statement.clone()))
            .bind(erased.name.clone())
            .bind(erased.name_folded.clone())
            .bind(erased.email.clone())
            .bind(id.clone())
            .execute(tx.conn())
            .await?;
    }
    Ok(())
}
