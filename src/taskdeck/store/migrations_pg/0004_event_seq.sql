-- Each task keeps the number of its last event: numbering a batch's events is one UPDATE … RETURNING
-- on the tasks' rows (which also locks them), not a MAX(seq) over every event of those tasks.
ALTER TABLE tasks ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
UPDATE tasks SET event_seq = COALESCE((SELECT MAX(seq) FROM events WHERE events.task_id = tasks.id), 0);
