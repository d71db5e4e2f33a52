-- The SQLite store's statements (store/sqlite.py), read by store/queries.py.
-- Placeholders are `?`. A `{slot}` marks a template the store fills with fragments, placeholder
-- lists or task column names (never values): see store/queries.py for why.

-- == connections =============================================================

-- name: pragma_wal
-- Readers never wait for the writer, and writers for readers.
PRAGMA journal_mode=WAL;

-- name: pragma_synchronous
-- In WAL mode, every commit survives a process crash; only a power loss can drop the last ones.
PRAGMA synchronous=NORMAL;

-- name: pragma_foreign_keys
-- SQLite checks REFERENCES only when asked, per connection.
PRAGMA foreign_keys=ON;

-- name: pragma_busy_timeout
-- Wait up to 30 s for another process's write lock instead of failing at once.
PRAGMA busy_timeout=30000;

-- name: begin_immediate
-- Take the write lock at the start: a transaction that reads then writes cannot fail half-way
-- on another process's lock.
BEGIN IMMEDIATE;

-- name: commit
-- End a write transaction.
COMMIT;

-- name: rollback
-- Abandon a write transaction.
ROLLBACK;

-- == schema ==================================================================

-- name: create_schema_migrations
-- The table of applied migrations (the migrations themselves are numbered files in migrations/).
CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at REAL);

-- name: applied_migrations
-- The versions already applied.
SELECT version FROM schema_migrations;

-- name: record_migration
-- A migration applied: (version, applied_at).
INSERT INTO schema_migrations VALUES (?, ?);

-- == writes ==================================================================

-- name: advance_group_cursor
-- Move an owner's task-group runs cursor: (run_cursor, owner, taskgroup_id).
UPDATE owner_groups SET run_cursor = ? WHERE owner = ? AND taskgroup_id = ?;

-- name: put_key
-- Store or replace an owner's encrypted key: (owner, ciphertext, last4, created_at, updated_at).
INSERT INTO api_keys (owner, ciphertext, last4, created_at, updated_at)
VALUES (?,?,?,?,?) ON CONFLICT(owner) DO UPDATE SET ciphertext=excluded.ciphertext,
last4=excluded.last4, updated_at=excluded.updated_at;

-- name: max_seq
-- The last event number taken (seq is global: one writer at a time holds the lock).
SELECT COALESCE(MAX(seq), 0) FROM events;

-- name: insert_events
-- One event; a duplicate (task_id, dedup_key) a racing process stored is skipped.
INSERT OR IGNORE INTO events (seq, task_id, type, origin, data, received_at, upstream_ts, dedup_key)
VALUES (?,?,?,?,?,?,?,?);

-- name: present_seqs
-- Which of these event numbers were stored. {marks}: one `?` per seq.
SELECT seq FROM events WHERE seq IN ({marks});

-- name: insert_feed_note
-- One note of the cross-process live feed, committed with what it announces.
INSERT INTO feed_log (holder, task_id, owner, first_seq, last_seq, changes, at) VALUES (?,?,?,?,?,?,?);

-- name: insert_task
-- A new task. {columns}: the task columns; {marks}: one `?` per column.
INSERT INTO tasks ({columns}) VALUES ({marks});

-- name: patch_task
-- Set some columns of one task. {sets}: `column = ?` per column; {guard}: and_status_in or nothing.
UPDATE tasks SET {sets} WHERE id = ? {guard};

-- == the cross-process feed ==================================================

-- name: feed_last_id
-- The newest feed_log row: a process starting now reads what comes after it.
SELECT COALESCE(MAX(id), 0) FROM feed_log;

-- name: feed_after
-- The feed_log rows after an id, oldest first (ids are in commit order): (after_id, limit).
SELECT id, holder, task_id, owner, first_seq, last_seq, changes, at FROM feed_log WHERE id > ?
ORDER BY id LIMIT ?;

