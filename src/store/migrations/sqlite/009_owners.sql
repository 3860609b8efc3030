-- Owners and leases (src/sched/README.md, "Several daemons on one database"). Every daemon that
-- opens the store registers here under its id (DATA_DIR/daemon-id) and renews its lease while it
-- runs; the unfinished instances it created or launched name it as their owner. An instance
-- whose owner holds no live lease is taken over by another daemon. A SQLite file serves one
-- daemon at a time, so here the rows only carry the owner across a change of daemon id.
CREATE TABLE daemons (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL
);
ALTER TABLE instances ADD COLUMN owner TEXT;
