-- The runner an instance runs under, fixed when it is created from its image's runner_type: every
-- launch and the recovery after a crash ask that runner (issue #17). Instances created before
-- there was a choice ran natively, whatever their image said.
ALTER TABLE instances ADD COLUMN runner TEXT NOT NULL DEFAULT 'native'
    CHECK (runner IN ('oci', 'native'));
