-- Kumofire Jobs, schema version 4: what operating it needs (API.md Part 2).
-- Every new column has a default or is nullable, so a run of a job without options writes
-- the same one row it wrote before. No new index on the runs table: each would cost D1 one
-- more written row per insert and per status change it covers (see below for the queries
-- that do without one).

-- A run's create options. `priority` orders the runs of a job that wait (higher first);
-- `concurrency_key` is what the limiter counts per key; `dedupe_expires_at` (epoch ms,
-- null: held while the run exists) ends the hold of its `dedupe_key` (`dedupe_ttl`); the
-- holder is released only when a create meets its key taken, through the dedupe_key index
-- that exists already. `timeout` is the job's timeout (seconds) the run was created under.
ALTER TABLE kumofire_job_runs
    ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100);
ALTER TABLE kumofire_job_runs ADD COLUMN concurrency_key TEXT;
ALTER TABLE kumofire_job_runs ADD COLUMN dedupe_expires_at INTEGER;
ALTER TABLE kumofire_job_runs ADD COLUMN timeout REAL;
-- The queries these serve read the index of unfinished runs (migration 3) or the primary key:
-- resuming a paused job re-arms its `queued` runs in priority order, reading the unfinished
-- runs (a pause is rare, and only unfinished runs are read); the bulk operations walk the
-- primary key (ids are ordered by creation time, so `created_before` is a key range).

-- One row per job that was ever paused: a job without a row is not paused, so a job nobody
-- pauses costs nothing. Read by the consumer's guarded `running` update (a primary key
-- lookup) and by the jobs API.
CREATE TABLE kumofire_jobs (
    name TEXT NOT NULL PRIMARY KEY,
    paused INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- A schedule's occurrences: at most `occurrence_limit` (null: no limit; `limit` in the API,
-- a reserved word in SQL), `occurrence_count` so far, none before `start_at` or after
-- `end_at` (epoch ms), each created with `priority` and `concurrency_key`.
ALTER TABLE kumofire_job_schedules
    ADD COLUMN occurrence_limit INTEGER CHECK (occurrence_limit IS NULL OR occurrence_limit >= 1);
ALTER TABLE kumofire_job_schedules ADD COLUMN occurrence_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE kumofire_job_schedules ADD COLUMN start_at INTEGER;
ALTER TABLE kumofire_job_schedules ADD COLUMN end_at INTEGER;
ALTER TABLE kumofire_job_schedules
    ADD COLUMN priority INTEGER NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100);
ALTER TABLE kumofire_job_schedules ADD COLUMN concurrency_key TEXT;
