-- Kumofire Jobs, schema version 1: job runs.
-- Times are Unix epoch milliseconds (INTEGER); payloads are JSON text.
-- D1 bills every index touched by a write as another written row, so each index here
-- serves a query the runtime or the API makes, and partial indexes skip rows that the
-- query never asks for.

CREATE TABLE kumofire_job_runs (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (
        status IN ('scheduled', 'queued', 'running', 'succeeded', 'failed', 'canceled')
    ),
    payload TEXT,
    attempt INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    max_attempts INTEGER NOT NULL CHECK (max_attempts >= 1),
    scheduled_for INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    last_error TEXT,
    dedupe_key TEXT,
    schedule_id TEXT,
    occurrence_key TEXT,
    lease_token INTEGER
) WITHOUT ROWID;

-- Dedupe: a key is unique among the runs that still exist.
CREATE UNIQUE INDEX kumofire_job_runs_dedupe_key
    ON kumofire_job_runs (dedupe_key) WHERE dedupe_key IS NOT NULL;

-- Schedules: one run per schedule occurrence (revision and nominal time in occurrence_key),
-- and listing a schedule's runs newest first.
CREATE UNIQUE INDEX kumofire_job_runs_schedule_occurrence
    ON kumofire_job_runs (schedule_id, occurrence_key) WHERE schedule_id IS NOT NULL;

-- Reconciliation and retention: unfinished runs by due time.
CREATE INDEX kumofire_job_runs_active
    ON kumofire_job_runs (scheduled_for) WHERE status IN ('scheduled', 'queued', 'running');
