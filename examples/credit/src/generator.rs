//! Realistic event streams of the reference domain, for tests and
//! benchmarks: customers register and get their credit limit changed (now
//! and then to 0, which uses their credit up); orders are placed, then
//! either reserve credit and are approved or are rejected for lack of
//! credit; approved orders are sometimes cancelled and release their
//! credit. Many orders are in flight at once, so their events interleave in
//! the log as they would with concurrent clients.
//!
//! The generator is deterministic for a seed and keeps a model of what the
//! views must show, computed independently of the projections.

use std::collections::HashMap;

use event_store::{EventStore, ExpectedVersion, NewEvent, Position, StreamAppend, StreamId};
use serde::Serialize;

use crate::views::events::{
    self, CreditLimitChanged, CreditMovement, CustomerRegistered, Money, OrderCancelled, OrderLine,
    OrderPlaced, OrderRef, OrderRejected,
};

/// What the customers view must show for one customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerModel {
    pub id: String,
    pub name: String,
    pub email: String,
    pub currency: String,
    pub credit_limit: i64,
    pub reserved: i64,
    pub placed: i64,
    pub approved: i64,
    pub rejected: i64,
    pub cancelled: i64,
    /// Version of the customer's stream.
    pub version: u64,
}

impl CustomerModel {
    pub fn available(&self) -> i64 {
        (self.credit_limit - self.reserved).max(0)
    }
}

/// What the orders view must show for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderModel {
    pub id: String,
    pub customer_id: String,
    pub currency: String,
    pub total: i64,
    pub line_count: i64,
    pub status: &'static str,
    pub reason: Option<String>,
    /// Version of the order's stream.
    pub version: u64,
}

/// The next step of an order in flight.
#[derive(Debug, Clone)]
enum Saga {
    /// Placed: reserve its credit, or reject it.
    Decide { order: String, customer: usize },
    /// Credit reserved: approve it.
    Approve { order: String, customer: usize },
    /// Cancelled after approval: release its credit.
    Release { order: String, customer: usize },
}

/// SplitMix64: tiny, fast and good enough to drive a simulation; a seed
/// gives the same log on every machine.
#[derive(Debug, Clone)]
struct Rng(u64);

/// What the generated aggregate ids look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ids {
    /// Version 7, time-ordered: what the command API assigns when a client
    /// leaves the id to it.
    TimeOrdered,
    /// Version 4, random: what clients that choose their own ids often send.
    Random,
}

