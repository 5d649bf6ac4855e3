-- The customers view of the reference domain: customers with a credit line.
-- Money is an integer of minor units; times are microseconds since the Unix
-- epoch (the event store's commit timestamps).

CREATE TABLE customers (
    id               TEXT    NOT NULL PRIMARY KEY,
    name             TEXT    NOT NULL,
    -- Lowercased name: case-insensitive prefix search as an index range.
    name_folded      TEXT    NOT NULL,
    email            TEXT    NOT NULL,
    currency         TEXT    NOT NULL,
    credit_limit     INTEGER NOT NULL,
    reserved         INTEGER NOT NULL,
    -- credit_limit - reserved, never below 0: 0 means the credit is used up.
    available        INTEGER NOT NULL,
    orders_placed    INTEGER NOT NULL,
    orders_approved  INTEGER NOT NULL,
    orders_rejected  INTEGER NOT NULL,
    orders_cancelled INTEGER NOT NULL,
    -- Version of the customer stream (its last event folded in).
    version          INTEGER NOT NULL,
    registered_at    INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    -- Log position of the last event that changed the row.
    position         INTEGER NOT NULL
) WITHOUT ROWID;

-- "Customers whose credit is used up": WHERE available = 0 ORDER BY id.
CREATE INDEX customers_by_available ON customers (available, id);
CREATE INDEX customers_by_name ON customers (name_folded, id);
