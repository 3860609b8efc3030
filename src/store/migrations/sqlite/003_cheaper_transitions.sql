-- Cheaper status changes. SQLite evaluates a partial index's WHERE for the old and the new row of
-- every UPDATE that touches its columns, and an IN list of more than two constants makes it
-- build a temporary b-tree each time: two of them per status change for the index below, as
-- EXPLAIN shows (OpenEphemeral). finished_at is set when an instance ends or is suspended and
-- cleared when it runs again, so the finished instances are those with finished_at set and a
-- status other than suspended: two single comparisons, no temporary b-tree. The retention query
-- spells both terms out, so it can use the index (it names it).
DROP INDEX instances_finished;
CREATE INDEX instances_finished ON instances (finished_at)
    WHERE finished_at IS NOT NULL AND status <> 'suspended';
