//! The order aggregate: placed, then approved or rejected (by the credit
//! check that a saga runs against the customer), and possibly cancelled.
//!
//! ```text
//! placed ──approve──▶ approved ──cancel──▶ cancelled
//!    │  └──cancel──────────────────────────▲
//!    └──reject───▶ rejected (final)
//! ```
//!
//! Placing an order does not look at the customer: one command touches one
//! aggregate, and whether the customer exists and has credit is for the saga
//! to find out.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::money::{Money, MoneyError};
use command_api::aggregate::{
    Aggregate, AggregateCommand, DecodeError, DomainError, DomainEvent, decode_data,
};

/// A stock-keeping unit: 1 to [`Sku::BYTES_MAX`] printable ASCII characters,
/// no spaces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    pub const BYTES_MAX: usize = 64;

    pub fn parse(raw: &str) -> Result<Sku, String> {
        if raw.is_empty() {
            return Err("the SKU must not be empty".into());
        }
        if raw.len() > Self::BYTES_MAX {
            return Err(format!(
                "the SKU is {} bytes long; the maximum is {}",
                raw.len(),
                Self::BYTES_MAX
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the SKU may only contain printable ASCII characters, no spaces".into());
        }
        Ok(Sku(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Sku::parse(&s)
    }
}

impl From<Sku> for String {
    fn from(s: Sku) -> String {
        s.0
    }
}

/// Why an order was rejected or cancelled: trimmed, 1 to
/// [`Reason::CHARS_MAX`] characters, no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Reason(String);

impl Reason {
    pub const CHARS_MAX: usize = 500;

    pub fn parse(raw: &str) -> Result<Reason, String> {
        let reason = raw.trim();
        if reason.is_empty() {
            return Err("the reason must not be empty".into());
        }
        let chars = reason.chars().count();
        if chars > Self::CHARS_MAX {
            return Err(format!(
                "the reason is {chars} characters long; the maximum is {}",
                Self::CHARS_MAX
            ));
        }
        if reason.chars().any(char::is_control) {
            return Err("the reason must not contain control characters".into());
        }
        Ok(Reason(reason.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Reason {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Reason::parse(&s)
    }
}

impl From<Reason> for String {
    fn from(r: Reason) -> String {
        r.0
    }
}

/// One line of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    pub sku: Sku,
    pub quantity: u32,
    pub unit_price: Money,
}

/// What an order is for: either lines whose sum is the total, or just a
/// total. Built only through its constructors, so it is always consistent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrderItems {
    lines: Vec<OrderLine>,
    total: Money,
}

/// Why order items were refused; `line` is the 0-based index of the
/// offending line when there is one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ItemsError {
    pub line: Option<usize>,
    pub field: &'static str,
    pub message: String,
}

impl OrderItems {
    pub const LINES_MAX: usize = 100;
    pub const QUANTITY_MAX: u32 = 1_000_000;

    /// Lines with a positive quantity and price each, in one currency, whose
    /// total stays within the amount limit.
    pub fn from_lines(lines: Vec<OrderLine>) -> Result<OrderItems, ItemsError> {
        let whole = |message: String| ItemsError {
            line: None,
            field: "lines",
            message,
        };
        let Some(first) = lines.first() else {
            return Err(whole("an order needs at least one line".into()));
        };
        if lines.len() > Self::LINES_MAX {
            return Err(whole(format!(
                "an order has at most {} lines; {} were given",
                Self::LINES_MAX,
                lines.len()
            )));
        }
        let mut total = Money::zero(first.unit_price.currency());
        for (i, line) in lines.iter().enumerate() {
            let at = |field, message: String| ItemsError {
                line: Some(i),
                field,
                message,
            };
            if line.quantity == 0 || line.quantity > Self::QUANTITY_MAX {
                return Err(at(
                    "quantity",
                    format!(
                        "the quantity must be between 1 and {}; {} was given",
                        Self::QUANTITY_MAX,
                        line.quantity
                    ),
                ));
            }
            if line.unit_price.is_zero() {
                return Err(at(
                    "unit_price",
                    "the unit price must be greater than zero".into(),
                ));
            }
            let amount = line
                .unit_price
                .checked_mul(line.quantity)
                .map_err(|e| at("quantity", format!("the line total is too large: {e}")))?;
            total = total.checked_add(amount).map_err(|e| match e {
                MoneyError::CurrencyMismatch(expected, given) => at(
                    "unit_price",
                    format!("all lines must be in one currency: {expected} and {given}"),
                ),
                e => whole(format!("the order total is too large: {e}")),
            })?;
        }
        Ok(OrderItems { lines, total })
    }

    /// An order known only by its (positive) total.
    pub fn total_only(total: Money) -> Result<OrderItems, ItemsError> {
        if total.is_zero() {
            return Err(ItemsError {
                line: None,
                field: "total",
                message: "the total must be greater than zero".into(),
            });
        }
        Ok(OrderItems {
            lines: Vec::new(),
            total,
        })
    }

    pub fn lines(&self) -> &[OrderLine] {
        &self.lines
    }

    pub fn total(&self) -> Money {
        self.total
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Placed, waiting for the credit check.
    Pending,
    Approved,
    Rejected,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Approved => "approved",
            OrderStatus::Rejected => "rejected",
            OrderStatus::Cancelled => "cancelled",
        }
    }
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderCommand {
    Place {
        order_id: Uuid,
        customer_id: Uuid,
        items: OrderItems,
    },
    Approve {
        order_id: Uuid,
    },
    Reject {
        order_id: Uuid,
        reason: Reason,
    },
    Cancel {
        order_id: Uuid,
        reason: Option<Reason>,
    },
}

impl AggregateCommand for OrderCommand {
    fn aggregate_id(&self) -> Uuid {
        match self {
            OrderCommand::Place { order_id, .. }
            | OrderCommand::Approve { order_id }
            | OrderCommand::Reject { order_id, .. }
            | OrderCommand::Cancel { order_id, .. } => *order_id,
        }
    }

    fn creates_aggregate(&self) -> bool {
        matches!(self, OrderCommand::Place { .. })
    }

    fn name(&self) -> &'static str {
        match self {
            OrderCommand::Place { .. } => "PlaceOrder",
            OrderCommand::Approve { .. } => "ApproveOrder",
            OrderCommand::Reject { .. } => "RejectOrder",
            OrderCommand::Cancel { .. } => "CancelOrder",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// Empty when the order was placed with a total only.
    pub lines: Vec<OrderLine>,
    pub total: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderApproved {
    pub order_id: Uuid,
    pub customer_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderRejected {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderCancelled {
    pub order_id: Uuid,
    pub customer_id: Uuid,
    /// `null` when no reason was given.
    #[serde(default)]
    pub reason: Option<Reason>,
}

/// The order's events, with the type names and data of the reference domain
/// event contract (examples/credit/README.md).
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Placed(OrderPlaced),
    Approved(OrderApproved),
    Rejected(OrderRejected),
    Cancelled(OrderCancelled),
}

/// Every order event type, all at schema version 1.
pub const EVENT_TYPES: &[&str] = &[
    "OrderPlaced",
    "OrderApproved",
    "OrderRejected",
    "OrderCancelled",
];

/// Adds the order events to `upcasters`, each at its current version: none
/// has changed shape yet, so there are no steps, but a stored version other
/// than the current one is an error on read.
pub fn upcasters(upcasters: event_store::Upcasters) -> event_store::Upcasters {
    EVENT_TYPES.iter().fold(upcasters, |upcasters, event_type| {
        upcasters.current(*event_type, 1)
    })
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            OrderEvent::Placed(_) => "OrderPlaced",
            OrderEvent::Approved(_) => "OrderApproved",
            OrderEvent::Rejected(_) => "OrderRejected",
            OrderEvent::Cancelled(_) => "OrderCancelled",
        }
    }

    fn encode(&self) -> serde_json::Result<Vec<u8>> {
        match self {
            OrderEvent::Placed(e) => serde_json::to_vec(e),
            OrderEvent::Approved(e) => serde_json::to_vec(e),
            OrderEvent::Rejected(e) => serde_json::to_vec(e),
            OrderEvent::Cancelled(e) => serde_json::to_vec(e),
        }
    }

    fn decode(event_type: &str, schema: u32, data: &[u8]) -> Result<Self, DecodeError> {
        Ok(match event_type {
            "OrderPlaced" => OrderEvent::Placed(decode_data(event_type, schema, data)?),
            "OrderApproved" => OrderEvent::Approved(decode_data(event_type, schema, data)?),
            "OrderRejected" => OrderEvent::Rejected(decode_data(event_type, schema, data)?),
            "OrderCancelled" => OrderEvent::Cancelled(decode_data(event_type, schema, data)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

/// What an order command would have done, for [`OrderError::InvalidTransition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderAction {
    Approve,
    Reject,
    Cancel,
}

impl OrderAction {
    pub fn as_str(self) -> &'static str {
        match self {
            OrderAction::Approve => "approve",
            OrderAction::Reject => "reject",
            OrderAction::Cancel => "cancel",
        }
    }
}

/// The rules an order command can break.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    #[error("order {0} is already placed")]
    AlreadyPlaced(Uuid),
    #[error("order {0} is not placed")]
    NotPlaced(Uuid),
    #[error("order {order_id} is {}; it cannot be {}", status.as_str(), past_tense(*action))]
    InvalidTransition {
        order_id: Uuid,
        status: OrderStatus,
        action: OrderAction,
    },
}

fn past_tense(action: OrderAction) -> &'static str {
    match action {
        OrderAction::Approve => "approved",
        OrderAction::Reject => "rejected",
        OrderAction::Cancel => "cancelled",
    }
}

impl DomainError for OrderError {
    fn rule(&self) -> &'static str {
        match self {
            OrderError::AlreadyPlaced(_) => "order-already-placed",
            OrderError::NotPlaced(_) => "order-not-placed",
            OrderError::InvalidTransition { .. } => "invalid-order-transition",
        }
    }

    fn details(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        if let OrderError::InvalidTransition { status, action, .. } = self {
            m.insert("order_status".into(), status.as_str().into());
            m.insert("action".into(), action.as_str().into());
        }
        m
    }
}

/// An order as the command side needs it: whose it is and where it stands.
/// Unknown fields are refused, as for [`crate::domain::customer::Customer`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    placed: Option<PlacedOrder>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacedOrder {
    order_id: Uuid,
    customer_id: Uuid,
    total: Money,
    status: OrderStatus,
}

impl Order {
    pub fn status(&self) -> Option<OrderStatus> {
        self.placed.as_ref().map(|o| o.status)
    }

    pub fn total(&self) -> Option<Money> {
        self.placed.as_ref().map(|o| o.total)
    }

    pub fn customer_id(&self) -> Option<Uuid> {
        self.placed.as_ref().map(|o| o.customer_id)
    }

    /// The placed order, if `action` is allowed from its status.
    fn transition(&self, order_id: Uuid, action: OrderAction) -> Result<&PlacedOrder, OrderError> {
        let order = self
            .placed
            .as_ref()
            .ok_or(OrderError::NotPlaced(order_id))?;
        let allowed = match action {
            OrderAction::Approve | OrderAction::Reject => order.status == OrderStatus::Pending,
            OrderAction::Cancel => {
                matches!(order.status, OrderStatus::Pending | OrderStatus::Approved)
            }
        };
        if !allowed {
            return Err(OrderError::InvalidTransition {
                order_id,
                status: order.status,
                action,
            });
        }
        Ok(order)
    }
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    const SNAPSHOT_SCHEMA: u32 = 1;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;

    fn handle(&self, command: &OrderCommand) -> Result<Vec<OrderEvent>, OrderError> {
        match command {
            OrderCommand::Place {
                order_id,
                customer_id,
                items,
            } => {
                if self.placed.is_some() {
                    return Err(OrderError::AlreadyPlaced(*order_id));
                }
                Ok(vec![OrderEvent::Placed(OrderPlaced {
                    order_id: *order_id,
                    customer_id: *customer_id,
                    lines: items.lines().to_vec(),
                    total: items.total(),
                })])
            }
            OrderCommand::Approve { order_id } => {
                let order = self.transition(*order_id, OrderAction::Approve)?;
                Ok(vec![OrderEvent::Approved(OrderApproved {
                    order_id: *order_id,
                    customer_id: order.customer_id,
                })])
            }
            OrderCommand::Reject { order_id, reason } => {
                let order = self.transition(*order_id, OrderAction::Reject)?;
                Ok(vec![OrderEvent::Rejected(OrderRejected {
                    order_id: *order_id,
                    customer_id: order.customer_id,
                    reason: reason.clone(),
                })])
            }
            OrderCommand::Cancel { order_id, reason } => {
                let order = self.transition(*order_id, OrderAction::Cancel)?;
                Ok(vec![OrderEvent::Cancelled(OrderCancelled {
                    order_id: *order_id,
                    customer_id: order.customer_id,
                    reason: reason.clone(),
                })])
            }
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::Placed(e) => {
                self.placed = Some(PlacedOrder {
                    order_id: e.order_id,
                    customer_id: e.customer_id,
                    total: e.total,
                    status: OrderStatus::Pending,
                });
            }
            OrderEvent::Approved(_) => self.set_status(OrderStatus::Approved),
            OrderEvent::Rejected(_) => self.set_status(OrderStatus::Rejected),
            OrderEvent::Cancelled(_) => self.set_status(OrderStatus::Cancelled),
        }
    }
}

impl Order {
    fn set_status(&mut self, status: OrderStatus) {
        if let Some(order) = &mut self.placed {
            order.status = status;
        }
    }
}

#[cfg(test)]
mod tests {
    //! Given the order's past events, when a command arrives, then these
    //! events (or this refusal).

    use super::*;
    use crate::domain::money::{AMOUNT_MAX, Currency};
    use command_api::aggregate::replay;
    use command_api::testkit;

    const O: Uuid = Uuid::from_u128(0x0);
    const C: Uuid = Uuid::from_u128(0xc);

    fn eur(amount: i64) -> Money {
        Money::new(amount, Currency::parse("EUR").unwrap()).unwrap()
    }

    fn line(sku: &str, quantity: u32, price: i64) -> OrderLine {
        OrderLine {
            sku: Sku::parse(sku).unwrap(),
            quantity,
            unit_price: eur(price),
        }
    }

    fn placed() -> OrderEvent {
        OrderEvent::Placed(OrderPlaced {
            order_id: O,
            customer_id: C,
            lines: vec![line("A-1", 2, 500)],
            total: eur(1000),
        })
    }

    fn approved() -> OrderEvent {
        OrderEvent::Approved(OrderApproved {
            order_id: O,
            customer_id: C,
        })
    }

    fn rejected() -> OrderEvent {
        OrderEvent::Rejected(OrderRejected {
            order_id: O,
            customer_id: C,
            reason: Reason::parse("credit limit exceeded").unwrap(),
        })
    }

    fn cancelled() -> OrderEvent {
        OrderEvent::Cancelled(OrderCancelled {
            order_id: O,
            customer_id: C,
            reason: None,
        })
    }

    fn given(events: &[OrderEvent]) -> Order {
        replay::<Order>(events)
    }

    fn approve() -> OrderCommand {
        OrderCommand::Approve { order_id: O }
    }

    fn reject() -> OrderCommand {
        OrderCommand::Reject {
            order_id: O,
            reason: Reason::parse("credit limit exceeded").unwrap(),
        }
    }

    fn cancel() -> OrderCommand {
        OrderCommand::Cancel {
            order_id: O,
            reason: None,
        }
    }

    fn refused(status: OrderStatus, action: OrderAction) -> Result<Vec<OrderEvent>, OrderError> {
        Err(OrderError::InvalidTransition {
            order_id: O,
            status,
            action,
        })
    }

    #[test]
    fn placing_records_the_lines_and_their_total() {
        let place = || OrderCommand::Place {
            order_id: O,
            customer_id: C,
            items: OrderItems::from_lines(vec![line("A-1", 2, 500)]).unwrap(),
        };
        testkit::given::<Order>([])
            .when(place())
            .then_events([placed()]);
        testkit::given::<Order>([placed()])
            .when(place())
            .then_error(OrderError::AlreadyPlaced(O));
    }

    #[test]
    fn a_pending_order_can_be_approved_rejected_or_cancelled() {
        let pending = testkit::given::<Order>([placed()]);
        assert_eq!(pending.state().status(), Some(OrderStatus::Pending));
        pending.when(approve()).then_events([approved()]);
        pending.when(reject()).then_events([rejected()]);
        pending.when(cancel()).then_events([cancelled()]);
        testkit::given::<Order>([])
            .when(approve())
            .then_rule("order-not-placed");
    }

    #[test]
    fn an_approved_order_can_only_be_cancelled() {
        let state = given(&[placed(), approved()]);
        assert_eq!(
            state.handle(&approve()),
            refused(OrderStatus::Approved, OrderAction::Approve)
        );
        assert_eq!(
            state.handle(&reject()),
            refused(OrderStatus::Approved, OrderAction::Reject)
        );
        assert_eq!(state.handle(&cancel()), Ok(vec![cancelled()]));
    }

    #[test]
    fn a_rejected_order_is_final() {
        let state = given(&[placed(), rejected()]);
        assert_eq!(
            state.handle(&approve()),
            refused(OrderStatus::Rejected, OrderAction::Approve)
        );
        assert_eq!(
            state.handle(&cancel()),
            refused(OrderStatus::Rejected, OrderAction::Cancel)
        );
    }

    #[test]
    fn a_cancelled_order_cannot_be_cancelled_twice() {
        let state = given(&[placed(), cancelled()]);
        let err = state.handle(&cancel()).unwrap_err();
        assert_eq!(err.rule(), "invalid-order-transition");
        assert_eq!(err.details()["order_status"], "cancelled");
        assert_eq!(
            err.to_string(),
            format!("order {O} is cancelled; it cannot be cancelled")
        );
        assert_eq!(
            state.handle(&approve()),
            refused(OrderStatus::Cancelled, OrderAction::Approve)
        );
    }

    #[test]
    fn commands_on_an_order_never_placed_are_refused() {
        for command in [approve(), reject(), cancel()] {
            assert_eq!(given(&[]).handle(&command), Err(OrderError::NotPlaced(O)));
        }
    }

    #[test]
    fn items_are_checked_line_by_line() {
        let items = OrderItems::from_lines(vec![line("A", 3, 250), line("B", 1, 1)]).unwrap();
        assert_eq!(items.total(), eur(751));
        assert_eq!(OrderItems::from_lines(vec![]).unwrap_err().field, "lines");
        let zero = OrderItems::from_lines(vec![line("A", 0, 1)]).unwrap_err();
        assert_eq!((zero.line, zero.field), (Some(0), "quantity"));
        let free = OrderItems::from_lines(vec![line("A", 1, 1), line("B", 1, 0)]).unwrap_err();
        assert_eq!((free.line, free.field), (Some(1), "unit_price"));
        let usd = OrderLine {
            sku: Sku::parse("B").unwrap(),
            quantity: 1,
            unit_price: Money::new(1, Currency::parse("USD").unwrap()).unwrap(),
        };
        let mixed = OrderItems::from_lines(vec![line("A", 1, 1), usd]).unwrap_err();
        assert_eq!(mixed.line, Some(1));
        let huge = OrderItems::from_lines(vec![line("A", 2, AMOUNT_MAX / 2 + 1)]).unwrap_err();
        assert_eq!(huge.field, "quantity");
        let sum_too_big =
            OrderItems::from_lines(vec![line("A", 1, AMOUNT_MAX), line("B", 1, 1)]).unwrap_err();
        assert_eq!(sum_too_big.line, None);
        let too_many = vec![line("A", 1, 1); OrderItems::LINES_MAX + 1];
        assert!(OrderItems::from_lines(too_many).is_err());
        assert!(OrderItems::from_lines(vec![line("A", 1, 1); OrderItems::LINES_MAX]).is_ok());
        assert!(OrderItems::total_only(eur(0)).is_err());
        assert_eq!(OrderItems::total_only(eur(5)).unwrap().lines(), &[]);
    }

    #[test]
    fn skus_and_reasons_are_validated() {
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("A B").is_err());
        assert!(Sku::parse(&"A".repeat(65)).is_err());
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
        assert!(Reason::parse(" ").is_err());
        assert!(Reason::parse(&"r".repeat(501)).is_err());
        assert_eq!(Reason::parse(" late ").unwrap().as_str(), "late");
    }

    #[test]
    fn events_have_the_contract_json_shape_and_round_trip() {
        let json: serde_json::Value = serde_json::from_slice(&placed().encode().unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "order_id": O.to_string(),
                "customer_id": C.to_string(),
                "lines": [{"sku": "A-1", "quantity": 2,
                           "unit_price": {"amount": 500, "currency": "EUR"}}],
                "total": {"amount": 1000, "currency": "EUR"}
            })
        );
        let cancelled_json: serde_json::Value =
            serde_json::from_slice(&cancelled().encode().unwrap()).unwrap();
        assert_eq!(
            cancelled_json,
            serde_json::json!({"order_id": O.to_string(), "customer_id": C.to_string(),
                "reason": null})
        );
        for event in [placed(), approved(), rejected(), cancelled()] {
            let back = OrderEvent::decode(event.event_type(), 1, &event.encode().unwrap()).unwrap();
            assert_eq!(back, event);
        }
        // An OrderCancelled written without the optional field still reads.
        let without_reason = format!(r#"{{"order_id":"{O}","customer_id":"{C}"}}"#);
        assert_eq!(
            OrderEvent::decode("OrderCancelled", 1, without_reason.as_bytes()).unwrap(),
            cancelled()
        );
    }
}
