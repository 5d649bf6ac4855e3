//! An audit of the credit invariants over a whole log, the way an operator
//! (or a test) checks that the order-fulfilment saga kept customers and
//! orders consistent:
//!
//! - at every point of the history, a customer's reserved credit is at most
//!   its credit limit;
//! - every order is decided (approved or rejected) at most once, and, when
//!   `expect_decided`, every order not cancelled is decided;
//! - at the end, a customer's reservations are exactly its approved orders
//!   that were not cancelled, each for the order's total.

use std::collections::{BTreeMap, HashMap};

use event_store::RecordedEvent;
use uuid::Uuid;

use crate::domain::customer::CustomerEvent;
use crate::domain::order::OrderEvent;
use command_api::aggregate::DomainEvent;

/// What the audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditAudit {
    pub customers: usize,
    pub orders: usize,
    pub approved: usize,
    pub rejected: usize,
    pub cancelled: usize,
    /// Orders neither decided nor cancelled.
    pub pending: usize,
    /// Every broken invariant, with where it broke.
    pub violations: Vec<String>,
}

#[derive(Default)]
struct Ledger {
    limit: i64,
    reserved: BTreeMap<Uuid, i64>,
}

struct OrderFacts {
    customer_id: Uuid,
    total: i64,
    approvals: u32,
    rejections: u32,
    cancelled: bool,
}

/// Audits `events` (the whole log, in position order). Events of other
/// streams are ignored; an event of a customer or order stream that does
/// not decode is a violation.
pub fn audit_credit<'a>(
    events: impl IntoIterator<Item = &'a RecordedEvent>,
    expect_decided: bool,
) -> CreditAudit {
    let mut auditor = Auditor::default();
    for event in events {
        let stream = event.stream_id.as_str();
        let at = event.position.0;
        if stream.starts_with("customer-") {
            if let Some(decoded) = decode_or_report(&mut auditor.audit, event) {
                auditor.customer_event(at, decoded);
            }
        } else if stream.starts_with("order-")
            && let Some(decoded) = decode_or_report(&mut auditor.audit, event)
        {
            auditor.order_event(at, decoded);
        }
    }
    auditor.finish(expect_decided)
}

/// The audit so far, with the customers' ledgers and the orders' facts it
/// checks the next events against.
#[derive(Default)]
struct Auditor {
    audit: CreditAudit,
    customers: HashMap<Uuid, Ledger>,
    orders: BTreeMap<Uuid, OrderFacts>,
}

impl Auditor {
    /// A customer's event at position `at`: limits and reservations, with
    /// the limit checked after each change.
    fn customer_event(&mut self, at: u64, event: CustomerEvent) {
        let audit = &mut self.audit;
        match event {
            CustomerEvent::Registered(e) => {
                self.customers.entry(e.customer_id).or_default().limit = e.credit_limit.amount();
            }
            CustomerEvent::CreditLimitChanged(e) => {
                let ledger = self.customers.entry(e.customer_id).or_default();
                ledger.limit = e.credit_limit.amount();
                check_limit(audit, at, e.customer_id, ledger);
            }
            CustomerEvent::CreditReserved(e) => {
                let ledger = self.customers.entry(e.customer_id).or_default();
                if ledger
                    .reserved
                    .insert(e.order_id, e.amount.amount())
                    .is_some()
                {
                    audit.violations.push(format!(
                        "position {at}: credit reserved twice for order {}",
                        e.order_id
                    ));
                }
                check_limit(audit, at, e.customer_id, ledger);
            }
            CustomerEvent::CreditReleased(e) => {
                let ledger = self.customers.entry(e.customer_id).or_default();
                if ledger.reserved.remove(&e.order_id).is_none() {
                    audit.violations.push(format!(
                        "position {at}: credit released for order {} with none reserved",
                        e.order_id
                    ));
                }
            }
            CustomerEvent::Forgotten(_) => {}
        }
    }

