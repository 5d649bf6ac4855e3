//! The read side's own view of the reference domain's published events.
//!
//! These structs mirror the contract table in examples/credit/README.md rather than
//! the command side's types: the views depend on the published JSON, not on
//! another crate's internals. Unknown fields are ignored, so the producer
//! may add fields without breaking the views.

use serde::{Deserialize, Serialize};

pub const CUSTOMER_REGISTERED: &str = "CustomerRegistered";
pub const CREDIT_LIMIT_CHANGED: &str = "CreditLimitChanged";
pub const CREDIT_RESERVED: &str = "CreditReserved";
pub const CREDIT_RELEASED: &str = "CreditReleased";
pub const CUSTOMER_FORGOTTEN: &str = "CustomerForgotten";
pub const ORDER_PLACED: &str = "OrderPlaced";
pub const ORDER_APPROVED: &str = "OrderApproved";
pub const ORDER_REJECTED: &str = "OrderRejected";
pub const ORDER_CANCELLED: &str = "OrderCancelled";

/// The schema version of each event type's data as described here, the
/// version the views read. The four customer events that carry money are at
/// version 2 (version 1 held a bare integer of euro cents); every other type
/// is at version 1. The views never see older versions: the store the
/// projector follows upcasts them (`event_store::Upcasting` with the
/// domain's upcasters), and an event it cannot upcast stops the
/// projections that read its type.
pub fn schema_version(event_type: &str) -> u32 {
    match event_type {
        CUSTOMER_REGISTERED | CREDIT_LIMIT_CHANGED | CREDIT_RESERVED | CREDIT_RELEASED => 2,
        _ => 1,
    }
}

/// Stream id prefixes of the two aggregates.
pub const CUSTOMER_STREAM_PREFIX: &str = "customer-";
pub const ORDER_STREAM_PREFIX: &str = "order-";

/// An amount of minor units (cents) in an ISO 4217 currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerRegistered {
    pub customer_id: String,
    pub name: String,
    pub email: String,
    pub credit_limit: Money,
}

/// A customer's personal data was erased (the right to be forgotten).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerForgotten {
    pub customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditLimitChanged {
    pub customer_id: String,
    pub credit_limit: Money,
}

/// `CreditReserved` and `CreditReleased` carry the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditMovement {
    pub customer_id: String,
    pub order_id: String,
    pub amount: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: String,
    pub quantity: i64,
    pub unit_price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub customer_id: String,
    pub lines: Vec<OrderLine>,
    pub total: Money,
}

/// `OrderApproved`, and the identifying part of every order event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: String,
    pub customer_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: String,
    pub customer_id: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: String,
    pub customer_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
