-- Kumofire Jobs, schema version 2: recurring schedules.
-- A schedule is always one run ahead: `next_run_id` is its pending occurrence, an ordinary
-- run in kumofire_job_runs (schedule_id set, occurrence_key = "<revision>:<nominal ms>").
-- `revision` grows with every change of timing or of `enabled`, so an occurrence of an
-- older revision never blocks its successor and a stale materialization matches nothing.

CREATE TABLE kumofire_job_schedules (
    id TEXT NOT NULL PRIMARY KEY,
    key TEXT,
    name TEXT NOT NULL,
    type TEXT NOT NULL CHECK (type IN ('cron', 'interval')),
    expr TEXT NOT NULL,
    timezone TEXT,
    enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
    payload TEXT,
    max_attempts INTEGER CHECK (max_attempts IS NULL OR max_attempts BETWEEN 1 AND 100),
    revision INTEGER NOT NULL DEFAULT 1,
    anchor_at INTEGER NOT NULL,
    next_run_at INTEGER,
    next_run_id TEXT,
    last_scheduled_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- Upsert and lookups by key.
CREATE UNIQUE INDEX kumofire_job_schedules_key
    ON kumofire_job_schedules (key) WHERE key IS NOT NULL;
