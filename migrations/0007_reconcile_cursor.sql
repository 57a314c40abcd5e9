-- Kumofire Jobs, schema version 7: where reconciliation's walk over the overdue runs stands.
-- Each cron pass asks at most `limit` coordinators about overdue unfinished runs, oldest
-- first, and the next pass goes on after the last one asked. The position was kept in each
-- isolate's memory, so two isolates each walked at half speed and a new isolate began at the
-- oldest again: with isolates replaced faster than one whole walk, a lost run behind `limit`
-- healthy overdue runs was never asked about. It is kept here, shared, instead: one row
-- (`name` 'overdue'), read at a pass's start and written at its end only when it moved, by a
-- compare-and-set on `version` so that of two passes that read the same position only the
-- first to finish writes (the other walked the same page; it must not move the cursor back).
-- `scheduled_for` and `run_id` are the last run asked, both null when the next pass starts
-- from the oldest. No row is created here: the first pass that moves the cursor inserts it.

CREATE TABLE kumofire_reconcile_cursor (
    name TEXT NOT NULL PRIMARY KEY,
    scheduled_for INTEGER,
    run_id TEXT,
    version INTEGER NOT NULL CHECK (version >= 1),
    CHECK ((scheduled_for IS NULL) = (run_id IS NULL))
) WITHOUT ROWID;
