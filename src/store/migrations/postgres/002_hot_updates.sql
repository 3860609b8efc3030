-- Room in each page of instances for the new version of a row: a checkpoint, a heartbeat or a
-- status change rewrites the row, and with free space on its page PostgreSQL updates it in place
-- of the old one without touching its nine indexes (a HOT update; no indexed column changes).
-- Measured with the checkpoints_pg scenario (docs/benchmarks.md).
ALTER TABLE instances SET (fillfactor = 50);
