//! The reference domain: customers with a credit line, and their orders.
//! Event types and JSON shapes follow the reference domain event contract
//! in examples/credit/README.md, which the projector reads.

pub mod audit;
pub mod customer;
pub mod money;
pub mod order;

/// The reference domain's upcasters: the current schema version of every
/// event type (the saga's checkpoint and fence included), with a step from each older
/// version to the next. Every
/// store the domain's events are read from is wrapped in them,
/// `event_store::Upcasting::new(store, domain::upcasters())`, which also
/// checks that each chain is complete.
pub fn upcasters() -> event_store::Upcasters {
    order::upcasters(customer::upcasters(event_store::Upcasters::new()))
        .current(command_api::saga::CHECKPOINT_EVENT_TYPE, 1)
        .current(command_api::idempotency::FENCE_EVENT_TYPE, 1)
}

#[cfg(test)]
mod tests {
    use event_store::{Error, Position, RecordedEvent, StreamId, Timestamp};

    fn stored(event_type: &str, version: u32) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream_id: StreamId::new("order-1").unwrap(),
            version: 1,
            position: Position(3),
            event_type: event_type.into(),
            schema_version: version,
            timestamp: Timestamp(0),
            data: bytes::Bytes::from_static(b"{}"),
            metadata: bytes::Bytes::from_static(b"{}"),
        }
    }

    #[test]
    fn every_event_type_has_a_complete_chain_and_other_versions_are_errors() {
        let upcasters = super::upcasters();
        upcasters.validate().unwrap();
        for event_type in super::customer::EVENT_TYPES
            .iter()
            .chain(super::order::EVENT_TYPES)
        {
            assert!(
                upcasters.current_version(event_type).is_some(),
                "{event_type}"
            );
        }
        assert_eq!(upcasters.current_version("CreditReserved"), Some(2));
        assert_eq!(upcasters.current_version("OrderPlaced"), Some(1));
        // Written by newer code, or by nothing this domain ever wrote.
        for (event_type, version) in [
            ("OrderPlaced", 2),
            ("OrderPlaced", 0),
            ("CreditReserved", 3),
        ] {
            match upcasters.upcast(stored(event_type, version)) {
                Err(Error::Upcast {
                    event_type: named,
                    version: at,
                    ..
                }) => assert_eq!((named.as_str(), at), (event_type, version)),
                other => panic!("{event_type} v{version}: {other:?}"),
            }
        }
    }
}
