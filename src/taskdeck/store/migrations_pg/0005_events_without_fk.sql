-- Events no longer reference tasks by a foreign key: its check on every inserted event cost a third
-- of an ingest batch (bench engine-ingest). Integrity is kept by the store itself: events are only
-- numbered and inserted for task rows it has just locked, and delete_task deletes the task row first
-- (waiting for any batch holding it), then its events.
ALTER TABLE events DROP CONSTRAINT events_task_id_fkey;