    /// An order's event at position `at`: counted against an order that
    /// was placed, a violation otherwise.
    fn order_event(&mut self, at: u64, event: OrderEvent) {
        let (order_id, what, mark): (Uuid, &str, fn(&mut OrderFacts)) = match event {
            OrderEvent::Placed(e) => {
                self.orders.insert(
                    e.order_id,
                    OrderFacts {
                        customer_id: e.customer_id,
                        total: e.total.amount(),
                        approvals: 0,
                        rejections: 0,
                        cancelled: false,
                    },
                );
                return;
            }
            OrderEvent::Approved(e) => (e.order_id, "approved", |o| o.approvals += 1),
            OrderEvent::Rejected(e) => (e.order_id, "rejected", |o| o.rejections += 1),
            OrderEvent::Cancelled(e) => (e.order_id, "cancelled", |o| o.cancelled = true),
        };
        match self.orders.get_mut(&order_id) {
            Some(order) => mark(order),
            None => self.audit.violations.push(format!(
                "position {at}: order {order_id} {what} but never placed"
            )),
        }
    }

    /// The audit once every event is in: the orders counted, and each
    /// customer's reservations compared with its approved orders.
    fn finish(mut self, expect_decided: bool) -> CreditAudit {
        self.audit.customers = self.customers.len();
        self.audit.orders = self.orders.len();
        let expected = self.tally_orders(expect_decided);
        self.check_reservations(expected);
        self.audit
    }

    /// Counts the orders by outcome, noting orders decided more than once
    /// (and, when `expect_decided`, never), and returns what each customer
    /// should hold: its approved orders not cancelled, each for its total.
    fn tally_orders(&mut self, expect_decided: bool) -> HashMap<Uuid, BTreeMap<Uuid, i64>> {
        let audit = &mut self.audit;
        let mut expected: HashMap<Uuid, BTreeMap<Uuid, i64>> = HashMap::new();
        for (id, order) in &self.orders {
            let decisions = order.approvals + order.rejections;
            if decisions > 1 {
                audit.violations.push(format!(
                    "order {id} was decided {decisions} times ({} approvals, {} rejections)",
                    order.approvals, order.rejections
                ));
            }
            if order.cancelled {
                audit.cancelled += 1;
            }
            if order.approvals > 0 {
                audit.approved += 1;
                if !order.cancelled {
                    expected
                        .entry(order.customer_id)
                        .or_default()
                        .insert(*id, order.total);
                }
            } else if order.rejections > 0 {
                audit.rejected += 1;
            } else if !order.cancelled {
                audit.pending += 1;
                if expect_decided {
                    audit
                        .violations
                        .push(format!("order {id} was never decided"));
                }
            }
        }
        expected
    }

    /// Compares each customer's reservations with what its orders say it
    /// should hold.
    fn check_reservations(&mut self, mut expected: HashMap<Uuid, BTreeMap<Uuid, i64>>) {
        for (id, ledger) in &self.customers {
            let wanted = expected.remove(id).unwrap_or_default();
            if ledger.reserved != wanted {
                self.audit.violations.push(format!(
                    "customer {id} holds reservations {:?}, but its approved orders not cancelled are {:?}",
                    ledger.reserved, wanted
                ));
            }
        }
        for (id, wanted) in expected {
            self.audit.violations.push(format!(
                "customer {id} is unknown, but has approved orders {wanted:?}"
            ));
        }
    }
}

/// The event decoded, or `None` with a violation noted: an event of the
/// audited streams that does not decode is one.
fn decode_or_report<E: DomainEvent>(audit: &mut CreditAudit, event: &RecordedEvent) -> Option<E> {
    match E::decode(&event.event_type, event.schema_version, &event.data) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            audit.violations.push(format!(
                "position {}: does not decode: {e}",
                event.position.0
            ));
            None
        }
    }
}

