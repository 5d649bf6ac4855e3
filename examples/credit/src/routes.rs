//! The reference domain's command routes, declared on the generic
//! [`CommandRoutes`]: each parses its body into one command.
//!
//! Request bodies are parsed in two steps: serde checks the JSON's shape
//! (unknown fields, wrong types and non-integer amounts are `400
//! malformed-request`), then the domain's parsers check every field and
//! report all that are wrong at once (`400 invalid-fields`, with JSON
//! pointers).

use serde::Deserialize;
use uuid::Uuid;

use crate::domain::customer::{Customer, CustomerCommand, CustomerName, Email, PersonalData};
use crate::domain::money::{Currency, Money};
use crate::domain::order::{Order, OrderCommand, OrderItems, OrderLine, Reason, Sku};
use command_api::http::{CommandApi, CommandRoutes, FieldErrors, NoFields, Route};

/// When `POST /customers/{id}/forget` was deprecated (2026-11-26, in Unix
/// seconds), for its `Deprecation` header.
const FORGET_DEPRECATED_AT: u64 = 1_795_651_200;

/// The erasure of a customer's personal data, for its two routes.
const ERASURE: &str = "Records `CustomerForgotten` (the views erase their copies of the name and \
email) and destroys the key that encrypts the customer's personal data in the event store, so \
every stored copy reads as `[erased]` from then on. The credit line stays. Deleting again is \
harmless (`200`, nothing new recorded): a retry after a failure finishes the erasure. An unknown \
customer is `404`.";

/// The reference domain's command API: customers and orders.
pub fn api() -> CommandApi {
    CommandApi::new("annals command API")
        .aggregate(customers())
        .aggregate(orders())
}

/// The routes of [`Customer`].
pub fn customers() -> CommandRoutes<Customer> {
    CommandRoutes::new("/customers")
        .create(Route::post("/customers", "Register a customer"), register)
        .command(
            Route::post(
                "/customers/{id}/credit-limit",
                "Change a customer's credit limit",
            ),
            |customer_id, body: ChangeCreditLimit| {
                let mut errors = FieldErrors::new();
                let credit_limit = money(&mut errors, "/credit_limit", &body.credit_limit, false);
                errors.finish(|| {
                    Some(CustomerCommand::ChangeCreditLimit {
                        customer_id,
                        credit_limit: credit_limit?,
                    })
                })
            },
        )
        .command(
            Route::post(
                "/customers/{id}/reservations",
                "Reserve credit for an order",
            ),
            |customer_id, body: ReserveCredit| {
                let mut errors = FieldErrors::new();
                let order_id = uuid(&mut errors, "/order_id", &body.order_id);
                let amount = money(&mut errors, "/amount", &body.amount, true);
                errors.finish(|| {
                    Some(CustomerCommand::ReserveCredit {
                        customer_id,
                        order_id: order_id?,
                        amount: amount?,
                    })
                })
            },
        )
        .command_with_ids(
            Route::post(
                "/customers/{id}/reservations/{order_id}/release",
                "Release the credit reserved for an order",
            )
            .optional_body(),
            |ids, NoFields {}| {
                let ids = (ids.id(), ids.get("order_id"));
                FieldErrors::new().finish(|| {
                    Some(CustomerCommand::ReleaseCredit {
                        customer_id: ids.0?,
                        order_id: ids.1?,
                    })
                })
            },
        )
        .command(
            Route::delete(
                "/customers/{id}/personal-data",
                "Erase a customer's personal data (the right to be forgotten)",
            )
            .describe(ERASURE)
            .erases_personal_data(),
            forget,
        )
        .command(
            Route::post(
                "/customers/{id}/forget",
                "Forget a customer (the older form of DELETE /customers/{id}/personal-data)",
            )
            .describe(ERASURE)
            .optional_body()
            .erases_personal_data()
            .deprecated(FORGET_DEPRECATED_AT, "/customers/{id}/personal-data"),
            forget,
        )
}

