//! The reference domain: customers with a credit line, and their orders.
//! Event types and JSON shapes follow the reference domain event contract
//! in ARCHITECTURE.md, which the projector reads.

pub mod audit;
pub mod customer;
pub mod money;
pub mod order;
