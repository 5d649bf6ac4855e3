-- The id of the event at a checkpoint's position (NULL at position 0, and
-- where that event could not be read). Before a track goes on from its
-- checkpoint it checks that the log still holds this event there: a log
-- truncated past it, or restored from an older copy, would otherwise hand
-- it other events under positions the tables already contain.
ALTER TABLE projection_checkpoints ADD COLUMN event_id TEXT;
