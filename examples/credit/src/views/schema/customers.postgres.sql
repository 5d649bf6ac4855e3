-- The customers view of the reference domain: customers with a credit line.
-- Money is an integer of minor units; times are microseconds since the Unix
-- epoch (the event store's commit timestamps).
-- Text keys use the "C" collation: byte order, the same as SQLite's, so that
-- cursors and prefix ranges mean the same on both backends.

CREATE TABLE customers (
    id               TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    name             TEXT   NOT NULL,
    -- Lowercased name: case-insensitive prefix search as an index range.
    name_folded      TEXT COLLATE "C" NOT NULL,
    email            TEXT   NOT NULL,
    currency         TEXT   NOT NULL,
    credit_limit     BIGINT NOT NULL,
    reserved         BIGINT NOT NULL,
    -- credit_limit - reserved, never below 0: 0 means the credit is used up.
    available        BIGINT NOT NULL,
    orders_placed    BIGINT NOT NULL,
    orders_approved  BIGINT NOT NULL,
    orders_rejected  BIGINT NOT NULL,
    orders_cancelled BIGINT NOT NULL,
    -- Version of the customer stream (its last event folded in).
    version          BIGINT NOT NULL,
    registered_at    BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    -- Log position of the last event that changed the row.
    position         BIGINT NOT NULL
);

-- "Customers whose credit is used up": WHERE available = 0 ORDER BY id.
CREATE INDEX customers_by_available ON customers (available, id);
CREATE INDEX customers_by_name ON customers (name_folded, id);
