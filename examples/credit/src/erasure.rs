//! The right to be forgotten, for any caller (the REST route, a script, a
//! saga): the whole erasure of a customer, not half of it.
//!
//! `CustomerForgotten` is appended first (the views erase their copies of
//! the name and email when they apply it), then the store destroys the
//! customer's key, after which every stored copy reads as erased. In this
//! order a failure in between is finished by asking again: the command is
//! a no-op the second time and the key is destroyed again.

use uuid::Uuid;

use crate::domain::customer::{Customer, CustomerCommand, CustomerError, CustomerEvent};
use command_api::error::CommandError;
use command_api::handler::{CommandContext, CommandHandler, CommandOutcome};

/// Erases a customer's personal data. A store that keeps no personal-data
/// keys answers `CommandError::Store(event_store::Error::Unsupported)`.
pub async fn forget_customer(
    customers: &CommandHandler<Customer>,
    customer_id: Uuid,
    context: CommandContext,
) -> Result<CommandOutcome<CustomerEvent>, CommandError<CustomerError>> {
    let outcome = customers
        .execute(CustomerCommand::Forget { customer_id }, context)
        .await?;
    customers.store().forget_subject(&outcome.stream_id).await?;
    Ok(outcome)
}
