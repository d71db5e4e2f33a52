-- The live feed across processes sharing one SQLite file: each transaction that stores events or
-- changes a task appends a note here (ids are in commit order: SQLite has one writer at a time);
-- every process tails the table (one poll per process) and prunes rows older than a few minutes.
CREATE TABLE feed_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    holder     TEXT NOT NULL,              -- the process that wrote it (it has published it already)
    task_id    TEXT NOT NULL,
    owner      TEXT NOT NULL,
    first_seq  INTEGER,                    -- the task's events stored by that transaction, if any
    last_seq   INTEGER,
    changes    TEXT NOT NULL,              -- JSON of small changes (status, progress_meter, deleted…)
    at         REAL NOT NULL
);
CREATE INDEX feed_log_at ON feed_log(at);
