-- Cheaper status changes. SQLite evaluates a partial index's WHERE for the old and the new row of
-- every UPDATE that touches its columns, and an IN list of more than two constants makes it
-- build a temporary b-tree each time: two of them per status change for the index below, as
-- EXPLAIN shows (OpenEphemeral). finished_at is set when an instance ends and cleared when it is
-- resumed, so this predicate keeps the finished instances at no cost; the retention query
-- ("finished_at < ?") implies it, so it still uses the index.
DROP INDEX instances_finished;
CREATE INDEX instances_finished ON instances (finished_at) WHERE finished_at IS NOT NULL;
