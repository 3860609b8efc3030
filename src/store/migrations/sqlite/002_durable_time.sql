-- Durable time and crash recovery.
-- wait_key: the custom signal a suspended instance waits for (reason waiting_signal).
-- auto_restarts: relaunches after the machine or the daemon died, since the last new checkpoint;
-- the daemon stops relaunching by itself past RUNTARA_MAX_AUTO_RESTARTS.
ALTER TABLE instances ADD COLUMN wait_key TEXT;
ALTER TABLE instances ADD COLUMN auto_restarts INTEGER NOT NULL DEFAULT 0;

-- The wake scheduler rebuilds its heap from these rows at start-up.
CREATE INDEX instances_wake ON instances (sleep_until) WHERE sleep_until IS NOT NULL;
-- The retention pass deletes the oldest finished instances first.
CREATE INDEX instances_finished ON instances (finished_at)
    WHERE status IN ('completed', 'failed', 'cancelled');
-- The retention pass asks whether an image is still used by any instance.
CREATE INDEX instances_image ON instances (image_id);
