-- Kumofire Jobs, schema version 6: flows (API.md Part 2, "Flows").
-- A flow's parent run waits (status `waiting`) until each of its children (runs with
-- `parent_id` set) has finished. SQLite cannot change a CHECK constraint in place, so the
-- runs table is rebuilt: a new table with the wider CHECK, every row copied by column name
-- (never by position), the old table dropped, the new one renamed, then every index created
-- again under its old name. The migrator runs a migration as one D1 batch (one transaction),
-- so a failure leaves the version 5 table as it was.
--
-- Columns of the runs table added by another migration must be listed here too (the table
-- definition and the copy): a rebuild keeps only the columns it names.

CREATE TABLE kumofire_job_runs_v6 (
    id TEXT NOT NULL PRIMARY KEY,
    name TEXT NOT NULL,
    status TEXT NOT NULL CHECK (
        status IN (
            'waiting', 'scheduled', 'queued', 'running', 'succeeded', 'failed', 'canceled'
        )
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
    lease_token INTEGER,
    priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    concurrency_key TEXT,
    dedupe_expires_at INTEGER,
    timeout REAL,
    -- A run's history (migration 5, `0005_history.sql`): JSON text, kept as it was.
    attempts TEXT,
    logs TEXT,
    progress TEXT,
    result TEXT,
    -- A flow's child: the id of the run that waits for it.
    parent_id TEXT,
    -- A flow's parent: how many children it was created with (null for every other run), so
    -- the consumer reads the children for `ctx.children` only for a parent, from the row its
    -- start returns anyway.
    child_count INTEGER CHECK (child_count IS NULL OR child_count >= 1)
) WITHOUT ROWID;

INSERT INTO kumofire_job_runs_v6 (
    id, name, status, payload, attempt, max_attempts, scheduled_for, created_at, updated_at,
    started_at, finished_at, last_error, dedupe_key, schedule_id, occurrence_key, lease_token,
    priority, concurrency_key, dedupe_expires_at, timeout, attempts, logs, progress, result
)
SELECT
    id, name, status, payload, attempt, max_attempts, scheduled_for, created_at, updated_at,
    started_at, finished_at, last_error, dedupe_key, schedule_id, occurrence_key, lease_token,
    priority, concurrency_key, dedupe_expires_at, timeout, attempts, logs, progress, result
FROM kumofire_job_runs;

DROP TABLE kumofire_job_runs;

ALTER TABLE kumofire_job_runs_v6 RENAME TO kumofire_job_runs;

-- The indexes of versions 1 and 3, as they were (dropped with the old table).
CREATE UNIQUE INDEX kumofire_job_runs_dedupe_key
    ON kumofire_job_runs (dedupe_key) WHERE dedupe_key IS NOT NULL;

CREATE UNIQUE INDEX kumofire_job_runs_schedule_occurrence
    ON kumofire_job_runs (schedule_id, occurrence_key) WHERE schedule_id IS NOT NULL;

CREATE INDEX kumofire_job_runs_unfinished
    ON kumofire_job_runs (scheduled_for) WHERE finished_at IS NULL;

-- A flow's children by parent. It serves: the release of a parent when a child finishes
-- (`... AND NOT EXISTS (SELECT 1 FROM kumofire_job_runs WHERE parent_id = ? AND finished_at
-- IS NULL)`), the cancel that cascades to the children (`WHERE ... OR parent_id = ?`),
-- `ctx.children` (`WHERE parent_id = ? ORDER BY id`) and `list(parent_id=...)` (the same,
-- newest first: the primary key is the index's suffix). Partial, so a run outside a flow has
-- no entry and writes no index row; a child writes its entry once, at its insert (a status
-- change leaves `parent_id` alone, so it does not touch the index). Keyed on `parent_id`
-- alone, not also `finished_at`: a child's finish would then write an index row, and D1
-- bills a row written like a thousand rows read, while the release reads at most a flow's
-- 100 children.
CREATE INDEX kumofire_job_runs_parent
    ON kumofire_job_runs (parent_id) WHERE parent_id IS NOT NULL;
