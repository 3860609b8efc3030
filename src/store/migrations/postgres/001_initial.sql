-- The PostgreSQL schema: the SQLite schema at its version 8 (migrations/sqlite/), in the types
-- PostgreSQL has for it. Times are timestamptz (the store converts to and from epoch
-- microseconds, exactly); bytes are bytea; JSON documents are json, which checks them and keeps
-- their text as written (jsonb would reorder keys, and no query looks inside them); statuses,
-- runners and signal kinds are enum types. Every list filter and the due wake-ups have an index.

CREATE TYPE instance_status AS ENUM
    ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled');
CREATE TYPE runner_type AS ENUM ('oci', 'native');
CREATE TYPE signal_kind AS ENUM ('cancel', 'pause', 'resume');

-- Images: every registration is a new version of (tenant_id, name).
CREATE TABLE images (
    seq          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    image_id     text        NOT NULL UNIQUE,
    tenant_id    text        NOT NULL,
    name         text        NOT NULL,
    version      integer     NOT NULL,
    description  text,
    runner_type  runner_type NOT NULL,
    labels       json        NOT NULL DEFAULT '{}',
    sha256       text        NOT NULL,
    size_bytes   bigint      NOT NULL,
    created_at   timestamptz NOT NULL,
    UNIQUE (tenant_id, name, version)
);
CREATE INDEX images_tenant_seq ON images (tenant_id, seq);
CREATE INDEX images_created ON images (created_at);

-- Instances: one row per workflow run, named by instance_key (<tenant_id>/<instance_id>). The
-- caller (core) decides every status change; the store performs it as one guarded UPDATE.
CREATE TABLE instances (
    seq                 bigint          GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_key        text            NOT NULL UNIQUE,
    instance_id         text            NOT NULL,
    tenant_id           text            NOT NULL,
    image_id            text            NOT NULL, -- no foreign key: kept after the image's delete
    status              instance_status NOT NULL,
    runner              runner_type     NOT NULL DEFAULT 'native',
    created_at          timestamptz     NOT NULL,
    updated_at          timestamptz,
    termination_reason  text,
    exit_code           integer,
    input               json            NOT NULL DEFAULT '{}',
    output              json,
    error               text,
    env                 json            NOT NULL DEFAULT '{}',
    timeout_secs        bigint          NOT NULL DEFAULT 300 CHECK (timeout_secs > 0),
    request_hash        text            NOT NULL DEFAULT '',
    attempt             integer         NOT NULL DEFAULT 0,
    token_hash          text,
    checkpoint_id       text,
    started_at          timestamptz,
    finished_at         timestamptz,
    heartbeat_at        timestamptz,
    sleep_until         timestamptz,
    wait_key            text,
    auto_restarts       integer         NOT NULL DEFAULT 0,
    memory_peak_bytes   bigint,
    cpu_usec            bigint
);
CREATE INDEX instances_tenant_seq ON instances (tenant_id, seq);
CREATE INDEX instances_status_seq ON instances (status, seq);
CREATE INDEX instances_image_status ON instances (image_id, status);
CREATE INDEX instances_image ON instances (image_id);
CREATE INDEX instances_instance_id ON instances (instance_id);
CREATE INDEX instances_token ON instances (token_hash) WHERE token_hash IS NOT NULL;
CREATE INDEX instances_wake ON instances (sleep_until) WHERE sleep_until IS NOT NULL;
CREATE INDEX instances_finished ON instances (finished_at)
    WHERE finished_at IS NOT NULL AND status <> 'suspended';
CREATE INDEX instances_exit_unrecorded ON instances (status, seq)
    WHERE exit_code IS NULL AND attempt > 0;

-- Checkpoints: (instance, key) -> bytes, first write wins.
CREATE TABLE checkpoints (
    seq           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_key  text        NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    key           text        NOT NULL,
    data          bytea       NOT NULL,
    created_at    timestamptz NOT NULL,
    UNIQUE (instance_key, key)
);
CREATE INDEX checkpoints_instance_seq ON checkpoints (instance_key, seq);

-- Events: an append-only log per instance; request_key makes a repeated append a no-op.
CREATE TABLE events (
    id            bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_key  text        NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    type          text        NOT NULL,
    subtype       text,
    payload       text,
    created_at    timestamptz NOT NULL,
    request_key   text
);
CREATE INDEX events_instance_id ON events (instance_key, id);
CREATE UNIQUE INDEX events_request_key ON events (instance_key, request_key)
    WHERE request_key IS NOT NULL;

-- The pending control signal: one slot per instance (cancel outranks pause outranks resume).
CREATE TABLE signals (
    instance_key  text        PRIMARY KEY REFERENCES instances (instance_key) ON DELETE CASCADE,
    type          signal_kind NOT NULL,
    payload       text,
    created_at    timestamptz NOT NULL
);

-- Custom signals, keyed by the wait key the program waits on.
CREATE TABLE custom_signals (
    instance_key  text        NOT NULL REFERENCES instances (instance_key) ON DELETE CASCADE,
    wait_key      text        NOT NULL,
    payload       text,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (instance_key, wait_key)
);