fn check_limit(audit: &mut CreditAudit, at: u64, customer_id: Uuid, ledger: &Ledger) {
    let reserved: i64 = ledger.reserved.values().sum();
    if reserved > ledger.limit {
        audit.violations.push(format!(
            "position {at}: customer {customer_id} has {reserved} reserved over its limit {}",
            ledger.limit
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::customer::{
        CreditReserved, CustomerName, CustomerRegistered, Email, PersonalData,
    };
    use crate::domain::money::{Currency, Money};
    use crate::domain::order::{OrderApproved, OrderPlaced};

    fn eur(cents: i64) -> Money {
        Money::new(cents, Currency::parse("EUR").unwrap()).unwrap()
    }

    /// Appends `event` to the log at the next position.
    fn push(log: &mut Vec<RecordedEvent>, stream: &str, event: &impl DomainEvent) {
        log.push(RecordedEvent {
            id: Uuid::new_v4(),
            stream_id: event_store::StreamId::new(stream).unwrap(),
            version: 1,
            position: event_store::Position(log.len() as u64 + 1),
            event_type: event.event_type().into(),
            schema_version: event.schema_version(),
            timestamp: event_store::Timestamp(0),
            data: event.encode().unwrap().into(),
            metadata: bytes::Bytes::from_static(b"{}"),
        });
    }

    #[test]
    fn every_broken_invariant_is_reported_with_where_it_broke() {
        let customer = Uuid::new_v4();
        let [o1, o2, o3] = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
        let cs = format!("customer-{customer}");
        let mut log = Vec::new();
        push(
            &mut log,
            &cs,
            &CustomerEvent::Registered(CustomerRegistered {
                customer_id: customer,
                personal: PersonalData {
                    name: CustomerName::parse("Ada Lovelace").unwrap(),
                    email: Email::parse("ada@example.com").unwrap(),
                },
                credit_limit: eur(100),
            }),
        );
        for (order, total) in [(o1, 60), (o2, 70), (o3, 10)] {
            let placed = OrderPlaced {
                order_id: order,
                customer_id: customer,
                lines: Vec::new(),
                total: eur(total),
            };
            push(
                &mut log,
                &format!("order-{order}"),
                &OrderEvent::Placed(placed),
            );
        }
        // o1 and o2 approved and reserved (together over the limit), o1
        // approved twice, o3 never decided.
        for order in [o1, o2, o1] {
            let approved = OrderApproved {
                order_id: order,
                customer_id: customer,
            };
            push(
                &mut log,
                &format!("order-{order}"),
                &OrderEvent::Approved(approved),
            );
        }
        for (order, amount) in [(o1, 60), (o2, 70)] {
            let reserved = CreditReserved {
                customer_id: customer,
                order_id: order,
                amount: eur(amount),
            };
            push(&mut log, &cs, &CustomerEvent::CreditReserved(reserved));
        }
        // A customer event that is not what its type says.
        let mut bad = log[log.len() - 1].clone();
        bad.position = event_store::Position(log.len() as u64 + 1);
        bad.data = bytes::Bytes::from_static(b"{}");
        log.push(bad);

        let lenient = audit_credit(&log, false);
        assert_eq!((lenient.customers, lenient.orders), (1, 3));
        assert_eq!((lenient.approved, lenient.pending), (2, 1));
        let found = |audit: &CreditAudit, needle: &str| {
            audit
                .violations
                .iter()
                .filter(|v| v.contains(needle))
                .count()
        };
        assert_eq!(found(&lenient, "over its limit"), 1, "{lenient:?}");
        assert_eq!(found(&lenient, "decided 2 times"), 1, "{lenient:?}");
        assert_eq!(
            found(
                &lenient,
                &format!("position {}: does not decode", log.len())
            ),
            1,
            "{lenient:?}"
        );
        assert_eq!(found(&lenient, "never decided"), 0, "{lenient:?}");
        assert_eq!(lenient.violations.len(), 3, "{lenient:?}");
        let strict = audit_credit(&log, true);
        assert_eq!(found(&strict, &format!("order {o3} was never decided")), 1);
        assert_eq!(strict.violations.len(), 4, "{strict:?}");
    }
}