-- name: feed_prune
-- Forget feed_log rows every process has read long since: (before).
DELETE FROM feed_log WHERE at < ?;

-- == tasks ===================================================================

-- name: get_task
-- The task row by id.
SELECT * FROM tasks WHERE id = ?;

-- name: get_task_by_run
-- The task row by upstream run id.
SELECT * FROM tasks WHERE run_id = ?;

-- name: get_tasks
-- Task rows by id. {marks}: one `?` per id.
SELECT * FROM tasks WHERE id IN ({marks});

-- name: delete_task_events
-- A task's events, if the task is there (and in one of the statuses, when guarded):
-- (task_id, task_id, statuses…). {guard}: and_status_in or nothing.
DELETE FROM events WHERE task_id = ? AND EXISTS (SELECT 1 FROM tasks WHERE id = ? {guard});

-- name: delete_task
-- The task row (guarded like delete_task_events): (task_id, statuses…).
DELETE FROM tasks WHERE id = ? {guard};

-- name: list_tasks
-- One page of an owner's tasks. {filters}: and_* fragments; {order}: ASC or DESC.
SELECT * FROM tasks WHERE owner = ? AND batch_id IS NULL {filters}
ORDER BY created_at {order}, id {order} LIMIT ?;

-- name: count_tasks
-- Task counts by status. {filters}: and_* fragments.
SELECT status, COUNT(*) FROM tasks WHERE batch_id IS NULL {filters} GROUP BY status;

-- name: and_owner
-- Filter: the owner's tasks.
AND owner = ?

-- name: and_follow_up_of
-- Filter: follow-ups of one task.
AND follow_up_of = ?

-- name: and_status_in
-- Filter (and guard): the status is one of a list. {marks}: one `?` per status.
AND status IN ({marks})

-- name: and_processor
-- Filter: one processor.
AND processor = ?

