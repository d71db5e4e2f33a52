-- The run manager's list: counts per status and a task's follow-ups without a scan.
CREATE INDEX tasks_owner_status ON tasks(owner, status);
CREATE INDEX tasks_follow_up_of ON tasks(follow_up_of);