/// The start of the generated ids' clock (2026-01-01T00:00:00Z, in ms).
const ID_CLOCK_START_MS: u64 = 1_767_225_600_000;

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, low: i64, high: i64) -> i64 {
        low + self.below((high - low + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// A random version-4 UUID in its text form.
    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    /// A version-7 UUID at `ms` (milliseconds since the epoch), random
    /// below the timestamp.
    fn uuid_v7(&mut self, ms: u64) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "{:08x}-{:04x}-7{:03x}-{:04x}-{:012x}",
            (ms >> 16) & 0xffff_ffff,
            ms & 0xffff,
            a & 0x0fff,
            0x8000 | (b >> 48 & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }
}

const FIRST_NAMES: &[&str] = &[
    "Alice", "Bob", "Chloé", "Dmitri", "Émile", "Fatima", "Günther", "Hana", "Ingrid", "José",
    "Kenji", "Łukasz", "Maria", "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Søren", "Tomás",
    "Uma", "Viktor", "Wei", "Xavier", "Yara", "Zoë",
];
const LAST_NAMES: &[&str] = &[
    "Andersen", "Brown", "Castro", "Dubois", "Eriksson", "Fischer", "García", "Horvat", "Ivanova",
    "Jensen", "Kowalski", "López", "Müller", "Nakamura", "O'Brien", "Petrov", "Quinn", "Rossi",
    "Schmidt", "Tanaka", "Ünal", "Vargas", "Weber", "Yilmaz", "Zhang",
];
const CURRENCIES: &[&str] = &["EUR", "EUR", "EUR", "USD", "GBP"];
const REJECTION: &str = "credit limit exceeded";
const CANCELLATIONS: &[Option<&str>] = &[
    None,
    Some("customer changed their mind"),
    Some("out of stock"),
];
/// Orders in flight at once.
const IN_FLIGHT_MAX: usize = 64;

/// Generates reference-domain appends. See the module documentation.
#[derive(Debug, Clone)]
pub struct Generator {
    rng: Rng,
    ids: Ids,
    /// The generated ids' clock, in ms after [`ID_CLOCK_START_MS`]: a
    /// counter, so that a seed gives the same ids on every run.
    clock_ms: u64,
    customers: Vec<CustomerModel>,
    orders: HashMap<String, OrderModel>,
    /// Approved orders that may still be cancelled.
    cancellable: Vec<(String, usize)>,
    in_flight: Vec<Saga>,
    versions: HashMap<String, u64>,
    events: u64,
}

impl Generator {
    /// The next aggregate id.
    fn next_id(&mut self) -> String {
        match self.ids {
            Ids::Random => self.rng.uuid(),
            Ids::TimeOrdered => {
                // A few ids per millisecond, like a busy command API.
                self.clock_ms += self.rng.below(2);
                self.rng.uuid_v7(ID_CLOCK_START_MS + self.clock_ms)
            }
        }
    }

    /// A generator of time-ordered ids, as the command API assigns them.
    pub fn new(seed: u64) -> Self {
        Self::with_ids(seed, Ids::TimeOrdered)
    }

    pub fn with_ids(seed: u64, ids: Ids) -> Self {
        Self {
            rng: Rng(seed),
            ids,
            clock_ms: 0,
            customers: Vec::new(),
            orders: HashMap::new(),
            cancellable: Vec::new(),
            in_flight: Vec::new(),
            versions: HashMap::new(),
            events: 0,
        }
    }

    /// Customers as the views must show them.
    pub fn customers(&self) -> &[CustomerModel] {
        &self.customers
    }

    /// Orders as the views must show them.
    pub fn orders(&self) -> impl Iterator<Item = &OrderModel> {
        self.orders.values()
    }

    /// Events generated so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The next command's outcome: events for one stream, with the version
    /// the stream must be at.
    pub fn next_append(&mut self) -> event_store::Result<StreamAppend> {
        loop {
            let roll = self.rng.below(100);
            let step = if self.customers.is_empty() || roll < 8 {
                Some(self.register()?)
            } else if roll < 11 {
                Some(self.change_limit()?)
            } else if roll < 15 {
                self.cancel()?
            } else if roll < 45 && self.in_flight.len() < IN_FLIGHT_MAX {
                Some(self.place()?)
            } else if !self.in_flight.is_empty() {
                Some(self.advance()?)
            } else {
                Some(self.place()?)
            };
            if let Some(append) = step {
                return Ok(append);
            }
        }
    }

    fn append<T: Serialize>(
        &mut self,
        stream: String,
        event_type: &str,
        data: &T,
    ) -> event_store::Result<StreamAppend> {
        // Generated ids are hex digits and dashes behind a fixed prefix,
        // always a valid stream id; checked before any state changes.
        let id = StreamId::new(&stream)?;
        let version = self.versions.entry(stream.clone()).or_insert(0);
        let expected = if *version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(*version)
        };
        *version += 1;
        self.events += 1;
        let event = NewEvent::json(event_type, data)
            .map_err(|e| event_store::Error::InvalidAppend(e.to_string()))?
            .with_schema_version(events::schema_version(event_type));
        Ok(StreamAppend::new(id, expected, vec![event]))
    }

    fn customer_stream(id: &str) -> String {
        format!("{}{id}", events::CUSTOMER_STREAM_PREFIX)
    }

    fn order_stream(id: &str) -> String {
        format!("{}{id}", events::ORDER_STREAM_PREFIX)
    }

    /// Appends an event to the stream of the customer at `customer`, whose
    /// model takes the stream's new version.
    fn append_to_customer<T: Serialize>(
        &mut self,
        customer: usize,
        event_type: &str,
        data: &T,
    ) -> event_store::Result<StreamAppend> {
        let stream = Self::customer_stream(&self.customers[customer].id);
        let append = self.append(stream.clone(), event_type, data)?;
        self.customers[customer].version = self.versions[&stream];
        Ok(append)
    }

    /// Appends a reservation or release of `total` for `order`; the caller
    /// books the amount.
    fn move_credit(
        &mut self,
        customer: usize,
        event_type: &str,
        order: String,
        total: i64,
    ) -> event_store::Result<StreamAppend> {
        let c = &self.customers[customer];
        let movement = CreditMovement {
            customer_id: c.id.clone(),
            order_id: order,
            amount: Money {
                amount: total,
                currency: c.currency.clone(),
            },
        };
        self.append_to_customer(customer, event_type, &movement)
    }

    /// Appends the event that moves `order` to `status`; its model shows
    /// the status and reason as the orders view does, and the stream's new
    /// version.
    fn move_order<T: Serialize>(
        &mut self,
        order: &str,
        event_type: &str,
        data: &T,
        status: &'static str,
        reason: Option<String>,
    ) -> event_store::Result<StreamAppend> {
        let stream = Self::order_stream(order);
        let append = self.append(stream.clone(), event_type, data)?;
        let version = self.versions[&stream];
        if let Some(o) = self.orders.get_mut(order) {
            o.status = status;
            o.reason = reason;
            o.version = version;
        }
        Ok(append)
    }

    fn register(&mut self) -> event_store::Result<StreamAppend> {
        let id = self.next_id();
        let first = *self.rng.pick(FIRST_NAMES);
        let last = *self.rng.pick(LAST_NAMES);
        let name = format!("{first} {last}");
        let email = format!(
            "{}.{}{}@example.com",
            first.to_lowercase(),
            last.to_lowercase().replace('\'', ""),
            self.customers.len()
        );
        let currency = (*self.rng.pick(CURRENCIES)).to_owned();
        let limit = self.rng.range(10, 500) * 1_000;
        let stream = Self::customer_stream(&id);
        let append = self.append(
            stream.clone(),
            events::CUSTOMER_REGISTERED,
            &CustomerRegistered {
                customer_id: id.clone(),
                name: name.clone(),
                email: email.clone(),
                credit_limit: Money {
                    amount: limit,
                    currency: currency.clone(),
                },
            },
        )?;
        self.customers.push(CustomerModel {
            id,
            name,
            email,
            currency,
            credit_limit: limit,
            reserved: 0,
            placed: 0,
            approved: 0,
            rejected: 0,
            cancelled: 0,
            version: self.versions[&stream],
        });
        Ok(append)
    }

    fn change_limit(&mut self) -> event_store::Result<StreamAppend> {
        let index = self.rng.below(self.customers.len() as u64) as usize;
        // One change in five blocks the customer: limit 0, credit used up.
        let limit = if self.rng.below(5) == 0 {
            0
        } else {
            self.rng.range(10, 500) * 1_000
        };
        let c = &self.customers[index];
        let changed = CreditLimitChanged {
            customer_id: c.id.clone(),
            credit_limit: Money {
                amount: limit,
                currency: c.currency.clone(),
            },
        };
        let append = self.append_to_customer(index, events::CREDIT_LIMIT_CHANGED, &changed)?;
        self.customers[index].credit_limit = limit;
        Ok(append)
    }

    fn place(&mut self) -> event_store::Result<StreamAppend> {
        let customer = self.rng.below(self.customers.len() as u64) as usize;
        let order = self.next_id();
        let currency = self.customers[customer].currency.clone();
        let lines: Vec<OrderLine> = (0..self.rng.range(1, 4))
            .map(|_| OrderLine {
                sku: format!("SKU-{:05}", self.rng.below(20_000)),
                quantity: self.rng.range(1, 5),
                unit_price: Money {
                    amount: self.rng.range(1, 300) * 50,
                    currency: currency.clone(),
                },
            })
            .collect();
        let total: i64 = lines.iter().map(|l| l.quantity * l.unit_price.amount).sum();
        let customer_id = self.customers[customer].id.clone();
        let stream = Self::order_stream(&order);
        let append = self.append(
            stream.clone(),
            events::ORDER_PLACED,
            &OrderPlaced {
                order_id: order.clone(),
                customer_id: customer_id.clone(),
                lines: lines.clone(),
                total: Money {
                    amount: total,
                    currency: currency.clone(),
                },
            },
        )?;
        self.customers[customer].placed += 1;
        self.orders.insert(
            order.clone(),
            OrderModel {
                id: order.clone(),
                customer_id,
                currency,
                total,
                line_count: lines.len() as i64,
                status: "pending",
                reason: None,
                version: self.versions[&stream],
            },
        );
        self.in_flight.push(Saga::Decide { order, customer });
        Ok(append)
    }

    fn cancel(&mut self) -> event_store::Result<Option<StreamAppend>> {
        if self.cancellable.is_empty() || self.in_flight.len() >= IN_FLIGHT_MAX {
            return Ok(None);
        }
        let i = self.rng.below(self.cancellable.len() as u64) as usize;
        let (order, customer) = self.cancellable.swap_remove(i);
        let reason = self.rng.pick(CANCELLATIONS).map(str::to_owned);
        let cancelled = OrderCancelled {
            order_id: order.clone(),
            customer_id: self.customers[customer].id.clone(),
            reason: reason.clone(),
        };
        let append = self.move_order(
            &order,
            events::ORDER_CANCELLED,
            &cancelled,
            "cancelled",
            reason,
        )?;
        self.customers[customer].cancelled += 1;
        self.in_flight.push(Saga::Release { order, customer });
        Ok(Some(append))
    }

    fn advance(&mut self) -> event_store::Result<StreamAppend> {
        let i = self.rng.below(self.in_flight.len() as u64) as usize;
        let saga = self.in_flight.swap_remove(i);
        match saga {
            Saga::Decide { order, customer } => {
                let total = self.orders.get(&order).map_or(0, |o| o.total);
                if total <= self.customers[customer].available() {
                    let append =
                        self.move_credit(customer, events::CREDIT_RESERVED, order.clone(), total)?;
                    self.customers[customer].reserved += total;
                    self.in_flight.push(Saga::Approve { order, customer });
                    Ok(append)
                } else {
                    let rejected = OrderRejected {
                        order_id: order.clone(),
                        customer_id: self.customers[customer].id.clone(),
                        reason: REJECTION.to_owned(),
                    };
                    let append = self.move_order(
                        &order,
                        events::ORDER_REJECTED,
                        &rejected,
                        "rejected",
                        Some(REJECTION.to_owned()),
                    )?;
                    self.customers[customer].rejected += 1;
                    Ok(append)
                }
            }
            Saga::Approve { order, customer } => {
                let approved = OrderRef {
                    order_id: order.clone(),
                    customer_id: self.customers[customer].id.clone(),
                };
                let append =
                    self.move_order(&order, events::ORDER_APPROVED, &approved, "approved", None)?;
                self.customers[customer].approved += 1;
                self.cancellable.push((order, customer));
                Ok(append)
            }
            Saga::Release { order, customer } => {
                let total = self.orders.get(&order).map_or(0, |o| o.total);
                let append = self.move_credit(customer, events::CREDIT_RELEASED, order, total)?;
                self.customers[customer].reserved -= total;
                Ok(append)
            }
        }
    }
}

/// Appends at least `events` generated events to `store`, packing
/// consecutive appends to distinct streams into one atomic multi-stream
/// append (up to 64 streams), as a busy command side's group commits would.
/// Returns the head position after the last append.
pub async fn append_events(
    store: &dyn EventStore,
    generator: &mut Generator,
    events: u64,
) -> event_store::Result<Position> {
    const STREAMS_PER_APPEND_MAX: usize = 64;
    let target = generator.events() + events;
    let mut head = store.head().await?;
    let mut batch: Vec<StreamAppend> = Vec::new();
    let mut pending: Option<StreamAppend> = None;
    while generator.events() < target || pending.is_some() {
        let next = match pending.take() {
            Some(p) => p,
            None => generator.next_append()?,
        };
        if batch.iter().any(|a| a.stream_id == next.stream_id)
            || batch.len() >= STREAMS_PER_APPEND_MAX
        {
            pending = Some(next);
            head = flush(store, &mut batch).await?.max(head);
            continue;
        }
        batch.push(next);
        if generator.events() >= target && pending.is_none() {
            break;
        }
    }
    if !batch.is_empty() {
        head = flush(store, &mut batch).await?.max(head);
    }
    Ok(head)
}

async fn flush(
    store: &dyn EventStore,
    batch: &mut Vec<StreamAppend>,
) -> event_store::Result<Position> {
    let results = store.append_many(std::mem::take(batch)).await?;
    Ok(results
        .iter()
        .map(|r| r.last_position)
        .max()
        .unwrap_or(Position::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_log() {
        let mut a = Generator::new(7);
        let mut b = Generator::new(7);
        for _ in 0..500 {
            let (x, y) = (a.next_append().unwrap(), b.next_append().unwrap());
            assert_eq!(x.stream_id, y.stream_id);
            assert_eq!(x.events[0].event_type, y.events[0].event_type);
            assert_eq!(x.events[0].data, y.events[0].data);
        }
    }

    #[test]
    fn the_mix_covers_every_event_type_and_keeps_the_model_consistent() {
        let mut generator = Generator::new(1);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..5_000 {
            let append = generator.next_append().unwrap();
            seen.insert(append.events[0].event_type.clone());
        }
        for t in [
            events::CUSTOMER_REGISTERED,
            events::CREDIT_LIMIT_CHANGED,
            events::CREDIT_RESERVED,
            events::CREDIT_RELEASED,
            events::ORDER_PLACED,
            events::ORDER_APPROVED,
            events::ORDER_REJECTED,
            events::ORDER_CANCELLED,
        ] {
            assert!(seen.contains(t), "{t} never generated");
        }
        // Credit is reserved exactly for approved orders, orders reserved
        // but not yet approved, and cancelled orders not yet released.
        let mut expected: HashMap<usize, i64> = HashMap::new();
        let index: HashMap<&str, usize> = generator
            .customers()
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id.as_str(), i))
            .collect();
        for o in generator.orders().filter(|o| o.status == "approved") {
            *expected.entry(index[o.customer_id.as_str()]).or_default() += o.total;
        }
        for saga in &generator.in_flight {
            if let Saga::Approve { order, customer } | Saga::Release { order, customer } = saga {
                *expected.entry(*customer).or_default() += generator.orders[order].total;
            }
        }
        for (i, c) in generator.customers().iter().enumerate() {
            assert_eq!(c.reserved, expected.get(&i).copied().unwrap_or(0), "{c:?}");
        }
        assert!(
            generator.customers().iter().any(|c| c.available() == 0),
            "no customer with used-up credit"
        );
    }

    #[test]
    fn uuids_look_like_uuids() {
        let mut rng = Rng(3);
        let id = rng.uuid();
        assert_eq!(id.len(), 36);
        assert!(StreamId::new(format!("customer-{id}")).is_ok());
        assert_eq!(&id[14..15], "4");
        let v7 = rng.uuid_v7(ID_CLOCK_START_MS);
        assert_eq!(v7.len(), 36);
        assert_eq!(&v7[14..15], "7");
        assert!(v7.starts_with("019b76da-a800-"), "{v7}");
        let mut generator = Generator::new(4);
        let ids: Vec<String> = (0..100).map(|_| generator.next_id()).collect();
        assert!(ids.windows(2).all(|w| w[0][..13] <= w[1][..13]), "{ids:?}");
    }
}
