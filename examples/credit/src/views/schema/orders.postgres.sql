-- The orders view of the reference domain: orders that reserve credit.
-- Money is an integer of minor units; times are microseconds since the Unix
-- epoch (the event store's commit timestamps).
-- Text keys use the "C" collation: byte order, the same as SQLite's, so that
-- cursors and prefix ranges mean the same on both backends.

CREATE TABLE orders (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    customer_id  TEXT COLLATE "C" NOT NULL,
    currency     TEXT   NOT NULL,
    total        BIGINT NOT NULL,
    line_count   BIGINT NOT NULL,
    status       TEXT COLLATE "C" NOT NULL,
    reason       TEXT,
    placed_at    BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    -- Version of the order stream (its last event folded in).
    version      BIGINT NOT NULL,
    position     BIGINT NOT NULL
);

CREATE INDEX orders_by_customer ON orders (customer_id, id);
CREATE INDEX orders_by_status ON orders (status, id);
