-- The orders view of the reference domain: orders that reserve credit.
-- Money is an integer of minor units; times are microseconds since the Unix
-- epoch (the event store's commit timestamps).

CREATE TABLE orders (
    id           TEXT    NOT NULL PRIMARY KEY,
    customer_id  TEXT    NOT NULL,
    currency     TEXT    NOT NULL,
    total        INTEGER NOT NULL,
    line_count   INTEGER NOT NULL,
    status       TEXT    NOT NULL,
    reason       TEXT,
    placed_at    INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    -- Version of the order stream (its last event folded in).
    version      INTEGER NOT NULL,
    position     INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);
