-- Images: every registration is a new version of (tenant_id, name). Times are epoch microseconds.
CREATE TABLE images (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    image_id     TEXT    NOT NULL UNIQUE,
    tenant_id    TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    version      INTEGER NOT NULL,
    description  TEXT,
    runner_type  TEXT    NOT NULL CHECK (runner_type IN ('oci', 'native')),
    labels       TEXT    NOT NULL DEFAULT '{}',
    sha256       TEXT    NOT NULL,
    size_bytes   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (tenant_id, name, version)
);
CREATE INDEX images_tenant_seq ON images (tenant_id, seq);

-- Instances: one row per workflow run. The caller (core) decides every status change; the store
-- performs it as one guarded UPDATE (... WHERE status = <expected>). JSON columns hold JSON text.
-- seq is the stable list order and cursor (AUTOINCREMENT: never reused, unlike a plain rowid).
CREATE TABLE instances (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id         TEXT    NOT NULL UNIQUE,
    tenant_id           TEXT    NOT NULL,
    image_id            TEXT    NOT NULL, -- no foreign key: finished instances keep the id after a delete
    status              TEXT    NOT NULL CHECK (status IN
                          ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled')),
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL DEFAULT 0,
    termination_reason  TEXT,
    exit_code           INTEGER,
    input               TEXT    NOT NULL DEFAULT '{}',
    output              TEXT,
    error               TEXT,
    env                 TEXT    NOT NULL DEFAULT '{}',
    timeout_secs        INTEGER NOT NULL DEFAULT 300 CHECK (timeout_secs > 0),
    request_hash        TEXT    NOT NULL DEFAULT '', -- idempotency fingerprint chosen by the caller
    attempt             INTEGER NOT NULL DEFAULT 0,  -- number of launches
    token_hash          TEXT,                        -- SHA-256 hex of the current launch's token
    checkpoint_id       TEXT,                        -- key of the last checkpoint saved
    started_at          INTEGER,
    finished_at         INTEGER,
    heartbeat_at        INTEGER,
    sleep_until         INTEGER
);
CREATE INDEX instances_tenant_seq ON instances (tenant_id, seq);
CREATE INDEX instances_status_seq ON instances (status, seq);
CREATE INDEX instances_image_status ON instances (image_id, status);

-- Checkpoints: (instance, key) -> bytes, first write wins. seq orders them for listing.
CREATE TABLE checkpoints (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    key          TEXT    NOT NULL,
    data         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (instance_id, key)
);
CREATE INDEX checkpoints_instance_seq ON checkpoints (instance_id, seq);

-- Events: an append-only log per instance. type is free text, validated by callers.
CREATE TABLE events (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id  TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    type         TEXT    NOT NULL,
    subtype      TEXT,
    payload      TEXT,
    created_at   INTEGER NOT NULL
);
CREATE INDEX events_instance_id ON events (instance_id, id);

-- The pending control signal: one slot per instance (cancel outranks pause outranks resume).
CREATE TABLE signals (
    instance_id  TEXT    PRIMARY KEY REFERENCES instances (instance_id) ON DELETE CASCADE,
    type         TEXT    NOT NULL CHECK (type IN ('cancel', 'pause', 'resume')),
    payload      TEXT,
    created_at   INTEGER NOT NULL
);

-- Custom signals, keyed by the wait key the program waits on.
CREATE TABLE custom_signals (
    instance_id  TEXT    NOT NULL REFERENCES instances (instance_id) ON DELETE CASCADE,
    wait_key     TEXT    NOT NULL,
    payload      TEXT,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (instance_id, wait_key)
);
