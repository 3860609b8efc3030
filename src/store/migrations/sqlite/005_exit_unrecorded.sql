-- Launched instances whose latest launch has no exit code recorded: at start-up the daemon looks
-- at each for an exit that happened while it was down, whatever the row's status. Once an exit
-- is recorded a row leaves the index, so it stays as small as the number of processes running or
-- lost to a machine crash.
CREATE INDEX instances_exit_unrecorded ON instances (status, seq)
    WHERE exit_code IS NULL AND attempt > 0;
