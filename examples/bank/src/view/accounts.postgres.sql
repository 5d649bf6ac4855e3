-- The accounts view of the bank: one row per account. Money is an integer
-- of minor units; times are microseconds since the Unix epoch (the event
-- store's commit timestamps).
-- Text keys use the "C" collation: byte order, the same as SQLite's, so
-- that cursors mean the same on both backends.

CREATE TABLE accounts (
    id                  TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    -- Personal data: `[erased]` once the holder was forgotten.
    holder              TEXT   NOT NULL,
    currency            TEXT   NOT NULL,
    -- Negative while overdrawn, never below -overdraft_limit.
    balance             BIGINT NOT NULL,
    overdraft_limit     BIGINT NOT NULL,
    -- `open` or `closed`.
    status              TEXT   NOT NULL,
    transfers_sent      BIGINT NOT NULL,
    transfers_received  BIGINT NOT NULL,
    -- Sent and refused by the target: the amount came back.
    transfers_returned  BIGINT NOT NULL,
    -- Sent, and neither settled nor returned yet.
    transfers_in_flight BIGINT NOT NULL,
    -- Version of the account stream (its last event folded in).
    version             BIGINT NOT NULL,
    opened_at           BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    -- Log position of the last event that changed the row.
    position            BIGINT NOT NULL
);

-- The filters of GET /accounts, each in id order for keyset pages.
CREATE INDEX accounts_by_currency ON accounts (currency, id);
CREATE INDEX accounts_by_status ON accounts (status, id);
