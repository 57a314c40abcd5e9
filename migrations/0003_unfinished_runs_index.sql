-- Kumofire Jobs, schema version 3: a cheaper index of unfinished runs.
-- The partial index of version 1 was keyed on `status`, so every status change
-- (scheduled -> queued -> running) rewrote its entry, and D1 bills each as a written row.
-- `finished_at IS NULL` holds for exactly the unfinished runs (every terminal status sets
-- finished_at; a retry clears it) and changes only when a run finishes or is retried, so
-- queued and running touch the table row alone. Reconciliation's query names the same
-- term, which lets SQLite use the index (a partial index is used only when the query
-- repeats its WHERE terms).

DROP INDEX kumofire_job_runs_active;

CREATE INDEX kumofire_job_runs_unfinished
    ON kumofire_job_runs (scheduled_for) WHERE finished_at IS NULL;
