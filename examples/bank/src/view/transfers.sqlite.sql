-- The transfers view of the bank: one row per transfer and how far it got.
-- Money is an integer of minor units; times are microseconds since the
-- Unix epoch.

CREATE TABLE transfers (
    id             TEXT    NOT NULL PRIMARY KEY,
    from_account   TEXT    NOT NULL,
    to_account     TEXT    NOT NULL,
    amount         INTEGER NOT NULL,
    currency       TEXT    NOT NULL,
    -- requested, debited, credited, completed or failed.
    status         TEXT    NOT NULL,
    -- Set once failed: the rule that refused the transfer, and why.
    failure_rule   TEXT,
    failure_reason TEXT,
    -- Version of the transfer stream (its last event folded in).
    version        INTEGER NOT NULL,
    requested_at   INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    position       INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX transfers_by_from_account ON transfers (from_account, id);
CREATE INDEX transfers_by_status ON transfers (status, id);