-- name: and_text
-- Filter: the text in the request (LIKE pattern, escaped with \), or the exact run or task id.
AND (request LIKE ? ESCAPE '\' OR run_id = ? OR id = ?)

-- name: and_after_cursor
-- Page cursor, oldest first: after the previous page's last task (created_at, id).
AND (created_at, id) > (?, ?)

-- name: and_before_cursor
-- Page cursor, newest first: before the previous page's last task (created_at, id).
AND (created_at, id) < (?, ?)

-- name: spent_since
-- What an owner's tasks created since a time cost, rejected ones aside: (owner, since, rejected).
SELECT COALESCE(SUM(cost_usd), 0) FROM tasks WHERE owner = ? AND created_at >= ? AND status != ?;

-- == events ==================================================================

-- name: events
-- A task's events after a seq, in order. {limit}: the limit fragment or nothing.
SELECT * FROM events WHERE task_id = ? AND seq > ? ORDER BY seq {limit};

-- name: limit
-- At most this many rows.
LIMIT ?

-- name: dedup_keys
-- The de-duplication keys of a task's stored events.
SELECT dedup_key FROM events WHERE task_id = ? AND dedup_key IS NOT NULL;

-- == keys ====================================================================

-- name: get_key
-- An owner's encrypted key (empty once forgotten).
SELECT ciphertext FROM api_keys WHERE owner = ?;

-- name: forget_key
-- Erase an owner's key; the row stays, since tasks reference the owner: (updated_at, owner).
UPDATE api_keys SET ciphertext = X'', last4 = '', updated_at = ?
WHERE owner = ? AND length(ciphertext) > 0;

-- name: owners_with_keys
-- Which of these owners still have a key. {marks}: one `?` per owner.
SELECT owner FROM api_keys WHERE length(ciphertext) > 0 AND owner IN ({marks});

-- == owner groups ============================================================

-- name: get_owner_group
-- An owner's task group and runs cursor.
SELECT owner, taskgroup_id, run_cursor FROM owner_groups WHERE owner = ?;

-- name: insert_owner_group
-- An owner's task group, unless one is stored already: (owner, taskgroup_id, created_at).
INSERT INTO owner_groups (owner, taskgroup_id, run_cursor, created_at) VALUES (?,?,NULL,?)
ON CONFLICT(owner) DO NOTHING;

-- name: drop_owner_group
-- Forget an owner's task group (Parallel no longer knows it): (owner, taskgroup_id).
DELETE FROM owner_groups WHERE owner = ? AND taskgroup_id = ?;

-- == sessions ================================================================

-- name: prune_sessions
-- Forget expired sessions: (now).
DELETE FROM sessions WHERE expires_at < ?;

-- name: insert_session
-- A new session (the token's hash, never the token): (id_hash, owner, created_at, expires_at).
INSERT INTO sessions (id_hash, owner, created_at, expires_at) VALUES (?,?,?,?);

-- name: get_session
-- The owner of a live session: (id_hash, now).
SELECT owner FROM sessions WHERE id_hash = ? AND expires_at > ?;

-- name: delete_session
-- Sign one session out.
DELETE FROM sessions WHERE id_hash = ?;

-- name: delete_sessions
-- Sign every session of an owner out.
DELETE FROM sessions WHERE owner = ?;

-- == processes ===============================================================

-- name: put_process
-- A process's heartbeat: its row, created or refreshed.
INSERT INTO processes (holder, kind, host, pid, started_at, seen_at, following, feed_lag)
VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(holder) DO UPDATE SET seen_at=excluded.seen_at,
following=excluded.following, feed_lag=excluded.feed_lag;

-- name: prune_processes
-- Forget processes silent for long: (seen before).
DELETE FROM processes WHERE seen_at < ?;

-- name: drop_process
-- A process that stopped.
DELETE FROM processes WHERE holder = ?;

-- name: release_all
-- Give up every lease of one holder (a process proven dead): (holder).
UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?;

-- name: processes
-- Every known process, oldest first.
SELECT holder, kind, host, pid, started_at, seen_at, following, feed_lag FROM processes
ORDER BY started_at;

-- name: engines_alive
-- How many engine-running processes were seen since a time.
SELECT COUNT(*) FROM processes WHERE kind IN ('serve', 'worker') AND seen_at >= ?;

-- name: leases
-- Live leases per holder (the task's own, or its holder's process lease): (now, now).
SELECT lease_owner, COUNT(*) FROM tasks t WHERE lease_owner IS NOT NULL AND (lease_expires >= ?
OR EXISTS (SELECT 1 FROM processes p WHERE p.holder = t.lease_owner AND p.lease_expires >= ?))
GROUP BY lease_owner;

-- == rate usage ==============================================================

-- name: put_usage
-- One process's per-second spending of one key: (owner, holder, buckets, updated_at, final).
INSERT INTO rate_usage (owner, holder, buckets, updated_at, final) VALUES (?,?,?,?,?)
ON CONFLICT(owner, holder) DO UPDATE SET buckets=excluded.buckets, updated_at=excluded.updated_at,
final=excluded.final;

-- name: prune_usage
-- Forget usage reports older than every window: (before).
DELETE FROM rate_usage WHERE updated_at < ?;

-- name: get_usage
-- The other processes' usage reports since a time: (since, exclude_holder).
SELECT owner, holder, buckets, updated_at, final FROM rate_usage WHERE updated_at >= ? AND holder != ?;

-- == leases ==================================================================

-- name: claim
-- Lease up to `limit` followed tasks that nobody holds, newest activity first:
-- (holder, expires, followed statuses…, now, now, limit). {followed}: one `?` per followed status.
-- A lease is free when the task's own expiry and its holder's process lease have both passed.
UPDATE tasks SET lease_owner = ?, lease_expires = ? WHERE id IN (
 SELECT id FROM tasks t WHERE status IN ({followed}) AND batch_id IS NULL
 AND (lease_owner IS NULL OR (lease_expires < ? AND NOT EXISTS (
  SELECT 1 FROM processes p WHERE p.holder = t.lease_owner AND p.lease_expires >= ?)))
 -- A task whose key was forgotten cannot be followed until its owner signs in again.
 AND owner IN (SELECT owner FROM api_keys WHERE length(ciphertext) > 0)
 ORDER BY COALESCE(last_event_at, created_at) DESC LIMIT ?) RETURNING *;

-- name: renew_process
-- Extend a process's lease on every task it holds (one row; no task row is touched): (expires, holder).
UPDATE processes SET lease_expires = ? WHERE holder = ?;

-- name: held
-- Which of these tasks the holder still holds: (holder, ids…). {marks}: one `?` per id.
SELECT id FROM tasks WHERE lease_owner = ? AND id IN ({marks});

-- name: renew
-- Extend the holder's leases on these tasks, for a holder with no process row; the ids still held:
-- (expires, holder, ids…). {marks}: one `?` per id.
UPDATE tasks SET lease_expires = ? WHERE lease_owner = ? AND id IN ({marks})
RETURNING id;

-- name: release
-- Give up the holder's leases on these tasks: (holder, ids…). {marks}: one `?` per id.
UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?
AND id IN ({marks});

-- name: insert_batch
-- A new batch. {columns}: the batch columns; {marks}: one `?` each.
INSERT INTO batches ({columns}) VALUES ({marks});

-- name: patch_batch
-- Set some columns of a batch. {sets}: `column = ?` each; then (values…, id).
UPDATE batches SET {sets} WHERE id = ?;

-- name: get_batch
-- A batch by id.
SELECT * FROM batches WHERE id = ?;

-- name: find_batch
-- An owner's batch of one input and spec: (owner, resume_key).
SELECT * FROM batches WHERE owner = ? AND resume_key = ?;

-- name: list_batches
-- An owner's batches, newest first: (owner, limit).
SELECT * FROM batches WHERE owner = ? ORDER BY created_at DESC, id DESC LIMIT ?;

-- name: batch_rows
-- A batch's rows in input order after a row index: (batch_id, after_index, …filters, limit).
-- {filters}: and_status_in, and_changed_since.
SELECT * FROM tasks WHERE batch_id = ? AND row_index > ? {filters} ORDER BY row_index LIMIT ?;

-- name: and_changed_since
-- Filter: a row added upstream or ended after a time (the live grid's poll): (since, since).
AND (submitted_at > ? OR completed_at > ?)

-- name: batch_counts
-- A batch's rows per status: (batch_id).
SELECT status, COUNT(*) FROM tasks WHERE batch_id = ? GROUP BY status;

-- name: batch_cost
-- What a batch's runs created so far cost (a retried row counts each attempt): (batch_id).
SELECT COALESCE(SUM(cost_usd), 0) FROM tasks WHERE batch_id = ? AND run_id IS NOT NULL;

-- name: claim_batches
-- Lease up to `limit` unfinished batches nobody holds, oldest first, whose owner's key is stored:
-- (holder, expires, now, limit).
UPDATE batches SET lease_owner = ?, lease_expires = ? WHERE id IN (
 SELECT id FROM batches WHERE status IN ('pending', 'running')
 AND (lease_owner IS NULL OR lease_expires < ?)
 AND owner IN (SELECT owner FROM api_keys WHERE length(ciphertext) > 0)
 ORDER BY created_at LIMIT ?) RETURNING *;

-- name: renew_batches
-- Extend the holder's leases on these batches; the ids still held: (expires, holder, ids…).
-- {marks}: one `?` per id.
UPDATE batches SET lease_expires = ? WHERE lease_owner = ? AND id IN ({marks}) RETURNING id;

-- name: release_batches
-- Give up the holder's leases on these batches: (holder, ids…). {marks}: one `?` per id.
UPDATE batches SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ? AND id IN ({marks});

-- name: release_all_batches
-- Give up every batch lease of one holder (a process proven dead): (holder).
UPDATE batches SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = ?;
