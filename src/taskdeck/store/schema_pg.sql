-- The current PostgreSQL schema in one piece. Keep it equal to migrations_pg/ applied in order (a test checks).

CREATE TABLE api_keys (
    owner       TEXT PRIMARY KEY,
    ciphertext  BYTEA NOT NULL,
    last4       TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE tasks (
    id                 TEXT PRIMARY KEY,
    owner              TEXT NOT NULL REFERENCES api_keys(owner),
    processor          TEXT NOT NULL,
    request            TEXT NOT NULL,
    status             TEXT NOT NULL,
    created_at         DOUBLE PRECISION NOT NULL,
    run_id             TEXT UNIQUE,
    interaction_id     TEXT,
    upstream_status    TEXT,
    error              TEXT,
    warnings           TEXT,
    output             TEXT,
    progress           TEXT,
    progress_meter     DOUBLE PRECISION,
    cost_usd           DOUBLE PRECISION,
    follow_up_of       TEXT REFERENCES tasks(id) ON DELETE SET NULL,
    submitted_at       DOUBLE PRECISION,
    first_event_at     DOUBLE PRECISION,
    last_event_at      DOUBLE PRECISION,
    completed_at       DOUBLE PRECISION,
    message            TEXT,
    lease_owner        TEXT,
    lease_expires      DOUBLE PRECISION,
    submit_group       TEXT,
    submit_token       TEXT,
    submit_cursor      TEXT,
    submit_started_at  DOUBLE PRECISION,
    event_seq          BIGINT NOT NULL DEFAULT 0,   -- the number of the task's last event
    batch_id           TEXT,
    row_index          INTEGER,
    row_values         TEXT              -- a batch row's input values (JSON object)
);
CREATE INDEX tasks_owner_created ON tasks(owner, created_at DESC, id DESC);
CREATE INDEX tasks_followed ON tasks(status, lease_expires);
CREATE INDEX tasks_owner_status ON tasks(owner, status);
CREATE INDEX tasks_follow_up_of ON tasks(follow_up_of);
CREATE INDEX tasks_batch_row ON tasks(batch_id, row_index);

CREATE TABLE events (
    task_id      TEXT NOT NULL,                  -- no foreign key: see migration 0005
    seq          BIGINT NOT NULL,
    type         TEXT NOT NULL,
    origin       TEXT NOT NULL,
    data         TEXT NOT NULL,
    received_at  DOUBLE PRECISION NOT NULL,
    upstream_ts  TEXT,
    dedup_key    TEXT,
    PRIMARY KEY (task_id, seq)
);
CREATE UNIQUE INDEX events_dedup ON events(task_id, dedup_key);

CREATE TABLE rate_usage (
    owner       TEXT NOT NULL,
    holder      TEXT NOT NULL,
    buckets     TEXT NOT NULL,
    updated_at  DOUBLE PRECISION NOT NULL,
    final       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (owner, holder)
);

CREATE TABLE owner_groups (
    owner         TEXT PRIMARY KEY,
    taskgroup_id  TEXT NOT NULL,
    run_cursor    TEXT,
    created_at    DOUBLE PRECISION NOT NULL
);

CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    owner       TEXT NOT NULL,
    created_at  DOUBLE PRECISION NOT NULL,
    expires_at  DOUBLE PRECISION NOT NULL
);
CREATE INDEX sessions_owner ON sessions(owner);

CREATE TABLE processes (
    holder      TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,
    host        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL,
    following   INTEGER NOT NULL,
    feed_lag    DOUBLE PRECISION,
    lease_expires DOUBLE PRECISION  -- the lease on every task it holds (see claim)
);

CREATE TABLE rate_grants (
    owner  TEXT NOT NULL,
    at     DOUBLE PRECISION NOT NULL
);
CREATE INDEX rate_grants_owner_at ON rate_grants(owner, at);

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
    lease_expires  DOUBLE PRECISION,
    upstream_counts TEXT                   -- JSON: runs per status as Parallel last reported (task_group_status)
);
-- The same input and spec of one owner is one batch: running it again resumes it, never pays twice.
CREATE UNIQUE INDEX batches_owner_resume ON batches(owner, resume_key);
CREATE INDEX batches_owner_created ON batches(owner, created_at DESC, id DESC);
CREATE INDEX batches_followed ON batches(status, lease_expires);
