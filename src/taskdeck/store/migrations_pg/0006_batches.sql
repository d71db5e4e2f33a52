-- Batches: a table enriched row by row through one Parallel task group. Each row is a task
-- (batch_id, row_index), followed by its batch's supervisor rather than by a follower of its own.
CREATE TABLE batches (
    id             TEXT PRIMARY KEY,
    owner          TEXT NOT NULL,
    name           TEXT NOT NULL,
    status         TEXT NOT NULL,          -- pending, running, completed
    spec           TEXT NOT NULL,          -- JSON: processor, task_spec, input mapping, source_policy, metadata
    columns        TEXT NOT NULL,          -- JSON list of the input's columns
    resume_key     TEXT NOT NULL,          -- SHA-256 of the input's bytes and the canonical spec
    row_count      INTEGER NOT NULL,
    created_at     DOUBLE PRECISION NOT NULL,
    taskgroup_id   TEXT,
    added_rows     INTEGER NOT NULL DEFAULT 0,
    events_cursor  TEXT,
    completed_at   DOUBLE PRECISION,
    lease_owner    TEXT,
    lease_expires  DOUBLE PRECISION
);
-- The same input and spec of one owner is one batch: running it again resumes it, never pays twice.
CREATE UNIQUE INDEX batches_owner_resume ON batches(owner, resume_key);
CREATE INDEX batches_owner_created ON batches(owner, created_at DESC, id DESC);
CREATE INDEX batches_followed ON batches(status, lease_expires);

ALTER TABLE tasks ADD COLUMN batch_id TEXT;
ALTER TABLE tasks ADD COLUMN row_index INTEGER;
CREATE INDEX tasks_batch_row ON tasks(batch_id, row_index);
