-- Bookkeeping of the projector. One row per projection and track: the live
-- track feeds the tables queries read; the rebuild track feeds the shadow
-- tables a rebuild fills before they are swapped in. A track's row is updated
-- in the same transaction as the view rows of every batch, so the position
-- says exactly which events the tables contain.
CREATE TABLE projection_checkpoints (
    name           TEXT    NOT NULL,
    track          TEXT    NOT NULL CHECK (track IN ('live', 'rebuild')),
    -- The projection code version that built the track's tables.
    version        INTEGER NOT NULL CHECK (version >= 0),
    -- Last log position applied (0 = none).
    position       INTEGER NOT NULL CHECK (position >= 0),
    state          TEXT    NOT NULL CHECK (state IN ('catching_up', 'live', 'rebuilding', 'failed')),
    last_error     TEXT,
    -- The event that failed (position + 1 while the track is failed).
    error_position INTEGER,
    -- Microseconds since the Unix epoch.
    started_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    PRIMARY KEY (name, track)
) WITHOUT ROWID;

-- Events an operator chose to skip after they failed a projection. A rebuild
-- with the same projection version skips them too, so that it reproduces the
-- live view; a new version (new code) tries them again.
CREATE TABLE projection_skipped_events (
    name       TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    position   INTEGER NOT NULL,
    error      TEXT    NOT NULL,
    skipped_at INTEGER NOT NULL,
    PRIMARY KEY (name, version, position)
) WITHOUT ROWID;
