-- Kumofire Jobs, schema version 5: what happened to a run (API.md Part 2, "Seeing what
-- happened"), kept on the run's own row as JSON text. D1 bills rows written, not bytes: the
-- statements that start and finish an attempt write these columns along with the status, so
-- a run that logs nothing and returns None writes the rows it wrote before. No index: none
-- of them is ever searched, and an index would be a written row per change.

-- The finished attempts, oldest first: [{"attempt", "started_at", "finished_at" (epoch ms),
-- "duration_ms", "outcome", "error"}, ...].
ALTER TABLE kumofire_job_runs ADD COLUMN attempts TEXT;
-- The handler's log lines (`ctx.log`, info and above), oldest first: [{"at" (epoch ms),
-- "attempt", "level", "event", "fields"}, ...]; the last 200 lines, at most 64 KiB.
ALTER TABLE kumofire_job_runs ADD COLUMN logs TEXT;
-- The latest `ctx.progress(value)` of the current or last attempt, JSON.
ALTER TABLE kumofire_job_runs ADD COLUMN progress TEXT;
-- What the handler returned, JSON, once the run succeeded.
ALTER TABLE kumofire_job_runs ADD COLUMN result TEXT;