/// The routes of [`Order`].
pub fn orders() -> CommandRoutes<Order> {
    CommandRoutes::new("/orders")
        .create(Route::post("/orders", "Place an order"), place)
        .command(
            Route::post("/orders/{id}/approve", "Approve a pending order").optional_body(),
            |order_id, NoFields {}| Ok(OrderCommand::Approve { order_id }),
        )
        .command(
            Route::post("/orders/{id}/reject", "Reject a pending order"),
            |order_id, body: RejectOrder| {
                let mut errors = FieldErrors::new();
                let reason = errors.check("/reason", Reason::parse(&body.reason));
                errors.finish(|| {
                    Some(OrderCommand::Reject {
                        order_id,
                        reason: reason?,
                    })
                })
            },
        )
        .command(
            Route::post("/orders/{id}/cancel", "Cancel an order").optional_body(),
            |order_id, body: CancelOrder| {
                let mut errors = FieldErrors::new();
                let reason = match &body.reason {
                    Some(raw) => errors.check("/reason", Reason::parse(raw)).map(Some),
                    None => Some(None),
                };
                errors.finish(|| {
                    Some(OrderCommand::Cancel {
                        order_id,
                        reason: reason?,
                    })
                })
            },
        )
}

fn forget(customer_id: Uuid, NoFields {}: NoFields) -> Result<CustomerCommand, FieldErrors> {
    Ok(CustomerCommand::Forget { customer_id })
}

/// An amount of money: an integer number of minor units (cents for EUR)
/// and an ISO 4217 currency code. `{"amount": 1250, "currency": "EUR"}` is
/// 12.50 EUR.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Money)]
pub struct MoneyBody {
    /// Minor units of the currency, never fractional.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 1250)]
    amount: i64,
    /// ISO 4217 currency code.
    #[schema(pattern = "^[A-Z]{3}$", example = "EUR")]
    currency: String,
}

/// The money at `pointer`; `positive` also refuses zero.
fn money(
    errors: &mut FieldErrors,
    pointer: &str,
    body: &MoneyBody,
    positive: bool,
) -> Option<Money> {
    let currency = errors.check(
        &format!("{pointer}/currency"),
        Currency::parse(&body.currency),
    )?;
    let amount = if positive {
        Money::positive(body.amount, currency)
    } else {
        Money::new(body.amount, currency)
    };
    errors.check(&format!("{pointer}/amount"), amount)
}

/// An id in the body, parsed as in the path.
fn uuid(errors: &mut FieldErrors, pointer: &str, raw: &str) -> Option<Uuid> {
    errors.check(pointer, http_edge::ids::parse_id(raw))
}

/// A customer to register.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterCustomer {
    /// The new customer's id; generated when absent. Registering an id
    /// again is `422` (`customer-already-registered`).
    #[serde(default)]
    #[schema(format = Uuid)]
    customer_id: Option<String>,
    /// 1 to 200 characters once trimmed, no control characters.
    #[schema(example = "Ada Lovelace")]
    name: String,
    /// An address of the form `local@domain.tld`, at most 254 bytes.
    #[schema(example = "ada@example.com")]
    email: String,
    /// The credit the customer may reserve for orders; may be 0.
    credit_limit: MoneyBody,
}

fn register(new_id: Uuid, body: RegisterCustomer) -> Result<CustomerCommand, FieldErrors> {
    let mut errors = FieldErrors::new();
    let customer_id = match &body.customer_id {
        Some(raw) => uuid(&mut errors, "/customer_id", raw),
        None => Some(new_id),
    };
    let name = errors.check("/name", CustomerName::parse(&body.name));
    let email = errors.check("/email", Email::parse(&body.email));
    let credit_limit = money(&mut errors, "/credit_limit", &body.credit_limit, false);
    errors.finish(|| {
        Some(CustomerCommand::Register {
            customer_id: customer_id?,
            personal: PersonalData {
                name: name?,
                email: email?,
            },
            credit_limit: credit_limit?,
        })
    })
}

