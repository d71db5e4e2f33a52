-- The PostgreSQL store's statements (store/postgres.py), read by store/queries.py.
-- Placeholders are psycopg's `%s` (and `%b`, binary: lists sent as arrays). A `{slot}` marks a
-- template the store fills with fragments, placeholders or task column names (never values): see
-- store/queries.py for why.

-- == schema ==================================================================

-- name: migration_lock
-- One migrating process at a time (held until the transaction ends): (lock key).
SELECT pg_advisory_xact_lock(%s);

-- name: create_schema_migrations
-- The table of applied migrations (the migrations themselves are numbered files in migrations_pg/).
CREATE TABLE IF NOT EXISTS schema_migrations
(version INTEGER PRIMARY KEY, applied_at DOUBLE PRECISION);

-- name: applied_migrations
-- The versions already applied.
SELECT version FROM schema_migrations;

-- name: record_migration
-- A migration applied: (version, applied_at).
INSERT INTO schema_migrations VALUES (%s, %s);

-- == writes ==================================================================

-- name: lock_tasks
-- Lock the task rows a batch touches, in id order (every multi-row writer does: no deadlock cycle).
SELECT id FROM tasks WHERE id = ANY(%b) ORDER BY id FOR UPDATE;

-- name: advance_group_cursor
-- Move an owner's task-group runs cursor: (run_cursor, owner, taskgroup_id).
UPDATE owner_groups SET run_cursor = %s WHERE owner = %s AND taskgroup_id = %s;

-- name: put_key
-- Store or replace an owner's encrypted key: (owner, ciphertext, last4, created_at, updated_at).
INSERT INTO api_keys (owner, ciphertext, last4, created_at, updated_at)
VALUES (%s,%s,%s,%s,%s) ON CONFLICT (owner) DO UPDATE SET
ciphertext=excluded.ciphertext, last4=excluded.last4, updated_at=excluded.updated_at;

-- name: number_events
-- Reserve each task's event numbers (and apply its pending patch) in one UPDATE … FROM unnest,
-- returning the new last number: (ids, counts, one array per patched column).
-- {sets}: `, column = v.column` each; {arrays}: `, %b::type[]` each; {columns}: `, column` each.
UPDATE tasks SET event_seq = tasks.event_seq + v.n{sets}
FROM unnest(%b::text[], %b::bigint[]{arrays}) AS v(id, n{columns})
WHERE tasks.id = v.id RETURNING tasks.id, tasks.event_seq;

-- name: copy_events
-- The fast way in for a batch of numbered events (fails whole on a duplicate).
COPY events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key) FROM STDIN;

-- name: insert_events
-- The batch again after a duplicate: skips it and reports the rest (one array per column).
INSERT INTO events (task_id, seq, type, origin, data, received_at, upstream_ts, dedup_key)
SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[], %b::text[], %b::text[],
%b::double precision[], %b::text[], %b::text[]) ON CONFLICT DO NOTHING RETURNING task_id, seq;

-- name: notify
-- A feed payload, delivered at commit (dropped on rollback): (channel, payload).
SELECT pg_notify(%s, %s);

-- name: patch_tasks
-- Unguarded patches of one shape (the same columns): one array per column, ids first.
-- {sets}: `column = v.column` each; {arrays}: `, %b::type[]` each; {columns}: `, column` each.
UPDATE tasks SET {sets}
FROM unnest(%b::text[]{arrays}) AS v(id{columns})
WHERE tasks.id = v.id;

-- name: patch_task
-- Set some columns of one task. {sets}: `column = %s` each; {guard}: and_status_in or nothing.
UPDATE tasks SET {sets} WHERE id = %s {guard};

-- name: insert_task
-- A new task. {columns}: the task columns; {marks}: one `%s` per column.
INSERT INTO tasks ({columns}) VALUES ({marks});

-- == tasks ===================================================================

-- name: get_task
-- The task row by id.
SELECT * FROM tasks WHERE id = %s;

-- name: get_task_by_run
-- The task row by upstream run id.
SELECT * FROM tasks WHERE run_id = %s;

-- name: get_tasks
-- Task rows by id: (ids).
SELECT * FROM tasks WHERE id = ANY(%s);

