-- Creating a run is not idempotent at Parallel, so Taskdeck creates every run inside its owner's task
-- group, tagged with the task's submit token (metadata "taskdeck_id"). A process that finds a task
-- still `submitting` after a crash lists the group's runs after `submit_cursor` and adopts the one
-- carrying the token, instead of paying for a second run.

ALTER TABLE tasks ADD COLUMN submit_group TEXT;
ALTER TABLE tasks ADD COLUMN submit_token TEXT;
ALTER TABLE tasks ADD COLUMN submit_cursor TEXT;
ALTER TABLE tasks ADD COLUMN submit_started_at REAL;

CREATE TABLE owner_groups (
    owner         TEXT PRIMARY KEY,
    taskgroup_id  TEXT NOT NULL,           -- the owner's task group at Parallel
    run_cursor    TEXT,                    -- a runs-stream cursor returned by an add; runs after it are newer
    created_at    REAL NOT NULL
);