/// A customer's new credit limit.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeCreditLimit {
    /// The new limit; not below the credit reserved now
    /// (`credit-limit-below-reserved`), in the customer's currency.
    credit_limit: MoneyBody,
}

/// Credit to reserve for an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveCredit {
    /// The order the credit is for; one reservation per order.
    #[schema(format = Uuid)]
    order_id: String,
    /// More than 0, in the customer's currency, within the credit available
    /// (`credit-limit-exceeded`).
    amount: MoneyBody,
}

/// One line of an order.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = OrderLine)]
pub struct OrderLineBody {
    /// The stock-keeping unit: printable ASCII, no spaces.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = "^[!-~]+$",
        example = "BOOK-0042"
    )]
    sku: String,
    #[schema(minimum = 1, maximum = 1_000_000, example = 2)]
    quantity: i64,
    /// More than 0; every line of an order in the same currency.
    unit_price: MoneyBody,
}

/// An order to place: its lines, its total, or both.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PlaceOrder)]
pub struct PlaceOrderBody {
    /// The new order's id; generated when absent. Placing an id again is
    /// `422` (`order-already-placed`).
    #[serde(default)]
    #[schema(format = Uuid)]
    order_id: Option<String>,
    /// The customer placing it; the command API does not check that it
    /// exists (credit is reserved by a separate command).
    #[schema(format = Uuid)]
    customer_id: String,
    /// The lines; without lines (absent or empty), `total` is required.
    #[serde(default)]
    #[schema(max_items = 100)]
    lines: Option<Vec<OrderLineBody>>,
    /// More than 0. With lines, it must equal their sum.
    #[serde(default)]
    total: Option<MoneyBody>,
}

/// Lines (each checked) and/or a total. With lines, a total is optional and
/// must equal their sum; without lines (absent or empty), it is required.
fn order_items(errors: &mut FieldErrors, body: &PlaceOrderBody) -> Option<OrderItems> {
    let lines = body.lines.as_deref().unwrap_or_default();
    if lines.len() > OrderItems::LINES_MAX {
        errors.add(
            "/lines",
            format!(
                "an order has at most {} lines; {} were given",
                OrderItems::LINES_MAX,
                lines.len()
            ),
        );
        return None;
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let sku = errors.check(&format!("/lines/{i}/sku"), Sku::parse(&line.sku));
        let quantity = errors.check(
            &format!("/lines/{i}/quantity"),
            u32::try_from(line.quantity)
                .ok()
                .filter(|q| (1..=OrderItems::QUANTITY_MAX).contains(q))
                .ok_or_else(|| {
                    format!(
                        "the quantity must be between 1 and {}; {} was given",
                        OrderItems::QUANTITY_MAX,
                        line.quantity
                    )
                }),
        );
        let unit_price = money(
            errors,
            &format!("/lines/{i}/unit_price"),
            &line.unit_price,
            true,
        );
        if let (Some(sku), Some(quantity), Some(unit_price)) = (sku, quantity, unit_price) {
            parsed.push(OrderLine {
                sku,
                quantity,
                unit_price,
            });
        }
    }
    let total = match &body.total {
        Some(t) => Some(money(errors, "/total", t, true)?),
        None => None,
    };
    if !errors.is_empty() {
        return None;
    }
    let items = if parsed.is_empty() {
        let Some(total) = total else {
            errors.add("/lines", "give the order's lines, its total, or both");
            return None;
        };
        OrderItems::total_only(total)
    } else {
        OrderItems::from_lines(parsed)
    };
    let items = match items {
        Ok(items) => items,
        Err(e) => {
            let pointer = match e.line {
                Some(i) => format!("/lines/{i}/{}", e.field),
                None => format!("/{}", e.field),
            };
            errors.add(pointer, e.message);
            return None;
        }
    };
    if let Some(total) = total
        && total != items.total()
    {
        errors.add(
            "/total",
            format!(
                "the total {total} is not the sum of the lines, {}",
                items.total()
            ),
        );
        return None;
    }
    Some(items)
}

