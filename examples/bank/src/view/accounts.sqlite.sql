-- The accounts view of the bank: one row per account. Money is an integer
-- of minor units; times are microseconds since the Unix epoch (the event
-- store's commit timestamps).

CREATE TABLE accounts (
    id                  TEXT    NOT NULL PRIMARY KEY,
    -- Personal data: `[erased]` once the holder was forgotten.
    holder              TEXT    NOT NULL,
    currency            TEXT    NOT NULL,
    -- Negative while overdrawn, never below -overdraft_limit.
    balance             INTEGER NOT NULL,
    overdraft_limit     INTEGER NOT NULL,
    -- `open` or `closed`.
    status              TEXT    NOT NULL,
    transfers_sent      INTEGER NOT NULL,
    transfers_received  INTEGER NOT NULL,
    -- Sent and refused by the target: the amount came back.
    transfers_returned  INTEGER NOT NULL,
    -- Sent, and neither settled nor returned yet.
    transfers_in_flight INTEGER NOT NULL,
    -- Version of the account stream (its last event folded in).
    version             INTEGER NOT NULL,
    opened_at           INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    -- Log position of the last event that changed the row.
    position            INTEGER NOT NULL
) WITHOUT ROWID;

-- The filters of GET /accounts, each in id order for keyset pages.
CREATE INDEX accounts_by_currency ON accounts (currency, id);
CREATE INDEX accounts_by_status ON accounts (status, id);
