-- The current schema in one piece. Keep it equal to the migrations applied in order (a test checks).
-- Tasks, their events, and the encrypted API keys that own them.
-- Times are Unix seconds (REAL); JSON columns hold compact JSON text.

CREATE TABLE api_keys (
    owner       TEXT PRIMARY KEY,          -- keyed hash of the key (never the key)
    ciphertext  BLOB NOT NULL,             -- the key, encrypted under the server secret
    last4       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

-- The submit_* columns were added by migration 0003; SQLite records ALTER TABLE ADD COLUMN like this.
CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    owner            TEXT NOT NULL REFERENCES api_keys(owner),
    processor        TEXT NOT NULL,
    request          TEXT NOT NULL,        -- TaskRunInput as sent upstream
    status           TEXT NOT NULL,
    created_at       REAL NOT NULL,
    run_id           TEXT UNIQUE,
    interaction_id   TEXT,
    upstream_status  TEXT,
    error            TEXT,
    warnings         TEXT,
    output           TEXT,
    progress         TEXT,                 -- latest progress_stats event
    progress_meter   REAL,
    cost_usd         REAL,
    follow_up_of     TEXT REFERENCES tasks(id) ON DELETE SET NULL,
    submitted_at     REAL,
    first_event_at   REAL,
    last_event_at    REAL,
    completed_at     REAL,
    message          TEXT,
    lease_owner      TEXT,
    lease_expires    REAL
, submit_group TEXT, submit_token TEXT, submit_cursor TEXT, submit_started_at REAL, batch_id TEXT, row_index INTEGER, row_values TEXT);
CREATE INDEX tasks_owner_created ON tasks(owner, created_at DESC);
CREATE INDEX tasks_followed ON tasks(status, lease_expires);
CREATE INDEX tasks_owner_status ON tasks(owner, status);
CREATE INDEX tasks_follow_up_of ON tasks(follow_up_of);
CREATE INDEX tasks_batch_row ON tasks(batch_id, row_index);

CREATE TABLE events (
    seq          INTEGER PRIMARY KEY,      -- arrival order
    task_id      TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    type         TEXT NOT NULL,
    origin       TEXT NOT NULL,            -- 'upstream' or 'taskdeck'
    data         TEXT NOT NULL,
    received_at  REAL NOT NULL,
    upstream_ts  TEXT,
    dedup_key    TEXT
);
CREATE INDEX events_task_seq ON events(task_id, seq);
-- Every distinct upstream event is stored once; our own events have no key (NULLs never collide).
CREATE UNIQUE INDEX events_dedup ON events(task_id, dedup_key);

-- Upstream requests per key per second, as each process last reported them at its heartbeat.
-- Lets a restarted process, or several processes sharing one key, stay inside one rate budget.

CREATE TABLE rate_usage (
    owner       TEXT NOT NULL,
    holder      TEXT NOT NULL,             -- the process that made the requests
    buckets     TEXT NOT NULL,             -- JSON {"<unix second>": count} for the last minute
    updated_at  REAL NOT NULL,
    final       INTEGER NOT NULL DEFAULT 0, -- 1: the process stopped cleanly after this report
    PRIMARY KEY (owner, holder)
);

CREATE TABLE owner_groups (
    owner         TEXT PRIMARY KEY,
    taskgroup_id  TEXT NOT NULL,           -- the owner's task group at Parallel
    run_cursor    TEXT,                    -- a runs-stream cursor returned by an add; runs after it are newer
    created_at    REAL NOT NULL
);

-- Browser sessions, kept on the server (like Django's): the cookie holds a random token, this table
-- only its SHA-256, so a stolen database cannot be replayed as a cookie. Signing out deletes the row.

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,          -- SHA-256 of the cookie's token (hex)
    owner       TEXT NOT NULL,
    created_at  REAL NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX sessions_owner ON sessions(owner);

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

CREATE TABLE processes (
    holder      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,             -- serve, web (serve --no-engine) or worker
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  REAL NOT NULL,
    seen_at     REAL NOT NULL,
    following   INTEGER NOT NULL,          -- runs it follows
    feed_lag    REAL                       -- seconds between a shared-feed note's commit and its delivery here
, lease_expires REAL);

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
    created_at     REAL NOT NULL,
    taskgroup_id   TEXT,
    added_rows     INTEGER NOT NULL DEFAULT 0,
    events_cursor  TEXT,
    completed_at   REAL,
    lease_owner    TEXT,
    lease_expires  REAL
, upstream_counts TEXT);
-- The same input and spec of one owner is one batch: running it again resumes it, never pays twice.
CREATE UNIQUE INDEX batches_owner_resume ON batches(owner, resume_key);
CREATE INDEX batches_owner_created ON batches(owner, created_at DESC, id DESC);
CREATE INDEX batches_followed ON batches(status, lease_expires);