fn place(new_id: Uuid, body: PlaceOrderBody) -> Result<OrderCommand, FieldErrors> {
    let mut errors = FieldErrors::new();
    let order_id = match &body.order_id {
        Some(raw) => uuid(&mut errors, "/order_id", raw),
        None => Some(new_id),
    };
    let customer_id = uuid(&mut errors, "/customer_id", &body.customer_id);
    let items = order_items(&mut errors, &body);
    errors.finish(|| {
        Some(OrderCommand::Place {
            order_id: order_id?,
            customer_id: customer_id?,
            items: items?,
        })
    })
}

/// Why an order is rejected.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectOrder {
    /// 1 to 500 characters once trimmed, no control characters.
    #[schema(example = "credit limit exceeded")]
    reason: String,
}

/// Why an order is cancelled, if the client says.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// 1 to 500 characters once trimmed, no control characters.
    #[serde(default)]
    #[schema(example = "ordered twice")]
    reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use http_edge::openapi;
    use serde_json::{Value, json};

    use crate::domain::money::AMOUNT_MAX;
    use crate::domain::order::{OrderItems, Sku};
    use command_api::http::PROBLEM_CONTENT_TYPE;

    fn document() -> Value {
        serde_json::to_value(crate::routes::api().openapi()).expect("the document serializes")
    }

    /// Every operation of the document, with its response statuses.
    fn operations(doc: &Value) -> openapi::Operations {
        openapi::operations(doc).expect("an OpenAPI document's paths")
    }

    /// Every documented operation is served: a request to it with a
    /// malformed id is refused by the route (`400 invalid-id`), not by the
    /// router's fallbacks (`404`, `405`).
    #[tokio::test]
    async fn the_document_describes_exactly_the_routes_served() {
        use tower::ServiceExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = event_store::Store::open(dir.path(), Default::default())
            .await
            .expect("the store opens");
        let commands = command_api::Commands::new(std::sync::Arc::new(store), Default::default());
        let router = crate::routes::api().router(&commands, Default::default());
        let doc = document();
        let served = operations(&doc);
        assert_eq!(served.len(), 10);
        for (method, path) in served.into_keys() {
            let uri = path
                .replace("{id}", "not-an-id")
                .replace("{order_id}", "not-an-id");
            let request = axum::http::Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(axum::body::Body::from("{}"))
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("an answer");
            assert_eq!(response.status().as_u16(), 400, "{method} {path}");
        }
    }

    #[test]
    fn every_operation_lists_its_statuses_headers_and_body() {
        let problems = ["400", "409", "412", "413", "415", "422", "500", "503"];
        let creating = ["/customers", "/orders"];
        let optional_body = [
            "/customers/{id}/reservations/{order_id}/release",
            "/customers/{id}/personal-data",
            "/customers/{id}/forget",
            "/orders/{id}/approve",
            "/orders/{id}/cancel",
        ];
        let doc = document();
        for ((method, path), listed) in operations(&doc) {
            let operation = &doc["paths"][&path][&method];
            let creates = creating.contains(&path.as_str());
            let mut expected: BTreeSet<String> = problems.iter().map(|s| (*s).to_owned()).collect();
            expected.insert(if creates { "201" } else { "200" }.to_owned());
            if !creates {
                expected.insert("404".to_owned());
            }
            if ["/customers/{id}/personal-data", "/customers/{id}/forget"].contains(&path.as_str())
            {
                // A store without personal-data keys cannot forget.
                expected.insert("501".to_owned());
            }
            assert_eq!(listed, expected, "{path}");

            for status in listed.iter().filter(|s| !s.starts_with('2')) {
                assert_eq!(
                    operation["responses"][status]["content"][PROBLEM_CONTENT_TYPE]["schema"]["$ref"],
                    "#/components/schemas/Problem",
                    "{path} {status}"
                );
            }
            let success = &operation["responses"][if creates { "201" } else { "200" }];
            assert_eq!(
                success["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/CommandResponse",
                "{path}"
            );
            for name in [
                "ETag",
                "X-Correlation-Id",
                "X-Command-Id",
                "Idempotent-Replayed",
            ] {
                assert!(success["headers"][name].is_object(), "{path}: {name}");
            }
            assert_eq!(
                success["headers"]["Location"].is_object(),
                creates,
                "{path}"
            );
            for (status, name) in [
                ("409", "Retry-After"),
                ("412", "ETag"),
                ("503", "Retry-After"),
            ] {
                assert!(
                    operation["responses"][status]["headers"][name].is_object(),
                    "{path} {status}: {name}"
                );
            }

            let headers: BTreeSet<&str> = operation["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "header")
                .map(|p| p["name"].as_str().expect("name"))
                .collect();
            assert_eq!(
                headers,
                BTreeSet::from(["If-Match", "Idempotency-Key", "X-Correlation-Id"]),
                "{path}"
            );
            let path_params: BTreeSet<String> = operation["parameters"]
                .as_array()
                .expect("parameters")
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| format!("{{{}}}", p["name"].as_str().expect("name")))
                .collect();
            let in_path: BTreeSet<String> = path
                .split('/')
                .filter(|segment| segment.starts_with('{'))
                .map(str::to_owned)
                .collect();
            assert_eq!(path_params, in_path, "{path}");
            let body = &operation["requestBody"];
            assert!(
                body["content"]["application/json"]["schema"]["$ref"].is_string(),
                "{path}"
            );
            assert_eq!(
                body["required"] == true,
                !optional_body.contains(&path.as_str()),
                "{path}"
            );
        }
    }

    #[test]
    fn the_older_erasure_route_is_documented_as_a_deprecated_alias() {
        let doc = document();
        let erase = &doc["paths"]["/customers/{id}/personal-data"]["delete"];
        let alias = &doc["paths"]["/customers/{id}/forget"]["post"];
        assert_ne!(erase["deprecated"], true, "{erase}");
        assert_eq!(alias["deprecated"], true, "{alias}");
        let summary = alias["summary"].as_str().expect("a summary");
        assert!(
            summary.contains("DELETE /customers/{id}/personal-data"),
            "{summary}"
        );
    }

    #[test]
    fn every_operation_has_a_summary_and_its_own_id() {
        let doc = document();
        assert!(!operations(&doc).is_empty());
        assert_eq!(openapi::unnamed_operations(&doc), Vec::<String>::new());
    }

    #[test]
    fn every_schema_referenced_is_defined() {
        let doc = document();
        assert!(doc["components"]["schemas"].is_object());
        assert!(!openapi::refs(&doc).is_empty());
        assert_eq!(openapi::undefined_refs(&doc), Vec::<String>::new());
    }

    #[test]
    fn the_schemas_state_the_limits_the_parsers_apply() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["Money"]["properties"]["amount"]["maximum"],
            json!(AMOUNT_MAX)
        );
        let line = &schemas["OrderLine"]["properties"];
        assert_eq!(line["quantity"]["maximum"], json!(OrderItems::QUANTITY_MAX));
        assert_eq!(line["sku"]["maxLength"], json!(Sku::BYTES_MAX));
        let lines = &schemas["PlaceOrder"]["properties"]["lines"];
        assert_eq!(lines["maxItems"], json!(OrderItems::LINES_MAX), "{lines}");
        for body in [
            "RegisterCustomer",
            "PlaceOrder",
            "ReserveCredit",
            "NoFields",
        ] {
            assert_eq!(
                schemas[body]["additionalProperties"],
                json!(false),
                "{body}"
            );
        }
    }

    #[test]
    fn the_document_names_the_api_and_its_version() {
        let doc = document();
        assert_eq!(doc["info"]["title"], "annals command API");
        assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    }
}
