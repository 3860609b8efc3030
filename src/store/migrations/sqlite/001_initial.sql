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

-- Instances: the columns the image registry needs; the instance lifecycle extends this table.
CREATE TABLE instances (
    instance_id  TEXT    PRIMARY KEY,
    tenant_id    TEXT    NOT NULL,
    image_id     TEXT    NOT NULL, -- no foreign key: finished instances keep the id after a delete
    status       TEXT    NOT NULL CHECK (status IN
                   ('pending', 'running', 'suspended', 'completed', 'failed', 'cancelled')),
    created_at   INTEGER NOT NULL
);
CREATE INDEX instances_image_status ON instances (image_id, status);
CREATE INDEX instances_tenant ON instances (tenant_id);
