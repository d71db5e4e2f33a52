-- The batch's runs per status as Parallel last reported them (its group's task_group_status: JSON object
-- status -> count): the rows' own statuses learn only when runs end, this tells queued from running.
ALTER TABLE batches ADD COLUMN upstream_counts TEXT;