-- name: delete_task
-- The task row (when guarded, only in one of the statuses): (task_id[, statuses]).
-- {guard}: and_status_in or nothing.
DELETE FROM tasks WHERE id = %s {guard};

-- name: delete_task_events
-- A deleted task's events.
DELETE FROM events WHERE task_id = %s;

-- name: list_tasks
-- One page of an owner's tasks. {filters}: and_* fragments; {order}: ASC or DESC.
SELECT * FROM tasks WHERE owner = %s AND batch_id IS NULL {filters}
ORDER BY created_at {order}, id {order} LIMIT %s;

-- name: count_tasks
-- Task counts by status. {filters}: and_* fragments.
SELECT status, COUNT(*) AS n FROM tasks WHERE batch_id IS NULL {filters} GROUP BY status;

-- name: and_owner
-- Filter: the owner's tasks.
AND owner = %s

-- name: and_follow_up_of
-- Filter: follow-ups of one task.
AND follow_up_of = %s

-- name: and_status_in
-- Filter (and guard): the status is one of a list (one array parameter).
AND status = ANY(%s)

-- name: and_processor
-- Filter: one processor.
AND processor = %s

-- name: and_text
-- Filter: the text in the request (LIKE pattern, escaped with \), or the exact run or task id.
AND (request LIKE %s ESCAPE '\' OR run_id = %s OR id = %s)

-- name: and_after_cursor
-- Page cursor, oldest first: after the previous page's last task (created_at, id).
AND (created_at, id) > (%s, %s)

-- name: and_before_cursor
-- Page cursor, newest first: before the previous page's last task (created_at, id).
AND (created_at, id) < (%s, %s)

-- name: spent_since
-- What an owner's tasks created since a time cost, rejected ones aside: (owner, since, rejected).
SELECT COALESCE(SUM(cost_usd), 0) AS spent FROM tasks WHERE owner = %s AND created_at >= %s
AND status != %s;

-- == events ==================================================================

-- name: events
-- A task's events after a seq, in order. {limit}: the limit fragment or nothing.
SELECT * FROM events WHERE task_id = %s AND seq > %s ORDER BY seq {limit};

-- name: limit
-- At most this many rows.
LIMIT %s

-- name: dedup_keys
-- The de-duplication keys of a task's stored events.
SELECT dedup_key FROM events WHERE task_id = %s AND dedup_key IS NOT NULL;

-- == keys ====================================================================

-- name: get_key
-- An owner's encrypted key (empty once forgotten).
SELECT ciphertext FROM api_keys WHERE owner = %s;

-- name: forget_key
-- Erase an owner's key; the row stays, since tasks reference the owner: (updated_at, owner).
UPDATE api_keys SET ciphertext = '\x'::bytea, last4 = '', updated_at = %s
WHERE owner = %s AND length(ciphertext) > 0;

-- name: owners_with_keys
-- Which of these owners still have a key: (owners).
SELECT owner FROM api_keys WHERE length(ciphertext) > 0 AND owner = ANY(%s);

-- == owner groups ============================================================

-- name: get_owner_group
-- An owner's task group and runs cursor.
SELECT owner, taskgroup_id, run_cursor FROM owner_groups WHERE owner = %s;

-- name: insert_owner_group
-- An owner's task group, unless one is stored already: (owner, taskgroup_id, created_at).
INSERT INTO owner_groups (owner, taskgroup_id, run_cursor, created_at) VALUES (%s,%s,NULL,%s)
ON CONFLICT (owner) DO NOTHING;

-- name: drop_owner_group
-- Forget an owner's task group (Parallel no longer knows it): (owner, taskgroup_id).
DELETE FROM owner_groups WHERE owner = %s AND taskgroup_id = %s;

-- == sessions ================================================================

-- name: prune_sessions
-- Forget expired sessions: (now).
DELETE FROM sessions WHERE expires_at < %s;

-- name: insert_session
-- A new session (the token's hash, never the token): (id_hash, owner, created_at, expires_at).
INSERT INTO sessions (id_hash, owner, created_at, expires_at) VALUES (%s,%s,%s,%s);

-- name: get_session
-- The owner of a live session: (id_hash, now).
SELECT owner FROM sessions WHERE id_hash = %s AND expires_at > %s;

-- name: delete_session
-- Sign one session out.
DELETE FROM sessions WHERE id_hash = %s;

-- name: delete_sessions
-- Sign every session of an owner out.
DELETE FROM sessions WHERE owner = %s;

-- == processes ===============================================================

-- name: put_process
-- A process's heartbeat: its row, created or refreshed.
INSERT INTO processes (holder, kind, host, pid, started_at, seen_at, following, feed_lag)
VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (holder) DO UPDATE SET seen_at=excluded.seen_at,
following=excluded.following, feed_lag=excluded.feed_lag;

-- name: prune_processes
-- Forget processes silent for long: (seen before).
DELETE FROM processes WHERE seen_at < %s;

-- name: drop_process
-- A process that stopped.
DELETE FROM processes WHERE holder = %s;

-- name: release_all
-- Give up every lease of one holder (a process proven dead), rows locked in id order: (holder).
UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE id IN (SELECT id FROM tasks
WHERE lease_owner = %s ORDER BY id FOR UPDATE);

-- name: processes
-- Every known process, oldest first.
SELECT holder, kind, host, pid, started_at, seen_at, following, feed_lag FROM processes
ORDER BY started_at;

-- name: engines_alive
-- How many engine-running processes were seen since a time.
SELECT COUNT(*) AS n FROM processes WHERE kind IN ('serve', 'worker') AND seen_at >= %s;

-- name: leases
-- Live leases per holder (the task's own, or its holder's process lease): (now, now).
SELECT lease_owner, COUNT(*) AS n FROM tasks t WHERE lease_owner IS NOT NULL AND (lease_expires >= %s
OR EXISTS (SELECT 1 FROM processes p WHERE p.holder = t.lease_owner AND p.lease_expires >= %s))
GROUP BY lease_owner;

-- == rate usage and the shared rate budget ===================================

-- name: put_usage
-- One process's per-second spending of one key: (owner, holder, buckets, updated_at, final).
INSERT INTO rate_usage (owner, holder, buckets, updated_at, final) VALUES (%s,%s,%s,%s,%s)
ON CONFLICT (owner, holder) DO UPDATE SET buckets=excluded.buckets,
updated_at=excluded.updated_at, final=excluded.final;

-- name: prune_usage
-- Forget usage reports older than every window: (before).
DELETE FROM rate_usage WHERE updated_at < %s;

-- name: get_usage
-- The other processes' usage reports since a time: (since, exclude_holder).
SELECT owner, holder, buckets, updated_at, final FROM rate_usage WHERE updated_at >= %s AND holder != %s;

-- name: rate_lock
-- Serialise the grants of one key (held until the transaction ends): (owner).
SELECT pg_advisory_xact_lock(hashtextextended(%s, 7));

-- name: rate_window
-- The key's grants in the window, and the oldest of them: (owner, window start).
SELECT COUNT(*) AS n, MIN(at) AS oldest FROM rate_grants WHERE owner = %s AND at > %s;

-- name: grant_rate
-- One request granted: (owner, at).
INSERT INTO rate_grants (owner, at) VALUES (%s, %s);

-- name: prune_rate_grants
-- Forget a key's grants long out of every window: (owner, before).
DELETE FROM rate_grants WHERE owner = %s AND at < %s;

-- == leases ==================================================================

-- name: claim
-- Lease up to `limit` followed tasks that nobody holds, newest activity first; SKIP LOCKED: workers
-- claiming at the same moment take different tasks, without waiting:
-- (holder, expires, followed statuses, now, now, limit). A lease is free when the task's own expiry
-- and its holder's process lease have both passed.
UPDATE tasks SET lease_owner = %s, lease_expires = %s WHERE id IN (
 SELECT id FROM tasks t WHERE status = ANY(%s) AND batch_id IS NULL
 AND (lease_owner IS NULL OR (lease_expires < %s AND NOT EXISTS (
  SELECT 1 FROM processes p WHERE p.holder = t.lease_owner AND p.lease_expires >= %s)))
 -- A task whose key was forgotten cannot be followed until its owner signs in again.
 AND owner IN (SELECT owner FROM api_keys WHERE length(ciphertext) > 0)
 ORDER BY COALESCE(last_event_at, created_at) DESC LIMIT %s FOR UPDATE SKIP LOCKED
) RETURNING *;

-- name: renew_process
-- Extend a process's lease on every task it holds (one row; no task row is touched): (expires, holder).
UPDATE processes SET lease_expires = %s WHERE holder = %s;

-- name: held
-- Which of these tasks the holder still holds (a read: none taken over, none deleted): (holder, ids).
SELECT id FROM tasks WHERE lease_owner = %s AND id = ANY(%b);

-- name: renew
-- Extend the holder's leases on these tasks, for a holder with no process row (rows locked in id
-- order); the ids still held: (expires, holder, sorted ids).
UPDATE tasks SET lease_expires = %s WHERE id IN (SELECT id FROM tasks WHERE lease_owner = %s
AND id = ANY(%b) ORDER BY id FOR UPDATE) RETURNING id;

-- name: release
-- Give up the holder's leases on these tasks (rows locked in id order): (holder, sorted ids).
UPDATE tasks SET lease_owner = NULL, lease_expires = NULL WHERE id IN (SELECT id FROM tasks
WHERE lease_owner = %s AND id = ANY(%b) ORDER BY id FOR UPDATE);

-- name: insert_batch
-- A new batch. {columns}: the batch columns; {marks}: one `%s` each.
INSERT INTO batches ({columns}) VALUES ({marks});

-- name: patch_batch
-- Set some columns of a batch. {sets}: `column = %s` each; then (values…, id).
UPDATE batches SET {sets} WHERE id = %s;

-- name: get_batch
-- A batch by id.
SELECT * FROM batches WHERE id = %s;

-- name: find_batch
-- An owner's batch of one input and spec: (owner, resume_key).
SELECT * FROM batches WHERE owner = %s AND resume_key = %s;

-- name: list_batches
-- An owner's batches, newest first: (owner, limit).
SELECT * FROM batches WHERE owner = %s ORDER BY created_at DESC, id DESC LIMIT %s;

-- name: batch_rows
-- A batch's rows in input order after a row index: (batch_id, after_index, …filters, limit).
-- {filters}: and_status_in, and_changed_since.
SELECT * FROM tasks WHERE batch_id = %s AND row_index > %s {filters} ORDER BY row_index LIMIT %s;

-- name: and_changed_since
-- Filter: a row added upstream or ended after a time (the live grid's poll): (since, since).
AND (submitted_at > %s OR completed_at > %s)

-- name: batch_counts
-- A batch's rows per status: (batch_id).
SELECT status, COUNT(*) AS n FROM tasks WHERE batch_id = %s GROUP BY status;

-- name: batch_cost
-- What a batch's runs created so far cost (a retried row counts each attempt): (batch_id).
SELECT COALESCE(SUM(cost_usd), 0) AS cost FROM tasks WHERE batch_id = %s AND run_id IS NOT NULL;

-- name: claim_batches
-- Lease up to `limit` unfinished batches nobody holds, oldest first, whose owner's key is stored;
-- SKIP LOCKED, as tasks: (holder, expires, now, limit).
UPDATE batches SET lease_owner = %s, lease_expires = %s WHERE id IN (
 SELECT id FROM batches WHERE status IN ('pending', 'running')
 AND (lease_owner IS NULL OR lease_expires < %s)
 AND owner IN (SELECT owner FROM api_keys WHERE length(ciphertext) > 0)
 ORDER BY created_at LIMIT %s FOR UPDATE SKIP LOCKED
) RETURNING *;

-- name: renew_batches
-- Extend the holder's leases on these batches; the ids still held: (expires, holder, ids).
UPDATE batches SET lease_expires = %s WHERE id IN (SELECT id FROM batches WHERE lease_owner = %s
AND id = ANY(%b) ORDER BY id FOR UPDATE) RETURNING id;

-- name: release_batches
-- Give up the holder's leases on these batches: (holder, ids).
UPDATE batches SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = %s AND id = ANY(%b);

-- name: release_all_batches
-- Give up every batch lease of one holder (a process proven dead): (holder).
UPDATE batches SET lease_owner = NULL, lease_expires = NULL WHERE lease_owner = %s;
