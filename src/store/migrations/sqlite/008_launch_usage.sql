-- What the latest launch used, recorded with its exit code: its peak memory (a container's
-- cgroup peak, or a native process's peak RSS) and its CPU time (issue #17).
ALTER TABLE instances ADD COLUMN memory_peak_bytes INTEGER;
ALTER TABLE instances ADD COLUMN cpu_usec INTEGER;
