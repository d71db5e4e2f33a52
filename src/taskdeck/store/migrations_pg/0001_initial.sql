-- Taskdeck on PostgreSQL: the schema SQLite reached through its migrations 0001-0005, in one step.
-- Times are Unix seconds (DOUBLE PRECISION); JSON columns hold compact JSON text, exactly as stored
-- by SQLite, so both stores give back the same bytes.

CREATE TABLE api_keys (
    owner       TEXT PRIMARY KEY,          -- keyed hash of the key (never the key)
    ciphertext  BYTEA NOT NULL,            -- the key, encrypted under the server secret
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
    submit_started_at  DOUBLE PRECISION
);
CREATE INDEX tasks_owner_created ON tasks(owner, created_at DESC, id DESC);
CREATE INDEX tasks_followed ON tasks(status, lease_expires);
CREATE INDEX tasks_owner_status ON tasks(owner, status);
CREATE INDEX tasks_follow_up_of ON tasks(follow_up_of);

-- Events are numbered per task (seq 1, 2, 3 … of that task), by the run's single lease holder under
-- a lock on the task's row: a global sequence would not be in commit order with many writers, and
-- SSE resume (Last-Event-ID) must never skip an event committed late.
CREATE TABLE events (
    task_id      TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    type         TEXT NOT NULL,
    origin       TEXT NOT NULL,
    data         TEXT NOT NULL,
    received_at  DOUBLE PRECISION NOT NULL,
    upstream_ts  TEXT,
    dedup_key    TEXT,
    PRIMARY KEY (task_id, seq)
);
-- Every distinct upstream event is stored once; our own events have no key (NULLs never collide).
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
