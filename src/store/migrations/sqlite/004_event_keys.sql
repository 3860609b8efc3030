-- Events a program reports may carry a key of its choosing, unique per instance: a report
-- repeated after a lost reply (the SDK repeats calls while the daemon restarts) finds the first
-- one instead of recording the event twice. Most events have no key, so the index is partial.
ALTER TABLE events ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX events_request_key ON events (instance_id, request_key)
    WHERE request_key IS NOT NULL;
