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

use crate::aggregate::DomainEvent;
use crate::domain::customer::CustomerEvent;
use crate::domain::order::OrderEvent;

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
    let mut audit = CreditAudit::default();
    let mut customers: HashMap<Uuid, Ledger> = HashMap::new();
    let mut orders: BTreeMap<Uuid, OrderFacts> = BTreeMap::new();
    for event in events {
        let stream = event.stream_id.as_str();
        let at = event.position.0;
        if stream.starts_with("customer-") {
            let decoded =
                match CustomerEvent::decode(&event.event_type, event.schema_version, &event.data) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        audit
                            .violations
                            .push(format!("position {at}: does not decode: {e}"));
                        continue;
                    }
                };
            match decoded {
                CustomerEvent::Registered(e) => {
                    customers.entry(e.customer_id).or_default().limit = e.credit_limit.amount();
                }
                CustomerEvent::CreditLimitChanged(e) => {
                    let ledger = customers.entry(e.customer_id).or_default();
                    ledger.limit = e.credit_limit.amount();
                    check_limit(&mut audit, at, e.customer_id, ledger);
                }
                CustomerEvent::CreditReserved(e) => {
                    let ledger = customers.entry(e.customer_id).or_default();
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
                    check_limit(&mut audit, at, e.customer_id, ledger);
                }
                CustomerEvent::CreditReleased(e) => {
                    let ledger = customers.entry(e.customer_id).or_default();
                    if ledger.reserved.remove(&e.order_id).is_none() {
                        audit.violations.push(format!(
                            "position {at}: credit released for order {} with none reserved",
                            e.order_id
                        ));
                    }
                }
                CustomerEvent::Forgotten(_) => {}
            }
        } else if stream.starts_with("order-") {
            let decoded =
                match OrderEvent::decode(&event.event_type, event.schema_version, &event.data) {
                    Ok(decoded) => decoded,
                    Err(e) => {
                        audit
                            .violations
                            .push(format!("position {at}: does not decode: {e}"));
                        continue;
                    }
                };
            match decoded {
                OrderEvent::Placed(e) => {
                    orders.insert(
                        e.order_id,
                        OrderFacts {
                            customer_id: e.customer_id,
                            total: e.total.amount(),
                            approvals: 0,
                            rejections: 0,
                            cancelled: false,
                        },
                    );
                }
                OrderEvent::Approved(e) => match orders.get_mut(&e.order_id) {
                    Some(order) => order.approvals += 1,
                    None => audit.violations.push(format!(
                        "position {at}: order {} approved but never placed",
                        e.order_id
                    )),
                },
                OrderEvent::Rejected(e) => match orders.get_mut(&e.order_id) {
                    Some(order) => order.rejections += 1,
                    None => audit.violations.push(format!(
                        "position {at}: order {} rejected but never placed",
                        e.order_id
                    )),
                },
                OrderEvent::Cancelled(e) => match orders.get_mut(&e.order_id) {
                    Some(order) => order.cancelled = true,
                    None => audit.violations.push(format!(
                        "position {at}: order {} cancelled but never placed",
                        e.order_id
                    )),
                },
            }
        }
    }

    audit.customers = customers.len();
    audit.orders = orders.len();
    let mut expected: HashMap<Uuid, BTreeMap<Uuid, i64>> = HashMap::new();
    for (id, order) in &orders {
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
    for (id, ledger) in &customers {
        let wanted = expected.remove(id).unwrap_or_default();
        if ledger.reserved != wanted {
            audit.violations.push(format!(
                "customer {id} holds reservations {:?}, but its approved orders not cancelled are {:?}",
                ledger.reserved, wanted
            ));
        }
    }
    for (id, wanted) in expected {
        audit.violations.push(format!(
            "customer {id} is unknown, but has approved orders {wanted:?}"
        ));
    }
    audit
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
