-- Instance ids are per tenant: the same id in two tenants is two instances. Inside the store an
-- instance is named by its key, "<tenant_id>/<instance_id>" (neither may hold a '/'), which is
-- unique; instance_id alone is not. Children reference the key. SQLite cannot change a UNIQUE
-- constraint in place, so every table that names an instance is rebuilt (the migration runs with
-- foreign keys off and checks them before it commits).
CREATE TABLE instances_new (
    seq                 INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_key        TEXT    NOT NULL UNIQUE,
    instance_id         TEXT    NOT NULL,
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
    request_hash        TEXT    NOT NULL DEFAULT '',
    attempt             INTEGER NOT NULL DEFAULT 0,
    token_hash          TEXT,
    checkpoint_id       TEXT,
    started_at          INTEGER,
    finished_at         INTEGER,
    heartbeat_at        INTEGER,
    sleep_until         INTEGER,
    wait_key            TEXT,
    auto_restarts       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO instances_new (seq, instance_key, instance_id, tenant_id, image_id, status, created_at,
    updated_at, termination_reason, exit_code, input, output, error, env, timeout_secs,
    request_hash, attempt, token_hash, checkpoint_id, started_at, finished_at, heartbeat_at,
    sleep_until, wait_key, auto_restarts)
SELECT seq, tenant_id || '/' || instance_id, instance_id, tenant_id, image_id, status, created_at,
    updated_at, termination_reason, exit_code, input, output, error, env, timeout_secs,
    request_hash, attempt, token_hash, checkpoint_id, started_at, finished_at, heartbeat_at,
    sleep_until, wait_key, auto_restarts
FROM instances;

CREATE TABLE checkpoints_new (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_key  TEXT    NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    key           TEXT    NOT NULL,
    data          BLOB    NOT NULL,
    created_at    INTEGER NOT NULL,
    UNIQUE (instance_key, key)
);
INSERT INTO checkpoints_new (seq, instance_key, key, data, created_at)
SELECT c.seq, i.tenant_id || '/' || i.instance_id, c.key, c.data, c.created_at
FROM checkpoints c JOIN instances i ON i.instance_id = c.instance_id;

CREATE TABLE events_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_key  TEXT    NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    type          TEXT    NOT NULL,
    subtype       TEXT,
    payload       TEXT,
    created_at    INTEGER NOT NULL,
    request_key   TEXT
);
INSERT INTO events_new (id, instance_key, type, subtype, payload, created_at, request_key)
SELECT e.id, i.tenant_id || '/' || i.instance_id, e.type, e.subtype, e.payload, e.created_at,
    e.request_key
FROM events e JOIN instances i ON i.instance_id = e.instance_id;

CREATE TABLE signals_new (
    instance_key  TEXT    PRIMARY KEY REFERENCES instances (instance_key) ON DELETE CASCADE,
    type          TEXT    NOT NULL CHECK (type IN ('cancel', 'pause', 'resume')),
    payload       TEXT,
    created_at    INTEGER NOT NULL
);
INSERT INTO signals_new (instance_key, type, payload, created_at)
SELECT i.tenant_id || '/' || i.instance_id, s.type, s.payload, s.created_at
FROM signals s JOIN instances i ON i.instance_id = s.instance_id;

CREATE TABLE custom_signals_new (
    instance_key  TEXT    NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    wait_key      TEXT    NOT NULL,
    payload       TEXT,
    created_at    INTEGER NOT NULL,
    PRIMARY KEY (instance_key, wait_key)
);
INSERT INTO custom_signals_new (instance_key, wait_key, payload, created_at)
SELECT i.tenant_id || '/' || i.instance_id, s.wait_key, s.payload, s.created_at
FROM custom_signals s JOIN instances i ON i.instance_id = s.instance_id;

-- AUTOINCREMENT counters continue where the old tables' did, also past rows retention deleted:
-- seq and event ids are cursors, never to be handed out twice
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'instances_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'instances_new');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence
                                                    WHERE name = 'instances'), 0))
    WHERE name = 'instances_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'checkpoints_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'checkpoints_new');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence
                                                    WHERE name = 'checkpoints'), 0))
    WHERE name = 'checkpoints_new';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'events_new', 0 WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'events_new');
UPDATE sqlite_sequence SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence
                                                    WHERE name = 'events'), 0))
    WHERE name = 'events_new';

DROP TABLE custom_signals;
DROP TABLE signals;
DROP TABLE events;
DROP TABLE checkpoints;
DROP TABLE instances;
ALTER TABLE instances_new RENAME TO instances;
ALTER TABLE checkpoints_new RENAME TO checkpoints;
ALTER TABLE events_new RENAME TO events;
ALTER TABLE signals_new RENAME TO signals;
ALTER TABLE custom_signals_new RENAME TO custom_signals;

CREATE INDEX instances_tenant_seq ON instances (tenant_id, seq);
CREATE INDEX instances_status_seq ON instances (status, seq);
CREATE INDEX instances_image_status ON instances (image_id, status);
CREATE INDEX instances_wake ON instances (sleep_until) WHERE sleep_until IS NOT NULL;
CREATE INDEX instances_finished ON instances (finished_at)
    WHERE finished_at IS NOT NULL AND status <> 'suspended';
CREATE INDEX instances_image ON instances (image_id);
CREATE INDEX instances_exit_unrecorded ON instances (status, seq)
    WHERE exit_code IS NULL AND attempt > 0;
-- an admin names an instance by its id alone when only one tenant has it
CREATE INDEX instances_instance_id ON instances (instance_id);
-- the instance API finds the instance a launch's token names
CREATE INDEX instances_token ON instances (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX checkpoints_instance_seq ON checkpoints (instance_key, seq);
CREATE INDEX events_instance_id ON events (instance_key, id);
CREATE UNIQUE INDEX events_request_key ON events (instance_key, request_key)
    WHERE request_key IS NOT NULL;
