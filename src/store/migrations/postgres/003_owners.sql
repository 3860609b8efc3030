-- Several daemons on one database (src/sched/README.md, "Several daemons on one database").
--
-- Every daemon registers here under its id (DATA_DIR/daemon-id) and renews its lease while it
-- runs. Leases are read and written on the server's clock, so the daemons' clocks need not
-- agree. The unfinished instances a daemon created or launched name it as their owner; those
-- whose owner holds no live lease are taken over by another daemon.
CREATE TABLE daemons (
    id           text        PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    lease_until  timestamptz NOT NULL
);
ALTER TABLE instances ADD COLUMN owner text;

-- The bytes of every registered image, so that any daemon can launch it, in parts of at most
-- 1 MiB (a part is one value in memory on both sides). Keyed by content: versions with the same
-- bytes share them. Each daemon caches them in its DATA_DIR/images/, checked by SHA-256.
CREATE TABLE image_blobs (
    sha256      text        NOT NULL,
    part        integer     NOT NULL,
    data        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, part)
);
